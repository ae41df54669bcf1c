"""Reading a DICOM instance and decoding its stored pixel values (PS3.5 section 8, PS3.3 C.7.6.3).

This is the one reading path of the imaging commands and API: :func:`read_dataset` opens every file,
:func:`decode_frame` decodes every frame. Sources are a path, the bytes of a file or an already parsed
:class:`pydicom.Dataset`. Files without Part-10 file meta (e.g. old ACR-NEMA style objects) are read with
``force=True`` and their transfer syntax is taken from the encoding pydicom detected; anything that does not
start like a DICOM file is refused before pydicom invents elements out of it. Every failure is raised as a
:class:`FileProblem` (an :class:`~hounsfield.errors.InvalidDataset`) or :class:`CodecMissing` (a
:class:`~hounsfield.errors.DependencyMissing`) whose one-line message is ``<source>: <one of MESSAGES>``.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
from typing import TypeAlias

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import get_decoder
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGExtended12Bit,
)

from hounsfield.errors import DependencyMissing, InvalidDataset
from hounsfield.imaging.codecs import DEFLATED_IMAGE_FRAME, decode_deflated_frames, decode_jpeg12_frame

Source: TypeAlias = str | os.PathLike[str] | bytes | Dataset

# The fixed set of things that can be wrong with a file, as every imaging command reports them.
MESSAGES: dict[str, str] = {
    "no-such-file": "no such file",
    "is-a-directory": "is a directory, not a DICOM file",
    "cannot-read": "cannot read the file ({cause})",
    "empty": "empty file, not a DICOM file",
    "not-dicom": "not a DICOM file",
    "unreadable": "not a readable DICOM file ({cause})",
    "truncated": "truncated DICOM file ({cause})",
    "no-pixels": "no pixel data ({what}, not an image)",
    "not-a-slice": "{what}, not a single-frame grey slice of a series",
    "invalid": "invalid {element} {value!r}",
    "frame-range": "frame {frame} out of range (the instance has {frames} frame(s))",
    "cannot-decode": "cannot decode pixel data ({cause})",
    "no-decoder": "no decoder for transfer syntax {uid} ({syntax})",
    "no-codec": "no installed codec for {syntax} ({uid}); missing packages: {packages}",
    "cannot-write": "cannot write ({cause})",
    "unexpected": "unexpected failure ({cause})",
}


def _message(kind: str, name: str, fields: dict[str, object]) -> str:
    return f"{name}: {MESSAGES[kind].format(**fields)}"


class FileProblem(InvalidDataset):
    """A file the imaging code cannot use; ``kind`` is its key in :data:`MESSAGES`."""

    def __init__(self, kind: str, name: str, **fields: object) -> None:
        self.kind, self.name = kind, name
        super().__init__(_message(kind, name, fields))


class CodecMissing(DependencyMissing):
    """Pixel data no installed codec decodes; ``kind`` is ``no-decoder`` or ``no-codec``."""

    def __init__(self, kind: str, name: str, **fields: object) -> None:
        self.kind, self.name = kind, name
        super().__init__(_message(kind, name, fields))


def looks_like_dicom(head: bytes) -> bool:
    """Whether bytes start like a DICOM file: the Part-10 'DICM' prefix, or a bare data set whose first tag has
    a low group number (little endian, as the archive checks, or big endian)."""
    if head[128:132] == b"DICM":
        return True
    return len(head) >= 8 and (head[1] == 0 or (head[0] == 0 and head[1] < 0x10))


def sop_class_text(ds: Dataset) -> str:
    """The SOP class by its name (pydicom's UID dictionary), for messages."""
    uid = str(ds.get("SOPClassUID", "") or "").strip()
    if not uid:
        return "no SOP Class UID"
    name = UID(uid).name
    return name if name and name != uid else f"SOP Class {uid}"

_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def source_name(source: Source) -> str:
    """A short name for messages: the path, the dataset's filename, or ``<bytes>``."""
    if isinstance(source, Dataset):
        return str(getattr(source, "filename", None) or "<dataset>")
    if isinstance(source, bytes):
        return "<bytes>"
    return os.fspath(source)


def one_line(exc: BaseException) -> str:
    """The first line of an exception's message, for one-line error reports."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def read_dataset(source: Source, *, pixels: bool = True) -> Dataset:
    """Parse ``source`` into a Dataset whose file meta always names a transfer syntax.

    ``pixels=False`` stops before the Pixel Data element (headers only).
    """
    if isinstance(source, Dataset):
        _ensure_transfer_syntax(source)
        return source
    name = source_name(source)
    if isinstance(source, bytes):
        head = source[:132]
    else:
        try:
            with open(source, "rb") as fh:
                head = fh.read(132)
        except FileNotFoundError:
            raise FileProblem("no-such-file", name) from None
        except IsADirectoryError:
            raise FileProblem("is-a-directory", name) from None
        except OSError as exc:
            raise FileProblem("cannot-read", name, cause=exc.strerror or one_line(exc)) from None
    if not head:
        raise FileProblem("empty", name)
    if not looks_like_dicom(head):
        raise FileProblem("not-dicom", name)
    fp = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(fp, force=True, stop_before_pixels=not pixels)
    except OSError as exc:
        raise FileProblem("cannot-read", name, cause=exc.strerror or one_line(exc)) from None
    except EOFError as exc:
        raise FileProblem("truncated", name, cause=one_line(exc)) from None
    except (InvalidDicomError, ValueError, KeyError, TypeError, struct.error) as exc:
        raise FileProblem("unreadable", name, cause=one_line(exc)) from None
    if not any(tag.group != 0x0002 for tag in ds.keys()):  # noqa: SIM118 - keys() leaves raw elements unparsed
        raise FileProblem("truncated", name, cause="no data set after the file meta")
    if isinstance(source, (str, os.PathLike)):
        ds.filename = os.fspath(source)
    _ensure_transfer_syntax(ds)
    return ds


def truncation(source: str | os.PathLike[str] | bytes) -> str | None:
    """Why an encoded Part-10 file is incomplete (an element or sequence runs past its end), or ``None`` when it
    is whole or cannot be checked (a bare data set's encoding is only guessed). pydicom reads what there is
    of a truncated file without a word; this says so."""
    from hounsfield import headerjson

    data = source if isinstance(source, bytes) else open(source, "rb").read()  # noqa: SIM115
    if data[128:132] != b"DICM":
        return None
    try:
        headerjson.parse(data, only=frozenset())
    except headerjson.Truncated as exc:
        return one_line(exc).removesuffix(" (truncated)")
    except Exception:  # noqa: BLE001 - what the walker does not understand, pydicom has read: no verdict
        return None
    return None


def _ensure_transfer_syntax(ds: Dataset) -> None:
    """Fill in (0002,0010) from the encoding detected while parsing, as PS3.5 A.1 defaults to Implicit VR LE."""
    meta = getattr(ds, "file_meta", None)
    if meta is None:
        meta = ds.file_meta = FileMetaDataset()
    if meta.get("TransferSyntaxUID"):
        return
    implicit, little = ds.original_encoding
    if implicit is None or little is None:
        implicit, little = True, True
    if not little:
        meta.TransferSyntaxUID = ExplicitVRBigEndian
    else:
        meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian


def has_pixels(ds: Dataset) -> bool:
    """True when the dataset has one of the pixel data elements (PS3.3 C.7.6.3)."""
    return any(keyword in ds for keyword in _PIXEL_KEYWORDS)


def number_of_frames(ds: Dataset) -> int:
    """(0028,0008) Number of Frames, 1 when absent."""
    try:
        return max(int(ds.get("NumberOfFrames") or 1), 1)
    except (TypeError, ValueError):
        raise FileProblem("invalid", source_name(ds), element="Number of Frames",
                          value=str(ds.get("NumberOfFrames"))) from None


def decode_frame(ds: Dataset, frame: int = 0) -> tuple[np.ndarray, str]:
    """Decode one frame of stored values.

    Returns ``(array, photometric)``: the array is (rows, columns) for one sample per pixel or
    (rows, columns, 3) for colour, and ``photometric`` is the Photometric Interpretation of that array
    (YBR_FULL / YBR_FULL_422 come back converted to ``RGB``).
    """
    name = source_name(ds)
    if not has_pixels(ds):
        raise FileProblem("no-pixels", name, what=sop_class_text(ds))
    frames = number_of_frames(ds)
    if not 0 <= frame < frames:
        raise FileProblem("frame-range", name, frame=frame, frames=frames)
    tsuid = UID(ds.file_meta.TransferSyntaxUID)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip()
    try:
        if tsuid == DEFLATED_IMAGE_FRAME:
            return decode_deflated_frames(ds, frame), photometric
        if tsuid == JPEGExtended12Bit and int(ds.get("BitsStored") or 8) > 8:
            return decode_jpeg12_frame(ds, frame), photometric
        decoder = _decoder_for(tsuid, name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            arr, meta = decoder.as_array(ds, index=frame, as_rgb=True)
        if not arr.dtype.isnative:
            arr = arr.astype(arr.dtype.newbyteorder("="))
    except (InvalidDataset, DependencyMissing):
        raise
    except Exception as exc:  # noqa: BLE001 - every codec and pydicom validation error ends here, with its cause
        raise _decode_error(name, tsuid, exc) from None
    return arr, str(meta.get("photometric_interpretation", photometric))


def _decoder_for(tsuid: UID, name: str):
    try:
        decoder = get_decoder(tsuid)
    except NotImplementedError:
        raise CodecMissing("no-decoder", name, uid=tsuid, syntax=tsuid.name) from None
    if not decoder.is_available:
        raise CodecMissing("no-codec", name, uid=tsuid, syntax=tsuid.name,
                           packages=", ".join(sorted(decoder.missing_dependencies)) or "unknown")
    return decoder


def _decode_error(name: str, tsuid: UID, exc: Exception) -> FileProblem:
    """Turn a codec failure into a one-line error naming the file and the cause."""
    message = one_line(exc).split(" - ")[0]
    if message.startswith("Unable to decode as exceptions were raised by all available plugins"):
        message = f"corrupt or unsupported {tsuid.name} data"
    return FileProblem("cannot-decode", name, cause=message)
