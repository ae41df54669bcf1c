"""STOW-RS and /api/upload read the request body as a stream: multipart split incrementally (RFC 2046 5.1.1),
each part spooled to a temporary file, temporary files always removed, a bad body answered 400 (PS3.18 10.5.3
statuses for the parts) and a body over the limit 413, memory bounded whatever the body's size.

The parser is driven directly with the body cut at every size; the application is driven in-process through
ASGI with a ``receive`` that hands the body over in chunks (or goes away mid-body), and, for memory, as a real
``hounsfield serve``.
"""

from __future__ import annotations

import asyncio
import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pydicom
import pytest
import requests
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from factories import ct_dataset, encode
from hounsfield import config
from hounsfield.pacs import Pacs
from hounsfield.web import multipart
from hounsfield.web.app import create_app
from hounsfield.web.multipart import MalformedMultipart, MultipartParser

BOUNDARY = "b0und4ry-42"
STOW_TYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
SOURCES = [Path(get_testdata_file(name)) for name in ("CT_small.dcm", "MR_small.dcm")]
CHUNK_SIZES = (1, 7, 4096, None)  # None: the whole body at once


# ----------------------------------------------------------------------------------------------- helpers
def related_body(parts: list[tuple[list[str], bytes]], boundary: str = BOUNDARY, *, close: bool = True) -> bytes:
    """A multipart body written out by hand: each part is (header lines, content)."""
    out = b"".join(f"--{boundary}\r\n".encode() + "".join(f"{h}\r\n" for h in headers).encode() + b"\r\n"
                   + content + b"\r\n" for headers, content in parts)
    return out + (f"--{boundary}--\r\n".encode() if close else b"")


def dicom_parts(paths: list[Path] = SOURCES) -> list[tuple[list[str], bytes]]:
    return [(["Content-Type: application/dicom"], p.read_bytes()) for p in paths]


def chunked(data: bytes, size: int | None) -> list[bytes]:
    size = size or max(len(data), 1)
    return [data[i:i + size] for i in range(0, len(data), size)]


@dataclass
class Recorder:
    """A PartSink keeping what the parser hands over, in order."""

    parts: list[tuple[dict[str, str], bytearray]] = field(default_factory=list)
    open: bool = False

    def begin(self, headers: dict[str, str]) -> None:
        assert not self.open
        self.parts.append((headers, bytearray()))
        self.open = True

    def write(self, data: bytes | bytearray) -> None:
        assert self.open
        self.parts[-1][1].extend(data)

    def end(self) -> None:
        assert self.open
        self.open = False


def parse(body: bytes, size: int | None, boundary: str = BOUNDARY) -> list[tuple[dict[str, str], bytes]]:
    sink = Recorder()
    parser = MultipartParser(boundary, sink)
    for chunk in chunked(body, size):
        parser.feed(chunk)
    parser.close()
    assert not sink.open
    return [(headers, bytes(content)) for headers, content in sink.parts]


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    consumed: int  # body messages the application asked for

    def json(self) -> Any:
        return json.loads(self.body)


def post(pacs: Pacs, path: str, content_type: str | None, chunks: list[bytes], *,
         disconnect_after: int | None = None, content_length: int | None = None) -> Answer:
    """POST through the ASGI interface, the body in ``chunks`` (one ``http.request`` message each); with
    ``disconnect_after`` the client goes away after that many chunks."""
    chunks = chunks or [b""]  # an empty body is one message without content
    app = create_app(pacs)
    headers = [(b"host", b"testserver")]
    if content_type is not None:
        headers.append((b"content-type", content_type.encode()))
    if content_length is not None:
        headers.append((b"content-length", str(content_length).encode()))
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": headers, "client": ("127.0.0.1", 50000), "server": ("testserver", 80)}
    sent: list[dict[str, Any]] = []
    consumed = 0

    async def run() -> None:
        done = asyncio.Event()

        async def receive() -> dict[str, Any]:
            nonlocal consumed
            if consumed == disconnect_after or consumed >= len(chunks):
                if consumed >= len(chunks) and disconnect_after is None:
                    await done.wait()  # a client that sent everything waits for the answer
                return {"type": "http.disconnect"}
            consumed += 1
            return {"type": "http.request", "body": chunks[consumed - 1], "more_body": consumed < len(chunks)}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                done.set()

        await app(scope, receive, send)

    asyncio.run(run())
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return Answer(start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, body, consumed)


def stored_uids(pacs: Pacs) -> set[str]:
    return {i.sop_instance_uid for i in pacs.archive.instances()}


def leftovers(pacs: Pacs) -> list[Path]:
    return list(pacs.archive.files.incoming.iterdir())


