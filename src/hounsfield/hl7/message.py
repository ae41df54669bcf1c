"""An MLLP frame read as an HL7 v2 message: its header (MSH, HL7 v2.5.1 2.15.9), its character set (MSH-18),
the limits hostile input meets, and the one error type that says how to acknowledge (``Hl7Error``).

Reading goes in the order a receiver must (HL7 v2.5.1 2.9.2, 2.10): MSH first — the field separator and
encoding characters (MSH-1, MSH-2), the message type (MSH-9), control ID (MSH-10) and version (MSH-12); a message
whose header cannot be used is rejected (AR). Then the characters (MSH-18, HL7 Table 0211), the segments and
their repetitions are checked and python-hl7 parses the text; a message that parses but cannot be applied is an
application error (AE). Nothing here touches the worklist.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import hl7
import hl7.util

from hounsfield.errors import HounsfieldError

# python-hl7 logs the field it could not unescape, patient data included, under its module's file name.
logging.getLogger(hl7.util.__file__).setLevel(logging.CRITICAL)

STANDARD_SEPARATORS = "|^~\\&"  # MSH-1 and MSH-2 as HL7 v2.5.1 2.5.4 recommends them
SUPPORTED = {("ORM", "O01"), ("OMI", "O23"), ("ADT", "A08"), ("ADT", "A31"), ("ADT", "A40")}
MAX_SEGMENTS = 1000  # an order or patient message holds tens; more is no order (and costs memory to parse)
MAX_REPETITIONS = 100  # of one field (PID-3 lists a patient's identifiers, not thousands)
# HL7 Table 0211 (MSH-18) → (Python codec, DICOM Specific Character Set, PS3.3 C.12.1.1.2). Empty: not declared.
CHARSETS: dict[str, tuple[str, str]] = {
    "ASCII": ("ascii", ""), "8859/1": ("iso8859-1", "ISO_IR 100"), "8859/2": ("iso8859-2", "ISO_IR 101"),
    "8859/3": ("iso8859-3", "ISO_IR 109"), "8859/4": ("iso8859-4", "ISO_IR 110"),
    "8859/5": ("iso8859-5", "ISO_IR 144"), "8859/6": ("iso8859-6", "ISO_IR 127"),
    "8859/7": ("iso8859-7", "ISO_IR 126"), "8859/8": ("iso8859-8", "ISO_IR 138"),
    "8859/9": ("iso8859-9", "ISO_IR 148"), "8859/15": ("iso8859-15", "ISO_IR 203"),
    "UNICODE UTF-8": ("utf-8", "ISO_IR 192"),
}
# HL7 Table 0357, the error codes of ERR-3 (HL7 v2.5.1 2.15.5.3)
SEGMENT_SEQUENCE_ERROR, REQUIRED_FIELD_MISSING, DATA_TYPE_ERROR, TABLE_VALUE_NOT_FOUND = 100, 101, 102, 103
UNSUPPORTED_MESSAGE_TYPE, UNSUPPORTED_EVENT_CODE, UNSUPPORTED_VERSION_ID = 200, 201, 203
UNKNOWN_KEY, DUPLICATE_KEY, INTERNAL_ERROR = 204, 205, 207
ERROR_CODES = {
    100: "Segment sequence error", 101: "Required field missing", 102: "Data type error",
    103: "Table value not found", 200: "Unsupported message type", 201: "Unsupported event code",
    203: "Unsupported version id", 204: "Unknown key identifier", 205: "Duplicate key identifier",
    207: "Application internal error",
}
_SEGMENT_ID = re.compile(r"[A-Z][A-Z0-9]{2}")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # what no HL7 value holds (CR ends a segment)
_SEPARATOR = re.compile(r"[!-/:-@\[-`{-~]")  # printable ASCII that is neither a letter, a digit nor a space


@dataclass(frozen=True)
class Location:
    """Where in a message an error is: ERR-2 Error Location (data type ERL, HL7 v2.5.1 2.A), e.g. PID^1^3 — the first
    PID segment's field 3 — and ``PID-3`` for a person."""

    segment: str
    sequence: int = 1
    field: int = 0
    component: int = 0

    def __str__(self) -> str:
        if not self.field:
            return self.segment
        return f"{self.segment}-{self.field}" + (f".{self.component}" if self.component else "")


