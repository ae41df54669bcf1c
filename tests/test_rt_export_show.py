"""``hounsfield export --rtstruct/--rtdose`` (HU volume, label map and dose on one grid) and ``hounsfield show``
with RT overlays (contours, isodose lines, colour-wash, legend), through Typer's CliRunner on the analytic
phantom of rt_phantom.py and, when present, the shared dicompyler breast set.

Every expectation is computed apart from hounsfield: masks with matplotlib's point-in-polygon on the phantom's
own polygons (and rt-utils), HU with pydicom, positions from the DICOM headers, dose from the phantom's
closed form."""

from __future__ import annotations

import json
import math
from pathlib import Path

import nibabel
import numpy as np
import pydicom
import pytest
import typer
from matplotlib.path import Path as PolygonPath
from PIL import Image
from typer.testing import CliRunner

from rt_phantom import (COLORS, CT_Z, STRUCTURES, AnalyticStructure, circle, dose_field, make_phantom, make_rtdose,
                        make_rtstruct, save, structure_planes)
from support import require_module

from hounsfield.imaging.cli import register
from hounsfield.rt.overlay import ISODOSE_COLOURS

runner = CliRunner()
SIZE = 160  # the phantom CT's rows and columns
Z0_SLICE = CT_Z.index(0.0)


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


def run(app: typer.Typer, *args: object):
    return runner.invoke(app, [str(a) for a in args])


def one_line(result) -> str:
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    return make_phantom(tmp_path_factory.mktemp("export_show"))


@pytest.fixture(scope="module")
def cts(phantom) -> list[pydicom.Dataset]:
    return sorted((pydicom.dcmread(p) for p in phantom.ct_paths), key=lambda ds: float(ds.ImagePositionPatient[2]))


@pytest.fixture(scope="module")
def overlapping(phantom, cts) -> Path:
    """A structure set of two concentric spheres: 'inner' (ROI 2) lies wholly inside 'outer' (ROI 1)."""
    rs = make_rtstruct(cts, (AnalyticStructure("outer", (0.0, 0.0, 0.0), 25.0),
                             AnalyticStructure("inner", (0.0, 0.0, 0.0), 10.0)), extra=False)
    return save(rs, phantom.directory / "overlapping.dcm")


@pytest.fixture(scope="module")
def other_frame(phantom) -> Path:
    """The phantom's structure set moved to another Frame of Reference."""
    ds = pydicom.dcmread(phantom.rtstruct)
    ds.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID = "1.2.3.4.5"
    for roi in ds.StructureSetROISequence:
        roi.ReferencedFrameOfReferenceUID = "1.2.3.4.5"
    return save(ds, phantom.directory / "other_frame.dcm")


RADIAL_CENTRE = np.array([0.4, 0.0, 0.0])  # off the pixel centres, so that no isodose radius falls on one


@pytest.fixture(scope="module")
def radial_dose(phantom) -> Path:
    """The phantom's dose grid with a cone instead: D = 60 - r Gy (r in mm from RADIAL_CENTRE), 0 beyond 60 mm."""
    rs = pydicom.dcmread(phantom.rtstruct)
    ds = make_rtdose(rs, phantom.plan_uid)
    nf, ny, nx = int(ds.NumberOfFrames), int(ds.Rows), int(ds.Columns)
    origin = np.array([float(v) for v in ds.ImagePositionPatient])
    k, j, i = np.meshgrid(np.arange(nf), np.arange(ny), np.arange(nx), indexing="ij")
    pts = origin + np.column_stack((i.ravel() * 2.5, j.ravel() * 2.5, k.ravel() * 3.0))
    gy = np.clip(60.0 - np.linalg.norm(pts - RADIAL_CENTRE, axis=1), 0, None)
    ds.PixelData = np.rint(gy / float(ds.DoseGridScaling)).astype(np.uint32).tobytes()
    return save(ds, phantom.directory / "radial_dose.dcm")


# ---- export ----------------------------------------------------------------------------------------------------