@pytest.fixture
def pacs(tmp_path: Path) -> Iterator[Pacs]:
    p = Pacs(config.load(None, environ={}, data_dir=tmp_path / "data"))
    yield p
    p.close()


@pytest.fixture
def small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every received chunk goes to the parser by itself, so chunk edges reach it as the client cut them."""
    monkeypatch.setattr(multipart, "SPOOL_BATCH", 1)


# ----------------------------------------------------------------------------------------------- the parser
@pytest.mark.parametrize("size", CHUNK_SIZES)
def test_parts_come_out_whole_at_any_chunk_size(size: int | None) -> None:
    delimiter = f"\r\n--{BOUNDARY}".encode()
    tricky = [  # content that holds pieces of the delimiter, and ends as a delimiter begins
        b"\r\n--" + BOUNDARY[:-1].encode() + b"\r\n-\r\n--",
        b"ends with CR LF\r\n",
        delimiter[:-1],
        b"\r",
    ]
    parts = dicom_parts() + [(["Content-Type: application/octet-stream"], t) for t in tricky]
    parts += [(["Content-Type: application/dicom"], b""), ([], b"a part without headers")]
    got = parse(related_body(parts), size)
    assert [content for _, content in got] == [content for _, content in parts]
    assert [h.get("content-type") for h, _ in got] == [
        headers[0].split(": ")[1] if headers else None for headers, _ in parts]


@pytest.mark.parametrize("size", CHUNK_SIZES)
def test_preamble_epilogue_and_transport_padding_are_not_content(size: int | None) -> None:
    data = SOURCES[1].read_bytes()
    body = (b"This is the preamble.\r\n"
            + f"--{BOUNDARY} \t\r\nContent-Type: application/dicom\r\nX-Extra:  kept  \r\n\r\n".encode()
            + data + f"\r\n--{BOUNDARY}--  \r\nThis is the epilogue, with --{BOUNDARY} in it.\r\n".encode())
    assert parse(body, size) == [({"content-type": "application/dicom", "x-extra": "kept"}, data)]


@pytest.mark.parametrize("size", CHUNK_SIZES)
@pytest.mark.parametrize("body, message", [
    (b"no delimiter anywhere", "does not contain its boundary"),
    (b"x--" + BOUNDARY.encode() + b"\r\n\r\ndata", "does not contain its boundary"),  # not at a line start
    (f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n".encode(), "ends in the headers of part 1"),
    (related_body(dicom_parts())[:-40], "no closing delimiter"),
    (related_body(dicom_parts(), close=False), "no closing delimiter"),
    (f"--{BOUNDARY}\r\n\r\nbody\r\n--{BOUNDARY}X\r\n\r\n".encode(), "is followed by"),
    (f"--{BOUNDARY}\r\nno colon here\r\n\r\nbody\r\n--{BOUNDARY}--".encode(), "malformed header line"),
    (f"--{BOUNDARY}\r\nX-Long: {'a' * (20 << 10)}".encode(), "over 16384 bytes"),
], ids=["no-delimiter", "delimiter-not-at-line-start", "truncated-in-headers", "truncated-in-content",
        "no-close-delimiter", "text-after-boundary", "header-without-colon", "headers-too-long"])
def test_a_malformed_body_is_refused_with_the_reason(size: int | None, body: bytes, message: str) -> None:
    with pytest.raises(MalformedMultipart, match=message):
        parse(body, size)


@pytest.mark.parametrize("boundary, message", [("", "no boundary parameter"), ("grenze-ä", "not ASCII")])
def test_a_bad_boundary_parameter_is_refused(boundary: str, message: str) -> None:
    with pytest.raises(MalformedMultipart, match=message):
        MultipartParser(boundary, Recorder())


# ----------------------------------------------------------------------------------------------- STOW-RS
@pytest.mark.parametrize("size", (7, 4096, 1 << 16))
def test_stow_streamed_in_chunks_stores_each_instance_as_sent(pacs: Pacs, small_batches: None, size: int) -> None:
    answer = post(pacs, "/dicom-web/studies", STOW_TYPE, chunked(related_body(dicom_parts()), size))
    assert answer.status == 200, answer.body
    sources = [pydicom.dcmread(p, stop_before_pixels=True) for p in SOURCES]
    referenced = answer.json()["00081199"]["Value"]
    assert [r["00081155"]["Value"][0] for r in referenced] == [ds.SOPInstanceUID for ds in sources]
    assert [r["00081150"]["Value"][0] for r in referenced] == [ds.SOPClassUID for ds in sources]
    for ds, path in zip(sources, SOURCES):
        assert pacs.archive.instance(ds.SOPInstanceUID).path.read_bytes() == path.read_bytes()
    assert leftovers(pacs) == []


@pytest.mark.parametrize("body, message", [
    (related_body(dicom_parts())[:-40], "no closing delimiter"),  # half-sent
    (related_body(dicom_parts(), close=False), "no closing delimiter"),
    (b"garbage without the boundary", "does not contain its boundary"),
    (f"--{BOUNDARY}--\r\n".encode(), "no parts"),
], ids=["half-sent", "no-close-delimiter", "no-boundary-in-body", "no-parts"])
def test_stow_of_a_malformed_body_answers_400_and_stores_nothing(pacs: Pacs, small_batches: None, body: bytes,
                                                                 message: str) -> None:
    answer = post(pacs, "/dicom-web/studies", STOW_TYPE, chunked(body, 4096))
    assert answer.status == 400 and message in answer.json()["detail"]
    assert stored_uids(pacs) == set() and leftovers(pacs) == []


def test_stow_without_a_boundary_parameter_answers_400_before_reading(pacs: Pacs) -> None:
    answer = post(pacs, "/dicom-web/studies", 'multipart/related; type="application/dicom"',
                  [related_body(dicom_parts())])
    assert answer.status == 400 and "boundary" in answer.json()["detail"]
    assert answer.consumed == 0 and stored_uids(pacs) == set()


def test_stow_of_a_client_gone_mid_body_stores_nothing_and_leaves_no_file(pacs: Pacs, small_batches: None) -> None:
    chunks = chunked(related_body(dicom_parts()), 4096)
    answer = post(pacs, "/dicom-web/studies", STOW_TYPE, chunks, disconnect_after=len(chunks) // 2)
    assert answer.status == 400 and "went away" in answer.json()["detail"]
    assert stored_uids(pacs) == set() and leftovers(pacs) == []


def test_stow_part_statuses(pacs: Pacs) -> None:
    """PS3.18 10.5.3: 409 with FailedSOPSequence when nothing is stored, 202 when some parts are; a part
    without Content-Type is of the body's type (RFC 2387 type parameter), application/dicom."""
    ct, mr = (pydicom.dcmread(p, stop_before_pixels=True) for p in SOURCES)
    bad = [(["Content-Type: application/dicom"], b"this is not DICOM" * 20),
           (["Content-Type: application/dicom"], b""),
           (["Content-Type: text/plain"], SOURCES[0].read_bytes())]
    answer = post(pacs, "/dicom-web/studies", STOW_TYPE, [related_body(bad)])
    assert answer.status == 409
    assert "00081199" not in answer.json()
    assert [f["00081197"]["Value"] for f in answer.json()["00081198"]["Value"]] == [[0xC000]] * 3
    assert stored_uids(pacs) == set()

    mixed = [([], SOURCES[0].read_bytes()), (["Content-Type: application/dicom"], b"\x00" * 300)]
    answer = post(pacs, "/dicom-web/studies", STOW_TYPE, [related_body(mixed)])
    assert answer.status == 202
    assert [r["00081155"]["Value"] for r in answer.json()["00081199"]["Value"]] == [[ct.SOPInstanceUID]]
    assert answer.json()["00081198"]["Value"][0]["00081197"]["Value"] == [0xC000]

    answer = post(pacs, f"/dicom-web/studies/{ct.StudyInstanceUID}", STOW_TYPE, [related_body(dicom_parts())])
    assert answer.status == 202  # MR_small is of another study: 0xA900, with its UIDs
    failed = answer.json()["00081198"]["Value"]
    assert [(f["00081155"]["Value"], f["00081197"]["Value"]) for f in failed] == [([mr.SOPInstanceUID], [0xA900])]
    assert stored_uids(pacs) == {ct.SOPInstanceUID} and leftovers(pacs) == []