class Hl7Error(HounsfieldError):
    """A message that is not applied: ``ack`` AR (rejected: its header, type or version cannot be taken) or AE
    (an application error: a field is missing or wrong), ``code`` from HL7 Table 0357, ``location`` the field."""

    def __init__(self, ack: str, code: int, text: str, location: Location | None = None) -> None:
        self.ack = ack
        self.code = code
        self.text = text
        self.location = location
        super().__init__(f"{location}: {text}" if location and str(location) not in text else text)


def rejected(code: int, text: str, location: Location | None = None) -> Hl7Error:
    return Hl7Error("AR", code, text, location)


def application_error(code: int, text: str, location: Location | None = None) -> Hl7Error:
    return Hl7Error("AE", code, text, location)


@dataclass(frozen=True)
class Header:
    """MSH as far as it could be read: ``fields[n - 1]`` is MSH-n as sent (escaped, in the message's own
    separators), ``separators`` MSH-1 + MSH-2 when they can be used, else the standard ones (an acknowledgment
    of a message whose encoding characters are broken is written in those)."""

    separators: str
    fields: tuple[str, ...]
    usable: bool  # the message's own separators are valid

    def get(self, n: int) -> str:
        return self.fields[n - 1] if 0 < n <= len(self.fields) else ""

    def component(self, n: int, index: int) -> str:
        parts = self.get(n).split(self.separators[1])
        return parts[index - 1] if index <= len(parts) else ""

    @property
    def message_type(self) -> str:
        return self.component(9, 1).strip().upper()

    @property
    def event(self) -> str:
        return self.component(9, 2).strip().upper()

    @property
    def control_id(self) -> str:
        return self.get(10)

    @property
    def version(self) -> str:
        return self.component(12, 1).strip()

    @property
    def kind(self) -> str:
        """MSH-9 as a person reads it: ``ORM^O01``."""
        return f"{self.message_type}^{self.event}" if self.event else self.message_type


def header(data: bytes) -> Header:
    """The header of a frame, never an error: a frame that does not begin with MSH has none (empty fields)."""
    if not data.startswith(b"MSH") or len(data) < 4:
        return Header(STANDARD_SEPARATORS, (), False)
    line = re.split(rb"[\r\n]", data, maxsplit=1)[0].decode("latin-1")
    field_sep = line[3]
    encoding = line[4:].split(field_sep, 1)[0] if _SEPARATOR.fullmatch(field_sep) else ""
    usable = _encoding_problem(field_sep, encoding) is None
    if not _SEPARATOR.fullmatch(field_sep):
        return Header(STANDARD_SEPARATORS, ("", ""), False)
    rest = line[4:].split(field_sep)
    fields = (field_sep, *rest)
    return Header(field_sep + encoding[:4] if usable else STANDARD_SEPARATORS, fields, usable)


def _encoding_problem(field_sep: str, encoding: str) -> str | None:
    """Why MSH-1 and MSH-2 cannot delimit a message (HL7 v2.5.1 2.5.4: a field separator, then the component,
    repetition, escape and sub-component characters, all different), or None."""
    if not _SEPARATOR.fullmatch(field_sep):
        return "MSH-1, the field separator, is not a printable character other than a letter, digit or space"
    if len(encoding) not in (4, 5):  # a fifth, the truncation character, since v2.7
        return f"MSH-2 holds {len(encoding)} encoding characters: component, repetition, escape, sub-component"
    chars = field_sep + encoding
    if len(set(chars)) != len(chars) or not all(_SEPARATOR.fullmatch(c) for c in encoding):
        return "MSH-2's encoding characters must be printable, neither letters, digits nor spaces, and all differ"
    return None


