"""TLS (tls.py; PS3.15 B.9): HTTPS on the HTTP port; DICOM on a TLS port of its own with the services and the
bytes of the plain one; client certificates that must belong to the calling node; hounsfield as a TLS client
(its commands, C-MOVE sub-operations and REST sends to a node flagged ``tls``).

The certificates are made here with ``cryptography``: a CA, the server's (127.0.0.1 and localhost), one per
node, one that no node owns, one of another CA. The other ends are dcmtk (echoscu, storescu, findscu with
``+tls``, and storescp as a TLS C-MOVE destination; dcmtk 3.6.7's getscu and movescu have no TLS), Python's
``ssl`` and stock pynetdicom with a TLS context, and ``requests``. What is compared comes from the test's own
files and certificates: the dataset bytes of every file sent, the fingerprints computed here.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import re
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pydicom
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet as GET, Verification

from factories import tiny_ct, write
from hounsfield import config
from support import Server, dcmtk, dcmtk_env, free_port
from support import hounsfield as run_hounsfield

BCP195_TLS12 = {"ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384",  # RFC 7525 4.2, RSA certificates
                "DHE-RSA-AES128-GCM-SHA256", "DHE-RSA-AES256-GCM-SHA384"}
WAIT = 120  # seconds any one wait for the server may take before the test fails


# ---- certificates ----------------------------------------------------------------------------------------

@dataclass
class Pki:
    """The test's certificates: ``NAME.pem`` and ``NAME.key`` in ``folder``, and each one's fingerprint."""

    folder: Path
    fingerprints: dict[str, str]

    def cert(self, name: str) -> Path:
        return self.folder / f"{name}.pem"

    def key(self, name: str) -> Path:
        return self.folder / f"{name}.key"

    @property
    def ca(self) -> Path:
        return self.cert("ca")

    def client_context(self, name: str | None, ca: str = "ca") -> ssl.SSLContext:
        """A TLS client context trusting ``ca`` with ``name``'s certificate as the client's (None: none)."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.load_verify_locations(self.cert(ca))
        if name is not None:
            context.load_cert_chain(self.cert(name), self.key(name))
        return context


