"""The fast header walker gives the DICOM JSON pydicom gives, on every file we have."""

from __future__ import annotations

import json
import math
import struct
import warnings
import zlib
from pathlib import Path

import pydicom
import pydicom.data
import pytest

from hounsfield import headerjson
from hounsfield.dicomfile import BULK_PLACEHOLDER, Header, pack_json, to_json, unpack_json
from hounsfield.errors import InvalidDataset
from hounsfield.dicomfile import read_header
from conftest import SHARED_DATA, require_shared_data

BUNDLED = sorted(str(p) for p in (Path(pydicom.data.__file__).parent / "test_files").rglob("*.dcm"))


def _reference(path: str) -> dict | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            return to_json(ds, BULK_PLACEHOLDER)
        except Exception:  # noqa: BLE001 - files pydicom itself cannot read are not compared
            return None


def _public(j: dict) -> dict:
    """Private elements are left out: pydicom resolves some of their VRs from its private dictionary."""
    return {k: v for k, v in j.items() if int(k[:4], 16) % 2 == 0 and not k.startswith("0002")}


def _compare(path: str) -> None:
    ref = _reference(path)
    if ref is None:
        pytest.skip("pydicom cannot read it either")
    try:
        got = headerjson.parse(Path(path).read_bytes(), lambda t: f"{BULK_PLACEHOLDER}/{t:08X}").json
    except headerjson.Truncated:
        pytest.skip("truncated: refused (checked below)")
    except headerjson.HeaderError:
        return  # the caller falls back to pydicom for these
    a, b = _public(ref), _public(got)
    assert {k for k in a if a[k] != b.get(k)} | {k for k in b if k not in a} <= {"00280008"}  # badVR.dcm: '1A'


@pytest.mark.parametrize("path", BUNDLED, ids=[Path(p).name for p in BUNDLED])
def test_bundled_files(path: str) -> None:
    _compare(path)


@pytest.mark.parametrize("path", sorted(str(p) for p in SHARED_DATA.rglob("*.dcm")) if SHARED_DATA.is_dir()
                         else ["missing"])
def test_shared_files(path: str) -> None:
    require_shared_data()
    _compare(path)


@pytest.mark.parametrize("keys_only", [False, True], ids=["full", "keys-only"])
@pytest.mark.parametrize("name", ["MR_truncated.dcm", "rtplan_truncated.dcm",
                                  "emri_small_jpeg_2k_lossless_too_short.dcm"])
def test_truncated_files_are_refused(name: str, keys_only: bool) -> None:
    root = require_shared_data()
    with pytest.raises(InvalidDataset, match="truncated"):
        read_header(root / "malformed" / name, keys_only=keys_only)


@pytest.mark.parametrize("path", BUNDLED, ids=[Path(p).name for p in BUNDLED])
def test_keys_only_reads_the_identifying_uids_as_the_full_walk_does(path: str) -> None:
    """The quick check a received instance gets before it is acknowledged."""
    _compare_keys_only(path)


@pytest.mark.parametrize("path", sorted(str(p) for p in SHARED_DATA.rglob("*.dcm")) if SHARED_DATA.is_dir()
                         else ["missing"])
def test_keys_only_on_shared_files(path: str) -> None:
    require_shared_data()
    _compare_keys_only(path)


def _compare_keys_only(path: str) -> None:
    try:
        full = read_header(Path(path))
    except InvalidDataset:
        with pytest.raises(InvalidDataset):
            read_header(Path(path), keys_only=True)
        return
    quick = read_header(Path(path), keys_only=True)
    for keyword in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        assert quick.text(keyword) == full.text(keyword)
    assert quick.transfer_syntax_uid == full.transfer_syntax_uid


