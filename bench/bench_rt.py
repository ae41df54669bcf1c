"""RT benchmark: DVHs of every ROI of the dicompyler-core breast set and rasterising them on the dose grid,
hounsfield against dicompyler-core's ``dvhcalc.get_dvh`` on the same files in the same run; and the server's
time to answer a CT slice's overlays.

    python bench/bench_rt.py [--runs N] [--data ../shared/data/rt/dicompyler_breast] [--no-server]

The DVH runs take turns (dicompyler-core, hounsfield centre, hounsfield supersampled, rasterising) so that a
drift of the machine hits every method alike; each figure is the time for all ROIs, files read inside.

Overlays: a ``hounsfield serve`` of this tree on a fresh data directory holds the analytic phantom
(tests/rt_phantom.py: 37 CT slices, RTSTRUCT, RTDOSE, RTPLAN, sent by dcmtk storescu). For every slice, one
client asks what the viewer asks when a slice comes on screen (static/js/rt.js ``loadSlice``): the contours
on the slice, the dose on it as float32 and its colour wash as PNG; the isodose lines (the other dose mode)
are timed apart. The figure per slice is the sum of the sequential requests' times (the viewer sends the
contours and the dose side by side, so it waits less); "first" is the first visit of each slice, "again"
the later visits (files parsed and kept).

Writes bench/results/rt.json and prints a markdown table (median and spread = min…max over the runs), plus
the agreement of each hounsfield method with dicompyler-core (max |difference| over the ROIs, relative to
the reference, of volume, Dmin, Dmean, Dmax, D95 and D2). dicompyler-core is a test-only dependency
(BSD); version 0.5.6 imports pydicom's removed ``read_file``, so it is given ``pydicom.dcmread``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import pydicom
import pydicom.dicomio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from hounsfield.rt import DoseGrid, StructureSet, compute_dvhs, roi_occupancy  # noqa: E402


def timed(fns: dict[str, object], runs: int) -> tuple[dict[str, list[float]], dict[str, object]]:
    """Each of ``fns`` once per run, in turn; their times per run and their last results."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    results: dict[str, object] = {}
    for _ in range(runs):
        for key, fn in fns.items():
            t = time.perf_counter()
            results[key] = fn()  # type: ignore[operator]
            times[key].append(time.perf_counter() - t)
    return times, results


def overlay_bench(runs: int) -> dict[str, object]:
    """Milliseconds per CT slice for the viewer's overlay requests on a real server (see the docstring)."""
    import shutil
    import subprocess
    import tempfile
    import urllib.parse

    import requests

    sys.path.insert(0, str(ROOT / "bench"))
    sys.path.insert(0, str(ROOT / "tests"))
    from rt_phantom import make_phantom
    from serving import Serve

    work = Path(tempfile.mkdtemp(prefix="bench-rt-"))
    try:
        ph = make_phantom(work / "phantom")
        server = Serve(ROOT / "src", work / "server").start()
        try:
            files = [*map(str, ph.ct_paths), str(ph.rtstruct), str(ph.rtdose), str(ph.rtplan)]
            subprocess.run(["/usr/bin/storescu", "-aec", "HOUNSFIELD", "127.0.0.1", str(server.dicom), *files],
                           check=True, capture_output=True)
            sess = requests.Session()
            deadline = time.monotonic() + 120
            while True:  # until the index has the RT set of the CT series (indexed in the background)
                rt = sess.get(f"{server.url}/api/rt/series/{ph.series_uid}", timeout=30)
                if rt.ok and rt.json().get("structure_sets") and rt.json().get("doses"):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the RT set never appeared: {rt.status_code} {rt.text[:200]}")
                time.sleep(0.2)
            images = [ds.SOPInstanceUID for ds in map(pydicom.dcmread, ph.ct_paths)]
            rs = f"{server.url}/api/rt/structure-sets/{ph.structure_set_uid}/contours"
            dose = f"{server.url}/api/rt/doses/{ph.dose_uid}"

            def get(url: str) -> float:
                t = time.perf_counter()
                r = sess.get(url, timeout=30)
                r.raise_for_status()
                return (time.perf_counter() - t) * 1000

            first: list[float] = []
            again: list[float] = []
            iso: list[float] = []
            for run in range(runs):
                for image in images:
                    q = urllib.parse.quote(image)
                    ms = (get(f"{rs}?image={q}") + get(f"{dose}/slice?image={q}&format=f32")
                          + get(f"{dose}/slice?image={q}&format=png"))
                    (first if run == 0 else again).append(ms)
                    iso.append(get(f"{dose}/isodose?image={q}&levels=95,80,50,20"))
        finally:
            server.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def ms(values: list[float]) -> dict[str, float]:
        ordered = sorted(values)
        return {"median_ms": statistics.median(values), "min_ms": ordered[0],
                "p95_ms": ordered[int(0.95 * (len(ordered) - 1))], "max_ms": ordered[-1], "n": len(values)}

    return {"slices": len(images), "runs": runs, "first": ms(first), "again": ms(again or first),
            "isodose": ms(iso)}


