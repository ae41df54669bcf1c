"""Coverage-guided fuzzing (atheris: libFuzzer for Python) of the parsers that read bytes from the network
(issue 12), each from valid inputs, for a bounded number of inputs:

- ``header``: the header walker, ``dicomfile.parse_header`` (``headerjson.parse``, falling back to pydicom),
  through which every stored instance goes (C-STORE, STOW-RS, import), on pydicom's test files (explicit and
  implicit VR, big endian, deflated, encapsulated, sequences, a bare dataset). Its one documented failure is
  ``InvalidDataset``; a header it takes has the four identifying UIDs and can be written to the index (JSON).
  A header the full parse takes is taken by the quick check of a received instance (``keys_only``) with the
  same UIDs: C-STORE never refuses what import stores.
- ``pdu``: the C-STORE receive path's parsing of P-DATA-TF PDUs (``store_receive._pdvs``) and of command sets
  (``command_elements``, ``parse_store_request``, ``awaited_response``), on PDUs pynetdicom encodes (a C-STORE-RQ
  and its data, a C-ECHO-RQ). They run in the DUL thread and document no exception at all: a malformed PDU is
  None, which hands it to pynetdicom's refusal. What they take adds up (PDV lengths, elements), a request read
  has UIDs, and a command set hounsfield encodes reads back as written.
- ``multipart``: ``MultipartParser`` (STOW-RS, uploads) on bodies as ``stream_parts`` writes them and as
  dicomweb-client sends them. Its documented failure is ``MalformedMultipart``; the parts do not depend on how
  the body is cut into chunks, and parts written by ``stream_parts`` read back the same.

Each target runs in a process of its own (libFuzzer ends the process when it is done) with a fixed seed and
``-runs``: the same inputs on every run; an input taking over ``-timeout`` seconds is a hang and fails the test,
as does any other exception, whose traceback and input (base64) the failure shows. Run by hand for longer:
``python tests/test_fuzz_parsers.py header -runs=200000 CORPUS_DIR``.
"""

from __future__ import annotations

import base64
import io
import random
import re
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest

RUNS = {"header": 12000, "pdu": 60000, "multipart": 40000}  # inputs per target: 6 to 15 s each here
INPUT_TIMEOUT = 30  # seconds one input may take before it is a hang
RFC2046_BOUNDARY = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")


# ---- seeds: valid inputs the fuzzer starts from ------------------------------------------------------------------
def header_seeds() -> list[bytes]:
    """pydicom's test files, as files and as bare datasets; the CT with a small image, so that mutations land in
    its header rather than in 32 KB of pixels."""
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.filewriter import dcmwrite
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

    out = []
    for name in ("MR_small_bigendian.dcm", "image_dfl.dcm", "rtplan.dcm", "rtstruct.dcm", "SC_rgb_small_odd.dcm",
                 "nested_priv_SQ.dcm", "ExplVR_BigEndNoMeta.dcm", "UN_sequence.dcm", "JPEG2000.dcm"):
        out.append(Path(get_testdata_file(name)).read_bytes())
    ct = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ct.Rows = ct.Columns = 4
    ct.PixelData = bytes(range(32))
    for syntax in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
        ct.file_meta.TransferSyntaxUID = syntax
        buffer = io.BytesIO()
        dcmwrite(buffer, ct, enforce_file_format=True)
        out += [buffer.getvalue(), _bare(ct, syntax == ImplicitVRLittleEndian)]
    return out


def _bare(ds: Any, implicit: bool) -> bytes:  # noqa: ANN401 - a pydicom Dataset
    """The dataset alone, as a C-STORE sends it (no preamble, no file meta)."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, implicit
    write_dataset(buffer, ds, (implicit, True))
    return buffer.getvalue()


def pdu_seeds() -> list[bytes]:
    """The P-DATA-TF PDUs pynetdicom encodes for a C-STORE-RQ (command and data) and a C-ECHO-RQ, and a C-STORE
    response and request as hounsfield's fast path encodes them."""
    from pynetdicom.dimse_messages import C_ECHO_RQ, C_STORE_RQ
    from pynetdicom.dimse_primitives import C_ECHO, C_STORE
    from pynetdicom.pdu import P_DATA_TF
    from pynetdicom.sop_class import CTImageStorage, Verification

    from hounsfield.dimse import store_fastpath

    store = C_STORE()
    uid = "1.2.826.0.1.3680043.8.498.10530507327922342461907454736987204753"  # fixed: the same inputs every run
    store.MessageID, store.AffectedSOPClassUID, store.AffectedSOPInstanceUID = 7, CTImageStorage, uid
    store.Priority, store.MoveOriginatorApplicationEntityTitle, store.MoveOriginatorMessageID = 2, "MOVER", 3
    store.DataSet = io.BytesIO(b"\x08\x00\x18\x00\x08\x00\x00\x001.2.3.4\x00")  # SOP Instance UID
    echo = C_ECHO()
    echo.MessageID, echo.AffectedSOPClassUID = 1, Verification
    out = []
    for primitive, message in ((store, C_STORE_RQ()), (echo, C_ECHO_RQ())):
        message.primitive_to_message(primitive)
        for pdata in message.encode_msg(1, 16384):
            pdu = P_DATA_TF()
            pdu.from_primitive(pdata)
            out.append(pdu.encode())
    for encoded in (store_fastpath.p_data_pdus(3, store_fastpath.command_set(5, CTImageStorage, uid, 0), b"", 0),
                    store_fastpath.p_data_pdus(1, store_fastpath.request_command_set(9, CTImageStorage, uid, 0),
                                               b"\x08\x00\x18\x00\x02\x00\x00\x001\x00", 0)):
        while encoded:  # one PDU per input
            length = 6 + struct.unpack_from(">L", encoded, 2)[0]
            out.append(encoded[:length])
            encoded = encoded[length:]
    return out


