"""DICOMweb and viewer benchmark for hounsfield (a script, not a timed test): the figures of issue 5.

Part 1, hounsfield alone with N instances indexed (default 100,000), on a ``hounsfield serve`` this script
starts on free ports:
  The index is filled in bulk by ``bench_archive.seed_index`` (N - 100 x R instances: one study of 100 per
  patient, real CT headers from the shared CT set with new UIDs / PatientIDs / StudyDates spread over
  2000-2024; no files), then R (default 5) real 100-slice 512x512 series of the shared CT set
  (``$HBENCH_WORK/ct``, made by ../shared/bench/gen_ct.py) are stored for real through Archive.store_file,
  so /metadata, WADO-RS and the viewer work on real files.
  qido      QIDO-RS /studies, application/dicom+json, the shapes of the shared harness, rounds x queries
            (+1 warm-up per round) over one keep-alive session, every answer set checked:
              pid           PatientID=<random patient>             -> 1 study
              date          StudyDate=20040101-20041231             -> that year's studies (~45)
              mod_limit100  ModalitiesInStudy=CT&limit=100           -> 100 studies
              mod_all       ModalitiesInStudy=CT (fewer requests)    -> every study (informational)
  metadata  /studies/S/series/SE/metadata of the real series (100 instances), each run another series
  wado      WADO-RS series retrieve, multipart/related; type="application/dicom", each run another series
  first     time to first image:
              http     the viewer's requests on a fresh connection: QIDO study by PatientID -> QIDO series ->
                       series metadata -> the first slice's values (/ui/api/values)
              browser  the viewer itself in headless Chromium (Playwright, /usr/bin/chromium), a fresh browser
                       context per run: page load -> study list shown (the viewer's first search,
                       limit=500), then, timed in the page (performance.now): patient ID typed and search
                       submitted -> the one study listed -> clicked -> first slice drawn
                       (#viewport[data-state=ready])

Part 2, side by side with Orthanc + its DICOMweb plugin on the same 2,000 CT instances in the same run:
  the shared harness (../shared/bench/bench_web.py) with hounsfield as an --external target (a fresh
  ``hounsfield serve``; the harness sends it the CT set with storescu and checks every answer), then, on the
  same loaded hounsfield and an Orthanc this script starts with the harness's peers.Orthanc, time to first
  image as any DICOMweb viewer gets it (QIDO study -> QIDO series -> series metadata -> frame 1 of the first
  instance as multipart/related application/octet-stream), and for hounsfield its own viewer's way (values).

Results: bench/results/web.json (both parts, summarised) and bench/results/web-shared.json (the harness's
own JSON). A markdown table of both is printed at the end (``--table`` prints it again from the JSON).

usage: PATH=/usr/bin:$PATH python bench/bench_web.py [--instances 100000] [--real-series 5]
           [--skip-own] [--skip-shared] [--ct DIR] [--database-url URL] [--keep DIR] [--table]
Scratch space: $HBENCH_WEB_WORK (default /tmp/hbench-web; the harness's HBENCH_WORK, HBENCH_RESULTS and a free
HBENCH_PORT_BASE are set from it, so the shared results/ and another harness run are left alone).
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pydicom
import requests

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
SHARED_BENCH = Path(os.environ.get("HBENCH_HARNESS", ROOT.parent / "shared" / "bench"))
PY = sys.executable
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
PER_STUDY = 100
DICOM_JSON = "application/dicom+json"
MULTIPART_DICOM = 'multipart/related; type="application/dicom"'
MULTIPART_OCTET = 'multipart/related; type="application/octet-stream"'


def _free_port_base(start: int = 13000) -> int:
    """A port base whose +1 ... +9 are free on 127.0.0.1 (the harness's port plan)."""
    for base in range(start, 20000, 20):
        try:
            for k in range(1, 10):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", base + k))
            return base
        except OSError:
            continue
    raise RuntimeError("no free port range for the harness")


# The harness modules read these at import time: set them before bench_archive imports them. Our own scratch
# space and ports, so that the shared results/ and a harness run of someone else are left alone.
CT_DEFAULT = os.path.join(os.environ.get("HBENCH_WORK", "/tmp/hbench-core"), "ct")
WEB_WORK = os.environ.get("HBENCH_WEB_WORK", "/tmp/hbench-web")
os.environ["HBENCH_WORK"] = WEB_WORK
os.environ["HBENCH_RESULTS"] = os.path.join(WEB_WORK, "results")
os.environ.setdefault("HBENCH_PORT_BASE", str(_free_port_base()))
os.environ["PATH"] = "/usr/bin:" + os.environ.get("PATH", "")  # dcmtk's storescu, not pyenv's shim
os.environ.setdefault("TCP_NODELAY", "1")

sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))
from bench_archive import seed_index  # noqa: E402  (also puts the shared harness on sys.path)
from support import Server  # noqa: E402


