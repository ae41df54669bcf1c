"""HTTP hardening without user accounts (issue 12, first slice): CORS off unless origins are named, no
state-changing request from a page of another origin, the Host header checked (DNS rebinding), security
headers and a Content-Security-Policy the viewer and the worklist pass, bounded request bodies, and no HTTP
beyond loopback unless asked for.

In process through FastAPI's TestClient (and an ASGI driver for bodies sent in chunks) where the browser is
not the point; in real headless Chromium against a real ``hounsfield serve`` where it is: a page of another
origin (a local http.server on another port) reading ``/dicom-web`` and posting an upload, a name that
resolves to this machine (Chromium's host resolver rules) and the pages' console. Memory is measured on a real
server's peak RSS (VmHWM).
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import logging
import os
import socket
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests
from fastapi.testclient import TestClient
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid
from typer.testing import CliRunner

from factories import ct_dataset, encode
from hounsfield import cli, config
from hounsfield.pacs import Pacs
from hounsfield.web import security
from hounsfield.web.app import create_app
from support import Server, free_port, require

CT_SMALL = Path(get_testdata_file("CT_small.dcm"))
EVIL = "http://evil.example"
BOUNDARY = "sec-boundary"
STOW_TYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'


# ------------------------------------------------------------------------------------------------ helpers
def stow_body(*datasets: bytes) -> bytes:
    return b"".join(f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + d + b"\r\n"
                    for d in datasets) + f"--{BOUNDARY}--\r\n".encode()


@pytest.fixture
def make_client(tmp_path: Path) -> Iterator[Any]:
    """``make_client(**settings)``: a TestClient on a fresh archive with those settings."""
    opened: list[tuple[Pacs, TestClient]] = []

    def make(base_url: str = "http://testserver", **settings: Any) -> TestClient:
        pacs = Pacs(config.load(None, environ={}, data_dir=tmp_path / f"data{len(opened)}", **settings))
        client = TestClient(create_app(pacs), base_url=base_url, raise_server_exceptions=False)
        client.__enter__()
        opened.append((pacs, client))
        client.pacs = pacs  # type: ignore[attr-defined]
        return client

    yield make
    for pacs, client in opened:
        client.__exit__(None, None, None)
        pacs.close()


def stored(client: TestClient) -> list[str]:
    return [i.sop_instance_uid for i in client.pacs.archive.instances()]  # type: ignore[attr-defined]


def upload(client: TestClient, headers: dict[str, str] | None = None) -> requests.Response:
    return client.post("/api/upload", files={"file": ("ct.dcm", CT_SMALL.read_bytes(), "application/dicom")},
                       headers=headers or {})


def asgi_post(pacs: Pacs, path: str, content_type: str, chunks: list[bytes]) -> tuple[int, dict, int]:
    """POST through the ASGI interface with the body in ``chunks`` and no Content-Length (chunked); the
    status, the JSON answer and how many chunks the application took."""
    app = create_app(pacs)
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(b"host", b"testserver"), (b"content-type", content_type.encode())],
             "client": ("127.0.0.1", 50000), "server": ("testserver", 80)}
    sent: list[dict[str, Any]] = []
    consumed = 0

    async def run() -> None:
        done = asyncio.Event()

        async def receive() -> dict[str, Any]:
            nonlocal consumed
            if consumed >= len(chunks):
                await done.wait()
                return {"type": "http.disconnect"}
            consumed += 1
            return {"type": "http.request", "body": chunks[consumed - 1], "more_body": consumed < len(chunks)}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                done.set()

        await app(scope, receive, send)

    asyncio.run(run())
    starts = [m for m in sent if m["type"] == "http.response.start"]
    assert len(starts) == 1, sent  # one answer, whatever the application tried after it
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return starts[0]["status"], json.loads(body), consumed


# ------------------------------------------------------------------------------------------------ 1. CORS
def test_cors_is_off_by_default(make_client) -> None:
    client = make_client()
    r = client.options("/dicom-web/studies", headers={"Origin": "http://ohif.example",
                                                      "Access-Control-Request-Method": "GET"})
    assert r.status_code == 403 and "cors_origins" in r.json()["detail"]
    assert "access-control-allow-origin" not in r.headers
    r = client.get("/dicom-web/studies", headers={"Origin": "http://ohif.example"})
    assert r.status_code == 204  # no studies: answered, but the page may not read it
    assert "access-control-allow-origin" not in r.headers and r.headers["vary"] == "Origin"
    assert "access-control-allow-credentials" not in r.headers


def test_cors_names_only_the_configured_origins_and_methods(make_client) -> None:
    client = make_client(cors_origins="http://ohif.example:3000, https://viewer.example.org")
    preflight = {"Origin": "http://ohif.example:3000", "Access-Control-Request-Method": "GET",
                 "Access-Control-Request-Headers": "accept"}
    r = client.options("/dicom-web/studies", headers=preflight)
    assert r.status_code == 204
    assert r.headers["access-control-allow-origin"] == "http://ohif.example:3000"  # never *
    assert r.headers["access-control-allow-credentials"] == "true"
    assert r.headers["access-control-allow-methods"] == "GET, HEAD, POST"
    assert r.headers["access-control-allow-headers"] == "accept"
    r = client.options("/dicom-web/studies", headers={**preflight, "Access-Control-Request-Method": "DELETE"})
    assert r.status_code == 403 and "cors_methods" in r.json()["detail"]
    assert "access-control-allow-origin" not in r.headers
    r = client.options("/dicom-web/studies", headers={**preflight, "Origin": "http://ohif.example:3001"})
    assert r.status_code == 403 and "access-control-allow-origin" not in r.headers
    r = client.get("/dicom-web/studies", headers={"Origin": "https://viewer.example.org"})
    assert r.headers["access-control-allow-origin"] == "https://viewer.example.org"
    assert r.headers["access-control-allow-credentials"] == "true"
    assert "Content-Location" in r.headers["access-control-expose-headers"]
    r = client.get("/dicom-web/studies", headers={"Origin": EVIL})
    assert "access-control-allow-origin" not in r.headers
    r = client.get("/api/studies", headers={"Origin": "https://viewer.example.org"})
    assert "access-control-allow-origin" not in r.headers  # the REST API stays same-origin

    deleting = make_client(cors_origins="https://viewer.example.org", cors_methods="GET, POST, DELETE")
    r = deleting.options("/dicom-web/studies/1.2.3", headers={"Origin": "https://viewer.example.org",
                                                              "Access-Control-Request-Method": "DELETE"})
    assert r.status_code == 204 and "DELETE" in r.headers["access-control-allow-methods"]


@pytest.mark.parametrize("value", ["*", "https://viewer.example.org/", "viewer.example.org", "null",
                                   "ftp://viewer.example.org"])
def test_cors_origins_must_be_exact_origins(tmp_path: Path, value: str) -> None:
    pacs = Pacs(config.load(None, environ={}, data_dir=tmp_path / "data", cors_origins=value))
    try:
        with pytest.raises(security.UnsafeSetting, match="cors_origins"):
            create_app(pacs)
    finally:
        pacs.close()


def test_list_settings_take_a_toml_array(tmp_path: Path) -> None:
    toml = tmp_path / "h.toml"
    toml.write_text('cors_origins = ["https://a.example", "http://localhost:3000"]\n'
                    'allowed_hosts = ["pacs.example.org"]\n')
    settings = config.load(toml, environ={})
    assert config.split_list(settings.cors_origins) == ("https://a.example", "http://localhost:3000")
    assert security.policy(settings).cors_origins == {"https://a.example", "http://localhost:3000"}
    assert "pacs.example.org" in security.policy(settings).hosts


# ------------------------------------------------------------------------------ 2. cross-origin form posts
def test_an_upload_from_a_page_of_another_origin_is_refused(make_client, caplog) -> None:
    client = make_client()
    with caplog.at_level(logging.WARNING, "hounsfield.web.security"):
        r = upload(client, {"Origin": EVIL})
    assert r.status_code == 403
    assert r.json()["error"] == "CrossOriginRequest" and EVIL in r.json()["detail"]
    assert stored(client) == []
    assert any("refused POST /api/upload" in m and EVIL in m for m in caplog.messages), caplog.messages
    for headers in ({"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"}, {"Origin": "null"},
                    {"Origin": "null", "Sec-Fetch-Site": "cross-site"}, {"Origin": "null", "Sec-Fetch-Site": "none"},
                    {"Origin": "http://testserver.evil.example"}, {"Origin": "http://testserver:8080"}):
        assert upload(client, headers).status_code == 403, headers
    assert stored(client) == []


@pytest.mark.parametrize("headers", [{}, {"Origin": "http://testserver"}, {"Sec-Fetch-Site": "same-origin"},
                                     {"Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"},
                                     {"Origin": "null", "Sec-Fetch-Site": "same-origin"}],
                         ids=["no-browser", "same-origin", "fetch-metadata-only", "both",
                              "own-form-under-no-referrer"])
def test_same_origin_and_non_browser_uploads_still_work(make_client, headers: dict[str, str]) -> None:
    client = make_client()
    r = upload(client, headers)
    assert r.status_code == 200, r.text
    assert len(stored(client)) == 1


def test_every_state_changing_route_refuses_another_origin(make_client) -> None:
    client = make_client()
    client.pacs.archive.store_file(CT_SMALL)  # type: ignore[attr-defined]
    study = "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322"
    bad = {"Origin": EVIL}
    for method, path, kwargs in [
        ("DELETE", f"/api/studies/{study}", {}),
        ("PUT", "/api/peers/evil", {"json": {"ae_title": "EVIL", "host": "198.51.100.7", "port": 104}}),
        ("POST", f"/api/studies/{study}/send", {"json": {"peer": "evil"}}),
        ("POST", "/dicom-web/studies", {"content": stow_body(encode(ct_dataset())),
                                        "headers": {"Content-Type": STOW_TYPE}}),
        ("POST", "/api/worklist/items", {"json": [{}]}),
        ("PATCH", "/api/worklist/items/1", {"json": {}}),
    ]:
        headers = {**kwargs.pop("headers", {}), **bad}
        r = client.request(method, path, headers=headers, **kwargs)
        assert r.status_code == 403, (method, path, r.status_code, r.text)
    assert len(stored(client)) == 1  # not deleted, nothing stored
    assert "198.51.100.7" not in client.get("/api/peers").text  # no peer of the attacker's
    assert client.get("/api/studies", headers=bad).status_code == 200  # reads: CORS decides what a page sees
    assert client.request("DELETE", f"/api/studies/{study}").status_code == 200  # curl


def test_a_configured_origin_may_stow_but_not_delete(make_client) -> None:
    client = make_client(cors_origins="https://viewer.example.org")
    trusted = {"Origin": "https://viewer.example.org"}
    r = client.post("/dicom-web/studies", content=stow_body(encode(ct_dataset())),
                    headers={"Content-Type": STOW_TYPE, **trusted})
    assert r.status_code == 200, r.text
    assert r.headers["access-control-allow-origin"] == "https://viewer.example.org"
    study = client.get("/api/studies").json()[0]["StudyInstanceUID"]
    assert client.delete(f"/api/studies/{study}", headers=trusted).status_code == 403
    assert len(stored(client)) == 1


# ----------------------------------------------------------------------------------- 3. the Host header
@pytest.mark.parametrize("path", ["/health", "/api/studies", "/dicom-web/studies", "/ui/", "/worklist"])
def test_a_foreign_host_header_is_refused(make_client, path: str, caplog) -> None:
    client = make_client()
    with caplog.at_level(logging.WARNING, "hounsfield.web.security"):
        r = client.get(path, headers={"Host": "rebound.attacker.example:8042"})
    assert r.status_code == 400
    assert r.json()["error"] == "InvalidHost" and "allowed_hosts" in r.json()["detail"]
    assert "rebound.attacker.example" in r.json()["detail"]
    assert any("Host" in m and "rebound.attacker.example" in m for m in caplog.messages)


def test_the_names_of_this_server_are_answered(make_client) -> None:
    client = make_client(http_host="pacs.internal", allowed_hosts="viewer.example.org, .hospital.example")
    ok = ["localhost:8042", "LOCALHOST", "127.0.0.1:8042", "[::1]:8042", "::1", "app.localhost",
          socket.gethostname(), "pacs.internal:8042", "viewer.example.org", "hospital.example",
          "ct.radiology.hospital.example:443", "testserver"]  # testserver: the address it came in on
    for host in ok:
        assert client.get("/health", headers={"Host": host}).status_code == 200, host
    for host in ["evil.example", "viewer.example.org.evil.example", "hospital.example.evil", "127.0.0.2",
                 "10.0.0.1", "local host", "a/b", "xhospital.example"]:
        assert client.get("/health", headers={"Host": host}).status_code == 400, host
    anything = make_client(allowed_hosts="*")
    assert anything.get("/health", headers={"Host": "evil.example"}).status_code == 200


# ------------------------------------------------------------------------------- 4. security headers
@pytest.mark.parametrize("path", ["/health", "/api/studies", "/dicom-web/studies", "/api/studies/nope",
                                  "/ui/", "/ui/js/main.js", "/worklist", "/docs", "/openapi.json", "/nowhere"])
def test_every_response_carries_the_security_headers(make_client, path: str) -> None:
    r = make_client().get(path)
    assert r.headers["x-content-type-options"] == "nosniff", path
    assert r.headers["x-frame-options"] == "DENY", path
    assert r.headers["referrer-policy"] == "no-referrer", path
    if path in ("/ui/", "/worklist"):
        assert r.headers["content-security-policy"] == security.PAGE_CSP
        assert "'unsafe-inline'" not in security.PAGE_CSP and "'unsafe-eval'" not in security.PAGE_CSP
        assert "frame-ancestors 'none'" in security.PAGE_CSP
    elif path == "/docs":  # Swagger UI: its CDN and inline script, but never framed
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"]


# ------------------------------------------------------------------------------ 5. bounded bodies
def test_max_upload_bytes_answers_413(make_client, tmp_path: Path) -> None:
    assert config.Settings().max_upload_bytes == config.load(None, environ={}).max_upload_bytes == 2 << 30
    client = make_client(max_upload_bytes=100_000)
    body = stow_body(*(encode(ct_dataset()) for _ in range(4)))  # about 4 x 40 KB
    assert len(body) > 100_000
    r = client.post("/dicom-web/studies", content=body, headers={"Content-Type": STOW_TYPE})
    assert r.status_code == 413, r.text
    assert r.json() == {"error": "PayloadTooLarge",
                        "detail": f"the request body of {len(body)} bytes is over the limit of 100000 bytes"}
    assert upload(client).status_code == 200  # one file is within it
    chunks = [body[i:i + 8192] for i in range(0, len(body), 8192)]
    for path, content_type in (("/dicom-web/studies", STOW_TYPE), ("/api/upload", "application/dicom")):
        status, answer, consumed = asgi_post(client.pacs, path, content_type, chunks)  # type: ignore[attr-defined]
        assert status == 413 and answer["error"] == "PayloadTooLarge", answer
        assert consumed < len(chunks)  # refused as soon as it went over, the rest never read
    assert len(stored(client)) == 1
    assert list((client.pacs.settings.data_dir / "files" / ".incoming").iterdir()) == []  # type: ignore


def test_a_json_body_is_bounded_whatever_max_upload_bytes_says(make_client) -> None:
    client = make_client()
    big = b'{"ae_title": "' + b"A" * (security.MAX_OTHER_BODY + (4 << 20)) + b'", "host": "h", "port": 104}'
    r = client.put("/api/peers/big", content=big, headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["error"] == "PayloadTooLarge"
    chunks = [big[i:i + (1 << 20)] for i in range(0, len(big), 1 << 20)]
    status, answer, consumed = asgi_post(client.pacs, "/api/worklist/items", "application/json", chunks)  # type: ignore
    assert status == 413 and answer["error"] == "PayloadTooLarge" and consumed < len(chunks)


# ------------------------------------------------------------------------------ 6. remote access
def invoke(*args: object) -> Any:
    cli._register_plugins()
    return CliRunner().invoke(cli.app, [str(a) for a in args])


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in list(os.environ):
        if name.startswith("HOUNSFIELD_") and name != "HOUNSFIELD_SHARED_DATA":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("host", ["0.0.0.0", "::", ""])
def test_serve_refuses_http_beyond_loopback_unless_asked(clean_env: Path, host: str) -> None:
    import subprocess
    import sys

    try:  # a subprocess with a timeout: a serve that does not refuse would otherwise serve for ever
        result = subprocess.run([sys.executable, "-m", "hounsfield", "serve", "--data-dir", str(clean_env / "d"),
                                 "--http-host", host, "--http-port", str(free_port()), "--dicom-port",
                                 str(free_port())], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"serve --http-host {host!r} did not refuse to start") from None
    assert result.returncode == 1, result.stderr
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1 and message.startswith("error: logins are on ")
    assert "there is no admin user" in message and "hounsfield user add NAME --role admin" in message
    assert "insecure_http = true" in message and "HOUNSFIELD_INSECURE_HTTP" in message
    assert not (clean_env / "d").exists() and result.stdout == ""


def test_serve_refuses_a_malformed_cors_origin_in_one_line(clean_env: Path) -> None:
    result = invoke("serve", "--data-dir", clean_env / "d", "--cors-origins", "*", "--http-port", free_port(),
                    "--dicom-port", free_port())
    assert result.exit_code == 1
    assert result.stderr.strip().startswith("error: setting cors_origins: '*' is not an origin")
    assert not (clean_env / "d").exists()


def test_loopback_is_told_apart(caplog) -> None:
    for host in ("127.0.0.1", "127.0.0.5", "::1", "[::1]", "localhost", "app.localhost"):
        assert security.is_loopback(host), host
    for host in ("0.0.0.0", "::", "", "10.1.2.3", "192.0.2.1"):
        assert not security.is_loopback(host), host
    security.check_serving(config.Settings())  # the default: 127.0.0.1
    security.check_serving(config.Settings(http_host="0.0.0.0"))  # logins on (auto): serve checks the admin
    with pytest.raises(security.UnsafeSetting, match="insecure_http"):
        security.check_serving(config.Settings(http_host="0.0.0.0", http_auth="off"))
    with caplog.at_level(logging.WARNING, "hounsfield.web.security"):
        security.check_serving(config.Settings(http_host="0.0.0.0", insecure_http=True))
    assert any("insecure_http is on" in m for m in caplog.messages)


def test_serve_with_insecure_http_listens_on_every_interface(tmp_path: Path) -> None:
    """insecure_http = true and http_host 0.0.0.0: it starts, answers on 127.0.0.1 and logs the warning."""
    import subprocess
    import sys

    http, dicom = free_port(), free_port()
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "hounsfield", "serve", "--data-dir", str(tmp_path / "d"),
                                 "--http-host", "0.0.0.0", "--http-port", str(http), "--dicom-port", str(dicom),
                                 "--insecure-http", "true"], stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            try:
                if requests.get(f"http://127.0.0.1:{http}/health", timeout=1).ok:
                    break
            except requests.RequestException:
                time.sleep(0.1)
        else:
            raise AssertionError(log.read_text())
        assert "insecure_http is on" in log.read_text()
    finally:
        proc.terminate()
        proc.wait(30)


# ---------------------------------------------------------------------- real server, real Chromium
PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>other origin</title></head>
<body><script>
window.readStudies = async (url) => {
  try { const r = await fetch(url, {headers: {Accept: "application/dicom+json"}}); return {ok: true, status: r.status, body: await r.json()}; }
  catch (e) { return {ok: false, error: String(e)}; }
};
window.postUpload = async (url, b64) => {
  const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
  const form = new FormData();
  form.append("file", new Blob([bytes], {type: "application/dicom"}), "ct.dcm");
  try { await fetch(url, {method: "POST", mode: "no-cors", body: form}); return "sent"; }
  catch (e) { return String(e); }
};
</script></body></html>"""


