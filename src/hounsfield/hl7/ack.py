"""The original-mode acknowledgment of a message (HL7 v2.5.1 2.9.2; message ACK, 2.14.1: MSH, MSA, [ERR]).

What interface engines (Mirth / NextGen Connect) check in it: MSA-2 echoes the message's control ID (MSH-10),
MSA-1 says AA (applied), AE (application error) or AR (rejected), and the header swaps sender and receiver —
MSH-3/4 of the ACK are MSH-5/6 of the message, MSH-5/6 its MSH-3/4 (2.15.9.3-6). It is written in the
message's own separators and character set (MSH-1, MSH-2, MSH-18) when they can be used, else in the standard
ones. An error names its field in ERR (2.15.5): ERR-2 the location (segment^sequence^field), ERR-3 the code of
HL7 Table 0357, ERR-4 the severity, ERR-8 the text; before v2.5 ERR-1 held location and code (v2.3.1's ERR-1),
and is written too for those versions.
"""

from __future__ import annotations

import secrets
from datetime import datetime

import hl7

from hounsfield.hl7.message import ERROR_CODES, Header, Hl7Error

APPLIED, ERROR, REJECTED = "AA", "AE", "AR"  # HL7 Table 0008


def _escaper(separators: str) -> hl7.Message:
    """A python-hl7 message with these MSH separators (field, component, repetition, escape, sub-component),
    whose ``escape`` writes text as a value (HL7 v2.5.1 2.7)."""
    field, component, repetition, escape, sub = separators
    return hl7.Message(separators="\r" + field + repetition + component + sub, esc=escape)


def acknowledgment(head: Header, code: str, text: str, *, error: Hl7Error | None, receiver: str,
                   now: datetime) -> str:
    """The ACK of a message with header ``head`` (``receiver``: this server's name, for a message that names
    no receiving application), as text; segments end with CR (2.5.2)."""
    seps = head.separators
    esc = _escaper(seps).escape
    f, c, s = seps[0], seps[1], seps[4]
    event = head.event if head.usable else ""
    msh = ["MSH", seps[1:], head.get(5) or esc(receiver), head.get(6), head.get(3), head.get(4),
           now.strftime("%Y%m%d%H%M%S"), "", c.join(["ACK", esc(event), "ACK"]) if event else "ACK",
           secrets.token_hex(8).upper(), head.get(11) if head.usable else "P",
           head.get(12) if head.usable else "2.5.1", "", "", "", "", "", head.get(18) if head.usable else ""]
    segments = [f.join(msh).rstrip(f), f.join(["MSA", code, esc(head.control_id), esc(text[:80])])]
    if error is not None:
        where = error.location
        parts = [where.segment, str(where.sequence), str(where.field or "")] if where else []
        extra = ["1", str(where.component)] if where and where.component else []  # field repetition, component
        erl = c.join(parts + extra).rstrip(c)
        coded = [str(error.code), esc(ERROR_CODES.get(error.code, "")), "HL70357"]
        legacy = c.join(parts + [s.join(coded)]) if where and _before_25(head) else ""
        segments.append(f.join(["ERR", legacy, erl, c.join(coded), "E", "", "", "", esc(error.text[:250])]))
    return "\r".join(segments) + "\r"


def _before_25(head: Header) -> bool:
    """Whether the message's version predates v2.5, whose receivers read ERR-1 (v2.3.1, v2.4)."""
    parts = (head.version.split(".") + ["0"])[:2]
    return not head.usable or (parts[0] == "2" and parts[1].isdigit() and int(parts[1]) < 5)
