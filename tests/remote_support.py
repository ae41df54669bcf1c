"""Remote nodes for the issue-14 tests: a real Orthanc (Debian's ``orthanc``) on free ports with a temporary
configuration, and the trio the remote Q/R tests use: hounsfield "local" (the one asked over REST), a second
hounsfield and an Orthanc as its remote nodes, each knowing "local" as a C-MOVE destination."""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import requests
from pydicom.uid import generate_uid

from factories import tiny_ct, write
from support import Server, dcmtk, dcmtk_env, free_port, require

ORTHANC = "/usr/sbin/Orthanc"
START_DEADLINE = 120.0  # seconds for a process to come up or a stored study to become queryable


def wait_until(check: Any, what: str, deadline: float = START_DEADLINE) -> Any:
    """Poll ``check()`` until it returns something true (returned) or the deadline passes (AssertionError)."""
    end = time.monotonic() + deadline
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class Orthanc:
    """An Orthanc process with its own storage, DICOM and HTTP ports (loopback only, no authentication) and
    ``modalities`` ({name: (AET, host, port)}) it may send C-MOVE results to."""

    def __init__(self, folder: Path, modalities: dict[str, tuple[str, str, int]], ae_title: str = "ORTHANC") -> None:
        require(os.path.exists(ORTHANC), f"Orthanc is not installed at {ORTHANC} (apt-get install orthanc)")
        self.folder = folder
        self.ae_title = ae_title
        self.dicom_port, self.http_port = free_port(), free_port()
        folder.mkdir(parents=True, exist_ok=True)
        self.config = {
            "Name": "hounsfield-test", "StorageDirectory": str(folder / "storage"),
            "IndexDirectory": str(folder / "storage"), "DicomAet": ae_title, "DicomPort": self.dicom_port,
            "HttpPort": self.http_port, "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
            "DicomCheckCalledAet": True, "Plugins": [], "StableAge": 1, "ConcurrentJobs": 1,
            "DicomModalities": {name: {"AET": aet, "Host": host, "Port": port, "AllowEcho": True, "AllowFind": True,
                                       "AllowMove": True, "AllowGet": True, "AllowStore": True}
                                for name, (aet, host, port) in modalities.items()},
        }
        self.proc: subprocess.Popen | None = None
        self.log_path = folder / "orthanc.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> "Orthanc":
        path = self.folder / "orthanc.json"
        path.write_text(json.dumps(self.config, indent=2))
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([ORTHANC, str(path)], stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

        def up() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"Orthanc exited {self.proc.returncode}: {self.log_text()[-2000:]}")
            try:
                return requests.get(f"{self.url}/system", timeout=2).ok
            except requests.RequestException:
                return False

        wait_until(up, "Orthanc to answer HTTP")
        return self

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def store(self, files: list[Path]) -> None:
        """C-STORE ``files`` with dcmtk's storescu, then wait until Orthanc indexes them all."""
        proc = subprocess.run([dcmtk("storescu"), "-aec", self.ae_title, "127.0.0.1", str(self.dicom_port),
                               *map(str, files)], capture_output=True, text=True, env=dcmtk_env(), timeout=300)
        assert proc.returncode == 0, proc.stderr

    def instances_of(self, study_uid: str) -> int:
        r = requests.post(f"{self.url}/tools/find", json={"Level": "Instance",
                                                          "Query": {"StudyInstanceUID": study_uid}}, timeout=30)
        r.raise_for_status()
        return len(r.json())

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None:
            self.log.close()
        self.proc = None


@dataclass
class Study:
    """A study the tests made: its UIDs and each instance's pixel bytes."""

    patient_id: str
    study_uid: str
    series_uid: str
    accession: str
    files: list[Path]
    pixels: dict[str, bytes] = field(default_factory=dict)  # SOP Instance UID → PixelData


def make_study(folder: Path, patient_id: str, count: int = 3, **attrs: object) -> Study:
    study_uid, series_uid = generate_uid(), generate_uid()
    accession = f"A{patient_id[-8:]}"
    files, pixels = [], {}
    for number in range(1, count + 1):
        ds = tiny_ct(patient_id, study_uid, series_uid, number, AccessionNumber=accession,
                     StudyDescription=f"remote test {patient_id}", **attrs)
        files.append(write(ds, folder / f"{patient_id}-{number}.dcm"))
        pixels[str(ds.SOPInstanceUID)] = bytes(ds.PixelData)
    return Study(patient_id, study_uid, series_uid, accession, files, pixels)


@dataclass
class Site:
    local: Server
    second: Server
    orthanc: Orthanc
    studies: dict[str, Study]  # name → a study held by the second hounsfield ("second-…") or Orthanc ("orthanc-…")


def peer_toml(name: str, ae_title: str, port: int, **extra: str) -> str:
    lines = [f"[peers.{name}]", f'ae_title = "{ae_title}"', 'host = "127.0.0.1"', f"port = {port}"]
    lines += [f"{k} = {v}" for k, v in extra.items()]
    return "\n".join(lines) + "\n"


def remote_site(folder: Path, names: tuple[str, ...], *, local_config: str = "") -> Iterator[Site]:
    """Start the trio; the second hounsfield and Orthanc each hold one study per name in ``names`` (patient
    IDs ``SEC-<name>`` / ``ORT-<name>``), loaded by STOW-RS and by storescu. Peers of local: ``second``,
    ``orthanc``, ``dead`` (a port nobody listens on) and ``wrong-ae`` (the second hounsfield called by a wrong
    AE title, which it refuses)."""
    local = Server(folder / "local" / "data", ae_title="LOCAL-HF")
    second = Server(folder / "second" / "data", ae_title="SECOND-HF")
    orthanc = Orthanc(folder / "orthanc", {"hounsfield": (local.ae_title, "127.0.0.1", local.dicom_port)})
    local.config_text = (local_config + peer_toml("second", second.ae_title, second.dicom_port)
                         + peer_toml("orthanc", orthanc.ae_title, orthanc.dicom_port)
                         + peer_toml("dead", "NOBODY", free_port())
                         + peer_toml("wrong-ae", "NOT-SECOND", second.dicom_port))
    # the second hounsfield knows local as a C-MOVE destination, and checks the AE title it is called by
    second.config_text = "check_called_ae = true\n" + peer_toml("local", local.ae_title, local.dicom_port)
    for server in (local, second):
        server.data_dir.parent.mkdir(parents=True, exist_ok=True)
    started: list[Any] = []
    try:
        for process in (local, second, orthanc):
            process.start()
            started.append(process)
        studies: dict[str, Study] = {}
        for name in names:
            held = make_study(folder / "made", f"SEC-{name}")
            from browser import stow_series

            stow_series(second, held.files)
            studies[f"second-{name}"] = held
            held = make_study(folder / "made", f"ORT-{name}")
            orthanc.store(held.files)
            studies[f"orthanc-{name}"] = held
        for key, held in studies.items():
            if key.startswith("orthanc-"):
                wait_until(lambda held=held: orthanc.instances_of(held.study_uid) == len(held.files),
                           f"Orthanc to index {held.study_uid}")
        yield Site(local, second, orthanc, studies)
    finally:
        for process in reversed(started):
            process.stop()


def wait_for_job(site_url: str, job_id: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """The job once it is no longer running (polled)."""
    def finished() -> dict[str, Any] | None:
        job = requests.get(f"{site_url}/api/jobs/{job_id}", headers=headers, timeout=30).json()
        return job if job["state"] != "running" else None
    return wait_until(finished, f"job {job_id}", deadline=300)
