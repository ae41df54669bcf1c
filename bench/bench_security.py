"""What logins and the audit trail cost (issue 12): QIDO-RS per request with logins on and off, and C-STORE
ingest with the audit trail against the same server without it.

HTTP: two ``hounsfield serve`` of this build, one with logins off (loopback, the default) and one with
``http_auth = "on"``, each holding the same studies. Per run and mode, ``--requests`` sequential QIDO-RS
searches (``GET /dicom-web/studies?PatientID=…``, keep-alive, one client thread); modes: off, Bearer token, HTTP
Basic (remembered after the first argon2 check), session cookie. The figure is the median time per request; the
cost of a mode is its median minus the median with logins off in the same run. Target: ≤ 1 ms.

Ingest: there is no setting that turns the audit trail off (a PACS must not be able to run unaudited without a
code change), so "the same build without it" is the commit before the audit trail and logins landed
(``--before``, default f9140b2: the security groundwork, same fast paths, same storage), checked out into a
worktree and run from there. One dcmtk storescu association per run sends ``--studies`` × 100 CT instances
(../shared/bench/gen_ct.py) to a fresh server; the figure is instances per second until storescu ends (each
instance acknowledged, i.e. fsynced); the two builds take turns, so a drift of the machine hits both. Target:
≤ 5 % slower.

    python bench/bench_security.py [--runs 5] [--requests 300] [--studies 5] [--ct /tmp/hbench/ct]
        [--out bench/results/security.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
from serving import Serve, spread

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PASSWORD = "a benchmark password"


def settle(server: Serve, expected: int, auth: dict) -> None:
    """Until the archive answers with every imported instance (indexed in the background)."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        studies = requests.get(f"{server.url}/api/studies", params={"limit": 10000}, timeout=60, **auth).json()
        if sum(s["NumberOfStudyRelatedInstances"] for s in studies) >= expected:
            return
        time.sleep(0.5)
    raise RuntimeError("the archive never answered with every instance")


def http_bench(args: argparse.Namespace, work: Path, files: list[Path]) -> dict:
    off = Serve(ROOT / "src", work / "off")
    on = Serve(ROOT / "src", work / "on", 'http_auth = "on"\n')
    on.cli("user", "add", "bench", "--role", "admin", "--password-stdin", stdin=PASSWORD)
    token = on.cli("user", "token", "bench").strip().splitlines()[-1]
    for s in (off, on):
        s.cli("import", *map(str, files))
        s.start()
    try:
        settle(off, len(files), {})
        settle(on, len(files), {"auth": ("bench", PASSWORD)})
        modes = {
            "off": (off, requests.Session()),
            "bearer": (on, _session(headers={"Authorization": f"Bearer {token}"})),
            "basic": (on, _session(auth=("bench", PASSWORD))),
            "session": (on, _logged_in(on)),
        }
        per_run: dict[str, list[float]] = {m: [] for m in modes}
        for _ in range(args.runs):
            for mode, (server, session) in modes.items():
                times = []
                for i in range(args.requests + 10):
                    t0 = time.perf_counter()
                    r = session.get(f"{server.url}/dicom-web/studies", params={"PatientID": "*"}, timeout=60)
                    dt = time.perf_counter() - t0
                    assert r.status_code == 200, (mode, r.status_code, r.text[:200])
                    if i >= 10:  # warm-up: connections, the remembered Basic check
                        times.append(dt * 1000)
                per_run[mode].append(statistics.median(times))
        result = {m: spread(v) for m, v in per_run.items()}
        for m in ("bearer", "basic", "session"):
            result[m]["cost_ms"] = spread([a - b for a, b in zip(per_run[m], per_run["off"])])
        return result
    finally:
        off.stop()
        on.stop()


def _session(headers: dict[str, str] | None = None, auth: tuple[str, str] | None = None) -> requests.Session:
    s = requests.Session()
    s.headers.update(headers or {})
    s.auth = auth
    return s


def _logged_in(server: Serve) -> requests.Session:
    s = requests.Session()
    r = s.post(f"{server.url}/login", data={"username": "bench", "password": PASSWORD}, allow_redirects=False,
               timeout=30)
    assert r.status_code == 303, r.text
    return s