def _issue(folder: Path, name: str, issuer: tuple[x509.Certificate, rsa.RSAPrivateKey] | None) -> tuple:
    """A certificate (a CA when ``issuer`` is None) written as ``NAME.pem`` / ``NAME.key``; (cert, key)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"hounsfield test {name}")])
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(subject)
               .issuer_name(issuer[0].subject if issuer else subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
               .not_valid_after(now + datetime.timedelta(days=2))
               .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True))
    if issuer is not None:  # every end certificate serves both ends: a node is a client and a server
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        builder = builder.add_extension(x509.ExtendedKeyUsage(
            [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    cert = builder.sign(issuer[1] if issuer else key, hashes.SHA256())
    (folder / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / f"{name}.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                           serialization.PrivateFormat.PKCS8,
                                                           serialization.NoEncryption()))
    return cert, key


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("tls") / "certs"
    folder.mkdir()
    ca, foreign_ca = _issue(folder, "ca", None), _issue(folder, "foreign-ca", None)
    certs = {name: _issue(folder, name, ca)[0] for name in ("server", "modality", "hfcli", "workstation",
                                                             "stranger")}
    certs["foreign"] = _issue(folder, "foreign", foreign_ca)[0]
    return Pki(folder, {n: "sha256:" + c.fingerprint(hashes.SHA256()).hex() for n, c in certs.items()})


# ---- servers ---------------------------------------------------------------------------------------------

class HttpsServer(Server):
    """``hounsfield serve`` with ``tls_cert``: HTTPS on its HTTP port (requests trusts the test CA through
    REQUESTS_CA_BUNDLE, set by the fixture)."""

    def __init__(self, data_dir: Path, *, tls_port: int, config: str) -> None:
        super().__init__(data_dir, config=config)
        self.tls_port = tls_port

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.http_port}"


def tls_settings(pki: Pki, tls_port: int) -> str:
    return (f'tls_cert = "{pki.cert("server")}"\ntls_key = "{pki.key("server")}"\ntls_ca = "{pki.ca}"\n'
            f"dicom_tls_port = {tls_port}\ndicom_read_timeout = 10\n")


def colons(fingerprint: str) -> str:
    """A fingerprint as ``openssl x509 -fingerprint -sha256`` prints it: upper case, colons."""
    digits = fingerprint.removeprefix("sha256:").upper()
    return ":".join(digits[i:i + 2] for i in range(0, len(digits), 2))


@pytest.fixture(scope="module")
def storescp(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """dcmtk's storescp over TLS (it requires a client certificate signed by the CA), writing each received data
    set as it came (``+B -F``): the C-MOVE destination and REST send target WORKSTATION. (port, its folder)"""
    received = tmp_path_factory.mktemp("workstation")
    port = free_port()
    proc = subprocess.Popen([dcmtk("storescp"), "-aet", "WORKSTATION", "+B", "-F", "-od", str(received),
                             "+tls", str(pki.key("workstation")), str(pki.cert("workstation")), "+cf", str(pki.ca),
                             str(port)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=dcmtk_env())
    try:
        deadline = time.monotonic() + WAIT
        while echo(port, pki.client_context("modality"), "PROBE", "WORKSTATION") != 0:
            assert proc.poll() is None and time.monotonic() < deadline, "storescp did not start"
            time.sleep(0.05)
        yield port, received
    finally:
        proc.terminate()
        proc.wait(WAIT)


@pytest.fixture(scope="module")
def server(pki: Pki, storescp: tuple[int, Path]) -> Iterator[HttpsServer]:
    """Client certificates required; the nodes: MODALITY (its certificate file, relative to the config file),
    HFCLI (its fingerprint as openssl prints it), WORKSTATION (storescp, reached over TLS)."""
    tls_port = free_port()
    cfg = (tls_settings(pki, tls_port) + "dicom_tls_verify_clients = true\ndicom_processes = 2\n"
           f'[peers.modality]\nae_title = "MODALITY"\nhost = "127.0.0.1"\nport = {free_port()}\n'
           f'tls_certificate = "certs/modality.pem"\n'
           f'[peers.hfcli]\nae_title = "HFCLI"\nhost = "127.0.0.1"\nport = {free_port()}\n'
           f'tls_fingerprint = "sha256 Fingerprint={colons(pki.fingerprints["hfcli"])}"\n'
           f'[peers.workstation]\nae_title = "WORKSTATION"\nhost = "127.0.0.1"\nport = {storescp[0]}\ntls = true\n')
    with pytest.MonkeyPatch.context() as env:
        env.setenv("REQUESTS_CA_BUNDLE", str(pki.ca))
        srv = HttpsServer(pki.folder.parent / "data", tls_port=tls_port, config=cfg).start()
        try:
            yield srv
        finally:
            srv.stop()


# ---- helpers ---------------------------------------------------------------------------------------------

def dataset_bytes(part10: bytes) -> bytes:
    """The data set of a Part-10 file: after the preamble, the prefix and the file meta group, whose length its
    first element gives (PS3.10 7.1)."""
    assert part10[128:132] == b"DICM"
    return part10[144 + int.from_bytes(part10[140:144], "little"):]


def study_files(folder: Path, count: int, *, big: bool = False) -> tuple[str, dict[str, bytes]]:
    """A new study of ``count`` tiny CT files (and one of 2 MB, many PDUs and TLS records, when ``big``) in
    ``folder``: its UID and each instance's data set bytes by SOP Instance UID."""
    study, series = generate_uid(), generate_uid()
    datasets = [tiny_ct("TLS", study, series, i + 1) for i in range(count)]
    if big:
        ds = tiny_ct("TLS", study, series, count + 1)
        ds.Rows = ds.Columns = 1024
        ds.PixelData = np.random.default_rng(7).integers(-1000, 3000, (1024, 1024), dtype=np.int16).tobytes()
        datasets.append(ds)
    sent = {}
    for ds in datasets:
        sent[ds.SOPInstanceUID] = dataset_bytes(write(ds, folder / f"{ds.SOPInstanceUID}.dcm").read_bytes())
    return study, sent


def dcmtk_tls(tool: str, pki: Pki, identity: str, *args: str) -> subprocess.CompletedProcess:
    """A dcmtk tool over TLS with ``identity``'s certificate, verifying the server's against the test CA."""
    return subprocess.run([dcmtk(tool), "+tls", str(pki.key(identity)), str(pki.cert(identity)), "+cf",
                           str(pki.ca), *args], capture_output=True, text=True, env=dcmtk_env(),
                          stdin=subprocess.DEVNULL, timeout=WAIT)