def polygon_masks(structure: AnalyticStructure) -> np.ndarray:
    """(slice, row, column) voxel-centre mask of a phantom structure, computed from its own polygons with
    matplotlib: a centre is in when an odd number of the plane's polygons hold it (the shell's hole)."""
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(float) - 80.0
    centres = np.column_stack((x.ravel(), y.ravel()))
    out = np.zeros((len(CT_Z), SIZE, SIZE), dtype=bool)
    for z, polygons in structure_planes(structure):
        inside = np.zeros(len(centres), dtype=bool)
        for polygon in polygons:
            inside ^= PolygonPath(polygon[:, :2]).contains_points(centres)
        out[CT_Z.index(z)] = inside.reshape(SIZE, SIZE)
    return out


def header_position(cts: list[pydicom.Dataset], i: int, j: int, k: int) -> np.ndarray:
    """LPS position of NIfTI voxel (i, j, k) = (column, row, slice) by PS3.3 C.7.6.2.1.1 from slice k's header."""
    ds = cts[k]
    row_cos, col_cos = (np.array(ds.ImageOrientationPatient[:3], float), np.array(ds.ImageOrientationPatient[3:], float))
    dr, dc = (float(v) for v in ds.PixelSpacing)
    return np.array(ds.ImagePositionPatient, float) + i * dc * row_cos + j * dr * col_cos


def test_nifti_volume_labels_and_dose_on_one_grid(app, phantom, cts, tmp_path) -> None:
    out = tmp_path / "case.nii.gz"
    result = run(app, "export", phantom.ct_dir, "--to", "nifti", "--out", out, "--rtstruct", phantom.rtstruct,
                 "--rtdose", phantom.rtdose, "--method", "centre")
    assert result.exit_code == 0, result.output
    assert "'marker' has no closed contours (1 POINT); not in the label map" in result.stderr
    files = {name: tmp_path / f"case{name}.nii.gz" for name in ("", "_labels", "_dose")}
    images = {name: nibabel.load(path) for name, path in files.items()}
    sidecar = json.loads((tmp_path / "case.json").read_text())
    assert sidecar["files"] == {"volume": "case.nii.gz", "labels": "case_labels.nii.gz", "dose": "case_dose.nii.gz"}

    # one affine for the three, taking voxel (i, j, k) to the header's patient position, LPS flipped to RAS
    affine = images[""].affine
    for image in images.values():
        assert image.shape == (SIZE, SIZE, len(CT_Z))
        np.testing.assert_array_equal(image.affine, affine)
        assert int(image.header["sform_code"]) == 1 and int(image.header["qform_code"]) == 1
    np.testing.assert_allclose(sidecar["affine"], affine)
    for i, j, k in ((0, 0, 0), (159, 0, 0), (0, 159, 36), (10, 20, 3), (135, 80, Z0_SLICE)):
        ras = header_position(cts, i, j, k) * [-1, -1, 1]
        np.testing.assert_allclose(nibabel.affines.apply_affine(affine, [i, j, k]), ras, atol=1e-6)

    # HU voxel for voxel against pydicom
    hu = np.asarray(images[""].dataobj)
    for k, ds in enumerate(cts):
        expected = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        np.testing.assert_array_equal(hu[:, :, k].T, expected)

    # labels voxel for voxel against matplotlib on the phantom's polygons (holes included)
    labels = np.asarray(images["_labels"].dataobj).transpose(2, 1, 0)
    assert labels.dtype == np.uint8
    assert sidecar["labels"] == {"0": "background", "1": "sphere", "2": "shell", "3": "small"}
    expected = np.zeros(labels.shape, dtype=np.uint8)
    for n, structure in enumerate(STRUCTURES, start=1):
        expected[polygon_masks(structure)] = n
    np.testing.assert_array_equal(labels, expected)
    assert labels[Z0_SLICE, 80, 40] == 0 and labels[Z0_SLICE, 80, 40 - 22] == 2  # the shell's hole, its wall
    assert [(r["name"], r["roi_number"], r["color"], r["voxels"]) for r in sidecar["rois"]] == [
        (s.name, n, list(COLORS[s.name]), int((expected == n).sum())) for n, s in enumerate(STRUCTURES, start=1)]
    assert "later" in sidecar["overlap_rule"] or "last" in sidecar["overlap_rule"]

    # dose: the phantom's linear field, which trilinear interpolation reproduces inside the dose grid
    dose = np.asarray(images["_dose"].dataobj).transpose(2, 1, 0)
    k, j, i = np.meshgrid(np.arange(len(CT_Z)), np.arange(SIZE), np.arange(SIZE), indexing="ij")
    lps = np.column_stack((i.ravel() - 80.0, j.ravel() - 80.0, np.take(CT_Z, k.ravel())))
    (x0, y0, z0), (dy, dx, dz) = phantom.dose_origin, phantom.dose_spacing
    inside = ((lps[:, 0] >= x0) & (lps[:, 0] <= x0 + 63 * dx) & (lps[:, 1] >= y0) & (lps[:, 1] <= y0 + 49 * dy)
              & (lps[:, 2] >= z0) & (lps[:, 2] <= z0 + 26 * dz))  # within the dose voxel centres
    np.testing.assert_allclose(dose.ravel()[inside], dose_field(lps[inside]), atol=2e-3)
    x1, y1 = x0 + 63 * dx, y0 + 49 * dy  # half a dose voxel past the outermost centres is outside the grid
    beyond = (lps[:, 0] < x0 - dx / 2) | (lps[:, 0] > x1 + dx / 2) | (lps[:, 1] < y0 - dy / 2) | (lps[:, 1] > y1 + dy / 2)
    assert beyond.any() and np.all(dose.ravel()[beyond] == 0)
    assert sidecar["dose"]["units"] == "GY" and sidecar["dose"]["outside_voxels"] == int(beyond.sum())


