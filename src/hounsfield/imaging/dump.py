"""A flat, dcmdump-like listing of every data element, nested sequences included."""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

VALUE_WIDTH = 80


@dataclass(frozen=True)
class DumpRow:
    """One element: tag ``(gggg,eeee)`` indented by nesting depth, VR, keyword and value text."""

    tag: str
    vr: str
    keyword: str
    value: str


def dump_rows(ds: Dataset, search: str | None = None, *, include_meta: bool = True) -> list[DumpRow]:
    """All elements in file order, file meta first; with ``search``, the rows containing it (case-insensitive)."""
    rows: list[DumpRow] = []
    if include_meta and getattr(ds, "file_meta", None):
        _collect(ds.file_meta, 0, rows)
    _collect(ds, 0, rows)
    if search:
        needle = search.lower()
        rows = [r for r in rows if needle in f"{r.tag} {r.vr} {r.keyword} {r.value}".lower()]
    return rows


def _collect(ds: Dataset, depth: int, rows: list[DumpRow]) -> None:
    indent = "  " * depth
    for elem in ds:
        tag = f"{indent}({elem.tag.group:04X},{elem.tag.element:04X})"
        keyword = elem.keyword or elem.name
        if elem.VR == "SQ":
            rows.append(DumpRow(tag, "SQ", keyword, f"{len(elem.value)} item(s)"))
            for item in elem.value:
                _collect(item, depth + 1, rows)
            continue
        rows.append(DumpRow(tag, str(elem.VR), keyword, _value_text(elem)))


def _value_text(elem: DataElement) -> str:
    if elem.tag == 0x7FE00010 or elem.VR in ("OB", "OW", "OF", "OD", "OL", "OV", "UN"):
        length = len(elem.value) if elem.value is not None else 0
        return f"<{length} bytes>"
    text = repr(elem.value) if isinstance(elem.value, bytes) else str(elem.value)
    text = text.replace("\n", " ")
    return text if len(text) <= VALUE_WIDTH else text[: VALUE_WIDTH - 1] + "…"