def echo(port: int, context: ssl.SSLContext | None, calling: str, called: str = "HOUNSFIELD") -> int | None:
    """C-ECHO with stock pynetdicom (over TLS with ``context``): the status, None without an association."""
    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    tls_args = None if context is None else (context, "127.0.0.1")
    assoc = ae.associate("127.0.0.1", port, ae_title=called, tls_args=tls_args)
    if not assoc.is_established:
        return None
    try:
        return int(assoc.send_c_echo().Status)
    finally:
        assoc.release()


def c_get(port: int, study: str, context: ssl.SSLContext | None, calling: str = "MODALITY") -> tuple[int, dict]:
    """C-GET of ``study`` with stock pynetdicom: the final status and each received data set's bytes."""
    received: dict[str, bytes] = {}

    def on_store(event: evt.Event) -> int:
        path = event.dataset_path  # pynetdicom receives to a file when another module of the run turned that on
        data = dataset_bytes(Path(path).read_bytes()) if path else event.encoded_dataset(include_meta=False)
        received[event.request.AffectedSOPInstanceUID] = data
        return 0x0000

    ae = AE(ae_title=calling)
    ae.add_requested_context(GET)
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", port, ae_title="HOUNSFIELD", ext_neg=[build_role(CTImageStorage, scp_role=True)],
                         evt_handlers=[(evt.EVT_C_STORE, on_store)],
                         tls_args=None if context is None else (context, "127.0.0.1"))
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study
    try:
        statuses = [int(status.Status) for status, _ in assoc.send_c_get(query, GET)]
    finally:
        assoc.release()
    return statuses[-1], received


def log_since(server: Server, start: int) -> str:
    with open(server.log_path, "rb") as f:
        f.seek(start)
        return f.read().decode(errors="replace")


def wait_for_log(server: Server, start: int, pattern: str) -> re.Match:
    """The first line the server logged after byte ``start`` of its log matching ``pattern`` (the server logs
    after its peer has its answer: waited for)."""
    deadline = time.monotonic() + WAIT
    while True:
        found = re.search(pattern, log_since(server, start))
        if found or time.monotonic() > deadline:
            assert found, f"no {pattern!r} in: {log_since(server, start)[-3000:]}"
            return found
        time.sleep(0.05)


def hounsfield(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """A hounsfield command in an empty folder, without the server's settings: what its flags say only."""
    return run_hounsfield(*args, cwd=cwd, env={k: None for k in os.environ if k.startswith("HOUNSFIELD_")},
                          timeout=WAIT)


def stored(server: HttpsServer, study: str) -> int:
    found = requests.get(f"{server.url}/api/studies", params={"StudyInstanceUID": study}, timeout=WAIT).json()
    return sum(s["NumberOfStudyRelatedInstances"] for s in found)


def received_by(folder: Path, uids: dict[str, bytes]) -> dict[str, bytes]:
    """What storescp wrote of the instances ``uids``: each data set as received (``+B -F``), in a file named
    after its modality and SOP Instance UID."""
    found = {f.name.split(".", 1)[1]: f for f in folder.iterdir()}
    return {uid: found[uid].read_bytes() for uid in uids if uid in found}


def wait_for_job(server: HttpsServer, job: dict) -> dict:
    deadline = time.monotonic() + WAIT
    while job["state"] == "running" and time.monotonic() < deadline:
        time.sleep(0.05)
        job = requests.get(f"{server.url}/api/jobs/{job['id']}", timeout=WAIT).json()
    return job


def closed_by_the_server(sock: socket.socket) -> bytes:
    """Read until the server closes the connection; what it sent before (a TLS alert at most, here)."""
    data = b""
    try:
        while chunk := sock.recv(4096):
            data += chunk
    except (ConnectionResetError, ssl.SSLError):
        pass
    return data


# ---- HTTPS -----------------------------------------------------------------------------------------------

def test_https_answers_with_the_certificate_and_plain_http_does_not(server: HttpsServer, pki: Pki) -> None:
    for host in ("127.0.0.1", "localhost"):  # both names of the certificate
        r = requests.get(f"https://{host}:{server.http_port}/health", verify=pki.ca, timeout=WAIT)
        assert r.status_code == 200 and r.json()["status"] == "ok"
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"http://127.0.0.1:{server.http_port}/health", timeout=WAIT)
    with pytest.raises(requests.exceptions.SSLError):  # a CA that did not sign it
        requests.get(f"{server.url}/health", verify=pki.cert("foreign-ca"), timeout=WAIT)
    banner = f"DICOM HOUNSFIELD@0.0.0.0:{server.dicom_port} (TLS on {server.tls_port}), " \
             f"HTTP https://127.0.0.1:{server.http_port}, "
    assert banner in server.log_text()


