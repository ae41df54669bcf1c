"""Retrieval benchmark: C-MOVE and C-GET of one study from hounsfield and from Orthanc, each to a receiver that
writes every file (dcmtk) and to a lean one that writes nothing (bench/leanstore.py), so that the server's part
of a retrieval can be told from the receiver's.

Why: bench_archive.py times C-MOVE to dcmtk's storescp, which writes every instance before it answers, and C-GET
into pynetdicom in-process, which decodes every instance (~1.5 ms of CPU each) before the benchmark writes it.
Both receivers run on the same 2 cores as the server. The lean receivers answer each C-STORE at once and only
count (and with --crc checksum) the bytes, as ../shared/bench/leanscu.py does for C-FIND.

Both targets (Orthanc: the harness's peers.Orthanc; hounsfield: bench_archive.Hounsfield) are started fresh and
run side by side; each ingests the CT set with one storescu (bench_ingest.run_storescu), then, per run, on a
different study each, every kind is measured on both targets in turn (on the same study; the order of the
targets reversed every other run), so that a drift of the machine does not fall on one target alone:
  move-storescp  C-MOVE (pynetdicom SCU, request -> final response) to the harness's dcmtk storescp (HBDEST)
  move-lean      the same C-MOVE to a LeanStoreSCP (AE HBLEAN, 127.0.0.1:$HBENCH_PORT_BASE+10)
  get-getscu     C-GET with dcmtk's `getscu -S -od DIR`, wall clock of the process (start-up and association
                 included: an upper bound)
  get-lean       C-GET with leanstore.lean_get, request -> final response
The four kinds take turns within a run, so that a drift of the machine hits all of them. Every received set is
checked against the study's SOP Instance UIDs (none missing, none extra, no duplicate) and, for the lean
receivers, every dataset's byte count (and with --crc its CRC-32) against the source file's dataset when it came
in the source file's transfer syntax. Also recorded: the receiver's CPU time per instance (storescp and getscu
from the kernel's accounting, in 10 ms ticks, getscu's including its start-up; the lean receivers' as the CPU
time of their threads), and the load average.

    PATH=/usr/bin:$PATH python bench/bench_retrieve.py [--runs 5] [--targets orthanc,hounsfield] [--crc]
        [--max-pdu 16384] [--out bench/results/retrieve.json]
    python bench/bench_retrieve.py --table [--out FILE]      # the markdown table again, from the JSON

Data: $HBENCH_WORK/ct (../shared/bench/gen_ct.py; the harness's default is 20 studies x 100). Ports: the
harness's plan ($HBENCH_PORT_BASE+2/+3 Orthanc, +6 HBDEST, +7/+8 hounsfield) and +10 for HBLEAN.
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import resource
import struct
import subprocess
import sys
import time
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_archive import Hounsfield  # noqa: E402  (first: puts ../shared/bench on sys.path, sets TCP_NODELAY)
import leanstore  # noqa: E402
from bench_ingest import run_storescu  # noqa: E402
from bench_qr import retrieve_query  # noqa: E402
from common import HOST, PORT_BASE, SCU_AET, WORK, dcmtk, fresh_dir, machine_info, spread, stop_all  # noqa: E402
from peers import MOVE_DEST_AET, PORT, Orthanc, StoreSCP  # noqa: E402

LEAN_AET = "HBLEAN"
LEAN_PORT = PORT_BASE + 10  # after the harness's +1 ... +9
KINDS = {"move-storescp": "C-MOVE → dcmtk storescp", "move-lean": "C-MOVE → lean SCP",
         "get-getscu": "C-GET, dcmtk getscu (process wall clock)", "get-lean": "C-GET, lean SCU"}
RESULTS = HERE / "results"


# ------------------------------------------------------------------------------------------------ targets
class OrthancLean(Orthanc):
    """The harness's Orthanc, which also knows the lean destination: a DicomModalities entry beside HBDEST's."""

    def __init__(self, lean_port: int = LEAN_PORT) -> None:
        super().__init__()
        self.lean_port = lean_port

    def config(self) -> dict:
        cfg = super().config()
        cfg["DicomModalities"]["hblean"] = [LEAN_AET, HOST, self.lean_port]
        return cfg


class HounsfieldLean(Hounsfield):
    """bench_archive's hounsfield, which also knows the lean destination: added as a remote node through the
    REST API once it runs (the DICOM processes look peers up in the index for each C-MOVE)."""

    def __init__(self, lean_port: int = LEAN_PORT) -> None:
        super().__init__()
        self.lean_port = lean_port

    def start(self) -> None:
        import requests

        super().start()
        requests.put(f"{self.http}/api/peers/hblean", timeout=30, json={
            "name": "hblean", "ae_title": LEAN_AET, "host": HOST, "port": self.lean_port}).raise_for_status()


# ------------------------------------------------------------------------------------------------ sources
@dataclass(frozen=True)
class SourceInstance:
    """An instance of the generated set: its dataset's transfer syntax, byte count and CRC-32 (with --crc)."""
    transfer_syntax: str
    size: int
    crc32: int | None


