"""The RT panel and overlays of the web viewer (issue 13) in real headless Chromium, on the analytic phantom stored
through STOW-RS: the ROI panel, a contour drawn in its ROI colour where the phantom puts it (canvas pixels read),
the toggle that removes it, the dose under the cursor (= the REST value = the analytic field), the DVH table
(= the REST DVH), the plan summary, isodose lines, and nothing left over once another series is opened.

Waits are for attributes the page sets when it has drawn (``#viewport[data-rt-ready=SOP]``), never for time.
"""

from __future__ import annotations

import math

import numpy as np
import pydicom
import pytest
import requests

from browser import artifacts_dir, chromium_page, settle, stow_series
from rt_phantom import COLORS, CT_ORIGIN, CT_Z, dose_field, make_phantom

pytestmark = pytest.mark.browser
WAIT_MS = 120_000


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    from support import Server

    tmp = tmp_path_factory.mktemp("rt-viewer")
    srv = Server(tmp / "data").start()
    try:
        ph = make_phantom(tmp / "phantom")
        stow_series(srv, [*ph.ct_paths, ph.rtstruct, ph.rtdose, ph.rtplan])
        ph.slice_sops = [pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in ph.ct_paths]
        rs_series = pydicom.dcmread(ph.rtstruct, stop_before_pixels=True).SeriesInstanceUID
        yield srv, ph, rs_series, tmp
    finally:
        srv.stop()


@pytest.fixture
def browser_page():
    yield from chromium_page()


def canvas_pixels(page, x: float, y: float, half: int = 3) -> np.ndarray:
    """The (2 half + 1)² RGB pixels of the viewport canvas around client point (x, y)."""
    data = page.evaluate("""([x, y, h]) => {
        const c = document.querySelector('#view'); const r = c.getBoundingClientRect();
        const cx = Math.round((x - r.left) * c.width / r.width), cy = Math.round((y - r.top) * c.height / r.height);
        return Array.from(c.getContext('2d').getImageData(cx - h, cy - h, 2 * h + 1, 2 * h + 1).data);
    }""", [x, y, half])
    return np.array(data, dtype=np.int32).reshape(-1, 4)[:, :3]


def wait_ready(page, sop: str) -> None:
    page.wait_for_selector(f'#viewport[data-rt-ready="{sop}"]', timeout=WAIT_MS)
    settle(page)


