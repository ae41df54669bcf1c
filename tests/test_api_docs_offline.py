"""/docs and /redoc work without internet access: every script, style sheet and icon they load comes from the
server itself (they were blank pages on an offline hospital network: their scripts came from a CDN). Checked
on the HTML and the files it names, and in real headless Chromium with every request to another host aborted:
Swagger UI and ReDoc render the API's operations, and no request tried to leave the server."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import pytest
from fastapi.testclient import TestClient

from browser import artifacts_dir, chromium_page, shots

from hounsfield import config
from hounsfield.pacs import Pacs
from hounsfield.web.app import DOCS_ASSETS, create_app

WAIT_MS = 60_000  # a page that never renders fails the test; none depends on how fast it renders
CONTENT_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}


class References(HTMLParser):
    """Every URL a page makes the browser load: script src, link href, img src, and any other src/href."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline_scripts = 0
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        for name in ("src", "href", "spec-url", "data-openapi-url"):
            if found.get(name):
                self.urls.append(found[name])
        self._in_script = tag == "script" and not found.get("src")

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline_scripts += 1

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory):
    pacs = Pacs(config.load(data_dir=str(tmp_path_factory.mktemp("docs") / "data"), environ={}))
    with TestClient(create_app(pacs)) as c:
        yield c
    pacs.close()


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_docs_pages_load_only_same_origin_files_that_are_there(client: TestClient, page: str) -> None:
    r = client.get(page)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    parser = References()
    parser.feed(r.text)
    assert parser.urls, r.text
    assert not re.search(r"https?://|//cdn|fonts\.googleapis", r.text), r.text  # nothing from elsewhere
    assert parser.inline_scripts == 0  # a Content-Security-Policy of script-src 'self' allows the page
    loaded = {urlsplit(urljoin(f"http://testserver{page}", u)) for u in parser.urls}
    assert {u.netloc for u in loaded} == {"testserver"}
    kinds = set()
    for url in loaded:
        got = client.get(url.path)
        assert got.status_code == 200, url.path
        suffix = Path(url.path).suffix
        expected = CONTENT_TYPES.get(suffix, "application/json")
        assert got.headers["content-type"].split(";")[0] == expected, (url.path, got.headers["content-type"])
        assert len(got.content) > (1000 if suffix in (".js", ".css") and "init" not in url.path else 100)
        kinds.add(suffix)
    assert ".js" in kinds  # the page's own viewer script is among them
    if page == "/docs":
        assert ".css" in kinds
        script = client.get("/docs/swagger-init.js").text
        assert "SwaggerUIBundle(" in script and "validatorUrl: null" in script  # no badge from validator.swagger.io


def test_the_vendored_assets_carry_their_licences() -> None:
    assert "Apache License" in (DOCS_ASSETS / "swagger-ui" / "LICENSE").read_text()
    assert (DOCS_ASSETS / "swagger-ui" / "NOTICE").is_file()
    assert "MIT" in (DOCS_ASSETS / "redoc" / "LICENSE").read_text()
    readme = (DOCS_ASSETS / "README.md").read_text()
    assert "swagger-ui-dist" in readme and "redoc" in readme


def test_the_openapi_document_the_pages_load_is_served(client: TestClient) -> None:
    spec = client.get("/openapi.json")
    assert spec.status_code == 200 and spec.json()["info"]["title"] == "hounsfield"
    assert "/docs" not in spec.json()["paths"] and "/redoc" not in spec.json()["paths"]


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory):
    from support import Server

    server = Server(tmp_path_factory.mktemp("docs-live") / "data").start()
    try:
        yield server
    finally:
        server.stop()


def offline(page: Any, origin: str) -> list[str]:
    """Abort every request of ``page`` that goes anywhere but ``origin``, as an offline network would; returns
    the list the aborted URLs go to. (data: and blob: URLs never reach the network, nor this handler.)"""
    left: list[str] = []

    def route(r: Any) -> None:
        url = urlsplit(r.request.url)
        if f"{url.scheme}://{url.netloc}" == origin:
            r.continue_()
        else:
            left.append(r.request.url)
            r.abort("internetdisconnected")

    page.route("**/*", route)
    return left


# Each page, what shows that it rendered the operations (not only its own frame): Swagger UI's operation
# blocks with the path of /health among them; ReDoc's rendered operations, /health among their endpoints.
RENDERED = {
    "/docs": ('.opblock .opblock-summary-path[data-path="/health"]', ".opblock"),
    "/redoc": ('.api-content [data-section-id^="operation/"]', ".api-content h2"),
}


@pytest.mark.browser
@pytest.mark.parametrize("path", list(RENDERED))
def test_the_docs_pages_render_in_a_browser_with_no_internet(live_server: Any, path: str, tmp_path: Path) -> None:
    mark, operations = RENDERED[path]
    for page, errors in chromium_page(bypass_csp=False):  # the pages' own Content Security Policy applies
        left = offline(page, live_server.url)
        page.goto(f"{live_server.url}{path}")
        page.wait_for_selector(mark, timeout=WAIT_MS)
        assert page.locator(operations).count() > 10  # the API's operations, not one
        if path == "/redoc":
            assert page.get_by_text("/health", exact=True).count() >= 1
        shots(page, artifacts_dir(tmp_path / "artifacts"), f"api-docs{path.replace('/', '-')}")
        assert left == [], left  # nothing tried to leave the server (fonts, scripts, validator badge)
        assert errors == []
