"""Archive benchmarks: C-STORE ingest of 2,000 CT instances (1 and 4 associations), study-level C-FIND, C-MOVE
and C-GET after ingest — hounsfield beside dcmtk's storescp and Orthanc, started by ../shared/bench in the same
run — and study-level C-FIND by PatientID with 100,000 instances indexed.

    PATH=/usr/bin:$PATH python bench/bench_archive.py [--runs 3] [--skip-100k]   (data: HBENCH_WORK,
    default /tmp/hbench, made by ../shared/bench/gen_ct.py; dcmtk's storescu must come first on PATH)

Needs the shared harness (../shared/bench), dcmtk, and Orthanc for its rows. Writes bench/results/archive.json,
whose figures bench/RESULTS.md quotes.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
import uuid
import zlib
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
SHARED_BENCH = Path(os.environ.get("HBENCH_HARNESS", HERE.parent.parent / "shared" / "bench"))
sys.path.insert(0, str(SHARED_BENCH))
os.environ.setdefault("TCP_NODELAY", "1")  # dcmtk tools: no delayed-ACK stalls (see the harness README)

import bench_qr  # noqa: E402
from bench_ingest import cfind_count_instances, run_storescu  # noqa: E402
from common import HOST, PORT_BASE, WORK, fresh_dir, machine_info, spread, start_process, stop_all, wait_port  # noqa: E402
from peers import MOVE_DEST_AET, PORT, Orthanc, StoreSCP, _Managed  # noqa: E402

RESULTS = HERE / "results"
PROCESSES = min(8, 2 * (os.cpu_count() or 1))  # hounsfield's default dicom_processes


class Hounsfield(_Managed):
    """``hounsfield serve`` on a fresh data directory, knowing the harness's C-MOVE destination."""

    def __init__(self, port: int = PORT_BASE + 7, http_port: int = PORT_BASE + 8, data_dir: Path | None = None):
        super().__init__("hounsfield", port, "HOUNSFIELD", os.path.join(WORK, "run", "hounsfield"))
        self.http = f"http://{HOST}:{http_port}"
        self.http_port = http_port
        self.data_dir = data_dir

    def start(self) -> None:
        if self.data_dir is None:
            fresh_dir(self.workdir)
        data = self.data_dir or Path(self.workdir) / "data"
        cfg = Path(self.workdir) / "hounsfield.toml"
        cfg.parent.mkdir(parents=True, exist_ok=True)
        cfg.write_text(f'[peers.hbdest]\nae_title = "{MOVE_DEST_AET}"\nhost = "{HOST}"\nport = {PORT["move_dest"]}\n')
        self.proc = start_process([sys.executable, "-m", "hounsfield", "serve", "--config", str(cfg),
                                   "--data-dir", str(data), "--ae-title", self.aet, "--dicom-port", str(self.port),
                                   "--http-port", str(self.http_port)], os.path.join(self.workdir, "serve.log"))
        wait_port(self.port, proc=self.proc)
        wait_port(self.http_port, proc=self.proc)
        log = Path(self.workdir) / "serve.log"
        deadline = time.time() + 120
        while log.read_text().count("listening on") < PROCESSES and time.time() < deadline:
            time.sleep(0.5)  # every DICOM process listens before the clock starts

    def count_stored(self) -> int | None:
        import requests

        studies = requests.get(f"{self.http}/api/studies", params={"limit": 10000}, timeout=60).json()
        return sum(s["NumberOfStudyRelatedInstances"] for s in studies)


class ServerCpu:
    """CPU time (user + system) of a target's process and all its children from now until ``since`` (psutil):
    what the server spent per instance, whoever else shares the two cores (the storescu senders do). The
    children are looked up again at the end, so processes that exit before it (none of the three targets'
    do during a run) would be missed."""

    def __init__(self, pid: int) -> None:
        import psutil

        self.root = psutil.Process(pid)
        self.start = {p.pid: self._cpu(p) for p in self._tree()}

    def _tree(self) -> list:
        return [self.root, *self.root.children(recursive=True)]

    @staticmethod
    def _cpu(p) -> float:  # noqa: ANN001 - psutil.Process
        times = p.cpu_times()
        return times.user + times.system

    def since(self) -> float:
        return sum(self._cpu(p) - self.start.get(p.pid, 0.0) for p in self._tree())


