"""Command line: ``show``, ``render``, ``dump`` and ``export``, added to the main Typer app by :func:`register`.

Bad input never shows a traceback: it prints one line naming the file and the cause and exits with 1;
usage errors exit with 2 (Typer/Click's convention).
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from hounsfield.errors import HounsfieldError
from hounsfield.imaging.display import choose_voi
from hounsfield.imaging.dump import dump_rows
from hounsfield.imaging.export import export_nifti, export_npz, export_png
from hounsfield.imaging.io import number_of_frames, one_line, read_dataset
from hounsfield.imaging.lut import Window, apply_window
from hounsfield.imaging.presets import PRESETS, data_window, preset_window
from hounsfield.imaging.render import render_image, render_instance
from hounsfield.imaging.series import Volume, dicom_files, load_series

_err = Console(stderr=True, highlight=False, soft_wrap=True)  # one line per error


class ExportFormat(str, Enum):
    nifti = "nifti"
    npz = "npz"
    png = "png"


def _check_preset(value: str | None) -> str | None:
    if value is not None:
        try:
            preset_window(value)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
    return value


def _check_window(value: tuple[float, float] | None) -> tuple[float, float] | None:
    if value is not None and not value[1] >= 1:
        raise typer.BadParameter(f"window width must be at least 1, not {value[1]:g}")
    return value


PresetOption = Annotated[str | None, typer.Option(
    "--preset", help=f"Named window: {', '.join(PRESETS)}.", callback=_check_preset)]
WindowOption = Annotated[tuple[float, float] | None, typer.Option(
    "--window", help="Window center and width (PS3.3 C.11.2.1.2.1 linear).", callback=_check_window)]


@contextmanager
def _one_line_errors() -> Iterator[None]:
    """Quiet pydicom's warnings and turn any failure into ``error: <file>: <cause>`` and exit code 1."""
    logging.getLogger("pydicom").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            yield
        except (typer.Exit, typer.Abort, KeyboardInterrupt):
            raise
        except HounsfieldError as exc:
            _fail(str(exc))
        except Exception as exc:  # noqa: BLE001 - the promise is: never a traceback
            _fail(f"{type(exc).__name__}: {one_line(exc)}")


def _fail(message: str) -> None:
    _err.print(f"error: {message}", markup=False, soft_wrap=True)
    raise typer.Exit(1)


def _format_for(path: Path) -> str:
    return "jpeg" if path.suffix.lower() in (".jpg", ".jpeg") else "png"


def show(
    source: Annotated[Path, typer.Argument(help="A DICOM file, or a directory holding one series.")],
    preset: PresetOption = None,
    window: WindowOption = None,
    frame: Annotated[int, typer.Option("--frame", help="Frame (or slice, for a directory) to show, from 0.")] = 0,
    out: Annotated[Path | None, typer.Option("--out", help="Write a PNG/JPEG here instead of opening a window.")] = None,
    annotate: Annotated[bool, typer.Option("--annotate", help="Corner texts and a scale bar.")] = False,
    overlays: Annotated[bool, typer.Option("--overlays", help="Burn in overlay planes (60xx).")] = False,
) -> None:
    """Display an image (or browse a series/multi-frame), or write it at native size with --out."""
    with _one_line_errors():
        if source.is_dir():
            _show_series(source, frame, window, preset, out)
            return
        if out is not None:
            out.write_bytes(render_instance(source, frame=frame, window=window, preset=preset,
                                            fmt=_format_for(out), annotate=annotate, overlays=overlays))
            return
        ds = read_dataset(source)
        from hounsfield.imaging.viewer import browse

        browse(lambda k: np.asarray(render_image(ds, frame=k, window=window, preset=preset,
                                                 annotate=annotate, overlays=overlays)),
               number_of_frames(ds), title=str(source), start=frame)


def _show_series(folder: Path, index: int, window: tuple[float, float] | None, preset: str | None,
                 out: Path | None) -> None:
    volume = load_series([folder])
    voi = _series_window(volume, window, preset)

    def slice_pixels(k: int) -> np.ndarray:
        return np.floor(apply_window(volume.values[k], voi) * 255 + 0.5).astype(np.uint8)

    if not 0 <= index < len(volume.paths):
        raise HounsfieldError(f"{folder}: slice {index} out of range (the series has {len(volume.paths)} slices)")
    if out is not None:
        from PIL import Image

        from hounsfield.imaging.render import encode

        out.write_bytes(encode(Image.fromarray(slice_pixels(index)), _format_for(out)))
        return
    from hounsfield.imaging.viewer import browse

    browse(slice_pixels, len(volume.paths), title=str(folder), start=index)


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
    """Convert many DICOM files to PNG; bad files are skipped and listed at the end (exit 1 if any)."""
    with _one_line_errors():
        files = dicom_files(inputs)
        if not files:
            _fail(f"{' '.join(map(str, inputs))}: no files")
        out_dir.mkdir(parents=True, exist_ok=True)
        failures: list[str] = []
        used: set[str] = set()
        with Progress(console=_err, transient=True) as progress:
            task = progress.add_task("rendering", total=len(files))
            for file in files:
                name = _unique_name(Path(file).name, used)
                try:
                    (out_dir / name).write_bytes(render_instance(file, window=window, preset=preset))
                except HounsfieldError as exc:
                    failures.append(str(exc))
                except Exception as exc:  # noqa: BLE001 - a bad file must not stop the batch
                    failures.append(f"{file}: {type(exc).__name__}: {one_line(exc)}")
                progress.advance(task)
        _err.print(f"rendered {len(files) - len(failures)} of {len(files)} file(s) into {out_dir}", markup=False)
        for line in failures:
            _err.print(f"failed: {line}", markup=False, soft_wrap=True)
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
    """List every data element (tag, VR, keyword, value) like dcmdump."""
    with _one_line_errors():
        rows = dump_rows(read_dataset(source, pixels=True), search)
        table = Table(title=str(source), show_lines=False)
        for column in ("Tag", "VR", "Keyword", "Value"):
            table.add_column(column, overflow="fold" if column == "Value" else "ellipsis")
        for row in rows:
            table.add_row(row.tag, row.vr, row.keyword, row.value)
        Console(highlight=False).print(table)


def export(
    series_dir: Annotated[Path, typer.Argument(help="Directory (or file list root) of one series.")],
    to: Annotated[ExportFormat, typer.Option("--to", help="Output format.")],
    out: Annotated[Path, typer.Option("--out", help="Output file (nifti, npz) or directory (png).")],
    preset: PresetOption = None,
    window: WindowOption = None,
) -> None:
    """Export a series as a HU volume (NIfTI in RAS, npz with spacing and affine) or one PNG per slice."""
    with _one_line_errors():
        with Progress(console=_err, transient=True) as progress:
            task = progress.add_task(f"reading {series_dir}", total=None)
            volume = load_series([series_dir])
            progress.update(task, description=f"writing {to.value}", total=len(volume.paths), completed=0)

            def advance(n: int) -> None:
                progress.advance(task, n)

            if to is ExportFormat.nifti:
                written = export_nifti(volume, out, advance)
            elif to is ExportFormat.npz:
                written = export_npz(volume, out, advance)
            else:
                written = export_png(volume, out, _series_window(volume, window, preset), advance)
        _err.print(f"wrote {written} ({len(volume.paths)} slices, spacing "
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
