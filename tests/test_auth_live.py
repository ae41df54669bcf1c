"""Logins on a real ``hounsfield serve`` (issue 12): users made with the CLI, the login form and its cookies,
CSRF, logout, session expiry, failed-login throttling, HTTP Basic and tokens with dicomweb-client, and the
refusal to serve beyond loopback without an admin."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

import pytest
import requests
from pydicom.uid import generate_uid
from sqlalchemy import create_engine, text

from factories import ct_dataset, encode
from support import Server, free_port
from support import hounsfield as run_hounsfield

PASSWORD = "correct horse battery"


def hounsfield(server: Server, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    proc = run_hounsfield(*args, *server.args(), input=stdin)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("logins") / "data",
                 config='http_auth = "on"\nlogin_max_failures = 3\nlogin_lockout_seconds = 600\n')
    srv.data_dir.mkdir(parents=True)
    for name, role in (("root", "admin"), ("tech", "technologist"), ("reader", "viewer"), ("planner", "scheduler")):
        hounsfield(srv, "user", "add", name, "--role", role, "--password-stdin", stdin=PASSWORD + "\n")
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def login(server: Server, name: str, password: str = PASSWORD, **form: str) -> requests.Session:
    s = requests.Session()
    r = s.post(f"{server.url}/login", data={"username": name, "password": password, **form},
               allow_redirects=False, timeout=30)
    assert r.status_code == 303, r.text
    return s


def test_the_cli_manages_users_and_prints_a_working_token_last(server: Server) -> None:
    listed = hounsfield(server, "user", "list").stdout
    for name, role in (("root", "admin"), ("tech", "technologist"), ("reader", "viewer")):
        assert any(name in line and role in line for line in listed.splitlines()), listed
    printed = hounsfield(server, "user", "token", "reader", "--label", "script").stdout.strip().splitlines()
    token, token_id = printed[-1], printed[0].split()[1]
    assert token.startswith("hf_") and len(token) > 40
    auth = {"Authorization": f"Bearer {token}"}
    assert requests.get(f"{server.url}/api/studies", headers=auth, timeout=30).status_code == 200
    assert requests.delete(f"{server.url}/api/studies/1.2.3", headers=auth, timeout=30).status_code == 403
    assert "script" in hounsfield(server, "user", "tokens", "reader").stdout
    hounsfield(server, "user", "revoke", token_id)
    assert requests.get(f"{server.url}/api/studies", headers=auth, timeout=30).status_code == 401
    for bad, why in ((("user", "add", "x y", "--role", "viewer", "--password-stdin"), "user name"),
                     (("user", "add", "newbie", "--role", "god", "--password-stdin"), "unknown role"),
                     (("user", "add", "root", "--role", "viewer", "--password-stdin"), "exists already"),
                     (("user", "passwd", "nobody", "--password-stdin"), "no user")):
        proc = hounsfield(server, *bad, stdin=PASSWORD, check=False)
        last = proc.stderr.strip().splitlines()[-1]  # (after the note naming the data directory)
        assert proc.returncode == 1 and last.startswith("error: ") and why in last, proc.stderr
    short = hounsfield(server, "user", "add", "newbie", "--role", "viewer", "--password-stdin", stdin="short",
                       check=False)
    assert short.returncode == 1 and "at least 8 characters" in short.stderr


def test_a_login_sets_strict_cookies_and_state_changes_need_the_csrf_token(server: Server) -> None:
    s = requests.Session()
    r = s.post(f"{server.url}/login", data={"username": "tech", "password": PASSWORD, "next": "/worklist"},
               allow_redirects=False, timeout=30)
    assert r.status_code == 303 and r.headers["location"] == "/worklist"
    cookies = {c.split("=", 1)[0]: c for c in r.raw.headers.getlist("set-cookie")}
    session, csrf = cookies["hf_session"].lower(), cookies["hf_csrf"].lower()
    assert "httponly" in session and "samesite=strict" in session and "path=/" in session
    assert "httponly" not in csrf and "samesite=strict" in csrf
    assert "secure" not in session  # plain HTTP here; tests/test_tls.py sees Secure under HTTPS
    me = s.get(f"{server.url}/api/me", timeout=30).json()
    assert me["name"] == "tech" and me["role"] == "technologist" and "store" in me["permissions"]
    body = encode(ct_dataset())
    plain = s.post(f"{server.url}/api/upload", files={"f": ("a.dcm", body)}, timeout=30)
    assert plain.status_code == 403 and plain.json()["error"] == "CSRFTokenMissing"
    wrong = s.post(f"{server.url}/api/upload", files={"f": ("a.dcm", body)}, headers={"X-CSRF-Token": "nope"},
                   timeout=30)
    assert wrong.status_code == 403
    ok = s.post(f"{server.url}/api/upload", files={"f": ("a.dcm", body)},
                headers={"X-CSRF-Token": s.cookies["hf_csrf"]}, timeout=30)
    assert ok.status_code == 200 and ok.json()["stored"] == 1, ok.text


def test_logout_ends_the_session_on_the_server(server: Server) -> None:
    s = login(server, "reader")
    cookie = s.cookies["hf_session"]
    assert s.get(f"{server.url}/api/studies", timeout=30).status_code == 200
    r = s.post(f"{server.url}/logout", allow_redirects=False, timeout=30)
    assert r.status_code == 303 and r.headers["location"] == "/login"
    replay = requests.get(f"{server.url}/api/studies", cookies={"hf_session": cookie}, timeout=30)
    assert replay.status_code == 401  # the cookie kept by an attacker is worth nothing now


def test_an_expired_session_is_refused_and_sends_the_browser_to_the_login_form(server: Server) -> None:
    s = login(server, "reader")
    engine = create_engine(f"sqlite:///{server.data_dir / 'index.sqlite'}")
    with engine.begin() as conn:  # the session's expiry, as the clock would have reached it
        conn.execute(text("UPDATE web_sessions SET expires_at = :t WHERE user_fk = "
                          "(SELECT id FROM users WHERE name = 'reader')"),
                     {"t": datetime.now(timezone.utc) - timedelta(seconds=1)})
    engine.dispose()
    assert s.get(f"{server.url}/api/studies", timeout=30).status_code == 401
    page = s.get(f"{server.url}/ui/", headers={"Accept": "text/html"}, allow_redirects=False, timeout=30)
    assert page.status_code == 303 and page.headers["location"] == "/login?next=%2Fui%2F"


def test_a_password_change_ends_every_session_of_the_user(server: Server) -> None:
    hounsfield(server, "user", "add", "changer", "--role", "viewer", "--password-stdin", stdin=PASSWORD)
    s = login(server, "changer")
    hounsfield(server, "user", "passwd", "changer", "--password-stdin", stdin="another long password")
    assert s.get(f"{server.url}/api/studies", timeout=30).status_code == 401
    login(server, "changer", "another long password")


def test_failed_logins_are_throttled_per_user_name(server: Server) -> None:
    hounsfield(server, "user", "add", "target", "--role", "viewer", "--password-stdin", stdin=PASSWORD)
    for _ in range(3):
        r = requests.post(f"{server.url}/login", data={"username": "target", "password": "guess guess"},
                          allow_redirects=False, timeout=30)
        assert r.status_code == 401 and "Wrong user name or password" in r.text
    locked = requests.post(f"{server.url}/login", data={"username": "target", "password": PASSWORD},
                           allow_redirects=False, timeout=30)
    assert locked.status_code == 429 and int(locked.headers["retry-after"]) > 0
    assert "Too many failed logins" in locked.text
    login(server, "reader")  # another user from the same address is not locked out (the address's limit is higher)


def test_the_login_page_redirects_only_within_this_server(server: Server) -> None:
    for target, where in (("//evil.example/x", "/ui/"), ("https://evil.example/", "/ui/"), ("/ui/?study=1", "/ui/?study=1")):
        s = requests.Session()
        r = s.post(f"{server.url}/login", data={"username": "root", "password": PASSWORD, "next": target},
                   allow_redirects=False, timeout=30)
        assert r.status_code == 303 and r.headers["location"] == where, target
    planner = requests.Session().post(f"{server.url}/login", data={"username": "planner", "password": PASSWORD},
                                      allow_redirects=False, timeout=30)
    assert planner.headers["location"] == "/worklist"  # a scheduler may not read studies: the worklist first


def test_dicomweb_client_with_basic_and_with_a_token(server: Server) -> None:
    from dicomweb_client.api import DICOMwebClient
    from requests.auth import HTTPBasicAuth

    ds = ct_dataset()
    basic = requests.Session()
    basic.auth = HTTPBasicAuth("tech", PASSWORD)
    client = DICOMwebClient(f"{server.url}/dicom-web", session=basic)
    client.store_instances([ds])
    found = client.search_for_studies(search_filters={"StudyInstanceUID": ds.StudyInstanceUID})
    assert [f["0020000D"]["Value"][0] for f in found] == [ds.StudyInstanceUID]
    token = hounsfield(server, "user", "token", "reader").stdout.strip().splitlines()[-1]
    bearer = DICOMwebClient(f"{server.url}/dicom-web", headers={"Authorization": f"Bearer {token}"})
    meta = bearer.retrieve_instance_metadata(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    assert meta["00080018"]["Value"] == [ds.SOPInstanceUID]
    with pytest.raises(requests.HTTPError) as refused:
        bearer.store_instances([ct_dataset()])  # a viewer may not store
    assert refused.value.response.status_code == 403
    anonymous = DICOMwebClient(f"{server.url}/dicom-web")
    with pytest.raises(requests.HTTPError) as unauthorised:
        anonymous.search_for_studies()
    assert unauthorised.value.response.status_code == 401


def _serve(tmp_path: Path, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hounsfield", "serve", "--data-dir", str(tmp_path / "d"),
                           "--http-port", str(free_port()), "--dicom-port", str(free_port()), *flags],
                          capture_output=True, text=True, timeout=60)


def test_serve_beyond_loopback_needs_an_enabled_admin(tmp_path: Path) -> None:
    srv = Server(tmp_path / "d")
    srv.data_dir.mkdir()
    hounsfield(srv, "user", "add", "someone", "--role", "viewer", "--password-stdin", stdin=PASSWORD)
    refused = _serve(tmp_path, "--http-host", "0.0.0.0")
    assert refused.returncode == 1 and "no admin user" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    hounsfield(srv, "user", "add", "boss", "--role", "admin", "--password-stdin", stdin=PASSWORD)
    hounsfield(srv, "user", "disable", "boss")
    assert "no admin user" in _serve(tmp_path, "--http-host", "0.0.0.0").stderr  # a disabled one counts not


def test_a_users_day_over_http_leaves_exactly_the_expected_audit_rows(server: Server) -> None:
    """The web half of the scripted day (tests/test_audit.py has the DICOM half): a login, a search, a study
    viewed (twice: one row), downloaded, a worklist item scheduled, a delete, a refusal, a logout."""
    hounsfield(server, "user", "add", "dayuser", "--role", "admin", "--password-stdin", stdin=PASSWORD)
    ds = ct_dataset(PatientID="AUDITDAY", PatientName="AUDIT^DAY", StudyInstanceUID=generate_uid(),
                    SeriesInstanceUID=generate_uid())  # its own study: ct_dataset keeps the bundled file's
    study, series = ds.StudyInstanceUID, ds.SeriesInstanceUID
    root = requests.Session()
    root.auth = ("root", PASSWORD)
    assert root.post(f"{server.url}/api/upload", files={"f": ("a.dcm", encode(ds))}, timeout=30).status_code == 200
    deadline = time.monotonic() + 60  # indexed in the background: until QIDO-RS answers with it
    while root.get(f"{server.url}/dicom-web/studies", params={"PatientID": "AUDITDAY"}, timeout=30).status_code != 200:
        assert time.monotonic() < deadline, "the uploaded study was never indexed"
        time.sleep(0.05)
    s = login(server, "dayuser")
    csrf = {"X-CSRF-Token": s.cookies["hf_csrf"]}
    assert s.get(f"{server.url}/dicom-web/studies", params={"PatientID": "AUDITDAY"}, timeout=30).json()
    for _ in range(2):  # the viewer opens the series twice: one "viewed"
        assert s.get(f"{server.url}/dicom-web/studies/{study}/series/{series}/metadata", timeout=30).status_code == 200
    assert s.get(f"{server.url}/dicom-web/studies/{study}", headers={"Accept": "multipart/related; "
                 "type=\"application/dicom\""}, timeout=30).status_code == 200
    item = s.post(f"{server.url}/api/worklist/items", headers=csrf, timeout=30, json={
        "patient_id": "AUDITDAY", "patient_name": "AUDIT^DAY", "modality": "CT", "station_aet": "CT1",
        "start": "20300101 0900", "accession_number": "AUDITDAY1", "requested_procedure_description": "CT head"})
    assert item.status_code == 201, item.text
    assert s.delete(f"{server.url}/api/studies/{study}", headers=csrf, timeout=30).status_code == 200
    assert s.delete(f"{server.url}/api/studies/{study}", timeout=30).status_code == 403  # no CSRF token
    assert s.post(f"{server.url}/logout", allow_redirects=False, timeout=30).status_code == 303
    rows = root.get(f"{server.url}/api/audit", params={"user": "dayuser", "limit": 100}, timeout=30).json()
    events = sorted(rows["events"], key=lambda e: e["id"])
    got = [(e["action"], e["outcome"], e["study_instance_uid"], e["patient_id"]) for e in events]
    assert got == [
        ("login", "success", "", ""),
        ("query_answered", "success", "", ""),
        ("study_viewed", "success", study, "AUDITDAY"),
        ("study_downloaded", "success", study, "AUDITDAY"),
        ("worklist_item_created", "success", item.json()["fields"]["study_instance_uid"], "AUDITDAY"),
        ("study_deleted", "success", study, "AUDITDAY"),
        ("access_refused", "refused", "", ""),
        ("logout", "success", "", ""),
    ], got
    # where from: every web event names the address (the worklist service is told the user only)
    assert [e["address"] for e in events if e["action"] != "worklist_item_created"] == ["127.0.0.1"] * 7
    assert "PatientID=AUDITDAY" in events[1]["detail"]


def test_no_password_token_or_patient_name_reaches_the_log(server: Server) -> None:
    """Everything the module did went through this server's log at INFO: none of its secrets nor the names of
    its patients are in it (they are in the index and the audit table only)."""
    token = hounsfield(server, "user", "token", "reader").stdout.strip().splitlines()[-1]
    requests.get(f"{server.url}/api/studies", headers={"Authorization": f"Bearer {token}"}, timeout=30)
    requests.get(f"{server.url}/api/studies", headers={"Authorization": "Bearer hf_wrong" + token[8:]}, timeout=30)
    requests.post(f"{server.url}/login", data={"username": "root", "password": "wrong " + PASSWORD}, timeout=30)
    log = server.log_text()
    assert "INFO" in log  # the log is at INFO: what is not here was not said
    for secret in (PASSWORD, token, token[3:], "AUDIT^DAY", "LOGIN^PATIENT"):
        assert secret not in log, secret
