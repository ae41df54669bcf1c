"""Structure sets: parsing, masks (against rt-utils), holes, the mask → RTSTRUCT → mask round trip."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from rt_phantom import make_phantom
from support import require_module

from hounsfield.rt import (DoseGrid, RTError, StructureSet, dice, load_series, mask_outlines, roi_mask,
                           roi_occupancy, structure_set_from_label_map, structure_set_from_masks, write_structure_set)
from hounsfield.rt.raster import fill


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    return make_phantom(tmp_path_factory.mktemp("phantom"))


@pytest.fixture(scope="module")
def series(phantom):
    return load_series([phantom.ct_dir])


def test_breast_structure_set(shared_data):
    rs = StructureSet.read(shared_data / "rt" / "dicompyler_breast" / "rtss.dcm")
    assert [r.name for r in rs.rois][:3] == ["BODY", "Areola", "Borders"]
    body = rs.roi("body")
    assert body.number == 1 and body.color == (154, 155, 100) and body.interpreted_type == "EXTERNAL"
    assert len(body.contours) == 141 and body.slab_thickness() == 3.0
    assert rs.roi(2).empty
    assert rs.issues == [f"{rs.name}: ROI 2 'Areola' has no contours"]
    assert rs.referenced_series[0].series_uid == "2.16.840.1.113662.2.12.0.3057.1241703565.43"
    with pytest.raises(RTError, match="no ROI 'Liver'"):
        rs.roi("Liver")


def test_even_odd_fill_makes_holes_and_islands():
    square = lambda h: np.array([[-h, -h], [-h, h], [h, h], [h, -h]], float)  # noqa: E731
    axis = np.arange(-10, 11, dtype=float)
    m = fill([square(8.5), square(4.5), square(1.5)], axis, axis)
    assert m[10, 10] and not m[10, 14] and m[10, 17] and not m[10, 20]
    assert m.sum() == 17 ** 2 - 9 ** 2 + 3 ** 2


def test_phantom_masks_against_closed_form_and_point_contours_never_rasterised(phantom, series):
    rs = StructureSet.read(phantom.rtstruct)
    occ = roi_occupancy(rs.roi("shell"), series.grid, supersample=4)
    vol = occ.sum() * series.grid.voxel_volume_cc
    assert vol == pytest.approx(phantom.structures["shell"].volume_cc, rel=0.01)
    k = int(np.argmin(np.abs(series.grid.offsets - (0.0 - series.grid.origin[2]))))
    centre = series.grid.patient_to_index(np.array([[-40.0, 0.0, 0.0]]))[0]
    assert occ[k, int(round(centre[1])), int(round(centre[2]))] == 0  # the hole
    assert not roi_mask(rs.roi("marker"), series.grid).any()
    assert not roi_mask(rs.roi("line"), series.grid).any()
    assert rs.roi("marker").geometric_types() == {"POINT": 1}


def test_masks_on_the_dose_grid(phantom):
    rs, rd = StructureSet.read(phantom.rtstruct), DoseGrid.read(phantom.rtdose)
    occ = roi_occupancy(rs.roi("sphere"), rd.grid, supersample=(4, 4, 4))
    assert occ.sum() * rd.grid.voxel_volume_cc == pytest.approx(phantom.structures["sphere"].volume_cc, rel=0.02)


def _rt_utils_mask(ct_datasets, rs_ds, name):
    from rt_utils.rtstruct import RTStruct

    mask = RTStruct(ct_datasets, rs_ds).get_roi_mask_by_name(name)  # (rows, columns, slices)
    return np.moveaxis(mask, -1, 0)


def test_masks_agree_with_rt_utils_on_the_phantom(phantom, series):
    rs = StructureSet.read(phantom.rtstruct)
    cts = [pydicom.dcmread(p) for p in series.paths]
    ds = pydicom.dcmread(phantom.rtstruct)
    for name in ("sphere", "shell"):
        ours = roi_mask(rs.roi(name), series.grid, method="centre")
        theirs = _rt_utils_mask(cts, ds, name)
        assert dice(ours, theirs) > 0.95, name  # the boundary pixels rt-utils adds: 0.97 here
        # rt-utils rounds vertices to pixels and fills the boundary: a superset of voxel centres, nearly
        assert np.logical_and(ours, ~theirs).sum() < 0.01 * ours.sum()


def test_masks_agree_with_rt_utils_on_the_breast_slice(shared_data):
    folder = shared_data / "rt" / "dicompyler_breast"
    rs = StructureSet.read(folder / "rtss.dcm")
    ct = load_series([folder / "ct.0.dcm"])
    ds = pydicom.dcmread(folder / "rtss.dcm")
    ours = roi_mask(rs.roi("BODY"), ct.grid, method="centre")
    theirs = _rt_utils_mask([pydicom.dcmread(folder / "ct.0.dcm")], ds, "BODY")
    assert ours.sum() > 10000
    assert dice(ours, theirs) > 0.99


def test_mask_outlines_fill_back_exactly():
    rng = np.random.default_rng(3)
    m = rng.random((40, 50)) > 0.55
    m[10:30, 10:40] = True
    m[15:20, 15:20] = False  # a hole
    loops = mask_outlines(m)
    rows, cols = np.arange(40, dtype=float), np.arange(50, dtype=float)
    assert np.array_equal(fill(loops, rows, cols), m)


def test_round_trip_mask_to_rtstruct_to_mask(phantom, series, tmp_path):
    rs = StructureSet.read(phantom.rtstruct)
    masks = {n: roi_mask(rs.roi(n), series.grid) for n in ("sphere", "shell", "small")}
    ds = structure_set_from_masks(series, masks, types={"sphere": "PTV"})
    out = tmp_path / "new_rs.dcm"
    write_structure_set(ds, out)
    back = StructureSet.read(out)
    assert back.issues == []
    assert back.frame_of_reference_uid == phantom.frame_of_reference_uid
    assert back.referenced_series[0].series_uid == phantom.series_uid
    assert back.sop_instance_uid != rs.sop_instance_uid and pydicom.uid.UID(back.sop_instance_uid).is_valid
    assert back.roi("sphere").interpreted_type == "PTV"
    for name, mask in masks.items():
        for method in ("centre", "supersample"):
            again = roi_mask(back.roi(name), series.grid, method=method)
            assert dice(mask, again) >= 0.99, (name, method)
    # every contour lies on an image of the series, and says so
    uids = set(series.sop_instance_uids)
    assert all(c.image_uids and set(c.image_uids) <= uids for r in back.rois for c in r.contours)
    # rt-utils reads it too
    from rt_utils.rtstruct import RTStruct

    rtu = RTStruct([pydicom.dcmread(p) for p in series.paths], pydicom.dcmread(out))
    assert sorted(rtu.get_roi_names()) == ["shell", "small", "sphere"]


def test_round_trip_from_a_nifti_label_map(phantom, series, tmp_path):
    nibabel = require_module("nibabel")
    rs = StructureSet.read(phantom.rtstruct)
    labels = np.zeros(series.grid.shape, np.int16)
    labels[roi_mask(rs.roi("sphere"), series.grid)] = 1
    labels[roi_mask(rs.roi("shell"), series.grid)] = 2
    ijk = series.grid.affine[:, [2, 1, 0, 3]]  # NIfTI data (column, row, slice), RAS affine
    img = nibabel.Nifti1Image(np.transpose(labels, (2, 1, 0)), np.diag([-1.0, -1.0, 1.0, 1.0]) @ ijk)
    path = tmp_path / "labels.nii.gz"
    nibabel.save(img, path)
    ds = structure_set_from_label_map(series, path, names={1: "sphere", 2: "shell"})
    back = StructureSet.from_dataset(ds)
    assert dice(roi_mask(back.roi("shell"), series.grid), labels == 2) >= 0.99
    assert dice(roi_mask(back.roi("sphere"), series.grid), labels == 1) >= 0.99


def test_contour_off_its_plane_is_named(phantom, series, tmp_path):
    ds = pydicom.dcmread(phantom.rtstruct)
    contour = ds.ROIContourSequence[0].ContourSequence[3]
    data = [float(v) for v in contour.ContourData]
    data[2] += 2.0  # first point 2 mm off the plane
    contour.ContourData = data
    path = tmp_path / "off_plane.dcm"
    ds.save_as(path)
    rs = StructureSet.read(path)
    assert any("ROI 1 'sphere', contour 4: points off its plane" in i for i in rs.issues)
    with pytest.raises(RTError, match=r"off_plane.dcm: ROI 1 'sphere', contour 4: points off its plane"):
        roi_mask(rs.roi("sphere"), series.grid)


def test_masks_need_matching_shapes(series):
    with pytest.raises(RTError, match="shape"):
        structure_set_from_masks(series, {"x": np.zeros((2, 2, 2), bool)})
