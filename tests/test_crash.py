"""Crash safety: SIGKILL the server in the middle of a storescu transfer, restart, check the archive."""

from __future__ import annotations

import copy
import io
import os
import re
import signal
import subprocess
from pathlib import Path

import pydicom
import requests
from pydicom.uid import generate_uid
from support import Server, dcmtk, dcmtk_env
from waiting import eventually


def make_copies(shared_data: Path, out: Path, rounds: int) -> list[Path]:
    """The 28-slice CT series, ``rounds`` times with new UIDs: enough 0.5 MB instances to kill mid-way."""
    files = []
    for r in range(rounds):
        study, series = generate_uid(), generate_uid()
        for src in sorted((shared_data / "ct" / "philips_head_phantom_5mm").glob("*.dcm")):
            ds = copy.deepcopy(pydicom.dcmread(src))
            ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
            ds.SOPInstanceUID = generate_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            path = out / f"r{r:02d}_{src.name}"
            ds.save_as(path)
            files.append(path)
    return files


def test_sigkill_mid_transfer_loses_nothing_acknowledged(tmp_path: Path, database_url: str,
                                                         shared_data: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    files = make_copies(shared_data, src, 6)
    uid_of = {str(f): pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in files}
    server = Server(tmp_path / "data", database_url=database_url).start()
    proc = subprocess.Popen([dcmtk("storescu"), "-v", "-aec", server.ae_title, "127.0.0.1", str(server.dicom_port),
                             *map(str, files)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dcmtk_env())
    acknowledged: list[str] = []
    current = None
    assert proc.stdout is not None
    for line in proc.stdout:
        if m := re.search(r"Sending file: (.+)$", line):
            current = m.group(1).strip()
        elif "Received Store Response (Success)" in line and current:
            acknowledged.append(uid_of[current])
            if len(acknowledged) == 40:
                server.kill_group()  # in the middle of the transfer: the server and all its processes
                in_flight = uid_of[str(files[40])]
                break
    proc.wait(60)
    server.stop()
    assert len(acknowledged) == 40 and proc.returncode != 0

    restarted = Server(tmp_path / "data", database_url=database_url)
    restarted.dicom_port, restarted.http_port = server.dicom_port, server.http_port
    restarted.start()
    try:
        indexed = requests.get(f"{restarted.url}/api/instances", params={"limit": 1000}, timeout=30).json()
        indexed_uids = {i["SOPInstanceUID"] for i in indexed}
        # Every acknowledged instance is there; at most the one in flight was indexed without its answer.
        assert set(acknowledged) <= indexed_uids
        assert indexed_uids - set(acknowledged) <= {in_flight}
        for uid in indexed_uids:  # and every indexed instance is complete and readable
            r = requests.get(f"{restarted.url}/api/instances/{uid}/file", timeout=30)
            assert r.status_code == 200
            ds = pydicom.dcmread(io.BytesIO(r.content))
            assert ds.SOPInstanceUID == uid and ds.pixel_array.shape == (512, 512)
        assert not list((restarted.data_dir / "files" / ".incoming").iterdir())  # partial upload cleaned
    finally:
        restarted.stop()


def _group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group ``pgid``, read from /proc."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


def test_the_processes_of_a_killed_main_process_go_down_with_it(tmp_path: Path) -> None:
    """Only the main process is SIGKILLed (an OOM kill): its DICOM processes, the indexer and the process that
    forks them must not live on holding the port and the pending queue."""
    server = Server(tmp_path / "data").start()
    try:
        pgid = server.proc.pid
        assert len(_group_members(pgid)) >= 3  # the main process, at least one DICOM process, the indexer
        os.kill(pgid, signal.SIGKILL)
        server.proc.wait(60)
        eventually(lambda: _group_members(pgid), lambda left: not left, what="the server's processes to exit")
    finally:
        server.stop()