def ingest(targets: list, ct: str, manifest: dict, runs: int) -> list[dict]:
    """Each run of each mode goes round the targets in turn, after a sync: every target starts on a disk that
    has written back what the one before it wrote (hounsfield alone makes each instance durable before it
    answers, and when it ran last it waited for the peers' gigabytes of write-back; stop 16, run F)."""
    m, mb = manifest["instances"], manifest["bytes"] / 1e6
    measured: dict[tuple[str, str], dict[str, list]] = {}
    for mode in ("1x", "4x"):
        for r in range(runs):
            for t in targets:
                os.sync()
                t.start()
                cpu = ServerCpu(t.proc.pid)
                dt, ok = run_storescu(t, ct, manifest["studies"], int(mode[0]))
                # Until a query sees every instance: hounsfield's queries wait for its indexer to catch up.
                t0 = time.perf_counter()
                n = t.count_stored()
                if n is None:
                    n = cfind_count_instances(t, [s["study_uid"] for s in manifest["studies"]])
                count_s = time.perf_counter() - t0
                used = cpu.since()
                t.stop()
                got = measured.setdefault((t.name, mode), {"secs": [], "queryable": [], "counts": [], "cpu": []})
                got["secs"].append(dt)
                got["queryable"].append(dt + count_s)
                got["counts"].append(n)
                got["cpu"].append(1000 * used / m)
                print(f"  {t.name:16s} {mode} run {r + 1}: {dt:6.2f} s {m / dt:7.1f} inst/s stored {n}/{m}, "
                      f"all queryable after {dt + count_s:6.2f} s, server CPU {1000 * used / m:.2f} ms/instance"
                      f"{'' if ok else ' (storescu errors)'}", flush=True)
    rows = []
    for t in targets:
        row = {"target": t.describe()}
        for mode in ("1x", "4x"):
            got = measured[(t.name, mode)]
            secs, queryable = got["secs"], got["queryable"]
            row[mode] = {"seconds": spread(secs), "inst_per_s": spread([m / s for s in secs]),
                         "mb_per_s": spread([mb / s for s in secs]), "stored": got["counts"], "expected": m,
                         "queryable_seconds": spread(queryable),
                         "queryable_inst_per_s": spread([m / s for s in queryable]),
                         "server_cpu_ms_per_instance": spread(got["cpu"])}
        rows.append(row)
    return rows


def query_retrieve(targets: list, ct: str, manifest: dict, runs: int) -> list[dict]:
    rows = []
    for t in targets:
        # A destination per target: the same studies are moved each time and would overwrite earlier files.
        dest = StoreSCP(port=PORT["move_dest"], aet=MOVE_DEST_AET, name="move destination")
        dest.start()
        t.start()
        try:
            run_storescu(t, ct, manifest["studies"], 1)
            rows.append({"target": t.describe(), "stored": t.count_stored(),
                         "find": bench_qr.bench_find(t, manifest["studies"], 20, 3),
                         "move": bench_qr.bench_move(t, manifest["studies"], runs, dest),
                         "get": bench_qr.bench_get(t, manifest["studies"], runs, os.path.join(WORK, "run", "cget"))})
        finally:
            t.stop()
            dest.stop()
    return rows


