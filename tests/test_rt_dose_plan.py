"""Dose grids (both Grid Frame Offset Vector forms, affine, resampling), plans, links and bad input."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from rt_phantom import dose_field, make_phantom, make_rtdose

from hounsfield.rt import DoseGrid, PlanSummary, RTError, StructureSet, compute_dvh, load_series, resolve


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    return {form: make_phantom(tmp_path_factory.mktemp(form), gfov=form) for form in ("relative", "absolute")}


def test_both_frame_offset_forms_give_the_same_grid(phantoms):
    rel, ab = (DoseGrid.read(phantoms[f].rtdose) for f in ("relative", "absolute"))
    assert (rel.offset_form, ab.offset_form) == ("relative", "absolute")
    assert np.allclose(rel.affine, ab.affine) and np.array_equal(rel.values, ab.values)
    assert rel.units == "GY" and rel.dose_type == "PHYSICAL" and rel.summation_type == "PLAN"
    # the affine maps voxel (frame, row, column) to the voxel's patient position
    p = rel.affine @ np.array([4, 7, 9, 1.0])
    assert np.allclose(p[:3], [-78.3 + 9 * 2.5, -61.1 + 7 * 2.5, -38.6 + 4 * 3.0])


def test_dose_at_points_is_trilinear(phantoms):
    rd = DoseGrid.read(phantoms["relative"].rtdose)
    pts = np.array([[0.3, -4.7, 1.1], [35.0, 0.0, 0.0], [-50.2, 20.9, -12.4]])
    assert np.allclose(rd.sample(pts), dose_field(pts), atol=1e-4)  # a linear field is reproduced exactly
    assert rd.dose_at((35.0, 0.0, 0.0)) == pytest.approx(dose_field(np.array([35.0, 0, 0]))[0], abs=1e-4)
    assert np.isnan(rd.dose_at((500.0, 0.0, 0.0)))


def test_resampling_onto_a_ct_slice_and_volume(phantoms):
    ph = phantoms["absolute"]
    rd, ct = DoseGrid.read(ph.rtdose), load_series([ph.ct_dir])
    k = 18
    plane = rd.resample_slice(ct, k)
    centres = ct.grid.voxel_centres()[k]
    inside = (centres[..., 0] > -78) & (centres[..., 0] < 78) & (centres[..., 1] > -60) & (centres[..., 1] < 60)
    assert np.allclose(plane[inside], dose_field(centres[inside].reshape(-1, 3)), atol=1e-3)
    assert plane[0, 0] == 0  # outside the dose grid: the fill value
    volume = rd.resample(ct)
    assert volume.shape == ct.grid.shape and np.array_equal(volume[k], plane)


def test_single_frame_dose_is_named(phantoms, tmp_path):
    ph = phantoms["relative"]
    rs_ds = pydicom.dcmread(ph.rtstruct)
    one = make_rtdose(rs_ds, ph.plan_uid, origin=(-78.3, -61.1, 0.0), shape=(1, 50, 64))
    path = tmp_path / "one_frame.dcm"
    one.save_as(path, enforce_file_format=True)
    rd = DoseGrid.read(path)
    assert rd.offset_form == "single frame"
    assert any("one_frame.dcm: a single dose frame" in i for i in rd.issues)
    rs = StructureSet.read(ph.rtstruct)
    d = compute_dvh(rs.roi("sphere"), rd)  # only the plane z = 0 has dose
    assert d.covered_cc < d.volume_cc and d.notes
    one2 = make_rtdose(rs_ds, ph.plan_uid, origin=(-78.3, -61.1, 100.0), shape=(1, 50, 64))
    one2.save_as(path, enforce_file_format=True)
    with pytest.raises(RTError, match=r"ROI 1 'sphere': lies entirely outside the dose grid of .*one_frame.dcm"):
        compute_dvh(rs.roi("sphere"), DoseGrid.read(path))


def test_many_frames_without_offsets_is_an_error(phantoms, tmp_path):
    ds = pydicom.dcmread(phantoms["relative"].rtdose)
    del ds.GridFrameOffsetVector
    ds.save_as(tmp_path / "no_gfov.dcm")
    with pytest.raises(RTError, match=r"no_gfov.dcm: 27 frames but no Grid Frame Offset Vector"):
        DoseGrid.read(tmp_path / "no_gfov.dcm")


def test_a_structure_set_is_not_a_dose(phantoms):
    with pytest.raises(RTError, match="not an RTDOSE object"):
        DoseGrid.read(phantoms["relative"].rtstruct)


def test_plan_summary_of_the_phantom(phantoms):
    ph = phantoms["relative"]
    plan = PlanSummary.read(ph.rtplan)
    assert plan.label == "PHANTOM" and plan.intent == "CURATIVE" and plan.prescription_gy == 60
    assert plan.fractions == 30 and plan.structure_set_uids == (ph.structure_set_uid,)
    b1, b2 = plan.beams
    assert (b1.gantry_angle, b1.collimator_angle, b1.couch_angle, b1.meterset) == (90, 10, 0, 120.5)
    assert (b2.radiation_type, b2.nominal_energy, b2.control_points, b2.beam_type) == ("PHOTON", 6, 2, "STATIC")
    assert plan.total_meterset == pytest.approx(230.75)


def test_plan_summary_of_the_breast_plan(shared_data):
    plan = PlanSummary.read(shared_data / "rt" / "dicompyler_breast" / "rtplan.dcm")
    assert plan.label == "B1" and plan.fractions == 7 and len(plan.beams) == 4
    assert [b.meterset for b in plan.beams] == [97, 87, 89, 94]


def test_links_of_a_complete_set(phantoms):
    ph = phantoms["relative"]
    rtset = resolve([ph.directory])
    assert rtset.problems == []
    plan = rtset.plans[ph.plan_uid]
    rs = rtset.structure_set_of_plan(plan.sop_instance_uid)
    assert rs is not None and rs.sop_instance_uid == ph.structure_set_uid
    assert rtset.series_of_structure_set(rs.sop_instance_uid).series_uid == ph.series_uid
    assert rtset.plan_of_dose(ph.dose_uid) is plan
    assert [d.SOPInstanceUID for d in rtset.doses_of_plan(ph.plan_uid)] == [ph.dose_uid]


def test_links_of_the_breast_set(shared_data):
    rtset = resolve([shared_data / "rt" / "dicompyler_breast"])
    assert len(rtset.problems) == 1 and "97 of the 98 images" in rtset.problems[0]
    assert all(link.target for link in rtset.links)


def test_dose_without_its_plan_is_reported_by_name(phantoms):
    ph = phantoms["relative"]
    rtset = resolve([ph.rtdose, ph.rtstruct, ph.ct_dir])
    assert rtset.problems == [f"{ph.rtdose}: references RT Plan {ph.plan_uid}, which is not among the files"]
    assert rtset.plan_of_dose(ph.dose_uid) is None
    assert [link.target for link in rtset.links if link.kind == "plan"] == [None]


def test_structure_set_referencing_a_missing_series(phantoms, shared_data):
    ph = phantoms["relative"]
    rtset = resolve([ph.rtstruct])
    assert rtset.problems == [f"{ph.rtstruct}: references image series {ph.series_uid} (37 images), "
                              "which is not among the files"]
    edge = shared_data / "rt" / "edge"
    rtset = resolve([edge / "rtstruct_nonexistent_reference.dcm", shared_data / "ct" / "CT_small.dcm"])
    assert any("rtstruct_nonexistent_reference.dcm: names no image series" in p for p in rtset.problems)
    rtset = resolve([edge / "rtstruct_invalid_reference.dcm"])
    assert any("rtstruct_invalid_reference.dcm: references image series 2.16.840.1.114362" in p for p in rtset.problems)


def test_edge_plan_and_dose_dangle(shared_data):
    edge = shared_data / "rt" / "edge"
    rtset = resolve([edge / "rtplan_pydicom.dcm", edge / "rtdose_pydicom.dcm"])
    text = "\n".join(rtset.problems)
    assert "rtplan_pydicom.dcm: references RT Structure Set 1.2.333.444.55.6.7777.88888" in text
    assert "rtdose_pydicom.dcm: references RT Plan 1.2.123.456.78.9.0123.4567.89012345678901" in text
    rd = DoseGrid.read(edge / "rtdose_pydicom.dcm")
    assert rd.grid.shape == (15, 10, 10) and rd.units == "RELATIVE"
