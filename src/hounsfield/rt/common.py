"""What the RT modules share: the error they raise, reading an RT object, and naming it in messages."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TypeAlias

import numpy as np
from pydicom.dataset import Dataset

from hounsfield.errors import HounsfieldError
from hounsfield.imaging.io import read_dataset, source_name

Source: TypeAlias = str | os.PathLike[str] | bytes | Dataset

#: SOP Class UIDs of the RT objects (PS3.4 B.5).
RT_STRUCTURE_SET = "1.2.840.10008.5.1.4.1.1.481.3"
RT_DOSE = "1.2.840.10008.5.1.4.1.1.481.2"
RT_PLAN = "1.2.840.10008.5.1.4.1.1.481.5"
RT_ION_PLAN = "1.2.840.10008.5.1.4.1.1.481.8"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"


class RTError(HounsfieldError):
    """An RT object that cannot be used as asked; the message names the object and the cause."""


def read_rt(source: Source, modality: str | None = None, *, pixels: bool = True) -> Dataset:
    """Read ``source`` (path, bytes or Dataset); with ``modality``, insist on that Modality (0008,0060)."""
    ds = read_dataset(source, pixels=pixels)
    if modality is not None:
        found = str(ds.get("Modality", "") or "")
        if found != modality:
            raise RTError(f"{object_name(ds)}: not an {modality} object (Modality is {found or 'absent'})")
    return ds


def object_name(ds: Dataset | Source) -> str:
    """A short name for messages: the file name, else ``<Modality> <SOPInstanceUID>``."""
    if not isinstance(ds, Dataset):
        return source_name(ds)
    filename = getattr(ds, "filename", None)
    if filename:
        return os.fspath(filename)
    return f"{ds.get('Modality', 'object')} {ds.get('SOPInstanceUID', '<no SOP Instance UID>')}"


def floats(values: object, what: str, owner: str, count: int | None = None) -> np.ndarray:
    """A multi-valued numeric attribute as a float64 array, or an :class:`RTError` naming it."""
    try:
        seq = values if isinstance(values, Iterable) and not isinstance(values, (str, bytes)) else [values]
        out = np.array([float(v) for v in seq], dtype=np.float64)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise RTError(f"{owner}: {what} is not numeric ({values!r})") from None
    if count is not None and out.size != count:
        raise RTError(f"{owner}: {what} has {out.size} values, {count} expected")
    if not np.all(np.isfinite(out)):
        raise RTError(f"{owner}: {what} has non-finite values")
    return out


def text(ds: Dataset, keyword: str, default: str = "") -> str:
    """A string attribute, stripped, ``default`` when absent or empty."""
    value = ds.get(keyword)
    return default if value is None or str(value).strip() == "" else str(value).strip()


def number(ds: Dataset, keyword: str) -> float | None:
    """A numeric attribute as a float, None when absent, empty or not a number."""
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    try:
        if isinstance(value, (list, tuple)) or hasattr(value, "__len__") and not isinstance(value, str):
            value = value[0]  # type: ignore[index]
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, IndexError):
        return None
