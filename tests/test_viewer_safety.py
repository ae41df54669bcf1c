"""The viewer never shows the pixels of one instance with the annotations of another, in real headless Chromium.

One server and one browser for the module. Objects of every kind in the shared data (CT, MR, CR MONOCHROME1,
multi-frame, colour RGB / YBR / palette, compressed, SEG, RT Structure Set, RT Plan, RT Dose, ECG, SR) are
opened one after the other so that every kind follows every other kind once; after each switch the viewport
must show that instance: its pixels (the browser's rendering compared with the server's own render route for
that instance and window) or, for an object without an image, a black canvas and a placeholder naming its
SOP class, and in the corner the patient of that instance. Responses that arrive for a series no longer
selected are dropped; deleting the study on screen clears the viewport and keeps the confirmation; errors
about broken stored files show no path of the data directory, neither in a response nor on the page.
"""

from __future__ import annotations

import base64
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
import requests
from PIL import Image
from pydicom.uid import UID

from browser import artifacts_dir, chromium_page, shots, stow_series
from conftest import require_shared_data

pytestmark = pytest.mark.browser

WAIT_MS = 120_000  # an event that does not come at all fails the test; no test depends on how fast it comes

KINDS: dict[str, str] = {  # label: file in the shared data (each its own study, but the three of one RT set)
    "CT": "ct/CT_small.dcm",
    "MR": "mr/MR_small.dcm",
    "CR MONOCHROME1": "cr/CR_dicomdir_6154.dcm",
    "Enhanced CT multi-frame": "multiframe/eCT_Supplemental.dcm",
    "US multi-frame YBR JPEG": "us/examples_ybr_color.dcm",
    "RGB colour": "colour/SC_rgb.dcm",
    "palette colour": "colour/examples_palette.dcm",
    "JPEG lossless": "compressed/JPGLosslessP14SV1_1s_1f_8b.dcm",
    "JPEG 2000": "compressed/JPEG2000.dcm",
    "SEG": "other/liver_1frame.dcm",
    "planning CT": "rt/dicompyler_breast/ct.0.dcm",
    "RT Structure Set": "rt/dicompyler_breast/rtss.dcm",
    "RT Plan": "rt/dicompyler_breast/rtplan.dcm",
    "RT Dose": "rt/edge/rtdose_pydicom.dcm",
    "ECG": "other/waveform_ecg.dcm",
    "SR": "other/test-SR.dcm",
}
DELETED = "us/US1_UNCR.dcm"  # its study is deleted while on screen
BROKEN = {  # stored, then broken behind the archive's back
    "missing": "edge/ExplVR_BigEnd.dcm",  # file removed from disk
    "truncated": "mr/MR-SIEMENS-DICOM-WithOverlays.dcm",  # pixel data cut short
    "garbage": "us/gdcm-US-ALOKA-16.dcm",  # not DICOM any more
}
PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


@dataclass(frozen=True)
class Obj:
    label: str
    path: Path
    study: str
    series: str
    sop: str
    patient_name: str
    patient_id: str
    sop_class: str  # its name as the placeholder says it: "RT Structure Set"
    image: bool


def describe(label: str, path: Path) -> Obj:
    ds = pydicom.dcmread(path, stop_before_pixels=False)
    return Obj(label, path, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID,
               str(ds.get("PatientName", "") or ""), str(ds.get("PatientID", "") or ""),
               UID(ds.SOPClassUID).name.removesuffix(" Storage"), any(k in ds for k in PIXEL_KEYWORDS))


