"""Query the index at PATIENT, STUDY, SERIES or IMAGE level: the engine behind C-FIND and QIDO-RS.

Keys held as columns are matched in SQL (``matching.sql_*``); any other non-empty key is matched in Python on
the stored DICOM JSON (``matching.match_dataset``), so every attribute the index keeps can be a filter.
Answers are built from the stored DICOM JSON, so they carry the values exactly as received.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

from pydicom import datadict
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import Tag
from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from hounsfield import matching
from hounsfield.dicomfile import unpack_json
from hounsfield.errors import InvalidQuery
from hounsfield.models import Instance, Patient, Series, Study

LEVELS = ("PATIENT", "STUDY", "SERIES", "IMAGE")
LEVEL_ALIASES = {"INSTANCE": "IMAGE"}


@dataclass(frozen=True)
class Key:
    """A matching key held as an index column, with the level it belongs to."""

    level: str
    column: Any
    vr: str


KEYS: dict[str, Key] = {
    "PatientID": Key("PATIENT", Patient.patient_id, "LO"),
    "IssuerOfPatientID": Key("PATIENT", Patient.issuer_of_patient_id, "LO"),
    "PatientName": Key("PATIENT", Patient.patient_name, "PN"),
    "PatientBirthDate": Key("PATIENT", Patient.patient_birth_date, "DA"),
    "PatientSex": Key("PATIENT", Patient.patient_sex, "CS"),
    "StudyInstanceUID": Key("STUDY", Study.study_instance_uid, "UI"),
    "StudyDate": Key("STUDY", Study.study_date, "DA"),
    "StudyTime": Key("STUDY", Study.study_time, "TM"),
    "AccessionNumber": Key("STUDY", Study.accession_number, "SH"),
    "StudyID": Key("STUDY", Study.study_id, "SH"),
    "StudyDescription": Key("STUDY", Study.study_description, "LO"),
    "ReferringPhysicianName": Key("STUDY", Study.referring_physician_name, "PN"),
    "SeriesInstanceUID": Key("SERIES", Series.series_instance_uid, "UI"),
    "Modality": Key("SERIES", Series.modality, "CS"),
    "SeriesNumber": Key("SERIES", Series.series_number, "IS"),
    "SeriesDescription": Key("SERIES", Series.series_description, "LO"),
    "BodyPartExamined": Key("SERIES", Series.body_part_examined, "CS"),
    "SeriesDate": Key("SERIES", Series.series_date, "DA"),
    "SeriesTime": Key("SERIES", Series.series_time, "TM"),
    "SOPInstanceUID": Key("IMAGE", Instance.sop_instance_uid, "UI"),
    "SOPClassUID": Key("IMAGE", Instance.sop_class_uid, "UI"),
}
DATE_TIME_PAIRS = (("StudyDate", "StudyTime"), ("SeriesDate", "SeriesTime"))
# Attributes computed from the index rather than stored (PS3.4 C.6.1.1 / C.6.2.1 optional keys).
COMPUTED = {
    "QueryRetrieveLevel", "SpecificCharacterSet", "RetrieveAETitle", "InstanceAvailability",
    "ModalitiesInStudy", "SOPClassesInStudy", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances",
    "NumberOfSeriesRelatedInstances", "NumberOfPatientRelatedStudies", "NumberOfPatientRelatedSeries",
    "NumberOfPatientRelatedInstances",
}
_LEVEL_TABLE = {"PATIENT": Patient, "STUDY": Study, "SERIES": Series, "IMAGE": Instance}


def normalize_level(level: str | None) -> str:
    value = LEVEL_ALIASES.get(str(level or "").strip().upper(), str(level or "").strip().upper())
    if not value:
        raise InvalidQuery("QueryRetrieveLevel (0008,0052) is missing")
    if value not in LEVELS:
        raise InvalidQuery(f"QueryRetrieveLevel {level!r} is not PATIENT, STUDY, SERIES or IMAGE")
    return value


def _level_rank(level: str) -> int:
    return LEVELS.index(level)


@dataclass
class Match:
    """One answer: the stored DICOM JSON of its level plus the computed attributes."""

    level: str
    attrs: dict[str, Any]
    computed: dict[str, Any] = field(default_factory=dict)

    def json(self, tags: list[str] | None = None) -> dict[str, Any]:
        """DICOM JSON restricted to ``tags`` (8-hex-digit strings), or everything when None."""
        base = dict(self.attrs) if tags is None else {t: self.attrs[t] for t in tags if t in self.attrs}
        for keyword, value in self.computed.items():
            tag = f"{datadict.tag_for_keyword(keyword):08X}"
            if tags is None or tag in tags:
                vr = datadict.dictionary_VR(tag)
                base[tag] = {"vr": vr, "Value": value} if value not in (None, [], "") else {"vr": vr}
        return base

    def dataset(self, identifier: Dataset) -> Dataset:
        """The C-FIND answer to ``identifier``: each requested key, zero-length where the index has no value."""
        tags = [f"{int(elem.tag):08X}" for elem in identifier if elem.tag.group not in (0x0000, 0x0002)]
        if "00080005" in self.attrs:
            tags.append("00080005")
        selected = {t: v for t, v in self.json(tags).items() if "BulkDataURI" not in v and "InlineBinary" not in v}
        answer = Dataset.from_json(selected)
        for elem in identifier:
            if elem.tag not in answer and elem.tag.group not in (0x0000, 0x0002):
                answer.add_new(elem.tag, elem.VR, None)
        return answer


class Query:
    """A parsed identifier: SQL conditions, Python-side filters and what the answers need."""

    def __init__(self, identifier: Dataset, *, model: str = "STUDY", level: str | None = None,
                 fuzzy_pn: bool = False) -> None:
        self.level = normalize_level(level if level is not None else identifier.get("QueryRetrieveLevel"))
        if model == "STUDY" and self.level == "PATIENT":
            raise InvalidQuery("the Study Root model has no PATIENT level")
        self.identifier = identifier
        self.fuzzy_pn = fuzzy_pn
        self.conditions: list[Any] = []
        self.python_filter = Dataset()
        self.requested = {elem.keyword for elem in identifier if elem.keyword}
        self._parse()

    def _value(self, keyword: str) -> Any:
        """The key's value as ``matching`` takes it (a list when multi-valued), None when universal/absent."""
        if keyword not in self.identifier:
            return None
        value = self.identifier[keyword].value
        if isinstance(value, MultiValue):
            value = [str(v) for v in value]
        if value is None or value == "" or value == []:
            return None
        return value

    def _parse(self) -> None:
        rank = _level_rank(self.level)
        paired: set[str] = set()
        for date_kw, time_kw in DATE_TIME_PAIRS:
            d, t = self._value(date_kw), self._value(time_kw)
            if d is not None and t is not None and _level_rank(KEYS[date_kw].level) <= rank:
                cond = matching.sql_datetime_condition(KEYS[date_kw].column, KEYS[time_kw].column, d, t)
                if cond is not None:
                    self.conditions.append(cond)
                paired |= {date_kw, time_kw}
        for elem in self.identifier:
            kw = elem.keyword
            if not kw or kw in paired or elem.tag.group in (0x0000, 0x0002) or kw in ("QueryRetrieveLevel",
                                                                                     "SpecificCharacterSet"):
                continue
            value = self._value(kw)
            if value is None:
                continue
            key = KEYS.get(kw)
            if key is not None:
                if _level_rank(key.level) > rank:
                    continue  # a key below the query level is not a matching key here (PS3.4 C.4.1.2.1)
                cond = matching.sql_condition(key.column, key.vr, value, fuzzy_pn=self.fuzzy_pn)
                if cond is not None:
                    self.conditions.append(cond)
            elif kw == "ModalitiesInStudy":
                self._modalities_condition(value)
            elif kw == "InstanceNumber":
                self._instance_number_condition(value)
            elif kw in COMPUTED:
                continue
            else:
                self.python_filter.add(elem)

    def _modalities_condition(self, value: Any) -> None:
        if _level_rank(self.level) < _level_rank("STUDY"):
            return
        cond = matching.sql_condition(Series.modality, "CS", value)
        if cond is not None:
            self.conditions.append(select(Series.id).where(Series.study_fk == Study.id, cond).exists())

    def _instance_number_condition(self, value: Any) -> None:
        if self.level != "IMAGE":
            return
        try:
            numbers = [int(v) for v in (value if isinstance(value, list) else str(value).split("\\"))]
        except ValueError as exc:
            raise InvalidQuery(f"InstanceNumber {value!r} is not an integer") from exc
        self.conditions.append(Instance.instance_number.in_(numbers))

    def statement(self) -> Select:
        level = self.level
        if level == "PATIENT":
            first_study = (
                select(Study.attrs).where(Study.patient_fk == Patient.id).order_by(Study.id).limit(1)
                .scalar_subquery()
            )
            q = select(Patient, first_study.label("attrs"))
        elif level == "STUDY":
            q = select(Study, Study.attrs).join(Patient, Study.patient_fk == Patient.id)
        elif level == "SERIES":
            q = (select(Series, Series.attrs).join(Study, Series.study_fk == Study.id)
                 .join(Patient, Study.patient_fk == Patient.id))
        else:
            q = (select(Instance, Instance.header).join(Series, Instance.series_fk == Series.id)
                 .join(Study, Series.study_fk == Study.id).join(Patient, Study.patient_fk == Patient.id))
        table = _LEVEL_TABLE[level]
        order = [Instance.series_fk, Instance.instance_number, Instance.id] if level == "IMAGE" else [table.id]
        return q.where(*self.conditions).order_by(*order)


    def instances_statement(self) -> Select:
        """The stored instances under the matching entities (for C-GET / C-MOVE / WADO)."""
        return (
            select(Instance, Series.series_instance_uid, Study.study_instance_uid)
            .join(Series, Instance.series_fk == Series.id)
            .join(Study, Series.study_fk == Study.id)
            .join(Patient, Study.patient_fk == Patient.id)
            .where(*self.conditions)
            .order_by(Series.id, Instance.instance_number, Instance.id)
        )


