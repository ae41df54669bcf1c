"""The REST API, the settings and the command line, against a real server (SQLite and PostgreSQL)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pydicom
import pytest
import requests

from factories import encode, tiny_ct, write
from hounsfield import config
import support
from support import Server, dcmtk, dcmtk_env, free_port

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def server(shared_server):
    """One server per module and backend: each test looks only at what it stored (its own patients and
    studies) or, for the peers, leaves the list as it found it."""
    return shared_server


def hounsfield(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return support.hounsfield(*args, env=env)


def dataset_bytes(part10: bytes) -> bytes:
    """The encoded dataset after preamble and file meta (the meta is the receiver's own)."""
    meta_end = 132 + 12 + int.from_bytes(part10[140:144], "little")
    return part10[meta_end:]


def load_study(server: Server, tmp_path: Path, patient: str = "REST1", n: int = 3) -> list[Path]:
    files = [write(tiny_ct(patient, f"1.2.9.{len(patient)}.1", f"1.2.9.{len(patient)}.2", i + 1,
                           StudyDescription="REST STUDY"), tmp_path / f"{patient}-{i}.dcm") for i in range(n)]
    proc = subprocess.run([dcmtk("storescu"), "-aec", server.ae_title, "127.0.0.1", str(server.dicom_port),
                           *map(str, files)], capture_output=True, text=True, env=dcmtk_env())
    assert proc.returncode == 0, proc.stderr
    return files


def test_rest_lists_searches_downloads_and_deletes(server: Server, tmp_path: Path) -> None:
    files = load_study(server, tmp_path)
    studies = requests.get(f"{server.url}/api/studies", params={"PatientID": "REST*"}).json()
    assert [(s["PatientID"], s["StudyDescription"], s["NumberOfStudyRelatedInstances"]) for s in studies] == [
        ("REST1", "REST STUDY", 3)]
    study_uid = studies[0]["StudyInstanceUID"]
    assert requests.get(f"{server.url}/api/studies", params={"PatientID": "NOPE"}).json() == []
    series = requests.get(f"{server.url}/api/series", params={"StudyInstanceUID": study_uid}).json()
    assert len(series) == 1 and series[0]["NumberOfSeriesRelatedInstances"] == 3
    instances = requests.get(f"{server.url}/api/instances", params={"StudyInstanceUID": study_uid,
                                                                     "limit": 2, "offset": 1}).json()
    assert [i["InstanceNumber"] for i in instances] == [2, 3]  # paging
    patients = requests.get(f"{server.url}/api/patients/REST1").json()
    assert patients["PatientName"] == "PATIENT^REST1"
    original = pydicom.dcmread(files[0])
    r = requests.get(f"{server.url}/api/instances/{original.SOPInstanceUID}/file")
    assert r.status_code == 200 and r.headers["content-type"] == "application/dicom"
    assert dataset_bytes(r.content) == dataset_bytes(files[0].read_bytes())  # byte for byte as sent
    r = requests.delete(f"{server.url}/api/studies/{study_uid}")
    assert r.json() == {"deleted": study_uid, "instances_removed": 3}
    assert requests.get(f"{server.url}/api/studies/{study_uid}").status_code == 404
    assert requests.delete(f"{server.url}/api/studies/{study_uid}").status_code == 404


def test_rest_rejects_bad_parameters_with_the_field_named(server: Server) -> None:
    r = requests.get(f"{server.url}/api/studies", params={"NotAKeyword": "x"})
    assert r.status_code == 400 and "NotAKeyword" in r.json()["detail"]
    r = requests.get(f"{server.url}/api/studies", params={"limit": 0})
    assert r.status_code == 422 and "limit" in r.json()["fields"][0]
    r = requests.get(f"{server.url}/api/studies", params={"StudyDate": "2024-99"})
    assert r.status_code == 400
    r = requests.put(f"{server.url}/api/peers/x", json={"ae_title": "X", "host": "h"})
    assert r.status_code == 422 and any("port" in f for f in r.json()["fields"])


def test_peers_through_rest(server: Server) -> None:
    body = {"name": "pacs1", "ae_title": "PACS1", "host": "10.0.0.5", "port": 104, "tls": False, "allow": None}
    assert requests.put(f"{server.url}/api/peers/pacs1", json=body).json() == body
    assert requests.get(f"{server.url}/api/peers").json() == [body]
    bad = requests.put(f"{server.url}/api/peers/bad", json={**body, "ae_title": "A\\B"})
    assert bad.status_code == 400 and "ae_title" in bad.json()["detail"]
    assert requests.delete(f"{server.url}/api/peers/pacs1").json() == {"deleted": "pacs1"}
    assert requests.get(f"{server.url}/api/peers").json() == []


def test_openapi_documents_every_route(server: Server) -> None:
    spec = requests.get(f"{server.url}/openapi.json").json()
    for path in ("/api/studies", "/api/studies/{uid}", "/api/instances/{uid}/file", "/api/peers", "/health"):
        assert path in spec["paths"], path
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            assert op.get("description") or op.get("summary"), f"{method.upper()} {path} is undocumented"


def test_health(server: Server) -> None:
    body = requests.get(f"{server.url}/health").json()
    assert body["status"] == "ok" and body["ae_title"] == "HOUNSFIELD" and body["dicom_port"] == server.dicom_port


def test_cli_import_ls_and_client_commands(server: Server, tmp_path: Path, shared_data: Path) -> None:
    src = tmp_path / "src"
    for i in range(2):
        write(tiny_ct("CLI1", "1.2.8.1", "1.2.8.2", i + 1, StudyDescription="CLI STUDY"), src / "a" / f"{i}.dcm")
    (src / "notes.txt").write_text("not dicom")
    (src / "b").mkdir()
    (src / "b" / "trunc.dcm").write_bytes(encode(tiny_ct("CLI1", "1.2.8.1", "1.2.8.2", 9))[:-6])
    out = " ".join(server.cli("import", str(src)).stdout.split())
    assert "imported 4 files: 2 stored; 2 skipped" in out
    assert re.search(r"skipped 1: [^;]*truncated", out) and re.search(r"skipped 1: not a DICOM file.*notes.txt", out)
    again = server.cli("import", str(src))  # while the server runs; a second import keeps the copies
    assert "2 duplicate-kept" in again.stdout
    listing = server.cli("ls").stdout
    assert "CLI1" in listing and "CLI STUDY" in listing
    remote = f"HOUNSFIELD@127.0.0.1:{server.dicom_port}"
    assert "status 0x0000" in hounsfield("echo", "--remote", remote).stdout
    found = hounsfield("find", "--remote", remote, "-k", "PatientID=CLI1", "-k", "StudyDescription", "--json")
    assert found.returncode == 0 and "CLI STUDY" in found.stdout
    out = tmp_path / "got"
    got = hounsfield("get", "--remote", remote, "-k", "StudyInstanceUID=1.2.8.1", "--out", str(out))
    assert got.returncode == 0, got.stderr
    assert sorted(pydicom.dcmread(f).InstanceNumber for f in out.iterdir()) == [1, 2]
    sent = hounsfield("store", "--remote", remote, str(shared_data / "mr" / "MR_small.dcm"))
    assert "sent 1/1" in sent.stdout
    bad = hounsfield("echo", "--remote", "127.0.0.1:1")
    assert bad.returncode == 1 and "Traceback" not in bad.stderr and "not established" in bad.stderr


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    proc = hounsfield("import", str(tmp_path / "missing"), "--data-dir", str(tmp_path / "d"))
    assert proc.returncode == 1 and "no such file or directory" in proc.stderr and "Traceback" not in proc.stderr
    bad_cfg = tmp_path / "bad.toml"
    bad_cfg.write_text("nonsense = 1\n")
    proc = hounsfield("ls", "--config", str(bad_cfg), "--data-dir", str(tmp_path / "d"))
    assert proc.returncode == 2 and "unknown setting" in proc.stderr


def test_a_second_server_on_the_same_dicom_port_is_refused(server: Server, tmp_path: Path) -> None:
    """The DICOM processes share their port (SO_REUSEPORT); another hounsfield must not silently join them."""
    proc = hounsfield("serve", "--data-dir", str(tmp_path / "other"), "--dicom-port", str(server.dicom_port),
                      "--http-port", str(free_port()))
    assert proc.returncode == 1, proc.stderr
    assert f"cannot listen on DICOM port {server.dicom_port}" in proc.stderr and "Traceback" not in proc.stderr


def test_settings_precedence(tmp_path: Path) -> None:
    cfg = tmp_path / "h.toml"
    cfg.write_text('ae_title = "FROMTOML"\ndicom_port = 2000\nhttp_port = 3000\n'
                   '[peers.ct]\nae_title = "CT1"\nhost = "ct.local"\nport = 104\n')
    env = {"HOUNSFIELD_DICOM_PORT": "2001", "HOUNSFIELD_DATA_DIR": str(tmp_path / "env")}
    s = config.load(cfg, environ=env, http_port=3001)
    assert (s.ae_title, s.dicom_port, s.http_port) == ("FROMTOML", 2001, 3001)  # TOML < env < flags
    assert s.data_dir == tmp_path / "env" and s.peers == (config.Peer("ct", "CT1", "ct.local", 104),)
    assert config.load(None, environ={}).ae_title == "HOUNSFIELD"
    with pytest.raises(ValueError, match="duplicate_policy"):
        config.load(None, environ={"HOUNSFIELD_DUPLICATE_POLICY": "maybe"})


def test_every_setting_is_documented() -> None:
    fields = set(config.Settings.__dataclass_fields__) - config.TABLES  # [peers.NAME], [routing.NAME]
    assert fields == {s.name for s in config.SETTINGS}
    readme = (ROOT / "README.md").read_text()
    for s in config.SETTINGS:
        assert f"`{s.name}`" in readme, f"setting {s.name} is not in the README's settings table"
    help_text = hounsfield("serve", "--help").stdout
    for flag in ("--data-dir", "--ae-title", "--dicom-port", "--http-host", "--http-port", "--database-url",
                 "HOUNSFIELD_DATA_DIR"):
        assert flag in help_text