def test_a_body_over_the_limit_answers_413(pacs: Pacs, monkeypatch: pytest.MonkeyPatch) -> None:
    body = related_body(dicom_parts())
    monkeypatch.setattr(multipart, "MAX_BODY_BYTES", len(body) - 1)
    declared = post(pacs, "/dicom-web/studies", STOW_TYPE, chunked(body, 4096), content_length=len(body))
    assert declared.status == 413 and str(len(body)) in declared.json()["detail"]
    assert declared.consumed == 0  # refused on the declared length, before reading
    streamed = post(pacs, "/dicom-web/studies", STOW_TYPE, chunked(body, 4096))  # no Content-Length
    assert streamed.status == 413
    upload = post(pacs, "/api/upload", "application/dicom", chunked(body, 4096))
    assert upload.status == 413
    assert stored_uids(pacs) == set() and leftovers(pacs) == []


# ----------------------------------------------------------------------------------------------- /api/upload
def form_body(files: list[tuple[str, bytes]], fields: dict[str, str]) -> tuple[str, bytes]:
    parts = [([f'Content-Disposition: form-data; name="files"; filename="{name}"',
               "Content-Type: application/octet-stream"], data) for name, data in files]
    parts += [([f'Content-Disposition: form-data; name="{k}"'], v.encode()) for k, v in fields.items()]
    return f"multipart/form-data; boundary={BOUNDARY}", related_body(parts)


