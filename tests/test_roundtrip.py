"""Every instance comes back from C-STORE → C-FIND → C-GET / C-MOVE as it went in: byte for byte in the transfer
syntax it was stored in, value for value in any other uncompressed one a receiver takes instead (Implicit VR
Little Endian, Explicit VR Little Endian, Deflated Explicit VR Little Endian, Explicit VR Big Endian; PS3.5
Annex A), retired storage SOP classes included.

The expectation is always the original file read by pydicom (``roundtrip_support.differences``), and for the
data set written here the values it was written with. Big endian palette images come from dcmtk's ``dcmconv``
(a converter independent of the code under test) and from pydicom, with every binary VR in sequences too.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.tag import Tag
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    UltrasoundImageStorage,
    generate_uid,
)
from pynetdicom import AE, _config, build_role, evt, register_uid
from pynetdicom.service_class import StorageServiceClass
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelFind as FIND,
    StudyRootQueryRetrieveInformationModelGet as GET,
    StudyRootQueryRetrieveInformationModelMove as MOVE,
)

from roundtrip_support import UNCOMPRESSED, Received, collector, dataset_part, differences
from support import Server, dcmtk, dcmtk_env, free_port
from test_dimse_interop import associate, image_query

US_RETIRED = "1.2.840.10008.5.1.4.1.1.6"  # Ultrasound Image Storage (Retired)
NM_RETIRED = "1.2.840.10008.5.1.4.1.1.5"  # Nuclear Medicine Image Storage (Retired)
RETIRED = ("us_retired_big_endian", "nm_retired_big_endian")
SHARED = {  # uncompressed shared files with a SOP Instance UID each, and what each exercises
    "mr_big_endian": "edge/MR_small_bigendian.dcm",  # 16-bit OW
    "rgb_big_endian": "edge/ExplVR_BigEnd.dcm",  # 8-bit OB
    "palette_segmented_implicit": "us/gdcm-US-ALOKA-16.dcm",  # Segmented LUTs, "US or SS" LUT Descriptors
    "palette_8bit": "colour/examples_palette.dcm",  # LUT Data
    "overlays_icon_private": "mr/MR-SIEMENS-DICOM-WithOverlays.dcm",  # overlays, icon pixels, private elements
    "waveform": "other/waveform_ecg.dcm",  # Waveform Data (OW)
    "structured_report": "other/test-SR.dcm",  # sequences nested deep
    "dose_32bit_implicit": "rt/edge/rtdose_pydicom.dcm",  # 32-bit OW pixels
    "deflated": "compressed/image_dfl.dcm",
}
PYDICOM = {  # pydicom's own big endian files
    "rgb_8bit_ow_big_endian": "SC_rgb_small_odd_big_endian.dcm",  # 8-bit pixels as big endian words
    "segmentation_1bit_big_endian": "liver_expb_1frame.dcm",
}
PALETTE = {"red": [0, 1, 0, 1, 255, 65535], "green": [0, 1, 65535, 1, 255, 0], "blue": [0, 2, 1000, 2000, 1, 254, 3000]}
PIXELS = [-128, -1, 0, 1, 127, 5, -5, 100, -100, 64, -64, 32, -32, 16, -16, 8]


def with_new_uid(src: Path, dest: Path, **attrs: str) -> Path:
    """A copy of ``src`` as another instance (``attrs`` changed), in the same transfer syntax: pydicom writes
    what it has not decoded as it read it."""
    ds = pydicom.dcmread(src)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    for keyword, value in attrs.items():
        setattr(ds, keyword, value)
    if "SOPClassUID" in attrs:
        ds.file_meta.MediaStorageSOPClassUID = attrs["SOPClassUID"]
    ds.save_as(dest, enforce_file_format=True)
    return dest


def dcmconv(option: str, src: Path, dest: Path) -> Path:
    """``src`` converted by dcmtk to another transfer syntax (``+ti`` implicit VR, ``+tb`` big endian)."""
    proc = subprocess.run([dcmtk("dcmconv"), option, str(src), str(dest)], capture_output=True, text=True,
                          env=dcmtk_env())
    assert proc.returncode == 0, proc.stderr
    return dest


def big_endian(values: list[int], kind: str = "u2") -> bytes:
    return np.array(values, f">{kind}").tobytes()


def palette_written_by_pydicom(path: Path) -> Path:
    """A signed 16-bit PALETTE COLOR image with Segmented Palette Color LUTs (PS3.3 C.7.9), in Explicit VR Big
    Endian, with a value of every binary VR in a sequence, US or SS elements before and below the Pixel
    Representation they follow, and private elements of a creator pydicom knows. pydicom writes OB/OW/OF/OD/
    OL/OV values as they are given, so those are given big endian."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = UltrasoundImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.PatientID, ds.PatientName, ds.Modality = "ROUNDTRIP", "PALETTE^BIG", "US"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.add(DataElement(0x00189810, "SS", -5))  # Zero Velocity Pixel Value: US or SS, before (0028,0103)
    ds.Rows = ds.Columns = 4
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "PALETTE COLOR"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit, ds.PixelRepresentation = 15, 1
    ds.FrameIncrementPointer = Tag(0x00181063)  # AT
    for colour, tag in (("red", 0x00281101), ("green", 0x00281102), ("blue", 0x00281103)):
        ds.add(DataElement(tag, "SS", [256, -128, 16]))  # US or SS: SS for Pixel Representation 1
        ds.add(DataElement(tag + 0x120, "OW", big_endian(PALETTE[colour])))  # (0028,1221-1223)
    voi = Dataset()
    voi.add(DataElement(0x00283002, "SS", [4, -2, 16]))  # LUT Descriptor, US or SS
    voi.add(DataElement(0x00283006, "OW", big_endian([0, 100, 200, 65535])))  # LUT Data, US or OW
    ds.VOILUTSequence = Sequence([voi])
    selector = Dataset()
    selector.SelectorAttribute = Tag(0x00280010)
    for keyword, vr, value in (("SelectorUSValue", "US", [1, 65535]), ("SelectorSSValue", "SS", [-2, 3]),
                               ("SelectorULValue", "UL", [2**32 - 1]), ("SelectorSLValue", "SL", [-70000]),
                               ("SelectorFLValue", "FL", [1.5, -0.25]), ("SelectorFDValue", "FD", [3.141592653589793]),
                               ("SelectorSVValue", "SV", [-(2**40)]), ("SelectorUVValue", "UV", [2**63 + 5]),
                               ("SelectorATValue", "AT", [Tag(0x00100020), Tag(0x7FE00010)])):
        selector.add(DataElement(keyword, vr, value))
    for keyword, vr, value in (("SelectorOWValue", "OW", big_endian([1, 2, 0xABCD])),
                               ("SelectorOFValue", "OF", big_endian([1.25, -2.5], "f4")),
                               ("SelectorOLValue", "OL", big_endian([1, 2**31 + 7], "u4")),
                               ("SelectorODValue", "OD", big_endian([1e300, -2.0], "f8")),
                               ("SelectorOVValue", "OV", big_endian([2**64 - 2], "u8"))):
        selector.add(DataElement(keyword, vr, value))
    inner = Dataset()
    inner.add(DataElement(0x00283002, "SS", [2, -1, 16]))  # two levels below the Pixel Representation
    inner.add(DataElement(0x00283006, "OW", big_endian([7, 8])))
    selector.VOILUTSequence = Sequence([inner])
    ds.ImageSetSelectorSequence = Sequence([selector])
    ds["ImageSetSelectorSequence"].is_undefined_length = True
    ds.add_new(0x00190010, "LO", "SIEMENS MR HEADER")
    ds.add_new(0x0019100A, "US", 3)  # NumberOfImagesInMosaic in pydicom's private dictionary
    ds.add_new(0x00191012, "SL", [-1, 2, -300000])  # TablePositionOrigin
    ds.PixelData = big_endian(PIXELS, "i2")
    ds["PixelData"].VR = "OW"
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> dict[str, Path]:
    """The files stored, by name: shared files, pydicom's, and copies made here as other instances."""
    made = tmp_path_factory.mktemp("sources")
    files = {name: shared_data / rel for name, rel in SHARED.items()}
    files |= {name: Path(get_testdata_file(f)) for name, f in PYDICOM.items()}
    files["dose_32bit_big_endian"] = with_new_uid(Path(get_testdata_file("rtdose_expb.dcm")), made / "dose.dcm")
    # Compressed: decompressed, then converted, for a receiver that takes uncompressed syntaxes only.
    files["jpeg2000_lossless"] = with_new_uid(shared_data / "compressed/MR_small_jp2klossless.dcm", made / "j2k.dcm")
    files["palette_written_by_pydicom"] = palette_written_by_pydicom(made / "palette.dcm")
    # ... as implicit VR, where its US or SS elements have to be resolved again, converted by dcmtk.
    implicit = with_new_uid(files["palette_written_by_pydicom"], made / "palette-copy.dcm")
    files["palette_written_by_pydicom_implicit"] = dcmconv("+ti", implicit, made / "palette-implicit.dcm")
    # Retired classes, big endian: a segmented palette image converted by dcmtk, and an MR slice as NM.
    implicit = with_new_uid(files["palette_segmented_implicit"], made / "us-implicit.dcm", SOPClassUID=US_RETIRED)
    files["us_retired_big_endian"] = dcmconv("+tb", implicit, made / "us.dcm")
    files["nm_retired_big_endian"] = with_new_uid(files["mr_big_endian"], made / "nm.dcm", SOPClassUID=NM_RETIRED,
                                                  Modality="NM")
    return files


