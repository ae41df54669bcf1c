"""A routing rule: when (conditions on what was stored), on (which event), send to (remote nodes), and
optionally the transfer syntax the instances travel in. The same text in the TOML file and through REST::

    [routing.ct-to-planning]
    on = "instance_stored"            # or "study_stable" (no new instance for study_stable_seconds)
    send_to = ["PLANNING"]            # names of remote nodes ([peers.NAME] or added through REST)
    transfer_syntax = "1.2.840.10008.1.2.1"   # optional: Explicit VR Little Endian; unset: as stored
    when = { modality = "CT", calling_ae = ["CT1", "CT2"], study_description = "*THORAX*" }

A condition's value is a pattern or a list of patterns, any of which may match, with ``*`` (any run of
characters) and ``?`` (one character) as in DICOM wildcard matching (PS3.4 C.2.2.2.4), ignoring case. Every
condition given must match; a rule without ``when`` takes everything. For ``study_stable``, a condition
matches when it matches one of the study's new instances (their modalities, their calling AE titles).

Pure: no database, no network; the ``store`` keeps rules, the ``worker`` applies them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from hounsfield.errors import InvalidQuery

INSTANCE_STORED, STUDY_STABLE = "instance_stored", "study_stable"
EVENTS = (INSTANCE_STORED, STUDY_STABLE)
CONDITIONS = ("modality", "calling_ae", "study_description")
KEYS = ("on", "send_to", "when", "transfer_syntax")
# What ``transcode`` converts to losslessly from any uncompressed syntax (and from a compressed one a codec reads)
TRANSFER_SYNTAXES = {str(ExplicitVRLittleEndian): "Explicit VR Little Endian",
                     str(ImplicitVRLittleEndian): "Implicit VR Little Endian",
                     str(DeflatedExplicitVRLittleEndian): "Deflated Explicit VR Little Endian",
                     str(ExplicitVRBigEndian): "Explicit VR Big Endian"}
_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
MAX_PATTERN = 64


class InvalidRule(InvalidQuery):
    """A rule definition that cannot be used; the message says which part and why."""


@dataclass(frozen=True)
class Rule:
    name: str
    on: str
    send_to: tuple[str, ...]
    when: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (condition, patterns), in CONDITIONS order
    transfer_syntax: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "on": self.on, "send_to": list(self.send_to),
                "when": {k: list(v) for k, v in self.when}, "transfer_syntax": self.transfer_syntax or None}

    def matches(self, values: Mapping[str, Iterable[str]]) -> bool:
        """Whether every condition matches one of ``values[condition]`` (an instance has one value each, a
        stable study the values of its new instances)."""
        for condition, patterns in self.when:
            candidates = list(values.get(condition, ()))
            if not any(_pattern(p).fullmatch(v.strip()) for p in patterns for v in candidates):
                return False
        return True


def _pattern(text: str) -> re.Pattern[str]:
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in text.strip()),
                      re.IGNORECASE | re.DOTALL)


def parse(name: str, spec: Any) -> Rule:
    """A ``Rule`` from its definition (a TOML table, a JSON object); ``InvalidRule`` naming what is wrong."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidRule(f"rule name {name!r} must be 1-64 letters, digits, '.', '_' or '-'")
    where = f"rule {name!r}"
    if not isinstance(spec, Mapping):
        raise InvalidRule(f"{where} must be a table of {', '.join(KEYS)}")
    unknown = sorted(set(spec) - set(KEYS) - {"name"})
    if unknown:
        raise InvalidRule(f"{where}: unknown key(s) {', '.join(map(str, unknown))} (a rule has {', '.join(KEYS)})")
    on = spec.get("on", INSTANCE_STORED)
    if on not in EVENTS:
        raise InvalidRule(f"{where}: on must be {' or '.join(map(repr, EVENTS))}, not {on!r}")
    send_to = spec.get("send_to")
    if isinstance(send_to, str):
        send_to = [send_to]
    if not isinstance(send_to, list) or not send_to or not all(isinstance(p, str) and p.strip() for p in send_to):
        raise InvalidRule(f"{where}: send_to must name one or more remote nodes, not {send_to!r}")
    if len(set(send_to)) != len(send_to):
        raise InvalidRule(f"{where}: send_to names a node twice: {send_to!r}")
    when = spec.get("when") or {}
    if not isinstance(when, Mapping):
        raise InvalidRule(f"{where}: when must be a table of conditions ({', '.join(CONDITIONS)})")
    bad = sorted(set(when) - set(CONDITIONS))
    if bad:
        raise InvalidRule(f"{where}: when: unknown condition(s) {', '.join(map(str, bad))} (the conditions are "
                          f"{', '.join(CONDITIONS)})")
    conditions = []
    for condition in CONDITIONS:
        if condition not in when:
            continue
        patterns = when[condition]
        patterns = [patterns] if isinstance(patterns, str) else patterns
        if not isinstance(patterns, list) or not patterns or not all(
                isinstance(p, str) and p.strip() and len(p) <= MAX_PATTERN for p in patterns):
            raise InvalidRule(f"{where}: when.{condition} must be a pattern or a list of patterns (text of 1-"
                              f"{MAX_PATTERN} characters, * and ? as wildcards), not {when[condition]!r}")
        conditions.append((condition, tuple(p.strip() for p in patterns)))
    syntax = spec.get("transfer_syntax") or ""
    if not isinstance(syntax, str) or (syntax and syntax not in TRANSFER_SYNTAXES):
        raise InvalidRule(f"{where}: transfer_syntax must be one of "
                          f"{', '.join(f'{uid} ({what})' for uid, what in TRANSFER_SYNTAXES.items())}, or unset "
                          f"(as stored), not {syntax!r}")
    return Rule(name, on, tuple(p.strip() for p in send_to), tuple(conditions), syntax)