def test_default_masks_agree_with_rt_utils(app, phantom, cts, tmp_path) -> None:
    require_module("rt_utils")
    from rt_utils.rtstruct import RTStruct

    out = tmp_path / "v.nii"
    result = run(app, "export", phantom.ct_dir, "--to", "nifti", "--out", out, "--rtstruct", phantom.rtstruct)
    assert result.exit_code == 0, result.output
    labels = np.asarray(nibabel.load(out.with_name("v_labels.nii")).dataobj).transpose(2, 1, 0)
    rtu = RTStruct(cts, pydicom.dcmread(phantom.rtstruct))
    for n, name in ((1, "sphere"), (2, "shell")):
        theirs = np.moveaxis(rtu.get_roi_mask_by_name(name), -1, 0)
        ours = labels == n
        assert 2 * (ours & theirs).sum() / (ours.sum() + theirs.sum()) > 0.95, name
        assert (ours & ~theirs).sum() < 0.02 * ours.sum(), name


NPZ_KEYS = {"volume", "spacing", "affine", "orientation", "positions", "labels", "masks", "roi_labels",
            "roi_numbers", "roi_names", "dose"}


def test_npz_keys_are_documented(app, phantom, tmp_path) -> None:
    out = tmp_path / "v.npz"
    result = run(app, "export", phantom.ct_dir, "--to", "npz", "--out", out, "--rtstruct", phantom.rtstruct,
                 "--rtdose", phantom.rtdose, "--method", "centre")
    assert result.exit_code == 0, result.output
    data = np.load(out)
    assert set(data.files) == NPZ_KEYS
    sidecar = json.loads((tmp_path / "v.json").read_text())
    assert set(sidecar["keys"]) == NPZ_KEYS and sidecar["affine_space"].startswith("LPS")
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert all(f"`{key}`" in readme for key in NPZ_KEYS)
    shape = (len(CT_Z), SIZE, SIZE)
    assert data["volume"].shape == data["labels"].shape == data["dose"].shape == shape
    assert data["masks"].shape == (3, *shape) and data["masks"].dtype == bool
    assert list(data["roi_names"]) == ["sphere", "shell", "small"] and list(data["roi_numbers"]) == [1, 2, 3]
    for n in (1, 2, 3):  # no overlap in the phantom: each mask is its label
        np.testing.assert_array_equal(data["masks"][n - 1], data["labels"] == n)
    np.testing.assert_allclose(np.load(out)["affine"], sidecar["affine"])


