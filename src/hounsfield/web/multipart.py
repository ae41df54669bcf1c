"""multipart/related and multipart/form-data (RFC 2046 5.1, RFC 2387, RFC 7578) for DICOMweb and uploads.

Both directions stream. A request body (STOW-RS, PS3.18 10.5; ``/api/upload``) is split as it arrives by
``MultipartParser``, and each part goes to a temporary file in the file store's ``.incoming`` directory
(``Spool``), so the memory a request takes does not grow with its body, which may hold thousands of
instances; bodies are refused past the ``max_upload_bytes`` setting (413; ``body_limit``). A response's parts (WADO-RS) are yielded one by
one, files read as they go.
"""

from __future__ import annotations

import os
import re
import uuid
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import AsyncIterator, BinaryIO, Callable, Iterable, Iterator, Protocol

from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request

from hounsfield.errors import HounsfieldError, StorageFull

# One request body at most, whatever max_upload_bytes says (the setting, 2 GiB by default, is the limit a
# site chooses): spooled to disk, so bounded by disk, not memory.
MAX_BODY_BYTES = 64 << 30
MAX_HEADER_BYTES = 16 << 10  # the header block of one part
# Received data goes to disk in a worker thread (a slow disk must not stall the event loop) about a MiB at a
# time: one trip to the thread pool costs more than writing what one read of the socket brings.
SPOOL_BATCH = 1 << 20


class MalformedMultipart(HounsfieldError):
    """A multipart body that cannot be split into parts (no boundary, no closing delimiter…)."""


class IncompleteBody(MalformedMultipart):
    """A request body that stopped before its end: the client went away while sending it."""


class UnsupportedMediaType(HounsfieldError):
    """A request body whose media type this resource does not accept (HTTP 415)."""


class NotAcceptable(HounsfieldError):
    """No representation of the resource matches the Accept header (HTTP 406)."""


class PayloadTooLarge(HounsfieldError):
    """A request body over the limit (``body_limit``; HTTP 413, RFC 9110 15.5.14)."""

    def __init__(self, size: int | None = None, limit: int | None = None) -> None:
        said = f"of {size} bytes " if size is not None else ""
        super().__init__(f"the request body {said}is over the limit of {limit or MAX_BODY_BYTES} bytes")


_PARAM = re.compile(r';\s*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;,\s]*)')


@dataclass
class MediaType:
    type: str
    params: dict[str, str] = field(default_factory=dict)

    @property
    def q(self) -> float:
        try:
            return float(self.params.get("q", "1"))
        except ValueError:
            return 0.0


def parse_media_type(value: str) -> MediaType:
    """'multipart/related; type="application/dicom"; boundary=x' → MediaType with lower-case names."""
    main, _, rest = value.partition(";")
    params = {}
    for name, val in _PARAM.findall(";" + rest):
        params[name.lower()] = val[1:-1].replace('\\"', '"') if val.startswith('"') else val
    return MediaType(main.strip().lower(), params)


def split_accept(header: str | None) -> list[MediaType]:
    """The media ranges of an Accept header, best first (stable for equal q)."""
    if not header:
        return [MediaType("*/*")]
    items, buf, quoted = [], "", False
    for ch in header:  # commas inside quoted parameters do not separate media ranges
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            items.append(buf)
            buf = ""
        else:
            buf += ch
    items.append(buf)
    ranges = [parse_media_type(i) for i in items if i.strip()]
    return sorted(ranges, key=lambda m: -m.q) or [MediaType("*/*")]


# ------------------------------------------------------------------------------------------------ reading
class PartSink(Protocol):
    """Where ``MultipartParser`` puts the parts: ``begin`` with a part's headers, its content in pieces of any
    size, ``end``."""

    def begin(self, headers: dict[str, str]) -> None: ...

    def write(self, data: bytes | bytearray) -> None: ...

    def end(self) -> None: ...