# ---------------------------------------------------------------------------------------------- helpers
def spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values),
            "values": values}


def percentile(values: list[float], q: float) -> float:
    xs = sorted(values)
    k = (len(xs) - 1) * q / 100.0
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def timed_get(sess: requests.Session, url: str, accept: str | None = None, params: dict | None = None):
    t0 = time.perf_counter()
    r = sess.get(url, params=params, headers={"Accept": accept} if accept else None)
    dt = time.perf_counter() - t0
    if r.status_code not in (200, 204):
        raise RuntimeError(f"GET {r.url}: {r.status_code} {r.text[:300]}")
    return dt, r


def split_multipart(resp: requests.Response) -> list[bytes]:
    boundary = re.search(r'boundary="?([^";]+)"?', resp.headers["Content-Type"]).group(1).encode()
    parts = []
    for chunk in resp.content.split(b"--" + boundary)[1:]:
        if chunk.startswith(b"--"):
            break
        body = chunk.partition(b"\r\n\r\n")[2]
        parts.append(body[:-2] if body.endswith(b"\r\n") else body)
    return parts


def settle(pid: int, quiet: float = 0.10, timeout: float = 60.0) -> float:
    """Wait until the process tree of ``pid`` uses less than ``quiet`` of a core over one second: ``serve``
    starts its DICOM processes and the indexer (spawned, ~1 s of imports each) after it answers /health, and
    that start-up would otherwise land in the first measurements. Returns the seconds waited."""
    import psutil

    root, t0 = psutil.Process(pid), time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        procs = [root] + root.children(recursive=True)
        before = sum(sum(p.cpu_times()[:2]) for p in procs)
        time.sleep(1.0)
        after = sum(sum(p.cpu_times()[:2]) for p in procs if p.is_running())
        if after - before < quiet:
            break
    return time.perf_counter() - t0


def git_state() -> dict:
    def git(*a: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), *a], capture_output=True, text=True).stdout.strip()
    return {"commit": git("rev-parse", "--short", "HEAD"),
            "uncommitted_src_files": len([x for x in git("status", "--porcelain", "src").splitlines() if x])}


def machine() -> dict:
    from common import machine_info  # the harness's

    return {**machine_info(), "loadavg_start": os.getloadavg()}


# ---------------------------------------------------------------------------------------------- part 1
def study_date(p: int) -> str:
    return f"{2000 + p % 25}{1 + p % 12:02d}{1 + p % 28:02d}"


def populate(data: Path, database_url: str, total: int, real: int, ct: str) -> dict:
    """Seed ``total - 100 * real`` instances in bulk, then store ``real`` CT studies for real."""
    from hounsfield import config
    from hounsfield.pacs import Pacs

    manifest = json.loads((Path(ct) / "manifest.json").read_text())
    if real > len(manifest["studies"]):
        raise SystemExit(f"--real-series {real}: the CT set has {len(manifest['studies'])} studies")
    patients = (total - real * PER_STUDY) // PER_STUDY
    t0 = time.perf_counter()
    seeded = seed_index(data, ct, manifest, patients, PER_STUDY, database_url=database_url or None,
                        prefix="WEB", study_date=study_date)
    seed_s = time.perf_counter() - t0
    print(f"  seeded {patients * PER_STUDY} instances ({patients} studies) in {seed_s:.1f} s", flush=True)
    pacs = Pacs(config.load(None, environ={"HOUNSFIELD_FSYNC": "false"}, data_dir=data,
                            database_url=database_url or None))
    t0, big = time.perf_counter(), []
    for s in manifest["studies"][:real]:
        sops, series, date = [], set(), ""
        for f in sorted((Path(ct) / s["dir"]).glob("*.dcm")):
            r = pacs.archive.store_file(f, "bench")
            assert r.outcome.name == "STORED", r
            sops.append(r.sop_instance_uid)
            series.add(r.series_instance_uid)
        date = pydicom.dcmread(f, stop_before_pixels=True).StudyDate
        assert len(series) == 1
        big.append({"patient_id": s["patient_id"], "study_uid": s["study_uid"], "series_uid": series.pop(),
                    "date": date, "sops": sops, "dir": s["dir"]})
    pacs.close()
    store_s = time.perf_counter() - t0
    print(f"  stored {real * PER_STUDY} real instances ({real} series of 512x512) in {store_s:.1f} s", flush=True)
    studies = [{k: s[k] for k in ("patient_id", "study_uid", "date")} for s in seeded + big]
    return {"big": big, "studies": studies, "instances": (patients + real) * PER_STUDY, "seed_s": seed_s,
            "store_real_s": store_s}