def test_a_login_over_https_sets_secure_cookies(server: HttpsServer, pki: Pki) -> None:
    """Under TLS the session and CSRF cookies say Secure: a browser never sends them over plain HTTP."""
    proc = run_hounsfield("user", "add", "tlsuser", "--role", "viewer", "--password-stdin", *server.args(),
                          input="a long tls password")
    assert proc.returncode == 0, proc.stderr
    r = requests.post(f"{server.url}/login", data={"username": "tlsuser", "password": "a long tls password"},
                      verify=pki.ca, allow_redirects=False, timeout=WAIT)
    assert r.status_code == 303
    cookies = {c.split("=", 1)[0]: c.lower() for c in r.raw.headers.getlist("set-cookie")}
    assert {"hf_session", "hf_csrf"} <= cookies.keys()
    assert all("; secure" in c and "samesite=strict" in c for c in cookies.values())


@pytest.mark.parametrize("port", ["http_port", "tls_port"])
def test_tls_1_1_and_ciphers_outside_bcp_195_are_refused(server: HttpsServer, pki: Pki, port: str) -> None:
    """TLS 1.2 at least; in TLS 1.2 AES-GCM with ECDHE or DHE only (PS3.15 B.9, RFC 7525 4.2). The client is
    the same each time but for what is refused, and it connects at TLS 1.2."""
    address = ("127.0.0.1", getattr(server, port))

    def handshake(version: ssl.TLSVersion, ciphers: str | None = None) -> tuple[str, str]:
        context = pki.client_context("modality")
        context.maximum_version = version
        if version < ssl.TLSVersion.TLSv1_2:
            context.minimum_version = version
            context.set_ciphers("DEFAULT:@SECLEVEL=0")  # this OpenSSL offers TLS 1.1 only so
        if ciphers:
            context.set_ciphers(ciphers)
        with socket.create_connection(address, timeout=WAIT) as raw:
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                return tls.version(), tls.cipher()[0]

    version, cipher = handshake(ssl.TLSVersion.TLSv1_2)
    assert version == "TLSv1.2" and cipher in BCP195_TLS12
    # The server's alert (the DICOM port's OpenSSL sends it), or the connection closed in the handshake (asyncio,
    # on the HTTP port, closes without flushing it): refused either way, the client being otherwise the same.
    with pytest.raises(ssl.SSLError, match="PROTOCOL_VERSION|UNEXPECTED_EOF"):
        handshake(ssl.TLSVersion.TLSv1_1)
    with pytest.raises(ssl.SSLError, match="HANDSHAKE_FAILURE|UNEXPECTED_EOF"):  # AES-CBC, SHA-1: none in common
        handshake(ssl.TLSVersion.TLSv1_2, "ECDHE-RSA-AES128-SHA")


# ---- DICOM over TLS: same services, same bytes -----------------------------------------------------------