def multipart_seeds() -> list[bytes]:
    """Bodies as ``stream_parts`` writes them and as a client writes them (preamble, epilogue, padding,
    a part without headers); each input is the boundary, a newline, the body."""
    from hounsfield.web.multipart import stream_parts

    boundary = "hounsfield-0123456789abcdef"
    written = b"".join(stream_parts(boundary, [
        ("application/dicom", {}, [b"DICM" * 8]),
        ('application/dicom+json; charset="utf-8"', {"Content-Location": "/a/b"}, [b"[{}]", b"\r\n--x"]),
    ]))
    client = (b"preamble\r\n--b1 \t\r\nContent-Type: application/dicom\r\nContent-Disposition: form-data; "
              b'name="file"; filename="a.dcm"\r\n\r\n\x00\x01\r\n\r\n--b1\r\n\r\nno headers\r\n--b1--\r\nepilogue')
    return [boundary.encode() + b"\n" + written, b"b1\n" + client, b"x\n--x--"]


# ---- the targets: one input each, in the fuzzing process ---------------------------------------------------------
def fuzz_header(data: bytes) -> None:
    from hounsfield.dicomfile import REQUIRED_UIDS, parse_header
    from hounsfield.errors import InvalidDataset

    uids = []
    for keys_only in (False, True):
        try:
            header = parse_header(data, keys_only=keys_only)
        except InvalidDataset:
            if keys_only:
                assert not uids, "C-STORE's quick check refuses a dataset the full parse takes"
            continue
        found = {keyword: header.text(keyword) for keyword in REQUIRED_UIDS}
        assert all(value.strip() for value in found.values()), found
        header.packed("/bulk")  # what the index keeps: JSON-serialisable
        if keys_only and uids:
            assert found == uids[0], (found, uids[0])
        uids.append(found)


def fuzz_pdu(data: bytes) -> None:
    from hounsfield.dimse import store_fastpath
    from hounsfield.dimse.store_receive import _is_uid, _pdvs, awaited_response, command_elements, \
        parse_store_request

    view = memoryview(data)
    pdvs = _pdvs(view) if len(data) >= 6 else None
    fragments = [view] if pdvs is None else [fragment for _, _, fragment in pdvs] + [view]
    if pdvs is not None:
        assert sum(len(fragment) + 6 for fragment in fragments[:-1]) == len(data) - 6
    for fragment in fragments:
        values = command_elements(fragment)
        if values is not None:
            encoded = b"".join(struct.pack("<HHL", 0, element, len(value)) + bytes(value)
                               for element, value in values.items())
            assert len(encoded) <= len(fragment)  # a repeated element counts once
        request = parse_store_request(fragment)
        if request is not None:
            assert _is_uid(request.sop_class_uid) and _is_uid(request.sop_instance_uid), request
        awaited_response(values)
    # What hounsfield encodes reads back as written, whatever the numbers and UIDs.
    rng = random.Random(zlib.crc32(data))
    uid = ".".join(str(rng.randrange(10 ** rng.randrange(1, 9))) for _ in range(rng.randrange(1, 8)))[:64]
    message_id, status = rng.randrange(1 << 16), rng.randrange(1 << 16)
    request = parse_store_request(memoryview(store_fastpath.request_command_set(message_id, "1.2.840.10008.5.1.4.1.1.2",
                                                                                uid, rng.randrange(3))))
    assert request is not None and (request.message_id, request.sop_instance_uid) == (message_id, uid), request
    response = command_elements(store_fastpath.command_set(message_id, "1.2.840.10008.5.1.4.1.1.2", uid, status))
    assert awaited_response(response) == message_id


