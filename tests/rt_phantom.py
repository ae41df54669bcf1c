"""An analytic radiotherapy phantom: a consistent CT series + RTSTRUCT + RTDOSE + RTPLAN whose DVHs are
known in closed form. Shared by the tests (tests/test_rt_*.py) and the benchmarks (bench/bench_rt.py).

Geometry (DICOM LPS, mm): a CT of 160 x 160 pixels of 1 mm, slices every 2 mm from z = -36 to 36; a solid
sphere (R 20 mm, 33.5 cm³), a shell (R 30 mm with a concentric hole of R 15 mm, 98.9 cm³: two contours
per plane, the inner one a hole) and a small sphere of 0.5 cm³, plus a POINT and an OPEN_PLANAR ROI that
must never be rasterised. The dose is a linear field D(p) = D0 + G n·p (n oblique), on a dose grid of its
own spacing, shifted off the CT grid, with the Grid Frame Offset Vector relative or absolute (PS3.3
C.8.8.3.2). For a sphere of centre c and radius R the volume receiving at least d is the cap of height
h = R - (d - D(c)) / G: V = π h² (3R - h) / 3; a shell's is the outer cap minus the inner one.

The contours are polygons of 96 vertices whose area equals the circle's, one per CT slice the structure
crosses (each standing for a 2 mm slab), so the structures are slab stacks of the spheres: their volumes
differ from the closed form by the midpoint rule's error (0.1 % for R 20 mm, 2 % for the 0.5 cm³ sphere).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
RTSTRUCT_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
RTDOSE_STORAGE = "1.2.840.10008.5.1.4.1.1.481.2"
RTPLAN_STORAGE = "1.2.840.10008.5.1.4.1.1.481.5"

CT_SHAPE = (160, 160)  # rows, columns (square: rt-utils swaps rows and columns of non-square images)
CT_ORIGIN = (-80.0, -80.0)  # x, y of the first pixel centre
CT_Z = tuple(-36.0 + 2.0 * k for k in range(37))
D0, GRADIENT = 40.0, 0.3  # Gy, Gy/mm
DIRECTION = np.array([1.0, 0.5, 0.4]) / np.linalg.norm([1.0, 0.5, 0.4])
PRESCRIPTION_GY = 60.0
VERTICES = 96


def dose_field(points: np.ndarray) -> np.ndarray:
    """The phantom's dose (Gy) at (n, 3) patient points."""
    return D0 + GRADIENT * (np.asarray(points, dtype=np.float64).reshape(-1, 3) @ DIRECTION)


@dataclass(frozen=True)
class AnalyticStructure:
    """A sphere (``inner`` 0) or a spherical shell, and its DVH in the phantom's linear dose, closed form."""

    name: str
    centre: tuple[float, float, float]
    outer: float
    inner: float = 0.0

    @property
    def volume_cc(self) -> float:
        return 4.0 / 3.0 * math.pi * (self.outer ** 3 - self.inner ** 3) / 1000.0

    @property
    def dose_centre(self) -> float:
        return float(dose_field(np.array(self.centre))[0])

    @property
    def dmin(self) -> float:
        return self.dose_centre - GRADIENT * self.outer

    @property
    def dmax(self) -> float:
        return self.dose_centre + GRADIENT * self.outer

    @property
    def dmean(self) -> float:
        return self.dose_centre

    @staticmethod
    def _cap(radius: float, height: float) -> float:
        h = min(max(height, 0.0), 2 * radius)
        return math.pi * h * h * (3 * radius - h) / 3.0

    def volume_at_dose(self, d: float) -> float:
        """cm³ receiving at least ``d`` Gy."""
        s = (d - self.dose_centre) / GRADIENT  # the plane n·(p - c) = s
        v = self._cap(self.outer, self.outer - s)
        if self.inner > 0:
            v -= self._cap(self.inner, self.inner - s)
        return v / 1000.0

    def dose_at_volume(self, pct: float) -> float:
        """D at ``pct`` % of the volume (bisection on the closed form)."""
        target = pct / 100.0 * self.volume_cc
        lo, hi = self.dmin, self.dmax
        for _ in range(80):
            mid = 0.5 * (lo + hi)
            if self.volume_at_dose(mid) > target:
                lo = mid
            else:
                hi = mid
        return 0.5 * (lo + hi)


