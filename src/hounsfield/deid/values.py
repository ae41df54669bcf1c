"""The values de-identification writes: dummy values that keep each VR valid (PS3.15 E.1.1 action D: "a
non-zero length value that may be a dummy value and consistent with the VR"; PS3.5 6.2 for the formats), and
the cleaning of descriptors (action C: "values of similar meaning known not to contain identifying
information").
"""

from __future__ import annotations

import re
from typing import Any, Iterable

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence

DUMMY_TEXT = "ANONYMIZED"  # fits every string VR, SH and CS (16 characters, upper case) included
_DUMMIES: dict[str, Any] = {
    "DA": "19000101", "DT": "19000101000000", "TM": "000000", "AS": "000Y", "DS": "0", "IS": "0",
    "UI": "2.25.0", "UR": "urn:x-anonymized",
    "FL": 0.0, "FD": 0.0, "SS": 0, "US": 0, "SL": 0, "UL": 0, "SV": 0, "UV": 0, "AT": 0,
}
_BINARY = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
TEXT_VRS = frozenset({"PN", "LO", "SH", "ST", "LT", "UT", "UC"})  # free text a person may have typed
SCRUBBED = "*"
_MIN_TOKEN = 2  # shorter pieces of a name or ID would match too much (they match whole words only anyway)


def dummy(vr: str) -> Any:
    """A dummy value valid for ``vr``: a sequence of one empty item, zero bytes (8: a whole number of values
    of every binary VR), a zero, the earliest DICOM-ish date, or ``ANONYMIZED``."""
    if vr == "SQ":
        return Sequence([Dataset()])
    if vr in _BINARY:
        return b"\x00" * 8
    return _DUMMIES.get(vr, DUMMY_TEXT)


def identifying_tokens(values: Iterable[tuple[str, Any]]) -> list[str]:
    """The pieces of identifying values (``(VR, value)``) to look for in descriptors: each person name component,
    each other value whole, a date in the forms people type it. Longest first, so that the longest match wins."""
    tokens: set[str] = set()
    for vr, value in values:
        for item in (value if isinstance(value, (list, MultiValue)) else [value]):
            text = str(item or "").strip()
            if vr == "PN":
                tokens.update(p.strip() for p in re.split(r"[\^=]", text))
            elif vr == "DA" and re.fullmatch(r"\d{8}", text):
                y, m, d = text[:4], text[4:6], text[6:]
                tokens.update((text, f"{y}-{m}-{d}", f"{d}.{m}.{y}", f"{d}/{m}/{y}", f"{m}/{d}/{y}"))
            else:
                tokens.add(text)
    return sorted((t for t in tokens if len(t) >= _MIN_TOKEN), key=lambda t: (-len(t), t))


class Cleaner:
    """Action C for text: every identifying token of the instance (``identifying_tokens``) that stands as a
    word of its own, in any case, becomes ``*``; the rest of the descriptor is kept, so "CT THORAX DOE" of
    patient DOE^JOHN reads "CT THORAX *"."""

    def __init__(self, tokens: list[str]) -> None:
        alternatives = "|".join(re.escape(t) for t in tokens)
        self._pattern = re.compile(rf"(?<![0-9A-Za-z])(?:{alternatives})(?![0-9A-Za-z])", re.IGNORECASE) \
            if tokens else None

    def text(self, value: str) -> str:
        return value if self._pattern is None else self._pattern.sub(SCRUBBED, value)

    def value(self, value: Any) -> Any:
        """``value`` of a text VR cleaned (each value of a multi-valued one)."""
        if isinstance(value, (list, MultiValue)):
            return [self.text(str(v)) for v in value]
        return None if value is None else self.text(str(value))
