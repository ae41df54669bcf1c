"""multipart/related and multipart/form-data (RFC 2046, RFC 2387, RFC 7578) for DICOMweb and uploads.

Parsing works on the whole body in memory (STOW-RS requests and uploads are bounded by what one request
holds); writing streams: the parts of a WADO-RS response are yielded one by one, files read as they go.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from typing import Iterable, Iterator

from hounsfield.errors import HounsfieldError


class MalformedMultipart(HounsfieldError):
    """A multipart body that cannot be split into parts (no boundary, no closing delimiter…)."""


class UnsupportedMediaType(HounsfieldError):
    """A request body whose media type this resource does not accept (HTTP 415)."""


class NotAcceptable(HounsfieldError):
    """No representation of the resource matches the Accept header (HTTP 406)."""


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


@dataclass
class Part:
    headers: dict[str, str]
    body: bytes

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


def parse(body: bytes, boundary: str) -> list[Part]:
    """Split a multipart body; raise MalformedMultipart when it is not one."""
    if not boundary:
        raise MalformedMultipart("multipart Content-Type has no boundary parameter")
    delimiter = b"--" + boundary.encode("latin-1")
    start = body.find(delimiter)
    if start < 0 or (start > 0 and body[start - 2:start] != b"\r\n"):
        raise MalformedMultipart("multipart body does not contain its boundary")
    parts: list[Part] = []
    pos = start + len(delimiter)
    while True:
        if body[pos:pos + 2] == b"--":
            return parts
        line_end = body.find(b"\r\n", pos)
        if line_end < 0:
            raise MalformedMultipart("multipart body ends inside a delimiter line")
        pos = line_end + 2
        nxt = body.find(b"\r\n" + delimiter, pos)
        if nxt < 0:
            raise MalformedMultipart("multipart body has no closing delimiter (truncated?)")
        raw = body[pos:nxt]
        head_end = raw.find(b"\r\n\r\n")
        if raw.startswith(b"\r\n"):
            head, content = b"", raw[2:]
        elif head_end < 0:
            raise MalformedMultipart(f"part {len(parts) + 1} has no blank line after its headers")
        else:
            head, content = raw[:head_end], raw[head_end + 4:]
        headers = {}
        for line in head.decode("latin-1").split("\r\n"):
            if ":" in line:
                key, _, value = line.partition(":")
                headers[key.strip().lower()] = value.strip()
            elif line.strip():
                raise MalformedMultipart(f"part {len(parts) + 1} has a malformed header line {line[:60]!r}")
        parts.append(Part(headers, content))
        pos = nxt + 2 + len(delimiter)


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