STRUCTURES = (
    AnalyticStructure("sphere", (35.0, 0.0, 0.0), 20.0),
    AnalyticStructure("shell", (-40.0, 0.0, 0.0), 30.0, 15.0),
    AnalyticStructure("small", (30.0, 40.0, 0.0), (0.5 * 1000 * 3 / (4 * math.pi)) ** (1 / 3)),
)
COLORS = {"sphere": (255, 0, 0), "shell": (0, 200, 0), "small": (0, 0, 255), "marker": (255, 255, 0),
          "line": (255, 0, 255)}


@dataclass
class Phantom:
    """Paths and UIDs of a written phantom, and its analytic structures."""

    directory: Path
    ct_dir: Path
    ct_paths: list[Path]
    rtstruct: Path
    rtdose: Path
    rtplan: Path | None
    study_uid: str
    series_uid: str
    frame_of_reference_uid: str
    structure_set_uid: str
    plan_uid: str
    dose_uid: str
    structures: dict[str, AnalyticStructure] = field(default_factory=dict)
    dose_origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    dose_spacing: tuple[float, float, float] = (2.5, 2.5, 3.0)


def _base(sop_class: str, modality: str, study_uid: str, frame_uid: str, series_uid: str | None = None) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = sop_class
    ds.Modality = modality
    ds.PatientName = "Phantom^Analytic"
    ds.PatientID = "RTPHANTOM"
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = "20240101"
    ds.StudyTime = "120000"
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.SeriesNumber = 1
    ds.FrameOfReferenceUID = frame_uid
    ds.Manufacturer = "hounsfield tests"
    return ds


def circle(centre_xy: tuple[float, float], radius: float, z: float, n: int = VERTICES) -> np.ndarray:
    """(n, 3) polygon with the area of the circle (vertex radius scaled up accordingly)."""
    r = radius * math.sqrt(2 * math.pi / (n * math.sin(2 * math.pi / n)))
    t = np.arange(n) * 2 * math.pi / n
    return np.column_stack((centre_xy[0] + r * np.cos(t), centre_xy[1] + r * np.sin(t), np.full(n, z)))


def _contour(points: np.ndarray, kind: str, image_uid: str | None) -> Dataset:
    c = Dataset()
    if image_uid:
        ref = Dataset()
        ref.ReferencedSOPClassUID = CT_STORAGE
        ref.ReferencedSOPInstanceUID = image_uid
        c.ContourImageSequence = Sequence([ref])
    c.ContourGeometricType = kind
    c.NumberOfContourPoints = len(points)
    c.ContourData = [f"{v:.4f}" for v in points.ravel()]
    return c


def structure_planes(s: AnalyticStructure) -> list[tuple[float, list[np.ndarray]]]:
    """The CT planes the structure crosses and its contours there (outer, then the hole)."""
    planes = []
    for z in CT_Z:
        dz = z - s.centre[2]
        if abs(dz) >= s.outer:
            continue
        polys = [circle(s.centre[:2], math.sqrt(s.outer ** 2 - dz ** 2), z)]
        if s.inner > 0 and abs(dz) < s.inner:
            polys.append(circle(s.centre[:2], math.sqrt(s.inner ** 2 - dz ** 2), z)[::-1])
        planes.append((z, polys))
    return planes


def make_ct(study_uid: str, frame_uid: str) -> list[Dataset]:
    series_uid = generate_uid()
    rows, cols = CT_SHAPE
    y, x = np.mgrid[0:rows, 0:cols]
    px, py = CT_ORIGIN[0] + x, CT_ORIGIN[1] + y
    out = []
    for k, z in enumerate(CT_Z):
        ds = _base(CT_STORAGE, "CT", study_uid, frame_uid, series_uid)
        ds.SeriesDescription = "analytic phantom"
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [f"{CT_ORIGIN[0]:.1f}", f"{CT_ORIGIN[1]:.1f}", f"{z:.1f}"]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [1.0, 1.0]
        ds.SliceThickness = 2.0
        ds.Rows, ds.Columns = rows, cols
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        hu = np.full((rows, cols), -1000, dtype=np.int16)
        hu[(px ** 2 / 85 ** 2 + py ** 2 / 60 ** 2) <= 1] = 0  # a water ellipse
        ds.PixelData = (hu + 1024).astype(np.int16).tobytes()
        out.append(ds)
    return out


