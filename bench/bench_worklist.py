"""MWL C-FIND latency of hounsfield beside the peers, with the shared harness (../shared/bench).

For each N: generate N items with the harness's gen_worklist.py (once, into $HBENCH_WORK/wl-N), start a fresh
``hounsfield serve``, import the .wl files with ``hounsfield worklist import`` (timed: the bulk path), then run
the harness's bench_worklist.py with hounsfield as an external target (and the managed peers when asked).
Results go to bench/results (JSON from the harness) and a Markdown table on stdout.

usage: python bench/bench_worklist.py --n 10000 100000 [--peers wlmscpfs,orthanc] [--queries 20] [--rounds 3]
       [--shapes q1,q2,q3,q4] [--q4-queries 3] [--database-url URL] [--reuse] [--floor]
Not a test: it takes minutes (hours with the peers at 100,000).

--floor adds a row for the harness's own pynetdicom client against a trivial pynetdicom MWL SCP that holds every
answer the run asks for already encoded (the same bytes hounsfield sends: the requested keys and the item's
character set), only looks them up and writes them in one go: what the client alone needs, the floor.

--reuse keeps the data directory of an earlier run when it was filled from the same generated items (same N and
"today"): the import (~4 minutes at 100,000) is then not repeated, and the JSON reports the earlier import time.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import struct
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


def harness_worklist():
    """The harness's bench_worklist module (its name is this script's name, so it is loaded by path)."""
    import importlib.util

    sys.path.insert(0, str(HARNESS))
    spec = importlib.util.spec_from_file_location("hbench_worklist", HARNESS / "bench_worklist.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def serve_floor(port: int, n: int, shapes: list[str], queries: int) -> None:
    """The floor SCP (``--floor``): every answer of the harness's queries is read from its .wl file and encoded
    (implicit and explicit VR little endian) before the port opens; a C-FIND picks the items by the manifest
    and writes all its pending responses (one P-DATA-TF PDU each) to the socket in one go, the final one going
    through pynetdicom. TCP_NODELAY and quick ACKs, like hounsfield. The server side costs next to nothing:
    what is left is the client's own time."""
    import socket as sockets
    from pydicom import dcmread
    from pydicom.dataset import Dataset
    from io import BytesIO

    from pynetdicom import AE, _config, evt
    from pynetdicom.dimse_messages import C_FIND_RSP
    from pynetdicom.dimse_primitives import C_FIND
    from pynetdicom.dsutils import encode
    from pynetdicom.sop_class import ModalityWorklistInformationFind

    bench = harness_worklist()
    manifest = json.loads((WORK / f"wl-{n}" / "manifest.json").read_text())
    wanted = set().union(*(expected for shape, cases in bench.build_queries(manifest, queries).items()
                           if shape in shapes for _, expected in cases))
    requested = bench.mwl_query()
    steps = requested.ScheduledProcedureStepSequence[0]
    items, encoded = [it for it in manifest["items"] if it["acc"] in wanted], {}
    for it in items:
        ds = dcmread(WORK / f"wl-{n}" / manifest["aet"] / f"item{it['i']:06d}.wl")
        answer, step = Dataset(), Dataset()
        for keys, source, out in ((requested, ds, answer), (steps, ds.ScheduledProcedureStepSequence[0], step)):
            for elem in keys:
                if elem.VR != "SQ":
                    out[elem.tag] = source[elem.tag] if elem.tag in source else elem
        answer.ScheduledProcedureStepSequence = [step]
        answer.SpecificCharacterSet = ds.SpecificCharacterSet
        encoded[it["acc"]] = {implicit: encode(answer, implicit, True) for implicit in (True, False)}

    _config.LOG_HANDLER_LEVEL = "none"
    _config.LOG_REQUEST_IDENTIFIERS = _config.LOG_RESPONSE_IDENTIFIERS = False

    def pdv(context_id: int, header: int, data: bytes) -> bytes:
        return struct.pack(">IBB", len(data) + 2, context_id, header) + data

    def on_find(event):
        q = event.identifier
        sps = q.ScheduledProcedureStepSequence[0]
        pid, date = str(q.PatientID or ""), str(sps.ScheduledProcedureStepStartDate or "")
        modality, station = str(sps.Modality or ""), str(sps.ScheduledStationAETitle or "")
        first, _, last = date.partition("-") if "-" in date else (date, "", date)
        implicit = event.context.transfer_syntax == "1.2.840.10008.1.2"
        cx = event.context.context_id
        pending = C_FIND()
        pending.MessageIDBeingRespondedTo = event.request.MessageID
        pending.AffectedSOPClassUID = event.request.AffectedSOPClassUID
        pending.Status, pending.Identifier = 0xFF00, BytesIO(b"\0\0")
        message = C_FIND_RSP()
        message.primitive_to_message(pending)
        command = pdv(cx, 0x03, encode(message.command_set, True, True))
        pdus = []
        for it in items:
            if ((not pid or it["pid"] == pid) and (not date or first <= it["date"] <= last)
                    and (not modality or it["mod"] == modality) and (not station or it["station"] == station)):
                body = command + pdv(cx, 0x02, encoded[it["acc"]][implicit])
                pdus.append(struct.pack(">BBI", 0x04, 0, len(body)) + body)
        event.assoc.dul.socket.socket.sendall(b"".join(pdus))  # every pending response in one write
        yield 0x0000, None  # the final response, through pynetdicom

    def transport(event):
        sock = event.assoc.dul.socket.socket
        sock.setsockopt(sockets.IPPROTO_TCP, sockets.TCP_NODELAY, 1)

    def ack_now(event):
        try:
            event.assoc.dul.socket.socket.setsockopt(sockets.IPPROTO_TCP, sockets.TCP_QUICKACK, 1)
        except (OSError, AttributeError):
            pass

    ae = AE(ae_title="FLOOR")
    ae.add_supported_context(ModalityWorklistInformationFind)
    print(f"floor SCP: {len(items)} answers ready, port {port}", flush=True)
    ae.start_server(("127.0.0.1", port), block=True, evt_handlers=[
        (evt.EVT_C_FIND, on_find), (evt.EVT_CONN_OPEN, transport), (evt.EVT_DATA_RECV, ack_now)])