@dataclass
class Site:
    server: Any
    page: Any
    errors: list[str]
    objects: dict[str, Obj]
    deleted: Obj
    broken: dict[str, Obj]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory):
    """One server holding every kind, one browser page: the module's tests share both."""
    from support import Server

    shared = require_shared_data()
    objects = {label: describe(label, shared / rel) for label, rel in KINDS.items()}
    deleted = describe("deleted", shared / DELETED)
    broken = {label: describe(label, shared / rel) for label, rel in BROKEN.items()}
    everything = [*objects.values(), deleted, *broken.values()]
    assert len({o.sop for o in everything}) == len(everything), "the objects must be distinct instances"
    studies = [o.study for o in everything if not o.path.parent.name == "dicompyler_breast"]
    assert len(set(studies)) == len(studies), "each object but the RT set must be a study of its own"
    server = Server(tmp_path_factory.mktemp("viewer-safety") / "data").start()
    try:
        stow_series(server, [o.path for o in everything])
        browser = chromium_page()
        page, errors = next(browser)
        try:
            yield Site(server, page, errors, objects, deleted, broken)
        finally:
            browser.close()
    finally:
        server.stop()


# ------------------------------------------------------------------------------------------------ helpers
def home(site: Site) -> None:
    site.page.goto(f"{site.server.url}/ui/")
    site.page.wait_for_selector(f'tr.study[data-uid="{site.objects["CT"].study}"]', timeout=WAIT_MS)


def series_of_study(site: Site, obj: Obj) -> int:
    return sum(o.study == obj.study for o in [*site.objects.values(), site.deleted, *site.broken.values()])


def open_object(site: Site, obj: Obj) -> None:
    """Switch the viewer to ``obj`` as a user does: its study's row, and its thumbnail when the study has more
    than one series (clicked as soon as it is there, while the study's first series may still be loading)."""
    page = site.page
    if page.locator(f'tr.study.selected[data-uid="{obj.study}"]').count() == 0:
        page.click(f'tr.study[data-uid="{obj.study}"]')
    if series_of_study(site, obj) > 1:
        page.click(f'.series-thumb[data-uid="{obj.series}"]', timeout=WAIT_MS)


def wait_shown(site: Site, obj: Obj) -> None:
    """Until the viewport says it shows ``obj`` (pixels, placeholder or error), whatever it showed before; a
    viewer that does not say which instance it shows (data-sop) is waited for until it has settled with the
    patient of ``obj`` in the corner, so that the checks that follow say what is wrong on the screen."""
    try:
        site.page.wait_for_function(
            """([sop, pid]) => {
                 const vp = document.querySelector('#viewport');
                 if (vp.dataset.sop !== undefined) return vp.dataset.sop === sop && vp.dataset.state !== 'loading';
                 const patient = document.querySelector('#ov-patient').textContent.split('\\n')[1];
                 return ['ready', 'error', 'placeholder'].includes(vp.dataset.state) && patient === pid; }""",
            arg=[obj.sop, obj.patient_id], timeout=WAIT_MS)
    except Exception as exc:  # noqa: BLE001 - the page's state says more than a timeout
        raise AssertionError(f"the viewport never showed {obj.label} ({obj.sop}): {viewport_state(site)}") from exc


def viewport_state(site: Site) -> dict[str, Any]:
    return site.page.evaluate("""() => {
        const vp = document.querySelector('#viewport'), t = (s) => document.querySelector(s)?.textContent ?? null;
        return { state: vp.dataset.state, sop: vp.dataset.sop, frame: vp.dataset.frame,
                 patient: t('#ov-patient'), series: t('#ov-series'), window: t('#ov-window'),
                 placeholder: t('#placeholder'), message: t('#message'), wl: t('#wl'), hu: t('#hu'),
                 slice: t('#slice'), measure: t('#measure') }; }""")


CANVAS = """() => {
    const v = hf.viewport, c = v.canvas;
    const shown = c.toDataURL();
    v.dirtyPixels = true;
    v.draw();  // drawn again from the image the viewport holds now: the canvas must not change
    const stable = c.toDataURL() === shown;
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let blank = true;
    for (let i = 0; i < d.length; i += 4) if (d[i] || d[i + 1] || d[i + 2]) { blank = false; break; }
    return { stable, blank, hasImage: v.image !== null, center: v.center, width: v.width,
             rows: v.image?.rows, columns: v.image?.columns,
             pixels: v.image ? v.offscreen.toDataURL('image/png') : null };
}"""

_RENDERED: dict[tuple[str, int, float, float], np.ndarray] = {}


