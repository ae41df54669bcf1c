"""Python plugins (issue 14) inside a real ``hounsfield serve``: a plugin for each callback and filter, one that
raises and one that sleeps beside them (C-STORE goes on: every instance is stored and told to the others,
counted, not timed; the errors are logged with the plugin's name), the documentation's example against a second
hounsfield acting as the remote worklist, and plugin files that cannot be loaded."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE

from conftest import ROOT
from factories import tiny_ct
from support import Server, free_port
from test_worklist_common import add_item, modality_query, mpps, mpps_in_progress, mwl_find
from waiting import eventually

RECORDER = '''
import json, os
from hounsfield.plugins import api

OUT = os.environ["HF_TEST_PLUGIN_OUT"]


def note(kind, **values):
    with open(OUT, "a") as f:
        f.write(json.dumps({"event": kind, **values}) + "\\n")


@api.on_started
def started(ctx: api.Context) -> None:
    note("on_started", name=ctx.name, ae_title=ctx.settings.ae_title)


@api.on_instance_stored
def stored(ctx: api.Context, instance: api.InstanceStored) -> None:
    note("on_instance_stored", sop=instance.sop_instance_uid, modality=instance.modality,
         calling_ae=instance.calling_ae, study=instance.study_instance_uid)


@api.on_study_stable
def stable(ctx: api.Context, study: api.StudyStable) -> None:
    note("on_study_stable", study=study.study_instance_uid, instances=study.instances,
         modalities=sorted(study.modalities))


@api.on_worklist_changed
def changed(ctx: api.Context, change: api.WorklistChange) -> None:
    note("on_worklist_changed", action=change.action, item=change.item_id, patient=change.patient_id)


@api.on_mpps
def performed(ctx: api.Context, event: api.MppsEvent) -> None:
    note("on_mpps", op=event.operation, uid=event.step.sop_instance_uid, status=event.step.status,
         items=event.step.item_ids)


@api.on_hl7_message
def hl7(ctx: api.Context, message: api.LoggedMessage) -> None:
    note("on_hl7_message", type=message.message_type, control=message.control_id, ack=message.ack_code)


@api.filter_incoming_store
def refuse_test_patients(ctx: api.Context, instance: api.IncomingInstance):
    if instance.text("PatientID") == "REFUSE-ME":
        return api.Reject("test patients are not archived", status=0xA7F0)
    return None


@api.filter_worklist_query
def drop_wrong_station(ctx: api.Context, query, caller: api.Caller):
    if caller.ae_title == "BADMODALITY":  # sends a station AE title no item is scheduled on
        for step in query.ScheduledProcedureStepSequence:
            step.ScheduledStationAETitle = ""
    return query


@api.filter_worklist_answer
def tag_answers(ctx: api.Context, answer, query, caller: api.Caller):
    if answer.PatientID == "HIDE-ME":
        return None
    answer.RequestedProcedureDescription = f"{answer.RequestedProcedureDescription or ''} (via plugin)"
    return answer


@api.route("/api/plugins/recorder/instances/{study}", permission="read")
def count(ctx: api.Context, study: str) -> dict:
    """How many instances a study has, as the plugin's context sees the archive."""
    return {"plugin": ctx.name, "instances": len(ctx.archive.instances(study_uid=study))}
'''

RAISER = '''
from hounsfield.plugins import api


@api.on_started
def start(ctx):
    raise RuntimeError("raiser cannot start")


@api.on_instance_stored
def explode(ctx, instance):
    raise RuntimeError(f"boom for {instance.sop_instance_uid}")


@api.filter_incoming_store
def broken_filter(ctx, instance):
    raise ValueError("a broken filter")
'''

SLEEPER = '''
import json, os, time
from hounsfield.plugins import api


@api.on_instance_stored
def slow(ctx, instance):
    time.sleep(3)
    with open(os.environ["HF_TEST_PLUGIN_OUT"], "a") as f:
        f.write(json.dumps({"event": "sleeper", "sop": instance.sop_instance_uid}) + "\\n")
