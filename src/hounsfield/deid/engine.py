"""De-identification of datasets and stored studies: PS3.15 Annex E's Basic Application Level Confidentiality
Profile (E.1.1) with the options of ``profile.Option``, applied to the whole dataset, items of sequences
included, from the rows of Table E.1-1 in ``profile``.

How each action is carried out:

- X removes the attribute; Z empties it; D writes a dummy valid for the VR (``values.dummy``); K keeps it; C
  keeps a descriptor without the instance's identifying values (``values.Cleaner``); U replaces each UID by
  its replacement in the ``deid_mappings`` table, so that the same original UID gets the same new UID in
  every instance, study and run, references inside sequences (Referenced SOP Instance UID, Frame of
  Reference UIDs…) included: an RT Structure Set and its CT stay linked.
- Sequences: K, C and U apply the profile to every item (E.1.1: "Keeping a Sequence requires recursively
  applying the profile rules"); Z empties the sequence and D leaves one empty item (the action applies "to the
  Sequence and all of its contents").
- Combined codes choose without the IOD at hand: the alternative that keeps the IOD conformant whatever the
  attribute's Type, and no less conformant than it came — X/Z is Z; X/D is D; Z/D and X/Z/D are Z for a value
  already empty (it says nothing) and D otherwise; X/Z/U* replaces the UIDs it contains; a sequence under Z/D,
  X/Z or X/Z/D is emptied.
- Patient ID and Patient's Name (Z) get a pseudonym, the same for the same original Patient ID (the
  ``patient_id`` mappings), so that the studies of one patient stay together.
- Private attributes are removed; so are Curve Data (50xx) and every Overlay Plane (60xx: its Overlay Data and
  Comments are X); Pixel Data is not touched.
- Patient Identity Removed (0012,0062) is YES, De-identification Method (0012,0063) and its Code Sequence
  (0012,0064) name the profile and options (CID 7050), Longitudinal Temporal Information Modified (0028,0303)
  says whether the dates are the original ones; the File Meta Information and the preamble are new (E.1.1
  item 7), the Media Storage SOP Instance UID that of the new SOP Instance UID.
"""

from __future__ import annotations

import copy
import io
import logging
import secrets
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, Callable, Iterable, Iterator

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import dcmread
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

from hounsfield.archive import Archive, StoredInstance, StoreOutcome, uid_component
from hounsfield.db import Database
from hounsfield.deid import profile
from hounsfield.deid.mappings import PATIENT_ID, UID, Mappings
from hounsfield.deid.profile import BASIC_PROFILE, OPTION_CODES, Option
from hounsfield.deid.values import TEXT_VRS, Cleaner, dummy, identifying_tokens
from hounsfield.dicomfile import _sequence_depth, file_meta_for
from hounsfield.errors import HounsfieldError, InvalidDataset, InvalidQuery, NotFound, StorageFull
from hounsfield.headerjson import MAX_DEPTH

log = logging.getLogger(__name__)
PATIENT_ID_TAG = 0x00100020
PATIENT_NAME_TAG = 0x00100010
PATIENT_BIRTH_DATE_TAG = 0x00100030
ORIGIN = "de-identification"  # the origin the archive records for the copies it stores


def new_pseudonym() -> str:
    """A Patient ID that says nothing: ``ANON`` and 12 random hexadecimal digits (fits LO and PN)."""
    return "ANON" + secrets.token_hex(6).upper()


@dataclass(frozen=True)
class DeidentifiedInstance:
    """One stored instance of a study and its de-identified dataset, or why there is none (no file path)."""

    original: StoredInstance
    dataset: Dataset | None
    problem: str | None = None


@dataclass
class CopyReport:
    """What ``Deidentifier.copy_study`` stored: counts by outcome, and the instances that failed."""

    study_instance_uid: str
    patient_id: str
    options: tuple[Option, ...]
    instances: int = 0
    stored: int = 0
    replaced: int = 0
    duplicates_kept: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (original SOP Instance UID, problem)