def dataset_offset(data: bytes) -> int:
    """Where a Part-10 file's dataset starts: after the 128-byte preamble, 'DICM' and the file meta group,
    whose group length element (0002,0000) comes first (PS3.10 7.1)."""
    if data[128:132] != b"DICM" or data[132:136] != b"\x02\x00\x00\x00":
        raise ValueError("not a Part-10 file with a file meta group length")
    return 144 + struct.unpack_from("<I", data, 140)[0]


def study_sources(ct: str, study: dict, crc: bool) -> dict[str, SourceInstance]:
    """SOP Instance UID -> source instance, for every file of a generated study."""
    from pydicom import dcmread

    out: dict[str, SourceInstance] = {}
    for path in sorted((Path(ct) / study["dir"]).glob("*.dcm")):
        data = path.read_bytes()
        ds = dcmread(io.BytesIO(data), stop_before_pixels=True)
        dataset = memoryview(data)[dataset_offset(data):]
        out[str(ds.SOPInstanceUID)] = SourceInstance(str(ds.file_meta.TransferSyntaxUID), len(dataset),
                                                     zlib.crc32(dataset) if crc else None)
    if len(out) != study["instances"]:
        raise RuntimeError(f"{study['dir']}: {len(out)} files, the manifest says {study['instances']}")
    return out


def check(uids: list[str], source: dict[str, SourceInstance], received: list | None = None) -> dict:
    """A received set against the study: counts of missing, extra and duplicate SOP Instance UIDs; with
    ``received`` (leanstore.Received records), datasets compared with the source by byte count and CRC-32 where
    they came in the source's transfer syntax (another syntax is a conversion: not comparable)."""
    seen = Counter(uids)
    out = {"received": len(uids), "missing": len(set(source) - set(seen)), "extra": len(set(seen) - set(source)),
           "duplicates": sum(n - 1 for n in seen.values())}
    if received is not None:
        same = [(r, source[r.sop_instance_uid]) for r in received if r.sop_instance_uid in source
                and r.transfer_syntax == source[r.sop_instance_uid].transfer_syntax]
        out["bytes_compared"] = len(same)
        out["bytes_differ"] = sum(1 for r, s in same if r.size != s.size
                                  or (r.crc32 is not None and s.crc32 is not None and r.crc32 != s.crc32))
        out["crc_compared"] = sum(1 for r, s in same if r.crc32 is not None and s.crc32 is not None)
        out["transfer_syntaxes"] = sorted({r.transfer_syntax for r in received})
    out["complete"] = out["missing"] == out["extra"] == out["duplicates"] == 0 and not out.get("bytes_differ")
    return out


def _read_uids(directory: Path, names: list[str]) -> list[str]:
    from pydicom import dcmread

    return [str(dcmread(directory / n, stop_before_pixels=True, specific_tags=["SOPInstanceUID"]).SOPInstanceUID)
            for n in names]


