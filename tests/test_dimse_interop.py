"""The real server driven by dcmtk (storescu, findscu, getscu, movescu, storescp) and pynetdicom as SCU.

Every check compares what came back attribute by attribute (or byte by byte) with the original files.
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRBigEndian
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (
    CTImageStorage,
    MRImageStorage,
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind as FIND,
    StudyRootQueryRetrieveInformationModelGet as GET,
    StudyRootQueryRetrieveInformationModelMove as MOVE,
    Verification,
)

import roundtrip_support
from factories import comparable, encode, tiny_ct
from support import Server, SharedServer, dcmtk, dcmtk_env, free_port

UNCOMPRESSED = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"}
IDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")


def readable_files(root: Path) -> dict[Path, Dataset]:
    """One Part-10 file per SOP Instance UID with the UIDs an archive needs (malformed/ left out)."""
    chosen, seen = {}, set()
    for f in sorted(root.rglob("*.dcm")):
        if "malformed" in f.parts:
            continue
        try:
            ds = pydicom.dcmread(f)
        except Exception:  # noqa: BLE001 - files without meta are not something storescu sends
            continue
        if all(ds.get(k) for k in IDS) and ds.SOPInstanceUID not in seen:
            seen.add(ds.SOPInstanceUID)
            chosen[f] = ds
    return chosen


def collector(received: dict[str, Dataset]):
    """An EVT_C_STORE handler keeping each received dataset (with its file meta) by SOP Instance UID."""
    def on_store(event):
        ds = event.dataset
        ds.file_meta = event.file_meta
        received[ds.SOPInstanceUID] = ds
        return 0x0000
    return on_store


def image_query(ds: Dataset) -> Dataset:
    """An IMAGE-level identifier for the instance ``ds``."""
    q = Dataset()
    q.QueryRetrieveLevel = "IMAGE"
    q.StudyInstanceUID, q.SeriesInstanceUID = ds.StudyInstanceUID, ds.SeriesInstanceUID
    q.SOPInstanceUID = ds.SOPInstanceUID
    return q


def storescu(server: Server, *files: Path, extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    return subprocess.run([dcmtk("storescu"), "-R", "-aec", server.ae_title, *extra, "127.0.0.1",
                           str(server.dicom_port), *map(str, files)],
                          capture_output=True, text=True, env=dcmtk_env(), timeout=300)


def findscu(server: Server, *keys: str, model: str = "-S") -> list[Dataset]:
    """Run dcmtk findscu, writing the answers as files (-X), and read them back."""
    out = Path(server.data_dir.parent / f"find-{time.monotonic_ns()}")
    out.mkdir()
    proc = subprocess.run([dcmtk("findscu"), model, "-aec", server.ae_title, "-X", "-od", str(out),
                           *[a for k in keys for a in ("-k", k)], "127.0.0.1", str(server.dicom_port)],
                          capture_output=True, text=True, env=dcmtk_env(), timeout=120)
    assert proc.returncode == 0, proc.stderr
    return [pydicom.dcmread(f, force=True) for f in sorted(out.glob("rsp*.dcm"))]


@pytest.fixture
def server(shared_server: SharedServer) -> SharedServer:
    """One server per module and backend for the tests that find only the CT series (``ct_series``) and what
    they store themselves; what stores other shared files or another CT study uses ``other_server``, and what
    needs an empty archive or settings of its own a server of its own."""
    return shared_server


@pytest.fixture(scope="module")
def other_module_server(tmp_path_factory: pytest.TempPathFactory, module_database_url: str):
    srv = Server(tmp_path_factory.mktemp("other") / "data", database_url=module_database_url).start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def other_server(other_module_server: Server) -> SharedServer:
    """A second shared server, for tests whose data the matching tests on ``server`` must not find."""
    return SharedServer(other_module_server)


def associate(server: Server, ae: AE, **kw):
    assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title=server.ae_title, **kw)
    assert assoc.is_established
    return assoc


def test_round_trip_of_every_shared_file(fresh_server: Server, shared_data: Path, tmp_path: Path) -> None:
    """On a server of its own: the shared data holds the same instance in several syntaxes, and an archive keeps
    the first copy it was given (``duplicate_policy``).

    storescu (little endian uncompressed) / pynetdicom (big endian and compressed, in their own syntax) →
    C-FIND → C-GET, unchanged; then every uncompressed one again by a requestor taking one other uncompressed
    syntax only, converted by hounsfield, value for value (roundtrip_support.differences; test_roundtrip.py)."""
    server = fresh_server
    files = readable_files(shared_data)
    plain = [f for f, d in files.items() if d.file_meta.TransferSyntaxUID in UNCOMPRESSED - {ExplicitVRBigEndian}]
    proc = storescu(server, *plain)
    assert proc.returncode == 0, proc.stderr
    compressed = {f: d for f, d in files.items() if f not in plain}
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(FIND)
    ae.add_requested_context(GET)
    pairs = sorted({(str(d.SOPClassUID), str(d.file_meta.TransferSyntaxUID)) for d in files.values()})
    for sop, ts in pairs:
        ae.add_requested_context(sop, [ts])
    received: dict[str, Dataset] = {}

    roles = [build_role(sop, scu_role=True, scp_role=True) for sop in sorted({s for s, _ in pairs})]
    assoc = associate(server, ae, ext_neg=roles, evt_handlers=[(evt.EVT_C_STORE, collector(received))])
    problems = {}
    for f, d in compressed.items():
        try:
            status = assoc.send_c_store(f)
        except ValueError as exc:  # pydicom cannot re-encode this odd file on the client side
            problems[f.name] = f"client could not send: {exc}"
            continue
        assert status.Status == 0x0000, f"{f}: 0x{status.Status:04X}"
    for f, orig in files.items():
        if f.name in problems:
            continue
        q = image_query(orig)
        q.SOPClassUID = ""
        found = [i for s, i in assoc.send_c_find(q, FIND) if s and s.Status == 0xFF00]
        assert len(found) == 1 and found[0].SOPClassUID == orig.SOPClassUID, f
        statuses = [s.Status for s, _ in assoc.send_c_get(q, GET) if s]
        assert statuses[-1] == 0x0000, f"{f}: C-GET 0x{statuses[-1]:04X}"
        got = received[orig.SOPInstanceUID]
        if f in compressed:  # sent by pynetdicom in its own syntax (storescu may convert, e.g. big endian)
            assert got.file_meta.TransferSyntaxUID == orig.file_meta.TransferSyntaxUID
        differing = roundtrip_support.differing_tags(orig, got)
        if differing == [0x7FE00010] and len(got.PixelData) == len(orig.PixelData) + 1:
            continue  # odd-length Pixel Data in the source file: dcmtk pads it to even length when sending
        assert not differing, f"{f}: {differing[:5]} differ"
    assoc.release()
    assert set(problems) <= {"SC_rgb_jpeg.dcm"}, problems  # explicit-VR file with implicit Pixel Data
    native = {f: d for f, d in files.items() if d.file_meta.TransferSyntaxUID in roundtrip_support.UNCOMPRESSED}
    classes = sorted({str(d.SOPClassUID) for d in native.values()})
    for syntax in roundtrip_support.UNCOMPRESSED:
        ae = AE(ae_title="ONESYNTAX")
        ae.add_requested_context(GET)
        for sop in classes:
            ae.add_requested_context(sop, [syntax])
        converted: dict[str, roundtrip_support.Received] = {}
        assoc = associate(server, ae, ext_neg=[build_role(sop, scp_role=True) for sop in classes],
                          evt_handlers=[(evt.EVT_C_STORE, roundtrip_support.collector(converted))])
        for f, orig in native.items():
            if orig.file_meta.TransferSyntaxUID != syntax:
                statuses = [s.Status for s, _ in assoc.send_c_get(image_query(orig), GET) if s]
                assert statuses[-1] == 0x0000, f"{f} in {syntax.name}: C-GET 0x{statuses[-1]:04X}"
                got = converted[orig.SOPInstanceUID]
                assert got.syntax == syntax, f"{f}: received in {got.syntax}, not {syntax.name}"
                assert roundtrip_support.differences(pydicom.dcmread(f), got.dataset()) == [], f"{f} in {syntax.name}"
        assoc.release()


_CT_SERIES: dict[Path, list[Dataset]] = {}  # by the data directory of the server that holds it


@pytest.fixture
def ct_series(server: Server, shared_data: Path) -> list[Dataset]:
    """The CT phantom series, stored once per server (the tests only read it)."""
    if server.data_dir not in _CT_SERIES:
        files = sorted((shared_data / "ct" / "philips_head_phantom_5mm").glob("*.dcm"))
        proc = storescu(server, *files)
        assert proc.returncode == 0, proc.stderr
        _CT_SERIES[server.data_dir] = [pydicom.dcmread(f) for f in files]
    return _CT_SERIES[server.data_dir]


def test_findscu_answers_match_the_stored_attributes(server: Server, ct_series: list[Dataset]) -> None:
    first = ct_series[0]
    (study,) = findscu(server, "QueryRetrieveLevel=STUDY", "PatientID=PLASTIC", "StudyInstanceUID", "PatientName",
                       "StudyDate", "StudyTime", "StudyDescription", "AccessionNumber", "ModalitiesInStudy",
                       "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances")
    for kw in ("StudyInstanceUID", "PatientName", "StudyDate", "StudyTime", "StudyDescription"):
        assert study[kw].value == first[kw].value, kw
    assert study.ModalitiesInStudy == "CT"
    assert (study.NumberOfStudyRelatedSeries, study.NumberOfStudyRelatedInstances) == (1, 28)
    (series,) = findscu(server, "QueryRetrieveLevel=SERIES", f"StudyInstanceUID={first.StudyInstanceUID}",
                        "SeriesInstanceUID", "SeriesDescription", "SeriesNumber", "Modality",
                        "NumberOfSeriesRelatedInstances")
    assert series.SeriesDescription == "STD BRAIN 5MM" and series.NumberOfSeriesRelatedInstances == 28
    assert series.SeriesNumber == first.SeriesNumber
    images = findscu(server, "QueryRetrieveLevel=IMAGE", f"StudyInstanceUID={first.StudyInstanceUID}",
                     f"SeriesInstanceUID={first.SeriesInstanceUID}", "SOPInstanceUID", "InstanceNumber")
    assert sorted(int(i.InstanceNumber) for i in images) == list(range(1, 29))
    assert {i.SOPInstanceUID for i in images} == {d.SOPInstanceUID for d in ct_series}
    (patient,) = findscu(server, "QueryRetrieveLevel=PATIENT", "PatientID=PLASTIC", "PatientName",
                         "NumberOfPatientRelatedInstances", model="-P")
    assert patient.PatientName == "HEAD" and patient.NumberOfPatientRelatedInstances == 28


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        (("PatientName=HE*",), 1),  # wildcard
        (("PatientName=H?AD",), 1),
        (("PatientName=head",), 0),  # case-sensitive
        (("StudyDate=20150101-20151231",), 1),  # range
        (("StudyDate=-20141231",), 0),
        (("StudyDate=20150206", "StudyTime=090000-100000"), 1),  # combined date-time range
        (("StudyDate=20150206", "StudyTime=100000-110000"), 0),
        (("ModalitiesInStudy=MR\\CT",), 1),  # multiple values
        (("ModalitiesInStudy=MR",), 0),
    ],
)
def test_findscu_matching_rules(server: Server, ct_series: list[Dataset], keys: tuple[str, ...],
                                expected: int) -> None:
    answers = findscu(server, "QueryRetrieveLevel=STUDY", "StudyInstanceUID", *keys)
    assert len(answers) == expected


def test_findscu_uid_list(server: Server, ct_series: list[Dataset]) -> None:
    uids = [d.SOPInstanceUID for d in ct_series[:3]] + ["1.2.3.4.5"]
    first = ct_series[0]
    answers = findscu(server, "QueryRetrieveLevel=IMAGE", f"StudyInstanceUID={first.StudyInstanceUID}",
                      "SOPInstanceUID=" + "\\".join(uids))
    assert {a.SOPInstanceUID for a in answers} == set(uids[:3])


def test_getscu_returns_the_stored_files(server: Server, ct_series: list[Dataset], tmp_path: Path) -> None:
    out = tmp_path / "got"
    out.mkdir()
    first = ct_series[0]
    proc = subprocess.run([dcmtk("getscu"), "-S", "-aec", server.ae_title, "-od", str(out),
                           "-k", "QueryRetrieveLevel=SERIES", "-k", f"StudyInstanceUID={first.StudyInstanceUID}",
                           "-k", f"SeriesInstanceUID={first.SeriesInstanceUID}", "127.0.0.1", str(server.dicom_port)],
                          capture_output=True, text=True, env=dcmtk_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr
    got = {pydicom.dcmread(f).SOPInstanceUID: pydicom.dcmread(f) for f in out.iterdir()}
    assert len(got) == 28
    for orig in ct_series:
        assert comparable(got[orig.SOPInstanceUID]) == comparable(orig)


def test_movescu_to_a_dcmtk_storescp(tmp_path: Path, database_url: str, shared_data: Path) -> None:
    dest_port = free_port()
    config = f'[peers.dest]\nae_title = "DEST"\nhost = "127.0.0.1"\nport = {dest_port}\n'
    server = Server(tmp_path / "data", database_url=database_url, config=config).start()
    received = tmp_path / "received"
    received.mkdir()
    storescp = subprocess.Popen([dcmtk("storescp"), "-aet", "DEST", "-od", str(received), str(dest_port)],
                                env=dcmtk_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        files = sorted((shared_data / "ct" / "philips_head_phantom_5mm").glob("*.dcm"))[:5]
        files.append(shared_data / "compressed" / "MR_small_jp2klossless.dcm")  # compressed: stored as sent
        assert storescu(server, *files[:5]).returncode == 0
        ae = AE(ae_title="TESTSCU")
        ae.add_requested_context("1.2.840.10008.5.1.4.1.1.4", ["1.2.840.10008.1.2.4.90"])
        assoc = associate(server, ae)
        assert assoc.send_c_store(files[5]).Status == 0
        assoc.release()
        originals = {pydicom.dcmread(f).SOPInstanceUID: pydicom.dcmread(f) for f in files}
        for study in {d.StudyInstanceUID for d in originals.values()}:
            proc = subprocess.run([dcmtk("movescu"), "-S", "-aec", server.ae_title, "-aem", "DEST",
                                   "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}",
                                   "127.0.0.1", str(server.dicom_port)],
                                  capture_output=True, text=True, env=dcmtk_env(), timeout=300)
            assert proc.returncode == 0, proc.stderr
        got = {}
        for f in received.iterdir():
            ds = pydicom.dcmread(f)
            got[ds.SOPInstanceUID] = ds
        assert set(got) == set(originals)
        mr_uid = pydicom.dcmread(files[5]).SOPInstanceUID
        for uid, orig in originals.items():
            if uid != mr_uid:
                assert comparable(got[uid]) == comparable(orig)
        # dcmtk's storescp accepts JPEG 2000 only when asked: the compressed one was converted to native,
        # losslessly (4.90): same attributes, same pixel values.
        mr, orig = got[mr_uid], originals[mr_uid]
        assert mr.file_meta.TransferSyntaxUID in UNCOMPRESSED
        a, b = comparable(mr), comparable(orig)
        assert [t for t in set(a) | set(b) if a.get(t) != b.get(t)] == [0x7FE00010]
        assert (mr.pixel_array == orig.pixel_array).all()
    finally:
        storescp.terminate()
        storescp.wait()
        server.stop()


def test_c_get_converts_for_a_receiver_that_takes_only_native(other_server: Server, shared_data: Path) -> None:
    """A C-GET requestor taking the SCP role for MR with native syntaxes only (as many viewers do) gets the JPEG
    2000 instance decompressed losslessly, and a native one as stored."""
    server = other_server
    compressed = shared_data / "compressed" / "MR_small_jp2klossless.dcm"
    native = shared_data / "mr" / "MR-SIEMENS-DICOM-WithOverlays.dcm"
    sender = AE(ae_title="TESTSCU")
    sender.add_requested_context(MRImageStorage, ["1.2.840.10008.1.2.4.90"])
    assoc = associate(server, sender)
    assert assoc.send_c_store(compressed).Status == 0
    assoc.release()
    assert storescu(server, native).returncode == 0
    ae = AE(ae_title="VIEWER")
    ae.add_requested_context(GET)
    ae.add_requested_context(MRImageStorage, ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])
    received: dict[str, Dataset] = {}

    assoc = associate(server, ae, ext_neg=[build_role(MRImageStorage, scp_role=True)],
                      evt_handlers=[(evt.EVT_C_STORE, collector(received))])
    for f in (compressed, native):
        orig = pydicom.dcmread(f)
        q = image_query(orig)
        statuses = [s.Status for s, _ in assoc.send_c_get(q, GET) if s]
        assert statuses[-1] == 0x0000, f"{f.name}: C-GET 0x{statuses[-1]:04X}"
        got = received[orig.SOPInstanceUID]
        assert got.file_meta.TransferSyntaxUID in ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2")
        assert (got.pixel_array == orig.pixel_array).all()
        a, b = comparable(got), comparable(orig)
        assert [t for t in set(a) | set(b) if a.get(t) != b.get(t)] == ([0x7FE00010] if f == compressed else [])
    assoc.release()


def test_c_move_to_a_destination_without_tcp_nodelay_does_not_wait_for_delayed_acks(tmp_path: Path) -> None:
    """dcmtk's storescp as it runs by default (no TCP_NODELAY) writes each C-STORE response in two parts and sends
    the second only once the first is acknowledged; Linux delays that ACK by at least 40 ms unless the reader asks
    for it at once. That was 40 ms per instance moved (55 ms here: 100 CT slices took 5.5 s instead of 0.5 s)."""
    import os

    count = 60
    dest_port = free_port()
    config = f'[peers.dest]\nae_title = "DEST"\nhost = "127.0.0.1"\nport = {dest_port}\n'
    server = Server(tmp_path / "data", config=config).start()
    received, sent = tmp_path / "received", tmp_path / "sent"
    received.mkdir()
    sent.mkdir()
    for i in range(count):
        tiny_ct("NAGLE", "1.2.3.150", "1.2.3.151", i + 1).save_as(sent / f"{i:03d}.dcm", enforce_file_format=True)
    plain = {k: v for k, v in os.environ.items() if k != "TCP_NODELAY"}
    storescp = subprocess.Popen([dcmtk("storescp"), "-aet", "DEST", "-od", str(received), str(dest_port)],
                                env=plain, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert storescu(server, sent, extra=("+sd",)).returncode == 0
        assert len(findscu(server, "QueryRetrieveLevel=IMAGE", "StudyInstanceUID=1.2.3.150", "SOPInstanceUID")) \
            == count  # indexed: the move below measures sending only
        start = time.monotonic()
        proc = subprocess.run([dcmtk("movescu"), "-S", "-aec", server.ae_title, "-aem", "DEST",
                               "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID=1.2.3.150",
                               "127.0.0.1", str(server.dicom_port)],
                              capture_output=True, text=True, env=dcmtk_env(), timeout=120)
        elapsed = time.monotonic() - start
        assert proc.returncode == 0, proc.stderr
        assert len(list(received.iterdir())) == count
        assert elapsed < count * 0.040 / 2, f"{count} instances took {elapsed:.2f} s: delayed ACKs"
    finally:
        storescp.terminate()
        storescp.wait()
        server.stop()


def test_c_move_to_unknown_destination_is_refused(server: Server, ct_series: list[Dataset]) -> None:
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(MOVE)
    assoc = associate(server, ae)
    q = Dataset()
    q.QueryRetrieveLevel = "STUDY"
    q.StudyInstanceUID = ct_series[0].StudyInstanceUID
    statuses = [s.Status for s, _ in assoc.send_c_move(q, "NOWHERE", MOVE) if s]
    assoc.release()
    assert statuses == [0xA801]
    assert "unknown destination AE 'NOWHERE'" in server.log_text()


@pytest.mark.parametrize(("level", "status"), [(None, 0xA900), ("FOO", 0xA900), ("PATIENT", 0xA900)])
def test_c_find_with_missing_or_unknown_level(server: Server, level: str | None, status: int) -> None:
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(FIND)
    assoc = associate(server, ae)
    q = Dataset()
    if level:
        q.QueryRetrieveLevel = level
    q.PatientID = ""
    statuses = [s.Status for s, _ in assoc.send_c_find(q, FIND) if s]
    assoc.release()
    assert statuses == [status]
    assert "C-FIND from TESTSCU at 127.0.0.1" in server.log_text()


def test_patient_root_patient_level(server: Server, ct_series: list[Dataset]) -> None:
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(PatientRootQueryRetrieveInformationModelFind)
    assoc = associate(server, ae)
    q = Dataset()
    q.QueryRetrieveLevel = "PATIENT"
    q.PatientID = "PLAS*"
    q.PatientName = ""
    answers = [i for s, i in assoc.send_c_find(q, PatientRootQueryRetrieveInformationModelFind)
               if s and s.Status == 0xFF00]
    assoc.release()
    assert [(a.PatientID, a.PatientName) for a in answers] == [("PLASTIC", "HEAD")]


def _send_raw(server: Server, path: Path) -> int:
    """Send a file's dataset bytes as they are (pynetdicom chunked send), whatever they contain."""
    from pynetdicom import _config

    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(CTImageStorage, ["1.2.840.10008.1.2.1"])
    assoc = associate(server, ae)
    old = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        status = assoc.send_c_store(path)
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = old
    assoc.release()
    return status.Status