class MultipartParser:
    """Splits a multipart body fed in chunks of any size (RFC 2046 5.1.1), holding no more than a delimiter's
    length of content between chunks.

    Every delimiter is CRLF ``--boundary``; the first may open the body, so the parser starts as if a CRLF
    came before it. Preamble and epilogue are ignored; ``close`` raises ``MalformedMultipart`` unless the
    close delimiter was seen.
    """

    def __init__(self, boundary: str, sink: PartSink) -> None:
        if not boundary:
            raise MalformedMultipart("multipart Content-Type has no boundary parameter")
        try:
            self._delimiter = b"\r\n--" + boundary.encode("ascii")
        except UnicodeEncodeError:
            raise MalformedMultipart(f"multipart boundary {boundary[:80]!r} is not ASCII (RFC 2046 5.1.1)") from None
        self._sink = sink
        self._buffer = bytearray(b"\r\n")
        self._step = self._preamble
        self.parts = 0

    def feed(self, data: bytes) -> None:
        """The next piece of the body; ``MalformedMultipart`` as soon as it cannot be a multipart body."""
        self._buffer += data
        while self._step():
            pass

    def close(self) -> None:
        """The body is over: it must have ended with the close delimiter."""
        if self._step == self._preamble:
            raise MalformedMultipart("multipart body does not contain its boundary")
        if self._step == self._headers:
            raise MalformedMultipart(f"multipart body ends in the headers of part {self.parts} (truncated?)")
        if self._step != self._epilogue:
            raise MalformedMultipart("multipart body has no closing delimiter (truncated?)")

    # Each step consumes what it can of the buffer; True when the next step should look at the rest now.
    def _preamble(self) -> bool:
        found = self._buffer.find(self._delimiter)
        if found < 0:
            del self._buffer[:-len(self._delimiter)]
            return False
        del self._buffer[:found + len(self._delimiter)]
        self._step = self._after_delimiter
        return True

    def _after_delimiter(self) -> bool:
        """``--`` closes the body; otherwise optional transport padding and CRLF open the next part."""
        if len(self._buffer) < 2:
            return False
        if self._buffer.startswith(b"--"):
            self._step = self._epilogue
            return True
        line_end = self._buffer.find(b"\r\n")
        padding = self._buffer if line_end < 0 else self._buffer[:line_end]
        if padding.strip(b" \t\r" if line_end < 0 else b" \t") or len(padding) > MAX_HEADER_BYTES:
            raise MalformedMultipart(f"boundary delimiter {self._delimiter[2:].decode()!r} is followed by "
                                     f"{bytes(self._buffer[:40])!r}, not a line end")
        if line_end < 0:
            return False
        del self._buffer[:line_end + 2]
        self.parts += 1
        self._step = self._headers
        return True

    def _headers(self) -> bool:
        if self._buffer.startswith(b"\r\n"):  # no header fields
            head, end = b"", 2
        else:
            found = self._buffer.find(b"\r\n\r\n")
            if found < 0:
                if len(self._buffer) > MAX_HEADER_BYTES:
                    raise MalformedMultipart(f"the headers of part {self.parts} are over {MAX_HEADER_BYTES} "
                                             f"bytes, or have no blank line after them")
                return False
            head, end = bytes(self._buffer[:found]), found + 4
        headers = {}
        for line in head.decode("latin-1").split("\r\n"):
            if ":" in line:
                key, _, value = line.partition(":")
                headers[key.strip().lower()] = value.strip()
            elif line.strip():
                raise MalformedMultipart(f"part {self.parts} has a malformed header line {line[:60]!r}")
        del self._buffer[:end]
        self._sink.begin(headers)
        self._step = self._content
        return True

    def _content(self) -> bool:
        found = self._buffer.find(self._delimiter)
        if found < 0:  # all but what may be the start of a delimiter
            keep = len(self._delimiter) - 1
            if len(self._buffer) > keep:
                self._sink.write(self._buffer[:-keep])
                del self._buffer[:-keep]
            return False
        if found:
            self._sink.write(self._buffer[:found])
        del self._buffer[:found + len(self._delimiter)]
        self._sink.end()
        self._step = self._after_delimiter
        return True

    def _epilogue(self) -> bool:
        self._buffer.clear()
        return False


@dataclass
class SpooledPart:
    """A received part: its headers and the temporary file holding its content."""

    headers: dict[str, str]
    path: Path
    size: int = 0

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")

    @property
    def filename(self) -> str | None:
        disposition = self.headers.get("content-disposition", "")
        match = re.search(r'filename\*?="?([^";]*)"?', disposition)
        return match.group(1) if match else None

    @property
    def name(self) -> str | None:
        match = re.search(r'(?:^|;)\s*name="?([^";]*)"?', self.headers.get("content-disposition", ""))
        return match.group(1) if match else None


