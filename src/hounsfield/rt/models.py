"""Index tables of the RT objects (issue 13): what each RT Structure Set, RT Plan and RT Dose references, recorded
at ingest from the header JSON the indexer already has, so that a study's RT set is found without reading a
file; and the DVHs computed for the REST API, kept until either object changes.

``rt_references`` has one row per reference an RT object makes (and one row with an empty ``ref_kind`` for an
object that references nothing):

* RTSTRUCT → ``series``: each RT Referenced Series (PS3.3 C.8.8.5), with the Frame of Reference it is under;
* RTPLAN → ``structure_set`` (Referenced Structure Set Sequence), ``dose`` (Referenced Dose Sequence),
  ``plan`` (Referenced RT Plan Sequence) (PS3.3 C.8.8.9);
* RTDOSE → ``plan`` (Referenced RT Plan Sequence), ``structure_set`` (Referenced Structure Set Sequence)
  (PS3.3 C.8.8.3).

``rt_dvh_cache`` keeps one computed DVH (its JSON) per structure set, dose, ROI and method, with the SHA-256 of
both files it came from: a replaced file (another digest) is never answered from it, and the archive deletes
the rows of an object it deletes.
"""

from __future__ import annotations

import json
import zlib
from datetime import datetime
from typing import Any, Iterable

from sqlalchemy import Connection, DateTime, Integer, LargeBinary, String, delete, insert, or_, select
from sqlalchemy.orm import Mapped, mapped_column

from hounsfield.models import Base, Instance, utcnow

#: SOP Class UIDs whose instances get rows here (PS3.4 B.5), and the kind each one is.
RT_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.481.3": "RTSTRUCT",
    "1.2.840.10008.5.1.4.1.1.481.2": "RTDOSE",
    "1.2.840.10008.5.1.4.1.1.481.5": "RTPLAN",
    "1.2.840.10008.5.1.4.1.1.481.8": "RTPLAN",  # RT Ion Plan
}


class RTReference(Base):
    __tablename__ = "rt_references"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64), index=True)  # the RT object
    kind: Mapped[str] = mapped_column(String(16))  # RTSTRUCT, RTDOSE, RTPLAN
    study_instance_uid: Mapped[str] = mapped_column(String(64), index=True)
    series_instance_uid: Mapped[str] = mapped_column(String(64), default="")  # the RT object's own series
    frame_of_reference_uid: Mapped[str] = mapped_column(String(64), default="")
    label: Mapped[str] = mapped_column(String(64), default="")  # Structure Set Label, RT Plan Label, Dose Comment
    ref_kind: Mapped[str] = mapped_column(String(16), default="")  # series, structure_set, plan, dose; "": none
    ref_uid: Mapped[str] = mapped_column(String(64), index=True, default="")
    ref_frame_of_reference_uid: Mapped[str] = mapped_column(String(64), default="")


class RTDVHCache(Base):
    __tablename__ = "rt_dvh_cache"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    structure_set_uid: Mapped[str] = mapped_column(String(64), index=True)
    dose_uid: Mapped[str] = mapped_column(String(64), index=True)
    roi_number: Mapped[int] = mapped_column(Integer)
    method: Mapped[str] = mapped_column(String(16))
    structure_set_sha256: Mapped[str] = mapped_column(String(64))
    dose_sha256: Mapped[str] = mapped_column(String(64))
    result: Mapped[bytes] = mapped_column(LargeBinary)  # zlib-compressed JSON
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


# ---- from the header JSON (PS3.18 F.2) ------------------------------------------------------------------------
def _items(ds: dict[str, Any], tag: str) -> list[dict[str, Any]]:
    return [i for i in (ds.get(tag) or {}).get("Value") or [] if isinstance(i, dict)]


def _text(ds: dict[str, Any], tag: str) -> str:
    values = (ds.get(tag) or {}).get("Value") or []
    return str(values[0]).strip() if values and values[0] is not None else ""


