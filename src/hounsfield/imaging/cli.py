"""Command line: ``show``, ``render``, ``dump`` and ``export``, added to the main Typer app by :func:`register`.

Every file is opened by the one reading path (:func:`hounsfield.imaging.io.read_dataset`) and every problem with
one is reported as ``error: <file>: <one of imaging.io.MESSAGES>`` with exit code 1, never a traceback; what
codecs print on the process's own stdout/stderr while decoding is swallowed. Options that conflict, or that
the command would ignore, are usage errors: one line, exit code 2.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated, NoReturn, TypeVar

import numpy as np
import typer
from PIL import Image
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from hounsfield.cli_common import one_line_errors
from hounsfield.errors import HounsfieldError
from hounsfield.imaging.display import choose_voi
from hounsfield.imaging.dump import dump_rows
from hounsfield.imaging.export import (NPZ_KEYS, companion_path, describe, export_nifti, export_npz, export_png,
                                       write_sidecar)
from hounsfield.imaging.io import FileProblem, number_of_frames, one_line, read_dataset, truncation
from hounsfield.imaging.lut import Window, apply_window
from hounsfield.imaging.presets import PRESETS, data_window, preset_window
from hounsfield.imaging.render import encode, format_for, render_image, render_instance
from hounsfield.imaging.series import Volume, dicom_files, load_series
from hounsfield.rt.cli import Method
from hounsfield.rt.dose import DoseGrid
from hounsfield.rt.grid import CTSeries, series_from_headers
from hounsfield.rt.grid import load_series as rt_load_series
from hounsfield.rt.overlay import DEFAULT_ISODOSE, IsodoseLevel, Overlay, parse_isodose
from hounsfield.rt.structure import StructureSet
from hounsfield.rt.volumes import NPZ_KEYS as RT_NPZ_KEYS
from hounsfield.rt.volumes import describe as describe_rt
from hounsfield.rt.volumes import dose_volume, label_map, volume_arrays

_err = Console(stderr=True, highlight=False, soft_wrap=True)  # one line per error
T = TypeVar("T")
NON_INTERACTIVE_BACKENDS = frozenset({"agg", "cairo", "pdf", "pgf", "ps", "svg", "template"})


class ExportFormat(str, Enum):
    nifti = "nifti"
    npz = "npz"
    png = "png"


def _usage(message: str) -> NoReturn:
    """A usage error: one line, exit code 2 (Click's convention)."""
    _err.print(f"error: {message}", markup=False)
    raise typer.Exit(2)


def _fail(message: str) -> NoReturn:
    _err.print(f"error: {message}", markup=False)
    raise typer.Exit(1)


def _check_preset(value: str | None) -> str | None:
    if value is not None:
        try:
            preset_window(value)
        except ValueError as exc:
            _usage(f"--preset: {exc}")
    return value


def _check_window(value: tuple[float, float] | None) -> tuple[float, float] | None:
    if value is not None and not value[1] >= 1:
        _usage(f"--window: width must be at least 1, not {value[1]:g}")
    return value


PresetOption = Annotated[str | None, typer.Option(
    "--preset", help=f"Named window: {', '.join(PRESETS)}.", callback=_check_preset)]
WindowOption = Annotated[tuple[float, float] | None, typer.Option(
    "--window", help="Window center and width (PS3.3 C.11.2.1.2.1 linear).", callback=_check_window)]


def _one_window(preset: str | None, window: tuple[float, float] | None) -> None:
    if preset is not None and window is not None:
        _usage(f"--preset {preset} and --window {window[0]:g} {window[1]:g} both choose the window: give one")


def _one_line_errors(source: object) -> AbstractContextManager[None]:
    """Any failure as ``error: <file>: <cause>`` and exit code 1 (``cli_common.one_line_errors``)."""
    return one_line_errors(lambda exc: str(FileProblem("unexpected", str(source),
                                                       cause=f"{type(exc).__name__}: {one_line(exc)}")), _fail)


@contextmanager
def _native_output_silenced() -> Iterator[None]:
    """Send what native code (codecs: OpenJPEG, GDCM…) writes straight to file descriptors 1 and 2 to
    /dev/null while it runs: a corrupt codestream must give our one line, not a codec's message as well."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):
            pass
    try:
        saved = [os.dup(1), os.dup(2)]
    except OSError:  # no such descriptors: nothing to protect
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        yield
    finally:
        _flush_c_stdio()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)


def _flush_c_stdio() -> None:
    try:
        import ctypes

        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError):
        pass


def _quietly(call: Callable[..., T], *args: object, **kwargs: object) -> T:
    with _native_output_silenced():
        return call(*args, **kwargs)


def _output_format(out: Path) -> str:
    """The format ``--out``'s extension names; any other extension is a usage error."""
    try:
        return format_for(out.name)
    except ValueError as exc:
        _usage(f"--out {out}: {exc}")


def _check_writable(path: Path) -> None:
    """Fail before any work when ``path``'s folder does not exist (or is not a folder)."""
    parent = path.parent
    if not parent.is_dir():
        cause = f"no such directory {parent}" if not parent.exists() else f"{parent} is not a directory"
        _fail(str(FileProblem("cannot-write", str(path), cause=cause)))


def _write(path: Path, data: bytes) -> None:
    try:
        path.write_bytes(data)
    except OSError as exc:
        raise FileProblem("cannot-write", str(path), cause=exc.strerror or one_line(exc)) from None


def _make_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _fail(str(FileProblem("cannot-write", str(path), cause=exc.strerror or one_line(exc))))


def _display_problem() -> str | None:
    """Why no window can be opened here, or ``None`` when one can."""
    if sys.platform not in ("darwin", "win32") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return "there is no display (neither DISPLAY nor WAYLAND_DISPLAY is set)"
    import matplotlib

    backend = str(matplotlib.get_backend())
    if backend.lower() in NON_INTERACTIVE_BACKENDS:
        return f"there is no display (matplotlib's {backend} backend cannot open a window)"
    return None


def _note_skipped(skipped: list[FileProblem]) -> None:
    """One line per object left out of a series folder; files that are not DICOM as one summary line."""
    not_dicom = [p for p in skipped if p.kind == "not-dicom"]
    for problem in skipped:
        if problem.kind != "not-dicom":
            _err.print(f"skipped {problem}", markup=False)
    if not_dicom:
        _err.print(f"skipped {len(not_dicom)} file(s) that are not DICOM (e.g. {not_dicom[0].name})", markup=False)


RTStructOption = Annotated[Path | None, typer.Option(
    "--rtstruct", help="RT Structure Set on the same Frame of Reference: its ROIs (show: contours; export: a label "
                       "map).")]
RTDoseOption = Annotated[Path | None, typer.Option(
    "--rtdose", help="RT Dose on the same Frame of Reference (show: isodose lines or a colour-wash; export: the dose "
                     "on the CT grid).")]


def _overlay_options(rtdose: Path | None, rtplan: Path | None, isodose: str | None,
                     colourwash: bool) -> tuple[IsodoseLevel, ...]:
    """The isodose levels asked for; dose options without ``--rtdose``, or both dose displays, are usage errors."""
    for flag, given in (("--rtplan", rtplan is not None), ("--isodose", isodose is not None),
                        ("--colourwash", colourwash)):
        if given and rtdose is None:
            _usage(f"{flag} draws the dose: give --rtdose")
    if isodose is not None and colourwash:
        _usage("--isodose and --colourwash both choose how the dose is drawn: give one")
    try:
        return parse_isodose(isodose) if isodose is not None else ()
    except ValueError as exc:
        _usage(f"--isodose: {exc}")


def show(
    source: Annotated[Path, typer.Argument(help="A DICOM file, or a directory holding one series.")],
    preset: PresetOption = None,
    window: WindowOption = None,
    frame: Annotated[int, typer.Option("--frame", "--slice",
                                       help="Frame (or slice, for a directory) to show, from 0.")] = 0,
    out: Annotated[Path | None, typer.Option(
        "--out", help="Write the image here instead of opening a window: .png, .jpg/.jpeg or .tif/.tiff.")] = None,
    annotate: Annotated[bool, typer.Option("--annotate", help="Corner texts and a scale bar (a file only).")] = False,
    overlays: Annotated[bool, typer.Option("--overlays", help="Burn in overlay planes (60xx; a file only).")] = False,
    rtstruct: RTStructOption = None,
    rtdose: RTDoseOption = None,
    rtplan: Annotated[Path | None, typer.Option(
        "--rtplan", help="RT Plan whose prescription is 100 % (default: the plan the dose references, when it is "
                         "in the series folder; else the dose maximum).")] = None,
    isodose: Annotated[str | None, typer.Option(
        "--isodose", help=f"Isodose lines: % of the prescription and/or Gy, e.g. 95,50 or 40Gy,20Gy "
                          f"(default {DEFAULT_ISODOSE}).")] = None,
    colourwash: Annotated[bool, typer.Option("--colourwash", "--colorwash",
                                             help="The dose as a colour-wash with a scale in Gy.")] = False,
) -> None:
    """Display an image (or browse a series/multi-frame), or write it at native size with --out; with --rtstruct
    and --rtdose, the contours and the dose drawn on it in place, and a legend beside it."""
    _one_window(preset, window)
    levels = _overlay_options(rtdose, rtplan, isodose, colourwash)
    is_series = source.is_dir()
    for flag, given in (("--annotate", annotate), ("--overlays", overlays)):
        if given and is_series:
            _usage(f"{flag} works on one file, not on a series folder ({source})")
    fmt = _output_format(out) if out is not None else None
    if out is not None:
        _check_writable(out)
    else:
        problem = _display_problem()
        if problem:
            _fail(f"cannot show {source}: {problem}; write the image to a file with --out FILE.png")
    with _one_line_errors(source):
        rt = None
        if rtstruct is not None or rtdose is not None:
            rt = Overlay.read(rtstruct=rtstruct, rtdose=rtdose, rtplan=rtplan, related=[source] if is_series else [],
                              levels=levels, colourwash=colourwash)
        if is_series:
            _show_series(source, frame, window, preset, out, fmt, rt)
            return
        ds = read_dataset(source)
        frames = number_of_frames(ds)
        if not 0 <= frame < frames:
            raise FileProblem("frame-range", str(source), frame=frame, frames=frames)
        if rt is not None and frames > 1:
            _fail(f"{source}: {frames} frames; the RT overlays are drawn on single-frame slices (give the series "
                  "folder)")
        decorate = _decorator(rt, series_from_headers([ds]), lambda k: str(source)) if rt is not None else None

        def image(k: int) -> Image.Image:
            picture = _quietly(render_image, ds, frame=k, window=window, preset=preset, annotate=annotate,
                               overlays=overlays)
            return decorate(0, picture) if decorate is not None else picture

        if out is not None:
            _write(out, encode(image(frame), fmt or "png"))
            return
        from hounsfield.imaging.viewer import browse

        browse(lambda k: np.asarray(image(k)), frames, title=str(source), start=frame)


def _notes(notes: list[str]) -> None:
    for text in notes:
        _err.print(f"note: {text}", markup=False)


def _decorator(rt: Overlay, series: CTSeries,
               where: Callable[[int], str]) -> Callable[[int, Image.Image], Image.Image]:
    """Slice ``k``'s image with the RT overlays drawn on it (:meth:`Overlay.draw`), its notes printed; the
    overlay's own notes once it is known to fit ``series``."""
    rt.check(series)
    _notes(rt.notes)

    def decorate(k: int, image: Image.Image) -> Image.Image:
        drawn, notes = rt.draw(image, series.grid.slice_grid(k), where(k))
        _notes(notes)
        return drawn

    return decorate


def _show_series(folder: Path, index: int, window: tuple[float, float] | None, preset: str | None,
                 out: Path | None, fmt: str | None, rt: Overlay | None = None) -> None:
    skipped: list[FileProblem] = []
    volume = _quietly(load_series, [folder], skipped=skipped)
    _note_skipped(skipped)
    voi = _series_window(volume, window, preset)
    if not 0 <= index < len(volume.paths):
        raise HounsfieldError(f"{folder}: slice {index} out of range (the series has {len(volume.paths)} slices)")
    decorate = _decorator(rt, _rt_series(volume), lambda k: f"slice {k} of {folder}") if rt is not None else None

    def slice_image(k: int) -> Image.Image:
        image = Image.fromarray(np.floor(apply_window(volume.values[k], voi) * 255 + 0.5).astype(np.uint8))
        return decorate(k, image) if decorate is not None else image

    if out is not None:
        _write(out, encode(slice_image(index), fmt or "png"))
        return
    from hounsfield.imaging.viewer import browse

    browse(lambda k: np.asarray(slice_image(k)), len(volume.paths), title=str(folder), start=index)


def _rt_series(volume: Volume) -> CTSeries:
    """The RT library's view of the slices of ``volume`` (their headers and grid), in the same order."""
    series = rt_load_series(list(volume.paths))
    if series.paths != volume.paths:
        raise HounsfieldError(f"{volume.paths[0]}: the slices sort differently for the RT objects")
    return series


def _series_window(volume: Volume, window: tuple[float, float] | None, preset: str | None) -> Window:
    """The window for a series: the argument, the preset, the first slice's window, else from the data."""
    header = read_dataset(volume.paths[0], pixels=False)
    voi = choose_voi(header, 0, volume.values, window=window, preset=preset)
    return voi.window if voi.window is not None else data_window(volume.values)


def render(
    inputs: Annotated[list[Path], typer.Argument(help="DICOM files and/or directories (searched recursively).")],
    out_dir: Annotated[Path, typer.Option("--out-dir", help="Directory for the PNG files.")],
    preset: PresetOption = None,
    window: WindowOption = None,
) -> None:
    """Convert many DICOM files to PNG; files in the folders that are not DICOM are skipped with a note, bad
    DICOM files are listed at the end (exit 1 if any)."""
    _one_window(preset, window)
    with _one_line_errors(" ".join(map(str, inputs))):
        skipped: list[FileProblem] = []
        files = dicom_files(inputs, skipped)
        _note_skipped(skipped)
        if not files:
            _fail(f"{' '.join(map(str, inputs))}: no DICOM files")
        _make_dir(out_dir)
        failures: list[str] = []
        used: set[str] = set()
        with Progress(console=_err, transient=True, disable=not _err.is_terminal) as progress:
            task = progress.add_task("rendering", total=len(files))
            for file in files:
                name = _unique_name(Path(file).name, used)
                try:
                    _write(out_dir / name, _quietly(render_instance, file, window=window, preset=preset))
                except HounsfieldError as exc:
                    failures.append(str(exc))
                except Exception as exc:  # noqa: BLE001 - a bad file must not stop the batch
                    failures.append(str(FileProblem("unexpected", file, cause=f"{type(exc).__name__}: "
                                                                              f"{one_line(exc)}")))
                progress.advance(task)
        _err.print(f"rendered {len(files) - len(failures)} of {len(files)} file(s) into {out_dir}", markup=False)
        for line in failures:
            _err.print(f"failed: {line}", markup=False)
        if failures:
            raise typer.Exit(1)


def _unique_name(filename: str, used: set[str]) -> str:
    stem = Path(filename).stem or "image"
    name, n = f"{stem}.png", 1
    while name in used:
        name, n = f"{stem}_{n}.png", n + 1
    used.add(name)
    return name


def dump(
    source: Annotated[Path, typer.Argument(help="A DICOM file.")],
    search: Annotated[str | None, typer.Option("--search", help="Only rows containing this text.")] = None,
) -> None:
    """List every data element (tag, VR, keyword, value) like dcmdump; warns when the file is truncated."""
    with _one_line_errors(source):
        ds = _quietly(read_dataset, source, pixels=True)
        cut = truncation(source)
        rows = dump_rows(ds, search)
        # Piped into another program the table is as wide as its rows: a UID is never folded across lines.
        out = Console(highlight=False, width=None if sys.stdout.isatty() else 1_000_000)
        table = Table(title=str(source), show_lines=False)
        for column in ("Tag", "VR", "Keyword", "Value"):
            table.add_column(column, overflow="fold" if column == "Value" else "ellipsis")
        for row in rows:
            table.add_row(row.tag, row.vr, row.keyword, row.value)
        out.print(table)
        if cut is not None:
            _err.print(f"warning: {FileProblem('truncated', str(source), cause=cut)}: the listing shows what "
                       "could be read", markup=False)


def export(
    series_dir: Annotated[Path, typer.Argument(help="Directory (or file list root) of one series.")],
    to: Annotated[ExportFormat, typer.Option("--to", help="Output format.")],
    out: Annotated[Path, typer.Option("--out", help="Output file (nifti: .nii or .nii.gz, npz: .npz) or "
                                                    "directory (png).")],
    preset: PresetOption = None,
    window: WindowOption = None,
    rtstruct: RTStructOption = None,
    rtdose: RTDoseOption = None,
    roi: Annotated[list[str] | None, typer.Option(
        "--roi", help="ROI of --rtstruct to label, by name or number (repeat; label order; default every ROI "
                      "with closed contours by ROI Number).")] = None,
    method: Annotated[Method | None, typer.Option(
        "--method", help="ROI masks: supersample (4 x 4 per voxel, in when half is; default) or centre "
                         "(voxel centres).")] = None,
) -> None:
    """Export a series as a HU volume (NIfTI in RAS, npz with spacing and affine) or one PNG per slice; with
    --rtstruct a label map of its ROIs and with --rtdose the dose (Gy) on the same grid, and a JSON sidecar.
    Objects in the folder that are not slices of a series (RT Structure Sets, Plans, Dose grids, reports…)
    are skipped with a note."""
    _one_window(preset, window)
    if to is not ExportFormat.png and (preset is not None or window is not None):
        _usage(f"--preset and --window window the PNG slices; --to {to.value} writes the values unwindowed")
    if to is ExportFormat.nifti and out.suffix and not out.name.endswith((".nii", ".nii.gz")):
        _usage(f"--out {out}: --to nifti writes .nii or .nii.gz")
    if to is ExportFormat.npz and out.suffix and out.suffix != ".npz":
        _usage(f"--out {out}: --to npz writes .npz")
    if to is ExportFormat.png and (rtstruct is not None or rtdose is not None):
        _usage("--rtstruct and --rtdose add volumes to --to nifti or npz, not to PNG slices")
    for flag, given in (("--roi", bool(roi)), ("--method", method is not None)):
        if given and rtstruct is None:
            _usage(f"{flag} chooses how the ROIs of --rtstruct are labelled: give --rtstruct")
    if to is not ExportFormat.png:
        _check_writable(out)
    with _one_line_errors(series_dir):
        structure_set = StructureSet.read(rtstruct) if rtstruct is not None else None
        dose = DoseGrid.read(rtdose) if rtdose is not None else None
        skipped: list[FileProblem] = []
        with Progress(console=_err, transient=True, disable=not _err.is_terminal) as progress:
            task = progress.add_task(f"reading {series_dir}", total=None)
            # In a folder, what is not a slice is skipped with a note; a file named on its own must be one.
            volume = _quietly(load_series, [series_dir], skipped=skipped if series_dir.is_dir() else None)
            series, labels, doses = None, None, None
            if structure_set is not None or dose is not None:
                series = _rt_series(volume)
                if structure_set is not None:
                    progress.update(task, description=f"labelling the ROIs of {rtstruct}")
                    labels = label_map(structure_set, series, roi, method=(method or Method.supersample).value)
                if dose is not None:
                    progress.update(task, description=f"resampling {rtdose}")
                    doses = dose_volume(dose, series)
            progress.update(task, description=f"writing {to.value}", total=len(volume.paths), completed=0)

            def advance(n: int) -> None:
                progress.advance(task, n)

            try:
                extra = volume_arrays(labels, doses, per_roi=to is ExportFormat.npz)
                if to is ExportFormat.nifti:
                    written = export_nifti(volume, out, advance, extra)
                    files = {"volume": written, **{name: companion_path(written, name) for name in extra}}
                elif to is ExportFormat.npz:
                    written = export_npz(volume, out, advance, extra)
                    files = {"npz": written}
                else:
                    written = export_png(volume, out, _series_window(volume, window, preset), advance)
                    files = {"png": written}
                if series is not None:
                    keys = {**NPZ_KEYS, **{k: v for k, v in RT_NPZ_KEYS.items() if k in extra}}
                    files["sidecar"] = write_sidecar(written, {**describe(volume, to.value, files, keys),
                                                               **describe_rt(series, labels, doses)})
            except OSError as exc:
                target = exc.filename or out
                raise FileProblem("cannot-write", str(target), cause=exc.strerror or one_line(exc)) from None
        _note_skipped(skipped)
        _notes([*(labels.notes if labels else []), *(doses.notes if doses else [])])
        _err.print(f"wrote {', '.join(map(str, files.values()))} ({len(volume.paths)} slices, spacing "
                   f"{' x '.join(f'{s:g}' for s in volume.spacing)} mm)", markup=False)


def register(app: typer.Typer) -> None:
    """Add the imaging commands to ``app``."""
    app.command("show")(show)
    app.command("render")(render)
    app.command("dump")(dump)
    app.command("export")(export)


def main() -> None:
    """Run the imaging commands as a stand-alone program (``python -m hounsfield.imaging.cli``)."""
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True)
    register(app)
    app(prog_name="hounsfield")


if __name__ == "__main__":
    sys.exit(main())
