"""RT benchmark: DVHs of every ROI of the dicompyler-core breast set and rasterising them on the dose grid,
hounsfield against dicompyler-core's ``dvhcalc.get_dvh`` on the same files in the same run.

    python bench/bench_rt.py [--runs N] [--data ../shared/data/rt/dicompyler_breast]

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


def timed(fn, runs: int) -> tuple[list[float], object]:  # noqa: ANN001
    times, result = [], None
    for _ in range(runs):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return times, result


def stats(times: list[float]) -> dict[str, float]:
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "runs": len(times)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "rt" / "dicompyler_breast")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "rt.json")
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

    t_ref, ref = timed(dicompyler, args.runs)
    t_centre, centre = timed(ours("centre"), args.runs)
    t_super, sup = timed(ours("supersample"), args.runs)
    t_raster, _ = timed(rasterise, args.runs)

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

    result = {
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "data": str(args.data), "rois": len(numbers),
        "dicompyler_core_get_dvh": stats(t_ref),
        "hounsfield_dvh_centre": stats(t_centre), "hounsfield_dvh_supersample": stats(t_super),
        "hounsfield_rasterise_dose_grid": stats(t_raster),
        "speedup_centre": statistics.median(t_ref) / statistics.median(t_centre),
        "speedup_supersample": statistics.median(t_ref) / statistics.median(t_super),
        "agreement_centre": agreement(centre), "agreement_supersample": agreement(sup),  # type: ignore[arg-type]
    }
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
    print(f"\nagreement, centre: {result['agreement_centre']}")
    print(f"agreement, supersample: {result['agreement_supersample']}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