def make_rtstruct(cts: list[Dataset], structures: tuple[AnalyticStructure, ...] = STRUCTURES,
                  extra: bool = True) -> Dataset:
    first = cts[0]
    ds = _base(RTSTRUCT_STORAGE, "RTSTRUCT", first.StudyInstanceUID, first.FrameOfReferenceUID)
    ds.StructureSetLabel = "PHANTOM"
    ds.StructureSetDate, ds.StructureSetTime = "20240101", "120000"
    uid_at = {round(float(c.ImagePositionPatient[2]), 2): c.SOPInstanceUID for c in cts}
    series = Dataset()
    series.SeriesInstanceUID = first.SeriesInstanceUID
    refs = []
    for c in cts:
        r = Dataset()
        r.ReferencedSOPClassUID = CT_STORAGE
        r.ReferencedSOPInstanceUID = c.SOPInstanceUID
        refs.append(r)
    series.ContourImageSequence = Sequence(refs)
    study = Dataset()
    study.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    study.ReferencedSOPInstanceUID = first.StudyInstanceUID
    study.RTReferencedSeriesSequence = Sequence([series])
    frame = Dataset()
    frame.FrameOfReferenceUID = first.FrameOfReferenceUID
    frame.RTReferencedStudySequence = Sequence([study])
    ds.ReferencedFrameOfReferenceSequence = Sequence([frame])
    rois, rcs, obs = [], [], []

    def add(name: str, kind: str, contours: list[Dataset]) -> None:
        n = len(rois) + 1
        roi = Dataset()
        roi.ROINumber, roi.ReferencedFrameOfReferenceUID, roi.ROIName = n, first.FrameOfReferenceUID, name
        roi.ROIGenerationAlgorithm = "MANUAL"
        rois.append(roi)
        rc = Dataset()
        rc.ROIDisplayColor = list(COLORS.get(name, (128, 128, 128)))
        rc.ReferencedROINumber = n
        if contours:
            rc.ContourSequence = Sequence(contours)
        rcs.append(rc)
        o = Dataset()
        o.ObservationNumber, o.ReferencedROINumber, o.RTROIInterpretedType, o.ROIInterpreter = n, n, kind, ""
        obs.append(o)

    for s in structures:
        contours = [_contour(p, "CLOSED_PLANAR", uid_at.get(round(z, 2))) for z, polys in structure_planes(s)
                    for p in polys]
        add(s.name, "PTV" if s.name == "sphere" else "ORGAN", contours)
    if extra:
        add("marker", "MARKER", [_contour(np.array([[0.0, 0.0, 0.0]]), "POINT", uid_at.get(0.0))])
        add("line", "CONTROL", [_contour(np.array([[-10.0, -10.0, 2.0], [10.0, -10.0, 2.0], [10.0, 10.0, 2.0]]),
                                         "OPEN_PLANAR", uid_at.get(2.0))])
    ds.StructureSetROISequence = Sequence(rois)
    ds.ROIContourSequence = Sequence(rcs)
    ds.RTROIObservationsSequence = Sequence(obs)
    return ds


def make_rtplan(rs: Dataset) -> Dataset:
    ds = _base(RTPLAN_STORAGE, "RTPLAN", rs.StudyInstanceUID, rs.FrameOfReferenceUID)
    ds.RTPlanLabel, ds.RTPlanName, ds.RTPlanDate, ds.RTPlanTime = "PHANTOM", "analytic", "20240101", "120000"
    ds.PlanIntent, ds.RTPlanGeometry = "CURATIVE", "PATIENT"
    ref = Dataset()
    ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = RTSTRUCT_STORAGE, rs.SOPInstanceUID
    ds.ReferencedStructureSetSequence = Sequence([ref])
    dr = Dataset()
    dr.DoseReferenceNumber, dr.DoseReferenceStructureType, dr.DoseReferenceType = 1, "VOLUME", "TARGET"
    dr.DoseReferenceDescription, dr.TargetPrescriptionDose, dr.ReferencedROINumber = "PTV", PRESCRIPTION_GY, 1
    ds.DoseReferenceSequence = Sequence([dr])
    fg = Dataset()
    fg.FractionGroupNumber, fg.NumberOfFractionsPlanned, fg.NumberOfBeams = 1, 30, 2
    fg.NumberOfBrachyApplicationSetups = 0
    beams, rbs = [], []
    for n, (gantry, mu) in enumerate(((90.0, 120.5), (270.0, 110.25)), start=1):
        rb = Dataset()
        rb.ReferencedBeamNumber, rb.BeamMeterset, rb.BeamDose = n, mu, 1.0
        rbs.append(rb)
        b = Dataset()
        b.BeamNumber, b.BeamName, b.BeamType, b.RadiationType = n, f"beam {n}", "STATIC", "PHOTON"
        b.TreatmentMachineName, b.PrimaryDosimeterUnit = "LINAC", "MU"
        b.NumberOfControlPoints = 2
        cps = []
        for i in range(2):
            cp = Dataset()
            cp.ControlPointIndex = i
            cp.CumulativeMetersetWeight = float(i)
            if i == 0:
                cp.NominalBeamEnergy, cp.GantryAngle = 6, gantry
                cp.BeamLimitingDeviceAngle, cp.PatientSupportAngle = 10.0 * n, 0.0
            cps.append(cp)
        b.ControlPointSequence = Sequence(cps)
        beams.append(b)
    fg.ReferencedBeamSequence = Sequence(rbs)
    ds.FractionGroupSequence = Sequence([fg])
    ds.BeamSequence = Sequence(beams)
    return ds


