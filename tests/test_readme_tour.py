"""The README's tour, run as written: its server command and then each of its client commands in order, in an
empty folder, against that real ``hounsfield serve`` — only the ports are changed, through the variables the
tour defines (``DICOM=11112 HTTP=8042``) and the settings' environment variables for ``serve``."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pydicom
import pytest
import requests

from conftest import ROOT
from support import dcmtk, free_port, require

README = ROOT / "README.md"
ASSIGNMENTS = re.compile(r"^(?:[A-Z_][A-Z0-9_]*=\S+\s*)+(?:#.*)?$")


def tour_block(name: str) -> str:
    """The ```sh block after ``<!-- tour:NAME -->`` in the README."""
    text = README.read_text()
    found = re.search(rf"<!-- tour:{name} -->\s*```sh\n(.*?)```", text, re.S)
    assert found, f"README.md has no <!-- tour:{name} --> block"
    return found.group(1)


def commands(block: str) -> list[str]:
    """The block's shell commands, a command continued with a trailing backslash joined to its next lines."""
    out: list[str] = []
    current = ""
    for line in block.splitlines():
        if not current and not line.strip():
            continue
        current += line + "\n"
        if not line.rstrip().endswith("\\"):
            out.append(current.strip())
            current = ""
    assert not current, "the tour ends with a continued line"
    return out


def code(command: str) -> str:
    """``command`` without its comments (a `` #`` to the end of a line)."""
    return re.sub(r"\s+#.*$", "", command, flags=re.M)


def variables(assignments: str) -> dict[str, str]:
    return dict(re.findall(r"([A-Z_][A-Z0-9_]*)=(\S+)", assignments.split("#", 1)[0]))


def test_the_tour_is_found_and_names_dcmtks_tools_by_path() -> None:
    client = commands(tour_block("client"))
    assert [c for c in client if ASSIGNMENTS.match(c)], "the tour defines its ports as variables"
    assert variables(client[0]) == {"DICOM": "11112", "HTTP": "8042"}  # serve's defaults (README: settings)
    for tool in ("storescu", "findscu", "getscu"):
        uses = [c for c in map(code, client) if re.search(rf"(^|[\s/]){tool}\s", c)]
        assert uses and all(c.startswith(f"/usr/bin/{tool} ") for c in uses), tool
    plain = [code(c) for c in client]
    getscu = next(c for c in plain if c.startswith("/usr/bin/getscu"))
    folder = re.search(r"-od\s+(\S+)", getscu).group(1)
    assert any(c.startswith("mkdir -p") and folder in c.split() for c in plain[:plain.index(getscu)])


@pytest.fixture
def tour_env(tmp_path: Path) -> dict[str, str]:
    """PATH with ``hounsfield`` as this interpreter's module first (the suite may run without the console
    script installed), the rest as the user has it."""
    for tool in ("storescu", "findscu", "getscu"):
        dcmtk(tool)  # skip (fail in CI) without dcmtk
    require(shutil.which("curl") is not None, "curl is not installed")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "hounsfield"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m hounsfield "$@"\n')
    shim.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOUNSFIELD_")}
    return {**env, "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", "TCP_NODELAY": "1"}


def test_the_readme_tour_works_literally(tmp_path: Path, tour_env: dict[str, str]) -> None:
    from hounsfield.sample import CT_STUDY_UID, MR_STUDY_UID, PATIENT_ID

    folder = tmp_path / "tour-folder"
    folder.mkdir()
    dicom_port, http_port = free_port(), free_port()
    (serve,) = commands(tour_block("server"))
    log = open(tmp_path / "serve.log", "wb")
    server = subprocess.Popen(["bash", "-c", serve], cwd=folder, stdout=log, stderr=subprocess.STDOUT,
                              env={**tour_env, "HOUNSFIELD_DICOM_PORT": str(dicom_port),
                                   "HOUNSFIELD_HTTP_PORT": str(http_port)}, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                if requests.get(f"http://127.0.0.1:{http_port}/health", timeout=1).ok:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            time.sleep(0.1)

        outputs: dict[str, str] = {}
        assignments = ""
        for command in commands(tour_block("client")):
            if ASSIGNMENTS.match(command):
                names = variables(command)
                names.update(DICOM=str(dicom_port), HTTP=str(http_port))
                assignments += " ".join(f"{k}={v}" for k, v in names.items()) + "\n"
                continue
            done = subprocess.run(["bash", "-c", f"set -o pipefail\n{assignments}{command}"], cwd=folder,
                                  env=tour_env, capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, (f"{command}\nexited {done.returncode}\nstdout: {done.stdout[-3000:]}\n"
                                          f"stderr: {done.stderr[-3000:]}")
            words = command.split()
            name = f"hounsfield {words[1]}" if words[0] == "hounsfield" else words[0].rsplit("/", 1)[-1]
            outputs[name] = done.stdout + done.stderr
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()

    # findscu listed both studies of the sample patient
    assert CT_STUDY_UID in outputs["findscu"] and MR_STUDY_UID in outputs["findscu"], outputs["findscu"]
    # getscu received the CT study, each file the dataset that was stored
    stored = {ds.SOPInstanceUID: ds for ds in map(pydicom.dcmread, sorted((folder / "tour" / "ct").iterdir()))}
    received = {ds.SOPInstanceUID: ds for ds in map(pydicom.dcmread, sorted((folder / "out").iterdir()))}
    assert len(stored) == 5 and set(received) == set(stored)
    for sop, ds in received.items():
        assert ds == stored[sop], sop
        assert ds.PixelData == stored[sop].PixelData
    # the archive shows the patient; REST found both studies, the modalities as lists
    table = outputs["hounsfield ls"]
    assert table.startswith("2 studies") and table.count(PATIENT_ID) == 2, table
    studies = json.loads(outputs["curl"])
    assert {s["StudyInstanceUID"]: s["ModalitiesInStudy"] for s in studies} == {CT_STUDY_UID: ["CT"],
                                                                               MR_STUDY_UID: ["MR"]}
    assert {s["NumberOfStudyRelatedInstances"] for s in studies} == {5, 3}
    assert (folder / "slice.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