def test_overlapping_rois_later_wins_and_masks_keep_both(app, phantom, overlapping, tmp_path) -> None:
    out = tmp_path / "o.npz"
    result = run(app, "export", phantom.ct_dir, "--to", "npz", "--out", out, "--rtstruct", overlapping)
    assert result.exit_code == 0, result.output
    data, sidecar = np.load(out), json.loads((tmp_path / "o.json").read_text())
    outer, inner = data["masks"]
    assert inner.any() and np.all(outer[inner])  # the masks keep each ROI whole
    assert np.all(data["labels"][inner] == 2) and np.all(data["labels"][outer & ~inner] == 1)
    assert [r["hidden_voxels"] for r in sidecar["rois"]] == [int(inner.sum()), 0]
    # --roi chooses the order, and so who wins
    result = run(app, "export", phantom.ct_dir, "--to", "npz", "--out", out, "--rtstruct", overlapping,
                 "--roi", "inner", "--roi", "outer")
    assert result.exit_code == 0, result.output
    data, sidecar = np.load(out), json.loads((tmp_path / "o.json").read_text())
    assert list(data["roi_names"]) == ["inner", "outer"] and sidecar["labels"]["2"] == "outer"
    assert not np.any(data["labels"] == 1) and np.all(data["labels"][inner] == 2)


def test_export_without_rt_is_unchanged(app, phantom, tmp_path) -> None:
    out = tmp_path / "plain.npz"
    result = run(app, "export", phantom.ct_dir, "--to", "npz", "--out", out)
    assert result.exit_code == 0, result.output
    assert set(np.load(out).files) == {"volume", "spacing", "affine", "orientation", "positions"}
    assert not (tmp_path / "plain.json").exists()
    assert one_line(result) == f"wrote {out} (37 slices, spacing 2 x 1 x 1 mm)"


# ---- show ------------------------------------------------------------------------------------------------------

def show(app, phantom, tmp_path, name: str, *args: object) -> tuple[np.ndarray, object]:
    out = tmp_path / name
    result = run(app, "show", phantom.ct_dir, "--window", "40", "400", "--out", out, *args)
    assert result.exit_code == 0, result.output
    return np.asarray(Image.open(out).convert("RGB")), result


def pixel(x: float, y: float) -> tuple[int, int]:
    """(row, column) of the phantom CT pixel nearest patient (x, y): 1 mm pixels from (-80, -80)."""
    return round(y + 80), round(x + 80)


def test_contours_in_their_colours_in_place(app, phantom, tmp_path) -> None:
    plain, _ = show(app, phantom, tmp_path, "plain.png", "--slice", Z0_SLICE)
    drawn, _ = show(app, phantom, tmp_path, "rs.png", "--slice", Z0_SLICE, "--rtstruct", phantom.rtstruct)
    assert plain.shape == (SIZE, SIZE, 3) and drawn.shape[0] >= SIZE and drawn.shape[1] > SIZE  # legend beside
    image = drawn[:SIZE, :SIZE]
    for s in STRUCTURES:  # a vertex of each structure's contour on z = 0 (polygons start at angle 0)
        x, y, _ = circle(s.centre[:2], s.outer, 0.0)[0]
        assert tuple(image[pixel(x, y)]) == COLORS[s.name], s.name
    row, col = pixel(0.0, 50.0)  # water, far from every contour
    assert tuple(image[row, col]) == tuple(plain[row, col]) and plain[row, col, 0] == plain[row, col, 1]
    changed = np.any(image != plain, axis=2)
    assert {tuple(c) for c in image[changed]} <= set(COLORS.values())  # only contour colours, the rest grey
    assert tuple(image[pixel(0.0, 0.0)]) == COLORS["marker"]  # the POINT, a cross
    assert not np.all(image == COLORS["line"], axis=2).any()  # the OPEN_PLANAR contour lies on z = 2 mm
    on_z2, _ = show(app, phantom, tmp_path, "z2.png", "--slice", Z0_SLICE + 1, "--rtstruct", phantom.rtstruct)
    assert np.all(on_z2[:SIZE, :SIZE] == COLORS["line"], axis=2).any()
    first, _ = show(app, phantom, tmp_path, "z-36.png", "--slice", 0, "--rtstruct", phantom.rtstruct)
    plain_first, _ = show(app, phantom, tmp_path, "plain0.png", "--slice", 0)
    np.testing.assert_array_equal(first[:SIZE, :SIZE], plain_first)  # no structure reaches z = -36 mm


