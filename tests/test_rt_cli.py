"""``hounsfield rt info`` and ``hounsfield rt dvh`` through Typer's CliRunner."""

from __future__ import annotations

import csv
import json

import pytest
import typer
from typer.testing import CliRunner

from rt_phantom import make_phantom

from hounsfield.rt.cli import register

runner = CliRunner()
KEYS = ["number", "name", "volume_cc", "min_gy", "mean_gy", "max_gy", "d98_gy", "d95_gy", "d50_gy", "d2_gy",
        "dose_gy", "volume_pct"]


@pytest.fixture(scope="module")
def app():
    app = typer.Typer()
    register(app)

    @app.command("noop", hidden=True)
    def noop() -> None:  # a second command keeps "rt" a sub-command
        pass

    return app


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    return make_phantom(tmp_path_factory.mktemp("cli_phantom"))


def run(app, *args):
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


def test_info_shows_rois_plan_dose_and_links(app, phantom):
    r = run(app, "rt", "info", phantom.rtstruct, phantom.rtplan, phantom.rtdose, phantom.ct_dir)
    assert r.exit_code == 0, r.output
    for text in ("sphere", "shell", "PTV", "POINT", "PHANTOM", "60 Gy", "beam 1", "120.5", "64 x 50 x 27",
                 "relative", "Links", "rtplan.dcm", "37 CT image(s)"):
        assert text in r.output, text


def test_info_reports_dangling_references(app, shared_data):
    edge = shared_data / "rt" / "edge"
    r = run(app, "rt", "info", edge / "rtdose_pydicom.dcm")
    assert r.exit_code == 0
    assert "rtdose_pydicom.dcm: references RT Plan 1.2.123.456.78.9.0123.4567.89012345678901" in r.output
    assert "missing" in r.output


def test_info_of_a_bad_file_is_one_line(app, tmp_path):
    bad = tmp_path / "junk.dcm"
    bad.write_bytes(b"not dicom at all")
    r = run(app, "rt", "info", bad)
    assert r.exit_code == 1
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "junk.dcm" in lines[0] and "Traceback" not in r.output


def test_dvh_json_has_the_documented_shape(app, phantom, tmp_path):
    out = tmp_path / "dvh.json"
    r = run(app, "rt", "dvh", "--rtstruct", phantom.rtstruct, "--rtdose", phantom.rtdose, "--roi", "sphere",
            "--roi", "shell", "--out", out)
    assert r.exit_code == 0, r.output
    data = json.loads(out.read_text())
    assert list(data) == ["rois"] and [d["name"] for d in data["rois"]] == ["sphere", "shell"]
    for d in data["rois"]:
        assert list(d) == KEYS
        assert len(d["dose_gy"]) == len(d["volume_pct"]) and d["volume_pct"][0] == pytest.approx(100)
    sphere = data["rois"][0]
    assert sphere["volume_cc"] == pytest.approx(phantom.structures["sphere"].volume_cc, rel=0.01)
    assert sphere["d95_gy"] == pytest.approx(phantom.structures["sphere"].dose_at_volume(95), rel=0.01)
    assert "sphere" in r.output and "D95" in r.output


def test_dvh_csv_and_png(app, phantom, tmp_path):
    out = tmp_path / "dvh.csv"
    r = run(app, "rt", "dvh", "--rtstruct", phantom.rtstruct, "--rtdose", phantom.rtdose, "--out", out)
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(out.open()))
    assert {row["roi_name"] for row in rows} == {"sphere", "shell", "small"}
    assert "'marker' has no closed contours" in r.output  # a warning, the rest computed
    png = tmp_path / "dvh.png"
    r = run(app, "rt", "dvh", "--rtstruct", phantom.rtstruct, "--rtdose", phantom.rtdose, "--out", png,
            "--method", "centre")
    assert r.exit_code == 0, r.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_dvh_shows_the_stored_dvh_beside(app, shared_data):
    folder = shared_data / "rt" / "dicompyler_breast"
    r = run(app, "rt", "dvh", "--rtstruct", folder / "rtss.dcm", "--rtdose", folder / "rtdose.dcm", "--roi", "Heart",
            "--method", "centre")
    assert r.exit_code == 0, r.output
    assert "Heart" in r.output and "stored in RT Dose" in r.output and "440.231" in r.output


def test_dvh_errors_are_one_line_naming_the_file(app, phantom, tmp_path):
    r = run(app, "rt", "dvh", "--rtstruct", phantom.rtstruct, "--rtdose", phantom.rtdose, "--roi", "Liver")
    assert r.exit_code == 1 and "rtstruct.dcm: no ROI 'Liver'" in r.output
    r = run(app, "rt", "dvh", "--rtstruct", phantom.rtstruct, "--rtdose", phantom.rtstruct)
    assert r.exit_code == 1 and "rtstruct.dcm: not an RTDOSE object" in r.output
    r = run(app, "rt", "dvh", "--rtstruct", phantom.rtstruct, "--rtdose", phantom.rtdose, "--roi", "marker")
    assert r.exit_code == 1 and "ROI 4 'marker': no closed contours" in r.output
    r = run(app, "rt", "dvh", "--rtstruct", tmp_path / "missing.dcm", "--rtdose", phantom.rtdose)
    assert r.exit_code == 1 and "missing.dcm: no such file" in r.output
    r = run(app, "rt", "dvh", "--rtstruct", phantom.rtstruct, "--rtdose", phantom.rtdose, "--out", tmp_path / "x.txt")
    assert r.exit_code == 2