def make_rtdose(rs: Dataset, plan_uid: str | None, *, gfov: str = "relative",
                origin: tuple[float, float, float] = (-78.3, -61.1, -38.6),
                spacing: tuple[float, float, float] = (2.5, 2.5, 3.0), shape: tuple[int, int, int] = (27, 50, 64),
                scaling: float = 1e-5) -> Dataset:
    """The linear dose field on a grid of ``shape`` (frames, rows, columns) with ``spacing`` (row, column,
    frame) from ``origin`` (the first voxel centre)."""
    ds = _base(RTDOSE_STORAGE, "RTDOSE", rs.StudyInstanceUID, rs.FrameOfReferenceUID)
    nf, ny, nx = shape
    ds.ImagePositionPatient = [f"{v:.4f}" for v in origin]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [spacing[0], spacing[1]]
    ds.Rows, ds.Columns, ds.NumberOfFrames = ny, nx, nf
    ds.FrameIncrementPointer = (0x3004, 0x000C)
    offsets = np.arange(nf) * spacing[2]
    if nf > 1:
        ds.GridFrameOffsetVector = [f"{v:.4f}" for v in (offsets + origin[2] if gfov == "absolute" else offsets)]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 32, 32, 31, 0
    ds.DoseUnits, ds.DoseType, ds.DoseSummationType = "GY", "PHYSICAL", "PLAN"
    ds.DoseGridScaling = scaling
    k, j, i = np.meshgrid(np.arange(nf), np.arange(ny), np.arange(nx), indexing="ij")
    pts = np.column_stack((origin[0] + i.ravel() * spacing[1], origin[1] + j.ravel() * spacing[0],
                           origin[2] + k.ravel() * spacing[2]))
    values = np.rint(dose_field(pts) / scaling).astype(np.uint32).reshape(shape)
    ds.PixelData = values.tobytes()
    if plan_uid:
        ref = Dataset()
        ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = RTPLAN_STORAGE, plan_uid
        fg = Dataset()
        fg.ReferencedFractionGroupNumber = 1
        ref.ReferencedFractionGroupSequence = Sequence([fg])
        ds.ReferencedRTPlanSequence = Sequence([ref])
    return ds


def save(ds: Dataset, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def make_phantom(directory: Path | str, *, gfov: str = "relative", dose_origin: tuple[float, float, float] = (-78.3, -61.1, -38.6),
                 dose_spacing: tuple[float, float, float] = (2.5, 2.5, 3.0), dose_shape: tuple[int, int, int] = (27, 50, 64),
                 with_plan: bool = True) -> Phantom:
    """Write the phantom under ``directory`` (ct/IMnnnn.dcm, rtstruct.dcm, rtdose.dcm, rtplan.dcm)."""
    directory = Path(directory)
    study, frame = generate_uid(), generate_uid()
    cts = make_ct(study, frame)
    ct_paths = [save(c, directory / "ct" / f"IM{k + 1:04d}.dcm") for k, c in enumerate(cts)]
    rs = make_rtstruct(cts)
    plan = make_rtplan(rs)
    dose = make_rtdose(rs, plan.SOPInstanceUID, gfov=gfov, origin=dose_origin, spacing=dose_spacing, shape=dose_shape)
    rs_path = save(rs, directory / "rtstruct.dcm")
    rd_path = save(dose, directory / "rtdose.dcm")
    rp_path = save(plan, directory / "rtplan.dcm") if with_plan else None
    return Phantom(directory, directory / "ct", ct_paths, rs_path, rd_path, rp_path, study, cts[0].SeriesInstanceUID,
                   frame, rs.SOPInstanceUID, plan.SOPInstanceUID, dose.SOPInstanceUID,
                   {s.name: s for s in STRUCTURES}, dose_origin, dose_spacing)