@pytest.fixture(scope="module")
def destination_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, destination_port: int, sources: dict[str, Path]):
    """One ``hounsfield serve`` (SQLite) holding every source, each sent in its own transfer syntax with its
    bytes as they are in the file (pynetdicom's chunked send)."""
    config = f'[peers.dest]\nae_title = "DEST"\nhost = "127.0.0.1"\nport = {destination_port}\n'
    srv = Server(tmp_path_factory.mktemp("roundtrip") / "data", config=config).start()
    try:
        ae = AE(ae_title="TESTSCU")
        headers = {name: pydicom.dcmread(f, stop_before_pixels=True) for name, f in sources.items()}
        for sop, ts in sorted({(str(h.SOPClassUID), str(h.file_meta.TransferSyntaxUID)) for h in headers.values()}):
            ae.add_requested_context(sop, [ts])
        assoc = associate(srv, ae)
        chunked, _config.STORE_SEND_CHUNKED_DATASET = _config.STORE_SEND_CHUNKED_DATASET, True
        try:
            statuses = {name: assoc.send_c_store(f).Status for name, f in sources.items()}
        finally:
            _config.STORE_SEND_CHUNKED_DATASET = chunked
            assoc.release()
        assert set(statuses.values()) == {0x0000}, statuses
        yield srv
    finally:
        srv.stop()