@dataclass(frozen=True)
class Message:
    """A message that passed ``read``: its header, its text, python-hl7's parse, and the DICOM character set
    its MSH-18 names ("" when it names none)."""

    header: Header
    text: str
    parsed: hl7.Message
    dicom_charset: str

    def segments(self, segment_id: str) -> list[hl7.Segment]:
        return [s for s in self.parsed if str(s[0][0]) == segment_id]


def read(data: bytes) -> Message:
    """The message a frame holds, or ``Hl7Error``: AR for a header that cannot be used or a message type or
    version this receiver does not take, AE for characters or segments that cannot be read."""
    head = header(data)
    if not head.fields:
        raise rejected(SEGMENT_SEQUENCE_ERROR, "not an HL7 v2 message: it does not begin with an MSH segment",
                       Location("MSH"))
    problem = _encoding_problem(head.get(1), head.get(2))
    if problem:
        raise rejected(DATA_TYPE_ERROR, problem, Location("MSH", 1, 1 if problem.startswith("MSH-1") else 2))
    _check_header(head)
    text, charset = _decode(data, head)
    # CR ends a segment (HL7 v2.5.1 2.5.2); senders that end them with CR LF or LF, or leave empty lines, are read
    # as they mean it
    text = "\r".join(s for s in text.replace("\n", "\r").split("\r") if s.strip())
    _check_segments(text, head.separators)
    try:
        parsed = hl7.parse(text)
    except Exception as exc:  # noqa: BLE001 - python-hl7 raises what its parser meets; any of it means unreadable
        raise application_error(SEGMENT_SEQUENCE_ERROR, f"the message cannot be parsed ({type(exc).__name__})",
                                Location("MSH")) from None
    return Message(head, text, parsed, charset)


def _check_header(head: Header) -> None:
    if not head.message_type:
        raise rejected(REQUIRED_FIELD_MISSING, "MSH-9, the message type, is empty", Location("MSH", 1, 9))
    if (head.message_type, head.event) not in SUPPORTED:
        types = {t for t, _ in SUPPORTED}
        code = UNSUPPORTED_EVENT_CODE if head.message_type in types else UNSUPPORTED_MESSAGE_TYPE
        taken = ", ".join(f"{t}^{e}" for t, e in sorted(SUPPORTED))
        raise rejected(code, f"{head.kind[:20]} is not a message this receiver takes ({taken})",
                       Location("MSH", 1, 9))
    if not head.control_id.strip():
        raise rejected(REQUIRED_FIELD_MISSING, "MSH-10, the message control ID, is empty", Location("MSH", 1, 10))
    if not re.fullmatch(r"2\.\d+(\.\d+)?", head.version):
        raise rejected(UNSUPPORTED_VERSION_ID, f"version {head.version[:12]!r} is not HL7 v2.x",
                       Location("MSH", 1, 12))


def _decode(data: bytes, head: Header) -> tuple[str, str]:
    """The text of the message in the character set MSH-18 names (HL7 v2.5.1 2.15.9.18), and its DICOM name.
    Without MSH-18 the message should be ASCII; what is not is read as UTF-8 if it is, else as ISO 8859-1
    (the two that senders use without saying)."""
    declared = head.get(18).split(head.separators[2])[0].strip().upper()
    if not declared:
        try:
            return data.decode("utf-8"), ""
        except UnicodeDecodeError:
            return data.decode("iso8859-1"), ""
    if declared not in CHARSETS:
        raise application_error(TABLE_VALUE_NOT_FOUND, f"character set {declared[:20]!r} is not one of "
                                f"{', '.join(CHARSETS)} (HL7 Table 0211)", Location("MSH", 1, 18))
    codec, dicom = CHARSETS[declared]
    try:
        return data.decode(codec), dicom
    except UnicodeDecodeError as exc:
        raise application_error(DATA_TYPE_ERROR, f"byte 0x{data[exc.start]:02X} at offset {exc.start} is not "
                                f"{declared}, the character set MSH-18 names", Location("MSH", 1, 18)) from None