def stats(times: list[float]) -> dict[str, float]:
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "runs": len(times)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "rt" / "dicompyler_breast")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "rt.json")
    ap.add_argument("--no-server", action="store_true", help="skip the overlay timing on a real server")
    args = ap.parse_args()
    rs_path, rd_path = args.data / "rtss.dcm", args.data / "rtdose.dcm"

    pydicom.dicomio.read_file = pydicom.dcmread  # type: ignore[attr-defined]
    pydicom.read_file = pydicom.dcmread  # type: ignore[attr-defined]
    from dicompylercore import dvhcalc

    rs0 = StructureSet.read(rs_path)
    numbers = [r.number for r in rs0.rois]

    def dicompyler() -> dict[int, object]:
        return {n: dvhcalc.get_dvh(str(rs_path), str(rd_path), n) for n in numbers}

    def ours(method: str):  # noqa: ANN202 - files read inside, as get_dvh does
        def run() -> list:
            rs, rd = StructureSet.read(rs_path), DoseGrid.read(rd_path)
            return compute_dvhs(rs, rd, method=method, errors=[])
        return run

    def rasterise() -> int:
        rs, rd = StructureSet.read(rs_path), DoseGrid.read(rd_path)
        return sum(int((roi_occupancy(r, rd.grid) > 0).sum()) for r in rs.rois if not r.empty)

    times, results = timed({"ref": dicompyler, "centre": ours("centre"), "super": ours("supersample"),
                            "raster": rasterise}, args.runs)
    t_ref, t_centre, t_super, t_raster = times["ref"], times["centre"], times["super"], times["raster"]
    ref, centre, sup = results["ref"], results["centre"], results["super"]

    def agreement(dvhs: list) -> dict[str, float]:
        worst: dict[str, float] = {}
        for d in dvhs:
            r = ref[d.roi_number]  # type: ignore[index]
            pairs = {"volume": (d.volume_cc, r.volume), "min": (d.min_gy, r.min), "mean": (d.mean_gy, r.mean),
                     "max": (d.max_gy, r.max), "D95": (d.d95, r.D95.value), "D2": (d.d2, r.D2.value)}
            for k, (a, b) in pairs.items():
                rel = abs(a - b) / abs(b) * 100 if b else 0.0
                worst[f"{k}_max_pct"] = max(worst.get(f"{k}_max_pct", 0.0), round(float(rel), 3))
                worst[f"{k}_max_abs"] = max(worst.get(f"{k}_max_abs", 0.0), round(float(abs(a - b)), 4))
        return worst

    def per_roi() -> list[dict[str, object]]:
        """Each ROI's volume, Dmean, D95 and D2 by dicompyler-core and by both hounsfield methods."""
        rows = []
        for c, u in zip(centre, sup):  # type: ignore[call-overload]
            r = ref[c.roi_number]  # type: ignore[index]
            rows.append({"roi": c.roi_name, "dicompyler": [r.volume, r.mean, r.D95.value, r.D2.value],
                         "centre": [c.volume_cc, c.mean_gy, c.d95, c.d2],
                         "supersample": [u.volume_cc, u.mean_gy, u.d95, u.d2]})
        return rows

    result = {
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "data": str(args.data), "rois": len(numbers),
        "dicompyler_core_get_dvh": stats(t_ref),
        "hounsfield_dvh_centre": stats(t_centre), "hounsfield_dvh_supersample": stats(t_super),
        "hounsfield_rasterise_dose_grid": stats(t_raster),
        "speedup_centre": statistics.median(t_ref) / statistics.median(t_centre),
        "speedup_supersample": statistics.median(t_ref) / statistics.median(t_super),
        "agreement_centre": agreement(centre), "agreement_supersample": agreement(sup),  # type: ignore[arg-type]
        "per_roi": per_roi(),
    }
    if not args.no_server:
        result["overlays"] = overlay_bench(args.runs)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"| what ({len(numbers)} ROIs, breast set) | median s | spread s | vs dicompyler-core |")
    print("|---|---|---|---|")
    for key, label in (("dicompyler_core_get_dvh", "dicompyler-core get_dvh"),
                       ("hounsfield_dvh_centre", "hounsfield DVH, centre sampling"),
                       ("hounsfield_dvh_supersample", "hounsfield DVH, supersampled (default)"),
                       ("hounsfield_rasterise_dose_grid", "hounsfield rasterise on the dose grid")):
        s = result[key]
        ratio = statistics.median(t_ref) / s["median_s"]
        print(f"| {label} | {s['median_s']:.3f} | {s['min_s']:.3f}…{s['max_s']:.3f} | {ratio:.1f}× |")
    print("\n| ROI | volume cm³ (dicompyler / centre / supersampled) | Dmean Gy | D95 Gy | D2 Gy |")
    print("|---|---|---|---|---|")
    for row in result["per_roi"]:
        cells = [" / ".join(f"{row[k][i]:.2f}" for k in ("dicompyler", "centre", "supersample")) for i in range(4)]
        print(f"| {row['roi']} | " + " | ".join(cells) + " |")
    print(f"\nagreement, centre: {result['agreement_centre']}")
    print(f"agreement, supersample: {result['agreement_supersample']}")
    if "overlays" in result:
        o = result["overlays"]
        print(f"\n| a CT slice's overlays ({o['slices']} slices x {o['runs']} runs) | median ms | min…p95…max ms |")
        print("|---|---|---|")
        for key, label in (("first", "contours + dose f32 + wash PNG, first visit"),
                           ("again", "contours + dose f32 + wash PNG, again"), ("isodose", "isodose lines")):
            v = o[key]
            print(f"| {label} | {v['median_ms']:.1f} | {v['min_ms']:.1f}…{v['p95_ms']:.1f}…{v['max_ms']:.1f} |")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