def _find_instance(server: Server, sop_uid: str) -> list:
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(FIND)
    assoc = associate(server, ae)
    q = Dataset()
    q.QueryRetrieveLevel = "IMAGE"
    q.SOPInstanceUID = sop_uid
    found = [i for s, i in assoc.send_c_find(q, FIND) if s and s.Status == 0xFF00]
    assoc.release()
    return found


def test_dataset_without_sop_instance_uid_gets_a_failure_status(server: Server, tmp_path: Path) -> None:
    ds = tiny_ct("NOUID", "1.2.3.1", "1.2.3.2", 1)
    sop = ds.SOPInstanceUID
    del ds.SOPInstanceUID  # the file meta still names it, so the C-STORE request carries it
    path = tmp_path / "nouid.dcm"
    ds.preamble = b"\0" * 128  # a Part-10 file whose meta names the instance but whose dataset does not
    ds.save_as(path, enforce_file_format=False)
    assert _send_raw(server, path) == 0xC000
    assert _find_instance(server, sop) == []
    assert "dataset has no SOPInstanceUID" in server.log_text()


def test_truncated_dataset_gets_a_failure_status(server: Server, tmp_path: Path) -> None:
    ds = tiny_ct("TRUNC", "1.2.3.3", "1.2.3.4", 1)
    path = tmp_path / "trunc.dcm"
    path.write_bytes(encode(ds)[:-10])
    assert _send_raw(server, path) == 0xC000
    assert _find_instance(server, ds.SOPInstanceUID) == []
    assert "truncated" in server.log_text()