class _Replacements:
    """What the walk of one dataset replaces by a mapping, looked up together once it has seen everything."""

    def __init__(self) -> None:
        self.wanted: list[tuple[str, list[str], Callable[[list[str]], None]]] = []

    def add(self, kind: str, originals: list[str], setter: Callable[[list[str]], None]) -> None:
        self.wanted.append((kind, originals, setter))


class Deidentifier:
    """De-identifies with the Basic Profile and ``options``; its replacements come from (and go to) ``db``'s
    ``deid_mappings`` table. One instance serves one thread (it remembers the replacements it has seen)."""

    def __init__(self, db: Database, options: Iterable[Option] = (), *, max_depth: int = MAX_DEPTH) -> None:
        chosen = set(options)
        self.options = tuple(o for o in Option if o in chosen)
        self.mappings = Mappings(db)
        self.max_depth = max_depth
        self._known: dict[tuple[str, str], str] = {}

    # ---- replacements ----------------------------------------------------------------------------------
    def _replaced(self, kind: str, originals: Iterable[str]) -> dict[str, str]:
        new = generate_uid if kind == UID else new_pseudonym
        todo = {o for o in originals if (kind, o) not in self._known}
        if todo:
            for original, replacement in self.mappings.replacements(kind, todo, new).items():
                self._known[(kind, original)] = replacement
        return {o: self._known[(kind, o)] for o in originals}

    def uid(self, original: str) -> str:
        """The UID ``original`` becomes (itself under Retain UIDs)."""
        if Option.RETAIN_UIDS in self.options:
            return original
        return self._replaced(UID, [original])[original]

    # ---- datasets --------------------------------------------------------------------------------------
    def dataset(self, ds: Dataset) -> Dataset:
        """A de-identified copy of ``ds`` (``ds`` itself is not changed). ``InvalidDataset`` when its sequences
        nest deeper than ``max_depth``."""
        self._check_depth(ds)  # before anything recurses through it (deepcopy included)
        out = copy.deepcopy(ds)
        self._deidentify(out)
        return out

    def instance(self, instance: StoredInstance) -> Dataset:
        """The de-identified dataset of a stored instance."""
        ds = dcmread(instance.path)
        self._check_depth(ds)
        self._deidentify(ds)
        return ds

    @staticmethod
    def encode(ds: Dataset) -> bytes:
        """A de-identified dataset as a Part-10 file (the preamble zeros, its new File Meta Information)."""
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        return buf.getvalue()

    def _deidentify(self, ds: Dataset) -> None:
        syntax = _transfer_syntax(ds)
        cleaner = Cleaner(identifying_tokens(self._identifying(ds)))
        found = _Replacements()
        self._walk(ds, False, cleaner, found)
        by_kind: dict[str, set[str]] = {}
        for kind, originals, _ in found.wanted:
            by_kind.setdefault(kind, set()).update(originals)
        replaced = {kind: self._replaced(kind, originals) for kind, originals in by_kind.items()}
        for kind, originals, setter in found.wanted:
            setter([replaced[kind][o] for o in originals])
        self._mark(ds)
        ds.preamble = b"\x00" * 128
        ds.file_meta = file_meta_for(str(ds.get("SOPClassUID", "")), str(ds.get("SOPInstanceUID", "")), syntax)

    def _mark(self, ds: Dataset) -> None:
        """What PS3.15 E.1.1 item 6 asks of a de-identified dataset, and PS3.3 C.7.1.1's temporal flag."""
        codes = [BASIC_PROFILE, *(OPTION_CODES[o] for o in self.options)]
        ds.PatientIdentityRemoved = "YES"
        ds.DeidentificationMethod = [c.meaning for c in codes]
        items = list(ds.get("DeidentificationMethodCodeSequence") or [])
        present = {(str(i.get("CodingSchemeDesignator", "")), str(i.get("CodeValue", ""))) for i in items}
        for c in codes:
            if (c.scheme, c.value) not in present:
                item = Dataset()
                item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = c.value, c.scheme, c.meaning
                items.append(item)
        ds.DeidentificationMethodCodeSequence = Sequence(items)
        ds.LongitudinalTemporalInformationModified = \
            "UNMODIFIED" if Option.RETAIN_DATES in self.options else "REMOVED"

    def _check_depth(self, ds: Dataset) -> None:
        """Refuse what the recursive walk could not take: sequences nested deeper than ``max_depth``."""
        if _sequence_depth(ds) > self.max_depth:
            raise InvalidDataset(f"its sequences nest deeper than {self.max_depth} levels")

    def _identifying(self, ds: Dataset) -> Iterator[tuple[str, Any]]:
        """(VR, value) of every identifying text (and the birth date) in ``ds``, what Clean looks for."""
        for elem in ds:
            if elem.VR == "SQ":
                for item in elem.value or []:
                    yield from self._identifying(item)
                continue
            rule = profile.rule_for(elem.tag, elem.VR)
            if elem.tag == PATIENT_BIRTH_DATE_TAG or (rule is not None and rule.identifying and elem.VR in TEXT_VRS):
                yield elem.VR, elem.value

    def _walk(self, ds: Dataset, clean: bool, cleaner: Cleaner, found: _Replacements) -> None:
        """Apply the profile to every attribute of ``ds``; ``clean``: inside a sequence being cleaned (C), where
        text the table does not name is cleaned too."""
        for tag in list(ds.keys()):
            elem = ds[tag]
            rule = profile.rule_for(elem.tag, elem.VR)
            code = rule.action(self.options) if rule is not None else "C" if clean and elem.VR in TEXT_VRS else "K"
            code = _resolved(code, elem)
            if code == "X":
                del ds[tag]
            elif code == "Z" and tag in (PATIENT_ID_TAG, PATIENT_NAME_TAG):
                self._pseudonymize(ds, elem, found)
            elif code == "Z":
                elem.value = Sequence() if elem.VR == "SQ" else b"" if isinstance(elem.value, bytes) else None
            elif code == "D":
                elem.value = dummy(elem.VR)
            elif elem.VR == "SQ":  # K, C, U: the profile applied to each item
                for item in elem.value or []:
                    self._walk(item, clean or code == "C", cleaner, found)
            elif code == "U":
                _replace_uids(ds, elem, found)
            elif code == "C" and elem.VR in TEXT_VRS:
                elem.value = cleaner.value(elem.value)

    @staticmethod
    def _pseudonymize(ds: Dataset, elem: DataElement, found: _Replacements) -> None:
        """Patient ID → its pseudonym; Patient's Name → the pseudonym of the Patient ID beside it (none: empty)."""
        patient_id = str(ds.get("PatientID") or "").strip()
        if not patient_id:
            elem.value = None
            return

        def put(replacement: list[str]) -> None:
            elem.value = replacement[0]

        found.add(PATIENT_ID, [patient_id], put)

    # ---- stored studies --------------------------------------------------------------------------------
    def study(self, archive: Archive, study_uid: str) -> Iterator[DeidentifiedInstance]:
        """The de-identified instances of a stored study, one at a time (series, then instance order). An
        instance that cannot be de-identified comes with its problem and no dataset; ``NotFound`` (at once)
        when the archive has no such study."""
        found = archive.instances(study_uid=study_uid)
        if not found:
            raise NotFound(f"no study {study_uid}")
        return (self._deidentified(inst) for inst in found)

    def _deidentified(self, instance: StoredInstance) -> DeidentifiedInstance:
        try:
            return DeidentifiedInstance(instance, self.instance(instance))
        except Exception as exc:  # noqa: BLE001 - one instance that cannot be de-identified must not stop a study
            log.warning("cannot de-identify instance %s (%s): %s", instance.sop_instance_uid, instance.path, exc)
            return DeidentifiedInstance(instance, None, problem(exc))

    def copy_study(self, archive: Archive, study_uid: str, *, origin: str = ORIGIN) -> CopyReport:
        """Store a de-identified copy of a stored study in ``archive`` (as Orthanc's /studies/{id}/anonymize).
        Under Retain UIDs the copy would have the original's UIDs: refused (``InvalidQuery``)."""
        if Option.RETAIN_UIDS in self.options:
            raise InvalidQuery(f"{Option.RETAIN_UIDS.value} cannot make a copy inside the archive: the copy would "
                               "have the original's UIDs; export it instead")
        outcomes = self.study(archive, study_uid)
        report = CopyReport(self.uid(study_uid), "", self.options)
        for outcome in outcomes:
            report.instances += 1
            if outcome.dataset is None:
                report.failed.append((outcome.original.sop_instance_uid, outcome.problem or "unknown"))
                continue
            report.patient_id = report.patient_id or str(outcome.dataset.get("PatientID") or "")
            try:
                result = archive.store_bytes(self.encode(outcome.dataset), origin)
            except Exception as exc:  # noqa: BLE001 - reported with the instance, the others go on
                log.warning("cannot store the de-identified copy of %s: %s", outcome.original.sop_instance_uid, exc)
                report.failed.append((outcome.original.sop_instance_uid, problem(exc)))
                continue
            if result.outcome is StoreOutcome.STORED:
                report.stored += 1
            elif result.outcome is StoreOutcome.REPLACED:
                report.replaced += 1
            else:
                report.duplicates_kept += 1
        return report


