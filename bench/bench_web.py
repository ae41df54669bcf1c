"""DICOMweb and viewer benchmark for hounsfield (a script, not a timed test).

Own figures, against a ``hounsfield serve`` this script starts on free ports:
  qido      QIDO-RS /studies with N instances indexed: PatientID (1 answer), StudyDate range with limit=50,
            ModalitiesInStudy=CT with limit=100; median and p95 of many requests (keep-alive session)
  metadata  /studies/S/series/SE/metadata of 100-instance series (512x512 CT)
  wado      WADO-RS series retrieve (multipart/related application/dicom, 100 instances) throughput
  first     time to first image as the viewer does it: QIDO study by PatientID -> QIDO series -> series
            metadata -> the first slice's values (/ui/api/values) and its thumbnail
The index is filled in-process through Archive.store_bytes (the same path as STOW-RS) with synthetic CT:
five 100-slice series of 512x512 and (N - 500) 16x16 instances, 100 per study, one patient per study.

With --shared it then also runs the shared harness (/work/shared/bench/bench_web.py) against the same kind
of server (a fresh one: the harness checks answer sets exactly), with Orthanc side by side when the harness
can start it (``which Orthanc``).

usage: python bench/bench_web.py [--instances 100000] [--database-url URL] [--keep DIR]
                                 [--shared [--scale K] [--peers orthanc]]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import requests
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from support import Server  # noqa: E402

SHARED_BENCH = Path(os.environ.get("HOUNSFIELD_SHARED_BENCH", ROOT.parent / "shared" / "bench"))
BIG_SERIES = 5
PER_STUDY = 100


def instance_bytes(study: int, series_uid: str, study_uid: str, number: int, size: int, rng: np.random.Generator) -> bytes:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = CTImageStorage
    ds.PatientName, ds.PatientID = f"BENCH^P{study:06d}", f"BP{study:06d}"
    ds.PatientBirthDate, ds.PatientSex = "19700101", "O"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
    ds.StudyDate = f"{2000 + study % 25}{1 + study % 12:02d}{1 + study % 28:02d}"
    ds.StudyTime, ds.AccessionNumber, ds.StudyID = "120000", f"A{study:07d}", str(study)
    ds.StudyDescription, ds.SeriesDescription = "BENCH STUDY", "BENCH SERIES"
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "CT", 1, number
    ds.ImagePositionPatient, ds.ImageOrientationPatient = [0, 0, number * 2.5], [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing, ds.SliceThickness = [0.7, 0.7], 2.5
    ds.Rows = ds.Columns = size
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleIntercept, ds.RescaleSlope, ds.WindowCenter, ds.WindowWidth = -1024, 1, 40, 400
    ds.PixelData = rng.integers(0, 4095, (size, size), dtype=np.uint16).tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def populate(data_dir: Path, database_url: str, total: int) -> dict:
    """Store ``total`` synthetic instances in-process; returns the catalog of the big series."""
    from hounsfield import config
    from hounsfield.pacs import Pacs

    pacs = Pacs(config.load(None, environ={"HOUNSFIELD_FSYNC": "false"}, data_dir=data_dir,
                            database_url=database_url or None))
    rng = np.random.default_rng(7)
    big, t0, stored = [], time.perf_counter(), 0
    studies = max(BIG_SERIES, total // PER_STUDY)
    for study in range(studies):
        study_uid, series_uid = generate_uid(), generate_uid()
        size = 512 if study < BIG_SERIES else 16
        for n in range(1, PER_STUDY + 1):
            pacs.archive.store_bytes(instance_bytes(study, series_uid, study_uid, n, size, rng), "bench")
            stored += 1
        if study < BIG_SERIES:
            big.append({"study": study_uid, "series": series_uid, "patient_id": f"BP{study:06d}"})
        if study % 50 == 0:
            rate = stored / (time.perf_counter() - t0)
            print(f"  stored {stored}/{studies * PER_STUDY} ({rate:.0f}/s)", flush=True)
    pacs.close()
    return {"big": big, "studies": studies, "instances": stored, "store_s": time.perf_counter() - t0}


def timed(sess: requests.Session, url: str, **kw) -> tuple[float, requests.Response]:
    t0 = time.perf_counter()
    r = sess.get(url, **kw)
    dt = time.perf_counter() - t0
    assert r.status_code in (200, 204), (url, r.status_code, r.text[:200])
    return dt, r


def summary(times: list[float]) -> dict:
    s = sorted(times)
    return {"median_ms": round(statistics.median(s) * 1e3, 2), "p95_ms": round(s[int(0.95 * (len(s) - 1))] * 1e3, 2),
            "min_ms": round(s[0] * 1e3, 2), "n": len(s)}


def measure(url: str, cat: dict, queries: int) -> dict:
    root = f"{url}/dicom-web"
    rng = random.Random(3)
    out: dict = {}
    with requests.Session() as sess:
        timed(sess, f"{root}/studies", params={"PatientID": "BP000001"})  # warm-up
        shapes = {
            "pid": lambda: {"PatientID": f"BP{rng.randrange(cat['studies']):06d}"},
            "date_limit50": lambda: {"StudyDate": "20100101-20121231", "limit": "50"},
            "mod_limit100": lambda: {"ModalitiesInStudy": "CT", "limit": "100"},
            "name_fuzzy": lambda: {"PatientName": f"bench^p{rng.randrange(cat['studies']):06d}",
                                   "fuzzymatching": "true"},
        }
        for name, params in shapes.items():
            times, answers = [], set()
            for _ in range(queries):
                dt, r = timed(sess, f"{root}/studies", params=params(), headers={"Accept": "application/dicom+json"})
                times.append(dt)
                answers.add(0 if r.status_code == 204 else len(r.json()))
            out[f"qido_{name}"] = {**summary(times), "answers": sorted(answers)}
            print(f"  QIDO {name:13s} {out[f'qido_{name}']}", flush=True)
        times = []
        for k in range(20):
            s = cat["big"][k % len(cat["big"])]
            dt, r = timed(sess, f"{root}/studies/{s['study']}/series/{s['series']}/metadata")
            assert len(r.json()) == PER_STUDY
            times.append(dt)
        out["metadata_100"] = {**summary(times), "bytes": len(r.content)}
        print(f"  series metadata (100) {out['metadata_100']}", flush=True)
        times, sizes = [], []
        for k in range(5):
            s = cat["big"][k % len(cat["big"])]
            dt, r = timed(sess, f"{root}/studies/{s['study']}/series/{s['series']}",
                          headers={"Accept": 'multipart/related; type="application/dicom"'})
            times.append(dt)
            sizes.append(len(r.content))
        med = statistics.median(times)
        out["wado_series"] = {**summary(times), "mb_per_s": round(statistics.median(sizes) / 1e6 / med, 1),
                              "inst_per_s": round(PER_STUDY / med, 1), "bytes": statistics.median(sizes)}
        print(f"  WADO-RS series {out['wado_series']}", flush=True)
    times = []
    for s in cat["big"]:  # a fresh connection each time, as a browser opening the viewer
        with requests.Session() as sess:
            t0 = time.perf_counter()
            study = sess.get(f"{root}/studies", params={"PatientID": s["patient_id"]}).json()[0]
            study_uid = study["0020000D"]["Value"][0]
            series = sess.get(f"{root}/studies/{study_uid}/series").json()[0]["0020000E"]["Value"][0]
            meta = sess.get(f"{root}/studies/{study_uid}/series/{series}/metadata").json()
            sop = meta[0]["00080018"]["Value"][0]
            values = sess.get(f"{url}/ui/api/values/{study_uid}/{series}/{sop}")
            assert values.status_code == 200 and len(values.content) == 512 * 512 * 2
            times.append(time.perf_counter() - t0)
            sess.get(f"{root}/studies/{study_uid}/series/{series}/thumbnail?viewport=96,96").raise_for_status()
    out["first_image"] = summary(times)
    print(f"  time to first image {out['first_image']}", flush=True)
    return out


def run_shared(args: argparse.Namespace, env: dict[str, str]) -> int:
    """The shared harness against a fresh hounsfield (and Orthanc when it can start it)."""
    work = Path(tempfile.mkdtemp(prefix="hf-shared-"))
    srv = Server(work / "data", database_url=args.database_url, env=env).start()
    try:
        peers = args.peers if shutil.which("Orthanc") or os.path.exists("/usr/sbin/Orthanc") else ""
        if args.peers and not peers:
            print("Orthanc is not installed here (`which Orthanc` finds nothing): hounsfield alone", flush=True)
        cmd = [sys.executable, str(SHARED_BENCH / "bench_web.py"), "--peers", peers, "--runs", str(args.runs),
               "--scale", str(args.scale), "--external",
               f"name=hounsfield,port={srv.dicom_port},aet={srv.ae_title},http={srv.url}/dicom-web"]
        print("$", " ".join(cmd), flush=True)
        return subprocess.call(cmd, cwd=SHARED_BENCH)
    finally:
        srv.stop()
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--instances", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("--database-url", default="")
    ap.add_argument("--keep", type=Path, help="data directory to fill (kept; reused if it has an index)")
    ap.add_argument("--shared", action="store_true", help="also run the shared harness")
    ap.add_argument("--shared-only", action="store_true")
    ap.add_argument("--scale", type=int, default=1)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--peers", default="orthanc")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "work" / "web.json")
    args = ap.parse_args()
    env = {"HOUNSFIELD_FSYNC": "false", "HOUNSFIELD_LOG_LEVEL": "WARNING"}
    result: dict = {"instances_requested": args.instances, "database": args.database_url or "sqlite"}
    if not args.shared_only:
        data = args.keep or Path(tempfile.mkdtemp(prefix="hf-bench-")) / "data"
        catalog_file = data.parent / f"{data.name}-catalog.json"
        if catalog_file.exists():
            cat = json.loads(catalog_file.read_text())
        else:
            print(f"filling the index with {args.instances} instances in {data}", flush=True)
            cat = populate(data, args.database_url, args.instances)
            catalog_file.write_text(json.dumps(cat))
        result["populate"] = {k: cat[k] for k in ("studies", "instances", "store_s")}
        srv = Server(data, database_url=args.database_url, env=env).start()
        try:
            result["figures"] = measure(srv.url, cat, args.queries)
        finally:
            srv.stop()
            if args.keep is None:
                shutil.rmtree(data.parent, ignore_errors=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
        print(f"results in {args.out}")
    if args.shared or args.shared_only:
        sys.exit(run_shared(args, env))


if __name__ == "__main__":
    main()
