"""Masks back to an RT Structure Set: a new RTSTRUCT referencing a given image series (the rt-utils use
case: contours from a segmentation model brought back into the treatment planning system).

Each slice of a mask becomes closed planar contours that follow the pixel edges of the mask (collinear
points dropped), so rasterising them again with voxel-centre or supersampled sampling
(:mod:`hounsfield.rt.raster`, even-odd rule) gives back the same voxels: holes are contours inside
contours, as PS3.3 C.8.8.6 readers that apply the XOR rule expect.

The new object (PS3.3 A.19 RT Structure Set IOD) gets new Series and SOP Instance UIDs
(``pydicom.uid.generate_uid``), the patient and study of the series, its Frame of Reference
(Referenced Frame of Reference Sequence, PS3.3 C.8.8.5), the list of its images (RT Referenced Series →
Contour Image Sequence) and, for every contour, the image it lies on.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID, generate_uid

from hounsfield.errors import DependencyMissing
from hounsfield.rt.common import RT_STRUCTURE_SET, RTError
from hounsfield.rt.grid import CTSeries, Grid

#: Colours given to ROIs without one (RGB).
PALETTE = ((255, 0, 0), (0, 200, 0), (0, 100, 255), (255, 200, 0), (255, 0, 255), (0, 220, 220),
           (255, 128, 0), (128, 0, 255), (128, 255, 0), (255, 105, 180))
_STUDY_MANAGEMENT = "1.2.840.10008.3.1.2.3.1"  # Detached Study Management SOP Class (retired, still the rule)


def mask_outlines(mask: np.ndarray) -> list[np.ndarray]:
    """The pixel-edge outlines of a 2-D boolean mask: closed loops of (row, column) corner coordinates
    (pixel (j, i) spans rows j-0.5…j+0.5 and columns i-0.5…i+0.5), collinear points dropped. Filled with the
    even-odd rule they give back the mask exactly."""
    m = np.pad(np.asarray(mask, dtype=bool), 1)
    nx = m.shape[1] - 2
    width = nx + 1
    starts: list[np.ndarray] = []
    ends: list[np.ndarray] = []
    inner = m[1:-1, 1:-1]
    j, i = np.nonzero(inner & ~m[:-2, 1:-1])  # top edges, left to right
    starts.append(j * width + i); ends.append(j * width + i + 1)
    j, i = np.nonzero(inner & ~m[2:, 1:-1])  # bottom edges, right to left
    starts.append((j + 1) * width + i + 1); ends.append((j + 1) * width + i)
    j, i = np.nonzero(inner & ~m[1:-1, :-2])  # left edges, bottom to top
    starts.append((j + 1) * width + i); ends.append(j * width + i)
    j, i = np.nonzero(inner & ~m[1:-1, 2:])  # right edges, top to bottom
    starts.append(j * width + i + 1); ends.append((j + 1) * width + i + 1)
    start, end = np.concatenate(starts).tolist(), np.concatenate(ends).tolist()
    outgoing: dict[int, list[int]] = defaultdict(list)
    for e, s in enumerate(start):
        outgoing[s].append(e)
    used = [False] * len(start)
    loops: list[np.ndarray] = []
    for e0 in range(len(start)):
        if used[e0]:
            continue
        vertices = []
        e = e0
        while not used[e]:
            used[e] = True
            vertices.append(start[e])
            nxt = [c for c in outgoing[end[e]] if not used[c]]
            if not nxt:
                break
            e = nxt[0]
        v = np.array(vertices, dtype=np.int64)
        pts = np.column_stack((v // width, v % width)).astype(np.float64)
        d_in = pts - np.roll(pts, 1, axis=0)
        d_out = np.roll(pts, -1, axis=0) - pts
        keep = np.any(np.sign(d_in) != np.sign(d_out), axis=1)
        pts = pts[keep]
        if len(pts) >= 3:
            loops.append(pts - 0.5)
    return loops


def _loop_to_patient(loop: np.ndarray, grid: Grid, k: int) -> np.ndarray:
    idx = np.column_stack((np.full(len(loop), float(k)), loop[:, 0], loop[:, 1]))
    return grid.index_to_patient(idx)


def _ds_values(points: np.ndarray) -> list[str]:
    return [f"{v:.4f}".rstrip("0").rstrip(".") if "." in f"{v:.4f}" else f"{v:.4f}" for v in points.ravel()]


def structure_set_from_masks(series: CTSeries, masks: Mapping[str, np.ndarray] | Sequence[tuple[str, np.ndarray]],
                             *, colors: Mapping[str, tuple[int, int, int]] | None = None,
                             types: Mapping[str, str] | None = None, label: str = "hounsfield",
                             algorithm: str = "AUTOMATIC", description: str = "") -> Dataset:
    """A new RT Structure Set with one ROI per mask, on ``series``.

    ``masks`` maps ROI names to boolean arrays of ``series.grid.shape`` (slice, row, column, slices sorted
    along the normal as :func:`hounsfield.rt.grid.load_series` sorts them). ``types`` gives RT ROI
    Interpreted Types (default ``ORGAN``). Returns the Dataset, file meta included; save it with
    :func:`write_structure_set` or ``ds.save_as``.
    """
    items = list(masks.items()) if isinstance(masks, Mapping) else list(masks)
    if not items:
        raise RTError("no masks to write")
    grid = series.grid
    for name, mask in items:
        if np.shape(mask) != grid.shape:
            raise RTError(f"mask {name!r}: shape {np.shape(mask)} differs from the series grid {grid.shape}")
    if not series.frame_of_reference_uid:
        raise RTError(f"{series.paths[0] if series.paths else 'series'}: no Frame of Reference UID; "
                      "a structure set needs one")
    first = series.headers[0]
    now = _dt.datetime.now()
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = RT_STRUCTURE_SET
    sop_uid = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = RT_STRUCTURE_SET
    ds.SOPInstanceUID = sop_uid
    ds.Modality = "RTSTRUCT"
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate",
                    "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName", "StudyDescription"):
        ds.__setattr__(keyword, first.get(keyword, ""))
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = 1
    ds.SeriesDescription = description or label
    ds.InstanceNumber = 1
    ds.Manufacturer = "hounsfield"
    ds.StructureSetLabel = label[:16]
    ds.StructureSetDate = now.strftime("%Y%m%d")
    ds.StructureSetTime = now.strftime("%H%M%S")
    ds.FrameOfReferenceUID = series.frame_of_reference_uid

    def image_ref(uid: str) -> Dataset:
        ref = Dataset()
        ref.ReferencedSOPClassUID = str(series.headers[0].get("SOPClassUID", "1.2.840.10008.5.1.4.1.1.2"))
        ref.ReferencedSOPInstanceUID = uid
        return ref

    rt_series = Dataset()
    rt_series.SeriesInstanceUID = series.series_uid
    rt_series.ContourImageSequence = DicomSequence([image_ref(u) for u in grid.slice_uids])
    study = Dataset()
    study.ReferencedSOPClassUID = _STUDY_MANAGEMENT
    study.ReferencedSOPInstanceUID = series.study_uid
    study.RTReferencedSeriesSequence = DicomSequence([rt_series])
    frame = Dataset()
    frame.FrameOfReferenceUID = series.frame_of_reference_uid
    frame.RTReferencedStudySequence = DicomSequence([study])
    ds.ReferencedFrameOfReferenceSequence = DicomSequence([frame])

    rois, contours, observations = [], [], []
    for n, (name, mask) in enumerate(items, start=1):
        roi = Dataset()
        roi.ROINumber = n
        roi.ReferencedFrameOfReferenceUID = series.frame_of_reference_uid
        roi.ROIName = str(name)
        roi.ROIGenerationAlgorithm = algorithm
        rois.append(roi)
        rc = Dataset()
        rc.ROIDisplayColor = list((colors or {}).get(name, PALETTE[(n - 1) % len(PALETTE)]))
        rc.ReferencedROINumber = n
        seq = []
        m = np.asarray(mask, dtype=bool)
        for k in np.flatnonzero(m.reshape(m.shape[0], -1).any(axis=1)):
            for loop in mask_outlines(m[k]):
                c = Dataset()
                c.ContourImageSequence = DicomSequence([image_ref(grid.slice_uids[k])]) if grid.slice_uids else DicomSequence([])
                c.ContourGeometricType = "CLOSED_PLANAR"
                c.NumberOfContourPoints = len(loop)
                c.ContourNumber = len(seq) + 1
                c.ContourData = _ds_values(_loop_to_patient(loop, grid, int(k)))
                seq.append(c)
        if seq:
            rc.ContourSequence = DicomSequence(seq)
        contours.append(rc)
        obs = Dataset()
        obs.ObservationNumber = n
        obs.ReferencedROINumber = n
        obs.ROIObservationLabel = str(name)[:16]
        obs.RTROIInterpretedType = (types or {}).get(name, "ORGAN")
        obs.ROIInterpreter = ""
        observations.append(obs)
    ds.StructureSetROISequence = DicomSequence(rois)
    ds.ROIContourSequence = DicomSequence(contours)
    ds.RTROIObservationsSequence = DicomSequence(observations)
    return ds


def write_structure_set(ds: Dataset, path: str | os.PathLike[str]) -> None:
    """Write a structure set made by :func:`structure_set_from_masks` as a DICOM Part-10 file."""
    ds.save_as(os.fspath(path), enforce_file_format=True)


def label_map_on_grid(image: object, grid: Grid) -> np.ndarray:
    """A NIfTI label map (a path or a nibabel image) resampled, nearest neighbour, onto ``grid``: an int32
    array of ``grid.shape``, 0 outside the label map. The NIfTI affine is RAS; DICOM patient coordinates are
    LPS (x and y negated)."""
    try:
        import nibabel
    except ImportError:
        raise DependencyMissing("reading NIfTI label maps needs nibabel (pip install nibabel)") from None
    img = nibabel.load(os.fspath(image)) if isinstance(image, (str, os.PathLike)) else image
    data = np.asarray(img.dataobj)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise RTError(f"label map has {data.ndim} dimensions, 3 expected")
    ras = np.asarray(img.affine, dtype=np.float64)
    to_voxel = np.linalg.inv(ras) @ np.diag([-1.0, -1.0, 1.0, 1.0])  # LPS point -> NIfTI voxel
    centres = grid.voxel_centres().reshape(-1, 3)
    ijk = np.rint(centres @ to_voxel[:3, :3].T + to_voxel[:3, 3]).astype(np.int64)
    inside = np.all((ijk >= 0) & (ijk < np.array(data.shape)), axis=1)
    out = np.zeros(centres.shape[0], dtype=np.int32)
    out[inside] = data[ijk[inside, 0], ijk[inside, 1], ijk[inside, 2]]
    return out.reshape(grid.shape)


def structure_set_from_label_map(series: CTSeries, labels: object, names: Mapping[int, str] | None = None,
                                 **kwargs: object) -> Dataset:
    """A new RT Structure Set from a label map: a NumPy int array of ``series.grid.shape``, or a NIfTI
    file / nibabel image (resampled onto the series, :func:`label_map_on_grid`). Label ``v`` > 0 becomes
    the ROI ``names[v]`` (``label v`` by default)."""
    data = np.asarray(labels) if isinstance(labels, np.ndarray) else label_map_on_grid(labels, series.grid)
    values = [int(v) for v in np.unique(data) if v > 0]
    if not values:
        raise RTError("the label map has no label above 0")
    masks = [((names or {}).get(v, f"label {v}"), data == v) for v in values]
    return structure_set_from_masks(series, masks, **kwargs)  # type: ignore[arg-type]