class _Parts:
    """A ``PartSink`` in memory."""

    def __init__(self) -> None:
        self.parts: list[tuple[dict[str, str], bytearray]] = []

    def begin(self, headers: dict[str, str]) -> None:
        self.parts.append((headers, bytearray()))

    def write(self, data: bytes | bytearray) -> None:
        self.parts[-1][1].extend(data)

    def end(self) -> None:
        pass


def _split(boundary: str, chunks: list[bytes]) -> tuple[str, list[tuple[dict[str, str], bytes]]]:
    """("", the parts) of the body fed in ``chunks``, or (the error's type, []) for a malformed one."""
    from hounsfield.web.multipart import MalformedMultipart, MultipartParser

    sink = _Parts()
    try:
        parser = MultipartParser(boundary, sink)
        for chunk in chunks:
            parser.feed(chunk)
        parser.close()
    except MalformedMultipart as exc:
        return type(exc).__name__, []
    return "", [(headers, bytes(content)) for headers, content in sink.parts]


def fuzz_multipart(data: bytes) -> None:
    from hounsfield.web.multipart import parse_media_type, split_accept, stream_parts

    first, _, body = data.partition(b"\n")
    boundary = first.decode("latin-1")
    parse_media_type(f"multipart/related; boundary={boundary}")
    split_accept(boundary)
    whole = _split(boundary, [body])
    rng = random.Random(zlib.crc32(data))
    cuts = sorted(rng.randrange(len(body) + 1) for _ in range(rng.randrange(1, 12)))
    pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)])]
    assert _split(boundary, pieces) == whole, "the parts depend on how the body was cut"
    error, parts = whole
    if error or not RFC2046_BOUNDARY.fullmatch(boundary):
        return
    written = b"".join(stream_parts(boundary, [
        (headers.get("content-type", ""), {k: v for k, v in headers.items() if k != "content-type"}, [content])
        for headers, content in parts]))
    again = _split(boundary, [written])
    expected = [({"content-type": "", **headers}, content) for headers, content in parts]
    assert again == ("", expected), (again, expected)


@dataclass(frozen=True)
class Target:
    run: Callable[[bytes], None]
    seeds: Callable[[], list[bytes]]


TARGETS = {"header": Target(fuzz_header, header_seeds), "pdu": Target(fuzz_pdu, pdu_seeds),
           "multipart": Target(fuzz_multipart, multipart_seeds)}


# ---- the tests -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", TARGETS)
def test_fuzzed_input_raises_only_what_the_parser_documents(name: str, tmp_path: Path) -> None:
    from support import require_module

    require_module("atheris")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    seeds = TARGETS[name].seeds()
    for i, seed in enumerate(seeds):
        TARGETS[name].run(seed)  # the seeds pass, so that what fails is the fuzzer's finding
        (corpus / f"seed-{i}").write_bytes(seed)
    command = [sys.executable, __file__, name, f"-runs={RUNS[name]}", "-seed=1", f"-timeout={INPUT_TIMEOUT}",
               "-rss_limit_mb=2048", f"-artifact_prefix={tmp_path}/", f"-max_len={max(map(len, seeds)) + 1024}",
               "-print_final_stats=1", str(corpus)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=tmp_path, check=False)
    if proc.returncode != 0:
        found = [f"{p.name}: {base64.b64encode(p.read_bytes()).decode()}" for p in tmp_path.iterdir()
                 if p.name.startswith(("crash-", "timeout-", "oom-", "leak-"))]
        start = proc.stderr.find("=== Uncaught Python exception")  # atheris' report, before libFuzzer's
        report = proc.stderr[start:start + 6000] if start >= 0 else proc.stderr[-6000:]
        pytest.fail(f"fuzzing {name} failed ({proc.returncode}):\n{report}\ninputs: {found}")
    assert f"Done {RUNS[name]} runs" in proc.stderr, proc.stderr[-3000:]


# ---- what the fuzzing found, kept as plain regression tests ------------------------------------------------------
def _element(group: int, element: int, vr: str, value: bytes) -> bytes:
    """One explicit VR little endian element."""
    if vr in ("OB", "SQ", "UN", "UT"):
        return struct.pack("<HH2sHI", group, element, vr.encode(), 0, len(value)) + value
    return struct.pack("<HH2sH", group, element, vr.encode(), len(value)) + value


def _uid(value: str) -> bytes:
    return value.encode() + b"\x00" * (len(value) % 2)