def _counts(s: Session, level: str, row: Any, requested: set[str]) -> dict[str, Any]:
    """The computed attributes the identifier asked for."""
    out: dict[str, Any] = {}
    if level == "PATIENT":
        studies = select(Study.id).where(Study.patient_fk == row.id)
        if "NumberOfPatientRelatedStudies" in requested:
            out["NumberOfPatientRelatedStudies"] = [s.scalar(select(func.count()).select_from(studies.subquery()))]
        series = select(Series.id).where(Series.study_fk.in_(studies))
        if "NumberOfPatientRelatedSeries" in requested:
            out["NumberOfPatientRelatedSeries"] = [s.scalar(select(func.count()).select_from(series.subquery()))]
        if "NumberOfPatientRelatedInstances" in requested:
            out["NumberOfPatientRelatedInstances"] = [
                s.scalar(select(func.count(Instance.id)).where(Instance.series_fk.in_(series)))]
    elif level == "STUDY":
        series = select(Series.id).where(Series.study_fk == row.id)
        if "NumberOfStudyRelatedSeries" in requested:
            out["NumberOfStudyRelatedSeries"] = [s.scalar(select(func.count()).select_from(series.subquery()))]
        if "NumberOfStudyRelatedInstances" in requested:
            out["NumberOfStudyRelatedInstances"] = [
                s.scalar(select(func.count(Instance.id)).where(Instance.series_fk.in_(series)))]
        if "ModalitiesInStudy" in requested:
            mods = s.scalars(select(Series.modality).distinct().where(Series.study_fk == row.id)).all()
            out["ModalitiesInStudy"] = sorted(m for m in mods if m)
        if "SOPClassesInStudy" in requested:
            out["SOPClassesInStudy"] = sorted(s.scalars(
                select(Instance.sop_class_uid).distinct().where(Instance.series_fk.in_(series))).all())
    elif level == "SERIES" and "NumberOfSeriesRelatedInstances" in requested:
        out["NumberOfSeriesRelatedInstances"] = [
            s.scalar(select(func.count(Instance.id)).where(Instance.series_fk == row.id))]
    if "InstanceAvailability" in requested:
        out["InstanceAvailability"] = ["ONLINE"]
    return out


