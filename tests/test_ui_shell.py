"""One UI (issue 11), in real headless Chromium: the application shell shared by the viewer and the worklist
page, the study list (columns, resizing, sorting, paging), the viewport (refit, opening window, preset menu,
several measurements, orientation markers, slice position, ROI statistics checked against pydicom/numpy), the
tags panel (names from pydicom's data dictionary, indented sequences) and the Send menu (no default node, each
node's last C-ECHO).

One server and one browser for the module. Waits are for events on the page (selectors, functions, requests),
never for time. Screenshots go to $HOUNSFIELD_TEST_ARTIFACTS (else a temporary folder), at a desktop and a
tablet-portrait size.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
import requests
from pydicom import datadict
from pydicom.uid import generate_uid

from browser import SIZES, artifacts_dir, chromium_page, settle, shots, stow_series
from conftest import require_shared_data

pytestmark = pytest.mark.browser

WAIT_MS = 120_000  # an event that never comes fails the test; none depends on how fast it comes
DESKTOP = SIZES["desktop"]
PAGING = 12  # synthetic studies named PAGING^Pnn, for sorting and paging


@dataclass
class Site:
    server: Any
    page: Any
    errors: list[str]
    artifacts: Path
    ct: list[pydicom.Dataset]  # the 28-slice head CT, by InstanceNumber
    ct_study: str
    nowindow: pydicom.Dataset  # a coronal CT without a stored window
    paging: list[pydicom.Dataset]
    item_id: int  # a worklist item whose study is the head CT
    missing_item_id: int  # one whose study is not in the archive


def synthetic(source: Path, out: Path, **attrs: Any) -> pydicom.Dataset:
    ds = pydicom.dcmread(source)
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    for keyword, value in attrs.items():
        if value is None:
            if keyword in ds:
                delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    ds.save_as(out)
    return pydicom.dcmread(out)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory):
    from support import Server, free_port

    shared = require_shared_data()
    tmp = tmp_path_factory.mktemp("ui-shell")
    ct_files = sorted((shared / "ct/philips_head_phantom_5mm").glob("*.dcm"))
    small = shared / "ct/CT_small.dcm"
    nowindow = synthetic(small, tmp / "nowindow.dcm", PatientName="NOWINDOW^CORONAL", PatientID="NOWIN1",
                         ImageOrientationPatient=[1, 0, 0, 0, 0, -1], WindowCenter=None, WindowWidth=None,
                         SliceLocation=None)
    assert "WindowCenter" not in nowindow
    paging = []
    for n in range(1, PAGING + 1):  # names and dates in different orders
        day = datetime.date(2020, 1, 1) + datetime.timedelta(days=(n * 7) % PAGING)
        paging.append(synthetic(small, tmp / f"paging{n}.dcm", PatientName=f"PAGING^P{n:02d}", PatientID=f"PGID{n:02d}",
                                PatientBirthDate=f"19{50 + n}0203", AccessionNumber=f"ACC{n:03d}",
                                StudyDate=day.strftime("%Y%m%d"), StudyDescription=f"Paging study {n}"))
    server = Server(tmp / "data").start()
    try:
        stow_series(server, ct_files + [tmp / "nowindow.dcm"] + [tmp / f"paging{n}.dcm" for n in range(1, PAGING + 1)])
        ct = sorted((pydicom.dcmread(f) for f in ct_files), key=lambda d: int(d.InstanceNumber))
        today = datetime.date.today().isoformat()
        ids = []
        for pid, study in (("WLVIEW1", ct[0].StudyInstanceUID), ("WLVIEW2", generate_uid())):
            r = requests.post(f"{server.url}/api/worklist/items", timeout=60, json={
                "patient_id": pid, "patient_name": f"{pid}^TEST", "modality": "CT", "station_aet": "CT_ROOM9",
                "start": f"{today} 09:30", "study_instance_uid": study})
            assert r.status_code == 201, r.text
            body = r.json()  # one item (or, as the API used to answer, a list of one)
            ids.append((body[0] if isinstance(body, list) else body)["id"])
        for name, port in (("zz-self", server.dicom_port), ("aa-closed", free_port())):
            r = requests.put(f"{server.url}/api/peers/{name}", timeout=60, json={
                "name": name, "ae_title": "HOUNSFIELD" if name == "zz-self" else "NOBODY", "host": "127.0.0.1",
                "port": port})
            assert r.status_code == 200, r.text
        browser = chromium_page(DESKTOP)
        page, errors = next(browser)
        try:
            yield Site(server, page, errors, artifacts_dir(tmp / "artifacts"), ct, ct[0].StudyInstanceUID, nowindow,
                       paging, ids[0], ids[1])
        finally:
            browser.close()
    finally:
        server.stop()


# ------------------------------------------------------------------------------------------------ helpers
def home(site: Site, query: str = "") -> None:
    site.page.set_viewport_size(DESKTOP)
    site.page.goto(f"{site.server.url}/ui/{query}")
    site.page.wait_for_selector(f'tr.study[data-uid="{site.ct_study}"]', timeout=WAIT_MS)


def open_study(site: Site, uid: str) -> None:
    site.page.click(f'tr.study[data-uid="{uid}"]')
    site.page.wait_for_selector('#viewport[data-state=ready][data-series]:not([data-series=""])', timeout=WAIT_MS)
    site.page.wait_for_function("uid => hf.state.study && hf.state.shown && hf.state.shown.study === uid",
                                arg=uid, timeout=WAIT_MS)


def wait_slice(site: Site, index: int) -> None:
    site.page.wait_for_selector(f'#viewport[data-state=ready][data-slice="{index}"]', timeout=WAIT_MS)


def drag(page: Any, a: list[float], b: list[float], steps: int = 8) -> None:
    page.mouse.move(*a)
    page.mouse.down()
    page.mouse.move(*b, steps=steps)
    page.mouse.up()


def no_page_errors(site: Site) -> None:
    errors, site.errors[:] = list(site.errors), []
    assert not errors, errors


def fitted(site: Site) -> dict[str, float]:
    """The drawn image's box against the canvas's: fitted when it lies inside and touches two opposite sides."""
    return site.page.evaluate("""() => {
        const v = hf.viewport, r = v.canvas.getBoundingClientRect();
        const [x0, y0] = v.toClient(0, 0), [x1, y1] = v.toClient(v.image.columns, v.image.rows);
        return { left: x0 - r.left, top: y0 - r.top, right: r.right - x1, bottom: r.bottom - y1,
                 canvasWidth: v.canvas.width, cssWidth: r.width, cssHeight: r.height }; }""")


def assert_fitted(site: Site, context: str) -> None:
    box = fitted(site)
    margins = [box["left"], box["top"], box["right"], box["bottom"]]
    assert min(margins) >= -1, (context, "the image runs off the canvas", box)
    horizontal, vertical = box["left"] + box["right"], box["top"] + box["bottom"]
    assert min(horizontal, vertical) <= 2, (context, "the image does not fill the canvas", box)
    assert abs(box["canvasWidth"] - box["cssWidth"]) <= 1, (context, "the canvas has not followed its box", box)


# ------------------------------------------------------------------------------------------------ 1. shell
def test_one_shell_for_viewer_and_worklist(site: Site) -> None:
    page = site.page
    home(site)

    def shell() -> dict[str, Any]:
        return page.evaluate("""() => {
            const h = document.querySelector('header.app-header');
            const css = getComputedStyle(document.documentElement);
            return { links: [...h.querySelectorAll('nav a')].map(a => [a.textContent.trim(), a.getAttribute('href')]),
                     active: h.querySelector('nav a.active')?.textContent.trim(), brand: h.querySelector('.brand').textContent,
                     bg: getComputedStyle(document.body).backgroundColor, headerBg: getComputedStyle(h).backgroundColor,
                     font: getComputedStyle(document.body).fontFamily, accent: css.getPropertyValue('--accent').trim(),
                     sheets: [...document.styleSheets].map(s => s.href && new URL(s.href).pathname) }; }""")

    viewer = shell()
    assert viewer["links"] == [["Viewer", "/ui/"], ["Remote", "/ui/remote.html"], ["Worklist", "/worklist"],
                               ["Routing", "/ui/routing.html"], ["Audit", "/ui/audit.html"], ["HL7", "/ui/hl7.html"],
                               ["API", "/docs"]], viewer  # logins off: every page
    assert viewer["active"] == "Viewer" and "/ui/css/theme.css" in viewer["sheets"], viewer
    shots(site.page, site.artifacts, "ui-shell-viewer-home")
    page.click("#nav-worklist")
    page.wait_for_selector(f'#schedule tr[data-id="{site.item_id}"]', timeout=WAIT_MS)
    worklist = shell()
    assert worklist["active"] == "Worklist" and "/ui/css/theme.css" in worklist["sheets"], worklist
    for key in ("links", "brand", "bg", "headerBg", "font", "accent"):
        assert worklist[key] == viewer[key], (key, "the two pages differ", viewer[key], worklist[key])
    assert viewer["bg"] == "rgb(17, 20, 24)", viewer  # the dark theme on both

    # the item ID is in the schedule and offered where Explain asks for it
    row = page.locator(f'#schedule tr[data-id="{site.item_id}"]')
    assert row.locator("td.item-id").inner_text() == str(site.item_id)
    options = page.eval_on_selector_all("#item-ids option", "os => os.map(o => o.value)")
    assert {str(site.item_id), str(site.missing_item_id)} <= set(options), options
    missing = page.locator(f'#schedule tr[data-id="{site.missing_item_id}"]')
    assert "not received" in missing.inner_text() and missing.locator("a.study-link").count() == 0
    shots(site.page, site.artifacts, "ui-shell-worklist")

    # the item's link opens its study in the viewer
    link = row.locator("a.study-link")
    assert link.get_attribute("href") == f"/ui/?study={site.ct_study}"
    link.click()
    page.wait_for_selector(f'tr.study.selected[data-uid="{site.ct_study}"]', timeout=WAIT_MS)
    page.wait_for_function("uid => hf.state.shown && hf.state.shown.study === uid && "
                           "document.querySelector('#viewport').dataset.state === 'ready'", arg=site.ct_study,
                           timeout=WAIT_MS)
    assert page.locator("#nav-studies").get_attribute("class") == "active"
    shots(site.page, site.artifacts, "ui-shell-viewer-from-worklist")
    # a study the archive does not have: said so, nothing opened
    unknown = generate_uid()
    page.goto(f"{site.server.url}/ui/?study={unknown}")
    page.wait_for_function("uid => document.querySelector('#message').textContent.includes(uid)", arg=unknown,
                           timeout=WAIT_MS)
    assert "not in the archive" in page.inner_text("#message")
    assert page.get_attribute("#viewport", "data-state") == "empty"
    no_page_errors(site)


# ------------------------------------------------------------------------------------------------ 2. study list
def column_texts(site: Site) -> list[list[str]]:
    return site.page.eval_on_selector_all("#study-list tr.study", "rows => rows.map(r => [...r.cells].map(c => c.textContent))")


STATIC = Path(__file__).resolve().parents[1] / "src" / "hounsfield" / "web" / "static"
NAV_LINK = re.compile(r'<a href="([^"]+)"[^>]*>([^<]+)</a>')


def test_every_page_has_the_same_navigation_with_itself_marked() -> None:
    """One shell: every page of the UI lists the same pages in the same order, and marks itself as the one on
    screen (the others are reached from any page)."""
    pages = {"index.html": "/ui/", "worklist.html": "/worklist", "remote.html": "/ui/remote.html",
             "routing.html": "/ui/routing.html", "audit.html": "/ui/audit.html", "hl7.html": "/ui/hl7.html"}
    navs = {}
    for name, href in pages.items():
        html = (STATIC / name).read_text()
        nav = html[html.index('<nav aria-label="Application">'):html.index("</nav>")]
        navs[name] = NAV_LINK.findall(nav)
        active = re.findall(r'<a href="([^"]+)" class="active"[^>]*aria-current="page"', nav)
        assert active == [href], (name, active)
    assert sorted(p.name for p in STATIC.glob("*.html")) == sorted(pages)  # a new page joins the list above
    first = navs["index.html"]
    assert [label for _, label in first] == ["Viewer", "Remote", "Worklist", "Routing", "Audit", "HL7", "API"]
    assert all(links == first for links in navs.values()), navs


def test_study_list_columns_resize_sort_and_pages(site: Site) -> None:
    page = site.page
    home(site)
    headers = page.eval_on_selector_all("#studies th", "ths => ths.map(t => t.textContent.trim())")
    assert headers == ["Patient", "ID", "Birth date", "Accession", "Date", "Modalities", "Description", "Series",
                       "Instances"], headers
    # resizable at its edge
    before = page.locator("#browser").bounding_box()["width"]
    handle = page.locator("#browser-resizer").bounding_box()
    x, y = handle["x"] + handle["width"] / 2, handle["y"] + handle["height"] / 2
    drag(page, [x, y], [x + 300, y])
    settle(page)
    after = page.locator("#browser").bounding_box()["width"]
    assert after == pytest.approx(before + 300, abs=4), (before, after)

    # every column of a study as QIDO-RS gives it, none cut
    p = site.paging[0]
    row = page.locator(f'tr.study[data-uid="{p.StudyInstanceUID}"]')
    fmt = lambda d: f"{d[:4]}-{d[4:6]}-{d[6:]}"  # noqa: E731
    assert [row.locator("td").nth(i).inner_text() for i in range(9)] == [
        str(p.PatientName), p.PatientID, fmt(p.PatientBirthDate), p.AccessionNumber, fmt(p.StudyDate), "CT",
        p.StudyDescription, "1", "1"]
    ct = page.locator(f'tr.study[data-uid="{site.ct_study}"] td')
    assert ct.nth(8).inner_text() == str(len(site.ct)) and ct.nth(7).inner_text() == "1"
    cut = page.evaluate("""() => [...document.querySelectorAll('#study-list td')]
        .filter(td => td.scrollWidth > td.clientWidth + 1).map(td => td.textContent)""")
    assert not cut, ("cut short", cut)
    shots(site.page, site.artifacts, "ui-shell-study-list-wide")

    # sortable by clicking a header: the PAGING studies, their names and dates in different orders
    page.fill("#search-patient", "PAGING")
    page.click("#search-button")
    page.wait_for_function(f"() => document.querySelectorAll('#study-list tr.study').length === {PAGING}", timeout=WAIT_MS)
    names = sorted(str(d.PatientName) for d in site.paging)
    by_date = [str(d.PatientName) for d in sorted(site.paging, key=lambda d: d.StudyDate, reverse=True)]
    assert [r[0] for r in column_texts(site)] == by_date  # newest first
    assert page.get_attribute('#studies th[data-sort="date"]', "aria-sort") == "descending"
    page.click('#studies th[data-sort="name"]')
    assert [r[0] for r in column_texts(site)] == names
    assert page.get_attribute('#studies th[data-sort="name"]', "aria-sort") == "ascending"
    assert page.get_attribute('#studies th[data-sort="date"]', "aria-sort") is None
    page.click('#studies th[data-sort="name"]')
    assert [r[0] for r in column_texts(site)] == names[::-1]
    page.click('#studies th[data-sort="birth"]')
    assert [r[2] for r in column_texts(site)] == sorted(fmt(d.PatientBirthDate) for d in site.paging)

    # paging the sorted result: the order is the whole result's, not a page's (QIDO-RS has no order, so the
    # page fetches every match once, up to a cap, and pages it itself)
    page.click('#studies th[data-sort="name"]')
    assert page.get_attribute('#studies th[data-sort="name"]', "aria-sort") == "ascending"
    searches: list[str] = []
    page.on("request", lambda req: searches.append(req.url) if "/dicom-web/studies?" in req.url else None)
    page.select_option("#page-size", "10")
    page.wait_for_function("() => document.querySelectorAll('#study-list tr.study').length === 10 && "
                           "!document.querySelector('#page-next').disabled", timeout=WAIT_MS)
    assert [r[0] for r in column_texts(site)] == names[:10]
    assert page.is_disabled("#page-prev")
    page.click("#page-next")
    page.wait_for_function(f"() => document.querySelectorAll('#study-list tr.study').length === {PAGING - 10}",
                           timeout=WAIT_MS)
    assert [r[0] for r in column_texts(site)] == names[10:]  # the next names, in order
    assert page.is_disabled("#page-next") and not page.is_disabled("#page-prev")
    assert f"11–{PAGING} of {PAGING} · page 2 of 2" in page.inner_text("#page-info")
    shots(site.page, site.artifacts, "ui-shell-study-list-page2")
    # the other way round, from the first page again: names[:10] and names[::-1][:10] are different sets, so
    # whatever order the archive answers in, a sort of one fetched page cannot pass both
    page.click('#studies th[data-sort="name"]')
    page.wait_for_function("() => document.querySelectorAll('#study-list tr.study').length === 10", timeout=WAIT_MS)
    assert [r[0] for r in column_texts(site)] == names[::-1][:10]
    page.click("#page-next")
    page.wait_for_function(f"() => document.querySelectorAll('#study-list tr.study').length === {PAGING - 10}",
                           timeout=WAIT_MS)
    assert [r[0] for r in column_texts(site)] == names[::-1][10:]
    page.click("#page-prev")
    page.wait_for_function("() => document.querySelectorAll('#study-list tr.study').length === 10", timeout=WAIT_MS)
    assert [r[0] for r in column_texts(site)] == names[::-1][:10]
    assert searches == []  # pages and orders of one search without asking the server again
    # the width stays for the next visit
    page.reload()
    page.wait_for_selector("tr.study", timeout=WAIT_MS)
    assert page.locator("#browser").bounding_box()["width"] == pytest.approx(after, abs=4)
    page.evaluate("localStorage.removeItem('hf.browserWidth')")
    no_page_errors(site)


# ------------------------------------------------------------------------------------------------ 3. viewport
def hu(ds: pydicom.Dataset) -> np.ndarray:
    return ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)


def letters(v: list[float]) -> str:
    names = [("R", "L"), ("A", "P"), ("F", "H")]
    order = sorted((i for i in range(3) if abs(v[i]) >= 0.25), key=lambda i: -abs(v[i]))
    return "".join(names[i][v[i] > 0] for i in order)


def markers(site: Site) -> dict[str, str]:
    return {side: site.page.inner_text(f"#ov-orient-{side}") for side in ("left", "right", "top", "bottom")}


def test_viewport_refits_when_the_panel_opens_and_the_window_resizes(site: Site) -> None:
    page = site.page
    home(site)
    open_study(site, site.ct_study)
    assert_fitted(site, "opened")
    width = fitted(site)["canvasWidth"]
    page.click("#toggle-meta")
    page.wait_for_function(f"() => hf.viewport.canvas.width < {width}", timeout=WAIT_MS)
    settle(page)
    assert_fitted(site, "tags panel open")
    page.click("#toggle-meta")
    page.wait_for_function(f"() => hf.viewport.canvas.width === {width}", timeout=WAIT_MS)
    assert_fitted(site, "tags panel closed")
    for size_name, size in SIZES.items():
        page.set_viewport_size(size)
        settle(page)
        assert_fitted(site, size_name)
    page.set_viewport_size(DESKTOP)
    settle(page)
    no_page_errors(site)


def test_opening_window_and_preset_menu(site: Site) -> None:
    page = site.page
    home(site)
    # a CT without a stored window: the modality's default preset, and the menu says so
    open_study(site, site.nowindow.StudyInstanceUID)
    presets = requests.get(f"{site.server.url}/ui/api/presets", timeout=60).json()
    c, w = presets["soft-tissue"]
    assert page.inner_text("#wl") == f"W {round(w)} L {round(c)}"
    assert page.input_value("#preset") == "soft-tissue"
    page.keyboard.press("0")  # no file window: back to the one it opened at
    assert page.input_value("#preset") == "soft-tissue"
    # a CT with one: the file's window, "lung", then 0 restores the file's and the menu follows
    open_study(site, site.ct_study)
    file_c, file_w = float(site.ct[0].WindowCenter[0]), float(site.ct[0].WindowWidth[0])
    assert page.inner_text("#wl") == f"W {round(file_w)} L {round(file_c)}"
    assert page.input_value("#preset") == "file"
    page.select_option("#preset", "lung")
    assert page.inner_text("#wl") == "W 1500 L -600" and page.input_value("#preset") == "lung"
    page.focus("#viewport")
    page.keyboard.press("0")
    assert page.inner_text("#wl") == f"W {round(file_w)} L {round(file_c)}"
    assert page.input_value("#preset") == "file", "the menu still names the preset after the file's window came back"
    names = list(presets)
    page.keyboard.press("2")
    assert page.input_value("#preset") == names[1]
    box = page.locator("#viewport").bounding_box()
    x0, y0 = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    drag(page, [x0, y0], [x0 + 60, y0 + 30])
    assert page.input_value("#preset") == ""  # dragged: a window of its own
    assert page.locator("#preset option:checked").inner_text() == "Custom window"
    no_page_errors(site)


def test_orientation_markers_and_slice_position(site: Site) -> None:
    page = site.page
    home(site)
    open_study(site, site.ct_study)
    ds = site.ct[0]
    iop = [float(v) for v in ds.ImageOrientationPatient]
    neg = lambda v: [-x for x in v]  # noqa: E731
    expected = {"right": letters(iop[:3]), "left": letters(neg(iop[:3])), "bottom": letters(iop[3:]),
                "top": letters(neg(iop[3:]))}
    assert markers(site) == expected == {"right": "L", "left": "R", "bottom": "P", "top": "A"}
    corner = page.inner_text("#ov-series")
    assert f"Loc {float(ds.SliceLocation):.2f} mm" in corner and f"Thk {float(ds.SliceThickness):.2f} mm" in corner, corner
    page.focus("#viewport")
    page.keyboard.press("End")
    wait_slice(site, len(site.ct) - 1)
    assert f"Loc {float(site.ct[-1].SliceLocation):.2f} mm" in page.inner_text("#ov-series")
    # a coronal image: head up, feet down; no Slice Location, so the position along the plane's normal
    open_study(site, site.nowindow.StudyInstanceUID)
    assert markers(site) == {"right": "L", "left": "R", "bottom": "F", "top": "H"}
    o = np.array([float(v) for v in site.nowindow.ImageOrientationPatient])
    position = float(np.dot([float(v) for v in site.nowindow.ImagePositionPatient], np.cross(o[:3], o[3:])))
    corner = page.inner_text("#ov-series")
    assert f"Loc {position:.2f} mm" in corner and f"Thk {float(site.nowindow.SliceThickness):.2f} mm" in corner, corner
    shots(site.page, site.artifacts, "ui-shell-coronal-markers")
    no_page_errors(site)


def test_several_measurements_and_rois_in_hu(site: Site) -> None:
    page = site.page
    home(site)
    open_study(site, site.ct_study)
    ds = site.ct[0]
    row_sp, col_sp = (float(v) for v in ds.PixelSpacing)
    at = lambda x, y: page.evaluate(f"hf.imageToClient({x}, {y})")  # noqa: E731
    page.click("[data-tool=measure]")
    drag(page, at(100.5, 256.5), at(300.5, 256.5))
    assert page.inner_text("#measure") == f"{200 * col_sp:.2f} mm"
    drag(page, at(256.5, 100.5), at(256.5, 150.5))
    second = f"{50 * row_sp:.2f} mm"
    assert page.inner_text("#measure") == second
    page.mouse.click(*at(400.5, 400.5))  # a click draws nothing and replaces nothing
    assert page.inner_text("#measure") == second
    lengths = page.evaluate("hf.viewport.measurements().map(m => m.value)")
    assert lengths == pytest.approx([200 * col_sp, 50 * row_sp]), lengths

    values = hu(ds)
    # a rectangle along pixel edges: columns 100-149, rows 100-139
    page.click("[data-tool=rect]")
    drag(page, at(100, 100), at(150, 140))
    rect = values[100:140, 100:150]
    # an ellipse inscribed in columns 120-179, rows 200-259: the pixels whose centres are inside
    page.keyboard.press("e")
    drag(page, at(120, 200), at(180, 260))
    jj, ii = np.mgrid[0:values.shape[0], 0:values.shape[1]]
    inside = ((ii + 0.5 - 150) / 30) ** 2 + ((jj + 0.5 - 230) / 30) ** 2 <= 1
    ellipse = values[inside]
    page.mouse.click(*at(300, 300))  # a click again: no empty ROI
    rois = page.evaluate("hf.viewport.rois()")
    assert [r["kind"] for r in rois] == ["rect", "ellipse"], rois
    for roi, pixels, area in ((rois[0], rect, 50 * col_sp * 40 * row_sp),
                              (rois[1], ellipse, np.pi * 30 * col_sp * 30 * row_sp)):
        assert roi["n"] == pixels.size, roi
        assert roi["mean"] == pytest.approx(pixels.mean(), abs=1e-6), roi
        assert roi["sd"] == pytest.approx(pixels.std(), abs=1e-6), roi
        assert (roi["min"], roi["max"]) == (pixels.min(), pixels.max()), roi
        assert roi["area"] == pytest.approx(area), roi
        assert roi["unit"] == "HU" and roi["areaUnit"] == "mm²", roi
    shown = page.inner_text("#roi")
    assert re.search(rf"mean {ellipse.mean():.1f} HU\s+SD {ellipse.std():.1f}", shown), shown
    assert len(page.evaluate("hf.viewport.measurements()")) == 2  # the lines are still there too
    shots(site.page, site.artifacts, "ui-shell-measurements-and-rois")
    page.keyboard.press("Escape")
    assert page.evaluate("hf.viewport.annotations.length") == 0
    assert page.inner_text("#measure") == page.inner_text("#roi") == "–"
    page.keyboard.press("w")
    no_page_errors(site)


# ------------------------------------------------------------------------------------------------ 4. tags panel
def test_tags_panel_names_every_tag_and_indents_sequences(site: Site) -> None:
    page = site.page
    home(site)
    open_study(site, site.ct_study)
    ds = site.ct[0]
    page.click("#toggle-meta")
    page.wait_for_selector(f'#metadata[data-sop="{ds.SOPInstanceUID}"] tr', timeout=WAIT_MS)
    rows = page.eval_on_selector_all("#metadata tbody tr", """rows => rows.map(r => ({
        tag: r.dataset.tag, depth: +r.dataset.depth, item: r.classList.contains('item'),
        name: r.querySelector('td.name').textContent, value: r.querySelector('td.value').textContent,
        indent: parseFloat(getComputedStyle(r.querySelector('td.name')).paddingLeft) }))""")
    by_tag = {r["tag"]: r for r in rows if r["depth"] == 0}
    assert by_tag["00080012"]["name"] == "Instance Creation Date"
    assert by_tag["0008002A"]["name"] == "Acquisition DateTime"
    unnamed = [r for r in rows if not r["name"].strip()]
    assert not unnamed, unnamed
    for r in rows:
        if r["item"]:
            continue
        tag = int(r["tag"], 16)
        if datadict.dictionary_has_tag(tag):
            assert r["name"] == datadict.dictionary_description(tag), r
    top_level = {f"{int(e.tag):08X}" for e in ds}
    assert top_level <= set(by_tag) | {"7FE00010"}, top_level - set(by_tag)
    # a sequence: its items one step in, their elements two
    seq = f"{datadict.tag_for_keyword('ReferencedImageSequence'):08X}"
    i = next(k for k, r in enumerate(rows) if r["tag"] == seq and r["depth"] == 0)
    item, child = rows[i + 1], rows[i + 2]
    assert item["item"] and item["name"] == "Item 1" and item["depth"] == 1, item
    assert child["depth"] == 2 and not child["item"], child
    assert rows[i]["indent"] < item["indent"] < child["indent"]
    assert child["name"] == next(iter(ds.ReferencedImageSequence[0])).name, child
    page.fill("#meta-filter", "0008,0012")
    page.wait_for_function("() => document.querySelectorAll('#metadata tbody tr').length === 1")
    assert page.inner_text("#metadata").startswith("(0008,0012)")
    shots(site.page, site.artifacts, "ui-shell-tags-panel")
    page.fill("#meta-filter", "")
    # the panel follows the instance shown
    page.focus("#viewport")
    page.keyboard.press("End")
    wait_slice(site, len(site.ct) - 1)
    page.wait_for_selector(f'#metadata[data-sop="{site.ct[-1].SOPInstanceUID}"] tr', timeout=WAIT_MS)
    assert site.ct[-1].SOPInstanceUID in page.inner_text("#metadata")
    page.click("#toggle-meta")
    no_page_errors(site)


# ------------------------------------------------------------------------------------------------ 5. send menu
def test_send_menu_has_no_default_and_shows_each_nodes_echo(site: Site) -> None:
    page = site.page
    home(site)
    open_study(site, site.ct_study)
    options = page.eval_on_selector_all("#send-peer option", "os => os.map(o => [o.value, o.textContent])")
    assert options[0][0] == "" and page.input_value("#send-peer") == "", options
    assert [v for v, _ in options[1:]] == ["aa-closed", "zz-self"], options
    assert all("not checked yet" in t for _, t in options[1:]), options
    assert page.is_disabled("#send-button") and page.is_disabled("#echo-button")
    page.select_option("#send-peer", "zz-self")
    assert not page.is_disabled("#send-button")
    page.click("#echo-button")
    page.wait_for_selector("#send-status[data-state=ok]", timeout=WAIT_MS)
    assert "answered" in page.inner_text("#send-status")
    page.select_option("#send-peer", "aa-closed")
    page.click("#echo-button")
    page.wait_for_selector("#send-status[data-state=failed]", timeout=WAIT_MS)
    states = page.eval_on_selector_all("#send-peer option", "os => os.map(o => [o.value, o.dataset.echo, o.textContent])")
    assert [(v, s) for v, s, _ in states[1:]] == [("aa-closed", "failed"), ("zz-self", "ok")], states
    assert "echo OK" in states[2][2] and "echo failed" in states[1][2], states
    assert page.input_value("#send-peer") == "aa-closed"  # the user's choice stays
    shots(site.page, site.artifacts, "ui-shell-send-menu")
    # the last known state is the server's: a new visit sees it, still with nothing chosen
    home(site)
    open_study(site, site.ct_study)
    page.wait_for_selector('#send-peer option[value="zz-self"][data-echo=ok]', state="attached", timeout=WAIT_MS)
    assert page.input_value("#send-peer") == ""
    last = requests.get(f"{site.server.url}/ui/api/peers", timeout=60).json()
    assert {p["name"]: p["last_echo"]["ok"] for p in last} == {"aa-closed": False, "zz-self": True}
    no_page_errors(site)
