"""DVHs: the analytic phantom's closed form, and dicompyler-core on the breast set (same sampling)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rt_phantom import make_phantom
from support import require_module

from hounsfield.rt import DoseGrid, RTError, StructureSet, compute_dvh, compute_dvhs, stored_dvhs

BREAST = ("rt", "dicompyler_breast")


@pytest.fixture(scope="module", params=["relative", "absolute"])
def phantom(request, tmp_path_factory):
    return make_phantom(tmp_path_factory.mktemp(f"phantom_{request.param}"), gfov=request.param)


@pytest.fixture(scope="module")
def phantom_dvhs(phantom):
    rs, rd = StructureSet.read(phantom.rtstruct), DoseGrid.read(phantom.rtdose)
    return {d.roi_name: d for d in compute_dvhs(rs, rd, rois=["sphere", "shell", "small"])}


@pytest.mark.parametrize("name", ["sphere", "shell", "small"])
def test_phantom_dvh_matches_the_closed_form(phantom, phantom_dvhs, name):
    d, exact = phantom_dvhs[name], phantom.structures[name]
    tol = 0.01 if exact.volume_cc >= 10 else 0.05
    assert d.volume_cc == pytest.approx(exact.volume_cc, rel=tol)
    for x in (98, 95, 50, 2):
        assert d.dose_at_volume(x) == pytest.approx(exact.dose_at_volume(x), rel=tol), f"D{x}"
    assert d.mean_gy == pytest.approx(exact.dmean, rel=tol)
    assert d.min_gy == pytest.approx(exact.dmin, rel=tol)
    assert d.max_gy == pytest.approx(exact.dmax, rel=tol)
    level = exact.dose_at_volume(50)
    assert d.volume_at_dose(level) == pytest.approx(exact.volume_at_dose(level), rel=tol)
    assert d.statistic(f"V{level:.3f}Gy") == pytest.approx(d.volume_at_dose(round(level, 3)))
    assert d.statistic("D95") == d.d95
    assert d.differential_cc.sum() == pytest.approx(d.volume_cc)
    assert d.cumulative_pct[0] == pytest.approx(100.0)


def test_the_hole_is_taken_out(phantom_dvhs, phantom):
    shell = phantom.structures["shell"]
    full = 4 / 3 * math.pi * shell.outer ** 3 / 1000
    assert phantom_dvhs["shell"].volume_cc < 0.9 * full
    assert phantom_dvhs["shell"].volume_cc == pytest.approx(shell.volume_cc, rel=0.01)


def test_voxel_centres_miss_small_structures_and_supersampling_fixes_it(phantom):
    rs, rd = StructureSet.read(phantom.rtstruct), DoseGrid.read(phantom.rtdose)
    exact = phantom.structures["small"].volume_cc
    centre = compute_dvh(rs.roi("small"), rd, method="centre").volume_cc
    fine = compute_dvh(rs.roi("small"), rd).volume_cc
    assert abs(fine - exact) < abs(centre - exact)
    assert abs(fine - exact) / exact < 0.05


def test_shifted_dose_grid_gives_the_same_dvh(tmp_path, phantom_dvhs):
    other = make_phantom(tmp_path, dose_origin=(-79.0, -62.4, -40.1), dose_spacing=(2.0, 3.0, 2.5), dose_shape=(33, 62, 54))
    rs, rd = StructureSet.read(other.rtstruct), DoseGrid.read(other.rtdose)
    d = compute_dvh(rs.roi("sphere"), rd)
    ref = phantom_dvhs["sphere"]
    assert d.d95 == pytest.approx(ref.d95, rel=0.005)
    assert d.volume_cc == pytest.approx(other.structures["sphere"].volume_cc, rel=0.01)


def test_statistics_api(phantom_dvhs):
    d = phantom_dvhs["sphere"]
    assert d.statistic("Dmean") == d.mean_gy
    assert d.statistic("D2cc") <= d.max_gy
    assert d.statistic("V100%", prescription_gy=d.mean_gy) == pytest.approx(50, abs=1)
    assert d.statistic("V0Gy") == pytest.approx(d.volume_cc)
    with pytest.raises(ValueError):
        d.statistic("X12")
    dose, pct = d.curve(0.01)
    assert pct[0] == pytest.approx(100) and pct[-1] == 0 and np.all(np.diff(pct) <= 1e-9)


def test_roi_without_closed_contours_is_named(phantom):
    rs, rd = StructureSet.read(phantom.rtstruct), DoseGrid.read(phantom.rtdose)
    with pytest.raises(RTError, match=r"ROI 4 'marker'.*no closed contours"):
        compute_dvh(rs.roi("marker"), rd)
    errors: list[str] = []
    dvhs = compute_dvhs(rs, rd, errors=errors)
    assert [d.roi_name for d in dvhs] == ["sphere", "shell", "small"]
    assert any("'line'" in e for e in errors)


# ---------------------------------------------------------------------------------------------------------
# dicompyler-core (BSD), the reference: computed once per session (it takes seconds)


@pytest.fixture(scope="session")
def dicompyler_reference(shared_data):
    import pydicom
    import pydicom.dicomio

    pydicom.dicomio.read_file = pydicom.dcmread  # dicompyler-core 0.5.6 still imports the removed name
    pydicom.read_file = pydicom.dcmread
    dvhcalc = require_module("dicompylercore.dvhcalc")
    folder = shared_data.joinpath(*BREAST)
    rs = StructureSet.read(folder / "rtss.dcm")
    out = {}
    for roi in rs.rois:
        d = dvhcalc.get_dvh(str(folder / "rtss.dcm"), str(folder / "rtdose.dcm"), roi.number)
        out[roi.number] = {"volume": float(d.volume), "min": float(d.min), "mean": float(d.mean),
                           "max": float(d.max), "D95": float(d.D95.value), "D2": float(d.D2.value)}
    return out


@pytest.fixture(scope="module")
def breast(shared_data):
    folder = shared_data.joinpath(*BREAST)
    return StructureSet.read(folder / "rtss.dcm"), DoseGrid.read(folder / "rtdose.dcm")


def _close(ours: float, theirs: float) -> bool:
    return abs(ours - theirs) <= max(0.01 * abs(theirs), 0.05)


def test_breast_dvhs_agree_with_dicompyler_core(breast, dicompyler_reference):
    rs, rd = breast
    errors: list[str] = []
    ours = {d.roi_number: d for d in compute_dvhs(rs, rd, method="centre", errors=errors)}
    assert errors == [f"{rs.name}: ROI 2 'Areola' has no closed contours; no DVH"]
    assert dicompyler_reference[2]["volume"] == 0  # dicompyler-core: an empty DVH, silently
    for number, ref in dicompyler_reference.items():
        if number == 2:
            continue
        d = ours[number]
        got = {"volume": d.volume_cc, "min": d.min_gy, "mean": d.mean_gy, "max": d.max_gy, "D95": d.d95, "D2": d.d2}
        bad = {k: (got[k], ref[k]) for k in ref if not _close(got[k], ref[k])}
        assert not bad, f"{d.roi_name}: {bad}"


def test_breast_default_method_stays_close_for_large_rois(breast, dicompyler_reference):
    rs, rd = breast
    for d in compute_dvhs(rs, rd, errors=[]):
        if d.volume_cc >= 10:
            assert d.volume_cc == pytest.approx(dicompyler_reference[d.roi_number]["volume"], rel=0.02)
            assert d.mean_gy == pytest.approx(dicompyler_reference[d.roi_number]["mean"], rel=0.02, abs=0.05)


def test_stored_dvhs_are_read(breast):
    _, rd = breast
    stored = stored_dvhs(rd.dataset)
    assert sorted(stored) == [1, 3, 4, 5, 6, 7, 8, 9, 10]
    heart = stored[5]
    assert heart.source == "stored" and heart.volume_cc > 0
    assert heart.max_gy == pytest.approx(22.1100949169492)
    assert heart.cumulative_pct[0] == pytest.approx(100)