_FRAME_OF_REFERENCE, _SERIES, _REF_SOP = "00200052", "0020000E", "00081155"
_REFERENCED = {"structure_set": "300C0060", "dose": "300C0080", "plan": "300C0002"}


def reference_rows(header: dict[str, Any], sop_class_uid: str) -> list[dict[str, Any]]:
    """The ``rt_references`` rows of one RT object from its header JSON; [] when it is no RT object."""
    kind = RT_SOP_CLASSES.get(sop_class_uid)
    if kind is None:
        return []
    label_tag = {"RTSTRUCT": "30060002", "RTPLAN": "300A0002", "RTDOSE": "30040006"}[kind]
    base = {"sop_instance_uid": _text(header, "00080018"), "kind": kind,
            "study_instance_uid": _text(header, "0020000D"), "series_instance_uid": _text(header, _SERIES),
            "frame_of_reference_uid": _text(header, _FRAME_OF_REFERENCE), "label": _text(header, label_tag)[:64]}
    refs: list[tuple[str, str, str]] = []
    if kind == "RTSTRUCT":
        for fr in _items(header, "30060010"):  # Referenced Frame of Reference Sequence
            frame = _text(fr, _FRAME_OF_REFERENCE)
            if not base["frame_of_reference_uid"]:
                base["frame_of_reference_uid"] = frame
            for study in _items(fr, "30060012"):  # RT Referenced Study Sequence
                for series in _items(study, "30060014"):  # RT Referenced Series Sequence
                    refs.append(("series", _text(series, _SERIES), frame))
        for roi in _items(header, "30060020"):  # Structure Set ROI Sequence: the ROIs' own frame
            if not base["frame_of_reference_uid"]:
                base["frame_of_reference_uid"] = _text(roi, "30060024")
    else:
        wanted = ("structure_set", "dose", "plan") if kind == "RTPLAN" else ("plan", "structure_set")
        for ref_kind in wanted:
            for item in _items(header, _REFERENCED[ref_kind]):
                refs.append((ref_kind, _text(item, _REF_SOP), ""))
    rows = [{**base, "ref_kind": k, "ref_uid": u[:64], "ref_frame_of_reference_uid": f[:64]} for k, u, f in refs if u]
    return rows or [{**base, "ref_kind": "", "ref_uid": "", "ref_frame_of_reference_uid": ""}]


def index_references(conn: Connection, header: dict[str, Any], sop_class_uid: str, *, replace: bool) -> None:
    """The indexer's hook (``Archive._index``, RT SOP classes only): the object's rows, replacing earlier ones
    (and the DVHs computed from the earlier file) when the instance is stored again."""
    rows = reference_rows(header, sop_class_uid)
    if not rows:
        return
    uid = rows[0]["sop_instance_uid"]
    if replace:
        forget_uids(conn, [uid])
    conn.execute(insert(RTReference), rows)


def forget_uids(conn: Connection, uids: Iterable[str]) -> None:
    uids = list(uids)
    for start in range(0, len(uids), 500):
        chunk = uids[start:start + 500]
        conn.execute(delete(RTReference).where(RTReference.sop_instance_uid.in_(chunk)))
        conn.execute(delete(RTDVHCache).where(or_(RTDVHCache.structure_set_uid.in_(chunk),
                                                  RTDVHCache.dose_uid.in_(chunk))))


def forget_instances(conn: Connection, instance_ids: list[int]) -> None:
    """The archive's delete cascade: the rows of the instances (by index id) about to be deleted."""
    uids = conn.execute(select(Instance.sop_instance_uid).where(Instance.id.in_(instance_ids),
                                                                Instance.sop_class_uid.in_(list(RT_SOP_CLASSES)))
                        ).scalars().all()
    if uids:
        forget_uids(conn, uids)


def unpack(blob: bytes) -> dict[str, Any]:
    return json.loads(zlib.decompress(blob))
