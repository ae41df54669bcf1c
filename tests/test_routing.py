"""Routing rules (issue 14): a rule sends new CT instances to dcmtk's storescp through the persistent delivery
queue; storescp is stopped for a while and hounsfield is SIGKILLed (the whole process group) while deliveries
wait: when storescp is back everything has arrived, once (one file per SOP Instance UID, none else). Rules
through REST and their bad definitions; the rule syntax and matching."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest
import requests
from fastapi.testclient import TestClient
from pydicom import dcmread
from pydicom.uid import ImplicitVRLittleEndian, generate_uid

from factories import tiny_ct
from support import Server, dcmtk, free_port
from test_plugins import c_store

from hounsfield import config
from hounsfield.pacs import Pacs
from hounsfield.routing import rules
from hounsfield.routing.rules import InvalidRule
from hounsfield.routing.store import Backoff
from hounsfield.web.app import create_app
from waiting import eventually




class StoreScp:
    """dcmtk's storescp on a port of its own, writing what it receives to ``out``."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        out.mkdir(parents=True, exist_ok=True)

    def start(self) -> "StoreScp":
        self.proc = subprocess.Popen([dcmtk("storescp"), "-aet", "PLANNING", "-od", str(self.out), str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        import socket

        def listening() -> bool:
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", self.port)) == 0
        eventually(listening, bool, 30, "storescp listening")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(30)
        self.proc = None

    def received(self) -> dict[str, tuple[str, str]]:
        """SOP Instance UID → (modality, transfer syntax) of each complete file received."""
        out = {}
        for f in self.out.iterdir():
            if f.is_file() and not f.name.startswith("."):
                ds = dcmread(f, stop_before_pixels=True)
                out[str(ds.SOPInstanceUID)] = (str(ds.Modality), str(ds.file_meta.TransferSyntaxUID))
        return out

    def files(self) -> int:
        return sum(1 for f in self.out.iterdir() if f.is_file())


def jobs(srv: Server, state: str | None = None) -> dict:
    params = {"limit": 1000, **({"state": state} if state else {})}
    r = requests.get(f"{srv.url}/api/routing/jobs", params=params, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def test_new_ct_instances_arrive_once_across_an_outage_and_a_sigkill(tmp_path: Path) -> None:
    scp = StoreScp(tmp_path / "received").start()
    toml = f"""dicom_processes = 2
routing_retry_seconds = 1
routing_retry_max_seconds = 2
routing_max_attempts = 1000
[peers.PLANNING]
ae_title = "PLANNING"
host = "127.0.0.1"
port = {scp.port}
[routing.ct-to-planning]
send_to = ["PLANNING"]
when = {{ modality = "CT" }}
[routing.mr-from-the-scanner]
send_to = "PLANNING"
transfer_syntax = "{ImplicitVRLittleEndian}"
when = {{ modality = "M?", calling_ae = "mrscanner" }}
"""
    srv = Server(tmp_path / "data", config=toml).start()
    try:
        study = generate_uid()
        series, mr_series = generate_uid(), generate_uid()
        expected: list[str] = []

        def send_ct(count: int, first: int) -> None:
            batch = [tiny_ct("ROUTE-P1", study, series, n) for n in range(first, first + count)]
            assert c_store(srv.dicom_port, batch, calling="CTSCANNER") == [0] * count
            expected.extend(ds.SOPInstanceUID for ds in batch)

        send_ct(5, 1)
        mr = [tiny_ct("ROUTE-P1", study, mr_series, n, Modality="MR") for n in (1, 2)]
        assert c_store(srv.dicom_port, mr[:1], calling="MRSCANNER") == [0]  # the second rule's
        assert c_store(srv.dicom_port, mr[1:], calling="OTHERMR") == [0]  # no rule's
        eventually(lambda: jobs(srv)["counts"]["done"], lambda n: n == 6, what="the first deliveries")
        assert scp.received() == {**{uid: ("CT", "1.2.840.10008.1.2.1") for uid in expected},
                                  mr[0].SOPInstanceUID: ("MR", ImplicitVRLittleEndian)}

        scp.stop()  # the node is down: deliveries wait and are retried
        send_ct(5, 6)
        waiting = eventually(lambda: jobs(srv, "pending")["jobs"],
                             lambda js: len(js) == 5 and all(j["attempts"] >= 1 for j in js), what="failed attempts")
        assert all(j["rule"] == "ct-to-planning" and j["peer"] == "PLANNING" and j["last_error"] for j in waiting)
        assert "routing: 5 deliveries to PLANNING failed" in srv.log_text()

        srv.kill_group()  # SIGKILL in the middle: the queue is in the index
        srv.start()
        send_ct(5, 11)  # while the node is still down
        eventually(lambda: jobs(srv)["counts"], lambda c: c["pending"] == 10, what="ten waiting after the restart")

        scp.start()
        eventually(lambda: jobs(srv)["counts"], lambda c: c == {"pending": 0, "failed": 0, "done": 16},
                   what="every delivery done")
        received = scp.received()
        assert sorted(uid for uid, (modality, _) in received.items() if modality == "CT") == sorted(expected)
        assert len(expected) == 15 and scp.files() == 16  # each once, nothing else
        page = requests.get(f"{srv.url}/ui/routing.html", timeout=30)
        assert page.status_code == 200 and "Deliveries" in page.text

        def sent() -> list[dict]:  # data leaving the archive is audited, a rule's as a person's
            return requests.get(f"{srv.url}/api/audit", params={"action": "study_sent", "limit": 1000},
                                timeout=30).json()["events"]

        events = eventually(sent, lambda es: sum(int(e["detail"].split()[0]) for e in es) == 16,
                            what="the deliveries' audit events")
        assert {(e["user"], e["study_instance_uid"], e["ae_title"], e["outcome"]) for e in events} == {
            ("routing rule ct-to-planning", study, "PLANNING", "success"),
            ("routing rule mr-from-the-scanner", study, "PLANNING", "success")}
    finally:
        srv.stop()
        scp.stop()


def test_a_node_that_never_answers_holds_up_no_other(tmp_path: Path) -> None:
    """A node that takes the connection and never answers the A-ASSOCIATE-RQ (a hung PACS) keeps its own
    deliveries waiting for pynetdicom's ACSE timeout; the other node of the same rule gets its copies meanwhile
    (its deliveries are done while the hung node's first attempt is still open)."""
    import socket

    scp = StoreScp(tmp_path / "received").start()
    hung = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    toml = f"""[peers.HUNG]
ae_title = "HUNG"
host = "127.0.0.1"
port = {hung.getsockname()[1]}
[peers.PLANNING]
ae_title = "PLANNING"
host = "127.0.0.1"
port = {scp.port}
[routing.both]
send_to = ["HUNG", "PLANNING"]
"""
    srv = Server(tmp_path / "data", config=toml).start()
    try:
        batch = [tiny_ct("ROUTE-HUNG", generate_uid(), generate_uid(), n) for n in (1, 2)]
        assert c_store(srv.dicom_port, batch) == [0, 0]
        hung.settimeout(60)
        held.append(hung.accept()[0])  # the hung node's association request arrives first (its jobs are older)
        counts = eventually(lambda: {p: [j["state"] for j in jobs(srv)["jobs"] if j["peer"] == p]
                                     for p in ("HUNG", "PLANNING")},
                            lambda c: c["PLANNING"] == ["done", "done"], what="the answering node's deliveries")
        assert counts["HUNG"] == ["pending", "pending"], counts
        assert all(j["attempts"] == 0 for j in jobs(srv)["jobs"] if j["peer"] == "HUNG")  # still in its first
        assert sorted(scp.received()) == sorted(ds.SOPInstanceUID for ds in batch)
    finally:
        for conn in held:  # the hung node goes away first: its delivery fails at once instead of holding the
            conn.close()   # server's stop for pynetdicom's ACSE timeout
        hung.close()
        srv.stop()
        scp.stop()


@pytest.fixture
def api(tmp_path: Path):
    toml = tmp_path / "hounsfield.toml"
    toml.write_text('[peers.PLANNING]\nae_title = "PLANNING"\nhost = "127.0.0.1"\nport = 104\n'
                    '[routing.from-the-file]\nsend_to = ["PLANNING"]\n')
    pacs = Pacs(config.load(toml, data_dir=str(tmp_path / "data")))
    with TestClient(create_app(pacs), base_url="http://127.0.0.1") as client:
        yield client
    pacs.close()


def test_rules_through_rest(api: TestClient) -> None:
    body = {"on": "study_stable", "send_to": ["PLANNING"], "when": {"modality": ["CT", "PT"],
                                                                     "study_description": "*THORAX*"}}
    r = api.put("/api/routing/rules/thorax", json=body)
    assert r.status_code == 200, r.text
    assert r.json() == {"name": "thorax", "on": "study_stable", "send_to": ["PLANNING"],
                        "when": {"modality": ["CT", "PT"], "study_description": ["*THORAX*"]},
                        "transfer_syntax": None, "configured": False}
    names = [(r["name"], r["configured"]) for r in api.get("/api/routing/rules").json()]
    assert names == [("from-the-file", True), ("thorax", False)]
    assert api.delete("/api/routing/rules/thorax").json() == {"deleted": "thorax"}
    assert api.get("/api/routing/rules/thorax").status_code == 404
    assert api.put("/api/routing/rules/from-the-file", json={"send_to": ["PLANNING"]}).status_code == 409
    assert api.delete("/api/routing/rules/from-the-file").status_code == 409
    assert api.get("/api/routing/jobs").json() == {"counts": {"pending": 0, "failed": 0, "done": 0}, "jobs": []}
    assert api.post("/api/routing/jobs/999/retry").status_code == 404


@pytest.mark.parametrize("name, body, status, says", [
    ("r1", {"send_to": ["NOWHERE"]}, 400, "send_to names no known remote node: NOWHERE"),
    ("r1", {"send_to": []}, 422, "send_to"),
    ("r1", {"send_to": ["PLANNING"], "on": "whenever"}, 422, "on"),
    ("r1", {"send_to": ["PLANNING"], "when": {"colour": "red"}}, 422, "when.colour"),
    ("r1", {"send_to": ["PLANNING"], "transfer_syntax": "1.2.840.10008.1.2.4.50"}, 400,
     "transfer_syntax must be one of"),
    ("bad name!", {"send_to": ["PLANNING"]}, 400, "rule name 'bad name!' must be 1-64 letters"),
    ("r1", {"send_to": ["PLANNING", "PLANNING"]}, 400, "send_to names a node twice"),
])
def test_bad_rules_are_refused_saying_why(api: TestClient, name: str, body: dict, status: int, says: str) -> None:
    r = api.put(f"/api/routing/rules/{name}", json=body)
    assert r.status_code == status, r.text
    detail = r.json()["detail"] if status == 400 else ", ".join(r.json()["fields"])
    assert says in detail
    assert [r["name"] for r in api.get("/api/routing/rules").json()] == ["from-the-file"]


def test_rule_matching_and_the_file_syntax(tmp_path: Path) -> None:
    rule = rules.parse("r", {"send_to": "A", "when": {"modality": ["CT", "P?"], "study_description": "*head*"}})
    assert rule.matches({"modality": ["ct"], "study_description": ["CT HEAD W/O"]})
    assert rule.matches({"modality": ["PT"], "study_description": ["HEAD"]})
    assert not rule.matches({"modality": ["MR"], "study_description": ["HEAD"]})
    assert not rule.matches({"modality": ["CT"], "study_description": ["THORAX"]})
    assert rules.parse("all", {"send_to": ["A"]}).matches({})
    bad = tmp_path / "bad.toml"
    bad.write_text('[routing.r]\nsend_to = ["A"]\nwhen = { modality = "" }\n')
    with pytest.raises(ValueError, match=r"bad\.toml: rule 'r': when\.modality must be a pattern"):
        config.load(bad)
    with pytest.raises(InvalidRule, match="unknown key"):
        rules.parse("r", {"send_to": ["A"], "sendto": ["B"]})
    assert [Backoff(1, 5).wait(n) for n in (1, 2, 3, 4)] == [1, 2, 4, 5]
