"""What connecting to the department costs (issue 14): HL7 orders applied per second over one MLLP connection,
and routing's delivery to a dcmtk storescp against a C-MOVE of the same study in the same run.

HL7: a ``hounsfield serve`` of this tree with the MLLP listener on; per run, ``--messages`` ORM^O01 new orders
(v2.3.1, one ORC / OBR each, as tests/test_hl7.py builds them) sent one after the other over one connection,
each waiting for its ACK (what an HL7 interface engine does: in order, one at a time). The figure is messages
per second until the last ACK. Every ACK is checked to be AA; after each run one MWL C-FIND counts the run's
items. "Queryable when its ACK leaves" is checked apart, untimed: for ``--probe`` orders, an MWL C-FIND by the
order's accession number right after its ACK must find the item.

Routing: a server with a rule (``on = "instance_stored"``, CT → the storescp) receives a ``--per-study`` CT
study by dcmtk storescu; the figure is instances per second from the start of storescu until storescp holds
every instance (end to end: ingest, index, queue, delivery). In the same run the same study is sent again by
C-MOVE from the same server to the same storescp (dcmtk movescu; instances per second of the C-MOVE). Targets:
HL7 ≥ 500 messages/s; routing: no target, compared with C-MOVE.

    python bench/bench_connect.py [--runs 5] [--messages 1000] [--probe 50] [--per-study 100]
        [--only hl7|routing] [--out bench/results/connect.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests"))

from pydicom.dataset import Dataset  # noqa: E402
from pynetdicom import AE  # noqa: E402

from serving import Serve, free_port, spread  # noqa: E402
from test_hl7 import orm, read_frame, segments_of, unique  # noqa: E402 - the tests' ORM builder and MLLP reader

SB, EB, CR = b"\x0b", b"\x1c", b"\x0d"
MWL_FIND = "1.2.840.10008.5.1.4.31"


def mwl_count(port: int, **keys: str) -> int:
    """Items an MWL C-FIND (pynetdicom) matches on ``keys`` (flat: AccessionNumber, PatientID)."""
    ae = AE(ae_title="BENCH")
    ae.add_requested_context(MWL_FIND)
    assoc = ae.associate("127.0.0.1", port, ae_title="HOUNSFIELD")
    assert assoc.is_established, "MWL association refused"
    try:
        q = Dataset()
        q.PatientID, q.AccessionNumber, q.PatientName = keys.get("PatientID", ""), keys.get("AccessionNumber", ""), ""
        step = Dataset()
        step.Modality, step.ScheduledStationAETitle = "", ""
        q.ScheduledProcedureStepSequence = [step]
        return sum(1 for status, ident in assoc.send_c_find(q, MWL_FIND) if status and status.Status in (0xFF00, 0xFF01))
    finally:
        assoc.release()


def hl7_bench(args: argparse.Namespace, work: Path) -> dict:
    port = free_port()
    server = Serve(ROOT / "src", work / "hl7", f'hl7_port = {port}\nhl7_host = "127.0.0.1"\n').start()
    rates, probes_found = [], 0
    try:
        with socket.create_connection(("127.0.0.1", port)) as sock:
            def apply(message: bytes) -> None:
                sock.sendall(SB + message + EB + CR)
                ack = segments_of(read_frame(sock))
                assert ack["MSA"][1] == "AA", ack

            for run in range(args.runs):
                patient = unique(f"BENCH{run}-")
                messages = [orm(unique("C"), patient, unique("P"), accession=unique("A")[:16])
                            for _ in range(args.messages)]
                t = time.perf_counter()
                for m in messages:
                    apply(m)
                rates.append(len(messages) / (time.perf_counter() - t))
                assert mwl_count(server.dicom, PatientID=patient) == args.messages, "not every order is an item"
            for _ in range(args.probe):
                accession = unique("Q")[:16]
                apply(orm(unique("C"), unique("PROBE-"), unique("P"), accession=accession))
                probes_found += mwl_count(server.dicom, AccessionNumber=accession) == 1
    finally:
        server.stop()
    return {"messages_per_run": args.messages, "messages_per_s": spread(rates),
            "probes": args.probe, "probes_queryable_at_ack": probes_found}


def routing_bench(args: argparse.Namespace, work: Path, study: Path, count: int) -> dict:
    scp_port = free_port()
    received = work / "received"
    config = (f'[peers.planning]\nae_title = "PLANNING"\nhost = "127.0.0.1"\nport = {scp_port}\n\n'
              '[routing.ct]\non = "instance_stored"\nsend_to = ["planning"]\nwhen = { modality = "CT" }\n')
    routed, moved = [], []
    for run in range(args.runs):
        out = received / f"run{run}"
        out.mkdir(parents=True)
        scp = subprocess.Popen(["/usr/bin/storescp", "-aet", "PLANNING", "-od", str(out), str(scp_port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        server = Serve(ROOT / "src", work / f"routing{run}", config).start()
        try:
            files = sorted(map(str, study.rglob("*.dcm")))
            t = time.perf_counter()
            subprocess.run(["/usr/bin/storescu", "-aec", "HOUNSFIELD", "127.0.0.1", str(server.dicom), *files],
                           check=True, capture_output=True)
            deadline = time.monotonic() + 300
            while len(list(out.iterdir())) < count:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"routing delivered {len(list(out.iterdir()))} of {count}")
                time.sleep(0.005)
            routed.append(count / (time.perf_counter() - t))
            for f in out.iterdir():
                f.unlink()
            uid = subprocess.run(["/usr/bin/dcmdump", "+P", "StudyInstanceUID", files[0]], check=True,
                                 capture_output=True, text=True).stdout.split("[")[1].split("]")[0]
            t = time.perf_counter()
            subprocess.run(["/usr/bin/movescu", "-S", "-aec", "HOUNSFIELD", "-aem", "PLANNING", "-k",
                            "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={uid}", "127.0.0.1",
                            str(server.dicom)], check=True, capture_output=True)
            moved.append(count / (time.perf_counter() - t))
            assert len(list(out.iterdir())) == count, "C-MOVE did not deliver the study"
        finally:
            server.stop()
            scp.terminate()
            scp.wait(30)
    return {"instances": count, "routing_end_to_end_per_s": spread(routed), "c_move_per_s": spread(moved)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--messages", type=int, default=1000)
    ap.add_argument("--probe", type=int, default=50)
    ap.add_argument("--per-study", type=int, default=100)
    ap.add_argument("--only", choices=("hl7", "routing"), help="run one part of the benchmark (default: both)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "connect.json")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-connect-"))
    result: dict = {"machine": {"python": platform.python_version(), "platform": platform.platform()}}
    try:
        if args.only != "routing":
            result["hl7"] = hl7_bench(args, work)
        if args.only != "hl7":
            subprocess.run([sys.executable, str(ROOT.parent / "shared" / "bench" / "gen_ct.py"), "--studies", "1",
                            "--per-study", str(args.per_study), "--out", str(work / "ct")], check=True,
                           capture_output=True)
            study = next(p for p in (work / "ct").iterdir() if p.is_dir())
            result["routing"] = routing_bench(args, work, study, len(list(study.rglob("*.dcm"))))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print("| what | median | min–max |\n|---|---|---|")
    if "hl7" in result:
        m = result["hl7"]["messages_per_s"]
        print(f"| HL7 ORM^O01 over one MLLP connection, messages/s | {m['median']:.0f} | "
              f"{m['min']:.0f}–{m['max']:.0f} |")
    for key, label in (("routing_end_to_end_per_s", "routing rule → storescp, end to end, instances/s"),
                       ("c_move_per_s", "C-MOVE of the same study → same storescp, instances/s")):
        if "routing" in result:
            v = result["routing"][key]
            print(f"| {label} | {v['median']:.1f} | {v['min']:.1f}–{v['max']:.1f} |")
    if "hl7" in result:
        h = result["hl7"]
        print(f"\nqueryable by MWL when the ACK left: {h['probes_queryable_at_ack']} of {h['probes']}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
