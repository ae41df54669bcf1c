"""OHIF Viewer, unchanged, on hounsfield's DICOMweb: the study list (QIDO-RS), then a CT series opened in the
viewer (series QIDO-RS, /metadata, frames over WADO-RS), in real headless Chromium.

OHIF v2's standalone build (npm ``@ohif/viewer``, MIT) is fetched by ``scripts/test`` into ``.cache/``; it is
served from another origin than hounsfield, as sites deploy it, so CORS on ``/dicom-web`` is exercised too.
"""

from __future__ import annotations

import functools
import os
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pydicom
import pytest

from browser import ARTIFACTS, chromium_page, stow_series
from conftest import ROOT
from support import Server, require

OHIF_VERSION = "4.12.51"
OHIF_DIST = Path(os.environ.get("HOUNSFIELD_OHIF_DIST",
                                ROOT / ".cache" / f"ohif-viewer-{OHIF_VERSION}" / "package" / "dist"))
CONFIG = """window.config = {
  routerBasename: '/',
  showStudyList: true,
  servers: { dicomWeb: [{
    name: 'hounsfield', wadoUriRoot: '%(root)s', qidoRoot: '%(root)s', wadoRoot: '%(root)s',
    qidoSupportsIncludeField: true, imageRendering: 'wadors', thumbnailRendering: 'wadors',
    enableStudyLazyLoad: true, supportsFuzzyMatching: true,
  }]},
};
"""
INDEX = """<!DOCTYPE html><html><head><meta charset="utf-8"><title>OHIF</title></head><body><div id="root"></div>
<script src="/app-config.js"></script><script src="/index.umd.js" crossorigin></script>
<script>window.OHIFViewer.installViewer(window.config, 'root', function () {});</script></body></html>
"""
# Counts the canvas's dark and bright pixels: an image is drawn when it has both.
CANVAS_DRAWN = """() => {
  const c = document.querySelector('canvas.cornerstone-canvas');
  if (!c || !c.width) return false;
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let dark = 0, bright = 0;
  for (let i = 0; i < d.length; i += 4) { if (d[i] < 16) dark++; else if (d[i] > 240) bright++; }
  return dark > 1000 && bright > 1000;
}"""
pytestmark = pytest.mark.browser


class _OhifFiles(SimpleHTTPRequestHandler):
    """OHIF's build plus a config naming hounsfield; any other path is the single-page app's index."""

    def __init__(self, *args, site: Path, **kwargs) -> None:  # noqa: ANN002, ANN003
        self.site = site
        super().__init__(*args, directory=str(OHIF_DIST), **kwargs)

    def translate_path(self, path: str) -> str:
        name = path.split("?")[0].lstrip("/")
        if name == "index.umd.js":
            return str(OHIF_DIST / name)
        return str(self.site / ("app-config.js" if name == "app-config.js" else "index.html"))

    def log_message(self, *args) -> None:  # noqa: ANN002
        pass


@pytest.fixture
def ohif_site(tmp_path: Path):
    """OHIF's files served from an origin of their own: (folder, origin)."""
    site = tmp_path / "ohif"
    site.mkdir()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_OhifFiles, site=site))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield site, f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def server(tmp_path: Path, ohif_site):
    """hounsfield with OHIF's origin allowed to read /dicom-web (CORS is off unless configured)."""
    srv = Server(tmp_path / "data", env={"HOUNSFIELD_CORS_ORIGINS": ohif_site[1]}).start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def ohif(server, ohif_site):
    require((OHIF_DIST / "index.umd.js").is_file(),
            f"OHIF's build is not at {OHIF_DIST} (scripts/test fetches @ohif/viewer@{OHIF_VERSION} with npm)")
    site, origin = ohif_site
    (site / "app-config.js").write_text(CONFIG % {"root": f"{server.url}/dicom-web"})
    (site / "index.html").write_text(INDEX)
    return origin


def test_ohif_lists_and_opens_a_ct_series(server, shared_data, ohif) -> None:
    files = sorted((shared_data / "ct/philips_head_phantom_5mm").glob("*.dcm"))
    stow_series(server, files)
    first = min((pydicom.dcmread(f, stop_before_pixels=True) for f in files), key=lambda d: int(d.InstanceNumber))
    for page, errors in chromium_page():
        dicomweb: list[tuple[str, int]] = []
        page.on("response", lambda r: dicomweb.append((r.url, r.status)) if "/dicom-web/" in r.url else None)
        page.goto(f"{ohif}/")
        # the study list, from QIDO-RS: patient, MRN, description, modality
        row = page.locator("tr", has_text=str(first.StudyDescription))
        row.wait_for(timeout=30_000)
        text = row.inner_text()
        assert str(first.PatientName) in text and str(first.PatientID) in text and "CT" in text
        page.screenshot(path=str(ARTIFACTS / "ohif-study-list.png"))
        row.click()
        # the viewer: first slice of the 28 drawn, with the window of the file and its matrix
        page.wait_for_function(CANVAS_DRAWN, timeout=60_000)
        page.get_by_text(f"Img: {first.InstanceNumber} 1/{len(files)}").wait_for(timeout=30_000)
        viewport = page.locator(".viewport-element")
        assert f"{first.Rows} x {first.Columns}" in viewport.inner_text()
        width, center = (first[k].value for k in ("WindowWidth", "WindowCenter"))
        width, center = (v[0] if isinstance(v, pydicom.multival.MultiValue) else v for v in (width, center))
        assert f"W: {int(float(width))} L: {int(float(center))}" in viewport.inner_text()  # the file's first window
        assert str(first.SeriesDescription) in page.inner_text("body")
        # the pixels OHIF decoded from the WADO-RS frame are the file's stored values, with its rescale
        shown = page.evaluate("""() => { const image = cornerstone.getEnabledElements()[0].image;
            return [image.imageId, image.slope, image.intercept, Array.from(image.getPixelData())]; }""")
        by_sop = {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID: f for f in files}
        stored = pydicom.dcmread(by_sop[shown[0].split("/instances/")[1].split("/")[0]])
        assert stored.InstanceNumber == first.InstanceNumber
        assert (shown[1], shown[2]) == (float(stored.RescaleSlope), float(stored.RescaleIntercept))
        assert shown[3] == stored.pixel_array.ravel().tolist()
        # scrolling fetches the next frame
        page.locator("canvas.cornerstone-canvas").hover()
        page.mouse.wheel(0, 120)
        page.get_by_text(f"2/{len(files)}").wait_for(timeout=30_000)
        page.wait_for_function(CANVAS_DRAWN, timeout=30_000)
        page.screenshot(path=str(ARTIFACTS / "ohif-viewer.png"))
        assert not errors, errors
    failed = [(url, status) for url, status in dicomweb if status >= 400]
    assert not failed, failed
    assert any(url.endswith("/metadata") for url, _ in dicomweb), dicomweb
    assert any("/frames/" in url for url, _ in dicomweb), dicomweb
