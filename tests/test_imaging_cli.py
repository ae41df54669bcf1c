"""The imaging CLI through Typer's CliRunner: show --out against the acceptance reference, render, dump, export."""

from __future__ import annotations

from pathlib import Path

import nibabel
import numpy as np
import pydicom
import pytest
import typer
from conftest import ROOT
from imaging_reference import read_cases, reference_render
from PIL import Image
from pydicom.data import get_testdata_file
from typer.testing import CliRunner

from hounsfield.imaging.cli import register

CASES_FILE = ROOT.parent / "shared" / "accept" / "imaging-cases.txt"
runner = CliRunner()


def _app() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


def invoke(*args: str):
    return runner.invoke(_app(), [str(a) for a in args])


def _cases() -> list:
    return read_cases(str(CASES_FILE)) if CASES_FILE.is_file() else [pytest.param(None, None, marks=pytest.mark.skip(
        reason=f"no {CASES_FILE}"))]


@pytest.mark.parametrize("rel,window", _cases())
def test_show_out_matches_reference(shared_data: Path, tmp_path: Path, rel: str, window) -> None:
    out = tmp_path / "x.png"
    args = ["show", shared_data / rel, "--out", out]
    if window:
        args += ["--window", f"{window[0]:g}", f"{window[1]:g}"]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    got = np.asarray(Image.open(out).convert("L"), dtype=np.float64)
    ref = reference_render(pydicom.dcmread(shared_data / rel), window)
    assert got.shape == ref.shape  # native size, one pixel per pixel
    assert np.mean(np.abs(got - ref) <= 2.0) >= 0.99


def test_show_out_bundled_ct(tmp_path: Path) -> None:
    out = tmp_path / "ct.png"
    result = invoke("show", get_testdata_file("CT_small.dcm"), "--out", out, "--window", "40", "400")
    assert result.exit_code == 0, result.output
    ref = reference_render(pydicom.dcmread(get_testdata_file("CT_small.dcm")), (40, 400))
    assert np.abs(np.asarray(Image.open(out), dtype=float) - ref).max() <= 0.5 + 1e-9


def test_show_bad_input_is_one_line_exit_1(shared_data: Path, tmp_path: Path) -> None:
    for rel, cause in [("other/test-SR.dcm", "no pixel data"), ("malformed/MR_truncated.dcm", "pixel data"),
                       ("missing.dcm", "no such file")]:
        result = invoke("show", shared_data / rel, "--out", tmp_path / "x.png")
        assert result.exit_code == 1
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and rel.split("/")[-1] in lines[0] and cause in lines[0]
        assert "Traceback" not in result.output


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    path = get_testdata_file("CT_small.dcm")
    assert invoke("show", path, "--preset", "nope", "--out", tmp_path / "x.png").exit_code == 2
    assert invoke("show", path, "--window", "40", "0", "--out", tmp_path / "x.png").exit_code == 2


def test_render_continues_past_bad_files(shared_data: Path, tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for rel in ("mr/MR_small.dcm", "other/test-SR.dcm", "ct/CT_small.dcm"):
        (src / Path(rel).name).write_bytes((shared_data / rel).read_bytes())
    result = invoke("render", src, "--out-dir", tmp_path / "out", "--preset", "brain")
    assert result.exit_code == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["CT_small.png", "MR_small.png"]
    assert "test-SR.dcm" in result.output and "no pixel data" in result.output


def test_dump_shows_known_value_and_filters() -> None:
    result = invoke("dump", get_testdata_file("CT_small.dcm"), "--search", "RescaleIntercept")
    assert result.exit_code == 0
    assert "(0028,1052)" in result.output and "-1024" in result.output
    assert "PatientName" not in result.output


def test_export_nifti_affine_in_ras(shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "v.nii.gz"
    result = invoke("export", shared_data / "ct" / "philips_head_phantom_5mm", "--to", "nifti", "--out", out)
    assert result.exit_code == 0, result.output
    image = nibabel.load(out)
    headers = sorted((pydicom.dcmread(p) for p in (shared_data / "ct" / "philips_head_phantom_5mm").glob("*.dcm")),
                     key=lambda ds: float(ds.ImagePositionPatient[2]))
    assert image.shape == (512, 512, 28)
    first = np.array(headers[0].ImagePositionPatient, float)
    dr, dc = (float(v) for v in headers[0].PixelSpacing)
    row_cos = np.array(headers[0].ImageOrientationPatient[:3], float)
    col_cos = np.array(headers[0].ImageOrientationPatient[3:], float)
    i, j, k = 10, 20, 3
    lps = first + i * dc * row_cos + j * dr * col_cos + k * 5.0 * np.cross(row_cos, col_cos)
    ras = lps * [-1, -1, 1]
    np.testing.assert_allclose(nibabel.affines.apply_affine(image.affine, [i, j, k]), ras, atol=1e-4)
    raw = headers[k].pixel_array[j, i] * float(headers[k].RescaleSlope) + float(headers[k].RescaleIntercept)
    assert image.get_fdata()[i, j, k] == pytest.approx(raw)


def test_export_png_per_slice(shared_data: Path, tmp_path: Path) -> None:
    result = invoke("export", shared_data / "ct" / "philips_head_phantom_5mm", "--to", "png", "--out", tmp_path / "p")
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "p").glob("slice_*.png"))) == 28
