"""The Remote page in real headless Chromium (issue 14): pick a second hounsfield or an Orthanc, search its
studies, retrieve one by C-MOVE or C-GET with the progress bar, then open it in the viewer; the archive then
holds exactly the instances the node had, pixel for pixel. Waits are for events on the page, never for time."""

from __future__ import annotations

import io
from typing import Any, Iterator

import pytest
import requests
from pydicom import dcmread

from browser import artifacts_dir, chromium_page
from remote_support import Site, remote_site

pytestmark = pytest.mark.browser
WAIT_MS = 120_000


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Site, Any, list[str], Any]]:
    folder = tmp_path_factory.mktemp("remote-ui")
    for trio in remote_site(folder, ("uimove", "uiget")):
        for page, errors in chromium_page():
            yield trio, page, errors, artifacts_dir(folder / "shots")


def archived(site: Site, study_uid: str) -> dict[str, bytes]:
    records = requests.get(f"{site.local.url}/api/instances", params={"StudyInstanceUID": study_uid},
                           timeout=60).json()
    return {r["SOPInstanceUID"]: bytes(dcmread(io.BytesIO(requests.get(
        f"{site.local.url}/api/instances/{r['SOPInstanceUID']}/file", timeout=60).content)).PixelData)
        for r in records}


def open_remote(page: Any, site: Site, peer: str) -> None:
    page.goto(f"{site.local.url}/ui/remote.html")
    page.wait_for_selector(f'#remote-peer option[value="{peer}"]', state="attached", timeout=WAIT_MS)
    page.select_option("#remote-peer", peer)


def search(page: Any, **fields: str) -> None:
    page.click("#remote-clear")
    for selector, value in fields.items():
        page.fill(f"#{selector}", value)
    page.click("#remote-search-button")


@pytest.mark.parametrize("method", ["move", "get"])
@pytest.mark.parametrize("peer", ["second", "orthanc"])
def test_search_retrieve_and_open_a_remote_study(site, peer: str, method: str) -> None:
    trio, page, errors, shots = site
    study = trio.studies[f"{peer}-ui{method}"]
    open_remote(page, trio, peer)
    page.click("#remote-echo")
    page.wait_for_selector("#remote-echo-status.ok", timeout=WAIT_MS)

    search(page, **{"q-id": study.patient_id})
    row = page.locator(f'tr.remote-study[data-uid="{study.study_uid}"]')
    row.wait_for(timeout=WAIT_MS)
    assert page.locator("tr.remote-study").count() == 1
    cells = row.locator("td").all_inner_texts()
    assert cells[:5] == [f"PATIENT^{study.patient_id}", study.patient_id, "2024-01-15", "CT", study.accession], cells
    assert cells[7] == "3", cells
    # the other fields find it too: a name prefix, the date range, modality, accession
    search(page, **{"q-name": f"PATIENT^{study.patient_id}", "q-date-from": "2024-01-01", "q-date-to": "2024-01-31",
                    "q-modality": "ct", "q-accession": study.accession})
    row.wait_for(timeout=WAIT_MS)
    search(page, **{"q-id": study.patient_id, "q-date-from": "2023-01-01", "q-date-to": "2023-01-31"})
    page.wait_for_function("() => document.querySelector('#remote-status').textContent.startsWith('No study')",
                           timeout=WAIT_MS)
    assert page.locator("tr.remote-study").count() == 0

    search(page, **{"q-id": study.patient_id})
    row.wait_for(timeout=WAIT_MS)
    page.select_option("#remote-method", method)
    row.locator("button.retrieve-button").click()
    cell = row.locator("td.retrieve")
    page.wait_for_selector(f'tr.remote-study[data-uid="{study.study_uid}"] td.retrieve[data-state]', timeout=WAIT_MS)
    assert cell.get_attribute("data-state") == "completed", cell.inner_text()
    assert row.locator("progress").get_attribute("value") == "100"
    assert "3 instances here" in cell.inner_text()
    page.screenshot(path=str(shots / f"remote-{peer}-{method}.png"))
    assert archived(trio, study.study_uid) == study.pixels

    link = row.locator("a.open-study")
    assert link.get_attribute("href") == f"/ui/?study={study.study_uid}"
    link.click()
    page.wait_for_selector(f'tr.study.selected[data-uid="{study.study_uid}"]', timeout=WAIT_MS)
    page.wait_for_function("uid => hf.state.shown && hf.state.shown.study === uid && "
                           "document.querySelector('#viewport').dataset.state === 'ready'", arg=study.study_uid,
                           timeout=WAIT_MS)
    assert errors == []


def test_a_node_that_does_not_answer_is_said_so(site) -> None:
    trio, page, errors, _ = site
    open_remote(page, trio, "dead")
    page.click("#remote-echo")
    page.wait_for_selector("#remote-echo-status.error", timeout=WAIT_MS)
    assert "not established" in page.inner_text("#remote-echo-status")
    search(page, **{"q-id": "ANYONE"})
    page.wait_for_selector("#remote-status.error", timeout=WAIT_MS)
    assert "not established" in page.inner_text("#remote-status")
    assert errors == []