IDENTIFIERS = (_element(0x0008, 0x0016, "UI", _uid("1.2.840.10008.5.1.4.1.1.2"))
               + _element(0x0008, 0x0018, "UI", _uid("1.2.3.4.5")) + _element(0x0020, 0x000D, "UI", _uid("1.2.3"))
               + _element(0x0020, 0x000E, "UI", _uid("1.2.3.4")))


def _part10(dataset: bytes, *, ts_vr: str = "UI", group_length: bool = True) -> bytes:
    """Preamble, file meta (explicit VR little endian, its Transfer Syntax UID with ``ts_vr``), ``dataset``."""
    meta = (_element(0x0002, 0x0001, "OB", b"\x00\x01") + _element(0x0002, 0x0002, "UI", _uid("1.2.840.10008.5.1.4.1.1.2"))
            + _element(0x0002, 0x0003, "UI", _uid("1.2.3.4.5")) + _element(0x0002, 0x0010, ts_vr,
                                                                            _uid("1.2.840.10008.1.2.1")))
    length = _element(0x0002, 0x0000, "UL", struct.pack("<I", len(meta))) if group_length else b""
    return b"\x00" * 128 + b"DICM" + length + meta + dataset


def _nested_private_sequence_cut_short() -> bytes:
    """pydicom's nested_priv_SQ.dcm with 0xFF bytes inside a value: the walker meets no item tag where it expects
    one, and pydicom's reader raises OSError ("No tag to read at file position")."""
    from pydicom.data import get_testdata_file

    data = Path(get_testdata_file("nested_priv_SQ.dcm")).read_bytes()
    return data.replace(b"Double Nested SQ", b"Doub" + b"\xff" * 121 + b"le Nested SQ")


@pytest.mark.parametrize("data, why", [
    (_nested_private_sequence_cut_short(), "OSError from pydicom's reader escaped"),
    (_part10(IDENTIFIERS + struct.pack("<HH2sH", 0x0010, 0x0010, b"PN", 200) + b"DOE^JOHN  ", group_length=False),
     "pydicom read an element declaring 200 bytes from 10 and the file was taken"),
    (_part10(IDENTIFIERS + _element(0x0008, 0x1140, "SQ", struct.pack("<HHI", 0xFFFE, 0xE000, 8) + _element(
        0x0008, 0x1150, "UI", _uid("1.2.840.10008.5.1.4.1.1.2")))),
     "the full parse took an item whose element runs past it, which the quick check refuses"),
], ids=["pydicom-oserror", "pydicom-reads-short", "item-overrun"])
def test_a_header_found_by_fuzzing_is_refused_by_every_way_in(data: bytes, why: str) -> None:
    from hounsfield.dicomfile import parse_header
    from hounsfield.errors import InvalidDataset

    for keys_only in (False, True):
        with pytest.raises(InvalidDataset):
            parse_header(data, keys_only=keys_only)


@pytest.mark.parametrize("data", [
    _part10(IDENTIFIERS, ts_vr="PN"),  # TypeError: the Transfer Syntax UID as a person name (a dict)
    _part10(_element(0x0008, 0x0005, "CS", b"ISO_IR\x00100") + IDENTIFIERS),  # ValueError from codecs.lookup
    _part10(IDENTIFIERS + _element(0x0020, 0x0013, "IS", b"1e999 ")),  # OverflowError: int of infinity
], ids=["transfer-syntax-as-pn", "charset-with-nul", "is-of-1e999"])
def test_a_header_found_by_fuzzing_raises_nothing_but_invalid_dataset(data: bytes) -> None:
    from hounsfield.dicomfile import parse_header
    from hounsfield.errors import InvalidDataset

    for keys_only in (False, True):
        try:
            header = parse_header(data, keys_only=keys_only)
        except InvalidDataset:
            continue
        assert header.sop_instance_uid == "1.2.3.4.5"


def test_an_integer_string_beyond_floats_is_kept_as_sent() -> None:
    from hounsfield.dicomfile import parse_header

    header = parse_header(_part10(IDENTIFIERS + _element(0x0020, 0x0013, "IS", b"1e999 ")))
    assert header.values("InstanceNumber") == ["1e999"]


def main(argv: list[str]) -> None:
    """``python tests/test_fuzz_parsers.py TARGET [libFuzzer flags] [CORPUS_DIR]``: fuzz one target, with
    hounsfield's modules instrumented for coverage."""
    import atheris

    with atheris.instrument_imports(include=["hounsfield"]):
        # imported here, instrumented, for the targets' own imports to find
        import hounsfield.dicomfile
        import hounsfield.dimse.store_fastpath
        import hounsfield.dimse.store_receive
        import hounsfield.headerjson
        import hounsfield.web.multipart  # noqa: F401
    atheris.Setup([argv[0], *argv[2:]], TARGETS[argv[1]].run)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