def radii(image: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    rows, cols = np.nonzero(np.all(image == colour, axis=2))
    return np.hypot(cols - 80.0 - RADIAL_CENTRE[0], rows - 80.0 - RADIAL_CENTRE[1])


def test_isodose_lines_at_their_radius(app, phantom, radial_dose, tmp_path) -> None:
    drawn, result = show(app, phantom, tmp_path, "iso.png", "--slice", Z0_SLICE, "--rtdose", radial_dose,
                         "--rtplan", phantom.rtplan, "--isodose", "50,40Gy")
    assert result.stderr == ""  # the plan's 60 Gy is 100 %: no note
    image = drawn[:SIZE, :SIZE]
    high, low = ISODOSE_COLOURS[0], ISODOSE_COLOURS[1]  # 40 Gy (r = 20 mm), then 50 % of 60 Gy (r = 30 mm)
    for colour, radius in ((high, 20.0), (low, 30.0)):
        found = radii(image, colour)
        assert found.size > 4 * radius  # a whole ring
        assert found.min() > radius - 1.5 and found.max() <= radius + 0.1, (radius, found.min(), found.max())
        row, col = pixel(RADIAL_CENTRE[0] + radius - 0.4, 0.0)  # the last pixel inside the level on the x axis
        assert tuple(image[row, col]) == colour
    # no plan: percentages of the dose maximum, with a note
    _, result = show(app, phantom, tmp_path, "iso_max.png", "--slice", Z0_SLICE, "--rtdose", radial_dose,
                     "--isodose", "50")
    assert "radial_dose.dcm: no RT Plan found; the isodose percentages are of the dose maximum" in result.stderr


def test_colourwash_with_its_scale(app, phantom, tmp_path) -> None:
    plain, _ = show(app, phantom, tmp_path, "plain.png", "--slice", Z0_SLICE)
    washed, _ = show(app, phantom, tmp_path, "wash.png", "--slice", Z0_SLICE, "--rtdose", phantom.rtdose,
                     "--colorwash")
    image = washed[:SIZE, :SIZE]
    r, g, b = (int(v) for v in image[pixel(60.0, 40.0)])  # high dose (about 70 Gy): the red end, blended
    assert r > g and r > b
    outside = pixel(0.0, -75.0)  # beyond the dose grid (y from -61.1 mm)
    assert tuple(image[outside]) == tuple(plain[outside])
    assert washed.shape[1] > SIZE and len({tuple(c) for c in washed[:, SIZE:].reshape(-1, 3)}) > 20  # the scale


def test_a_dose_missing_the_slice_is_a_note(app, phantom, tmp_path) -> None:
    thin = save(make_rtdose(pydicom.dcmread(phantom.rtstruct), phantom.plan_uid, shape=(3, 50, 64)),
                tmp_path / "thin_dose.dcm")  # frames at z = -38.6 … -32.6 mm
    plain, _ = show(app, phantom, tmp_path, "plain.png", "--slice", Z0_SLICE)
    drawn, result = show(app, phantom, tmp_path, "thin.png", "--slice", Z0_SLICE, "--rtdose", thin,
                         "--rtplan", phantom.rtplan)
    assert one_line(result) == f"note: {thin}: the dose grid does not cover slice {Z0_SLICE} of {phantom.ct_dir}; " \
                               "no dose drawn"
    np.testing.assert_array_equal(drawn[:SIZE, :SIZE], plain)


def test_a_single_file_takes_the_overlays_too(app, phantom, cts, tmp_path) -> None:
    out = tmp_path / "file.png"
    path = cts[Z0_SLICE].filename
    result = run(app, "show", path, "--window", "40", "400", "--out", out, "--rtstruct", phantom.rtstruct)
    assert result.exit_code == 0, result.output
    image = np.asarray(Image.open(out).convert("RGB"))[:SIZE, :SIZE]
    x, y, _ = circle(STRUCTURES[0].centre[:2], STRUCTURES[0].outer, 0.0)[0]
    assert tuple(image[pixel(x, y)]) == COLORS["sphere"]


def test_the_window_view_gets_the_overlays_on_every_slice(app, phantom, monkeypatch) -> None:
    from hounsfield.imaging import cli, viewer

    shown = {}
    monkeypatch.setattr(cli, "_display_problem", lambda: None)
    monkeypatch.setattr(viewer, "browse", lambda render, count, **kw: shown.update(render=render, count=count, **kw))
    result = run(app, "show", phantom.ct_dir, "--rtstruct", phantom.rtstruct, "--slice", Z0_SLICE)
    assert result.exit_code == 0, result.output
    assert shown["count"] == len(CT_Z) and shown["start"] == Z0_SLICE
    x, y, _ = circle(STRUCTURES[0].centre[:2], STRUCTURES[0].outer, 0.0)[0]
    assert tuple(shown["render"](Z0_SLICE)[pixel(x, y)]) == COLORS["sphere"]
    assert shown["render"](0).shape == shown["render"](Z0_SLICE).shape  # one legend for every slice


# ---- bad input -------------------------------------------------------------------------------------------------

def test_bad_inputs_are_one_line(app, phantom, other_frame, tmp_path) -> None:
    png, nii = tmp_path / "x.png", tmp_path / "x.nii.gz"
    for command in (["show", phantom.ct_dir, "--out", png], ["export", phantom.ct_dir, "--to", "nifti", "--out", nii]):
        result = run(app, *command, "--rtstruct", other_frame)
        assert result.exit_code == 1
        line = one_line(result)
        assert line.startswith(f"error: {other_frame}: Frame of Reference 1.2.3.4.5 differs from the images' "
                               f"({phantom.frame_of_reference_uid}"), line
        for flag, missing in (("--rtstruct", tmp_path / "missing_rs.dcm"), ("--rtdose", tmp_path / "missing_rd.dcm")):
            result = run(app, *command, flag, missing)
            assert result.exit_code == 1 and one_line(result) == f"error: {missing}: no such file"
        result = run(app, *command, "--rtstruct", phantom.rtdose)
        assert result.exit_code == 1
        assert one_line(result) == f"error: {phantom.rtdose}: not an RTSTRUCT object (Modality is RTDOSE)"
    moved = pydicom.dcmread(other_frame)
    moved.FrameOfReferenceUID = "1.2.3.4.5"
    dose_elsewhere = save(make_rtdose(moved, None), tmp_path / "dose_elsewhere.dcm")
    for command in (["show", phantom.ct_dir, "--out", png], ["export", phantom.ct_dir, "--to", "nifti", "--out", nii]):
        result = run(app, *command, "--rtdose", dose_elsewhere)
        assert result.exit_code == 1
        assert one_line(result).startswith(f"error: {dose_elsewhere}: Frame of Reference 1.2.3.4.5 differs")
    result = run(app, "show", phantom.ct_dir, "--out", png, "--rtdose", phantom.rtdose, "--rtplan", tmp_path / "no.dcm")
    assert result.exit_code == 1 and one_line(result) == f"error: {tmp_path / 'no.dcm'}: no such file"
    for roi, cause in (("Liver", "no ROI 'Liver'"), ("marker", "ROI 4 'marker' has no closed contours")):
        result = run(app, "export", phantom.ct_dir, "--to", "npz", "--out", tmp_path / "x.npz", "--rtstruct",
                     phantom.rtstruct, "--roi", roi)
        assert result.exit_code == 1 and cause in one_line(result)
    assert not png.exists() and not nii.exists()


@pytest.mark.parametrize("args", [
    ["show", "CT", "--out", "x.png", "--isodose", "95"],
    ["show", "CT", "--out", "x.png", "--colourwash"],
    ["show", "CT", "--out", "x.png", "--rtdose", "RD", "--isodose", "95", "--colourwash"],
    ["show", "CT", "--out", "x.png", "--rtdose", "RD", "--isodose", "95,lots"],
    ["export", "CT", "--to", "png", "--out", "p", "--rtstruct", "RS"],
    ["export", "CT", "--to", "npz", "--out", "x.npz", "--roi", "sphere"],
])
def test_usage_errors_exit_2(app, phantom, tmp_path, args) -> None:
    names = {"CT": phantom.ct_dir, "RD": phantom.rtdose, "RS": phantom.rtstruct, "x.png": tmp_path / "x.png",
             "x.npz": tmp_path / "x.npz", "p": tmp_path / "p"}
    result = run(app, *(names.get(a, a) for a in args))
    assert result.exit_code == 2 and one_line(result).startswith("error: --")


# ---- the shared dicompyler breast set ------------------------------------------------------------------------

def test_breast_slice_with_its_linked_plan(app, shared_data, tmp_path) -> None:
    folder = shared_data / "rt" / "dicompyler_breast"
    out = tmp_path / "breast.png"
    result = run(app, "show", folder, "--out", out, "--rtstruct", folder / "rtss.dcm", "--rtdose",
                 folder / "rtdose.dcm")
    assert result.exit_code == 0, result.output
    assert "no RT Plan found" not in result.stderr  # the plan in the folder, which the dose references
    ct, rs = pydicom.dcmread(folder / "ct.0.dcm"), pydicom.dcmread(folder / "rtss.dcm")
    body = next(rc for rc in rs.ROIContourSequence if rc.ReferencedROINumber == 1)
    z = float(ct.ImagePositionPatient[2])
    contour = next(c for c in body.ContourSequence if abs(float(c.ContourData[2]) - z) < 0.01)
    x, y = float(contour.ContourData[0]), float(contour.ContourData[1])
    dr, dc = (float(v) for v in ct.PixelSpacing)
    row = round((y - float(ct.ImagePositionPatient[1])) / dr)
    col = round((x - float(ct.ImagePositionPatient[0])) / dc)
    image = np.asarray(Image.open(out).convert("RGB"))
    assert tuple(image[row, col]) == tuple(int(v) for v in body.ROIDisplayColor)


def test_breast_export_matches_rt_utils(app, shared_data, tmp_path) -> None:
    require_module("rt_utils")
    from rt_utils.rtstruct import RTStruct

    folder = shared_data / "rt" / "dicompyler_breast"
    out = tmp_path / "breast.nii.gz"
    result = run(app, "export", folder, "--to", "nifti", "--out", out, "--rtstruct", folder / "rtss.dcm",
                 "--rtdose", folder / "rtdose.dcm", "--roi", "BODY")
    assert result.exit_code == 0, result.output
    labels = np.asarray(nibabel.load(tmp_path / "breast_labels.nii.gz").dataobj)[:, :, 0].T
    theirs = RTStruct([pydicom.dcmread(folder / "ct.0.dcm")], pydicom.dcmread(folder / "rtss.dcm"))
    mask = theirs.get_roi_mask_by_name("BODY")[:, :, 0]
    assert mask.sum() > 10000 and 2 * ((labels == 1) & mask).sum() / ((labels == 1).sum() + mask.sum()) > 0.99
    dose = nibabel.load(tmp_path / "breast_dose.nii.gz")
    np.testing.assert_array_equal(dose.affine, nibabel.load(out).affine)
    assert 0 < float(np.asarray(dose.dataobj).max()) < math.inf
