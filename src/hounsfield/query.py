"""Query the index at PATIENT, STUDY, SERIES or IMAGE level: the engine behind C-FIND and QIDO-RS.

Keys held as columns are matched in SQL (``matching.sql_*``); any other non-empty key is matched in Python on
the stored DICOM JSON (``matching.match_dataset``), so every attribute the index keeps can be a filter.
Answers are built from the stored DICOM JSON, so they carry the values exactly as received.

Patient demographics (PatientName, PatientBirthDate, PatientSex and every other group-0010 attribute) are the
study's own: two studies under one Patient ID may disagree (an ID reused by another system, a name corrected
later), and an answer must never contradict the query it matched.

* STUDY, SERIES and IMAGE level, in both models: the keys match what the study's instances say (the study row's
  columns and stored JSON, PS3.4 C.6.2: patient attributes are attributes of the study), and the answers carry
  those same values — a series or instance answer takes its group-0010 attributes from its study.
* PATIENT level (Patient Root): one answer per patient record (Patient ID + Issuer, its unique key, C.6.1.1.2).
  The record matches when one of its studies matches every patient-level key; the answer carries that study's
  demographics (of several, the one with the latest Study Date and Time, then the last stored), so it never
  contradicts the query. Without demographic keys that is the patient's latest study.
* Study-level attributes of a series or instance answer still come from the series' or instance's own JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import islice
from typing import Any, Collection, Iterable, Iterator

from pydicom import datadict
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import Tag
from sqlalchemy import Select, distinct, func, select
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
    per_study: bool = False  # a patient attribute held per study (``models.Study``)


KEYS: dict[str, Key] = {
    "PatientID": Key("PATIENT", Patient.patient_id, "LO"),
    "IssuerOfPatientID": Key("PATIENT", Patient.issuer_of_patient_id, "LO"),
    "PatientName": Key("PATIENT", Study.patient_name, "PN", per_study=True),
    "PatientBirthDate": Key("PATIENT", Study.patient_birth_date, "DA", per_study=True),
    "PatientSex": Key("PATIENT", Study.patient_sex, "CS", per_study=True),
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
PATIENT_GROUP = "0010"  # tags of the Patient modules: the study's own values in every answer
# The study that speaks for a patient when several match: the latest by Study Date and Time, then the last stored.
_PREFERRED_STUDY = (Study.study_date.desc(), Study.study_time.desc(), Study.id.desc())


def normalize_level(level: str | None) -> str:
    value = LEVEL_ALIASES.get(str(level or "").strip().upper(), str(level or "").strip().upper())
    if not value:
        raise InvalidQuery("QueryRetrieveLevel (0008,0052) is missing")
    if value not in LEVELS:
        raise InvalidQuery(f"QueryRetrieveLevel {level!r} is not PATIENT, STUDY, SERIES or IMAGE")
    return value


def _level_rank(level: str) -> int:
    return LEVELS.index(level)


def answer_tags(identifier: Dataset) -> set[str]:
    """The stored attributes a C-FIND answer to ``identifier`` carries: its keys and the character set."""
    return {f"{int(elem.tag):08X}" for elem in identifier if elem.tag.group not in (0x0000, 0x0002)} | {"00080005"}


@dataclass
class Match:
    """One answer: the stored DICOM JSON of its level plus the computed attributes."""

    level: str
    attrs: dict[str, Any]
    computed: dict[str, Any] = field(default_factory=dict)
    id: int | None = None  # the index row of the answer's level (patient, study, series, instance)

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
        selected = {t: v for t, v in self.json(sorted(answer_tags(identifier))).items()
                    if "BulkDataURI" not in v and "InlineBinary" not in v}
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
        self.study_conditions: list[Any] = []  # PATIENT level: what one study of the patient must match
        self.python_filter = Dataset()
        self.requested = {elem.keyword for elem in identifier if elem.keyword}
        self.answer_tags = answer_tags(identifier)
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
                    (self.study_conditions if key.per_study and self.level == "PATIENT"
                     else self.conditions).append(cond)
            elif kw == "ModalitiesInStudy":
                self._modalities_condition(value)
            elif kw == "InstanceNumber":
                self._instance_number_condition(value)
            elif kw in COMPUTED:
                continue
            else:
                self.python_filter.add(elem)

    def require_equal(self, keyword: str, value: str) -> None:
        """Match an index key by equality alone, without wildcards, UID lists or ranges: a REST URL names one
        record, and ``*`` there must not name an arbitrary one."""
        self.conditions.append(KEYS[keyword].column == value)

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
        if any(not -2**31 <= n < 2**31 for n in numbers):  # IS range (PS3.5 6.2); beyond, SQL would overflow
            raise InvalidQuery(f"InstanceNumber {value!r} is out of range -2147483648 to 2147483647")
        self.conditions.append(Instance.instance_number.in_(numbers))

    def statement(self) -> Select:
        """(id, stored DICOM JSON) of the matching entities at the query level, in a stable order; below STUDY
        level with the study's id too (``_matching`` answers with the study's patient attributes)."""
        level = self.level
        if level == "PATIENT" and self.python_filter:
            # Each matching study of each patient, the preferred first: ``_matching`` answers a patient with the
            # first of its studies that also passes the Python-side filter.
            q = (select(Patient.id, Study.attrs).join(Study, Study.patient_fk == Patient.id)
                 .where(*self.study_conditions))
            return q.where(*self.conditions).order_by(Patient.id, *_PREFERRED_STUDY)
        if level == "PATIENT":
            speaking = (select(Study.attrs).where(Study.patient_fk == Patient.id, *self.study_conditions)
                        .order_by(*_PREFERRED_STUDY).limit(1).scalar_subquery())
            q = select(Patient.id, speaking).where(*self._patient_match())
        elif level == "STUDY":
            q = select(Study.id, Study.attrs).join(Patient, Study.patient_fk == Patient.id)
        elif level == "SERIES":
            q = (select(Series.id, Series.attrs, Series.study_fk).join(Study, Series.study_fk == Study.id)
                 .join(Patient, Study.patient_fk == Patient.id))
        else:
            q = (select(Instance.id, Instance.header, Series.study_fk).join(Series, Instance.series_fk == Series.id)
                 .join(Study, Series.study_fk == Study.id).join(Patient, Study.patient_fk == Patient.id))
        table = _LEVEL_TABLE[level]
        order = [Instance.series_fk, Instance.instance_number, Instance.id] if level == "IMAGE" else [table.id]
        return q.where(*self.conditions).order_by(*order)

    def _patient_match(self) -> list[Any]:
        """PATIENT level: the patient has a study matching every patient-level key (none when there are none)."""
        if not self.study_conditions:
            return []
        return [Patient.id.in_(select(Study.patient_fk).where(*self.study_conditions).correlate(None))]

    def instances_statement(self) -> Select:
        """The stored instances under the matching entities (for C-GET / C-MOVE / WADO)."""
        return (
            select(Instance, Series.series_instance_uid, Study.study_instance_uid)
            .join(Series, Instance.series_fk == Series.id)
            .join(Study, Series.study_fk == Study.id)
            .join(Patient, Study.patient_fk == Patient.id)
            .where(*self.conditions, *self._patient_match())
            .order_by(Series.id, Instance.instance_number, Instance.id)
        )


CHUNK = 200  # answers whose computed attributes are fetched together


def computed_attributes(s: Session, level: str, ids: list[int], wanted: set[str]) -> dict[int, dict[str, Any]]:
    """The computed attributes in ``wanted`` (PS3.4 C.6.1.1.5, C.6.2.1.2) of the entities ``ids`` at ``level``,
    a few grouped queries for all of them."""
    out: dict[int, dict[str, Any]] = {i: {} for i in ids}
    if not ids:
        return out
    if "InstanceAvailability" in wanted:
        for values in out.values():
            values["InstanceAvailability"] = ["ONLINE"]
    if level == "PATIENT" and wanted & {"NumberOfPatientRelatedStudies", "NumberOfPatientRelatedSeries",
                                        "NumberOfPatientRelatedInstances"}:
        counts = s.execute(
            select(Study.patient_fk, func.count(distinct(Study.id)), func.count(distinct(Series.id)),
                   func.count(Instance.id))
            .select_from(Study).outerjoin(Series, Series.study_fk == Study.id)
            .outerjoin(Instance, Instance.series_fk == Series.id)
            .where(Study.patient_fk.in_(ids)).group_by(Study.patient_fk))
        found = {fk: (st, se, n) for fk, st, se, n in counts}
        for i, values in out.items():
            n_studies, n_series, n_inst = found.get(i, (0, 0, 0))
            _put(values, wanted, "NumberOfPatientRelatedStudies", n_studies)
            _put(values, wanted, "NumberOfPatientRelatedSeries", n_series)
            _put(values, wanted, "NumberOfPatientRelatedInstances", n_inst)
    elif level == "STUDY":
        if wanted & {"NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances"}:
            found = {fk: (se, n) for fk, se, n in s.execute(
                select(Series.study_fk, func.count(distinct(Series.id)), func.count(Instance.id))
                .select_from(Series).outerjoin(Instance, Instance.series_fk == Series.id)
                .where(Series.study_fk.in_(ids)).group_by(Series.study_fk))}
            for i, values in out.items():
                n_series, n_inst = found.get(i, (0, 0))
                _put(values, wanted, "NumberOfStudyRelatedSeries", n_series)
                _put(values, wanted, "NumberOfStudyRelatedInstances", n_inst)
        if "ModalitiesInStudy" in wanted:
            _put_sets(out, "ModalitiesInStudy", s.execute(
                select(Series.study_fk, Series.modality).distinct().where(Series.study_fk.in_(ids))))
        if "SOPClassesInStudy" in wanted:
            _put_sets(out, "SOPClassesInStudy", s.execute(
                select(Series.study_fk, Instance.sop_class_uid).distinct()
                .join(Instance, Instance.series_fk == Series.id).where(Series.study_fk.in_(ids))))
    elif level == "SERIES" and "NumberOfSeriesRelatedInstances" in wanted:
        found = dict(s.execute(select(Instance.series_fk, func.count(Instance.id))
                               .where(Instance.series_fk.in_(ids)).group_by(Instance.series_fk)).all())
        for i, values in out.items():
            _put(values, wanted, "NumberOfSeriesRelatedInstances", found.get(i, 0))
    return out


def _put(values: dict[str, Any], wanted: set[str], keyword: str, count: int) -> None:
    if keyword in wanted:
        values[keyword] = [count]


def _put_sets(out: dict[int, dict[str, Any]], keyword: str, pairs: Iterable[Any]) -> None:
    found: dict[int, set[str]] = {}
    for fk, value in pairs:
        if value:
            found.setdefault(fk, set()).add(value)
    for i, values in out.items():
        values[keyword] = sorted(found.get(i, ()))


def run(s: Session, query: Query, *, tags: Collection[str] | None = None, computed: set[str] | None = None,
        retrieve_ae: str = "", offset: int = 0, limit: int | None = None) -> Iterator[Match]:
    """Yield the answers to ``query`` in a stable order; ``offset``/``limit`` page through them.

    ``tags`` (8-hex-digit strings) are the stored attributes the answers need (None: all of them). Keeping
    only those matters: a stored header holds hundreds of attributes, and a page of answers holding them all
    is enough objects to set off the garbage collector's full collections, which then cost more than the
    query. ``computed`` names the computed attributes each answer carries (default: those the identifier asks
    for).
    """
    wanted = (query.requested if computed is None else set(computed)) & COMPUTED
    stmt = query.statement()
    filtered = len(query.python_filter) > 0
    if not filtered:
        stmt = stmt.offset(offset).limit(limit) if limit is not None else stmt.offset(offset)
    answers = _matching(s, s.execute(stmt), query, tags, offset if filtered else 0, limit if filtered else None)
    while chunk := list(islice(answers, CHUNK)):
        extra = computed_attributes(s, query.level, [i for i, _ in chunk], wanted)
        for i, attrs in chunk:
            values = extra[i]
            values["QueryRetrieveLevel"] = [query.level]
            if retrieve_ae:
                values["RetrieveAETitle"] = [retrieve_ae]
            yield Match(query.level, attrs, values, i)


def _matching(s: Session, rows: Iterable[Any], query: Query, tags: Collection[str] | None, offset: int,
              limit: int | None) -> Iterator[tuple[int, dict]]:
    """(id, DICOM JSON restricted to ``tags``) of the rows that pass the Python-side filter, after ``offset``,
    at most ``limit``.

    Rows are (id, blob) or, below STUDY level, (id, blob, study id): then the answer's patient attributes are
    its study's (when the answer or the filter needs any). Consecutive rows with one id (PATIENT level, one row
    per matching study) give at most one answer, from the first that passes."""
    skipped = produced = 0
    needs_patient = (tags is None or any(t.startswith(PATIENT_GROUP) for t in tags)
                     or any(e.tag.group == 0x0010 for e in query.python_filter))
    studies: dict[int, dict[str, Any]] = {}
    answered = None
    for i, blob, *study in rows:
        if i == answered:
            continue
        attrs = unpack_json(blob) if blob else {}
        if study and needs_patient:
            attrs = {t: v for t, v in attrs.items() if not t.startswith(PATIENT_GROUP)}
            attrs.update(_patient_attrs(s, study[0], studies))
        if query.python_filter and not _python_match(query, attrs):
            continue
        answered = i
        if skipped < offset:
            skipped += 1
            continue
        yield i, attrs if tags is None else {t: attrs[t] for t in tags if t in attrs}
        produced += 1
        if limit is not None and produced >= limit:
            return


def _patient_attrs(s: Session, study_id: int, cache: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """The group-0010 attributes of a study's stored JSON (the patient as the study's instances give it)."""
    found = cache.get(study_id)
    if found is None:
        if len(cache) >= 1000:
            cache.clear()
        blob = s.scalar(select(Study.attrs).where(Study.id == study_id))
        found = cache[study_id] = {t: v for t, v in (unpack_json(blob) if blob else {}).items()
                                   if t.startswith(PATIENT_GROUP)}
    return found


def demographics(s: Session, level: str, ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    """The demographic variants under the Patient ID of each PATIENT or STUDY row in ``ids``: one entry per
    distinct (PatientName, PatientBirthDate, PatientSex) among the patient's studies, as the index matches them
    (normalised), with the studies giving it; the first is the one of the patient's earliest stored study."""
    if level == "PATIENT":
        patient_of = {i: i for i in ids}
    elif level == "STUDY":
        patient_of = dict(s.execute(select(Study.id, Study.patient_fk).where(Study.id.in_(ids))).all())
    else:
        raise ValueError(f"no demographics at {level} level")
    variants: dict[int, dict[tuple[str, str, str], list[str]]] = {}
    if patient_of:
        for fk, name, birth, sex, uid in s.execute(
                select(Study.patient_fk, Study.patient_name, Study.patient_birth_date, Study.patient_sex,
                       Study.study_instance_uid)
                .where(Study.patient_fk.in_(sorted(set(patient_of.values())))).order_by(Study.id)):
            variants.setdefault(fk, {}).setdefault((name, birth, sex), []).append(uid)
    return {i: [{"PatientName": name, "PatientBirthDate": birth, "PatientSex": sex, "StudyInstanceUIDs": uids}
                for (name, birth, sex), uids in variants.get(patient_of.get(i), {}).items()] for i in ids}