def run(s: Session, query: Query, *, retrieve_ae: str = "", offset: int = 0,
        limit: int | None = None) -> Iterator[Match]:
    """Yield the answers to ``query`` in a stable order; ``offset``/``limit`` page through them."""
    stmt = query.statement()
    filtered = len(query.python_filter) > 0
    if not filtered:
        stmt = stmt.offset(offset).limit(limit) if limit is not None else stmt.offset(offset)
    skipped = produced = 0
    for row, blob in s.execute(stmt):
        attrs = unpack_json(blob) if blob else {}
        if filtered and not _python_match(query, attrs):
            continue
        if filtered and skipped < offset:
            skipped += 1
            continue
        computed = _counts(s, query.level, row, query.requested)
        computed["QueryRetrieveLevel"] = [query.level]
        if retrieve_ae:
            computed["RetrieveAETitle"] = [retrieve_ae]
        yield Match(query.level, attrs, computed)
        produced += 1
        if filtered and limit is not None and produced >= limit:
            return


def _python_match(query: Query, attrs: dict[str, Any]) -> bool:
    tags = [f"{int(e.tag):08X}" for e in query.python_filter]
    candidate = Dataset.from_json({t: attrs[t] for t in tags if t in attrs and "BulkDataURI" not in attrs[t]})
    return matching.match_dataset(query.python_filter, candidate, fuzzy_pn=query.fuzzy_pn)


def tag_key(keyword_or_tag: str) -> str:
    """'PatientID' or '00100020' or '0010,0020' → '00100020' (QIDO includefield / attribute parameters)."""
    text = keyword_or_tag.strip()
    if datadict.tag_for_keyword(text) is not None:
        return f"{datadict.tag_for_keyword(text):08X}"
    try:
        return f"{int(Tag(text.replace(',', '').replace('(', '').replace(')', ''), )):08X}"
    except (ValueError, OverflowError) as exc:
        raise InvalidQuery(f"unknown attribute {keyword_or_tag!r}") from exc
