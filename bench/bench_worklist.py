"""MWL C-FIND latency of hounsfield beside the peers, with the shared harness (../shared/bench).

For each N: generate N items with the harness's gen_worklist.py (once, into $HBENCH_WORK/wl-N), start a fresh
``hounsfield serve``, import the .wl files with ``hounsfield worklist import`` (timed: the bulk path), then run
the harness's bench_worklist.py with hounsfield as an external target (and the managed peers when asked).
Results go to bench/results (JSON from the harness) and a Markdown table on stdout.

usage: python bench/bench_worklist.py --n 10000 100000 [--peers wlmscpfs,orthanc] [--queries 20] [--rounds 3]
       [--shapes q1,q2,q3,q4] [--q4-queries 3] [--database-url URL]
Not a test: it takes minutes (hours with the peers at 100,000).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
HARNESS = Path(os.environ.get("HBENCH_HARNESS", HERE.parent.parent / "shared" / "bench"))
WORK = Path(os.environ.get("HBENCH_WORK", "/tmp/hbench"))
RESULTS = Path(os.environ.get("HBENCH_RESULTS", HERE / "results"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"hounsfield serve exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"port {port} did not open")


def hounsfield(*args: str) -> list[str]:
    return [sys.executable, "-m", "hounsfield", *args]


def run_n(n: int, a: argparse.Namespace, env: dict[str, str]) -> dict:
    root = WORK / f"wl-{n}"
    if not (root / "manifest.json").exists():
        subprocess.run([sys.executable, str(HARNESS / "gen_worklist.py"), str(n)], check=True, env=env)
    data = WORK / "run" / f"hounsfield-{n}"
    subprocess.run(["rm", "-rf", str(data)], check=True)
    common = ["--data-dir", str(data)] + (["--database-url", a.database_url] if a.database_url else [])
    dicom, http = free_port(), free_port()
    data.mkdir(parents=True)
    log = open(data.parent / f"hounsfield-{n}.log", "ab")
    server = subprocess.Popen(hounsfield("serve", *common, "--ae-title", "HOUNSFIELD", "--dicom-port", str(dicom),
                                         "--http-host", "127.0.0.1", "--http-port", str(http)),
                              stdout=log, stderr=subprocess.STDOUT, env={**env, "HOUNSFIELD_LOG_LEVEL": "WARNING"})
    try:
        wait_port(dicom, server)
        t0 = time.perf_counter()
        subprocess.run(hounsfield("worklist", "import", *common, str(root / "WLAET")), check=True, env=env)
        import_s = time.perf_counter() - t0
        print(f"N={n}: imported in {import_s:.1f} s ({n / import_s:.0f} items/s)", flush=True)
        cmd = [sys.executable, str(HARNESS / "bench_worklist.py"), "--n", str(n), "--peers", a.peers,
               "--queries", str(a.queries), "--rounds", str(a.rounds), "--shapes", a.shapes,
               "--q4-queries", str(a.q4_queries), "--external", f"name=hounsfield,port={dicom},aet=HOUNSFIELD"]
        subprocess.run(cmd, check=True, cwd=HARNESS, env=env)
    finally:
        server.terminate()
        server.wait(60)
        log.close()
    result = json.loads((RESULTS / f"worklist-{n}.json").read_text())
    result["hounsfield_import_s"] = import_s
    (RESULTS / f"worklist-{n}.json").write_text(json.dumps(result, indent=1))
    return result


def table(results: list[dict]) -> str:
    lines = ["| N | target | query | answers | find median ms (min–max) | find p95 ms | findscu ms |",
             "|---|---|---|---|---|---|---|"]
    for res in results:
        for target in res["targets"]:
            for shape in ("q1", "q2", "q3", "q4"):
                r = target.get(shape)
                if not r:
                    continue
                find = r.get("find_median_s")
                med = f"{find['median'] * 1e3:.1f} ({find['min'] * 1e3:.1f}–{find['max'] * 1e3:.1f})" if find else "–"
                p95 = f"{r['find_p95_pooled_s'] * 1e3:.1f}" if find else "–"
                low = r.get("answers_min", r["expected_answers"][0])
                high = r.get("answers_max", r["expected_answers"][1])
                answers = f"{low}–{high}"
                lines.append(f"| {res['n']:,} | {target['target']['name']} | {shape} | {answers} | {med} | {p95} | "
                             f"{r['findscu_s']['median'] * 1e3:.0f} |")
    imports = [f"N={r['n']:,}: {r['hounsfield_import_s']:.1f} s" for r in results]
    return "\n".join(lines) + "\n\nhounsfield worklist import: " + ", ".join(imports)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, nargs="+", default=[10000])
    ap.add_argument("--peers", default="", help="managed peers to run beside hounsfield: wlmscpfs,orthanc")
    ap.add_argument("--queries", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--shapes", default="q1,q2,q3,q4")
    ap.add_argument("--q4-queries", type=int, default=3)
    ap.add_argument("--database-url", default="")
    a = ap.parse_args()
    dcmtk_bin = os.environ.get("DCMTK_BIN", "/usr/bin")  # dcmtk's findscu, not pynetdicom's script of that name
    env = {**os.environ, "HBENCH_WORK": str(WORK), "HBENCH_RESULTS": str(RESULTS),
           "PATH": f"{dcmtk_bin}:{os.environ['PATH']}"}
    RESULTS.mkdir(parents=True, exist_ok=True)
    results = [run_n(n, a, env) for n in a.n]
    print(table(results))


if __name__ == "__main__":
    main()
