"""``hounsfield rt info`` and ``hounsfield rt dvh``, added to the main Typer app by :func:`register`.

Bad input never shows a traceback: one line naming the file and the cause, exit code 1 (usage errors: 2).
Problems that do not stop the command (an ROI without contours, a reference to an object that was not
given) are ``warning:`` lines on stderr.
"""

from __future__ import annotations

import csv
import json
from contextlib import AbstractContextManager
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import typer
from rich.table import Table
from rich.text import Text

from hounsfield.cli_common import console, err_console, fail, one_line_errors, progress_bar
from hounsfield.errors import HounsfieldError
from hounsfield.imaging.io import one_line
from hounsfield.rt.common import read_rt, text
from hounsfield.rt.dose import DoseGrid
from hounsfield.rt.dvh import DVH, compute_dvh, stored_dvhs, structure_set_spacing
from hounsfield.rt.links import resolve
from hounsfield.rt.plan import PlanSummary, summarize_plan
from hounsfield.rt.structure import StructureSet

rt_app = typer.Typer(help="Radiotherapy objects: structure sets, dose grids, plans and DVHs.",
                     no_args_is_help=True, add_completion=False)


class Method(str, Enum):
    supersample = "supersample"
    centre = "centre"


def register(app: typer.Typer) -> None:
    """Add the ``rt`` command group (``rt info``, ``rt dvh``) to ``app``."""
    app.add_typer(rt_app, name="rt")


def _one_line_errors(name: str = "") -> AbstractContextManager[None]:
    return one_line_errors(lambda exc: f"{name + ': ' if name else ''}{type(exc).__name__}: {one_line(exc)}")


def _warn(message: str) -> None:
    err_console.print(f"[yellow]warning:[/yellow] {message}", highlight=False)


def _fmt(value: float | None, digits: int = 2) -> str:
    return "—" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def _swatch(color: tuple[int, int, int] | None) -> Text:
    if color is None:
        return Text("—")
    r, g, b = color
    return Text("  ", style=f"on rgb({r},{g},{b})") + Text(f" {r},{g},{b}")


@rt_app.command("info")
def info(files: Annotated[list[Path], typer.Argument(help="RT objects and their images (files or folders).")]) -> None:
    """Show the ROIs of structure sets, the summary of plans, dose grids, and how the objects link."""
    images = 0
    for path in files:
        if path.is_dir():
            continue
        with _one_line_errors(str(path)):
            ds = read_rt(path, pixels=False)
            modality = text(ds, "Modality")
            if modality == "RTSTRUCT":
                _show_structure_set(StructureSet.from_dataset(ds))
            elif modality == "RTPLAN":
                _show_plan(summarize_plan(ds))
            elif modality == "RTDOSE":
                _show_dose(DoseGrid.read(path))
            elif "PixelData" in ds or "Rows" in ds:
                images += 1
            else:
                fail(f"{path}: not an RT object or image (Modality {modality or 'absent'})")
    with _one_line_errors():
        rtset = resolve(files)
    if images or any(p.is_dir() for p in files):
        for s in rtset.series.values():
            console.print(f"[bold]{len(s.paths)} {s.modality or 'image'} image(s)[/bold] of series {s.series_uid}")
    if rtset.links:
        table = Table(title="Links", title_justify="left")
        for col in ("object", "references", "UID", "found"):
            table.add_column(col)
        for link in rtset.links:
            table.add_row(Path(link.source).name, link.kind, link.uid or "—",
                          Text(Path(link.target).name, style="green") if link.target else Text("missing", style="red"))
        console.print(table)
    for problem in rtset.problems:
        _warn(problem)


def _show_structure_set(rs: StructureSet) -> None:
    table = Table(title=f"{rs.name}: RT Structure Set '{rs.label}', {len(rs.rois)} ROIs, "
                        f"Frame of Reference {rs.frame_of_reference_uid or '—'}", title_justify="left")
    for col, just in (("#", "right"), ("name", "left"), ("type", "left"), ("colour", "left"),
                      ("contours", "right"), ("planes", "right"), ("z range (mm)", "right")):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    for roi in rs.rois:
        kinds = roi.geometric_types()
        closed = kinds.get("CLOSED_PLANAR", 0)
        other = ", ".join(f"{n} {k}" for k, n in kinds.items() if k != "CLOSED_PLANAR")
        planes = roi.plane_positions()
        table.add_row(str(roi.number), roi.name, roi.interpreted_type or "—", _swatch(roi.color),
                      f"{closed}" + (f" + {other}" if other else ""), str(planes.size),
                      f"{planes.min():.1f} … {planes.max():.1f}" if planes.size else "—")
    console.print(table)
    for issue in rs.issues:
        _warn(issue)


