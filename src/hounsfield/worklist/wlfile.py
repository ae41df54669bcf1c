"""Worklist files (.wl) as dcmtk's wlmscpfs and Orthanc's worklist plugin serve them: import and export.

Import reads Part-10 files or bare datasets and schedules them in bulk (``Worklist.import_items``); like
wlmscpfs it leaves out files that are not complete worklist items (PS3.4 K.6.1.2.2 type 1 return keys).
Export writes one Part-10 file per step (Explicit VR Little Endian, with file meta, as dump2dcm writes them)
plus the ``lockfile`` wlmscpfs wants, so wlmscpfs can serve the folder unchanged.
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Iterable, Iterator

from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID, generate_uid
from pynetdicom.sop_class import ModalityWorklistInformationFind

from hounsfield.worklist import items
from hounsfield.worklist.items import STEPS, step_of
from hounsfield.worklist.service import OPEN, ImportSummary, Worklist

SUFFIX = ".wl"
PARALLEL_FROM = 1000  # files; fewer are read in this process
# The type 1 return keys wlmscpfs insists on before it serves a file (dcmtk WlmFileSystemInteractionManager).
REQUIRED_TOP = ("RequestedProcedureID", "StudyInstanceUID", "PatientName", "PatientID")
REQUIRED_STEP = ("ScheduledStationAETitle", "ScheduledProcedureStepStartDate", "ScheduledProcedureStepStartTime",
                 "Modality", "ScheduledProcedureStepID")


def worklist_files(paths: Iterable[Path]) -> list[Path]:
    """Files named on the command line, and the *.wl files inside folders (recursively)."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob(f"*{SUFFIX}") if f.is_file()))
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or directory")
    return out


def _empty(ds: Dataset, keyword: str) -> bool:
    return keyword not in ds or ds[keyword].is_empty


def _code_incomplete(ds: Dataset, description: str, codes: str) -> bool:
    """The description or a complete code sequence must be present, and neither present but empty."""
    if codes in ds:
        entries = ds[codes].value or []
        if not entries or any(items.incomplete_code(i) for i in entries):
            return True
    if description in ds:
        return ds[description].is_empty
    return codes not in ds


def incomplete(ds: Dataset) -> str | None:
    """Why wlmscpfs would not serve this item (the first missing type 1 key), or None."""
    steps = ds.get(STEPS)
    if not steps or len(steps) != 1:
        return f"{STEPS} must hold exactly one item"
    step = step_of(ds)
    for keyword in REQUIRED_STEP:
        if _empty(step, keyword):
            return f"{STEPS}>{keyword} is missing or empty"
    for keyword in REQUIRED_TOP:
        if _empty(ds, keyword):
            return f"{keyword} is missing or empty"
    if _code_incomplete(step, "ScheduledProcedureStepDescription", "ScheduledProtocolCodeSequence"):
        return "neither ScheduledProcedureStepDescription nor a complete ScheduledProtocolCodeSequence"
    if _code_incomplete(ds, "RequestedProcedureDescription", "RequestedProcedureCodeSequence"):
        return "neither RequestedProcedureDescription nor a complete RequestedProcedureCodeSequence"
    for keyword in ("ReferencedStudySequence", "ReferencedPatientSequence"):
        if any(_empty(i, "ReferencedSOPClassUID") or _empty(i, "ReferencedSOPInstanceUID")
               for i in ds.get(keyword) or []):
            return f"{keyword} has an incomplete item"
    return None


def prepare_file(path: Path, origin: str = "import") -> tuple[str, list[dict[str, Any]], str]:
    """(file name, index rows, why skipped) of one worklist file; runs in worker processes."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = dcmread(path, force=True)
            reason = incomplete(ds)
            if reason:
                return str(path), [], reason
            items.complete(ds, generate_ids=False)
            return str(path), [items.row(ds, origin=origin)], ""
    except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, TypeError, AttributeError) as exc:
        return str(path), [], f"not readable as DICOM: {exc}"


def _prepared(files: list[Path], skipped: list[tuple[str, str]], workers: int) -> Iterator[dict[str, Any]]:
    results: Iterable[tuple[str, list[dict[str, Any]], str]]
    if workers > 1 and len(files) >= PARALLEL_FROM:
        pool = ProcessPoolExecutor(workers)
        results = pool.map(prepare_file, files, chunksize=256)
    else:
        pool, results = None, map(prepare_file, files)
    try:
        for name, rows, reason in results:
            if reason:
                skipped.append((name, reason))
            yield from rows
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)


def import_files(worklist: Worklist, paths: Iterable[Path], *, workers: int | None = None) -> ImportSummary:
    """Import .wl files and folders of them; files wlmscpfs would not serve are reported in ``invalid``."""
    skipped: list[tuple[str, str]] = []
    files = worklist_files(paths)
    summary = worklist.import_rows(_prepared(files, skipped, workers or os.cpu_count() or 1))
    summary.invalid[:0] = skipped
    return summary


def export_files(worklist: Worklist, out_dir: Path, *, statuses: Iterable[str] = OPEN) -> int:
    """Write every step with one of ``statuses`` to ``out_dir``/item<ID>.wl (+ lockfile); returns how many."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "lockfile").touch()
    total, page, offset = 0, 500, 0
    while True:
        _, found = worklist.list(statuses=list(statuses), limit=page, offset=offset)
        for item in found:
            write_item(item.dataset, out_dir / f"item{item.id:08d}{SUFFIX}")
        total += len(found)
        offset += page
        if len(found) < page:
            return total


def write_item(ds: Dataset, path: Path) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ModalityWorklistInformationFind
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    tmp = path.with_suffix(".tmp")
    ds.save_as(tmp, enforce_file_format=True)
    tmp.replace(path)