'''

HL7_MESSAGE = ("MSH|^~\\&|RIS|HOSPITAL|PACS|RADIOLOGY|20260101120000||ADT^A08|PLUGIN-1|P|2.3.1\r"
               "PID|1||NOBODY-HL7^^^HOSP||NOBODY^HL7\r")




def c_store(port: int, datasets: list[Dataset], calling: str = "MODALITY1") -> list[int]:
    ae = AE(ae_title=calling)
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title="HOUNSFIELD")
    assert assoc.is_established
    try:
        return [int(assoc.send_c_store(ds).Status) for ds in datasets]
    finally:
        assoc.release()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("plugins")
    out = base / "events.jsonl"
    files = []
    for name, text in (("recorder", RECORDER), ("raiser", RAISER), ("sleeper", SLEEPER)):
        (base / f"{name}.py").write_text(text)
        files.append(str(base / f"{name}.py"))
    hl7_port = free_port()
    config = (f"plugins = {json.dumps(files)}\nstudy_stable_seconds = 2\ndicom_processes = 2\n"
              f"hl7_port = {hl7_port}\nhl7_host = \"127.0.0.1\"\n")  # (serve --plugin: checked below)
    srv = Server(base / "data", config=config, env={"HF_TEST_PLUGIN_OUT": str(out)})
    srv.hl7_port = hl7_port
    srv.start()
    try:
        yield srv, out
    finally:
        srv.stop()


def events(out: Path, kind: str | None = None) -> list[dict]:
    if not out.exists():
        return []
    found = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    return [e for e in found if kind is None or e["event"] == kind]


def test_events_reach_every_callback_and_failing_plugins_cost_nothing(site) -> None:
    srv, out = site
    assert eventually(lambda: events(out, "on_started"), bool, what="on_started") == \
        [{"event": "on_started", "name": "recorder", "ae_title": "HOUNSFIELD"}]
    eventually(srv.log_text, lambda t: "plugin raiser: on_started callback start failed" in t, what="the log")
    study, series = generate_uid(), generate_uid()
    instances = [tiny_ct("PLUGIN-P1", study, series, n) for n in range(1, 21)]
    # the raiser's filter fails on every instance, the sleeper takes 3 s each: every C-STORE still succeeds
    assert c_store(srv.dicom_port, instances, calling="PLUGINMOD") == [0] * 20
    sent = [ds.SOPInstanceUID for ds in instances]
    told = eventually(lambda: events(out, "on_instance_stored"), lambda e: len(e) >= 20, what="20 instances told")
    assert [e["sop"] for e in told] == sent  # in the order stored, each once
    assert {(e["modality"], e["calling_ae"], e["study"]) for e in told} == {("CT", "PLUGINMOD", study)}
    assert len(events(out, "sleeper")) < 20  # the sleeper is still on its first ones: nobody waited for it
    stable = eventually(lambda: events(out, "on_study_stable"), bool, what="the study stable")
    assert stable == [{"event": "on_study_stable", "study": study, "instances": 20, "modalities": ["CT"]}]
    log = srv.log_text()
    assert "plugin raiser: on_instance_stored callback explode failed" in log
    assert f"RuntimeError: boom for {sent[0]}" in log
    assert "plugin raiser: filter_incoming_store broken_filter failed; the instance" in log
    r = requests.get(f"{srv.url}/api/studies/{study}", timeout=30)
    assert r.status_code == 200
    assert requests.get(f"{srv.url}/api/plugins/recorder/instances/{study}", timeout=30).json() == \
        {"plugin": "recorder", "instances": 20}


def test_a_filter_refuses_an_instance_with_its_status(site) -> None:
    srv, _ = site
    refused = tiny_ct("REFUSE-ME", generate_uid(), generate_uid(), 1)
    taken = tiny_ct("PLUGIN-P2", generate_uid(), generate_uid(), 1)
    assert c_store(srv.dicom_port, [refused, taken]) == [0xA7F0, 0]
    eventually(lambda: requests.get(f"{srv.url}/api/studies/{taken.StudyInstanceUID}", timeout=30).status_code,
               lambda code: code == 200, what="the taken study")
    assert requests.get(f"{srv.url}/api/studies/{refused.StudyInstanceUID}", timeout=30).status_code == 404
    assert "refused by plugin recorder: test patients are not archived" in srv.log_text()


def test_worklist_filters_rewrite_the_query_and_the_answers_and_changes_and_mpps_are_told(site) -> None:
    srv, out = site
    shown = add_item(srv.url, patient_id="PLUGIN-W1", station_aet="CT1", accession_number="PW1",
                     requested_procedure_description="CT HEAD")
    add_item(srv.url, patient_id="HIDE-ME", station_aet="CT1", accession_number="PW2")
    query = modality_query(ScheduledStationAETitle="CT1")
    found, final = mwl_find(srv.dicom_port, query)
    assert final == 0
    assert [(a.AccessionNumber, a.RequestedProcedureDescription) for a in found] == [("PW1", "CT HEAD (via plugin)")]
    wrong = modality_query(ScheduledStationAETitle="WRONG-STATION")
    assert mwl_find(srv.dicom_port, wrong, calling="OTHERMOD")[0] == []  # no filter for this one
    found, _ = mwl_find(srv.dicom_port, wrong, calling="BADMODALITY")  # its station AE title is dropped
    assert [a.AccessionNumber for a in found] == ["PW1"]
    changes = eventually(lambda: events(out, "on_worklist_changed"), lambda e: len(e) >= 2, what="changes")
    assert [(c["action"], c["patient"]) for c in changes[:2]] == [("worklist_item_created", "PLUGIN-W1"),
                                                                  ("worklist_item_created", "HIDE-ME")]
    assert changes[0]["item"] == shown["id"]
    uid = generate_uid()
    assert mpps(srv.dicom_port, "create", uid, mpps_in_progress(shown)) == 0
    told = eventually(lambda: events(out, "on_mpps"), bool, what="the MPPS")
    assert told == [{"event": "on_mpps", "op": "N-CREATE", "uid": uid, "status": "IN PROGRESS",
                     "items": [shown["id"]]}]


def test_hl7_messages_are_told(site) -> None:
    import socket

    srv, out = site
    with socket.create_connection(("127.0.0.1", srv.hl7_port), timeout=30) as sock:
        sock.sendall(b"\x0b" + HL7_MESSAGE.encode() + b"\x1c\x0d")
        ack = b""
        while not ack.endswith(b"\x1c\x0d"):
            ack += sock.recv(65536)
    told = eventually(lambda: events(out, "on_hl7_message"), bool, what="the HL7 message")
    assert told == [{"event": "on_hl7_message", "type": "ADT^A08", "control": "PLUGIN-1", "ack": "AA"}]


def test_the_documented_example_logs_a_remote_worklist(tmp_path: Path) -> None:
    """Orthanc users' canonical example (docs/plugins.md): on start-up, query the worklist of another node."""
    ris = Server(tmp_path / "ris", ae_title="RIS").start()
    try:
        add_item(ris.url, patient_id="RIS-P1", patient_name="REMOTE^RITA", accession_number="RIS-ACC-1")
        example = ROOT / "docs" / "examples" / "worklist_at_start.py"
        config = f'dicom_processes = 1\n[peers.RIS]\nae_title = "RIS"\nhost = "127.0.0.1"\nport = {ris.dicom_port}\n'
        pacs = Server(tmp_path / "pacs", config=config, env={"HOUNSFIELD_PLUGINS": str(example)}).start()
        try:
            line = eventually(pacs.log_text, lambda t: "RIS worklist:" in t, what="the worklist in the log")
            assert "hounsfield.plugin.worklist_at_start: RIS worklist: RIS-P1 REMOTE^RITA, accession RIS-ACC-1" in line
        finally:
            pacs.stop()
    finally:
        ris.stop()


@pytest.mark.parametrize("text, expected", [
    (None, r"error: plugin .*missing\.py: no such file"),
    ("def broken(:\n", r"error: plugin .*broken\.py: syntax error at line 1: .+"),
    ("raise ImportError('no module named site_lib')\n",
     r"error: plugin .*broken\.py: failed when loaded at line 1: ImportError: no module named site_lib"),
])
def test_serve_refuses_a_plugin_it_cannot_load_in_one_line(tmp_path: Path, text: str | None, expected: str) -> None:
    import re

    path = tmp_path / ("missing.py" if text is None else "broken.py")
    if text is not None:
        path.write_text(text)
    proc = subprocess.run([sys.executable, "-m", "hounsfield", "serve", "--plugin", str(path), "--data-dir",
                           str(tmp_path / "data"), "--dicom-port", str(free_port()), "--http-port", str(free_port())],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert re.fullmatch(expected, proc.stderr.strip()), proc.stderr
    assert not (tmp_path / "data").exists()  # refused before anything was created


def test_plugin_routes_need_their_permission() -> None:
    from hounsfield.plugins.api import Plugin, Route
    from hounsfield.plugins.host import Plugins

    plugin = Plugin("site", Path("site.py"), routes=[Route("/api/plugins/site/{uid}", ("GET",), lambda: None, "read")])
    host = Plugins([plugin], lambda name: None)  # type: ignore[arg-type,return-value]
    assert host.permission_for("GET", "/api/plugins/site/1.2.3") == "read"
    assert host.permission_for("HEAD", "/api/plugins/site/1.2.3") == "read"
    assert host.permission_for("POST", "/api/plugins/site/1.2.3") is None  # → admin
    assert host.permission_for("GET", "/api/plugins/other") is None