def zipped(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


@pytest.mark.parametrize("size", (7, 4096, 1 << 16))
def test_upload_of_files_and_a_zip_streamed_in_chunks(pacs: Pacs, small_batches: None, size: int) -> None:
    extra = ct_dataset()
    archive = zipped({"dir/extra.dcm": encode(extra), "dir/notes.txt": b"not DICOM",
                      "__MACOSX/dir/._extra.dcm": b"resource fork"})
    content_type, body = form_body([(SOURCES[0].name, SOURCES[0].read_bytes()), ("scan.zip", archive),
                                    ("empty.dcm", b"")], {"note": "a field, not a file", "blank": ""})
    answer = post(pacs, "/api/upload", content_type, chunked(body, size))
    assert answer.status == 200, answer.body
    outcome = {f["file"]: f["outcome"] for f in answer.json()["files"]}
    assert outcome == {"CT_small.dcm": "stored", "scan.zip/dir/extra.dcm": "stored",
                       "scan.zip/dir/notes.txt": "failed", "empty.dcm": "failed", "note": "failed"}
    ct = pydicom.dcmread(SOURCES[0], stop_before_pixels=True)
    assert stored_uids(pacs) == {ct.SOPInstanceUID, extra.SOPInstanceUID}
    assert leftovers(pacs) == []


def test_upload_of_one_file_as_the_body(pacs: Pacs, small_batches: None) -> None:
    answer = post(pacs, "/api/upload", "application/dicom", chunked(SOURCES[1].read_bytes(), 4096))
    assert answer.status == 200
    assert answer.json()["files"][0]["file"] == "upload"
    assert stored_uids(pacs) == {pydicom.dcmread(SOURCES[1]).SOPInstanceUID} and leftovers(pacs) == []
    answer = post(pacs, "/api/upload", "application/dicom", [])
    assert answer.status == 400 and "no files" in answer.json()["detail"]


def test_upload_of_a_half_sent_form_answers_400_and_stores_nothing(pacs: Pacs, small_batches: None) -> None:
    content_type, body = form_body([(p.name, p.read_bytes()) for p in SOURCES], {})
    answer = post(pacs, "/api/upload", content_type, chunked(body[:len(body) // 2], 4096))
    assert answer.status == 400 and "closing delimiter" in answer.json()["detail"]
    chunks = chunked(body, 4096)
    answer = post(pacs, "/api/upload", content_type, chunks, disconnect_after=len(chunks) // 2)
    assert answer.status == 400 and "went away" in answer.json()["detail"]
    assert stored_uids(pacs) == set() and leftovers(pacs) == []


# ----------------------------------------------------------------------------------------------- memory
def peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc/PID/status")


def test_a_large_stow_body_takes_bounded_memory_in_a_real_server(tmp_path: Path) -> None:
    """64 MiB of 0.5 MiB CT instances: the server's peak RSS grows by less than half the body (held in memory,
    the body alone would be all of it)."""
    from support import Server

    series, study = generate_uid(), generate_uid()
    instances = []
    for number in range(128):
        ds = ct_dataset(StudyInstanceUID=study, SeriesInstanceUID=series, InstanceNumber=number + 1,
                        Rows=512, Columns=512)
        ds.PixelData = bytes([number]) * (512 * 512 * 2)
        instances.append(encode(ds))
    body = related_body([(["Content-Type: application/dicom"], data) for data in instances])
    server = Server(tmp_path / "data").start()
    try:
        before = peak_rss_kib(server.proc.pid)
        r = requests.post(f"{server.url}/dicom-web/studies", data=body, timeout=600,
                          headers={"Content-Type": STOW_TYPE})
        grown = peak_rss_kib(server.proc.pid) - before
        assert r.status_code == 200, r.text
        assert len(r.json()["00081199"]["Value"]) == len(instances)
        print(f"peak RSS of the server grew by {grown >> 10} MiB for a {len(body) >> 20} MiB body")
        assert grown * 1024 < len(body) / 2, f"peak RSS grew by {grown} KiB for a {len(body) >> 10} KiB body"
        assert list((tmp_path / "data" / "files" / ".incoming").iterdir()) == []
    finally:
        server.stop()