@pytest.fixture
def other_origin(tmp_path: Path) -> Iterator[str]:
    """A page on another origin: a local http.server on its own port."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text(PAGE)
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(site))
    handler.log_message = lambda *a: None  # type: ignore[method-assign]
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def chromium(*extra_args: str) -> Iterator[tuple[Any, list[str]]]:
    """A page of headless Chromium and the list its console errors, page errors and CSP violations go to."""
    from browser import ARGS, CHROMIUM

    require(os.path.exists(CHROMIUM), f"Chromium is not installed at {CHROMIUM}")
    try:
        import playwright.sync_api as playwright_api
    except ImportError:
        playwright_api = None
    require(playwright_api is not None, "playwright is not installed (pip install -e '.[test]')")
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[*ARGS, *extra_args])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        problems: list[str] = []
        page.on("pageerror", lambda exc: problems.append(f"pageerror: {exc}"))
        page.on("console", lambda msg: problems.append(f"console {msg.type}: {msg.text}")
                if msg.type in ("error", "warning") and not msg.text.startswith("Failed to load resource")
                else None)  # a failed load is reported, with its URL, by the response handler
        page.on("response", lambda r: problems.append(f"HTTP {r.status} {r.url}")
                if r.status >= 400 and not r.url.endswith("/favicon.ico") else None)
        page.add_init_script("document.addEventListener('securitypolicyviolation', e => console.error("
                             "'CSP violation: ' + e.violatedDirective + ' ' + e.blockedURI))")
        try:
            yield page, problems
        finally:
            browser.close()


@pytest.fixture
def stored_study(tmp_path: Path) -> Iterator[tuple[Server, str]]:
    server = Server(tmp_path / "plain").start()
    ds = ct_dataset()
    r = requests.post(f"{server.url}/dicom-web/studies", data=stow_body(encode(ds)), headers={
        "Content-Type": STOW_TYPE}, timeout=60)
    assert r.status_code == 200, r.text
    try:
        yield server, ds.StudyInstanceUID
    finally:
        server.stop()


def studies_of(server: Server) -> list[dict]:
    return requests.get(f"{server.url}/api/studies", timeout=30).json()


@pytest.mark.browser
def test_a_page_of_another_origin_reads_and_stores_nothing(stored_study, other_origin: str) -> None:
    server, study = stored_study
    for page, _problems in chromium():
        page.goto(f"{other_origin}/")
        result = page.evaluate("url => readStudies(url)", f"{server.url}/dicom-web/studies")
        assert result["ok"] is False and "Failed to fetch" in result["error"], result  # CORS: no answer
        data = base64.b64encode(CT_SMALL.read_bytes()).decode()
        assert page.evaluate("([url, b64]) => postUpload(url, b64)", [f"{server.url}/api/upload", data]) == "sent"
        deadline = time.monotonic() + 10
        while "refused POST /api/upload" not in server.log_text() and time.monotonic() < deadline:
            time.sleep(0.1)
    log = server.log_text()
    assert f"refused POST /api/upload from 127.0.0.1: from origin '{other_origin}'" in log, log[-2000:]
    assert [s["StudyInstanceUID"] for s in studies_of(server)] == [study]  # CT_small was not stored


@pytest.mark.browser
def test_a_configured_origin_reads_the_studies(tmp_path: Path, other_origin: str) -> None:
    server = Server(tmp_path / "cors", env={"HOUNSFIELD_CORS_ORIGINS": other_origin}).start()
    try:
        ds = ct_dataset()
        requests.post(f"{server.url}/dicom-web/studies", data=stow_body(encode(ds)),
                      headers={"Content-Type": STOW_TYPE}, timeout=60).raise_for_status()
        for page, _problems in chromium():
            page.goto(f"{other_origin}/")
            result = page.evaluate("url => readStudies(url)", f"{server.url}/dicom-web/studies")
            assert result["ok"] and result["status"] == 200, result
            assert [s["0020000D"]["Value"][0] for s in result["body"]] == [ds.StudyInstanceUID]
    finally:
        server.stop()


@pytest.mark.browser
def test_a_rebound_name_gets_no_page(stored_study) -> None:
    """DNS rebinding, as the browser lives it: a name of the attacker's that resolves to this machine."""
    server, _study = stored_study
    for page, _problems in chromium("--host-resolver-rules=MAP rebound.attacker.test 127.0.0.1"):
        answer = page.goto(f"http://rebound.attacker.test:{server.http_port}/dicom-web/studies")
        assert answer.status == 400 and "is not a name of this server" in page.content()
        answer = page.goto(f"http://localhost:{server.http_port}/dicom-web/studies")
        assert answer.status == 200