def bench_qido(sess: requests.Session, root: str, cat: dict, rounds: int, queries: int) -> dict:
    studies = cat["studies"]
    everything = {s["study_uid"] for s in studies}
    year = cat["big"][0]["date"][:4]
    in_year = {s["study_uid"] for s in studies if s["date"][:4] == year}
    shapes = {  # name: (params(rnd) -> (params, expected set, exact?)), rounds, queries
        "pid": (lambda rnd: (lambda s: ({"PatientID": s["patient_id"]}, {s["study_uid"]}, True))(rnd.choice(studies)),
                rounds, queries),
        "date": (lambda rnd: ({"StudyDate": f"{year}0101-{year}1231"}, in_year, True), rounds, queries),
        "mod_limit100": (lambda rnd: ({"ModalitiesInStudy": "CT", "limit": "100"}, everything, False),
                         rounds, queries),
        "mod_all": (lambda rnd: ({"ModalitiesInStudy": "CT"}, everything, True), 1, max(3, queries // 4)),
    }
    out = {}
    for name, (make, n_rounds, n_queries) in shapes.items():
        rnd = random.Random(3)
        per_round, pooled, mismatches, answers = [], [], 0, set()
        for _ in range(n_rounds):
            times = []
            for k in range(n_queries + 1):  # the first is a warm-up
                params, expected, exact = make(rnd)
                dt, r = timed_get(sess, root + "/studies", DICOM_JSON, params)
                got = [a["0020000D"]["Value"][0] for a in r.json()] if r.status_code == 200 else []
                answers.add(len(got))
                want = len(expected) if exact else min(len(expected), int(params.get("limit", len(expected))))
                if len(got) != want or len(set(got)) != len(got) or not set(got) <= expected:
                    mismatches += 1
                if k:
                    times.append(dt)
            per_round.append((statistics.median(times), percentile(times, 95)))
            pooled += times
            print(f"  QIDO {name:12s} {len(got):5d} answers: median {per_round[-1][0] * 1e3:7.2f} ms"
                  f"  p95 {per_round[-1][1] * 1e3:7.2f} ms", flush=True)
        out[name] = {"median_s": spread([x[0] for x in per_round]), "p95_pooled_s": percentile(pooled, 95),
                     "answers": sorted(answers), "rounds": n_rounds, "queries_per_round": n_queries,
                     "mismatches": mismatches,
                     "params": make(random.Random(0))[0] if name != "pid" else {"PatientID": "<random>"}}
    return out


def bench_metadata(sess: requests.Session, root: str, big: list[dict], runs: int) -> dict:
    secs, ok = [], []
    for r in range(runs):
        s = big[r % len(big)]
        dt, resp = timed_get(sess, f"{root}/studies/{s['study_uid']}/series/{s['series_uid']}/metadata", DICOM_JSON)
        got = [item["00080018"]["Value"][0] for item in resp.json()]
        secs.append(dt)
        ok.append(sorted(got) == sorted(s["sops"]))
    print(f"  series metadata (100): median {statistics.median(secs) * 1e3:.1f} ms "
          f"(min {min(secs) * 1e3:.1f}, max {max(secs) * 1e3:.1f}), {len(resp.content)} B", flush=True)
    return {"seconds": spread(secs), "p95_s": percentile(secs, 95), "all_complete": all(ok),
            "instances": PER_STUDY, "bytes": len(resp.content)}


def bench_wado(sess: requests.Session, root: str, big: list[dict], runs: int) -> dict:
    secs, nbytes, ok = [], [], []
    for r in range(runs):
        s = big[r % len(big)]
        dt, resp = timed_get(sess, f"{root}/studies/{s['study_uid']}/series/{s['series_uid']}", MULTIPART_DICOM)
        got = [pydicom.dcmread(io.BytesIO(p), stop_before_pixels=True).SOPInstanceUID for p in split_multipart(resp)]
        secs.append(dt)
        nbytes.append(len(resp.content))
        ok.append(sorted(got) == sorted(s["sops"]))
        print(f"  WADO-RS series run {r + 1}: {dt:6.3f} s  {len(got) / dt:6.1f} inst/s"
              f"  {len(resp.content) / 1e6 / dt:6.1f} MB/s", flush=True)
    return {"seconds": spread(secs), "inst_per_s": spread([PER_STUDY / s for s in secs]),
            "mb_per_s": spread([b / 1e6 / s for b, s in zip(nbytes, secs)]), "bytes": statistics.median(nbytes),
            "all_complete": all(ok), "instances": PER_STUDY}


def first_image_http(url: str, big: list[dict], rounds: int, way: str = "viewer") -> dict:
    """Time to first image over a fresh connection per run. way="viewer": hounsfield's viewer requests
    (values of the first slice); way="dicomweb": any DICOMweb viewer's (frame 1 as octet-stream).
    Timed: the four requests one after the other, each from sent to body received, summed; the client's
    parsing of the answers (Python's json of 1.1 MB of metadata: 20-100 ms here) is not timed, as in the
    harness, and is reported apart (wall_s includes it)."""
    root = f"{url}/dicom-web"
    secs, walls, steps = [], [], []
    for k, s in enumerate([big[-1]] + big * rounds):  # the first run is an untimed warm-up
        with requests.Session() as sess:
            t0, dts = time.perf_counter(), []
            params = {"PatientID": s["patient_id"], "limit": "500", "includefield": "StudyDescription"}
            dt, r = timed_get(sess, f"{root}/studies", DICOM_JSON, params)
            dts.append(dt)
            study = r.json()[0]["0020000D"]["Value"][0]
            dt, r = timed_get(sess, f"{root}/studies/{study}/series", DICOM_JSON,
                              {"includefield": "BodyPartExamined"})
            dts.append(dt)
            series = r.json()[0]["0020000E"]["Value"][0]
            dt, r = timed_get(sess, f"{root}/studies/{study}/series/{series}/metadata", DICOM_JSON)
            dts.append(dt)
            meta = r.json()
            sop = meta[0]["00080018"]["Value"][0]
            if way == "viewer":
                dt, r = timed_get(sess, f"{url}/ui/api/values/{study}/{series}/{sop}")
                assert len(r.content) == 512 * 512 * 2, len(r.content)
            else:
                dt, r = timed_get(sess, f"{root}/studies/{study}/series/{series}/instances/{sop}/frames/1",
                                  MULTIPART_OCTET)
                assert len(split_multipart(r)[0]) == 512 * 512 * 2
            dts.append(dt)
            wall = time.perf_counter() - t0
            assert study == s["study_uid"] and series == s["series_uid"] and len(meta) == PER_STUDY
            if k:
                walls.append(wall)
                secs.append(sum(dts))
                steps.append(dts)
    step_names = ["qido_study", "qido_series", "metadata", "values" if way == "viewer" else "frame"]
    out = {"seconds": spread(secs), "p95_s": percentile(secs, 95), "wall_s": spread(walls),
           "steps_median_s": {n: statistics.median(x[i] for x in steps) for i, n in enumerate(step_names)}}
    print(f"  first image ({way}, http): median {out['seconds']['median'] * 1e3:.1f} ms "
          f"(min {min(secs) * 1e3:.1f}, max {max(secs) * 1e3:.1f}; with client parsing "
          f"{out['wall_s']['median'] * 1e3:.1f}), steps "
          + ", ".join(f"{k} {v * 1e3:.1f}" for k, v in out["steps_median_s"].items()), flush=True)
    return out


OPEN_JS = """async ([pid, study, series]) => {
  const changed = (el, test, opts) => new Promise((resolve) => {
    if (test()) return resolve();
    const mo = new MutationObserver(() => { if (test()) { mo.disconnect(); resolve(); } });
    mo.observe(el, opts);
  });
  const list = document.querySelector('#study-list'), vp = document.querySelector('#viewport');
  const t0 = performance.now();
  document.querySelector('#search-patient').value = pid;
  document.querySelector('#search').requestSubmit();
  const row = () => { const rows = list.querySelectorAll('tr.study');
                      return rows.length === 1 && rows[0].dataset.uid === study ? rows[0] : null; };
  await changed(list, () => row() !== null, {childList: true, subtree: true});
  const t1 = performance.now();
  row().click();
  await changed(vp, () => vp.dataset.state === 'ready' && vp.dataset.series === series && vp.dataset.slice === '0',
                {attributes: true});
  const t2 = performance.now();
  return {search: (t1 - t0) / 1e3, open: (t2 - t1) / 1e3, total: (t2 - t0) / 1e3,
          slice: document.querySelector('#slice').textContent};
}"""


def first_image_browser(url: str, big: list[dict], rounds: int) -> dict:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return {"skipped": "playwright is not installed"}
    if not os.path.exists(CHROMIUM):
        return {"skipped": f"no Chromium at {CHROMIUM}"}
    load, search, open_, total, errors = [], [], [], [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            for k in range(rounds * len(big) + 1):  # the first run is a warm-up
                s = big[k % len(big)]
                ctx = browser.new_context(viewport={"width": 1400, "height": 900})  # empty HTTP cache
                page = ctx.new_page()
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                t0 = time.perf_counter()
                page.goto(f"{url}/ui/")
                page.wait_for_selector("tr.study", timeout=60_000)
                t_list = time.perf_counter() - t0
                page.wait_for_load_state("networkidle")  # presets, peers: the page is at rest
                r = page.evaluate(OPEN_JS, [s["patient_id"], s["study_uid"], s["series_uid"]])
                assert r["slice"] == f"1 / {PER_STUDY}", r
                ctx.close()
                if k:
                    load.append(t_list)
                    search.append(r["search"])
                    open_.append(r["open"])
                    total.append(r["total"])
        finally:
            browser.close()
    out = {"page_load_to_list_s": spread(load), "search_s": spread(search), "open_to_first_image_s": spread(open_),
           "search_to_first_image_s": spread(total), "p95_search_to_first_image_s": percentile(total, 95),
           "page_errors": errors[:5]}
    print(f"  first image (browser): search->image median {out['search_to_first_image_s']['median'] * 1e3:.1f} ms"
          f" (open->image {out['open_to_first_image_s']['median'] * 1e3:.1f}), page load->list "
          f"{out['page_load_to_list_s']['median'] * 1e3:.0f} ms", flush=True)
    return out


def run_own(args: argparse.Namespace, env: dict[str, str]) -> dict:
    data = args.keep or Path(tempfile.mkdtemp(prefix="hf-web-", dir=WEB_WORK)) / "data"
    catalog_file = data.parent / f"{data.name}-catalog.json"
    if catalog_file.exists():
        cat = json.loads(catalog_file.read_text())
        print(f"reusing the index in {data} ({cat['instances']} instances)", flush=True)
    else:
        print(f"filling the index with {args.instances} instances in {data}", flush=True)
        cat = populate(data, args.database_url, args.instances, args.real_series, args.ct)
        catalog_file.write_text(json.dumps(cat))
    out = {"instances": cat["instances"], "studies": len(cat["studies"]), "real_series": len(cat["big"]),
           "seed_s": cat["seed_s"], "store_real_s": cat["store_real_s"]}
    srv = Server(data, database_url=args.database_url, env=env).start()
    try:
        out["settle_s"] = settle(srv.proc.pid)
        root = f"{srv.url}/dicom-web"
        with requests.Session() as sess:
            s = cat["big"][-1]  # untimed warm-up
            timed_get(sess, f"{root}/studies/{s['study_uid']}/series/{s['series_uid']}/metadata", DICOM_JSON)
            out["qido"] = bench_qido(sess, root, cat, args.rounds, args.queries)
            out["metadata"] = bench_metadata(sess, root, cat["big"], args.metadata_runs)
            out["wado"] = bench_wado(sess, root, cat["big"], args.runs)
        out["first_image_http"] = first_image_http(srv.url, cat["big"], args.first_rounds)
        out["first_image_browser"] = first_image_browser(srv.url, cat["big"], args.first_rounds)
    finally:
        srv.stop()
        if args.keep is None:
            shutil.rmtree(data.parent, ignore_errors=True)
    return out


# ---------------------------------------------------------------------------------------------- part 2
def run_shared(args: argparse.Namespace, env: dict[str, str]) -> dict:
    """The shared harness: Orthanc (managed) and a fresh hounsfield (external), the same CT set and requests;
    then time to first image on both, on the same data."""
    from bench_ingest import run_storescu  # the harness's
    from common import stop_all
    from peers import Orthanc

    manifest = json.loads((Path(args.ct) / "manifest.json").read_text())
    work = Path(tempfile.mkdtemp(prefix="hf-shared-", dir=WEB_WORK))
    out: dict = {}
    srv = Server(work / "data", database_url=args.database_url, env=env).start()
    try:
        settle(srv.proc.pid)
        results = Path(os.environ["HBENCH_RESULTS"])
        (results / "web.json").unlink(missing_ok=True)
        cmd = [PY, str(SHARED_BENCH / "bench_web.py"), "--ct", args.ct, "--peers", "orthanc",
               "--runs", str(args.runs), "--queries", str(args.queries), "--rounds", str(args.rounds),
               "--scale", "1", "--external",
               f"name=hounsfield,port={srv.dicom_port},aet={srv.ae_title},http={srv.url}/dicom-web"]
        print("$", " ".join(cmd), flush=True)
        rc = subprocess.call(cmd, cwd=SHARED_BENCH)
        if rc != 0 or not (results / "web.json").exists():
            raise RuntimeError(f"the shared harness failed (exit {rc})")
        shutil.copy(results / "web.json", args.out.with_name(args.out.stem + "-shared.json"))
        out["harness"] = summarise_harness(json.loads((results / "web.json").read_text()))
        studies = requests.get(f"{srv.url}/api/studies", params={"limit": 10000}, timeout=60).json()
        out["harness"]["targets"]["hounsfield"]["stored"] = sum(x["NumberOfStudyRelatedInstances"] for x in studies)

        # time to first image, same data: the hounsfield the harness filled, and an Orthanc filled the same way
        big = [{"patient_id": s["patient_id"], "study_uid": s["study_uid"]} for s in manifest["studies"][:5]]
        for s in big:
            d = Path(args.ct) / next(m["dir"] for m in manifest["studies"] if m["study_uid"] == s["study_uid"])
            s["series_uid"] = pydicom.dcmread(next(d.glob("*.dcm")), stop_before_pixels=True).SeriesInstanceUID
        first: dict = {"hounsfield": {}, "Orthanc": {}}
        first["hounsfield"]["viewer"] = first_image_http(srv.url, big, args.first_rounds, "viewer")
        first["hounsfield"]["dicomweb"] = first_image_http(srv.url, big, args.first_rounds, "dicomweb")
        orthanc = Orthanc(dicomweb=True)
        try:
            orthanc.start()
            for key, path in (("orthanc_version", "/system"), ("dicomweb_plugin_version", "/plugins/dicom-web")):
                try:
                    out[key] = requests.get(orthanc.http + path, timeout=10).json().get("Version")
                except (requests.RequestException, ValueError, AttributeError):
                    out[key] = None
            dt, ok = run_storescu(orthanc, args.ct, manifest["studies"], 1)
            print(f"  Orthanc ingest for first-image: {dt:.1f} s, stored {orthanc.count_stored()}", flush=True)
            first["Orthanc"]["dicomweb"] = first_image_http(orthanc.http, big, args.first_rounds, "dicomweb")
        finally:
            orthanc.stop()
            shutil.rmtree(os.path.join(orthanc.workdir, "storage"), ignore_errors=True)
        out["first_image"] = first
    finally:
        stop_all()
        srv.stop()
        shutil.rmtree(work, ignore_errors=True)
    return out


def summarise_harness(res: dict) -> dict:
    rows = {}
    for t in res["targets"]:
        name = t["target"]["name"]
        rows[name] = {"stored": t.get("stored"), "ingest_s": t.get("ingest_s"),
                      "qido": {k: {"median_s": v["median_s"], "p95_pooled_s": v["p95_pooled_s"],
                                   "answers": v["answers"], "mismatches": v["mismatches"],
                                   "n": v["rounds"] * v["queries_per_round"]} for k, v in t["qido"].items()},
                      "metadata": t["metadata"], "wado": t["wado"],
                      "rendered": {k: {kk: v[kk] for kk in ("median_s", "p95_pooled_s", "check", "rounds",
                                                            "queries_per_round")}
                                   for k, v in t["rendered"].items() if isinstance(v, dict)}}
    return {"instances": res["instances"], "recorded": res.get("recorded"), "targets": rows}


# ---------------------------------------------------------------------------------------------- table
def _ms(sp: dict, p95: float | None = None) -> str:
    text = f"{sp['median'] * 1e3:.1f} ({sp['min'] * 1e3:.1f}–{sp['max'] * 1e3:.1f})"
    return text + (f", p95 {p95 * 1e3:.1f}" if p95 is not None else "")


def _rate(sp: dict) -> str:
    return f"{sp['median']:.0f} ({sp['min']:.0f}–{sp['max']:.0f})"


def table(result: dict) -> str:
    lines = []
    own = result.get("own")
    if own:
        q = own["qido"]
        lines += [f"hounsfield alone, {own['instances']:,} instances indexed ({own['studies']:,} studies; "
                  f"{own['real_series']} real 100-slice 512×512 series stored, the rest seeded in bulk). "
                  "ms: median (min–max) over rounds (QIDO: median of each round's median, p95 pooled) or runs.", "",
                  "| measure | answers | ms median (min–max), p95 | n | target | met |", "|---|---|---|---|---|---|"]
        for name, label in (("pid", "QIDO PatientID"), ("date", "QIDO StudyDate (one year)"),
                            ("mod_limit100", "QIDO ModalitiesInStudy=CT, limit=100"),
                            ("mod_all", "QIDO ModalitiesInStudy=CT, no limit (info)")):
            x = q[name]
            target = "< 30 ms median" if name != "mod_all" else "–"
            met = ("yes" if x["median_s"]["median"] < 0.030 else "**no**") if name != "mod_all" else "–"
            if x["mismatches"]:
                met += f" ({x['mismatches']} wrong answer sets)"
            lines.append(f"| {label} | {'/'.join(map(str, x['answers']))} | {_ms(x['median_s'], x['p95_pooled_s'])} "
                         f"| {x['rounds']}×{x['queries_per_round']} | {target} | {met} |")
        m = own["metadata"]
        lines.append(f"| series /metadata (100 instances) | {m['instances']} | {_ms(m['seconds'], m['p95_s'])} | "
                     f"{m['seconds']['n']} | < 50 ms | {'yes' if m['seconds']['median'] < 0.050 else '**no**'}"
                     f"{'' if m['all_complete'] else ' (incomplete)'} |")
        w = own["wado"]
        lines.append(f"| WADO-RS series (100 × 0.5 MB) | {w['instances']} | {_ms(w['seconds'])} → "
                     f"{_rate(w['mb_per_s'])} MB/s | {w['seconds']['n']} | see side by side | – |")
        f = own["first_image_http"]
        lines.append(f"| first image, viewer's requests (fresh connection) | – | {_ms(f['seconds'], f['p95_s'])} | "
                     f"{f['seconds']['n']} | – | – |")
        b = own.get("first_image_browser", {})
        if "skipped" not in b and b:
            lines.append(f"| first image in the viewer (Chromium): search submitted → first slice drawn | – | "
                         f"{_ms(b['search_to_first_image_s'], b['p95_search_to_first_image_s'])} | "
                         f"{b['search_to_first_image_s']['n']} | – | – |")
            lines.append(f"| … of which: study clicked → first slice drawn | – | {_ms(b['open_to_first_image_s'])} | "
                         f"{b['open_to_first_image_s']['n']} | – | – |")
            lines.append(f"| viewer page load → study list (first search, limit=500) | {min(500, own['studies'])} | "
                         f"{_ms(b['page_load_to_list_s'])} | {b['page_load_to_list_s']['n']} | – | – |")
        lines.append("")
    shared = result.get("shared")
    if shared:
        h = shared["harness"]
        names = list(h["targets"])
        lines += [f"Side by side, same run, {h['instances']:,} CT instances (shared harness `bench_web.py`, both "
                  f"targets sent the same files by storescu, every answer checked; Orthanc "
                  f"{shared.get('orthanc_version', '?')} + DICOMweb plugin {shared.get('dicomweb_plugin_version', '?')}"
                  ", default settings). ms: median (min–max) over rounds or runs, p95 pooled.", "",
                  "| measure | " + " | ".join(names) + " | n | target | met |",
                  "|---|" + "---|" * len(names) + "---|---|---|"]

        def row(label, get, n, target="–", met="–"):
            cells = []
            for nm in names:
                try:
                    cells.append(get(nm, h["targets"][nm]))
                except (KeyError, TypeError):
                    cells.append("–")
            lines.append(f"| {label} | " + " | ".join(cells) + f" | {n} | {target} | {met} |")

        for name, label in (("pid", "QIDO PatientID"), ("date", "QIDO StudyDate (one year)"),
                            ("mod", "QIDO ModalitiesInStudy=CT")):
            x0 = h["targets"][names[0]]["qido"][name]
            row(f"{label}, answers: {'/'.join(map(str, x0['answers']))}; ms",
                lambda nm, t, n=name: _ms(t["qido"][n]["median_s"], t["qido"][n]["p95_pooled_s"]),
                f"{x0['median_s']['n']}×{x0['n'] // x0['median_s']['n']}")
        runs = h["targets"][names[0]]["wado"]["seconds"]["n"]
        hf, orth = h["targets"].get("hounsfield"), h["targets"].get("Orthanc")
        row("series /metadata (100), ms", lambda nm, t: _ms(t["metadata"]["seconds"]), runs, "hounsfield < 50 ms",
            ("yes" if hf["metadata"]["seconds"]["median"] < 0.050 else "**no**") if hf else "–")
        met = "–"
        if hf and orth:
            met = "yes" if hf["wado"]["mb_per_s"]["median"] >= orth["wado"]["mb_per_s"]["median"] else "**no**"
        row("WADO-RS series, MB/s", lambda nm, t: _rate(t["wado"]["mb_per_s"]), runs, "≥ Orthanc", met)
        row("WADO-RS series, ms", lambda nm, t: _ms(t["wado"]["seconds"]), runs)
        row("rendered PNG (window 40/400), ms",
            lambda nm, t: _ms(t["rendered"]["rendered"]["median_s"], t["rendered"]["rendered"]["p95_pooled_s"]),
            f"{h['targets'][names[0]]['rendered']['rendered']['rounds']}×"
            f"{h['targets'][names[0]]['rendered']['rendered']['queries_per_round']}")
        fi = shared.get("first_image", {})
        if fi:
            n = fi.get("hounsfield", {}).get("dicomweb", {}).get("seconds", {}).get("n", "–")
            for way, label in (("dicomweb", "first image, any DICOMweb viewer's way (QIDO study, QIDO series, "
                                            "/metadata, frame 1), fresh connection, ms"),
                               ("viewer", "first image, hounsfield viewer's way (… values of slice 1), ms")):
                row(label, lambda nm, t, w=way: _ms(fi[nm][w]["seconds"], fi[nm][w]["p95_s"]), n)
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--instances", type=int, default=100_000)
    ap.add_argument("--real-series", type=int, default=5, help="real 100-slice CT series stored as files")
    ap.add_argument("--ct", default=CT_DEFAULT, help="the shared CT set (gen_ct.py --studies 20 --per-study 100)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--queries", type=int, default=20)
    ap.add_argument("--runs", type=int, default=5, help="WADO-RS runs (and the harness's /metadata + WADO runs)")
    ap.add_argument("--metadata-runs", type=int, default=20)
    ap.add_argument("--first-rounds", type=int, default=3, help="time to first image: rounds over the real series")
    ap.add_argument("--database-url", default="")
    ap.add_argument("--keep", type=Path, help="data directory to fill (kept; reused if it has a catalog)")
    ap.add_argument("--skip-own", action="store_true", help="no part 1 (N instances, hounsfield alone)")
    ap.add_argument("--skip-shared", action="store_true", help="no part 2 (side by side with Orthanc)")
    ap.add_argument("--out", type=Path, default=RESULTS / "web.json")
    ap.add_argument("--table", action="store_true", help="print the table of --out and exit")
    args = ap.parse_args()
    if args.table:
        print(table(json.loads(args.out.read_text())))
        return
    os.makedirs(WEB_WORK, exist_ok=True)
    env = {"HOUNSFIELD_FSYNC": "false", "HOUNSFIELD_LOG_LEVEL": "WARNING"}
    result: dict = {"workload": "web", "recorded": datetime.datetime.now().isoformat(timespec="seconds"),
                    "machine": machine(), "hounsfield": git_state(), "database": args.database_url or "sqlite",
                    "command": " ".join([Path(PY).name, *sys.argv])}
    if not args.skip_own:
        result["own"] = run_own(args, env)
    if not args.skip_shared:
        result["shared"] = run_shared(args, env)
    result["machine"]["loadavg_end"] = os.getloadavg()
    RESULTS.mkdir(exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}\n")
    print(table(result))


if __name__ == "__main__":
    main()
