"""UIDs as PS3.5 9.1 defines them, and what the archive does with the ones real equipment gets wrong.

A UID is at most 64 characters of digits and dots: components of digits separated by single dots, none empty,
none with a leading zero unless it is "0". Equipment sends UIDs that break the component rules (a leading
zero, an empty component, a trailing dot) and still identify an instance; those are *lenient*: kept as sent
under the ``lenient`` policy, refused under ``strict``. A value with any other character (a letter, a ``/``, a
space or NUL inside), empty or longer than 64 characters cannot be a UID at all and is always refused.
Padding (trailing NULs, PS3.5 6.2; trailing spaces, which some writers use) is not part of the value.
"""

from __future__ import annotations

import enum
import re

MAX_LENGTH = 64
_CHARACTERS = re.compile(r"[0-9.]+")
_CONFORMANT = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")


class Conformance(enum.Enum):
    CONFORMANT = "conformant"
    LENIENT = "lenient"  # breaks the component rules of PS3.5 9.1, still a usable identifier
    INVALID = "invalid"  # cannot be a UID at all


def unpadded(value: str) -> str:
    return value.rstrip("\x00 ")


def conformance(value: str) -> Conformance:
    value = unpadded(value)
    if not value or len(value) > MAX_LENGTH or not _CHARACTERS.fullmatch(value):
        return Conformance.INVALID
    return Conformance.CONFORMANT if _CONFORMANT.fullmatch(value) else Conformance.LENIENT


def problem(value: str, *, strict: bool) -> str | None:
    """Why ``value`` is refused under the policy, or None when it is taken."""
    value = unpadded(value)
    kind = conformance(value)
    if kind is Conformance.CONFORMANT or (kind is Conformance.LENIENT and not strict):
        return None
    if kind is Conformance.LENIENT:
        return f"{value!r} breaks PS3.5 9.1 (a component is empty or has a leading zero)"
    if not value:
        return "it is empty"
    if len(value) > MAX_LENGTH:
        return f"it has {len(value)} characters (at most {MAX_LENGTH}, PS3.5 9.1)"
    bad = sorted({c for c in value if not ("0" <= c <= "9" or c == ".")})
    return f"{value[:80]!r} holds {', '.join(repr(c) for c in bad[:5])} (only digits and dots, PS3.5 9.1)"