def test_explicit_sv_and_uv_have_32_bit_lengths(tmp_path: Path) -> None:
    """PS3.5 Table 7.1-1: SV and UV, like OB or UT, have a reserved field and a 4-byte length in explicit VR.
    Read with a 2-byte length, the elements after them would be garbage."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.PatientID = "SVUV"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.add_new(0x00720082, "SV", [-5, 2**40])  # Selector SV Value
    ds.add_new(0x00720083, "UV", [7, 2**63])  # Selector UV Value
    ds.add_new(0x00720100, "US", 3)  # Number of Screens: after them, read only if their lengths were
    path = tmp_path / "svuv.dcm"
    ds.save_as(path, enforce_file_format=True)
    raw = path.read_bytes()
    at = raw.index(b"\x72\x00\x82\x00")
    assert raw[at + 4:at + 12] == b"SV\x00\x00\x10\x00\x00\x00"  # what pydicom wrote: reserved, 4-byte length
    got = headerjson.parse(raw, lambda t: f"{BULK_PLACEHOLDER}/{t:08X}").json
    assert got["00720082"] == {"vr": "SV", "Value": [-5, 2**40]}
    assert got["00720083"] == {"vr": "UV", "Value": [7, 2**63]}
    assert got["00720100"] == {"vr": "US", "Value": [3]}
    assert got == _reference(str(path))


def _explicit_le(*elements: tuple[int, bytes, bytes]) -> bytes:
    """A bare explicit VR little endian dataset of (tag, VR, value) with 16-bit lengths, as PS3.5 7.1.2 lays
    them out; Specific Character Set first, which is how ``parse`` tells it from implicit VR."""
    out = b""
    for tag, vr, value in ((0x00080005, b"CS", b"ISO_IR 100"), *elements):
        out += struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr, len(value)) + value
    return out


def test_non_finite_and_huge_numbers_survive_the_json_of_the_index() -> None:
    """JSON has no NaN or Infinity (RFC 8259 6): a DS holding them is kept as received, as an invalid number
    is; an IS beyond 64 bits is a JSON number the fast encoder refuses and its reader would make a float: the
    standard library writes and reads it, exactly."""
    raw = _explicit_le((0x00281050, b"DS", b"NaN "), (0x00281051, b"DS", b"-Infinity "),
                       (0x00200013, b"IS", b"123456789012345678901234567890"))
    got = headerjson.parse(raw).json
    assert got["00281050"] == {"vr": "DS", "Value": ["NaN"]}
    assert got["00281051"] == {"vr": "DS", "Value": ["-Infinity"]}
    assert got["00200013"] == {"vr": "IS", "Value": [123456789012345678901234567890]}
    packed = pack_json(got)
    assert json.loads(zlib.decompress(packed)) == got  # valid JSON, read by the standard library alike
    assert unpack_json(packed) == got


def test_a_header_packed_before_orjson_with_nan_is_still_read() -> None:
    """Blobs written by the standard library's encoder hold NaN as a bare token, which orjson refuses."""
    legacy = zlib.compress(json.dumps({"00281050": {"vr": "DS", "Value": [float("nan")]}}).encode())
    value = unpack_json(legacy)["00281050"]["Value"][0]
    assert math.isnan(value)


def test_the_packed_header_is_utf8_json_with_its_bulk_data_uris() -> None:
    raw = _explicit_le((0x00100010, b"PN", "Müller^Jörg".encode("latin-1") + b" "))
    raw += struct.pack("<HH2sHI", 0x0009, 0x1011, b"OB", 0, 2000) + bytes(2000)  # OB: a 32-bit length
    header = Header(headerjson.parse(raw, lambda t: f"{BULK_PLACEHOLDER}/{t:08X}").json, "1.2.840.10008.1.2.1",
                    False)
    text = zlib.decompress(header.packed("/dicom-web/studies/1/series/2/instances/3/bulk")).decode("utf-8")
    assert json.loads(text) == {
        "00080005": {"vr": "CS", "Value": ["ISO_IR 100"]},
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Müller^Jörg"}]},
        "00091011": {"vr": "OB", "BulkDataURI": "/dicom-web/studies/1/series/2/instances/3/bulk/00091011"}}