def test_association_dropped_mid_transfer_leaves_nothing_indexed(server: Server, tmp_path: Path) -> None:
    import socket as sockets

    import numpy as np

    ds = tiny_ct("DROP", "1.2.3.5", "1.2.3.6", 1)
    ds.Rows = ds.Columns = 2048
    ds.PixelData = np.zeros((2048, 2048), np.int16).tobytes()  # 8 MB, sent as many P-DATA PDUs
    sent = []

    def cut_after_a_few_pdus(event) -> None:
        sent.append(1)
        if len(sent) == 6:  # association set-up, then a few P-DATA: the dataset is half sent
            event.assoc.dul.socket.socket.shutdown(sockets.SHUT_RDWR)

    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(CTImageStorage, ["1.2.840.10008.1.2.1"])
    assoc = associate(server, ae, evt_handlers=[(evt.EVT_PDU_SENT, cut_after_a_few_pdus)])
    try:
        assoc.send_c_store(ds)
    except Exception:  # noqa: BLE001 - the dropped connection may surface as an error on this side
        pass
    time.sleep(1)
    assert _find_instance(server, ds.SOPInstanceUID) == []
    assert not list((server.data_dir / "files").glob("DROP/**/*.dcm"))
    ae2 = AE(ae_title="TESTSCU")
    ae2.add_requested_context(Verification)
    again = associate(server, ae2)  # the server goes on serving
    assert again.send_c_echo().Status == 0
    again.release()