def middleware_bench(args: argparse.Namespace, work: Path) -> dict:
    """The server's own cost per request, without the client and the network: the login check and the HTTP
    audit (``web.auth.Authentication`` around ``web.audit_http.HttpAudit``) around an app that answers at once,
    called in-process on a QIDO-RS request, against that app alone; median µs per request of ``--requests`` × 10
    calls, per run."""
    import asyncio

    sys.path.insert(0, str(ROOT / "src"))
    from hounsfield import config
    from hounsfield.pacs import Pacs
    from hounsfield.web.audit_http import HttpAudit
    from hounsfield.web.auth import Authentication, SessionPolicy

    pacs = Pacs(config.Settings(data_dir=work / "inproc", http_auth="on"))
    pacs.users.add("bench", "admin", PASSWORD)
    token = pacs.users.create_token("bench")[1]
    policy = SessionPolicy.of(pacs.settings)
    session = pacs.users.start_session(pacs.users.by_password("bench", PASSWORD), address="127.0.0.1",
                                       idle=policy.idle, lifetime=policy.lifetime)

    async def answer(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"[]"})

    stack = Authentication(HttpAudit(answer, audit=pacs.audit), users=pacs.users, sessions=policy)
    import base64

    headers = {"bare": [], "bearer": [(b"authorization", f"Bearer {token}".encode())],
               "basic": [(b"authorization", b"Basic " + base64.b64encode(f"bench:{PASSWORD}".encode()))],
               "session": [(b"cookie", f"hf_session={session.cookie}".encode())]}

    async def call(app, extra) -> None:
        scope = {"type": "http", "method": "GET", "path": "/dicom-web/studies", "query_string": b"PatientID=*",
                 "headers": [(b"host", b"127.0.0.1"), *extra], "client": ("127.0.0.1", 5000)}

        async def receive():
            return {"type": "http.request", "body": b""}

        async def send(_message):
            return None

        await app(scope, receive, send)

    async def timed(app, extra, n: int) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            await call(app, extra)
        return (time.perf_counter() - t0) / n * 1e6

    n = args.requests * 10
    per_run: dict[str, list[float]] = {m: [] for m in headers}
    for _ in range(args.runs):
        for mode, extra in headers.items():
            app = answer if mode == "bare" else stack
            asyncio.run(timed(app, extra, 50))  # warm-up (the remembered Basic check among it)
            per_run[mode].append(asyncio.run(timed(app, extra, n)))
    pacs.close()
    result = {m: spread(v) for m, v in per_run.items()}
    for m in ("bearer", "basic", "session"):
        result[m]["cost_us"] = spread([a - b for a, b in zip(per_run[m], per_run["bare"])])
    return result


def ingest_bench(args: argparse.Namespace, work: Path, study_dirs: list[Path], count: int) -> dict:
    before = work / "before"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(before), args.before],
                   check=True, capture_output=True)
    try:
        builds = {"with audit (HEAD)": ROOT / "src", f"before ({args.before})": before / "src"}
        rates: dict[str, list[float]] = {b: [] for b in builds}
        for run in range(args.runs):
            for name, src in builds.items():
                server = Serve(src, work / f"ingest-{run}-{len(rates[name])}-{name[:6]}").start()
                try:
                    t0 = time.perf_counter()
                    subprocess.run(["/usr/bin/storescu", "-aec", "HOUNSFIELD", "-aet", "BENCH", "+sd", "+r",
                                    "127.0.0.1", str(server.dicom), *map(str, study_dirs)], check=True,
                                   capture_output=True)
                    rates[name].append(count / (time.perf_counter() - t0))
                finally:
                    server.stop()
                    shutil.rmtree(server.work, ignore_errors=True)
        result = {b: spread(v) for b, v in rates.items()}
        head, old = (statistics.median(v) for v in rates.values())
        result["cost_pct"] = 100 * (old - head) / old
        return result
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(before)], capture_output=True)


def table(results: dict) -> str:
    lines = ["| QIDO-RS, one request | median ms | min–max | cost vs off, ms (median, min–max) |", "|---|---|---|---|"]
    for mode, r in results["http"].items():
        cost = r.get("cost_ms")
        lines.append(f"| {mode} | {r['median']:.2f} | {r['min']:.2f}–{r['max']:.2f} | "
                     + (f"{cost['median']:+.2f} ({cost['min']:+.2f}–{cost['max']:+.2f})" if cost else "—") + " |")
    lines += ["", "| login check + HTTP audit, in-process | µs per request, median | min–max | cost vs bare app, µs |",
              "|---|---|---|---|"]
    for mode, r in results["middleware_us"].items():
        cost = r.get("cost_us")
        lines.append(f"| {mode} | {r['median']:.0f} | {r['min']:.0f}–{r['max']:.0f} | "
                     + (f"{cost['median']:+.0f} ({cost['min']:+.0f}–{cost['max']:+.0f})" if cost else "—") + " |")
    lines += ["", "| C-STORE ingest, 1 association | instances/s median | min–max |", "|---|---|---|"]
    for build, r in results["ingest"].items():
        if build != "cost_pct":
            lines.append(f"| {build} | {r['median']:.1f} | {r['min']:.1f}–{r['max']:.1f} |")
    lines.append(f"\nIngest cost of the audit trail: {results['ingest']['cost_pct']:+.1f} % (median against median).")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--studies", type=int, default=5)
    parser.add_argument("--ct", type=Path, default=Path("/tmp/hbench/ct"))
    parser.add_argument("--before", default="f9140b2")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "security.json")
    parser.add_argument("--skip-ingest", action="store_true")
    args = parser.parse_args()
    study_dirs = sorted(p for p in args.ct.iterdir() if p.is_dir())[:args.studies]
    files = sorted(f for d in study_dirs for f in d.rglob("*") if f.is_file())
    work = Path(tempfile.mkdtemp(prefix="hf-bench-security-"))
    try:
        results = {"recorded": time.strftime("%Y-%m-%dT%H:%M:%S"), "runs": args.runs, "requests": args.requests,
                   "instances": len(files), "load_before": os.getloadavg(),
                   "middleware_us": middleware_bench(args, work),
                   "http": http_bench(args, work, files[:200])}
        if not args.skip_ingest:
            results["ingest"] = ingest_bench(args, work, study_dirs, len(files))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))
        print(table(results) if "ingest" in results else json.dumps(results["http"], indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
