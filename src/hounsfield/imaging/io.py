"""Reading a DICOM instance and decoding its stored pixel values (PS3.5 section 8, PS3.3 C.7.6.3).

Sources are a path, the bytes of a file or an already parsed :class:`pydicom.Dataset`. Files without
Part-10 file meta (e.g. old ACR-NEMA style objects) are read with ``force=True`` and their transfer syntax
is taken from the encoding pydicom detected. Every failure is raised as
:class:`~hounsfield.errors.InvalidDataset` or :class:`~hounsfield.errors.DependencyMissing` with a
one-line message that starts with the name of the source.
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
    fp = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(fp, force=True, stop_before_pixels=not pixels)
    except FileNotFoundError:
        raise InvalidDataset(f"{name}: no such file") from None
    except IsADirectoryError:
        raise InvalidDataset(f"{name}: is a directory, not a DICOM file") from None
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError, struct.error) as exc:
        raise InvalidDataset(f"{name}: not a readable DICOM file ({one_line(exc)})") from None
    if not any(tag.group != 0x0002 for tag in ds.keys()):  # noqa: SIM118 - keys() leaves raw elements unparsed
        raise InvalidDataset(f"{name}: no data set in the file (empty or truncated)")
    if isinstance(source, (str, os.PathLike)):
        ds.filename = os.fspath(source)
    _ensure_transfer_syntax(ds)
    return ds


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
        raise InvalidDataset(f"{source_name(ds)}: invalid Number of Frames {ds.get('NumberOfFrames')!r}") from None


def decode_frame(ds: Dataset, frame: int = 0) -> tuple[np.ndarray, str]:
    """Decode one frame of stored values.

    Returns ``(array, photometric)``: the array is (rows, columns) for one sample per pixel or
    (rows, columns, 3) for colour, and ``photometric`` is the Photometric Interpretation of that array
    (YBR_FULL / YBR_FULL_422 come back converted to ``RGB``).
    """
    name = source_name(ds)
    if not has_pixels(ds):
        raise InvalidDataset(f"{name}: no pixel data (SOP class {ds.get('SOPClassUID', 'unknown')!s})")
    frames = number_of_frames(ds)
    if not 0 <= frame < frames:
        raise InvalidDataset(f"{name}: frame {frame} out of range (the instance has {frames} frame(s))")
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
        raise DependencyMissing(f"{name}: no decoder for transfer syntax {tsuid} ({tsuid.name})") from None
    if not decoder.is_available:
        raise DependencyMissing(
            f"{name}: no installed codec for {tsuid.name} ({tsuid}); "
            f"missing packages: {', '.join(sorted(decoder.missing_dependencies)) or 'unknown'}"
        )
    return decoder


def _decode_error(name: str, tsuid: UID, exc: Exception) -> InvalidDataset:
    """Turn a codec failure into a one-line error naming the file and the cause."""
    message = one_line(exc).split(" - ")[0]
    if message.startswith("Unable to decode as exceptions were raised by all available plugins"):
        message = f"corrupt or unsupported {tsuid.name} data"
    return InvalidDataset(f"{name}: cannot decode pixel data ({message})")
