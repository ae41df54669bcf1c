"""RT Plan summaries: what a physicist checks first.

Read from the RT General Plan module (PS3.3 C.8.8.9: label, name, intent, geometry, the referenced
structure set and doses), the RT Prescription module (PS3.3 C.8.8.10: Dose Reference Sequence, target
prescription doses), the RT Fraction Scheme module (PS3.3 C.8.8.13: fractions planned, each beam's
meterset in the Referenced Beam Sequence) and the RT Beams module (PS3.3 C.8.8.14: beam type, radiation,
the first control point's nominal energy and gantry / collimator / couch angles, number of control points).
RT Ion Plans (PS3.3 C.8.8.25, Ion Beam Sequence) are summarised the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydicom.dataset import Dataset

from hounsfield.rt.common import RTError, Source, number, object_name, read_rt, text


@dataclass(frozen=True)
class Beam:
    """One beam of the RT Beams module (PS3.3 C.8.8.14) with its meterset from the fraction scheme."""

    number: int
    name: str
    beam_type: str  # STATIC or DYNAMIC
    radiation_type: str  # PHOTON, ELECTRON, PROTON…
    nominal_energy: float | None  # MV / MeV of the first control point
    gantry_angle: float | None
    collimator_angle: float | None  # Beam Limiting Device Angle
    couch_angle: float | None  # Patient Support Angle
    meterset: float | None  # Beam Meterset of the Referenced Beam Sequence (MU)
    meterset_unit: str  # Primary Dosimeter Unit (MU, MINUTE, NP)
    control_points: int
    machine: str
    beam_dose: float | None = None  # Gy per fraction at the beam dose point


@dataclass(frozen=True)
class DoseReference:
    """A Dose Reference Sequence item (PS3.3 C.8.8.10)."""

    number: int | None
    description: str
    structure_type: str  # POINT, VOLUME, COORDINATES, SITE
    reference_type: str  # TARGET or ORGAN_AT_RISK
    prescription_gy: float | None  # Target Prescription Dose
    roi_number: int | None  # Referenced ROI Number


@dataclass(frozen=True)
class FractionGroup:
    number: int | None
    fractions: int | None
    beams: tuple[tuple[int, float | None], ...]  # (beam number, meterset)


@dataclass(eq=False)
class PlanSummary:
    """The summary of an RT Plan; what it references, and :attr:`issues` found while reading."""

    name: str
    sop_instance_uid: str
    label: str
    plan_name: str
    intent: str
    geometry: str
    date: str
    frame_of_reference_uid: str
    study_uid: str
    dose_references: tuple[DoseReference, ...]
    fraction_groups: tuple[FractionGroup, ...]
    beams: tuple[Beam, ...]
    structure_set_uids: tuple[str, ...]
    dose_uids: tuple[str, ...]
    plan_uids: tuple[str, ...]
    issues: list[str] = field(default_factory=list)

    @property
    def prescription_gy(self) -> float | None:
        """The highest Target Prescription Dose of the target dose references (None when none is given)."""
        doses = [d.prescription_gy for d in self.dose_references
                 if d.prescription_gy is not None and d.reference_type in ("TARGET", "")]
        return max(doses) if doses else None

    @property
    def fractions(self) -> int | None:
        """Number of Fractions Planned of the first fraction group."""
        return self.fraction_groups[0].fractions if self.fraction_groups else None

    @property
    def total_meterset(self) -> float | None:
        values = [b.meterset for b in self.beams if b.meterset is not None]
        return sum(values) if values else None

    @classmethod
    def read(cls, source: Source) -> PlanSummary:
        return summarize_plan(read_rt(source, "RTPLAN", pixels=False))


def summarize_plan(ds: Dataset) -> PlanSummary:
    """The :class:`PlanSummary` of an RT Plan or RT Ion Plan data set."""
    name = object_name(ds)
    if str(ds.get("Modality", "")) != "RTPLAN":
        raise RTError(f"{name}: not an RT Plan (Modality is {ds.get('Modality') or 'absent'})")
    issues: list[str] = []
    refs = tuple(DoseReference(_int(d, "DoseReferenceNumber"), text(d, "DoseReferenceDescription"),
                               text(d, "DoseReferenceStructureType"), text(d, "DoseReferenceType"),
                               number(d, "TargetPrescriptionDose"), _int(d, "ReferencedROINumber"))
                 for d in ds.get("DoseReferenceSequence") or [])
    groups = []
    meterset: dict[int, float | None] = {}
    beam_dose: dict[int, float | None] = {}
    for fg in ds.get("FractionGroupSequence") or []:
        beams = []
        for rb in fg.get("ReferencedBeamSequence") or []:
            bn = _int(rb, "ReferencedBeamNumber")
            if bn is None:
                issues.append(f"{name}: a Referenced Beam Sequence item has no Referenced Beam Number")
                continue
            mu = number(rb, "BeamMeterset")
            beams.append((bn, mu))
            meterset.setdefault(bn, mu)
            beam_dose.setdefault(bn, number(rb, "BeamDose"))
        groups.append(FractionGroup(_int(fg, "FractionGroupNumber"), _int(fg, "NumberOfFractionsPlanned"),
                                    tuple(beams)))
    beams_out = []
    sequence = ds.get("BeamSequence") or ds.get("IonBeamSequence") or []
    for b in sequence:
        bn = _int(b, "BeamNumber")
        if bn is None:
            issues.append(f"{name}: a beam without Beam Number; left out")
            continue
        cps = b.get("ControlPointSequence") or b.get("IonControlPointSequence") or []
        first = cps[0] if cps else Dataset()
        declared = _int(b, "NumberOfControlPoints")
        if declared is not None and declared != len(cps):
            issues.append(f"{name}: beam {bn} declares {declared} control points, has {len(cps)}")
        beams_out.append(Beam(bn, text(b, "BeamName") or text(b, "BeamDescription"), text(b, "BeamType"),
                              text(b, "RadiationType"), number(first, "NominalBeamEnergy"),
                              number(first, "GantryAngle"), number(first, "BeamLimitingDeviceAngle"),
                              number(first, "PatientSupportAngle"), meterset.get(bn),
                              text(b, "PrimaryDosimeterUnit"), len(cps), text(b, "TreatmentMachineName"),
                              beam_dose.get(bn)))
    for bn in sorted(set(meterset) - {b.number for b in beams_out}):
        issues.append(f"{name}: the fraction scheme references beam {bn}, which the plan does not define")
    rs = tuple(text(r, "ReferencedSOPInstanceUID") for r in ds.get("ReferencedStructureSetSequence") or [])
    doses = tuple(text(r, "ReferencedSOPInstanceUID") for r in ds.get("ReferencedDoseSequence") or [])
    plans = tuple(text(r, "ReferencedSOPInstanceUID") for r in ds.get("ReferencedRTPlanSequence") or [])
    if text(ds, "RTPlanGeometry") == "PATIENT" and not rs:
        issues.append(f"{name}: RT Plan Geometry PATIENT but no Referenced Structure Set Sequence")
    return PlanSummary(name, text(ds, "SOPInstanceUID"), text(ds, "RTPlanLabel"), text(ds, "RTPlanName"),
                       text(ds, "PlanIntent"), text(ds, "RTPlanGeometry"), text(ds, "RTPlanDate"),
                       text(ds, "FrameOfReferenceUID"), text(ds, "StudyInstanceUID"), refs, tuple(groups),
                       tuple(beams_out), rs, doses, plans, issues)


def _int(ds: Dataset, keyword: str) -> int | None:
    value = number(ds, keyword)
    return None if value is None else int(value)