@pytest.mark.browser
def test_the_viewer_and_the_worklist_pass_their_csp(stored_study) -> None:
    server, study = stored_study
    for page, problems in chromium():
        answer = page.goto(f"{server.url}/ui/")
        assert answer.headers["content-security-policy"] == security.PAGE_CSP
        assert answer.headers["x-frame-options"] == "DENY"
        page.wait_for_selector("tr.study")
        page.click("tr.study")
        page.wait_for_selector(".series-thumb img")
        page.wait_for_selector("#viewport[data-state=ready]", timeout=20_000)
        answer = page.goto(f"{server.url}/worklist")
        assert answer.headers["content-security-policy"] == security.PAGE_CSP
        page.wait_for_load_state("networkidle")
        page.click("#new-item")
        page.wait_for_timeout(300)
        assert problems == [], problems


# ----------------------------------------------------------------------------------- memory, real server
def peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc/PID/status")


def test_a_200_mb_stow_body_in_chunks_takes_memory_of_a_chunk(tmp_path: Path) -> None:
    """400 CT instances of 0.5 MiB, sent chunked (no Content-Length): the server's peak RSS grows by a few
    spool batches and one instance, never by the body; a declared body over max_upload_bytes is refused
    before it is read."""
    study, series = generate_uid(), generate_uid()
    count, size = 400, 512 * 512 * 2

    def body() -> Iterator[bytes]:
        for number in range(count):
            ds = ct_dataset(StudyInstanceUID=study, SeriesInstanceUID=series, InstanceNumber=number + 1,
                            Rows=512, Columns=512)
            ds.PixelData = bytes([number % 256]) * size
            yield f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + encode(ds) + b"\r\n"
        yield f"--{BOUNDARY}--\r\n".encode()

    server = Server(tmp_path / "data", env={"HOUNSFIELD_MAX_UPLOAD_BYTES": str(300 << 20)}).start()
    try:
        before = peak_rss_kib(server.proc.pid)
        r = requests.post(f"{server.url}/dicom-web/studies", data=body(), timeout=900,
                          headers={"Content-Type": STOW_TYPE})
        grown = peak_rss_kib(server.proc.pid) - before
        assert r.status_code == 200, r.text
        assert len(r.json()["00081199"]["Value"]) == count
        print(f"peak RSS of the server grew by {grown >> 10} MiB for a {count * size >> 20} MiB body")
        assert grown < 48 << 10, f"peak RSS grew by {grown >> 10} MiB for a {count * size >> 20} MiB body"
        assert list((tmp_path / "data" / "files" / ".incoming").iterdir()) == []
        with socket.create_connection(("127.0.0.1", server.http_port)) as sock:  # declares 400 MiB, sends none
            sock.sendall(f"POST /dicom-web/studies HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {STOW_TYPE}\r\n"
                         f"Content-Length: {400 << 20}\r\n\r\n".encode())
            sock.settimeout(30)
            answer = b""
            while chunk := sock.recv(65536):  # the server answers and closes, without reading the body
                answer += chunk
        text = answer.decode(errors="replace")
        assert text.startswith("HTTP/1.1 413 ") and '"PayloadTooLarge"' in text, text
    finally:
        server.stop()