def _show_plan(plan: PlanSummary) -> None:
    table = Table(title=f"{plan.name}: RT Plan '{plan.label}'", title_justify="left", show_header=False)
    table.add_column("field")
    table.add_column("value")
    rx = plan.prescription_gy
    for key, value in (("name", plan.plan_name), ("intent", plan.intent), ("geometry", plan.geometry),
                       ("prescription", f"{rx:g} Gy" if rx is not None else "—"),
                       ("fractions", str(plan.fractions) if plan.fractions is not None else "—"),
                       ("structure set", ", ".join(plan.structure_set_uids) or "—"),
                       ("total meterset", _fmt(plan.total_meterset, 1))):
        table.add_row(key, value or "—")
    console.print(table)
    if plan.beams:
        beams = Table(title="Beams", title_justify="left")
        for col in ("#", "name", "type", "radiation", "energy", "gantry", "collimator", "couch", "meterset",
                    "control points"):
            beams.add_column(col, justify="left" if col in ("name", "type", "radiation") else "right")
        for b in plan.beams:
            beams.add_row(str(b.number), b.name or "—", b.beam_type or "—", b.radiation_type or "—",
                          _fmt(b.nominal_energy, 1), _fmt(b.gantry_angle, 1), _fmt(b.collimator_angle, 1),
                          _fmt(b.couch_angle, 1), f"{_fmt(b.meterset, 1)} {b.meterset_unit}".strip(),
                          str(b.control_points))
        console.print(beams)
    for issue in plan.issues:
        _warn(issue)


def _show_dose(dose: DoseGrid) -> None:
    g = dose.grid
    table = Table(title=f"{dose.name}: RT Dose", title_justify="left", show_header=False)
    table.add_column("field")
    table.add_column("value")
    stored = stored_dvhs(dose.dataset)
    for key, value in (("grid", f"{g.shape[2]} x {g.shape[1]} x {g.shape[0]} (columns x rows x frames)"),
                       ("spacing", f"{g.pixel_spacing[1]:g} x {g.pixel_spacing[0]:g} x {abs(g.slice_step):g} mm"),
                       ("origin", ", ".join(f"{v:.2f}" for v in g.origin) + " mm"),
                       ("frame offsets", f"{dose.offset_form}" + ("" if g.uniform else ", uneven")),
                       ("units / type / summation", f"{dose.units or '—'} / {dose.dose_type or '—'} / "
                                                    f"{dose.summation_type or '—'}"),
                       ("scaling", f"{dose.scaling:g}"), ("maximum", f"{dose.max:.3f} {dose.units.lower() or ''}"),
                       ("plan", ", ".join(dose.referenced_plan_uids) or "—"),
                       ("stored DVHs", str(len(stored)))):
        table.add_row(key, value)
    console.print(table)
    for issue in dose.issues:
        _warn(issue)


