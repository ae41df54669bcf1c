"""QIDO-RS, the Search Transaction (PS3.18 10.6): studies, series and instances matching query parameters.

The query parameters (PS3.18 8.3.4) become a ``query.Query`` identifier, the same engine C-FIND uses, so
both protocols match alike; answers are DICOM JSON built from the index, each with its RetrieveURL. Patient
attributes (PatientName, PatientBirthDate...) are matched and answered as each study's own instances give them,
also in series and instance answers (PS3.18 searches the Study Root model, where they are attributes of the study).
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydicom import datadict
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from hounsfield import query as q
from hounsfield.errors import InvalidQuery
from hounsfield.web.dicomweb.common import DICOM_JSON, pacs_of, resource_url

router = APIRouter()

MAX_LIMIT = 100_000
MAX_OFFSET = 1_000_000_000

# Default return attributes, PS3.18 Table 6.7.1-2 (study), 6.7.1-2a (series), 6.7.1-2b (instance); the
# level UIDs above the resource are always returned so that a client can build the next URL.
STUDY_ATTRS = ("SpecificCharacterSet", "StudyDate", "StudyTime", "AccessionNumber", "InstanceAvailability",
               "ModalitiesInStudy", "ReferringPhysicianName", "TimezoneOffsetFromUTC", "PatientName",
               "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyID", "StudyDescription",
               "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances")
SERIES_ATTRS = ("SpecificCharacterSet", "Modality", "TimezoneOffsetFromUTC", "SeriesDescription",
                "SeriesInstanceUID", "SeriesNumber", "NumberOfSeriesRelatedInstances",
                "PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime", "RequestAttributesSequence",
                "StudyInstanceUID")
INSTANCE_ATTRS = ("SpecificCharacterSet", "SOPClassUID", "SOPInstanceUID", "InstanceAvailability",
                  "TimezoneOffsetFromUTC", "InstanceNumber", "Rows", "Columns", "BitsAllocated", "NumberOfFrames",
                  "StudyInstanceUID", "SeriesInstanceUID")
QIDO_CONTROL = {"includefield", "fuzzymatching", "limit", "offset", "accept", "charset"}
LIST_VRS = {"UI", "CS"}  # PS3.18 8.3.4.1: comma-separated values are list matching for these
URL_TAGS = ("0020000D", "0020000E", "00080018")  # the UIDs an answer's RetrieveURL is made of


def _tag(keyword: str) -> str:
    return f"{datadict.tag_for_keyword(keyword):08X}"


def _int_param(name: str, text: str, low: int, high: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise InvalidQuery(f"{name}={text!r} is not an integer") from None
    if not low <= value <= high:
        raise InvalidQuery(f"{name}={value} is out of range {low}-{high}")
    return value


class QidoRequest:
    """The query parameters of a QIDO-RS request, parsed (PS3.18 8.3.4)."""

    def __init__(self, request: Request, level: str, scope: dict[str, str]) -> None:
        self.level, self.scope = level, scope
        self.limit: int | None = None
        self.offset = 0
        self.fuzzy = False
        self.include_all = False
        self.include: list[str] = []
        values: dict[str, list[str]] = {}
        for key, value in request.query_params.multi_items():
            name = key.strip()
            lower = name.lower()
            if lower == "includefield":
                for field in value.split(","):
                    if field.strip().lower() == "all":
                        self.include_all = True
                    elif field.strip():
                        self.include.append(q.tag_key(field))
            elif lower == "fuzzymatching":
                if value.lower() not in ("true", "false"):
                    raise InvalidQuery(f"fuzzymatching={value!r} is neither true nor false")
                self.fuzzy = value.lower() == "true"
            elif lower == "limit":
                self.limit = _int_param("limit", value, 1, MAX_LIMIT)
            elif lower == "offset":
                self.offset = _int_param("offset", value, 0, MAX_OFFSET)
            elif lower in QIDO_CONTROL:
                continue
            else:
                values.setdefault(q.tag_key(name), []).append(value)
        self.identifier = Dataset()
        self.match_tags: list[str] = []
        for tag, texts in values.items():
            self._add(tag, texts)
        for keyword, uid in scope.items():  # UIDs in the URL path
            self.identifier.add(_element(_tag(keyword), uid))
        # Computed attributes (counts, ModalitiesInStudy…) answered by default or asked for by includefield.
        wanted = set(self.default_attrs()) | {datadict.keyword_for_tag(int(t, 16)) for t in self.include}
        self.computed = {k for k in wanted if k in q.COMPUTED} if not self.include_all else set(q.COMPUTED)

    def _add(self, tag: str, texts: list[str]) -> None:
        self.match_tags.append(tag)
        vr = datadict.dictionary_VR(int(tag, 16)) if datadict.dictionary_has_tag(int(tag, 16)) else ""
        if not vr:
            raise InvalidQuery(f"attribute {tag} is not in the data dictionary")
        if vr == "SQ":
            raise InvalidQuery(f"{datadict.keyword_for_tag(int(tag, 16))}: sequence matching is not supported")
        vr = vr.split(" or ")[0]
        parts = []
        for text in texts:
            parts += text.split(",") if vr in LIST_VRS else [text]
        self.identifier.add(_element(tag, "\\".join(parts), vr))

    def default_attrs(self) -> tuple[str, ...]:
        if self.level == "STUDY":
            return STUDY_ATTRS
        if self.level == "SERIES":
            return SERIES_ATTRS + (() if "StudyInstanceUID" in self.scope else STUDY_ATTRS)
        attrs = INSTANCE_ATTRS
        if "SeriesInstanceUID" not in self.scope:
            attrs += SERIES_ATTRS
        if "StudyInstanceUID" not in self.scope:
            attrs += STUDY_ATTRS
        return attrs

    def return_tags(self) -> list[str] | None:
        if self.include_all:
            return None
        tags = {_tag(k) for k in self.default_attrs()} | set(self.include) | set(self.match_tags)
        return sorted(tags)


def _element(tag: str, text: str, vr: str | None = None) -> DataElement:
    vr = vr or datadict.dictionary_VR(int(tag, 16)).split(" or ")[0]
    value: Any = text
    if vr in ("US", "UL", "SS", "SL", "SV", "UV") and text:
        try:
            value = [int(v) for v in text.split("\\")]
        except ValueError:
            raise InvalidQuery(f"{datadict.keyword_for_tag(int(tag, 16))}={text!r} is not an integer") from None
    elif vr in ("FL", "FD") and text:
        try:
            value = [float(v) for v in text.split("\\")]
        except ValueError:
            raise InvalidQuery(f"{datadict.keyword_for_tag(int(tag, 16))}={text!r} is not a number") from None
    try:
        return DataElement(Tag(int(tag, 16)), vr, value)
    except (ValueError, TypeError, OverflowError) as exc:
        raise InvalidQuery(f"{datadict.keyword_for_tag(int(tag, 16))}: {exc}") from None


def _qido(request: Request, level: str, scope: dict[str, str]) -> Response:
    params = QidoRequest(request, level, scope)
    query = q.Query(params.identifier, model="STUDY", level=level, fuzzy_pn=params.fuzzy)
    for keyword, uid in scope.items():  # a UID in the URL path names one study or series, never a pattern
        query.require_equal(keyword, uid)
    tags = params.return_tags()
    needed = None if tags is None else {*tags, *URL_TAGS}
    pacs = pacs_of(request)
    answers = []
    with pacs.archive.reading() as s:
        for match in q.run(s, query, tags=needed, computed=params.computed, offset=params.offset,
                           limit=params.limit):
            item = match.json(tags)
            item.pop("00080052", None)  # QueryRetrieveLevel is C-FIND only
            study = _first(match.attrs, "0020000D")
            series = _first(match.attrs, "0020000E") if level != "STUDY" else None
            sop = _first(match.attrs, "00080018") if level == "IMAGE" else None
            item["00081190"] = {"vr": "UR", "Value": [resource_url(request, study, series, sop)]}
            answers.append(dict(sorted(item.items())))
    if not answers:
        return Response(status_code=204)
    return Response(json.dumps(answers, separators=(",", ":")), media_type=DICOM_JSON)


def _first(json_ds: dict[str, Any], tag: str) -> str:
    values = json_ds.get(tag, {}).get("Value") or [""]
    return str(values[0])


@router.get("/studies", summary="QIDO-RS: search for studies")
def search_studies(request: Request) -> Response:
    return _qido(request, "STUDY", {})


@router.get("/series", summary="QIDO-RS: search for series")
def search_series(request: Request) -> Response:
    return _qido(request, "SERIES", {})


@router.get("/instances", summary="QIDO-RS: search for instances")
def search_instances(request: Request) -> Response:
    return _qido(request, "IMAGE", {})


@router.get("/studies/{study}/series", summary="QIDO-RS: search for series of a study")
def search_study_series(request: Request, study: str) -> Response:
    return _qido(request, "SERIES", {"StudyInstanceUID": study})


@router.get("/studies/{study}/instances", summary="QIDO-RS: search for instances of a study")
def search_study_instances(request: Request, study: str) -> Response:
    return _qido(request, "IMAGE", {"StudyInstanceUID": study})


@router.get("/studies/{study}/series/{series}/instances", summary="QIDO-RS: search for instances of a series")
def search_series_instances(request: Request, study: str, series: str) -> Response:
    return _qido(request, "IMAGE", {"StudyInstanceUID": study, "SeriesInstanceUID": series})
