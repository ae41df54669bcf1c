"""Real headless Chromium (Debian's, driven by Playwright) for the browser tests, and a STOW-RS helper."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

import requests

from conftest import ROOT
from support import require

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
ARTIFACTS = ROOT / "test-artifacts"  # screenshots, kept by CI


def chromium_page(viewport: dict[str, int] | None = None,
                  bypass_csp: bool = True) -> Iterator[tuple[Any, list[str]]]:
    """A fresh page and the list its uncaught page errors go to."""
    require(os.path.exists(CHROMIUM), f"Chromium is not installed at {CHROMIUM}")
    try:
        import playwright.sync_api as playwright_api
    except ImportError:
        playwright_api = None
    require(playwright_api is not None, "playwright is not installed (pip install -e '.[test]')")
    ARTIFACTS.mkdir(exist_ok=True)
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        # bypass_csp: Playwright evaluates wait_for_function("expression") inside the page, which the pages'
        # Content Security Policy forbids (no eval); tests/test_http_security.py checks the policy without it,
        # and so can a test that waits for selectors only (bypass_csp=False).
        page = browser.new_page(viewport=viewport or {"width": 1400, "height": 900}, bypass_csp=bypass_csp)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        try:
            yield page, errors
        finally:
            browser.close()


def stow_series(server: Any, files: list[Path]) -> None:
    """Store ``files`` through STOW-RS in one request."""
    boundary = "browser-test-boundary"
    body = b"".join(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + f.read_bytes() + b"\r\n"
                    for f in files) + f"--{boundary}--\r\n".encode()
    r = requests.post(f"{server.url}/dicom-web/studies", data=body, timeout=120, headers={
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'})
    assert r.status_code == 200, f"{r.status_code} {r.text[:300]}\n{server.log_text()[-3000:]}"


def artifacts_dir(fallback: Path) -> Path:
    """Where a test keeps its screenshots: $HOUNSFIELD_TEST_ARTIFACTS when set (CI keeps that folder), else
    ``fallback`` (a temporary folder of the test run)."""
    folder = Path(os.environ["HOUNSFIELD_TEST_ARTIFACTS"]) if os.environ.get("HOUNSFIELD_TEST_ARTIFACTS") else fallback
    folder.mkdir(parents=True, exist_ok=True)
    return folder


SIZES = {"desktop": {"width": 1440, "height": 900}, "tablet-portrait": {"width": 820, "height": 1180}}


def settle(page: Any) -> None:
    """Until the page has laid out and painted what the last change did (two animation frames: resize
    observers run between them)."""
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")


def shots(page: Any, folder: Path, name: str, full_page: bool = False) -> None:
    """Screenshots of the page as it is, ``folder/{name}-{size}.png`` at each of SIZES; at each the page must fit
    its width (no sideways scrolling on a tablet). The page gets its own viewport size back afterwards."""
    own = page.viewport_size
    for size_name, size in SIZES.items():
        page.set_viewport_size(size)
        settle(page)
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 1, (name, size_name, "the page is wider than the window", overflow)
        page.screenshot(path=str(folder / f"{name}-{size_name}.png"), full_page=full_page)
    page.set_viewport_size(own)
    settle(page)
