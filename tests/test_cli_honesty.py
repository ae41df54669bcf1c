"""The command line says what it does and refuses what it would do silently: which data directory a command
uses (and none invented), settings that reach their flags and fail in one line naming the type they need, one
reading path for the imaging commands with one set of messages, options that conflict or would be ignored,
status meanings, ``--version`` and ``delete``.

In-process through Typer's CliRunner (fast on a shared machine); stdout and stderr are asserted separately."""

from __future__ import annotations

import re
import socket
from importlib.metadata import version as installed_version
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT
from PIL import Image
from pydicom.data import get_testdata_file
from typer.main import get_command
from typer.testing import CliRunner

from hounsfield import cli, config
from hounsfield.cli_common import CHOOSE_DATA_DIR, flag_of
from hounsfield.dimse import status
from support import free_port

runner = CliRunner()
CT_SMALL = Path(get_testdata_file("CT_small.dcm"))
CT_SMALL_SOP_UID = "1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322"
CT_SMALL_STUDY_UID = "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322"


def invoke(*args: object, **kwargs):  # noqa: ANN201
    cli._register_plugins()  # the imaging and worklist commands, as ``main`` adds them
    return runner.invoke(cli.app, [str(a) for a in args], **kwargs)


def lines(text: str) -> list[str]:
    return text.strip().splitlines()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A fresh current folder and no HOUNSFIELD_* variables: the defaults apply."""
    import os

    for name in list(os.environ):
        if name.startswith("HOUNSFIELD_") and name != "HOUNSFIELD_SHARED_DATA":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


# ---- 1. the data directory ----------------------------------------------------------------------------------

def test_reading_commands_refuse_a_missing_data_dir_and_create_nothing(clean_env: Path) -> None:
    default = clean_env / "hounsfield-data"
    expected = f"error: no data directory at {default}: {CHOOSE_DATA_DIR} (serve and import create it)"
    for args in (["ls"], ["quarantine"], ["delete", "1.2.3", "--yes"], ["worklist", "list"]):
        result = invoke(*args)
        assert result.exit_code == 1, (args, result.output)
        assert lines(result.stderr) == [expected], args
        assert result.stdout == ""
    other = clean_env / "elsewhere"
    result = invoke("ls", env={"HOUNSFIELD_DATA_DIR": str(other)})
    assert result.exit_code == 1 and lines(result.stderr) == [
        f"error: no data directory at {other}: {CHOOSE_DATA_DIR} (serve and import create it)"]
    assert not default.exists() and not other.exists()


def test_archive_commands_name_their_data_dir(clean_env: Path) -> None:
    data = clean_env / "d"
    imported = invoke("import", CT_SMALL, "--data-dir", data)
    assert imported.exit_code == 0, imported.output
    assert lines(imported.stderr) == [f"created data directory {data}"]
    assert "imported 1 files: 1 stored; 0 skipped" in imported.stdout
    listing = invoke("ls", "--data-dir", data)
    assert listing.exit_code == 0, listing.output
    assert lines(listing.stderr) == [f"data directory {data}"]
    assert "1 studies in" in listing.stdout and "1CT1" in listing.stdout  # the title names it too (may wrap)


def test_echo_opens_an_archive_only_to_look_a_name_up(clean_env: Path) -> None:
    by_address = invoke("echo", "--remote", "127.0.0.1:1")
    assert by_address.exit_code == 1 and "not established" in by_address.stderr
    by_name = invoke("echo", "--remote", "pacs1")
    assert by_name.exit_code == 1
    assert lines(by_name.stderr) == [
        f"error: 'pacs1' is neither a node of the config file nor [AET@]HOST:PORT, and there is no data "
        f"directory at {clean_env / 'hounsfield-data'} whose registry could name it ({CHOOSE_DATA_DIR})"]
    assert list(clean_env.iterdir()) == []  # no ./hounsfield-data


# ---- 2. settings: README table, flags, environment, types; serve's ports -------------------------------------

def _readme_settings() -> list[dict[str, str]]:
    text = (ROOT / "README.md").read_text()
    table = text[text.index("| setting | flag | environment | default | meaning |"):]
    rows = []
    for line in table.splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        rows.append(dict(zip(("setting", "flag", "environment", "default", "meaning"),
                             [c.strip("`") for c in cells[:4]] + cells[4:5])))
    return rows


SAMPLES = {"boolean": ("false", False), "integer": ("4321", 4321), "text": ("sample", "sample")}


def test_every_readme_setting_has_its_flag_and_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = _readme_settings()
    by_name = {s.name: s for s in config.SETTINGS}
    assert [r["setting"] for r in rows] == [s.name for s in config.SETTINGS]  # all of them, in the same order
    serve = get_command(cli.app).commands["serve"]
    options = {opt: p for p in serve.params for opt in p.opts}
    seen: dict[str, object] = {}

    def fake_load(config_file, **flags):  # noqa: ANN001, ANN202 - records what the flags hand to config.load
        seen.update(flags)
        raise ValueError("stop")

    for row in rows:
        s = by_name[row["setting"]]
        assert row["flag"] == flag_of(s.name) and row["flag"] in options, row
        assert options[row["flag"]].name == s.name, row
        assert row["environment"] == config.env_var(s.name), row
        kind = config.kind_of(s)
        if s.name != "database_url":  # README: "(SQLite in the data dir)"; the setting: empty
            assert row["default"] == (str(s.default).lower() if kind == "boolean" else str(s.default)), row
        given, value = SAMPLES[kind]
        if s.name in config.CHOICES:
            given = value = config.CHOICES[s.name][-1]
        if s.name == "log_level":
            given = value = "DEBUG"
        if s.name == "unknown_ae_services":  # a list of DICOM service names (access.SERVICES)
            given = value = "echo"
        loaded = config.load(None, environ={row["environment"]: given})
        assert getattr(loaded, s.name) == (Path(value) if s.name == "data_dir" else value), row
        monkeypatch.setattr(config, "load", fake_load)
        seen.clear()
        result = invoke("serve", row["flag"], given)
        monkeypatch.undo()
        assert result.exit_code == 2 and seen.get(s.name) == given, (row, result.output)


def test_dicom_host_reaches_serve(clean_env: Path) -> None:
    port = free_port()
    result = invoke("serve", "--dicom-host", "no-such-host.invalid", "--dicom-port", port,
                    "--http-port", free_port())
    assert result.exit_code == 1, result.output
    assert re.fullmatch(rf"error: cannot listen on DICOM port {port} of no-such-host\.invalid: .+",
                        result.stderr.strip())
    assert result.stdout == "" and list(clean_env.iterdir()) == []


def test_serve_refuses_a_taken_http_port_before_any_banner(clean_env: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = invoke("serve", "--data-dir", clean_env / "d", "--http-port", port, "--dicom-port", free_port())
    assert result.exit_code == 1
    assert lines(result.stderr) == [f"error: cannot listen on HTTP 127.0.0.1:{port}: Address already in use"]
    assert result.stdout == ""  # no "hounsfield: DICOM … HTTP …" banner
    assert not (clean_env / "d").exists()


def test_a_value_of_the_wrong_type_names_the_setting_and_the_type(clean_env: Path) -> None:
    toml = clean_env / "h.toml"
    toml.write_text('dicom_port = "abc"\n')
    result = invoke("ls", "--config", toml)
    assert result.exit_code == 2
    assert lines(result.stderr) == [f"error: setting dicom_port (in {toml}) must be an integer, not 'abc'"]
    result = invoke("ls", env={"HOUNSFIELD_DICOM_PORT": "abc"})
    assert result.exit_code == 2
    assert lines(result.stderr) == ["error: setting dicom_port (from HOUNSFIELD_DICOM_PORT) must be an integer, "
                                    "not 'abc'"]
    result = invoke("ls", env={"HOUNSFIELD_FSYNC": "maybe"})
    assert result.exit_code == 2
    assert lines(result.stderr) == ["error: setting fsync (from HOUNSFIELD_FSYNC) must be a boolean (true or "
                                    "false), not 'maybe'"]
    result = invoke("serve", "--http-port", "eighty")
    assert result.exit_code == 2
    assert lines(result.stderr) == ["error: setting http_port (--http-port) must be an integer, not 'eighty'"]


# ---- 3. show: display, ignored and conflicting options, output formats -----------------------------------------

def test_show_without_display_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    result = invoke("show", CT_SMALL)
    assert result.exit_code == 1
    assert lines(result.stderr) == [f"error: cannot show {CT_SMALL}: there is no display (neither DISPLAY nor "
                                    "WAYLAND_DISPLAY is set); write the image to a file with --out FILE.png"]


def test_out_writes_the_format_its_extension_names(tmp_path: Path) -> None:
    for name, fmt in (("x.png", "PNG"), ("x.jpg", "JPEG"), ("x.jpeg", "JPEG"), ("x.tif", "TIFF"),
                      ("x.TIFF", "TIFF")):
        result = invoke("show", CT_SMALL, "--out", tmp_path / name, "--window", "40", "400")
        assert result.exit_code == 0, result.output
        with Image.open(tmp_path / name) as image:
            assert image.format == fmt and image.size == (128, 128), name
    png = np.asarray(Image.open(tmp_path / "x.png"))
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "x.tif")), png)  # lossless, same pixels
    result = invoke("show", CT_SMALL, "--out", tmp_path / "x.gif")
    assert result.exit_code == 2
    assert lines(result.stderr) == [f"error: --out {tmp_path / 'x.gif'}: unknown extension .gif (write .png, .jpg, "
                                    ".jpeg, .tif, .tiff)"]
    assert not (tmp_path / "x.gif").exists()


def test_conflicting_or_ignored_options_are_usage_errors(shared_data: Path, tmp_path: Path) -> None:
    series = shared_data / "ct" / "philips_head_phantom_5mm"
    out = tmp_path / "x.png"
    conflict = "error: --preset lung and --window 40 400 both choose the window: give one"
    for args in (["show", CT_SMALL, "--out", out], ["render", CT_SMALL, "--out-dir", tmp_path / "r"],
                 ["export", series, "--to", "png", "--out", tmp_path / "p"]):
        result = invoke(*args, "--preset", "lung", "--window", "40", "400")
        assert result.exit_code == 2 and lines(result.stderr) == [conflict], args
    for flag in ("--annotate", "--overlays"):
        result = invoke("show", series, flag, "--out", out)
        assert result.exit_code == 2
        assert lines(result.stderr) == [f"error: {flag} works on one file, not on a series folder ({series})"]
    result = invoke("export", series, "--to", "nifti", "--out", tmp_path / "v.nii.gz", "--preset", "lung")
    assert result.exit_code == 2
    assert lines(result.stderr) == ["error: --preset and --window window the PNG slices; --to nifti writes the "
                                    "values unwindowed"]
    result = invoke("export", series, "--to", "nifti", "--out", tmp_path / "v.npz")
    assert result.exit_code == 2 and lines(result.stderr) == [
        f"error: --out {tmp_path / 'v.npz'}: --to nifti writes .nii or .nii.gz"]
    assert not out.exists() and not (tmp_path / "r").exists() and not (tmp_path / "p").exists()


# ---- 4. one reading path, one set of messages ------------------------------------------------------------------

def test_a_text_file_is_not_a_dicom_file_for_every_command(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("hello, these are notes\n")
    expected = f"{notes}: not a DICOM file"
    for args in (["show", notes, "--out", tmp_path / "x.png"], ["dump", notes],
                 ["export", notes, "--to", "npz", "--out", tmp_path / "v.npz"]):
        result = invoke(*args)
        assert result.exit_code == 1, args
        assert lines(result.stderr) == [f"error: {expected}"], args
        assert result.stdout == "", args  # dump shows no invented element
    result = invoke("render", notes, "--out-dir", tmp_path / "r")
    assert result.exit_code == 1
    assert lines(result.stderr) == [f"rendered 0 of 1 file(s) into {tmp_path / 'r'}", f"failed: {expected}"]


def test_dump_warns_about_a_truncated_file(shared_data: Path) -> None:
    path = shared_data / "malformed" / "rtplan_truncated.dcm"
    result = invoke("dump", path)
    assert result.exit_code == 0
    assert "RTPlanLabel" in result.stdout
    assert lines(result.stderr) == [
        f"warning: {path}: truncated DICOM file (element (FFFE,E000) declares 976 bytes but only 711 were "
        "received): the listing shows what could be read"]
    assert invoke("dump", CT_SMALL).stderr == ""  # a whole file: no warning


def test_out_into_a_missing_folder_is_one_line(tmp_path: Path) -> None:
    target = tmp_path / "nonexistent" / "dir" / "x.png"
    result = invoke("show", CT_SMALL, "--out", target)
    assert result.exit_code == 1
    assert lines(result.stderr) == [f"error: {target}: cannot write (no such directory {target.parent})"]


def test_render_skips_what_is_not_dicom_and_keeps_codecs_quiet(shared_data: Path, tmp_path: Path,
                                                                capfd: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "CT_small.dcm").symlink_to(shared_data / "ct" / "CT_small.dcm")
    (folder / "bad.dcm").symlink_to(shared_data / "malformed" / "JPEG2000-embedded-sequence-delimiter.dcm")
    (folder / "MANIFEST.md").symlink_to(shared_data / "MANIFEST.md")
    capfd.readouterr()
    result = invoke("render", folder, "--out-dir", tmp_path / "out")
    leaked = capfd.readouterr()
    assert result.exit_code == 1
    assert lines(result.stderr) == [
        f"skipped 1 file(s) that are not DICOM (e.g. {folder / 'MANIFEST.md'})",
        f"rendered 1 of 2 file(s) into {tmp_path / 'out'}",
        f"failed: {folder / 'bad.dcm'}: cannot decode pixel data (corrupt or unsupported JPEG 2000 Image "
        "Compression data)"]
    assert leaked.out == "" and leaked.err == ""  # nothing from OpenJPEG on the terminal
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["CT_small.png"]


def test_dump_piped_never_folds_a_uid() -> None:
    result = invoke("dump", CT_SMALL)
    assert result.exit_code == 0
    rows = [line for line in result.stdout.splitlines() if "(0008,0018)" in line]
    assert len(rows) == 1 and CT_SMALL_SOP_UID in rows[0]
    assert all(len(line) < 400 for line in result.stdout.splitlines())  # as wide as the rows, no wider


# ---- 5. RT objects, SOP class names, statuses, --version, delete ----------------------------------------------

def test_export_of_an_rt_study_skips_what_is_not_a_slice(shared_data: Path, tmp_path: Path) -> None:
    study = shared_data / "rt" / "dicompyler_breast"
    out = tmp_path / "v.npz"
    result = invoke("export", study, "--to", "npz", "--out", out)
    assert result.exit_code == 0, result.output
    assert lines(result.stderr) == [
        f"skipped {study / 'rtdose.dcm'}: RT Dose Storage with 98 frames, not a single-frame grey slice of a "
        "series",
        f"skipped {study / 'rtplan.dcm'}: no pixel data (RT Plan Storage, not an image)",
        f"skipped {study / 'rtss.dcm'}: no pixel data (RT Structure Set Storage, not an image)",
        f"wrote {out} (1 slices, spacing 3 x 1.07422 x 1.07422 mm)"]
    assert np.load(out)["volume"].shape == (1, 512, 512)


def test_show_names_the_sop_class(shared_data: Path, tmp_path: Path) -> None:
    path = shared_data / "rt" / "dicompyler_breast" / "rtss.dcm"
    result = invoke("show", path, "--out", tmp_path / "x.png")
    assert result.exit_code == 1
    assert lines(result.stderr) == [f"error: {path}: no pixel data (RT Structure Set Storage, not an image)"]


def test_status_meanings_one_table_per_service() -> None:
    assert status.meaning("C-MOVE", 0xA801) == "Refused: move destination unknown to the called node"
    assert status.meaning("C-GET", 0xA801) == "Failure, a status C-GET does not define"
    assert status.meaning("C-STORE", 0xA700) == "Refused: out of resources"
    assert status.meaning("C-FIND", 0xC001) == "Failed: unable to process"
    assert status.meaning("C-ECHO", 0x0122) == "Refused: SOP Class not supported"
    assert set(status.MEANINGS) == {"C-ECHO", "C-STORE", "C-FIND", "C-MOVE", "C-GET"}


def test_move_to_an_unknown_destination_says_what_the_status_means(clean_env: Path) -> None:
    from pynetdicom import AE, evt
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove

    def handle_move(event):  # noqa: ANN001, ANN202 - a node that knows no destination at all
        yield None, None

    scp = AE(ae_title="MOVESCP")
    scp.add_supported_context(StudyRootQueryRetrieveInformationModelMove)
    port = free_port()
    server = scp.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_MOVE, handle_move)])
    try:
        result = invoke("move", "--remote", f"MOVESCP@127.0.0.1:{port}", "--dest", "UNKNOWN",
                        "-k", "StudyInstanceUID=1.2.3")
    finally:
        server.shutdown()
    assert result.exit_code == 1, result.output
    assert lines(result.stdout) == ["C-MOVE status 0xA801 (Refused: move destination unknown to the called node): "
                                    "0 completed, 0 failed, 0 warning"]
    assert list(clean_env.iterdir()) == []


def test_version() -> None:
    result = invoke("--version")
    assert result.exit_code == 0 and result.stdout == f"hounsfield {installed_version('hounsfield')}\n"


def test_delete_a_study_asks_first(clean_env: Path) -> None:
    data = clean_env / "d"
    assert invoke("import", CT_SMALL, "--data-dir", data).exit_code == 0
    declined = invoke("delete", CT_SMALL_STUDY_UID, "--data-dir", data, input="n\n")
    assert declined.exit_code == 1
    assert f"Delete study {CT_SMALL_STUDY_UID} (1CT1 CompressedSamples^CT1" in declined.stdout
    assert lines(declined.stderr)[-1] == "error: nothing deleted (--yes deletes without asking)"
    assert "1 studies in" in invoke("ls", "--data-dir", data).stdout
    deleted = invoke("delete", CT_SMALL_STUDY_UID, "--data-dir", data, "--yes")
    assert deleted.exit_code == 0, deleted.output
    assert lines(deleted.stdout) == [f"deleted study {CT_SMALL_STUDY_UID}: 1 instances removed"]
    assert "0 studies in" in invoke("ls", "--data-dir", data).stdout
    again = invoke("delete", CT_SMALL_STUDY_UID, "--data-dir", data, "--yes")
    assert again.exit_code == 1
    assert lines(again.stderr)[-1] == f"error: no study {CT_SMALL_STUDY_UID} in {data}"
    assert not list((data / "files").rglob("*.dcm"))


def test_a_command_closes_the_archive_it_opened_before_it_returns(clean_env: Path) -> None:
    """What a command recorded is in the audit trail when it returns, not when its interpreter exits (its exit
    hook): in here no interpreter exits, as in any program that runs commands in-process."""
    from datetime import date

    from hounsfield import cli_common
    from hounsfield.audit.actions import WORKLIST_ITEM_CREATED
    from hounsfield.pacs import Pacs

    data = clean_env / "d"
    added = invoke("worklist", "add", "--patient-id", "CLOSED1", "--patient-name", "CLOSED^ONE", "--modality", "CT",
                   "--station-aet", "CT1", "--start", f"{date.today().isoformat()} 09:30", "--data-dir", data)
    assert added.exit_code == 0, added.output
    assert cli_common._opened == []
    pacs = Pacs(config.load(None, environ={}, data_dir=data))
    try:
        assert [e["patient_id"] for e in pacs.audit.search(action=WORKLIST_ITEM_CREATED)] == ["CLOSED1"]
    finally:
        pacs.close()