def run_n(n: int, a: argparse.Namespace, env: dict[str, str]) -> dict:
    root = WORK / f"wl-{n}"
    if not (root / "manifest.json").exists():
        subprocess.run([sys.executable, str(HARNESS / "gen_worklist.py"), str(n)], check=True, env=env)
    data = WORK / "run" / f"hounsfield-{n}"
    marker = data / "bench-import.json"  # written after a complete import: which items, how long it took
    today = json.loads((root / "manifest.json").read_text())["today"]
    previous = json.loads(marker.read_text()) if a.reuse and marker.exists() else {}
    reuse = previous.get("n") == n and previous.get("today") == today and not a.database_url
    if not reuse:
        subprocess.run(["rm", "-rf", str(data)], check=True)
    common = ["--data-dir", str(data)] + (["--database-url", a.database_url] if a.database_url else [])
    dicom, http = free_port(), free_port()
    data.mkdir(parents=True, exist_ok=True)
    log = open(data.parent / f"hounsfield-{n}.log", "ab")
    server = subprocess.Popen(hounsfield("serve", *common, "--ae-title", "HOUNSFIELD", "--dicom-port", str(dicom),
                                         "--http-host", "127.0.0.1", "--http-port", str(http)),
                              stdout=log, stderr=subprocess.STDOUT, env={**env, "HOUNSFIELD_LOG_LEVEL": "WARNING"})
    floor = None
    try:
        if a.floor:
            floor_port = free_port()
            floor = subprocess.Popen([sys.executable, __file__, "--serve-floor", str(floor_port), "--n", str(n),
                                      "--shapes", a.shapes, "--queries", str(a.queries)], env=env)
            wait_port(floor_port, floor, timeout=600)
        wait_port(dicom, server)
        if reuse:
            import_s = previous["import_s"]
            print(f"N={n}: reusing {data} (imported in {import_s:.1f} s by an earlier run)", flush=True)
        else:
            t0 = time.perf_counter()
            subprocess.run(hounsfield("worklist", "import", *common, str(root / "WLAET")), check=True, env=env)
            import_s = time.perf_counter() - t0
            marker.write_text(json.dumps({"n": n, "today": today, "import_s": import_s}))
            print(f"N={n}: imported in {import_s:.1f} s ({n / import_s:.0f} items/s)", flush=True)
        cmd = [sys.executable, str(HARNESS / "bench_worklist.py"), "--n", str(n), "--peers", a.peers,
               "--queries", str(a.queries), "--rounds", str(a.rounds), "--shapes", a.shapes,
               "--q4-queries", str(a.q4_queries), "--external", f"name=hounsfield,port={dicom},aet=HOUNSFIELD"]
        if floor is not None:
            cmd += ["--external", f"name=pynetdicom floor,port={floor_port},aet=FLOOR"]
        subprocess.run(cmd, check=True, cwd=HARNESS, env=env)
    finally:
        for proc in (server, floor):
            if proc is not None:
                proc.terminate()
                proc.wait(60)
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
    ap.add_argument("--reuse", action="store_true",
                    help="keep an earlier run's data directory holding the same items (SQLite only)")
    ap.add_argument("--floor", action="store_true", help="also time a trivial pynetdicom SCP with ready answers")
    ap.add_argument("--serve-floor", type=int, metavar="PORT", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.serve_floor:
        serve_floor(a.serve_floor, a.n[0], a.shapes.split(","), a.queries)
        return
    dcmtk_bin = os.environ.get("DCMTK_BIN", "/usr/bin")  # dcmtk's findscu, not pynetdicom's script of that name
    env = {**os.environ, "HBENCH_WORK": str(WORK), "HBENCH_RESULTS": str(RESULTS),
           "PATH": f"{dcmtk_bin}:{os.environ['PATH']}"}
    RESULTS.mkdir(parents=True, exist_ok=True)
    results = [run_n(n, a, env) for n in a.n]
    print(table(results))


if __name__ == "__main__":
    main()