def seed_index(data_dir: Path, ct: str, manifest: dict, patients: int, per_study: int, *,
               database_url: str | None = None, prefix: str = "SEED",
               study_date: Callable[[int], str] = lambda p: "20240101") -> list[dict]:
    """An index of ``patients`` x 1 study x ``per_study`` instances, rows written in bulk (C-FIND and QIDO-RS
    read only the index, so the files are not needed); every header blob is a real CT header with its
    PatientID, PatientName, StudyDate and UIDs changed to those of its row. Patient ``p`` gets PatientID
    ``f"{prefix}{p:06d}"`` and StudyDate ``study_date(p)``. Shared by bench_archive (C-FIND) and bench_web
    (QIDO-RS)."""
    from sqlalchemy import insert

    from hounsfield import config
    from hounsfield.dicomfile import BULK_PLACEHOLDER, read_header
    from hounsfield.models import Instance, Patient, Series, Study
    from hounsfield.pacs import Pacs

    pacs = Pacs(config.load(None, environ={}, data_dir=data_dir, database_url=database_url or None))
    template = read_header(next((Path(ct) / manifest["studies"][0]["dir"]).glob("*.dcm")))
    base = json.dumps(template.json, separators=(",", ":"))
    old = {k: template.text(k) for k in ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID",
                                         "StudyDate")}
    old_name = json.dumps({"Alphabetic": template.text("PatientName")}, separators=(",", ":"))
    studies = []
    with pacs.db.engine.begin() as conn:
        for p in range(patients):
            pid, study_uid, series_uid = f"{prefix}{p:06d}", f"2.25.{uuid.uuid4().int}", f"2.25.{uuid.uuid4().int}"
            date, name = study_date(p), f"{prefix}^{p}"
            text = (base.replace(f'"{old["PatientID"]}"', f'"{pid}"')
                    .replace(f'"{old["StudyInstanceUID"]}"', f'"{study_uid}"')
                    .replace(f'"{old["SeriesInstanceUID"]}"', f'"{series_uid}"')
                    .replace(f'"{old["StudyDate"]}"', f'"{date}"')
                    .replace(old_name, json.dumps({"Alphabetic": name})))
            blob = zlib.compress(text.encode(), 1)
            pk = conn.execute(insert(Patient).values(patient_id=pid, patient_name=name)).inserted_primary_key[0]
            sk = conn.execute(insert(Study).values(patient_fk=pk, study_instance_uid=study_uid, study_date=date,
                                                   attrs=blob)).inserted_primary_key[0]
            ek = conn.execute(insert(Series).values(study_fk=sk, series_instance_uid=series_uid, modality="CT",
                                                    attrs=blob)).inserted_primary_key[0]
            rows = []
            for i in range(per_study):
                sop = f"2.25.{uuid.uuid4().int}"
                bulk = f"/dicom-web/studies/{study_uid}/series/{series_uid}/instances/{sop}/bulk"
                header = text.replace(f'"{old["SOPInstanceUID"]}"', f'"{sop}"').replace(
                    f'"{BULK_PLACEHOLDER}/', f'"{bulk}/')
                rows.append({"series_fk": ek, "sop_instance_uid": sop, "sop_class_uid": "1.2.840.10008.5.1.4.1.1.2",
                             "instance_number": i + 1, "path": f"seed/{p}/{i}.dcm", "size": 0, "sha256": "",
                             "header": zlib.compress(header.encode(), 1)})
            conn.execute(insert(Instance), rows)
            studies.append({"patient_id": pid, "study_uid": study_uid, "series_uid": series_uid, "date": date,
                            "instances": per_study})
    pacs.close()
    return studies


def find_at_scale(patients: int, per_study: int, ct: str, manifest: dict) -> dict:
    data = Path(WORK) / "run" / "hounsfield-100k"
    fresh_dir(str(data))
    t0 = time.perf_counter()
    studies = seed_index(data, ct, manifest, patients, per_study)
    print(f"  seeded {patients * per_study} instances in {time.perf_counter() - t0:.0f} s", flush=True)
    target = Hounsfield(data_dir=data)
    target.start()
    try:
        return {"instances": patients * per_study, "find": bench_qr.bench_find(target, random.Random(1).sample(
            studies, min(200, len(studies))), 20, 5)}
    finally:
        target.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ct", default=os.path.join(WORK, "ct"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--peers", default="storescp,orthanc")
    ap.add_argument("--skip-ingest", action="store_true")
    ap.add_argument("--skip-qr", action="store_true")
    ap.add_argument("--skip-100k", action="store_true")
    ap.add_argument("--patients", type=int, default=1000, help="studies of 100 instances in the large index")
    ap.add_argument("--out", type=Path, default=RESULTS / "archive.json",
                    help="results file (a partial run keeps the others' figures apart)")
    a = ap.parse_args()
    manifest = json.loads((Path(a.ct) / "manifest.json").read_text())
    peers = {"storescp": StoreSCP, "orthanc": Orthanc}
    result: dict = {"workload": "archive", "machine": machine_info(),
                    "hounsfield": subprocess.run(["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"],
                                                 capture_output=True, text=True).stdout.strip()}
    try:
        if not a.skip_ingest:
            targets = [peers[p]() for p in a.peers.split(",") if p] + [Hounsfield()]
            result["ingest"] = ingest(targets, a.ct, manifest, a.runs)
        if not a.skip_qr:
            targets = [Orthanc() for p in a.peers.split(",") if p == "orthanc"] + [Hounsfield()]
            result["qr"] = query_retrieve(targets, a.ct, manifest, 5)
        if not a.skip_100k:
            result["find_100k"] = find_at_scale(a.patients, 100, a.ct, manifest)
    finally:
        stop_all()
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(result, indent=1))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
