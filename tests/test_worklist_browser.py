"""A receptionist in real headless Chromium: adds an item through the form (client- and server-side
validation), sees it in today's schedule, and a modality's findscu query then returns it; a modality typed in
lowercase is stored in capitals, and an accession number another patient already has is taken with a warning
on the page. Screenshots at each of browser.SIZES go to $HOUNSFIELD_TEST_ARTIFACTS (else a temporary folder)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import requests
from browser import artifacts_dir, chromium_page, shots
from test_worklist_common import TODAY, add_item, findscu, modality_query, ymd


@pytest.fixture(params=["sqlite"])
def database_url(request: pytest.FixtureRequest) -> str:
    return ""  # the browser side does not depend on the index; SQLite is enough here


@pytest.mark.browser
def test_receptionist_adds_item_and_modality_sees_it(server, tmp_path: Path) -> None:
    for page, _errors in chromium_page({"width": 1280, "height": 720}):
        page.goto(f"{server.url}/worklist")
        page.click("#new-item")
        form = page.locator("#item-form")
        form.locator("[name=patient_id]").fill("WEB1")
        form.locator("[name=patient_name]").fill("WEB^PATIENT")
        form.locator("[name=modality]").fill("CT")
        form.locator("[name=station_aet]").fill("CT_ROOM1")
        form.locator("[name=start]").fill(f"{TODAY.isoformat()}T11:45")
        form.locator("[name=accession_number]").fill("WEBACC1")
        form.locator("[name=patient_id]").fill("")
        page.click("#form-save")  # client side: required field empty
        assert "Patient ID" in page.locator("#form-error").inner_text()
        form.locator("[name=patient_id]").fill("WEB1")
        form.locator("[name=patient_birth_date]").fill("1970-01-01")
        form.locator("[name=patient_name]").fill("W" * 70)  # passes maxlength 194, server says PN > 64
        page.click("#form-save")
        page.wait_for_function("document.querySelector('#form-error').textContent.includes('Patient name')")
        form.locator("[name=patient_name]").fill("WEB^PATIENT")
        page.click("#form-save")
        row = page.locator("#schedule table tr", has_text="WEB1")
        row.wait_for()
        assert "SCHEDULED" in row.inner_text() and "CT_ROOM1" in page.locator("#schedule").inner_text()
        shots(page, artifacts_dir(tmp_path / "artifacts"), "worklist", full_page=True)
    answers = findscu(server.dicom_port, modality_query(ScheduledProcedureStepStartDate=ymd(TODAY), Modality="CT",
                                                        ScheduledStationAETitle="CT_ROOM1"), tmp_path / "f")
    assert [(str(a.PatientID), str(a.PatientName), str(a.AccessionNumber)) for a in answers] == [
        ("WEB1", "WEB^PATIENT", "WEBACC1")]


def fill_form(page: Any, **fields: str) -> None:
    """Open a new item's form and type ``fields`` into it, as a receptionist would."""
    page.click("#new-item")
    form = page.locator("#item-form")
    for name, value in {"station_aet": "CT_ROOM2", "start": f"{TODAY.isoformat()}T14:15", **fields}.items():
        form.locator(f"[name={name}]").fill(value)


@pytest.mark.browser
def test_lowercase_modality_and_duplicate_accession_warning(server, tmp_path: Path) -> None:
    first = add_item(server.url, patient_id="DUP1", patient_name="FIRST^PATIENT", accession_number="DUPACC7")
    assert first["warnings"] == []
    for page, errors in chromium_page({"width": 1280, "height": 720}):
        page.goto(f"{server.url}/worklist")
        page.locator("#schedule table tr", has_text="DUP1").wait_for()
        fill_form(page, patient_id="DUP2", patient_name="SECOND^PATIENT", modality="ct", accession_number="DUPACC7")
        page.click("#form-save")
        page.locator("#schedule table tr", has_text="DUP2").wait_for()
        notice = page.locator("#notice")
        notice.wait_for(state="visible")  # hidden while empty (worklist.css)
        assert "Accession number DUPACC7" in notice.inner_text(), notice.inner_text()
        assert page.locator("#form-error").inner_text() == ""
        shots(page, artifacts_dir(tmp_path / "artifacts"), "worklist-duplicate-accession", full_page=True)
        assert errors == []
    r = requests.get(f"{server.url}/api/worklist/items", params={"patient_id": "DUP2"}, timeout=30)
    assert r.status_code == 200, r.text
    assert [(i["fields"]["modality"], i["fields"]["accession_number"]) for i in r.json()["items"]] == [
        ("CT", "DUPACC7")]
