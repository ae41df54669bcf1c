"""The viewer's own routes added for the tags panel and the Send menu (web/ui.py), given hostile input: a record
is found only by its exact UIDs (never by a wildcard or list), an unknown node is a 404, a node that cannot be
reached is its state (not a 500), and no answer shows a path of the data directory."""

from __future__ import annotations

import pytest

from support import free_port
from test_rest_hostile import Served, serving


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    with serving(tmp_path_factory.mktemp("uiapi") / "data", "sqlite") as s:
        yield s


def ids(ds) -> tuple[str, str, str]:
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)


def test_tags_of_the_exact_instance_and_nothing_else(served: Served) -> None:
    study, series, sop = ids(served.stored[0])
    good = served.client.get(f"/ui/api/tags/{study}/{series}/{sop}")
    assert good.status_code == 200 and good.json()["sop"] == sop
    names = {row["keyword"]: row["name"] for row in good.json()["elements"]}
    assert names["PatientName"] == "Patient's Name"
    for bad in ("*", "%00", "?", sop + "*", sop + "\\" + sop, "1" * 10_000, str(ids(served.stored[1])[2])):
        r = served.client.get(f"/ui/api/tags/{study}/{series}/{bad}")
        assert r.status_code in (404, 422), (bad[:20], r.status_code)
        assert str(served.data_dir) not in r.text


def test_echo_of_an_unknown_or_unreachable_node(served: Served) -> None:
    assert served.client.post("/ui/api/peers/nosuchnode/echo").status_code == 404
    port = free_port()  # nothing listens there
    assert served.client.put("/api/peers/gone", json={"name": "gone", "ae_title": "GONE", "host": "127.0.0.1",
                                                      "port": port}).status_code == 200
    r = served.client.post("/ui/api/peers/gone/echo")
    assert r.status_code == 200 and r.json()["ok"] is False and r.json()["error"]
    state = {p["name"]: p for p in served.client.get("/ui/api/peers").json()}
    assert state["gone"]["last_echo"]["ok"] is False
    assert served.client.get("/api/studies").status_code == 200  # and the server goes on answering
