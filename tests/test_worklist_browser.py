"""A receptionist in real headless Chromium: adds an item through the form (client- and server-side
validation), sees it in today's schedule, and a modality's findscu query then returns it."""

from __future__ import annotations

from pathlib import Path

import pytest
from browser import ARTIFACTS, chromium_page
from test_worklist_common import TODAY, findscu, modality_query, ymd


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
        page.screenshot(path=str(ARTIFACTS / "worklist.png"), full_page=True)
    answers = findscu(server.dicom_port, modality_query(ScheduledProcedureStepStartDate=ymd(TODAY), Modality="CT",
                                                        ScheduledStationAETitle="CT_ROOM1"), tmp_path / "f")
    assert [(str(a.PatientID), str(a.PatientName), str(a.AccessionNumber)) for a in answers] == [
        ("WEB1", "WEB^PATIENT", "WEBACC1")]