def test_rt_panel_contours_dose_dvh(site, browser_page):
    srv, ph, rs_series, tmp = site
    page, errors = browser_page
    shots = artifacts_dir(tmp / "artifacts")
    page.goto(f"{srv.url}/ui/")
    page.fill("#search-patient", "RTPHANTOM")
    page.click("#search-button")
    page.wait_for_selector(f'tr.study[data-uid="{ph.study_uid}"]', timeout=WAIT_MS)
    page.click(f'tr.study[data-uid="{ph.study_uid}"]')
    page.wait_for_selector(f'.series-thumb[data-uid="{ph.series_uid}"]', timeout=WAIT_MS)
    page.click(f'.series-thumb[data-uid="{ph.series_uid}"]')
    page.wait_for_selector(f'#rt-panel[data-state=ready][data-series="{ph.series_uid}"]', timeout=WAIT_MS)

    # the ROI panel: every ROI, its colour and volume as the REST API gives them
    rois = requests.get(f"{srv.url}/api/rt/structure-sets/{ph.structure_set_uid}/rois", timeout=60).json()["rois"]
    rows = page.locator("#rt-rois tbody tr")
    assert rows.count() == 5
    assert [rows.nth(i).locator("td.name").inner_text() for i in range(5)] == [r["name"] for r in rois]
    for i, r in enumerate(rois):
        colour = rows.nth(i).locator(".rt-swatch").evaluate("e => getComputedStyle(e).backgroundColor")
        assert colour == "rgb({}, {}, {})".format(*COLORS[r["name"]])
        volume = rows.nth(i).locator("td.volume").inner_text()
        assert volume == ("–" if r["volume_cc"] is None else f"{r['volume_cc']:.2f} cm³")

    # slice z = 4 mm; the dose off: the sphere's contour is drawn in red where the phantom puts it
    k = CT_Z.index(4.0)
    sop = ph.slice_sops[k]
    page.evaluate(f"hf.go({k})")
    page.wait_for_selector(f'#viewport[data-state=ready][data-slice="{k}"]', timeout=WAIT_MS)
    wait_ready(page, sop)
    page.select_option("#rt-dose-mode", "off")
    wait_ready(page, sop)
    sphere = ph.structures["sphere"]
    r = math.sqrt(sphere.outer ** 2 - (4.0 - sphere.centre[2]) ** 2)
    x_mm, y_mm = sphere.centre[0] + r, sphere.centre[1]  # the contour's rightmost point, on the slice's plane
    px, py = x_mm - CT_ORIGIN[0], y_mm - CT_ORIGIN[1]  # 1 mm pixels from the first pixel's centre
    at = page.evaluate(f"hf.imageToClient({px + 0.5}, {py + 0.5})")
    red = np.array(COLORS["sphere"])
    assert (canvas_pixels(page, *at) == red).all(axis=1).any(), "no pixel of the sphere's colour on its contour"
    inside = page.evaluate(f"hf.imageToClient({px - 8 + 0.5}, {py + 0.5})")  # 8 mm inside: not on the contour
    assert not (canvas_pixels(page, *inside) == red).all(axis=1).any()
    page.screenshot(path=str(shots / "rt-contours.png"))
    # toggled off: gone; on again: back
    page.uncheck('#rt-rois tr[data-roi="1"] input')
    settle(page)
    assert not (canvas_pixels(page, *at) == red).all(axis=1).any()
    page.check('#rt-rois tr[data-roi="1"] input')
    settle(page)
    assert (canvas_pixels(page, *at) == red).all(axis=1).any()

    # the colour-wash and the dose under the cursor: the REST value, the analytic field
    page.select_option("#rt-dose-mode", "wash")
    wait_ready(page, sop)
    assert page.inner_text("#rt-scale-max").endswith("Gy")
    page.screenshot(path=str(shots / "rt-wash.png"))
    rest = requests.get(f"{srv.url}/api/rt/doses/{ph.dose_uid}/slice", params={"image": sop}, timeout=60).json()
    for col, row in ((100, 70), (60, 90), (130, 100)):
        x, y = page.evaluate(f"hf.imageToClient({col + 0.5}, {row + 0.5})")
        page.mouse.move(x, y)
        page.wait_for_function(f"document.querySelector('#pos').textContent === '{col}, {row}'", timeout=WAIT_MS)
        shown = page.inner_text("#dose")
        value, unit = shown.split()
        assert unit == "Gy"
        assert float(value) == pytest.approx(rest["values"][row][col], abs=5e-4)
        analytic = dose_field(np.array([CT_ORIGIN[0] + col, CT_ORIGIN[1] + row, 4.0]))[0]
        assert float(value) == pytest.approx(analytic, abs=2e-3)
    x, y = page.evaluate("hf.imageToClient(2.5, 2.5)")  # outside the dose grid
    page.mouse.move(x, y)
    page.wait_for_function("document.querySelector('#pos').textContent === '2, 2'", timeout=WAIT_MS)
    assert page.inner_text("#dose") == "–"

    # the DVH panel: D95 / Dmean / D2 as the REST API computes them
    page.wait_for_selector("#rt-dvh-section[data-state=ready]", timeout=WAIT_MS)
    dvh = requests.get(f"{srv.url}/api/rt/dvh", params={"structure_set": ph.structure_set_uid,
                                                          "dose": ph.dose_uid}, timeout=120).json()
    for d in dvh["dvhs"]:
        row = page.locator(f'#rt-dvh-table tr[data-roi="{d["number"]}"]')
        assert row.locator("td.d95").inner_text() == f"{d['d95_gy']:.2f}"
        assert row.locator("td.dmean").inner_text() == f"{d['mean_gy']:.2f}"
        assert row.locator("td.d2").inner_text() == f"{d['d2_gy']:.2f}"
    page.uncheck('#rt-rois tr[data-roi="2"] input')  # the shell toggled off leaves the DVH table too
    assert page.locator('#rt-dvh-table tr[data-roi="2"]').count() == 0
    page.check('#rt-rois tr[data-roi="2"] input')
    assert page.locator('#rt-dvh-table tr[data-roi="2"]').count() == 1
    plan = page.inner_text("#rt-plan")
    assert "PHANTOM" in plan and "60 Gy" in plan and "30" in plan and "CURATIVE" in plan
    page.screenshot(path=str(shots / "rt-dvh-plan.png"))

    # isodose lines at chosen levels
    page.select_option("#rt-dose-mode", "isodose")
    page.fill("#rt-levels", "95,40Gy")
    page.dispatch_event("#rt-levels", "change")
    wait_ready(page, sop)
    page.wait_for_function("document.querySelector('#rt-isodose-legend').textContent.includes('40 Gy')",
                           timeout=WAIT_MS)
    legend = page.inner_text("#rt-isodose-legend")
    assert "95 % (57 Gy)" in legend and "prescription" in legend
    page.screenshot(path=str(shots / "rt-isodose.png"))

    # another series: nothing of the RT set stays on screen
    page.click(f'.series-thumb[data-uid="{rs_series}"]')
    page.wait_for_selector("#viewport[data-state=placeholder]", timeout=WAIT_MS)
    assert page.locator("#rt-panel").is_hidden()
    assert page.get_attribute("#viewport", "data-rt-ready") == ""
    assert page.inner_text("#dose") == "–"
    assert not errors, errors