class Spool:
    """A ``PartSink`` writing each part to a temporary file made by ``new_file`` (``FileStore.new_incoming``);
    leaving the ``with`` block removes them all, however it is left (stored, refused, client gone)."""

    def __init__(self, new_file: Callable[[], tuple[int, Path]]) -> None:
        self._new_file = new_file
        self._file: BinaryIO | None = None
        self.parts: list[SpooledPart] = []

    def begin(self, headers: dict[str, str]) -> None:
        with _disk_errors():
            fd, path = self._new_file()
        self.parts.append(SpooledPart(headers, path))
        self._file = os.fdopen(fd, "wb")

    def write(self, data: bytes | bytearray) -> None:
        assert self._file is not None, "write before begin"
        with _disk_errors():
            self._file.write(data)
        self.parts[-1].size += len(data)

    def end(self) -> None:
        assert self._file is not None, "end before begin"
        file, self._file = self._file, None
        with _disk_errors():
            file.close()

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._file is not None:
            with suppress(OSError):  # the part is thrown away: a failing flush changes nothing
                self._file.close()
        for part in self.parts:
            part.path.unlink(missing_ok=True)


@contextmanager
def _disk_errors() -> Iterator[None]:
    """A request body that does not fit on the disk is the store being full (507), not a server bug."""
    try:
        yield
    except OSError as exc:
        raise StorageFull(f"cannot keep the request body: {exc.strerror or exc}") from exc


def body_limit(request: Request) -> int:
    """The most a request body may hold: the ``max_upload_bytes`` setting of the app's archive, within
    ``MAX_BODY_BYTES``."""
    pacs = getattr(request.app.state, "pacs", None)
    configured = getattr(getattr(pacs, "settings", None), "max_upload_bytes", MAX_BODY_BYTES)
    return min(configured, MAX_BODY_BYTES)


async def _body(request: Request) -> AsyncIterator[bytes]:
    """The request body as it arrives, in pieces of about ``SPOOL_BATCH`` bytes, within ``body_limit`` (a
    declared Content-Length over it is refused before anything is read, a chunked body once it goes over)."""
    limit = body_limit(request)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(int(declared), limit)
    received = size = 0
    pending: list[bytes] = []
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit:
                raise PayloadTooLarge(None, limit)
            pending.append(chunk)
            size += len(chunk)
            if size >= SPOOL_BATCH:
                yield b"".join(pending)
                pending, size = [], 0
    except ClientDisconnect:
        raise IncompleteBody(f"the client went away after {received} bytes of the request body") from None
    if size:
        yield b"".join(pending)


async def receive_parts(request: Request, boundary: str, spool: Spool) -> list[SpooledPart]:
    """Split a multipart request body into ``spool`` as it arrives; the parts, once the body is complete."""
    parser = MultipartParser(boundary, spool)
    async for chunk in _body(request):
        await run_in_threadpool(parser.feed, chunk)
    parser.close()
    return spool.parts


async def receive_body(request: Request, spool: Spool) -> SpooledPart:
    """The whole request body as one part in ``spool`` (a single-file upload)."""
    spool.begin({"content-type": request.headers.get("content-type", "")})
    async for chunk in _body(request):
        await run_in_threadpool(spool.write, chunk)
    spool.end()
    return spool.parts[-1]


# ------------------------------------------------------------------------------------------------ writing
def new_boundary() -> str:
    return f"hounsfield-{uuid.uuid4().hex}"


def part_header(boundary: str, content_type: str, extra: dict[str, str] | None = None) -> bytes:
    lines = [f"--{boundary}", f"Content-Type: {content_type}"]
    lines += [f"{k}: {v}" for k, v in (extra or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def stream_parts(boundary: str, parts: Iterable[tuple[str, dict[str, str], Iterable[bytes]]]) -> Iterator[bytes]:
    """Yield a multipart body: each part is (content type, extra headers, chunks of its body)."""
    first = True
    for content_type, extra, chunks in parts:
        pending = (b"" if first else b"\r\n") + part_header(boundary, content_type, extra)
        first = False
        for chunk in chunks:  # the delimiter goes out with the first chunk: one write per small part
            yield pending + chunk if pending else chunk
            pending = b""
        if pending:
            yield pending
    yield (b"" if first else b"\r\n") + f"--{boundary}--\r\n".encode("latin-1")