def test_dcmtk_stores_and_finds_and_both_ports_give_back_the_same_bytes(server: HttpsServer, pki: Pki,
                                                                         tmp_path: Path) -> None:
    """A study stored over TLS (storescu, PDUs of 128 KB: each several TLS records) and one over plain TCP,
    each retrieved through both ports, data set bytes as sent."""
    tls_study, tls_sent = study_files(tmp_path / "tls", 3, big=True)
    plain_study, plain_sent = study_files(tmp_path / "plain", 3, big=True)
    run = dcmtk_tls("storescu", pki, "modality", "-pdu", "131072", "-aet", "MODALITY", "-aec", "HOUNSFIELD",
                    "127.0.0.1", str(server.tls_port), *map(str, sorted((tmp_path / "tls").iterdir())))
    assert run.returncode == 0, run.stderr
    run = subprocess.run([dcmtk("storescu"), "-aet", "MODALITY", "-aec", "HOUNSFIELD", "127.0.0.1",
                          str(server.dicom_port), *map(str, sorted((tmp_path / "plain").iterdir()))],
                         capture_output=True, text=True, env=dcmtk_env(), timeout=WAIT)
    assert run.returncode == 0, run.stderr
    found = dcmtk_tls("findscu", pki, "modality", "-S", "-X", "-od", str(tmp_path), "-aet", "MODALITY",
                      "-aec", "HOUNSFIELD", "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={tls_study}",
                      "-k", "NumberOfStudyRelatedInstances", "127.0.0.1", str(server.tls_port))
    assert found.returncode == 0, found.stderr
    answers = [pydicom.dcmread(f) for f in tmp_path.glob("rsp*.dcm")]
    assert [(a.StudyInstanceUID, int(a.NumberOfStudyRelatedInstances)) for a in answers] == [(tls_study, 4)]
    tls = pki.client_context("modality")
    for study, sent in ((tls_study, tls_sent), (plain_study, plain_sent)):
        assert c_get(server.tls_port, study, tls) == (0x0000, sent)
        assert c_get(server.dicom_port, study, None) == (0x0000, sent)


def test_c_move_and_rest_send_reach_a_tls_node(server: HttpsServer, pki: Pki, storescp: tuple[int, Path],
                                               tmp_path: Path) -> None:
    """C-MOVE (asked over TLS by hounsfield's own move command) and POST /api/studies/{uid}/send to
    storescp, which takes TLS with a client certificate only: hounsfield's, tls_cert."""
    moved_study, moved = study_files(tmp_path / "moved", 3)
    sent_study, sent = study_files(tmp_path / "sent", 2)
    for folder in ("moved", "sent"):
        run = subprocess.run([dcmtk("storescu"), "-aec", "HOUNSFIELD", "127.0.0.1", str(server.dicom_port),
                              *map(str, sorted((tmp_path / folder).iterdir()))],
                             capture_output=True, text=True, env=dcmtk_env(), timeout=WAIT)
        assert run.returncode == 0, run.stderr
    run = hounsfield(tmp_path, "move", "--tls", "--remote", f"HOUNSFIELD@127.0.0.1:{server.tls_port}",
                     "--dest", "WORKSTATION", "--ae-title", "HFCLI", "--tls-ca", str(pki.ca),
                     "--tls-cert", str(pki.cert("hfcli")), "--tls-key", str(pki.key("hfcli")),
                     "-k", f"StudyInstanceUID={moved_study}")
    assert run.returncode == 0, run.stderr
    assert "C-MOVE status 0x0000" in run.stdout and "3 completed, 0 failed" in run.stdout
    assert received_by(storescp[1], moved) == moved
    job = wait_for_job(server, requests.post(f"{server.url}/api/studies/{sent_study}/send",
                                             json={"peer": "workstation"}, timeout=WAIT).json())
    assert (job["state"], job["sent"], job["error"]) == ("completed", 2, None)
    assert received_by(storescp[1], sent) == sent


def test_a_node_added_through_rest_may_be_reached_over_tls(server: HttpsServer, storescp: tuple[int, Path],
                                                           tmp_path: Path) -> None:
    study, sent = study_files(tmp_path, 1)
    run = subprocess.run([dcmtk("storescu"), "-aec", "HOUNSFIELD", "127.0.0.1", str(server.dicom_port),
                          *map(str, tmp_path.glob("*.dcm"))], capture_output=True, text=True, env=dcmtk_env(),
                         timeout=WAIT)
    assert run.returncode == 0, run.stderr
    peer = {"name": "ws-rest", "ae_title": "WSREST", "host": "127.0.0.1", "port": storescp[0], "tls": True,
            "allow": None}
    assert requests.put(f"{server.url}/api/peers/ws-rest", json=peer, timeout=WAIT).json() == peer
    assert peer in requests.get(f"{server.url}/api/peers", timeout=WAIT).json()
    job = wait_for_job(server, requests.post(f"{server.url}/api/studies/{study}/send", json={"peer": "ws-rest"},
                                             timeout=WAIT).json())
    assert (job["state"], job["sent"]) == ("completed", 1), job
    assert received_by(storescp[1], sent) == sent
    assert requests.delete(f"{server.url}/api/peers/ws-rest", timeout=WAIT).status_code == 200