# ------------------------------------------------------------------------------------------------ CPU time
def _proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a process (proc(5): fields 14 and 15 of /proc/PID/stat, in clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


# ------------------------------------------------------------------------------------------------ measurements
class Retrieval:
    """The four measurements on one running target, with the destinations they need."""

    def __init__(self, target, dest: StoreSCP, lean: leanstore.LeanStoreSCP, ct: str, max_pdu: int, crc: bool,
                 scratch: Path) -> None:
        self.target, self.dest, self.lean, self.ct = target, dest, lean, ct
        self.max_pdu, self.crc, self.scratch = max_pdu, crc, scratch

    def _c_move(self, study_uid: str, destination: str) -> tuple[float, dict]:
        """One C-MOVE on a fresh association (pynetdicom, as bench_qr: set-up and release outside the clock)."""
        from pynetdicom import AE
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove as MOVE

        ae = AE(ae_title=SCU_AET)
        ae.add_requested_context(MOVE)
        assoc = ae.associate(self.target.host, self.target.port, ae_title=self.target.aet)
        if not assoc.is_established:
            raise RuntimeError(f"{self.target.name}: association for C-MOVE refused")
        last = None
        t0 = time.perf_counter()
        for status, _ in assoc.send_c_move(retrieve_query(study_uid), destination, MOVE):
            last = status if status is not None else last
        seconds = time.perf_counter() - t0
        assoc.release()
        return seconds, {"status": getattr(last, "Status", None),
                         "completed": getattr(last, "NumberOfCompletedSuboperations", None),
                         "failed": getattr(last, "NumberOfFailedSuboperations", None)}

    def move_storescp(self, study: dict, source: dict[str, SourceInstance]) -> dict:
        out = Path(self.dest.out)
        for old in out.iterdir():  # a study moved before would overwrite its files: start from none
            old.unlink()
        cpu0 = _proc_cpu(self.dest.proc.pid)
        seconds, final = self._c_move(study["study_uid"], MOVE_DEST_AET)
        cpu = _proc_cpu(self.dest.proc.pid) - cpu0
        return {"seconds": seconds, "receiver_cpu_s": cpu, **final,
                **check(_read_uids(out, sorted(os.listdir(out))), source)}

    def move_lean(self, study: dict, source: dict[str, SourceInstance]) -> dict:
        self.lean.take()
        seconds, final = self._c_move(study["study_uid"], LEAN_AET)
        records = self.lean.take()
        received = [r for rec in records for r in rec.instances]
        return {"seconds": seconds, "receiver_cpu_s": sum(rec.cpu_s for rec in records), **final,
                **check([r.sop_instance_uid for r in received], source, received)}

    def get_getscu(self, study: dict, source: dict[str, SourceInstance]) -> dict:
        out = Path(fresh_dir(str(self.scratch / "getscu")))
        cmd = [dcmtk("getscu"), "-S", "-aet", SCU_AET, "-aec", self.target.aet, "-od", str(out),
               "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study['study_uid']}",
               self.target.host, str(self.target.port)]
        cpu0 = _children_cpu()
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - t0
        cpu = _children_cpu() - cpu0
        if proc.returncode != 0:
            print(f"   getscu exit {proc.returncode}: {(proc.stderr or proc.stdout)[-400:]}", flush=True)
        return {"seconds": seconds, "receiver_cpu_s": cpu, "exit": proc.returncode,
                **check(_read_uids(out, sorted(os.listdir(out))), source)}

    def get_lean(self, study: dict, source: dict[str, SourceInstance]) -> dict:
        classes = sorted(set(_sop_classes(self.ct, study)))
        received: list[leanstore.Received] = []
        result = leanstore.lean_get(self.target.host, self.target.port, self.target.aet, SCU_AET,
                                    study["study_uid"], classes, max_pdu=self.max_pdu, crc=self.crc,
                                    records=received)
        return {"seconds": result.seconds, "receiver_cpu_s": result.cpu_seconds, "status": result.status,
                "completed": result.completed, "failed": result.failed,
                "associate_s": result.associate_seconds, "release_s": result.release_seconds,
                **check(result.uids, source, received)}


_CLASSES: dict[str, list[str]] = {}


def _sop_classes(ct: str, study: dict) -> list[str]:
    """The study's SOP classes (the generated set: one), read once from its first file."""
    if study["dir"] not in _CLASSES:
        from pydicom import dcmread

        first = next(iter(sorted((Path(ct) / study["dir"]).glob("*.dcm"))))
        _CLASSES[study["dir"]] = [str(dcmread(first, stop_before_pixels=True).SOPClassUID)]
    return _CLASSES[study["dir"]]


def summarise(runs: list[dict]) -> dict:
    """Median and min-max over the runs (common.spread) of seconds, instances/s and receiver CPU/instance."""
    return {"seconds": spread([r["seconds"] for r in runs]),
            "inst_per_s": spread([r["instances"] / r["seconds"] for r in runs]),
            "receiver_cpu_ms_per_instance": spread([1e3 * r["receiver_cpu_s"] / r["instances"] for r in runs]),
            "all_complete": all(r["complete"] and r.get("status") in (0, None) and r.get("exit", 0) == 0
                                for r in runs),
            "runs": runs}


def measure(targets: list, studies: list[dict], sources: Callable[[dict], dict], runs: int, ct: str,
            dest: StoreSCP, lean: leanstore.LeanStoreSCP, max_pdu: int, crc: bool) -> list[dict]:
    """Every target ingests the set, then each run measures every kind on every target in turn, on the same
    study, the targets' order reversed every other run: a drift of this shared machine (seen: a target's own
    rate moving 1.5x between runs minutes apart) hits them alike, where measuring one target after the other
    let it fall on one of them."""
    rows, retrievals = [], []
    for target in targets:
        row: dict = {"target": target.describe(), "load_before": os.getloadavg()}
        t0 = time.perf_counter()
        ok = run_storescu(target, ct, studies, 1)[1]
        stored = target.count_stored()  # hounsfield's REST count waits for its indexer: all queryable after it
        print(f"  {target.name}: ingest {sum(s['instances'] for s in studies)} instances: "
              f"{time.perf_counter() - t0:.1f} s, stored {stored}{'' if ok else ' (storescu errors)'}", flush=True)
        row["stored"] = stored
        rows.append(row)
        retrievals.append(Retrieval(target, dest, lean, ct, max_pdu, crc, Path(WORK) / "run" / "retrieve"))
    results: list[dict[str, list[dict]]] = [{k: [] for k in KINDS} for _ in targets]
    for run in range(runs):
        order = list(range(len(targets)))[::1 if run % 2 == 0 else -1]
        for k, kind in enumerate(KINDS):
            study = studies[(k * runs + run) % len(studies)]
            for i in order:
                res = getattr(retrievals[i], kind.replace("-", "_"))(study, sources(study))
                res = {"study": study["dir"], "instances": study["instances"], **res}
                results[i][kind].append(res)
                print(f"  {targets[i].name:10s} {kind:14s} run {run + 1} {study['dir']}: {res['seconds']:6.3f} s "
                      f"{res['instances'] / res['seconds']:7.1f} inst/s, received {res['received']}/"
                      f"{study['instances']}{'' if res['complete'] else ' INCOMPLETE'}, receiver CPU "
                      f"{1e3 * res['receiver_cpu_s'] / res['instances']:.2f} ms/inst"
                      + (f"; association {1e3 * res['associate_s']:.0f} ms, release {1e3 * res['release_s']:.0f}"
                         " ms (outside the clock)" if "associate_s" in res else ""), flush=True)
    for row, measured in zip(rows, results):
        row.update({kind: summarise(v) for kind, v in measured.items()})
        row["load_after"] = os.getloadavg()
    return rows


# ------------------------------------------------------------------------------------------------ report
def _cell(m: dict) -> str:
    s = m["inst_per_s"]
    flag = "" if m["all_complete"] else " ✗"
    return f"{s['median']:.1f} ({s['min']:.1f}–{s['max']:.1f}){flag}"


def table(result: dict) -> str:
    """Markdown: a row per measurement, Orthanc and hounsfield side by side (inst/s, median and min–max), the
    ratio of the medians, and the receivers' CPU per instance."""
    by_name = {row["target"]["name"]: row for row in result["targets"]}
    names = [n for n in ("Orthanc", "hounsfield") if n in by_name] + [n for n in by_name if n not in
                                                                       ("Orthanc", "hounsfield")]
    n = result.get("instances_per_study")
    lines = [f"| {n}-instance study | " + " | ".join(f"{name} inst/s" for name in names)
             + (" | hounsfield/Orthanc" if {"Orthanc", "hounsfield"} <= set(by_name) else "")
             + " | receiver CPU ms/inst (" + ", ".join(names) + ") |",
             "|---" * (len(names) + 2 + ({"Orthanc", "hounsfield"} <= set(by_name))) + "|"]
    for kind, label in KINDS.items():
        cells = [_cell(by_name[name][kind]) for name in names]
        if {"Orthanc", "hounsfield"} <= set(by_name):
            ratio = (by_name["hounsfield"][kind]["inst_per_s"]["median"]
                     / by_name["Orthanc"][kind]["inst_per_s"]["median"])
            cells.append(f"{ratio:.2f}×")
        cpu = ", ".join(f"{by_name[name][kind]['receiver_cpu_ms_per_instance']['median']:.2f}" for name in names)
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {cpu} |")
    runs = result.get("runs")
    lines.append(f"\n{runs} run(s) each, a different study per run and kind; ✗: a run's received set or status "
                 f"was wrong. Max PDU of the lean receivers: {result.get('max_pdu')}.")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ct", default=os.path.join(WORK, "ct"))
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--targets", default="orthanc,hounsfield")
    ap.add_argument("--max-pdu", type=int, default=leanstore.DEFAULT_MAX_PDU,
                    help="maximum PDU length the lean receivers announce (default: dcmtk's, as storescp/getscu)")
    ap.add_argument("--crc", action="store_true", help="CRC-32 of every dataset received, compared with the source")
    ap.add_argument("--out", type=Path, default=RESULTS / "retrieve.json")
    ap.add_argument("--table", action="store_true", help="print the table of an existing --out and exit")
    a = ap.parse_args()
    if a.table:
        print(table(json.loads(a.out.read_text())))
        return
    manifest = json.loads((Path(a.ct) / "manifest.json").read_text())
    studies = manifest["studies"]
    cache: dict[str, dict[str, SourceInstance]] = {}

    def sources(study: dict) -> dict[str, SourceInstance]:
        if study["dir"] not in cache:
            cache[study["dir"]] = study_sources(a.ct, study, a.crc)
        return cache[study["dir"]]

    makers = {"orthanc": OrthancLean, "hounsfield": HounsfieldLean}
    git = subprocess.run(["git", "-C", str(HERE), "describe", "--always", "--dirty"], capture_output=True,
                         text=True, check=False).stdout.strip()
    result: dict = {"workload": "retrieve", "recorded": datetime.datetime.now().isoformat(timespec="seconds"),
                    "machine": machine_info(), "hounsfield": git, "runs": a.runs,
                    "instances_per_study": studies[0]["instances"], "max_pdu": a.max_pdu, "crc": a.crc,
                    "ct": a.ct, "targets": []}
    lean = leanstore.LeanStoreSCP(LEAN_PORT, LEAN_AET, max_pdu=a.max_pdu, crc=a.crc).start()
    # One C-MOVE destination for both: each C-MOVE to it starts from an empty folder (move_storescp).
    dest = StoreSCP(port=PORT["move_dest"], aet=MOVE_DEST_AET, name="move destination")
    targets = [makers[name]() for name in a.targets.split(",") if name]
    try:
        dest.start()
        for target in targets:
            target.start()
        result["targets"] = measure(targets, studies, sources, a.runs, a.ct, dest, lean, a.max_pdu, a.crc)
    finally:
        for target in targets:
            target.stop()
        dest.stop()
        lean.stop()
        stop_all()
        if result["targets"]:
            a.out.parent.mkdir(parents=True, exist_ok=True)
            a.out.write_text(json.dumps(result, indent=1))
            print(f"wrote {a.out}")
    print(table(result))


if __name__ == "__main__":
    main()