@rt_app.command("dvh")
def dvh(rtstruct: Annotated[Path, typer.Option("--rtstruct", help="RT Structure Set file.")],
        rtdose: Annotated[Path, typer.Option("--rtdose", help="RT Dose file.")],
        roi: Annotated[Optional[list[str]], typer.Option("--roi", help="ROI name or number (repeat; default all).")] = None,
        out: Annotated[Optional[Path], typer.Option("--out", help="Write the DVHs: .csv, .json or .png.")] = None,
        method: Annotated[Method, typer.Option("--method", help="supersample (default) or centre "
                                                                "(voxel centres, as dicompyler-core).")] = Method.supersample,
        supersample: Annotated[Optional[int], typer.Option("--supersample", min=1, max=16,
                                                           help="Samples per dose voxel side (default: ≤ 0.5 mm).")] = None,
        bin_width: Annotated[float, typer.Option("--bin-width", min=0.0001, help="Gy between curve points in the output.")] = 0.01,
        ) -> None:
    """Compute the DVHs of the ROIs and show their statistics (and any DVH stored in the RT Dose beside)."""
    if out is not None and out.suffix.lower() not in (".csv", ".json", ".png"):
        raise typer.BadParameter(f"{out}: the output must end in .csv, .json or .png", param_hint="--out")
    with _one_line_errors(str(rtstruct)):
        rs = StructureSet.read(rtstruct)
    with _one_line_errors(str(rtdose)):
        dose = DoseGrid.read(rtdose)
    with _one_line_errors(str(rtstruct)):
        chosen = [rs.roi(k) for k in roi] if roi else [r for r in rs.rois]
    for issue in dose.issues:
        _warn(issue)
    spacing = structure_set_spacing(rs, dose)
    results: list[DVH] = []
    errors: list[str] = []
    with progress_bar() as progress:
        task = progress.add_task("DVH", total=len(chosen))
        for r in chosen:
            progress.update(task, description=f"DVH {r.name}")
            if r.empty and not roi:
                errors.append(f"{rs.name}: {r.label} has no closed contours; no DVH")
            else:
                try:
                    results.append(compute_dvh(r, dose, method=method.value, supersample=supersample,
                                               thickness=spacing))
                except HounsfieldError as exc:
                    errors.append(str(exc))
            progress.advance(task)
    for message in errors:
        _warn(message)
    if not results:
        fail(errors[0] if errors else f"{rtstruct}: no ROI to compute")
    stored = {n: s for n, s in stored_dvhs(dose.dataset).items() if n in {d.roi_number for d in results}}
    _show_dvhs(results, stored, dose, rs)
    if out is not None:
        with _one_line_errors(str(out)):
            _write(out, results, stored, bin_width)
        console.print(f"wrote {out}")


def _show_dvhs(results: list[DVH], stored: dict[int, DVH], dose: DoseGrid, rs: StructureSet) -> None:
    unit = "Gy" if dose.units in ("GY", "") else dose.units.lower()
    table = Table(title=f"DVHs: {Path(rs.name).name} on {Path(dose.name).name} ({results[0].source})",
                  title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("ROI")
    for col in ("volume cm³", f"min {unit}", f"mean {unit}", f"max {unit}", "D98", "D95", "D50", "D2"):
        table.add_column(col, justify="right")
    for d in results:
        table.add_row(str(d.roi_number), d.roi_name, _fmt(d.volume_cc, 3), _fmt(d.min_gy), _fmt(d.mean_gy),
                      _fmt(d.max_gy), _fmt(d.d98), _fmt(d.d95), _fmt(d.d50), _fmt(d.d2))
        s = stored.get(d.roi_number)
        if s is not None:
            table.add_row("", Text("  stored in RT Dose", style="dim"), _fmt(s.volume_cc, 3), _fmt(s.min_gy),
                          _fmt(s.mean_gy), _fmt(s.max_gy), _fmt(s.d98), _fmt(s.d95), _fmt(s.d50), _fmt(s.d2),
                          style="dim")
    console.print(table)
    for d in results:
        for note in d.notes:
            _warn(f"{rs.name}: {note}")


def _write(out: Path, results: list[DVH], stored: dict[int, DVH], bin_width: float) -> None:
    suffix = out.suffix.lower()
    if suffix == ".json":
        out.write_text(json.dumps({"rois": [d.summary(bin_width) for d in results]}))
    elif suffix == ".csv":
        with out.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["roi_number", "roi_name", "dose_gy", "volume_cc", "volume_pct"])
            for d in results:
                dose, pct = d.curve(bin_width)
                _, cc = d.curve(bin_width, relative=False)
                for x, v, p in zip(dose, cc, pct):
                    w.writerow([d.roi_number, d.roi_name, f"{x:.6g}", f"{v:.6g}", f"{p:.6g}"])
    else:
        from hounsfield.rt.plot import plot_dvhs

        plot_dvhs(results, out, stored=stored, bin_width=bin_width)


def main() -> None:
    """Run the ``rt`` commands stand-alone (``python -m hounsfield.rt.cli``)."""
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True)
    register(app)
    app(prog_name="hounsfield")


if __name__ == "__main__":
    main()