def test_the_remote_api_reaches_a_tls_node_over_tls(server: HttpsServer, storescp: tuple[int, Path]) -> None:
    """Issue 14: POST /api/peers/NAME/echo honours the node's tls flag: the TLS-only storescp answers the
    node flagged tls, and the same address without the flag is a 502 naming the node."""
    r = requests.post(f"{server.url}/api/peers/workstation/echo", timeout=WAIT)
    assert r.status_code == 200 and r.json()["ok"] is True, r.text
    plain = {"name": "ws-plain", "ae_title": "WORKSTATION", "host": "127.0.0.1", "port": storescp[0], "tls": False,
             "allow": None}
    assert requests.put(f"{server.url}/api/peers/ws-plain", json=plain, timeout=WAIT).status_code == 200
    try:
        r = requests.post(f"{server.url}/api/peers/ws-plain/echo", timeout=WAIT)
        assert r.status_code == 502 and r.json()["error"] == "RemoteFailure", r.text
        assert "ws-plain" in r.json()["detail"]
    finally:
        requests.delete(f"{server.url}/api/peers/ws-plain", timeout=WAIT)


# ---- who may use the TLS port ----------------------------------------------------------------------------

def test_client_certificates_must_belong_to_the_calling_node(server: HttpsServer, pki: Pki) -> None:
    def attempt(identity: str, calling: str) -> tuple[subprocess.CompletedProcess, int]:
        start = server.log_size()
        return dcmtk_tls("echoscu", pki, identity, "-aet", calling, "-aec", "HOUNSFIELD", "127.0.0.1",
                         str(server.tls_port)), start

    for identity, calling in (("modality", "MODALITY"), ("hfcli", "HFCLI")):  # a file; a fingerprint
        run, _ = attempt(identity, calling)
        assert run.returncode == 0, run.stderr
    run, start = attempt("stranger", "STRANGER")
    assert run.returncode != 0 and "Calling AE Title Not Recognized" in run.stderr
    wait_for_log(server, start, r"rejecting association from STRANGER at 127\.0\.0\.1:\d+: its TLS client "
                                rf"certificate \({pki.fingerprints['stranger']}\) belongs to no configured peer")
    run, start = attempt("modality", "HFCLI")  # one node's certificate for another node
    assert run.returncode != 0 and "Calling AE Title Not Recognized" in run.stderr
    wait_for_log(server, start, r"rejecting association from HFCLI at 127\.0\.0\.1:\d+: its TLS client "
                                r"certificate belongs to peer 'modality', whose AE title is 'MODALITY', not 'HFCLI'")
    run, start = attempt("foreign", "MODALITY")  # signed by another CA
    assert run.returncode != 0
    wait_for_log(server, start, r"TLS connection from 127\.0\.0\.1:\d+ refused: certificate verify failed")
    start = server.log_size()
    assert echo(server.tls_port, pki.client_context(None), "MODALITY") is None  # no certificate at all
    wait_for_log(server, start, r"TLS connection from 127\.0\.0\.1:\d+ refused: peer did not return a certificate")


def test_plain_dicom_on_the_tls_port_is_refused(server: HttpsServer) -> None:
    start = server.log_size()
    assert echo(server.tls_port, None, "MODALITY") is None
    with socket.create_connection(("127.0.0.1", server.tls_port), timeout=WAIT) as raw:
        port = raw.getsockname()[1]
        raw.sendall(b"\x01\x00\x00\x00\x00\x44" + bytes(0x44))  # an A-ASSOCIATE-RQ's header, and zeros
        answer = closed_by_the_server(raw)
    assert answer[:1] in (b"", b"\x15")  # a TLS alert record at most, no DICOM PDU
    wait_for_log(server, start, rf"TLS connection from 127\.0\.0\.1:{port} refused: ")