def test_c_cancel_stops_a_long_answer(other_server: Server, tmp_path: Path) -> None:
    server = other_server
    # Sent with storescu: pynetdicom's requestor can lose a response that comes back within its reactor's
    # unpause window (its reactor thread takes it off the queue), which 1000 quick C-STOREs in a row can hit.
    many = tmp_path / "many"
    many.mkdir()
    for i in range(1000):
        tiny_ct("MANY", "1.2.3.7", "1.2.3.8", i + 1).save_as(many / f"{i:04d}.dcm", enforce_file_format=True)
    sent = storescu(server, many, extra=("+sd",))
    assert sent.returncode == 0, sent.stderr
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(FIND)
    assoc = associate(server, ae)
    count = Dataset()
    count.QueryRetrieveLevel = "STUDY"
    count.StudyInstanceUID = "1.2.3.7"
    count.NumberOfStudyRelatedInstances = None
    stored = [ds.NumberOfStudyRelatedInstances for status, ds in assoc.send_c_find(count, FIND) if ds is not None]
    assert stored == [1000]
    q = Dataset()
    q.QueryRetrieveLevel = "IMAGE"
    q.StudyInstanceUID = "1.2.3.7"
    q.SOPInstanceUID = ""
    answers, final = 0, None
    # The cancel goes out on the first answer, while the server is still producing the other 999 (pynetdicom
    # forgets a C-CANCEL that arrives before the request is being served, so it cannot be sent earlier).
    for status, _ in assoc.send_c_find(q, FIND, msg_id=7):
        if status and status.Status == 0xFF00:
            answers += 1
            if answers == 1:
                assoc.send_c_cancel(7, query_model=FIND)
        elif status:
            final = status.Status
    assoc.release()
    assert final == 0xFE00
    assert answers < 1000


def test_only_known_aes_are_accepted_when_asked(tmp_path: Path) -> None:
    config = ('known_aes_only = true\n[peers.modality]\nae_title = "KNOWN"\nhost = "127.0.0.1"\nport = 104\n')
    server = Server(tmp_path / "data", config=config).start()
    try:
        for calling, ok in (("KNOWN", True), ("STRANGER", False)):
            ae = AE(ae_title=calling)
            ae.add_requested_context(Verification)
            assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title=server.ae_title)
            assert assoc.is_established is ok
            if ok:
                assoc.release()
        assert re.search(r"rejecting association from unknown AE STRANGER at 127\.0\.0\.1:\d+", server.log_text())
    finally:
        server.stop()


def test_echoscu(server: Server) -> None:
    proc = subprocess.run([dcmtk("echoscu"), "-aec", server.ae_title, "127.0.0.1", str(server.dicom_port)],
                          capture_output=True, text=True, env=dcmtk_env(), timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_sigterm_shuts_down_cleanly(tmp_path: Path) -> None:
    server = Server(tmp_path / "data").start()
    assert server.stop() == 0
    assert "DICOM service stopped" in server.log_text()