def server_render(site: Site, obj: Obj, frame: int, center: float, width: float) -> np.ndarray:
    """The instance's frame through the server's own render route, with the window the browser shows."""
    key = (obj.sop, frame, center, width)
    if key not in _RENDERED:
        r = requests.get(f"{site.server.url}/dicom-web/studies/{obj.study}/series/{obj.series}/instances/"
                         f"{obj.sop}/frames/{frame + 1}/rendered", params={"window": f"{center!r},{width!r}"},
                         headers={"Accept": "image/png"}, timeout=120)
        assert r.status_code == 200, (obj.label, r.status_code, r.text[:300])
        _RENDERED[key] = np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB"), dtype=np.int16)
    return _RENDERED[key]


def decode_data_url(url: str) -> np.ndarray:
    data = base64.b64decode(url.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)


def check_shows(site: Site, obj: Obj, after: str = "") -> None:
    """The viewport shows ``obj`` and nothing of any other instance."""
    wait_shown(site, obj)
    context = f"{obj.label} after {after or 'nothing'}"
    seen = viewport_state(site)
    name, pid = seen["patient"].split("\n")[:2]
    assert (name, pid) == (obj.patient_name, obj.patient_id), (context, seen)
    canvas = site.page.evaluate(CANVAS)
    assert canvas["stable"], (context, "the canvas does not show the viewport's own image", seen)
    if not obj.image:
        assert seen["state"] == "placeholder", (context, seen)
        assert seen["placeholder"] == f"{obj.sop_class} — no image to display", (context, seen)
        assert not canvas["hasImage"] and canvas["blank"], (context, "pixels left on screen", seen)
        assert (seen["window"], seen["wl"], seen["hu"], seen["slice"]) == ("", "–", "–", "–"), (context, seen)
        assert obj.sop_class in seen["series"], (context, seen)
        return
    assert seen["state"] == "ready", (context, seen)
    frame = int(seen["frame"] or 0)
    assert frame == 0 and seen["slice"].startswith("1 / "), (context, seen)
    shown = decode_data_url(canvas["pixels"])
    expected = server_render(site, obj, frame, canvas["center"], canvas["width"])
    assert shown.shape == expected.shape, (context, shown.shape, expected.shape)
    diff = np.abs(shown - expected)
    # the browser windows float32 values, the server float64 ones: a grey level apart at a boundary, no more
    assert diff.max() <= 1 and np.count_nonzero(diff) <= max(8, diff.size // 1000), \
        (context, "the canvas is not this instance's image", int(diff.max()), int(np.count_nonzero(diff)))
    js_round = lambda v: math.floor(v + 0.5)  # noqa: E731 - Math.round, not Python's round half to even
    assert seen["window"] == seen["wl"] == f"W {js_round(canvas['width'])} L {js_round(canvas['center'])}", \
        (context, seen)


def eulerian_circuit(labels: list[str]) -> list[str]:
    """A walk through ``labels`` in which every ordered pair of different labels is one step, exactly once
    (Hierholzer's algorithm on the complete directed graph)."""
    unused = {a: [b for b in labels if b != a] for a in labels}
    stack, walk = [labels[0]], []
    while stack:
        here = stack[-1]
        if unused[here]:
            stack.append(unused[here].pop())
        else:
            walk.append(stack.pop())
    return walk[::-1]


def no_page_errors(site: Site) -> None:
    errors, site.errors[:] = list(site.errors), []
    assert not errors, errors


# ------------------------------------------------------------------------------------------------ tests
def test_every_kind_after_every_kind(site: Site, tmp_path: Path) -> None:
    home(site)
    walk = eulerian_circuit(list(site.objects))
    pairs = set(zip(walk, walk[1:]))
    assert len(pairs) == len(walk) - 1 == len(site.objects) * (len(site.objects) - 1)
    previous = ""
    for label in walk:
        obj = site.objects[label]
        open_object(site, obj)
        check_shows(site, obj, previous)
        previous = label
    shots(site.page, artifacts_dir(tmp_path / "artifacts"), "viewer-safety-every-kind-last")
    no_page_errors(site)


def test_first_frame_then_scrolled_frame_of_a_multiframe(site: Site) -> None:
    """Within a series the pixels and the slice annotations move together too."""
    home(site)
    obj = site.objects["RT Dose"]
    open_object(site, obj)
    check_shows(site, obj)
    site.page.focus("#viewport")
    site.page.keyboard.press("End")
    site.page.wait_for_selector('#viewport[data-state=ready][data-frame="14"]', timeout=WAIT_MS)
    canvas = site.page.evaluate(CANVAS)
    assert canvas["stable"]
    expected = server_render(site, obj, 14, canvas["center"], canvas["width"])
    assert np.abs(decode_data_url(canvas["pixels"]) - expected).max() <= 1
    assert site.page.inner_text("#slice") == "15 / 15"
    assert "Im 15/15" in site.page.inner_text("#ov-series")
    no_page_errors(site)


def _hold(site: Site, pattern: str) -> list[Any]:
    """Hold the responses to requests matching ``pattern`` until the test lets them go."""
    held: list[Any] = []
    site.page.route(pattern, lambda route: held.append(route))
    return held


def _release(site: Site, pattern: str, held: list[Any], stale: Obj) -> None:
    """Let the held responses go, and wait until the page has dealt with them: dropped them (or, as it must
    not, shown their instance)."""
    assert held, "the request was not held"
    dropped = site.page.evaluate("hf.state.dropped")
    for route in held:
        route.continue_()
    site.page.unroute(pattern)
    site.page.wait_for_function(
        """([dropped, pid]) => hf.state.dropped > dropped ||
             document.querySelector('#ov-patient').textContent.split('\\n')[1] === pid""",
        arg=[dropped, stale.patient_id], timeout=WAIT_MS)


@pytest.mark.parametrize("after", ["RT Structure Set", "MR"])
def test_a_late_answer_for_the_previous_series_is_dropped(site: Site, after: str) -> None:
    """The classic cause: series A asked for, B opened before A's answer came; A's answer must change
    nothing."""
    home(site)
    first, stale, chosen = site.objects["RT Plan"], site.objects["CT"], site.objects[after]
    open_object(site, first)
    check_shows(site, first)
    pattern = f"**/dicom-web/studies/{stale.study}/series/{stale.series}/metadata"
    held = _hold(site, pattern)
    with site.page.expect_request(pattern):
        site.page.click(f'tr.study[data-uid="{stale.study}"]')
    assert viewport_state(site)["state"] == "loading"  # cleared at the click, before any answer
    assert site.page.evaluate(CANVAS)["blank"]
    open_object(site, chosen)
    check_shows(site, chosen, f"{stale.label} asked for")
    _release(site, pattern, held, stale)
    check_shows(site, chosen, f"{stale.label}'s late metadata")

    # the same with the image itself: A's metadata came, its pixels are late
    open_object(site, first)
    check_shows(site, first)
    pattern = f"**/ui/api/values/{stale.study}/{stale.series}/{stale.sop}?frame=0"
    held = _hold(site, pattern)
    with site.page.expect_request(pattern):
        site.page.click(f'tr.study[data-uid="{stale.study}"]')
    open_object(site, chosen)
    check_shows(site, chosen, f"{stale.label}'s pixels asked for")
    _release(site, pattern, held, stale)
    check_shows(site, chosen, f"{stale.label}'s late pixels")
    no_page_errors(site)


def test_deleting_the_study_on_screen_clears_the_viewport(site: Site, tmp_path: Path) -> None:
    home(site)
    obj = site.deleted
    open_object(site, obj)
    check_shows(site, obj)
    site.page.once("dialog", lambda dialog: dialog.accept())
    site.page.click("#delete-button")
    site.page.wait_for_function(
        """uid => !document.querySelector(`tr.study[data-uid="${uid}"]`)
                  && document.querySelectorAll('tr.study').length > 0
                  && document.querySelector('#studies').dataset.state !== 'searching'""",
        arg=obj.study, timeout=WAIT_MS)
    assert requests.get(f"{site.server.url}/api/studies/{obj.study}", timeout=60).status_code == 404
    seen = viewport_state(site)
    assert seen["message"] == f"Deleted study {obj.study}", seen  # the confirmation outlives the new search
    assert seen["state"] == "empty" and seen["sop"] == "", seen
    assert seen["patient"] == seen["series"] == seen["window"] == "", seen
    assert "deleted" in seen["placeholder"].lower(), seen
    canvas = site.page.evaluate(CANVAS)
    assert not canvas["hasImage"] and canvas["blank"], seen
    assert site.page.locator("#study-panel").is_hidden()
    shots(site.page, artifacts_dir(tmp_path / "artifacts"), "viewer-safety-deleted")
    no_page_errors(site)


def _break_files(site: Site) -> dict[str, Path]:
    files = site.server.data_dir / "files"
    stored = {label: next(files.rglob(f"{o.sop}.dcm")) for label, o in site.broken.items()}
    stored["missing"].unlink()
    data = stored["truncated"].read_bytes()
    stored["truncated"].write_bytes(data[: len(data) - len(data) // 3])
    stored["garbage"].write_bytes(b"this is no DICOM file " * 200)
    return stored


def test_errors_about_broken_files_show_no_path(site: Site) -> None:
    stored = _break_files(site)
    data_dir = site.server.data_dir
    secrets = {str(data_dir), str(data_dir.resolve()), "/files/"}
    for path in stored.values():  # the layout under the data directory
        rel = path.relative_to(data_dir)
        secrets |= {str(rel), str(rel.parent)}
    on_page = secrets | {path.name for path in stored.values()}  # users see not even the file names
    base = f"{site.server.url}/dicom-web/studies"
    for label, obj in site.broken.items():
        routes = [f"{site.server.url}/ui/api/values/{obj.study}/{obj.series}/{obj.sop}",
                  f"{site.server.url}/ui/api/values/{obj.study}/{obj.series}/{obj.sop}?frame=3",
                  f"{base}/{obj.study}/series/{obj.series}/instances/{obj.sop}/rendered",
                  f"{base}/{obj.study}/series/{obj.series}/instances/{obj.sop}/frames/1/rendered",
                  f"{base}/{obj.study}/series/{obj.series}/instances/{obj.sop}/thumbnail",
                  f"{base}/{obj.study}/series/{obj.series}/thumbnail",
                  f"{base}/{obj.study}/thumbnail"]
        for url in routes:
            r = requests.get(url, timeout=60)
            assert r.status_code >= 400, (label, url, r.status_code)
            leaked = [s for s in secrets if s in r.text]
            assert not leaked, (label, url, leaked, r.text)
    log = site.server.log_text()
    assert str(stored["missing"]) in log, "the details of a failure, with the path, go to the server's log"
    r = requests.get(f"{site.server.url}/api/instances/{site.broken['missing'].sop}/file", timeout=60)
    assert r.status_code == 500 and not [s for s in secrets if s in r.text], r.text

    home(site)
    good = site.objects["CT"]
    for label, obj in site.broken.items():
        open_object(site, good)  # an image first: none of it may stay
        check_shows(site, good)
        open_object(site, obj)
        wait_shown(site, obj)
        seen = viewport_state(site)
        assert seen["state"] == "error", (label, seen)
        assert seen["patient"].split("\n")[:2] == [obj.patient_name, obj.patient_id], (label, seen)
        text = site.page.evaluate("document.body.innerText + document.documentElement.outerHTML")
        leaked = [s for s in on_page if s in text]
        assert not leaked, (label, leaked, seen)
        canvas = site.page.evaluate(CANVAS)
        assert not canvas["hasImage"] and canvas["blank"], (label, "pixels of another instance", seen)
        assert seen["window"] == "" and seen["hu"] == "–", (label, seen)
        assert (seen["placeholder"] or "").startswith("Cannot display image 1 / 1: "), (label, seen)
        assert seen["message"] == seen["placeholder"], (label, seen)
    no_page_errors(site)