def test_a_caller_that_stalls_is_cut_off(server: HttpsServer, pki: Pki) -> None:
    """One connection that never starts its handshake, one that sends two bytes of a PDU and stops: both are
    closed after dicom_read_timeout and logged with their address."""
    start = server.log_size()
    with socket.create_connection(("127.0.0.1", server.tls_port), timeout=WAIT) as silent, \
            socket.create_connection(("127.0.0.1", server.tls_port), timeout=WAIT) as raw, \
            pki.client_context("modality").wrap_socket(raw, server_hostname="127.0.0.1") as partial:
        partial.sendall(b"\x01\x00")
        assert closed_by_the_server(silent) == b"" and closed_by_the_server(partial) == b""
        silent_port, partial_port = silent.getsockname()[1], partial.getsockname()[1]
    wait_for_log(server, start, rf"TLS connection from 127\.0\.0\.1:{silent_port} refused: no TLS handshake in time")
    wait_for_log(server, start, rf"127\.0\.0\.1:{partial_port} sent 2 of the 6 bytes of a PDU header and not the "
                                r"rest within")


# ---- hounsfield as a TLS client --------------------------------------------------------------------------

def test_hounsfield_commands_over_tls(server: HttpsServer, pki: Pki, tmp_path: Path) -> None:
    remote = f"HOUNSFIELD@127.0.0.1:{server.tls_port}"
    identity = ("--ae-title", "HFCLI", "--tls-ca", str(pki.ca), "--tls-cert", str(pki.cert("hfcli")),
                "--tls-key", str(pki.key("hfcli")))
    run = hounsfield(tmp_path, "echo", "--tls", "--remote", remote, *identity)
    assert run.returncode == 0 and f"C-ECHO {remote}: status 0x0000" in run.stdout, run.stderr
    study, sent = study_files(tmp_path / "in", 2)
    run = hounsfield(tmp_path, "store", "--tls", "--remote", remote, *identity, str(tmp_path / "in"))
    assert run.returncode == 0 and "sent 2/2 files to HOUNSFIELD" in run.stdout, run.stderr
    assert stored(server, study) == 2
    run = hounsfield(tmp_path, "find", "--tls", "--remote", remote, *identity, "--json",
                     "-k", f"StudyInstanceUID={study}", "-k", "NumberOfStudyRelatedInstances")
    assert run.returncode == 0, run.stderr
    answers = [(a["0020000D"]["Value"][0], int(a["00201208"]["Value"][0])) for a in json.loads(run.stdout)]
    assert answers == [(study, 2)]
    run = hounsfield(tmp_path, "get", "--tls", "--remote", remote, *identity, "--out", str(tmp_path / "out"),
                     "-k", f"StudyInstanceUID={study}")
    assert run.returncode == 0, run.stderr
    assert {f.stem: dataset_bytes(f.read_bytes()) for f in (tmp_path / "out").iterdir()} == sent
    wrong_ca = [*identity[:2], "--tls-ca", str(pki.cert("foreign-ca")), *identity[4:]]
    run = hounsfield(tmp_path, "echo", "--tls", "--remote", remote, *wrong_ca)
    assert run.returncode == 1
    assert run.stderr.strip().splitlines() == [f"error: association with HOUNSFIELD at 127.0.0.1:{server.tls_port} "
                                               f"was not established (TLS: certificate verify failed: "
                                               f"self-signed certificate in certificate chain)"]
    run = hounsfield(tmp_path, "echo", "--tls", "--remote", remote, "--tls-ca", str(pki.ca))  # no certificate
    assert run.returncode == 1 and "was not established (TLS: " in run.stderr


# ---- stock pynetdicom over TLS ---------------------------------------------------------------------------

def test_stock_pynetdicom_serves_tls_too_and_a_silent_caller_holds_nobody_up(pki: Pki, tmp_path: Path) -> None:
    """dicom_fast_path = false: pynetdicom's own reader and writer on the TLS port (no client certificates
    asked for) give the same bytes back, while a connection that never starts its TLS handshake is open (one
    DICOM process: pynetdicom's server would wait for that handshake in the thread accepting every
    connection); and a caller stalling mid-PDU is still cut off (a TLS socket ignores the SO_RCVTIMEO bound of
    the plain port's sockets)."""
    tls_port = free_port()
    cfg = tls_settings(pki, tls_port) + "dicom_fast_path = false\ndicom_processes = 1\n"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("REQUESTS_CA_BUNDLE", str(pki.ca))
        srv = HttpsServer(tmp_path / "data", tls_port=tls_port, config=cfg).start()
        try:
            study, sent = study_files(tmp_path / "in", 2, big=True)
            with socket.create_connection(("127.0.0.1", tls_port), timeout=WAIT) as silent:
                run = dcmtk_tls("storescu", pki, "modality", "-aec", "HOUNSFIELD", "127.0.0.1", str(tls_port),
                                *map(str, sorted((tmp_path / "in").iterdir())))
                assert run.returncode == 0, run.stderr
                assert c_get(tls_port, study, pki.client_context(None)) == (0x0000, sent)
                assert closed_by_the_server(silent) == b""
            with socket.create_connection(("127.0.0.1", tls_port), timeout=WAIT) as raw, \
                    pki.client_context(None).wrap_socket(raw, server_hostname="127.0.0.1") as partial:
                partial.sendall(b"\x01\x00")
                assert closed_by_the_server(partial) == b""
        finally:
            srv.stop()


