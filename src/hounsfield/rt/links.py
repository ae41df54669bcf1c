"""The RT set of a study: plan → structure set → image series, dose → plan, from the objects' references.

The references followed: an RT Plan's Referenced Structure Set Sequence and Referenced Dose Sequence
(PS3.3 C.8.8.9), an RT Dose's Referenced RT Plan Sequence (PS3.3 C.8.8.3), an RT Structure Set's RT
Referenced Series and Contour Image Sequences (PS3.3 C.8.8.5, C.8.8.6), and the Frame of Reference UID
every object must share with the images. A reference to an object that is not among those given is a
:attr:`RTSet.problems` entry naming the object and what it misses; it never raises, and a link that
resolves nowhere is recorded as such (``target`` None), never silently dropped.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field

from pydicom.dataset import Dataset

from hounsfield.errors import HounsfieldError
from hounsfield.imaging.series import dicom_files
from hounsfield.rt.common import Source, object_name, read_rt, text
from hounsfield.rt.plan import PlanSummary, summarize_plan
from hounsfield.rt.structure import StructureSet


@dataclass(frozen=True)
class Link:
    """``source`` (an object's name) references ``kind`` ``uid``; ``target`` is what it resolved to."""

    source: str
    kind: str  # "structure set", "image series", "plan", "dose"
    uid: str
    target: str | None


@dataclass
class SeriesInfo:
    series_uid: str
    frame_of_reference_uid: str
    modality: str
    paths: list[str] = field(default_factory=list)
    sop_instance_uids: set[str] = field(default_factory=set)


@dataclass
class RTSet:
    """What was given, by UID, and the links between the objects."""

    series: dict[str, SeriesInfo] = field(default_factory=dict)
    structure_sets: dict[str, StructureSet] = field(default_factory=dict)
    plans: dict[str, PlanSummary] = field(default_factory=dict)
    doses: dict[str, Dataset] = field(default_factory=dict)  # headers, by SOP Instance UID
    links: list[Link] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def _target(self, source: str, kind: str) -> list[Link]:
        return [link for link in self.links if link.source == source and link.kind == kind]

    def structure_set_of_plan(self, plan_uid: str) -> StructureSet | None:
        plan = self.plans.get(plan_uid)
        if plan is None:
            return None
        for uid in plan.structure_set_uids:
            if uid in self.structure_sets:
                return self.structure_sets[uid]
        return None

    def series_of_structure_set(self, rs_uid: str) -> SeriesInfo | None:
        rs = self.structure_sets.get(rs_uid)
        if rs is None:
            return None
        for link in self._target(rs.name, "image series"):
            if link.target is not None and link.uid in self.series:
                return self.series[link.uid]
        return None

    def plan_of_dose(self, dose_uid: str) -> PlanSummary | None:
        ds = self.doses.get(dose_uid)
        if ds is None:
            return None
        for ref in ds.get("ReferencedRTPlanSequence") or []:
            uid = text(ref, "ReferencedSOPInstanceUID")
            if uid in self.plans:
                return self.plans[uid]
        return None

    def doses_of_plan(self, plan_uid: str) -> list[Dataset]:
        return [ds for ds in self.doses.values()
                if any(text(r, "ReferencedSOPInstanceUID") == plan_uid for r in ds.get("ReferencedRTPlanSequence") or [])]


def resolve(sources: Iterable[Source | os.PathLike[str]]) -> RTSet:
    """Read the headers of ``sources`` (files, folders, Datasets) and resolve their references.

    Unreadable files and files that are neither RT objects nor images are problems, not errors.
    """
    out = RTSet()
    datasets: list[Dataset] = []
    for item in sources:
        paths: list[Source] = [item] if isinstance(item, (Dataset, bytes)) else list(dicom_files([item]))
        for path in paths:
            try:
                datasets.append(read_rt(path, pixels=False))
            except HounsfieldError as exc:
                out.problems.append(str(exc))
    for ds in datasets:
        _add(out, ds)
    _link(out)
    return out


def _add(out: RTSet, ds: Dataset) -> None:
    name = object_name(ds)
    modality = text(ds, "Modality")
    uid = text(ds, "SOPInstanceUID")
    try:
        if modality == "RTSTRUCT":
            _keep(out, out.structure_sets, uid, StructureSet.from_dataset(ds), name)
        elif modality == "RTPLAN":
            _keep(out, out.plans, uid, summarize_plan(ds), name)
        elif modality == "RTDOSE":
            _keep(out, out.doses, uid, ds, name)
        elif "ImagePositionPatient" in ds or "SeriesInstanceUID" in ds and "Rows" in ds:
            series_uid = text(ds, "SeriesInstanceUID")
            info = out.series.setdefault(series_uid, SeriesInfo(series_uid, text(ds, "FrameOfReferenceUID"), modality))
            info.paths.append(name)
            info.sop_instance_uids.add(uid)
        else:
            out.problems.append(f"{name}: neither an RT object nor an image ({modality or 'no Modality'}); ignored")
    except HounsfieldError as exc:
        out.problems.append(str(exc))


def _keep(out: RTSet, table: dict, uid: str, value: object, name: str) -> None:  # noqa: ANN001
    if uid in table:
        other = table[uid]
        other_name = getattr(other, "name", None) or object_name(other)
        out.problems.append(f"{name}: same SOP Instance UID {uid} as {other_name}; the first one is kept")
        return
    table[uid] = value


def _link(out: RTSet) -> None:
    for rs in out.structure_sets.values():
        _link_structure_set(out, rs)
    for plan in out.plans.values():
        if not plan.structure_set_uids and plan.geometry != "TREATMENT_DEVICE":
            out.problems.append(f"{plan.name}: references no structure set")
        for uid in plan.structure_set_uids:
            rs = out.structure_sets.get(uid)
            out.links.append(Link(plan.name, "structure set", uid, rs.name if rs else None))
            if rs is None:
                out.problems.append(f"{plan.name}: references RT Structure Set {uid}, which is not among the files")
            elif plan.frame_of_reference_uid and rs.frame_of_reference_uid and \
                    plan.frame_of_reference_uid != rs.frame_of_reference_uid:
                out.problems.append(f"{plan.name}: Frame of Reference {plan.frame_of_reference_uid} differs from "
                                    f"{rs.name}'s {rs.frame_of_reference_uid}")
        for uid in plan.dose_uids:
            dose = out.doses.get(uid)
            out.links.append(Link(plan.name, "dose", uid, object_name(dose) if dose is not None else None))
    for uid, ds in out.doses.items():
        name = object_name(ds)
        refs = [text(r, "ReferencedSOPInstanceUID") for r in ds.get("ReferencedRTPlanSequence") or []]
        if not refs:
            out.problems.append(f"{name}: references no RT Plan (no Referenced RT Plan Sequence)")
        for ref in refs:
            plan = out.plans.get(ref)
            out.links.append(Link(name, "plan", ref, plan.name if plan else None))
            if plan is None:
                out.problems.append(f"{name}: references RT Plan {ref}, which is not among the files")
            elif plan.frame_of_reference_uid and text(ds, "FrameOfReferenceUID") and \
                    plan.frame_of_reference_uid != text(ds, "FrameOfReferenceUID"):
                out.problems.append(f"{name}: Frame of Reference {text(ds, 'FrameOfReferenceUID')} differs from "
                                    f"{plan.name}'s {plan.frame_of_reference_uid}")


def _link_structure_set(out: RTSet, rs: StructureSet) -> None:
    wanted = rs.referenced_image_uids
    if not rs.referenced_series:
        found = [s for s in out.series.values() if s.sop_instance_uids & wanted]
        if found:
            for s in found:
                out.links.append(Link(rs.name, "image series", s.series_uid, s.paths[0]))
        else:
            out.links.append(Link(rs.name, "image series", "", None))
            out.problems.append(f"{rs.name}: names no image series (no RT Referenced Series) and none of the "
                                f"{len(wanted)} images its contours reference is among the files")
        return
    for ref in rs.referenced_series:
        series = out.series.get(ref.series_uid)
        out.links.append(Link(rs.name, "image series", ref.series_uid, series.paths[0] if series else None))
        if series is None:
            out.problems.append(f"{rs.name}: references image series {ref.series_uid} "
                                f"({len(ref.image_uids)} images), which is not among the files")
            continue
        missing = set(ref.image_uids) - series.sop_instance_uids
        if missing:
            out.problems.append(f"{rs.name}: {len(missing)} of the {len(ref.image_uids)} images it references in "
                                f"series {ref.series_uid} are not among the files")
        frame = rs.frame_of_reference_uid
        if frame and series.frame_of_reference_uid and frame != series.frame_of_reference_uid:
            out.problems.append(f"{rs.name}: Frame of Reference {frame} differs from the one of series "
                                f"{ref.series_uid} ({series.frame_of_reference_uid}): the contours cannot be "
                                "placed on those images")
