"""What one ``hounsfield serve`` costs to start and stop: the wall clock until HTTP and DICOM answer, and the CPU
of the whole process tree (main, DICOM processes, indexer, fork server) from start to a clean stop. The test
suite starts ~100 servers, a site restarts after every upgrade.

    python bench/bench_start.py [--runs 5] [--before SRC_DIR] [--out bench/results/start.json]

``--before``: another source tree (e.g. ``git archive <commit> src | tar -x -C /tmp/before``, then
``/tmp/before/src``) measured in the same run, alternately with this one.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

from serving import Serve, spread

HERE = Path(__file__).resolve().parent


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def one_start(src: Path) -> tuple[float, float]:
    """(seconds until HTTP and DICOM answer, CPU seconds of the process tree until it has stopped)."""
    with tempfile.TemporaryDirectory(prefix="bench-start-") as work:
        server = Serve(src, Path(work))
        cpu, t0 = children_cpu(), time.perf_counter()
        server.start()
        ready = time.perf_counter() - t0
        server.stop()
        return ready, children_cpu() - cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--before", type=Path, help="a second source tree, measured alternately in the same run")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "start.json")
    args = ap.parse_args()
    trees = {"this tree": HERE.parent / "src", **({"before": args.before} if args.before else {})}
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in trees}
    for _ in range(args.runs):
        for name, src in trees.items():
            samples[name].append(one_start(src))
    result = {name: {"ready_s": spread([r for r, _ in s]), "cpu_s": spread([c for _, c in s])}
              for name, s in samples.items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print("| tree | ready, s: median (min–max) | CPU of the tree, s: median (min–max) |\n|---|---|---|")
    for name, r in result.items():
        w, c = r["ready_s"], r["cpu_s"]
        print(f"| {name} | {w['median']:.2f} ({w['min']:.2f}–{w['max']:.2f}) | "
              f"{c['median']:.2f} ({c['min']:.2f}–{c['max']:.2f}) |")


if __name__ == "__main__":
    main()
