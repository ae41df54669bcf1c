"""The web viewer in real headless Chromium: open the 28-slice CT, scroll, window, preset, HU, measure."""

from __future__ import annotations

import re

import pydicom
import pytest

from browser import ARTIFACTS, chromium_page, stow_series

pytestmark = pytest.mark.browser


@pytest.fixture
def browser_page():
    yield from chromium_page()


def wait_slice(page, index: int) -> None:
    page.wait_for_selector(f'#viewport[data-state=ready][data-slice="{index}"]', timeout=20_000)


def test_viewer_ct(server, shared_data, browser_page, request):
    page, errors = browser_page
    files = sorted((shared_data / "ct/philips_head_phantom_5mm").glob("*.dcm"))
    stow_series(server, files)
    slices = sorted((pydicom.dcmread(f) for f in files), key=lambda d: int(d.InstanceNumber))
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / re.sub(r"[^\w.-]", "_", request.node.name)

    page.goto(f"{server.url}/")
    assert page.url.endswith("/ui/")
    assert page.locator("#nav-worklist").get_attribute("href") == "/worklist"
    # search by patient ID and open the study
    page.fill("#search-patient", slices[0].PatientID)
    page.click("#search-button")
    page.wait_for_selector("tr.study")
    assert page.locator("tr.study").count() == 1
    page.click("tr.study")
    page.wait_for_selector(".series-thumb img")
    wait_slice(page, 0)
    assert page.inner_text("#slice") == "1 / 28"
    first = lambda v: float(v[0] if isinstance(v, pydicom.multival.MultiValue) else v)  # noqa: E731
    file_w, file_c = round(first(slices[0].WindowWidth)), round(first(slices[0].WindowCenter))
    file_window = f"W {file_w} L {file_c}"
    assert page.inner_text("#wl") == file_window

    # scroll: keys and wheel
    page.focus("#viewport")
    for _ in range(3):
        page.keyboard.press("ArrowDown")
    wait_slice(page, 3)
    assert page.inner_text("#slice") == "4 / 28"
    box = page.locator("#viewport").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    for _ in range(10):
        page.mouse.wheel(0, 100)
        page.wait_for_timeout(30)
    wait_slice(page, 13)
    assert page.inner_text("#slice") == "14 / 28"
    page.screenshot(path=f"{shot}-slice14.png")

    # drag the window: the displayed W/L follows
    x0, y0 = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move(x0 + 80, y0 + 40, steps=8)
    page.mouse.up()
    dragged = page.inner_text("#wl")
    assert dragged != file_window
    w, c = map(int, re.match(r"W (-?\d+) L (-?\d+)", dragged).groups())
    assert w > file_w and c > file_c

    # lung preset from the menu
    page.select_option("#preset", "lung")
    assert page.inner_text("#wl") == "W 1500 L -600"
    page.screenshot(path=f"{shot}-lung.png")

    # the HU under the cursor equals stored * slope + intercept from the file
    index = int(page.get_attribute("#viewport", "data-slice"))
    ds = slices[index]
    pixels = ds.pixel_array
    for col, row in ((256, 256), (120, 300), (10, 10)):
        x, y = page.evaluate(f"hf.imageToClient({col + 0.5}, {row + 0.5})")
        page.mouse.move(x, y)
        expected = int(pixels[row, col]) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        page.wait_for_function(f"document.querySelector('#pos').textContent === '{col}, {row}'")
        shown = page.inner_text("#hu")
        assert float(shown.split()[0]) == pytest.approx(expected), (col, row, shown)
        assert shown.endswith("HU")

    # measure 200 pixels along a row: 200 x column spacing
    page.click("[data-tool=measure]")
    spacing = float(ds.PixelSpacing[1])
    a = page.evaluate("hf.imageToClient(100.5, 256.5)")
    b = page.evaluate("hf.imageToClient(300.5, 256.5)")
    page.mouse.move(*a)
    page.mouse.down()
    page.mouse.move(*b, steps=10)
    page.mouse.up()
    assert page.inner_text("#measure") == f"{200 * spacing:.2f} mm"
    # and a vertical one of 50 pixels (row spacing)
    a = page.evaluate("hf.imageToClient(256.5, 100.5)")
    b = page.evaluate("hf.imageToClient(256.5, 150.5)")
    page.mouse.move(*a)
    page.mouse.down()
    page.mouse.move(*b, steps=5)
    page.mouse.up()
    assert page.inner_text("#measure") == f"{50 * float(ds.PixelSpacing[0]):.2f} mm"
    page.screenshot(path=f"{shot}-measure.png")

    # metadata panel, zoom and reset, keyboard tools
    page.click("#toggle-meta")
    page.wait_for_selector("#metadata tr")
    assert ds.SOPInstanceUID in page.inner_text("#metadata")
    zoom_before = page.inner_text("#zoom")
    page.keyboard.press("z")
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move(x0, y0 - 100, steps=5)
    page.mouse.up()
    assert page.inner_text("#zoom") != zoom_before
    page.keyboard.press("r")
    page.keyboard.press("End")
    wait_slice(page, 27)
    page.screenshot(path=f"{shot}-end.png")
    assert not errors, errors


def test_viewer_multiframe_cine(server, shared_data, browser_page):
    page, errors = browser_page
    stow_series(server, [shared_data / "multiframe/eCT_Supplemental.dcm"])
    page.goto(f"{server.url}/ui/")
    page.click("tr.study")
    wait_slice(page, 0)
    assert page.inner_text("#slice") == "1 / 2"
    page.click("#cine")
    page.wait_for_selector('#viewport[data-slice="1"]', timeout=10_000)
    page.click("#cine")
    assert "Cine" in page.inner_text("#cine")
    assert not errors, errors
