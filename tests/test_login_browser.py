"""Logins in real headless Chromium (issue 12): an anonymous visit goes to the login form and back where it
was going; the header names the user; the pages' own state-changing requests carry the CSRF token while a
request without it is refused; an expired session sends the page back to the login form; Log out ends it.
Waits are for events on the page (URLs, selectors, responses), never for time."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, Iterator

import pytest
from sqlalchemy import create_engine, text

from browser import chromium_page
from factories import ct_dataset, encode
from support import Server, hounsfield

pytestmark = pytest.mark.browser
WAIT_MS = 120_000
PASSWORD = "a browser's password"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Any, list[str], Any]]:
    srv = Server(tmp_path_factory.mktemp("login-ui") / "data", config='http_auth = "on"\n')
    srv.data_dir.mkdir(parents=True)
    for name, role in (("boss", "admin"), ("doc", "physician")):  # serve needs an admin with logins on
        added = hounsfield("user", "add", name, "--role", role, "--password-stdin", *srv.args(), input=PASSWORD)
        assert added.returncode == 0, added.stderr
    srv.start()
    ds = ct_dataset(PatientName="LOGIN^PATIENT", PatientID="LOGIN1")
    token = hounsfield("user", "add", "up", "--role", "technologist", "--password-stdin", *srv.args(),
                       input=PASSWORD)
    assert token.returncode == 0, token.stderr
    import requests

    r = requests.post(f"{srv.url}/api/upload", files={"f": ("a.dcm", encode(ds))}, auth=("up", PASSWORD), timeout=60)
    assert r.status_code == 200, r.text
    try:
        for page, errors in chromium_page():
            yield srv, page, errors, ds
    finally:
        srv.stop()


def log_in(page: Any, server: Server, target: str = "/ui/") -> None:
    page.goto(f"{server.url}{target}")
    page.wait_for_url("**/login?next=**", timeout=WAIT_MS)
    page.fill("#username", "doc")
    page.fill("#password", PASSWORD)
    page.click("#login-submit")
    page.wait_for_url(f"{server.url}{target}", timeout=WAIT_MS)


def test_an_anonymous_visit_logs_in_and_comes_back_with_the_user_named(site) -> None:
    server, page, errors, ds = site
    log_in(page, server)
    page.wait_for_selector("#user-menu:not([hidden])", timeout=WAIT_MS)
    assert page.inner_text("#user-name") == "doc (physician)"
    # what a physician may not use is not offered (the server refuses it anyway: tests/test_auth_routes.py)
    assert page.is_hidden("#upload-form") and page.is_hidden("#nav-audit")
    assert page.get_attribute("#delete-button", "hidden") is not None
    assert page.get_attribute("#send-button", "hidden") is not None
    assert page.is_visible("#nav-worklist") and page.is_visible("#nav-studies")
    page.wait_for_selector(f'tr.study[data-uid="{ds.StudyInstanceUID}"]', timeout=WAIT_MS)
    cookies = {c["name"]: c for c in page.context.cookies()}
    assert cookies["hf_session"]["httpOnly"] and cookies["hf_session"]["sameSite"] == "Strict"
    assert page.evaluate("() => document.cookie.includes('hf_session')") is False  # no script reads it
    assert errors == []


def test_a_wrong_password_says_so_on_the_form(site) -> None:
    server, page, _, _ = site
    context = page.context.browser.new_context()
    other = context.new_page()
    other.goto(f"{server.url}/login")
    other.fill("#username", "doc")
    other.fill("#password", "not the password")
    with other.expect_response(f"{server.url}/login") as answer:
        other.click("#login-submit")
    assert answer.value.status == 401
    assert other.inner_text(".login-error") == "Wrong user name or password."
    context.close()


def test_the_pages_requests_carry_the_csrf_token_and_others_are_refused(site) -> None:
    server, page, _, _ = site
    if "/login" in page.url or not page.url.startswith(server.url):
        log_in(page, server)
    # through the page's fetch (js/session.js adds the token): refused for the role, not for CSRF
    wrapped = page.evaluate("""async () => { const r = await fetch('/api/studies/1.2.3', {method: 'DELETE'});
                                             return [r.status, (await r.json()).error]; }""")
    assert wrapped == [403, "Forbidden"]  # a physician may not delete
    # a request that does not carry it (what a forged form or another script would send): refused
    bare = page.evaluate("""() => new Promise(done => { const x = new XMLHttpRequest();
        x.open('POST', '/ui/api/peers/nosuch/echo'); x.onload = () => done([x.status, JSON.parse(x.responseText).error]);
        x.send(); })""")
    assert bare[0] == 403 and bare[1] in ("CSRFTokenMissing", "Forbidden")
    token = page.evaluate("""async () => { const r = await fetch('/api/worklist/items', {method: 'POST',
        headers: {'Content-Type': 'application/json'}, body: '{}'}); return r.status; }""")
    assert token == 403  # a physician may read the worklist, not schedule: the permission, after the token


def test_an_expired_session_sends_the_page_to_the_login_form(site) -> None:
    server, page, _, _ = site
    if "/login" in page.url:
        log_in(page, server)
    engine = create_engine(f"sqlite:///{server.data_dir / 'index.sqlite'}")
    with engine.begin() as conn:
        conn.execute(text("UPDATE web_sessions SET expires_at = :t"),
                     {"t": datetime.now(timezone.utc) - timedelta(seconds=1)})
    engine.dispose()
    page.click("#search-button")  # the next request the page makes
    page.wait_for_url("**/login?next=%2Fui%2F**", timeout=WAIT_MS)
    log_in(page, server)


def test_log_out_ends_the_session(site) -> None:
    server, page, _, _ = site
    if "/login" in page.url:
        log_in(page, server)
    page.wait_for_selector("#user-menu:not([hidden])", timeout=WAIT_MS)
    page.click("#logout")
    page.wait_for_url(f"{server.url}/login", timeout=WAIT_MS)
    page.goto(f"{server.url}/worklist")
    page.wait_for_url("**/login?next=%2Fworklist", timeout=WAIT_MS)
