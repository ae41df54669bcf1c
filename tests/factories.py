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