def _check_segments(text: str, separators: str) -> None:
    """The limits of hostile input, before python-hl7 builds its objects: a bounded number of segments, each
    named by a segment ID, no control characters, a bounded number of repetitions per field."""
    segments = text.split("\r")
    if len(segments) > MAX_SEGMENTS:
        raise application_error(SEGMENT_SEQUENCE_ERROR, f"{len(segments)} segments, more than the {MAX_SEGMENTS} "
                                "a message may hold here", Location("MSH"))
    seen: dict[str, int] = {}
    field_sep, repetition = separators[0], separators[2]
    for segment in segments:
        name = segment[:3]
        if not _SEGMENT_ID.fullmatch(name) or (len(segment) > 3 and segment[3] != field_sep):
            raise application_error(SEGMENT_SEQUENCE_ERROR, f"segment {len(seen) + 1} has no segment ID "
                                    "(three upper-case letters or digits, then the field separator)",
                                    Location(name if _SEGMENT_ID.fullmatch(name) else "MSH"))
        seen[name] = seen.get(name, 0) + 1
        control = _CONTROL.search(segment)
        if control:
            raise application_error(DATA_TYPE_ERROR, f"control character 0x{ord(control.group()):02X}, which no "
                                    "HL7 value holds", Location(name, seen[name]))
        for number, field in enumerate(segment.split(field_sep)[1:], start=1):
            if field.count(repetition) >= MAX_REPETITIONS and not (name == "MSH" and number == 1):
                raise application_error(DATA_TYPE_ERROR, f"{field.count(repetition) + 1} repetitions, more than "
                                        f"the {MAX_REPETITIONS} a field may hold here",
                                        Location(name, seen[name], number + (name == "MSH")))


def value(segment: hl7.Segment, field: int, component: int = 1, sub: int = 1, repetition: int = 1) -> str:
    """One value of a segment, unescaped (HL7 v2.5.1 2.7), "" where the message has none: python-hl7 raises
    for a path deeper than what was sent (a component asked of a plain field is its first component, as
    python-hl7 reads it)."""
    try:
        found = segment.extract_field(1, field, repetition, component, sub)
    except IndexError:
        return ""
    return found if isinstance(found, str) else ""


def repetitions(segment: hl7.Segment, field: int) -> int:
    """How many repetitions a field of a segment holds (0 when the segment stops before it)."""
    return len(segment(field)) if field < len(segment) else 0


def readable(data: bytes) -> str:
    """A logged message as a person reads it: in the character set its MSH-18 names (else UTF-8, else ISO
    8859-1), bytes that are no character of it replaced, one segment per line, other control characters shown
    as U+FFFD."""
    declared = header(data)
    name = declared.get(18).split(declared.separators[2])[0].strip().upper() if declared.usable else ""
    codec = CHARSETS.get(name, ("", ""))[0]
    try:
        text = data.decode(codec or "utf-8")
    except UnicodeDecodeError:
        text = data.decode(codec or "iso8859-1", "replace")
    lines = text.replace("\r\n", "\r").replace("\n", "\r").split("\r")
    return "\n".join(_CONTROL.sub("\ufffd", line) for line in lines if line)


def fields(data: bytes) -> list[list[str]] | None:
    """A logged message parsed, as its segments' fields (escaped, as sent; MSH-1 and MSH-2 first in MSH), or
    None when it cannot be read (``read`` says why)."""
    try:
        parsed = read(data).parsed
    except Hl7Error:
        return None
    return [[str(f) for f in segment] for segment in parsed]