def demographics_conflict(variants: list[dict[str, Any]]) -> bool:
    """Whether the studies under one Patient ID disagree: an attribute with two different non-empty values
    (a value missing from one study is no conflict)."""
    return any(len({v[k] for v in variants} - {""}) > 1 for k in ("PatientName", "PatientBirthDate", "PatientSex"))


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


def instance_headers(s: Session, study_uid: str, series_uid: str | None = None,
                     sop_uid: str | None = None) -> list[bytes]:
    """The stored header blobs (``dicomfile.pack_json``) of a study's instances, or of one series' or one
    instance, in series then instance-number order: WADO-RS metadata (PS3.18 10.4) is their DICOM JSON,
    concatenated without parsing."""
    stmt = (select(Instance.header).join(Series, Instance.series_fk == Series.id)
            .join(Study, Series.study_fk == Study.id).where(Study.study_instance_uid == study_uid))
    if series_uid is not None:
        stmt = stmt.where(Series.series_instance_uid == series_uid)
    if sop_uid is not None:
        stmt = stmt.where(Instance.sop_instance_uid == sop_uid)
    return list(s.scalars(stmt.order_by(Series.id, Instance.instance_number, Instance.id)))


def number_of_frames(s: Session, sop_uid: str) -> int:
    """(0028,0008) Number of Frames of a stored instance as indexed; 1 when it has none (or is not there)."""
    return s.scalar(select(Instance.number_of_frames).where(Instance.sop_instance_uid == sop_uid)) or 1
