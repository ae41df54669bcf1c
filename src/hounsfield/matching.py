"""DICOM attribute matching (PS3.4 C.2.2.2), shared by Q/R C-FIND, Modality Worklist C-FIND (PS3.4 K.2.2) and QIDO-RS.

The index keeps matching keys in plain string columns holding *normalised* values (``normalize_*`` at ingest);
``sql_*`` turn one query key into a SQLAlchemy condition and ``matches``/``match_dataset`` apply the very same
rules in Python (sequence items, keys that are not columns, explanations). Both sides are built from one parsed
form of the key (``_Key``), so they agree on SQLite and PostgreSQL alike.

Choices where the standard leaves room (for the conformance statement):

* A value of ``*`` alone, or ``-`` alone for DA/TM/DT, is Universal Matching for every VR; ``*``/``?`` mixed with
  other characters outside the Wild Card VRs of C.2.2.2.4 is refused (``InvalidQuery``).
* Backslash-separated values in a key other than a UID (C.2.2.2.8 note 4: undefined without Extended Negotiation)
  mean "any of", like List of UID Matching; the negotiated "all of" form is not offered. LT, ST, UT and UR have
  VM 1, so a backslash in them is an ordinary character.
* Stored multi-valued attributes match when any of their values matches.
* DA/TM/DT single values match exactly after normalisation ("0800" is 08:00:00.000000). In a range, the lower
  bound is the start and the upper bound the *end* of the period it names: "-16" ends at 16:59:59.999999,
  "-202402" at the end of February 2024 (as dcm4che does); "<a>-<b>" with a > b is refused, which for TM is the
  midnight crossing that C.2.2.2.5.2 does not support. DT timezone offsets are dropped (no Timezone Query
  Adjustment). Missing month/day/time parts are filled with their minimum at ingest ("2024" -> 20240101...).
* Combined date-time matching (C.2.2.2.5.4) applies when a DA key and its TM key are ranges of the same form; a
  stored date without a time matches on the boundary days (it names the whole day). Otherwise each key is matched
  on its own.
* PN: trailing spaces, "^" and "=" are padding and ignored on both sides. Strict matching is case-sensitive;
  ``fuzzy_pn`` folds ASCII letters only (identically in Python, SQLite ``lower`` and PostgreSQL ``translate``) and,
  without wild cards, matches a prefix of the name, of any single component, or per component ("Smith^J").
* IS/DS and the binary numeric VRs (CP-2305: implementation defined) compare canonical numbers ("+7" = "007" = "7",
  "1.50" = "1.5").
* Specific Character Set, Query/Retrieve Level, Timezone Offset From UTC and group lengths are never matched.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

from pydicom import Dataset
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.multival import MultiValue
from sqlalchemy import String, and_, bindparam, or_
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement, literal_column
from sqlalchemy.sql.visitors import InternalTraversal
from sqlalchemy.types import Boolean

from hounsfield.errors import InvalidQuery

WILDCARD_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})  # C.2.2.2.4
RANGE_VRS = frozenset({"DA", "TM", "DT"})  # C.2.2.2.5
TEXT_VRS = frozenset({"LT", "ST", "UT", "UR"})  # VM 1: a backslash is an ordinary character
_TRAILING_ONLY_VRS = TEXT_VRS | {"UC"}  # leading spaces are significant
_INTEGER_VRS = frozenset({"IS", "US", "SS", "UL", "SL", "UV", "SV"})
_DECIMAL_VRS = frozenset({"DS", "FL", "FD"})
_MATCHABLE_VRS = WILDCARD_VRS | RANGE_VRS | _INTEGER_VRS | _DECIMAL_VRS | {"UI", "AS", "AT"}
_NOT_MATCHED = frozenset({0x00080005, 0x00080052, 0x00080201})  # Specific Character Set, Q/R Level, TZ offset

_DA_RE = re.compile(r"(\d{4})\.?(\d{2})\.?(\d{2})")
_TM_RE = re.compile(r"(\d{2})(?::?(\d{2})(?::?(\d{2})(?:\.(\d*))?)?)?")
_DT_RE = re.compile(r"(\d{4})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:\.(\d*))?)?)?)?)?)?([+-]\d{4})?")
_UID_RE = re.compile(r"(0|[1-9]\d*)(\.(0|[1-9]\d*))*")
_IS_RE = re.compile(r"[+-]?\d{1,20}")  # bounded: no huge int() / format() work on hostile input
_DS_RE = re.compile(r"[+-]?(\d{1,64}\.?\d{0,64}|\.\d{1,64})([eE][+-]?\d{1,3})?")
# (floor, ceiling) fill of each DT component; TM uses the last four, DA is always complete.
_FILL = (("0000", "9999"), ("01", "12"), ("01", "31"), ("00", "23"), ("00", "59"), ("00", "59"), ("000000", "999999"))
_LIMITS = (None, (1, 12), (1, 31), (0, 23), (0, 59), (0, 60), None)
_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


# --- normalisation (ingest) -----------------------------------------------------------------------------------


def _parts(vr: str, text: str) -> list[str | None] | None:
    """Components of one DA/TM/DT value aligned on (YYYY, MM, DD, hh, mm, ss, ffffff); None when malformed."""
    if vr == "DA":
        match = _DA_RE.fullmatch(text)
        return [*match.groups(), None, None, None, None] if match else None
    if vr == "TM":
        match = _TM_RE.fullmatch(text)
        return [None, None, None, *match.groups()] if match else None
    match = _DT_RE.fullmatch(text)
    return list(match.groups()[:7]) if match else None


def _render(vr: str, parts: list[str | None], *, ceiling: bool = False) -> str:
    """Fixed-width text of parsed components, missing ones filled with the start (or end) of the period named."""
    filled = [part[:6].ljust(6, _FILL[6][ceiling][0]) if i == 6 and part is not None else part or _FILL[i][ceiling]
              for i, part in enumerate(parts)]
    text = "".join(filled[:6]) + "." + filled[6]
    return {"DA": text[:8], "TM": text[8:], "DT": text}[vr]


def _normalized(vr: str, value: Any) -> str:
    parts = _parts(vr, str(value or "").strip())
    return _render(vr, parts) if parts else ""


def normalize_date(value: str) -> str:
    """DA -> "YYYYMMDD" (legacy "YYYY.MM.DD" accepted); "" when empty or unreadable."""
    return _normalized("DA", value)


def normalize_time(value: str) -> str:
    """TM -> "HHMMSS.ffffff", missing parts filled with zeros (legacy "HH:MM:SS" accepted); "" when unreadable."""
    return _normalized("TM", value)


def normalize_datetime(value: str) -> str:
    """DT -> "YYYYMMDDHHMMSS.ffffff", offset dropped, missing month/day 01 and time zeros; "" when unreadable."""
    return _normalized("DT", value)


def _trim(vr: str, text: str) -> str:
    """Drop the padding that is not significant for the VR (PS3.5 6.2); PN also drops empty trailing components."""
    if vr == "PN":
        groups = [group.rstrip(" ^") for group in text.rstrip(" ").split("=")]
        return "=".join(groups).rstrip("=")
    if vr == "UI":
        return text.strip(" \0")
    return text.rstrip(" ") if vr in _TRAILING_ONLY_VRS else text.strip(" ")


def _values(vr: str, value: Any) -> list[str]:
    """The non-empty, trimmed values of a (possibly multi-valued) query or stored value."""
    if value is None:
        return []
    items = value if isinstance(value, (list, tuple, MultiValue)) else [value]
    out = []
    for item in items:
        text = item.decode("utf-8", "replace") if isinstance(item, bytes) else str(item)
        out += [v for v in (_trim(vr, p) for p in ([text] if vr in TEXT_VRS else text.split("\\"))) if v]
    return out


def _number(vr: str, text: str) -> str | None:
    """Canonical text of an IS/DS-like number ("+007" -> "7", "1.50" -> "1.5"); None when not a number."""
    if vr in _INTEGER_VRS:
        return str(int(text)) if _IS_RE.fullmatch(text) else None
    try:
        return format((Decimal(text) + 0).normalize(), "f") if _DS_RE.fullmatch(text) else None
    except InvalidOperation:
        return None


def _canonical(vr: str, text: str) -> str:
    """The stored form of one value: dates and times fixed width, numbers canonical, other text as is."""
    if vr in RANGE_VRS:
        return _normalized(vr, text)
    if vr in _INTEGER_VRS or vr in _DECIMAL_VRS:
        return _number(vr, text) or text
    return text


def normalize_value(vr: str, value: Any) -> str:
    """Column value for an attribute of ``vr``: values normalised and joined with "\\"; "" for SQ, binary or empty."""
    if vr not in _MATCHABLE_VRS:
        return ""
    return "\\".join(v for v in (_canonical(vr, text) for text in _values(vr, value)) if v)


def normalize_multi_value(vr: str, value: Any) -> str:
    """Column value for ``sql_multi_value_condition``: "\\CT\\MR\\" (delimiters around every value), "" if empty."""
    joined = normalize_value(vr, value)
    return f"\\{joined}\\" if joined else ""


def _fold(text: str) -> str:
    return text.translate(str.maketrans(_UPPER, _UPPER.lower()))


# --- parsing a query key --------------------------------------------------------------------------------------


def _checked(vr: str, text: str) -> list[str | None]:
    """Components of one DA/TM/DT query value; ``InvalidQuery`` unless it is a valid value of the VR."""
    parts = _parts(vr, text)
    valid = parts is not None and all(
        part is None or limit is None or limit[0] <= int(part) <= limit[1] for part, limit in zip(parts, _LIMITS))
    if valid and parts[2] is not None:
        try:
            date(int(parts[0]), int(parts[1]), int(parts[2]))
        except ValueError:
            valid = False
    if not valid:
        raise InvalidQuery(f"{text!r} is not a valid {vr} value")
    return parts


def _is_single_dt(text: str) -> bool:
    """Whether a DT key is one value, its "-" being a UTC offset (-1200..+1400) rather than a range."""
    match = _DT_RE.fullmatch(text)
    offset = match.group(8) if match else None
    return match is not None and (offset is None or (int(offset[1:3]) <= 14 and int(offset[3:]) < 60))


def _parse_range(vr: str, value: str, *, ordered: bool = True) -> tuple[str | None, str | None, bool]:
    """(lower, upper, is_range) of a DA/TM/DT key; a single value gives (v, v, False). ``ordered``: refuse b < a."""
    if vr not in RANGE_VRS:
        raise InvalidQuery(f"range matching is only defined for DA, TM and DT, not {vr}")
    text = str(value).strip()
    if "-" not in text or (vr == "DT" and _is_single_dt(text)):
        single = _render(vr, _checked(vr, text))
        return single, single, False
    splits = [(text[:i].strip(), text[i + 1:].strip()) for i, char in enumerate(text) if char == "-"]
    valid = [(lo, hi) for lo, hi in splits if all(not b or _parts(vr, b) for b in (lo, hi))]
    lo_text, hi_text = (valid or splits)[0]
    lower = _render(vr, _checked(vr, lo_text)) if lo_text else None
    upper = _render(vr, _checked(vr, hi_text), ceiling=True) if hi_text else None
    if ordered and lower and upper and lower > upper:
        crossing = " (time ranges crossing midnight are not supported)" if vr == "TM" else ""
        raise InvalidQuery(f"range {text} ends before it starts{crossing}")
    return lower, upper, True


def parse_range(vr: str, value: str) -> tuple[str | None, str | None]:
    """C.2.2.2.5 Range Matching: normalised inclusive (lower, upper) of a DA/TM/DT key, open ends None.

    A single value gives (v, v). The upper bound is the end of the period it names ("16" -> "165959.999999").
    """
    lower, upper, _ = _parse_range(vr, value)
    return lower, upper


@dataclass(frozen=True)
class _Key:
    """A non-universal query key: it matches when any alternative matches any stored value."""

    text: str
    exact: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()
    ranges: tuple[tuple[str | None, str | None], ...] = ()
    fold: bool = False


def _fuzzy_patterns(text: str) -> list[str]:
    """Fuzzy PN: a wild card-free name matches a prefix of the name, of any component, or of each component."""
    if "*" in text or "?" in text:
        return [text]
    if "^" in text or "=" in text:
        return [re.sub(r"(?=[\^=])", "*", text) + "*"]
    return [text + "*", "*^" + text + "*", "*=" + text + "*"]


def _parse_key(vr: str, query_value: Any, fuzzy_pn: bool) -> _Key | None:
    """C.2.2.2.1-C.2.2.2.5: parse a query value; None for C.2.2.2.3 Universal Matching."""
    if vr not in _MATCHABLE_VRS:
        raise InvalidQuery(f"no attribute matching is defined for VR {vr}")
    values = _values(vr, query_value)
    if not values or any(set(v) == {"*"} for v in values):
        return None
    exact: list[str] = []
    patterns: list[str] = []
    ranges: list[tuple[str | None, str | None]] = []
    for text in values:
        wild = "*" in text or "?" in text
        if wild and vr not in WILDCARD_VRS:
            raise InvalidQuery(f"wild cards are not allowed in {vr} value {text!r}")
        if vr == "UI":  # C.2.2.2.2 List of UID Matching (one UID is C.2.2.2.1)
            if len(text) > 64 or not _UID_RE.fullmatch(text):
                raise InvalidQuery(f"{text!r} is not a UID")
            exact.append(text)
        elif vr in RANGE_VRS:  # C.2.2.2.5 Range Matching, or C.2.2.2.1 for a single date/time
            lower, upper, is_range = _parse_range(vr, text)
            if lower is None and upper is None:
                return None
            if is_range:
                ranges.append((lower, upper))
            else:
                exact.append(lower or "")
        elif vr == "PN" and fuzzy_pn:  # C.2.2.2.1 / C.2.2.2.4: PN matching may ignore case (our fuzzy rule)
            patterns += _fuzzy_patterns(_fold(text))
        elif wild:  # C.2.2.2.4 Wild Card Matching
            patterns.append(text)
        elif vr in _INTEGER_VRS or vr in _DECIMAL_VRS:  # C.2.2.2.1 for IS/DS: implementation defined (CP-2305)
            number = _number(vr, text)
            if number is None:
                raise InvalidQuery(f"{text!r} is not a valid {vr} value")
            exact.append(number)
        else:  # C.2.2.2.1 Single Value Matching
            exact.append(text)
    return _Key("\\".join(values), tuple(exact), tuple(patterns), tuple(ranges), vr == "PN" and fuzzy_pn)


# --- SQL side -------------------------------------------------------------------------------------------------


class _Wildcard(ColumnElement[bool]):
    """``expr`` matches a wild card pattern case-sensitively: GLOB on SQLite (its LIKE ignores case), else LIKE."""

    __visit_name__ = "hounsfield_wildcard"
    inherit_cache = True
    type = Boolean()
    _traverse_internals = [("expr", InternalTraversal.dp_clauseelement), ("glob", InternalTraversal.dp_clauseelement),
                           ("like", InternalTraversal.dp_clauseelement)]

    def __init__(self, expr: ColumnElement[Any], pattern: str) -> None:
        self.expr = expr
        self.glob = bindparam(None, pattern.replace("[", "[[]"), type_=String())  # "*" and "?" are GLOB's own
        like = re.sub(r"([!%_])", r"!\1", pattern).replace("*", "%").replace("?", "_")
        self.like = bindparam(None, like, type_=String())


class _AsciiLower(ColumnElement[str]):
    """ASCII-only lower case of ``expr`` on every backend (SQLite ``lower`` knows no other letters)."""

    __visit_name__ = "hounsfield_ascii_lower"
    inherit_cache = True
    type = String()
    _traverse_internals = [("expr", InternalTraversal.dp_clauseelement)]

    def __init__(self, expr: ColumnElement[Any]) -> None:
        self.expr = expr


class _AnyValue(ColumnElement[bool]):
    """Some value of a "\\"-delimited column satisfies ``condition`` (written on ``_ELEMENT``)."""

    __visit_name__ = "hounsfield_any_value"
    inherit_cache = True
    type = Boolean()
    _traverse_internals = [("column", InternalTraversal.dp_clauseelement),
                           ("condition", InternalTraversal.dp_clauseelement)]

    def __init__(self, column: ColumnElement[Any], condition: ColumnElement[bool]) -> None:
        self.column = column
        self.condition = condition


class _HasValue(ColumnElement[bool]):
    """A "\\"-delimited column holds the value ``delimited`` ("\\CT\\") as one of its values: a case-sensitive
    substring test (``instr`` on SQLite, ``strpos`` elsewhere) that an index holding the column can answer."""

    __visit_name__ = "hounsfield_has_value"
    inherit_cache = True
    type = Boolean()
    _traverse_internals = [("column", InternalTraversal.dp_clauseelement),
                           ("delimited", InternalTraversal.dp_clauseelement)]

    def __init__(self, column: ColumnElement[Any], delimited: str) -> None:
        self.column = column
        self.delimited = bindparam(None, delimited, type_=String())


_ELEMENT = literal_column("hf_v.value", String())


@compiles(_Wildcard, "sqlite")
def _wildcard_sqlite(element: _Wildcard, compiler: SQLCompiler, **kw: Any) -> str:
    return f"({compiler.process(element.expr, **kw)} GLOB {compiler.process(element.glob, **kw)})"


@compiles(_Wildcard)
def _wildcard_default(element: _Wildcard, compiler: SQLCompiler, **kw: Any) -> str:
    return f"({compiler.process(element.expr, **kw)} LIKE {compiler.process(element.like, **kw)} ESCAPE '!')"


@compiles(_AsciiLower, "sqlite")
def _lower_sqlite(element: _AsciiLower, compiler: SQLCompiler, **kw: Any) -> str:
    return f"lower({compiler.process(element.expr, **kw)})"


@compiles(_AsciiLower)
def _lower_default(element: _AsciiLower, compiler: SQLCompiler, **kw: Any) -> str:
    return f"translate({compiler.process(element.expr, **kw)}, '{_UPPER}', '{_UPPER.lower()}')"


@compiles(_HasValue, "sqlite")
def _has_value_sqlite(element: _HasValue, compiler: SQLCompiler, **kw: Any) -> str:
    return f"(instr({compiler.process(element.column, **kw)}, {compiler.process(element.delimited, **kw)}) > 0)"


@compiles(_HasValue)
def _has_value_default(element: _HasValue, compiler: SQLCompiler, **kw: Any) -> str:
    return f"(strpos({compiler.process(element.column, **kw)}, {compiler.process(element.delimited, **kw)}) > 0)"


@compiles(_AnyValue, "sqlite")
def _any_value_sqlite(element: _AnyValue, compiler: SQLCompiler, **kw: Any) -> str:
    column = compiler.process(element.column, **kw)  # "\A\B\" -> ["A","B"] (values hold no control characters)
    array = (f"'[\"' || replace(replace(replace(trim({column}, char(92)), char(92), char(1)), '\"', char(92) || '\"'),"
             f" char(1), '\",\"') || '\"]'")
    return f"EXISTS (SELECT 1 FROM json_each({array}) AS hf_v WHERE {compiler.process(element.condition, **kw)})"


@compiles(_AnyValue)
def _any_value_default(element: _AnyValue, compiler: SQLCompiler, **kw: Any) -> str:
    column = compiler.process(element.column, **kw)
    return (f"EXISTS (SELECT 1 FROM unnest(string_to_array({column}, chr(92))) AS hf_v(value)"
            f" WHERE {compiler.process(element.condition, **kw)})")


def _key_sql(expr: ColumnElement[Any], key: _Key) -> ColumnElement[bool]:
    """One disjunction over the alternatives of ``key`` for a single-valued expression."""
    terms: list[ColumnElement[bool]] = []
    if key.exact:
        terms.append(expr == key.exact[0] if len(key.exact) == 1 else expr.in_(key.exact))
    terms += [_Wildcard(expr, pattern) for pattern in key.patterns]
    for lower, upper in key.ranges:
        bounds = [expr != ""] + ([expr >= lower] if lower else []) + ([expr <= upper] if upper else [])
        terms.append(and_(*bounds))
    return terms[0] if len(terms) == 1 else or_(*terms)


def sql_condition(column: ColumnElement[Any], vr: str, query_value: Any, *,
                  fuzzy_pn: bool = False) -> ColumnElement[bool] | None:
    """C.2.2.2.1-C.2.2.2.5 for one key against a column of normalised values; None for Universal Matching."""
    key = _parse_key(vr, query_value, fuzzy_pn)
    if key is None:
        return None
    return _key_sql(_AsciiLower(column) if key.fold else column, key)


def sql_multi_value_condition(column: ColumnElement[Any], vr: str, query_value: Any, *,
                              fuzzy_pn: bool = False) -> ColumnElement[bool] | None:
    """As ``sql_condition`` for a column filled by ``normalize_multi_value``: any stored value matches any query value.

    Each stored value is matched on its own, so a wild card never spans the "\\" between two values. Single
    values without wild cards or ranges are a substring test for "\\value\\" (stored values hold no "\\"): the
    same answer, cheaper, and one an index holding the column can give.
    """
    key = _parse_key(vr, query_value, fuzzy_pn)
    if key is None:
        return None
    if key.exact and not key.patterns and not key.ranges and not key.fold:
        terms = [_HasValue(column, f"\\{value}\\") for value in key.exact]
        return terms[0] if len(terms) == 1 else or_(*terms)
    return _AnyValue(column, _key_sql(_AsciiLower(_ELEMENT) if key.fold else _ELEMENT, key))


def _combined(date_query: Any, time_query: Any) -> tuple[tuple[str, str] | None, tuple[str, str] | None] | None:
    """C.2.2.2.5.4: ((date, time) lower, (date, time) upper) when both keys are ranges of the same form, else None."""
    dates, times = _values("DA", date_query), _values("TM", time_query)
    if len(dates) != 1 or len(times) != 1 or "*" in dates[0] + times[0]:
        return None
    d_lo, d_hi, d_range = _parse_range("DA", dates[0])
    t_lo, t_hi, t_range = _parse_range("TM", times[0], ordered=False)  # a time range may cross midnight here
    same_form = d_range and t_range and (d_lo is None, d_hi is None) == (t_lo is None, t_hi is None)
    if not same_form or d_lo == d_hi is None:  # "-" alone is universal
        return None
    lower = (d_lo, t_lo) if d_lo and t_lo else None
    upper = (d_hi, t_hi) if d_hi and t_hi else None
    if lower and upper and lower > upper:
        raise InvalidQuery(f"range {dates[0]} {times[0]} ends before it starts")
    return lower, upper


def sql_datetime_condition(date_column: ColumnElement[Any], time_column: ColumnElement[Any], date_query: Any,
                           time_query: Any) -> ColumnElement[bool] | None:
    """C.2.2.2.5.4 combined date-time Range Matching of a DA column with its TM column; None when both universal.

    "20240101-20240102" with "080000-160000" spans 2024-01-01 08:00 to 2024-01-02 16:00:59.999999. When the two keys
    are not ranges of the same form each one is matched on its own (``sql_condition``).
    """
    combined = _combined(date_query, time_query)
    if combined is None:
        terms = [c for c in (sql_condition(date_column, "DA", date_query), sql_condition(time_column, "TM", time_query))
                 if c is not None]
        return and_(*terms) if terms else None
    lower, upper = combined
    no_time = or_(time_column == "", time_column.is_(None))
    terms = [date_column != ""]
    if lower:
        terms.append(or_(date_column > lower[0], and_(date_column == lower[0], or_(time_column >= lower[1], no_time))))
    if upper:
        terms.append(or_(date_column < upper[0], and_(date_column == upper[0], or_(time_column <= upper[1], no_time))))
    return and_(*terms)


# --- Python side ----------------------------------------------------------------------------------------------


def _key_result(vr: str, key: _Key, stored_value: Any) -> tuple[bool, str]:
    """(matched, reason) of a parsed key against a stored value, with the same semantics as ``_key_sql``."""
    shown = [v for v in (_canonical(vr, text) for text in _values(vr, stored_value)) if v]
    values = [_fold(v) for v in shown] if key.fold else shown
    regexes = [re.compile("".join({"*": ".*", "?": "."}.get(c, re.escape(c)) for c in p), re.DOTALL)
               for p in key.patterns]
    if (any(v in key.exact for v in values)
            or any(regex.fullmatch(v) for regex in regexes for v in values)
            or any((lo is None or v >= lo) and (hi is None or v <= hi) for lo, hi in key.ranges for v in values)):
        return True, "matches"
    item = "\\".join(shown) or "(no value)"
    if key.ranges and not key.exact and not key.patterns and len(key.ranges) == 1:
        return False, f"{item} is outside range {key.text}"
    return False, f"query {key.text}, item {item}"


def _sequence_entries(query_items: Any, stored_items: Any, fuzzy_pn: bool, path: str) -> list[tuple[str, bool, str]]:
    """C.2.2.2.6 Sequence Matching: the entries of the best candidate item (the first one matching every key)."""
    query_items = list(query_items or [])
    if not all(isinstance(item, Dataset) for item in query_items):
        raise InvalidQuery(f"{path or 'sequence key'}: a sequence key holds items, not values")
    if len(query_items) > 1:
        raise InvalidQuery(f"{path}: a sequence key must hold a single item (PS3.4 C.2.2.2.6)")
    if not query_items or not _entries(query_items[0], Dataset(), fuzzy_pn, ""):
        return []  # zero-length sequence or empty item: universal
    best: list[tuple[str, bool, str]] | None = None
    for item in stored_items or []:
        entries = _entries(query_items[0], item, fuzzy_pn, path + ">")
        if all(ok for _, ok, _ in entries):
            return entries
        if best is None or sum(ok for _, ok, _ in entries) > sum(ok for _, ok, _ in best):
            best = entries
    return best or [(path, False, "the candidate sequence has no items")]


def _result(vr: str, query_value: Any, stored_value: Any, fuzzy_pn: bool) -> tuple[bool, str] | None:
    """(matched, reason) of one key, None when universal."""
    if vr == "SQ":
        entries = _sequence_entries(query_value, stored_value, fuzzy_pn, "")
        failed = [f"{path.lstrip('>')}: {reason}" for path, ok, reason in entries if not ok]
        return (not failed, "; ".join(failed) or "matches") if entries else None
    key = _parse_key(vr, query_value, fuzzy_pn)
    return None if key is None else _key_result(vr, key, stored_value)


def matches(vr: str, query_value: Any, stored_value: Any, *, fuzzy_pn: bool = False) -> bool:
    """C.2.2.2.1-C.2.2.2.6: whether a stored value (raw or normalised, maybe multi-valued) matches one query key."""
    result = _result(vr, query_value, stored_value, fuzzy_pn)
    return result is None or result[0]


def explain(vr: str, query_value: Any, stored_value: Any, *, fuzzy_pn: bool = False) -> str | None:
    """None when ``matches`` holds, else a short reason ("query CT_ROOM2, item CT_ROOM1")."""
    result = _result(vr, query_value, stored_value, fuzzy_pn)
    return None if result is None or result[0] else result[1]


def _combined_result(date_query: Any, time_query: Any, stored_date: Any, stored_time: Any) -> tuple[bool, str] | None:
    """C.2.2.2.5.4 in Python, None when the keys are not combined; mirrors ``sql_datetime_condition``."""
    combined = _combined(date_query, time_query)
    if combined is None:
        return None
    lower, upper = combined
    day, time = normalize_date(str(stored_date or "")), normalize_time(str(stored_time or ""))
    ok = bool(day) and not (lower and (day < lower[0] or (day == lower[0] and time and time < lower[1])))
    ok = ok and not (upper and (day > upper[0] or (day == upper[0] and time and time > upper[1])))
    shown = f"{day or '(no value)'} {time or '(no value)'}"
    return ok, "matches" if ok else f"{shown} is outside range {date_query} {time_query}"


def matches_datetime(date_query: Any, time_query: Any, stored_date: Any, stored_time: Any) -> bool:
    """Python twin of ``sql_datetime_condition``."""
    combined = _combined_result(date_query, time_query, stored_date, stored_time)
    if combined is not None:
        return combined[0]
    return matches("DA", date_query, stored_date) and matches("TM", time_query, stored_time)


def _vr_of(query: Dataset, tag: int) -> str:
    vr = query[tag].VR
    if vr == "UN" or " or " in vr:
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            pass
    return vr.split(" or ")[0]


def _entries(query: Dataset, candidate: Dataset, fuzzy_pn: bool, prefix: str) -> list[tuple[str, bool, str]]:
    out: list[tuple[str, bool, str]] = []
    done: set[int] = set()
    for tag in sorted(query.keys()):
        if tag in _NOT_MATCHED or tag.element == 0 or tag in done:
            continue
        vr, keyword = _vr_of(query, tag), query[tag].keyword or str(tag)
        stored = candidate[tag].value if tag in candidate else None
        if vr == "SQ":
            out += _sequence_entries(query[tag].value, stored, fuzzy_pn, prefix + keyword)
            continue
        partner = tag_for_keyword(keyword[:-4] + "Time") if vr == "DA" and keyword.endswith("Date") else None
        if partner is not None and partner in query:
            stored_time = candidate[partner].value if partner in candidate else None
            result = _combined_result(query[tag].value, query[partner].value, stored, stored_time)
            if result is not None:
                done.add(partner)
                out.append((f"{prefix}{keyword}+{query[partner].keyword}", *result))
                continue
        result = _result(vr, query[tag].value, stored, fuzzy_pn)
        if result is not None:
            out.append((prefix + keyword, *result))
    return out


def match_dataset(query: Dataset, candidate: Dataset, *, fuzzy_pn: bool = False) -> bool:
    """Whether ``candidate`` matches every non-universal key of the C-FIND/QIDO identifier ``query`` (C.2.2.2)."""
    return all(ok for _, ok, _ in _entries(query, candidate, fuzzy_pn, ""))


def explain_dataset(query: Dataset, candidate: Dataset, *, fuzzy_pn: bool = False) -> list[tuple[str, bool, str]]:
    """(keyword path "Seq>Keyword", matched, reason) for every non-universal key of ``query``."""
    return _entries(query, candidate, fuzzy_pn, "")
