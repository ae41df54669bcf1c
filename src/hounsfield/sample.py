"""``hounsfield sample DIR``: a small synthetic patient to try hounsfield with (the README's tour starts here).

Two studies of one patient, written as Part-10 files:

- ``DIR/ct/CT001.dcm`` … a CT series of a head-sized phantom in Hounsfield units (air -1000, soft tissue 40,
  fat -100, a skull of 1000, a lung-like pocket of -800), axial slices 5 mm apart with consistent geometry
  (Image Position / Orientation (Patient), Pixel Spacing, Slice Thickness, Slice Location), stored unsigned
  with Rescale Intercept -1024 and a brain window (C 40, W 80) plus a bone window (C 500, W 2000);
- ``DIR/mr/MR001.dcm`` … a small MR series (arbitrary units, a window from the data).

Everything is deterministic: the same UIDs and bytes on every run (UIDs under pydicom's root, derived from fixed
text), so the tour can name the study.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID, generate_uid

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
PATIENT_ID = "HF-SAMPLE"
PATIENT_NAME = "SAMPLE^HOUNSFIELD"
ROWS = COLUMNS = 128
PIXEL_SPACING = 2.0  # mm: a 256 mm field of view
CT_SLICES = 5
MR_SLICES = 3
SLICE_THICKNESS = 5.0  # mm, also the distance between slices
CT_INTERCEPT = -1024
# Hounsfield units of the phantom's tissues.
AIR, LUNG, FAT, SOFT_TISSUE, BONE = -1000, -800, -100, 40, 1000


def uid(name: str) -> str:
    """A UID that is the same on every run (pydicom's root + a hash of ``name``)."""
    return generate_uid(entropy_srcs=["hounsfield sample", name])


CT_STUDY_UID = uid("CT study")
MR_STUDY_UID = uid("MR study")


@dataclass(frozen=True)
class Written:
    ct: list[Path]
    mr: list[Path]


def _ellipse(rows: np.ndarray, cols: np.ndarray, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    return ((rows - cy) / ry) ** 2 + ((cols - cx) / rx) ** 2 <= 1.0


def ct_phantom(index: int) -> np.ndarray:
    """HU of slice ``index``: an ellipse of soft tissue in a skull, a fat rim, a lung-like pocket whose size
    changes from slice to slice (so that slices differ), in air."""
    rows, cols = np.mgrid[0:ROWS, 0:COLUMNS].astype(np.float64)
    c = (ROWS - 1) / 2
    hu = np.full((ROWS, COLUMNS), AIR, dtype=np.int16)
    hu[_ellipse(rows, cols, c, c, 56, 46)] = FAT
    hu[_ellipse(rows, cols, c, c, 53, 43)] = BONE
    hu[_ellipse(rows, cols, c, c, 48, 38)] = SOFT_TISSUE
    radius = 8 + 2 * index
    hu[_ellipse(rows, cols, c - 12, c + 14, radius, radius)] = LUNG
    return hu


def mr_phantom(index: int) -> np.ndarray:
    rows, cols = np.mgrid[0:ROWS, 0:COLUMNS].astype(np.float64)
    c = (ROWS - 1) / 2
    signal = np.zeros((ROWS, COLUMNS), dtype=np.uint16)
    signal[_ellipse(rows, cols, c, c, 56, 46)] = 300
    signal[_ellipse(rows, cols, c, c, 44, 34)] = 800
    signal[_ellipse(rows, cols, c + 10, c - 10, 10 + 3 * index, 12)] = 1500
    return signal


def _common(ds: Dataset, *, modality: str, sop_class: str, study: str, series_name: str, index: int,
            slices: int) -> None:
    series_uid = uid(f"{series_name} series")
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = uid(f"{series_name} instance {index + 1}")
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20240115"
    ds.StudyTime = ds.SeriesTime = "093000" if modality == "CT" else "101500"
    ds.ContentTime = ds.StudyTime
    ds.AccessionNumber = "HFS0001" if modality == "CT" else "HFS0002"
    ds.Modality = modality
    ds.Manufacturer = "hounsfield (synthetic sample)"
    ds.InstitutionName = "hounsfield sample"
    ds.ReferringPhysicianName = "REFERRER^SAMPLE"
    ds.StudyDescription = "Sample CT head phantom" if modality == "CT" else "Sample MR head phantom"
    ds.SeriesDescription = "Axial 5 mm" if modality == "CT" else "T2 axial 5 mm"
    ds.PatientName = PATIENT_NAME
    ds.PatientID = PATIENT_ID
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.BodyPartExamined = "HEAD"
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = "1" if modality == "CT" else "2"
    ds.SeriesNumber = 1
    ds.AcquisitionNumber = 1
    ds.InstanceNumber = index + 1
    z = (index - (slices - 1) / 2) * SLICE_THICKNESS
    ds.ImagePositionPatient = [-(COLUMNS - 1) * PIXEL_SPACING / 2, -(ROWS - 1) * PIXEL_SPACING / 2, z]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.FrameOfReferenceUID = uid(f"{series_name} frame of reference")
    ds.PositionReferenceIndicator = ""
    ds.SliceLocation = z
    ds.SliceThickness = SLICE_THICKNESS
    ds.PixelSpacing = [PIXEL_SPACING, PIXEL_SPACING]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = ROWS, COLUMNS


def ct_slice(index: int) -> Dataset:
    ds = Dataset()
    _common(ds, modality="CT", sop_class=CT_IMAGE_STORAGE, study=CT_STUDY_UID, series_name="CT", index=index,
            slices=CT_SLICES)
    ds.KVP = 120
    ds.ConvolutionKernel = "STANDARD"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.WindowCenter, ds.WindowWidth = [40, 500], [80, 2000]
    ds.WindowCenterWidthExplanation = ["BRAIN", "BONE"]
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = CT_INTERCEPT, 1, "HU"
    ds.PixelData = (ct_phantom(index).astype(np.int32) - CT_INTERCEPT).astype("<u2").tobytes()
    return ds


def mr_slice(index: int) -> Dataset:
    ds = Dataset()
    _common(ds, modality="MR", sop_class=MR_IMAGE_STORAGE, study=MR_STUDY_UID, series_name="MR", index=index,
            slices=MR_SLICES)
    ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions = "SE", "NONE", ""
    ds.MRAcquisitionType = "2D"
    ds.RepetitionTime, ds.EchoTime, ds.MagneticFieldStrength = 4000, 100, 1.5
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.WindowCenter, ds.WindowWidth = 750, 1500
    ds.PixelData = mr_phantom(index).astype("<u2").tobytes()
    return ds


def _save(ds: Dataset, path: Path) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    ds.save_as(path, enforce_file_format=True)
    return path


def write_sample(folder: Path) -> Written:
    """Write the sample series under ``folder`` (created if needed); the paths written, in slice order."""
    (folder / "ct").mkdir(parents=True, exist_ok=True)
    (folder / "mr").mkdir(parents=True, exist_ok=True)
    ct = [_save(ct_slice(i), folder / "ct" / f"CT{i + 1:03d}.dcm") for i in range(CT_SLICES)]
    mr = [_save(mr_slice(i), folder / "mr" / f"MR{i + 1:03d}.dcm") for i in range(MR_SLICES)]
    return Written(ct, mr)


def sample(folder: Annotated[Path, typer.Argument(help="Folder to write the sample into (created if needed).")]
           ) -> None:
    """Write a small synthetic patient to try hounsfield with: a CT series in HU (folder/ct) and an MR series
    (folder/mr), with the same UIDs on every run."""
    from hounsfield.cli_common import console, fail

    if folder.exists() and not folder.is_dir():
        fail(f"cannot write the sample into {folder}: not a directory")
    try:
        written = write_sample(folder)
    except OSError as exc:
        fail(f"cannot write the sample into {folder}: {exc.strerror or exc}")
    console.print(f"wrote {len(written.ct)} CT slices into {folder / 'ct'} (study {CT_STUDY_UID})", highlight=False)
    console.print(f"wrote {len(written.mr)} MR slices into {folder / 'mr'} (study {MR_STUDY_UID})", highlight=False)
    console.print(f"patient {PATIENT_NAME} ({PATIENT_ID})", highlight=False)


def register(app: typer.Typer) -> None:
    """Add the ``sample`` command to ``app``."""
    app.command("sample")(sample)
