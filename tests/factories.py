"""Datasets made by the tests: small, valid, with the attributes each test controls."""

from __future__ import annotations

import copy
import io
from pathlib import Path

import numpy as np
from pydicom import dcmread, examples
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid


def ct_dataset(**attrs: object) -> Dataset:
    """pydicom's bundled CT slice with fresh UIDs and the given attributes."""
    ds = copy.deepcopy(examples.ct)
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    for key, value in attrs.items():
        setattr(ds, key, value)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def tiny_ct(patient_id: str, study_uid: str, series_uid: str, number: int, **attrs: object) -> Dataset:
    """A 4x4 CT image: cheap to make by the thousand, complete enough to archive and query."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PatientID = patient_id
    ds.PatientName = f"PATIENT^{patient_id}"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.Modality = "CT"
    ds.StudyDate = "20240115"
    ds.StudyTime = "101500"
    ds.InstanceNumber = number
    ds.Rows = ds.Columns = 4
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    ds.PixelData = (np.arange(16, dtype=np.int16) + number).tobytes()
    for key, value in attrs.items():
        setattr(ds, key, value)
    return ds


def encode(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def write(ds: Dataset, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode(ds))
    return path


def comparable(ds: Dataset) -> dict:
    """Elements to compare after a round trip: not file meta, group lengths or trailing padding."""
    return {e.tag: e.value for e in ds if e.tag.group != 0x0002 and e.tag.element != 0 and e.tag != 0xFFFCFFFC}


def read(path: Path) -> Dataset:
    return dcmread(path, force=True)


def _nested_sequence(depth: int, *, defined: bool) -> bytes:
    """(0040,A730) Content Sequence nested ``depth`` levels deep, each item holding the next sequence
    (explicit VR little endian), with defined or undefined lengths: a hostile dataset's shape."""
    tag = b"\x40\x00\x30\xa7SQ\x00\x00"
    if not defined:
        opening = tag + b"\xff\xff\xff\xff" + b"\xfe\xff\x00\xe0\xff\xff\xff\xff"
        closing = b"\xfe\xff\x0d\xe0\x00\x00\x00\x00" + b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
        return opening * depth + closing * depth
    inner = b""
    for _ in range(depth):
        item = b"\xfe\xff\x00\xe0" + len(inner).to_bytes(4, "little") + inner
        inner = tag + len(item).to_bytes(4, "little") + item
    return inner


def nested_instance(depth: int, *, defined: bool = False, **attrs: object) -> bytes:
    """A tiny CT instance (Part 10) carrying a Content Sequence nested ``depth`` levels deep, placed before
    Pixel Data as the tag order wants."""
    ds = tiny_ct("NESTED", generate_uid(), generate_uid(), 1, **attrs)
    pixels = ds.PixelData
    del ds.PixelData
    pixel_element = b"\xe0\x7f\x10\x00OW\x00\x00" + len(pixels).to_bytes(4, "little") + pixels
    return encode(ds) + _nested_sequence(depth, defined=defined) + pixel_element
