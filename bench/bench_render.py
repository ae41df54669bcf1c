"""Benchmark (not a test): hounsfield vs plain pydicom + NumPy on one CT slice and a 100-slice series.

Measures, in the same run and on the same files, (a) one 512x512 CT slice to a windowed PNG and (b) a
series to a float32 HU volume sorted along the slice normal. Each is run ``--rounds`` x ``--n`` times
(+1 warm-up per round); reported: median of the round medians and min-max over rounds. Outputs are
checked against the plain implementation.

    python3 /work/shared/bench/gen_ct.py --studies 1 --per-study 100   # -> /tmp/hbench/ct/study00
    python3 bench/bench_render.py [--series /tmp/hbench/ct/study00] [--rounds 3] [--n 50] [--n-volume 10]
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
from hounsfield_bench_adapter import load_volume, render_png
from PIL import Image

WORK = Path(os.environ.get("HBENCH_WORK", "/tmp/hbench"))


def plain_hu(ds: pydicom.Dataset) -> np.ndarray:
    return ds.pixel_array.astype(np.float32) * np.float32(ds.get("RescaleSlope", 1)) + np.float32(
        ds.get("RescaleIntercept", 0))


def plain_render_png(path: str, center: float, width: float) -> bytes:
    """dcmread -> pixel_array -> HU -> linear window (PS3.3 C.11.2.1.2.1) -> uint8 -> Pillow PNG."""
    y = (plain_hu(pydicom.dcmread(path)) - np.float32(center - 0.5)) / np.float32(width - 1) + np.float32(0.5)
    u8 = (np.clip(y, 0, 1) * np.float32(255) + np.float32(0.5)).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(u8).save(buf, format="PNG")
    return buf.getvalue()


def plain_load_volume(paths: list[str]) -> np.ndarray:
    """dcmread every file, sort by Image Position projected on the normal, stack HU."""
    slices = [pydicom.dcmread(p) for p in paths]
    iop = np.array(slices[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    slices.sort(key=lambda ds: float(np.dot(normal, np.array(ds.ImagePositionPatient, dtype=float))))
    return np.stack([plain_hu(ds) for ds in slices])


def timed(fn: Callable[[], object], rounds: int, n: int) -> tuple[list[float], object]:
    """Median seconds of each round of n calls (after one warm-up call), and the last result."""
    medians, out = [], None
    for _ in range(rounds):
        out = fn()
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t0)
        medians.append(statistics.median(times))
    return medians, out


def report(label: str, medians: list[float]) -> float:
    med = statistics.median(medians)
    print(f"{label:38s} median {med * 1e3:8.2f} ms  (rounds {min(medians) * 1e3:.2f}-{max(medians) * 1e3:.2f} ms)")
    return med


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--series", type=Path, default=WORK / "ct" / "study00")
    parser.add_argument("--window", default="40,400")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--n-volume", type=int, default=10)
    args = parser.parse_args()
    center, width = (float(x) for x in args.window.split(","))
    paths = sorted(str(p) for p in args.series.glob("*.dcm"))
    if not paths:
        raise SystemExit(f"no .dcm files in {args.series}; run gen_ct.py first (see this file's docstring)")
    slice_path = paths[len(paths) // 2]
    print(f"slice {slice_path}, series of {len(paths)} files, window {center:g}/{width:g}")

    plain_med = report("slice -> PNG: pydicom + NumPy + Pillow",
                       timed(lambda: plain_render_png(slice_path, center, width), args.rounds, args.n)[0])
    medians, png = timed(lambda: render_png(slice_path, center, width), args.rounds, args.n)
    ours_med = report("slice -> PNG: hounsfield", medians)
    ref = np.asarray(Image.open(io.BytesIO(plain_render_png(slice_path, center, width))), dtype=int)
    diff = np.abs(np.asarray(Image.open(io.BytesIO(png)), dtype=int) - ref).max()
    print(f"  speed-up {plain_med / ours_med:.1f}x, max |difference| to the plain PNG: {diff} grey levels")

    plain_med = report("series -> HU volume: pydicom loop",
                       timed(lambda: plain_load_volume(paths), args.rounds, args.n_volume)[0])
    medians, vol = timed(lambda: load_volume(paths), args.rounds, args.n_volume)
    ours_med = report("series -> HU volume: hounsfield", medians)
    same = np.array_equal(vol, plain_load_volume(paths))
    print(f"  speed-up {plain_med / ours_med:.1f}x, volume {vol.shape} {vol.dtype} equal to the plain one: {same}")


if __name__ == "__main__":
    main()