def file_name(ds: Dataset) -> PurePosixPath:
    """Where a de-identified instance goes in a folder or a zip: STUDY/SERIES/SOP.dcm by its (new) UIDs, each a
    name no other UID can have (``archive.uid_component``)."""
    return PurePosixPath(uid_component(str(ds.get("StudyInstanceUID", ""))),
                         uid_component(str(ds.get("SeriesInstanceUID", ""))),
                         uid_component(str(ds.get("SOPInstanceUID", ""))) + ".dcm")


def problem(exc: BaseException) -> str:
    """Why an instance could not be de-identified or stored, in words fit for any client: no file path."""
    if isinstance(exc, StorageFull):
        return "the archive cannot write the copy (disk full or not writable)"
    if isinstance(exc, HounsfieldError):
        return str(exc)
    if isinstance(exc, OSError):
        return "the stored file cannot be read"
    if isinstance(exc, InvalidDicomError):
        return "the stored file is not a readable DICOM dataset"
    first = (str(exc).splitlines() or [""])[0][:200]
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _resolved(code: str, elem: DataElement) -> str:
    """A combined action code resolved for this element (see the module's docstring)."""
    if "/" not in code:
        return code
    alternatives = code.rstrip("*").split("/")
    if "U" in alternatives:
        return "U"
    if elem.VR == "SQ":
        return "Z" if "Z" in alternatives else "D"
    if "Z" in alternatives and (elem.is_empty or "D" not in alternatives):
        return "Z"
    return "D"


def _replace_uids(ds: Dataset, elem: DataElement, found: _Replacements) -> None:
    """Queue the replacement of each UID of ``elem`` (an empty one stays empty: there is nothing to keep
    consistent). A UID read without its VR (UN) becomes a UI element."""
    value = elem.value
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    values = (value.split("\\") if value else []) if isinstance(value, str) else [str(v) for v in value or []]
    values = [v.rstrip("\x00 ") for v in values]
    originals = [v for v in values if v]
    if not originals:
        return
    tag, multiple = elem.tag, len(values) > 1

    def put(replacement: list[str]) -> None:
        given = iter(replacement)
        new = [next(given) if v else "" for v in values]
        ds[tag] = DataElement(tag, "UI", new if multiple else new[0])

    found.add(UID, originals, put)


def _transfer_syntax(ds: Dataset) -> str:
    """The transfer syntax ``ds`` came in (its file meta, else how it was read): the copy keeps it, so that its
    pixel data stays byte for byte what it was."""
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if syntax:
        return str(syntax)
    implicit, little = ds.original_encoding
    if implicit:
        return ImplicitVRLittleEndian
    return ExplicitVRBigEndian if little is False else ExplicitVRLittleEndian