# ---- settings --------------------------------------------------------------------------------------------

def test_serve_refuses_unusable_tls_settings_before_listening(pki: Pki, tmp_path: Path) -> None:
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    cert, key = str(pki.cert("server")), str(pki.key("server"))
    cases = [
        (["--tls-cert", cert], "TLS needs both tls_cert and tls_key (a PEM certificate and its private key)"),
        (["--tls-cert", cert, "--tls-key", "nokey.pem"],
         "tls_key nokey.pem: cannot read it (No such file or directory)"),
        (["--tls-cert", cert, "--tls-key", str(pki.key("modality"))],
         f"tls_key {pki.key('modality')} is not the private key of the certificate in tls_cert {cert}"),
        (["--tls-cert", "junk.pem", "--tls-key", key], "tls_cert junk.pem holds no PEM certificate"),
        (["--tls-cert", cert, "--tls-key", key, "--dicom-tls-port", str(free_port()),
          "--dicom-tls-verify-clients", "true"],
         "dicom_tls_verify_clients needs tls_ca: the CA that signs the peers' certificates"),
    ]
    dicom_port, http_port = free_port(), free_port()
    cases.append((["--dicom-tls-port", str(dicom_port), "--tls-cert", cert, "--tls-key", key],
                  f"dicom_tls_port and dicom_port are both {dicom_port}: DICOM over TLS needs a port of its own"))
    for args, message in cases:
        run = hounsfield(tmp_path, "serve", "--data-dir", "d", "--dicom-port", str(dicom_port),
                         "--http-port", str(http_port), *args)
        assert (run.returncode, run.stderr.strip().splitlines(), run.stdout) == (1, [f"error: {message}"], ""), args
        assert not (tmp_path / "d").exists()
    for port in (dicom_port, http_port):  # nothing listened
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


def test_peer_certificates_in_the_config_file(pki: Pki, tmp_path: Path) -> None:
    (tmp_path / "pem").mkdir()
    (tmp_path / "pem" / "both.pem").write_bytes(pki.cert("modality").read_bytes() + pki.cert("hfcli").read_bytes())
    cfg = tmp_path / "h.toml"
    cfg.write_text(f'[peers.a]\nhost = "h"\nport = 1\ntls = true\ntls_certificate = "pem/both.pem"\n'
                   f'tls_fingerprint = ["{colons(pki.fingerprints["stranger"])}"]\n'
                   f'[peers.b]\nhost = "h"\nport = 2\n')
    a, b = config.load(cfg, environ={}).peers
    assert a.tls and a.tls_fingerprints == {pki.fingerprints[n] for n in ("modality", "hfcli", "stranger")}
    assert not b.tls and b.tls_fingerprints == frozenset()
    for body, message in (
            ('tls = "yes"', "tls must be true or false, not 'yes'"),
            ('tls_fingerprint = "sha256:1234"', "tls_fingerprint 'sha256:1234' is not a SHA-256 fingerprint"),
            ('tls_certificate = "none.pem"', f"tls_certificate {tmp_path / 'none.pem'}: cannot read it"),
            ('tls_certificate = "h.toml"', f"tls_certificate {tmp_path / 'h.toml'} holds no PEM certificate")):
        bad = tmp_path / "bad.toml"
        bad.write_text(f'[peers.x]\nhost = "h"\nport = 1\n{body}\n')
        with pytest.raises(ValueError, match=re.escape(f"{bad}: peer 'x': {message}")):
            config.load(bad, environ={})