def image_keys(ds: Dataset) -> list[str]:
    """The ``-k`` options of an IMAGE-level identifier for ``ds`` (dcmtk's tools and ``hounsfield``)."""
    keys = ["QueryRetrieveLevel=IMAGE",
            *(f"{k}={ds[k].value}" for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"))]
    return [arg for key in keys for arg in ("-k", key)]


def sop_classes(sources: dict[str, Path]) -> list[str]:
    return sorted({str(pydicom.dcmread(f, stop_before_pixels=True).SOPClassUID) for f in sources.values()})


def check(sources: dict[str, Path], received: dict[str, Received], syntax: str) -> None:
    """Each source came back in ``syntax``: its bytes unchanged where that is its own, its values otherwise."""
    problems = {}
    for name, path in sources.items():
        original = pydicom.dcmread(path)
        got = received.get(original.SOPInstanceUID)
        if got is None or got.syntax != syntax:
            problems[name] = f"received in {got and got.syntax}" if got else "not received"
        elif original.file_meta.TransferSyntaxUID == syntax:
            if got.data != dataset_part(path.read_bytes()):
                problems[name] = "bytes differ from the file's"
        elif found := differences(pydicom.dcmread(path), got.dataset()):
            problems[name] = found[:8]
    assert not problems, problems


def test_c_find_finds_every_stored_instance_with_its_class(server: Server, sources: dict[str, Path]) -> None:
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(FIND)
    assoc = associate(server, ae)
    for name, path in sources.items():
        original = pydicom.dcmread(path, stop_before_pixels=True)
        q = image_query(original)
        q.SOPClassUID = ""
        found = [i for s, i in assoc.send_c_find(q, FIND) if s and s.Status == 0xFF00]
        assert [i.SOPClassUID for i in found] == [original.SOPClassUID], name
    assoc.release()


@pytest.mark.parametrize("syntax", UNCOMPRESSED, ids=lambda ts: ts.keyword)
def test_c_get_to_a_requestor_taking_one_uncompressed_syntax(server: Server, sources: dict[str, Path],
                                                              syntax: str) -> None:
    """A C-GET requestor taking the SCP role with one transfer syntax only (a big endian viewer, one that takes
    implicit VR only) gets every instance: as stored when that is its syntax, converted losslessly otherwise."""
    classes = sop_classes(sources)
    ae = AE(ae_title="ONESYNTAX")
    ae.add_requested_context(GET)
    for sop in classes:
        ae.add_requested_context(sop, [syntax])
    received: dict[str, Received] = {}
    assoc = associate(server, ae, ext_neg=[build_role(sop, scp_role=True) for sop in classes],
                      evt_handlers=[(evt.EVT_C_STORE, collector(received))])
    statuses = {name: [s.Status for s, _ in assoc.send_c_get(image_query(pydicom.dcmread(f)), GET) if s][-1]
                for name, f in sources.items()}
    assoc.release()
    assert set(statuses.values()) == {0x0000}, statuses
    check(sources, received, syntax)


@pytest.mark.parametrize("syntax", UNCOMPRESSED, ids=lambda ts: ts.keyword)
def test_c_move_to_a_destination_taking_one_uncompressed_syntax(server: Server, sources: dict[str, Path],
                                                                 destination_port: int, syntax: str) -> None:
    """The same through C-MOVE: hounsfield proposes every uncompressed syntax, the destination takes one."""
    # pynetdicom, as an SCP, serves C-STOREs of the classes its Storage Service Class knows (hounsfield's server
    # registers the others the same way).
    register_uid(US_RETIRED, "UltrasoundImageStorageRetired", StorageServiceClass)
    register_uid(NM_RETIRED, "NuclearMedicineImageStorageRetired", StorageServiceClass)
    dest = AE(ae_title="DEST")
    for sop in sop_classes(sources):
        dest.add_supported_context(sop, [syntax])
    received: dict[str, Received] = {}
    scp = dest.start_server(("127.0.0.1", destination_port), block=False,
                            evt_handlers=[(evt.EVT_C_STORE, collector(received))])
    try:
        ae = AE(ae_title="MOVER")
        ae.add_requested_context(MOVE)
        assoc = associate(server, ae)
        statuses = {name: [s.Status for s, _ in assoc.send_c_move(image_query(pydicom.dcmread(f)), "DEST", MOVE)
                           if s][-1] for name, f in sources.items()}
        assoc.release()
    finally:
        scp.shutdown()
    assert set(statuses.values()) == {0x0000}, statuses
    check(sources, received, syntax)


def test_getscu_retrieves_the_retired_classes(server: Server, sources: dict[str, Path], tmp_path: Path) -> None:
    """dcmtk's getscu, a real peer proposing the storage classes it knows (the retired ones among them), gets
    the retired US and NM instances stored in big endian in the syntax hounsfield accepted for them, Explicit
    VR Little Endian (getscu 3.6.7 proposes it even when asked for implicit VR only), every value as stored."""
    for name in RETIRED:
        original = pydicom.dcmread(sources[name])
        out = tmp_path / name
        out.mkdir()
        proc = subprocess.run([dcmtk("getscu"), "-S", "-aec", server.ae_title, "-od", str(out),
                               *image_keys(original), "127.0.0.1", str(server.dicom_port)],
                              capture_output=True, text=True, env=dcmtk_env(), timeout=120)
        assert proc.returncode == 0, proc.stderr
        (got,) = [pydicom.dcmread(f) for f in out.iterdir()]
        assert (got.SOPClassUID, got.file_meta.TransferSyntaxUID) == (original.SOPClassUID, ExplicitVRLittleEndian)
        assert differences(pydicom.dcmread(sources[name]), got) == [], name


def test_hounsfield_get_receives_the_retired_classes(server: Server, sources: dict[str, Path],
                                                     tmp_path: Path) -> None:
    """``hounsfield get`` (``dimse/client.py``) as C-GET SCU receives the retired US and NM instances (in the
    first syntax it proposes, Explicit VR Little Endian: converted from big endian), every value as stored."""
    for name in RETIRED:
        out = tmp_path / name
        proc = server.cli("get", "--remote", f"{server.ae_title}@127.0.0.1:{server.dicom_port}",
                          *image_keys(pydicom.dcmread(sources[name])), "--out", str(out))
        assert "1 received" in proc.stdout, proc.stdout
        (got,) = out.iterdir()
        assert differences(pydicom.dcmread(sources[name]), pydicom.dcmread(got)) == [], name


def test_big_endian_values_come_back_as_written(server: Server, sources: dict[str, Path]) -> None:
    """The data set written here, converted from big endian to little endian, holds the values it was written
    with: signed LUT Descriptors and pixels, the segmented LUTs, every binary VR in a sequence, private ones."""
    original = pydicom.dcmread(sources["palette_written_by_pydicom"])
    ae = AE(ae_title="LITTLE")
    ae.add_requested_context(GET)
    ae.add_requested_context(UltrasoundImageStorage, [ExplicitVRLittleEndian])
    received: dict[str, Received] = {}
    assoc = associate(server, ae, ext_neg=[build_role(UltrasoundImageStorage, scp_role=True)],
                      evt_handlers=[(evt.EVT_C_STORE, collector(received))])
    assert [s.Status for s, _ in assoc.send_c_get(image_query(original), GET) if s][-1] == 0x0000
    assoc.release()
    got = received[original.SOPInstanceUID].dataset()
    assert got.ZeroVelocityPixelValue == -5
    assert got.pixel_array.tolist() == np.array(PIXELS).reshape(4, 4).tolist()
    for colour in ("Red", "Green", "Blue"):
        assert got[f"{colour}PaletteColorLookupTableDescriptor"].value == [256, -128, 16]
        data = got[f"Segmented{colour}PaletteColorLookupTableData"].value
        assert np.frombuffer(data, "<u2").tolist() == PALETTE[colour.lower()]
    assert got.VOILUTSequence[0].LUTDescriptor == [4, -2, 16]
    assert np.frombuffer(got.VOILUTSequence[0].LUTData, "<u2").tolist() == [0, 100, 200, 65535]
    selector = got.ImageSetSelectorSequence[0]
    assert selector.VOILUTSequence[0].LUTDescriptor == [2, -1, 16]
    assert (selector.SelectorSSValue, selector.SelectorSLValue, selector.SelectorFDValue) == \
        ([-2, 3], -70000, 3.141592653589793)
    assert (selector.SelectorSVValue, selector.SelectorUVValue) == (-(2**40), 2**63 + 5)
    assert selector.SelectorATValue == [0x00100020, 0x7FE00010] and selector.SelectorAttribute == 0x00280010
    assert np.frombuffer(selector.SelectorOFValue, "<f4").tolist() == [1.25, -2.5]
    assert np.frombuffer(selector.SelectorODValue, "<f8").tolist() == [1e300, -2.0]
    assert np.frombuffer(selector.SelectorOLValue, "<u4").tolist() == [1, 2**31 + 7]
    assert np.frombuffer(selector.SelectorOVValue, "<u8").tolist() == [2**64 - 2]
    assert np.frombuffer(selector.SelectorOWValue, "<u2").tolist() == [1, 2, 0xABCD]
    assert (got[0x0019100A].value, got[0x00191012].value) == (3, [-1, 2, -300000])