def _zip_of(path: Path, members: dict[str, bytes | int]) -> bytes:
    """A deflated zip: bytes as they are, an int as that many zero bytes written in chunks (a bomb)."""
    import zipfile

    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in members.items():
            with zf.open(name, "w", force_zip64=True) as out:
                if isinstance(content, int):
                    for _ in range(content >> 20):
                        out.write(bytes(1 << 20))
                else:
                    out.write(content)
    return path.read_bytes()


def test_a_decompression_bomb_is_refused_whole_before_anything_is_extracted(make_client, tmp_path: Path,
                                                                             caplog) -> None:
    client = make_client()
    bomb = _zip_of(tmp_path / "bomb.zip", {"a.dcm": CT_SMALL.read_bytes(), "zeros.dcm": 200 << 20})
    assert len(bomb) < 1 << 20  # 200 MB of zeros packs into a few hundred KB
    with caplog.at_level(logging.WARNING, "hounsfield.web"):
        r = client.post("/api/upload", files={"f": ("bomb.zip", bomb, "application/zip")})
    assert r.status_code == 400
    [outcome] = r.json()["files"]
    assert outcome["outcome"] == "failed" and "expands" in outcome["error"] and "zeros.dcm" in outcome["error"]
    assert stored(client) == []  # not even the harmless member: the zip is refused whole
    assert any("refused" in m and "bomb.zip" in m for m in caplog.messages)


def test_a_zip_expanding_beyond_the_upload_limit_is_refused(make_client, tmp_path: Path) -> None:
    ct = CT_SMALL.read_bytes()
    client = make_client(max_upload_bytes=3 * len(ct))
    many = _zip_of(tmp_path / "many.zip", {f"{i}.dcm": ct for i in range(4)})
    r = client.post("/api/upload", files={"f": ("many.zip", many, "application/zip")})
    assert r.status_code == 400 and "over the upload limit" in r.json()["files"][0]["error"]
    fits = _zip_of(tmp_path / "fits.zip", {"0.dcm": ct})
    assert client.post("/api/upload", files={"f": ("fits.zip", fits, "application/zip")}).status_code == 200
