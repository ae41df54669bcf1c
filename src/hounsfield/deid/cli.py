"""``hounsfield deidentify STUDY_UID``: a de-identified copy of a stored study (PS3.15 E.1 Basic Profile and
options) written as DICOM files, stored in the archive, or both.

A command of its own, not a format of ``hounsfield export``: ``export`` reads files named on the command line
and never opens the archive, while this reads a study from the archive (so it takes the archive's setting
flags, which ``export`` would have to offer and ignore for its file formats) and writes whole DICOM
instances, not one volume of one series.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from hounsfield import config
from hounsfield.cli_common import STORE_SETTINGS, console, data_dir_text, err_console, fail, one_line_errors, \
    open_pacs, with_settings
from hounsfield.deid.engine import ORIGIN, Deidentifier, file_name
from hounsfield.deid.profile import Option
from hounsfield.errors import HounsfieldError, NotFound


def register(app: typer.Typer) -> None:
    """Add ``deidentify`` to ``app``."""
    app.command("deidentify")(deidentify)


@with_settings(settings=STORE_SETTINGS)
def deidentify(
    settings: config.Settings,
    study_uid: Annotated[str, typer.Argument(help="Study Instance UID of the stored study.")],
    out: Annotated[Optional[Path], typer.Option(
        "--out", help="Folder for the DICOM files (STUDY/SERIES/SOP.dcm by the new UIDs); made when missing.")] = None,
    store: Annotated[bool, typer.Option("--store", help="Store the copy in the archive (a study of its own).")] = False,
    option: Annotated[Optional[list[Option]], typer.Option(
        "--option", help="A PS3.15 E.3 option (repeatable).", case_sensitive=False)] = None,
) -> None:
    """De-identify a stored study with PS3.15 Annex E's Basic Application Level Confidentiality Profile: write it
    as DICOM files (--out), store it in the archive (--store), or both. One line per instance; the mapping back
    to the original stays in the archive's index (REST /api/deid/mappings, admins)."""
    options = tuple(option or ())
    if out is None and not store:
        fail("give --out DIR to write the files, --store to store the copy in the archive, or both", 2)
    if store and Option.RETAIN_UIDS in options:
        fail(f"--store with --option {Option.RETAIN_UIDS.value}: the copy would have the original's UIDs; "
             "write it with --out instead", 2)
    if out is not None and out.exists() and not out.is_dir():
        fail(f"--out {out}: not a directory", 2)
    pacs = open_pacs(settings)
    try:
        with one_line_errors(lambda exc: f"{type(exc).__name__}: {exc}"):
            deid = Deidentifier(pacs.db, options, max_depth=settings.max_sequence_depth)
            try:
                outcomes = deid.study(pacs.archive, study_uid)
            except NotFound:
                fail(f"no study {study_uid} in {data_dir_text(settings)}")
            failed = written = stored = 0
            for outcome in outcomes:
                ds = outcome.dataset
                if ds is None:
                    failed += 1
                    err_console.print(f"failed {outcome.original.sop_instance_uid}: {outcome.problem}",
                                      highlight=False, markup=False)
                    continue
                data = deid.encode(ds)
                done = []
                if out is not None:
                    path = out / file_name(ds)
                    try:
                        path.parent.mkdir(parents=True, exist_ok=True)
                        path.write_bytes(data)
                    except OSError as exc:
                        fail(f"cannot write {path}: {exc.strerror or exc}")
                    written += 1
                    done.append(f"wrote {path}")
                if store:
                    try:
                        result = pacs.archive.store_bytes(data, ORIGIN)
                    except HounsfieldError as exc:
                        failed += 1
                        err_console.print(f"failed {ds.SOPInstanceUID}: cannot store it: {exc}", highlight=False,
                                          markup=False)
                        continue
                    stored += 1
                    done.append(result.outcome.value)
                console.print(f"{ds.SOPInstanceUID}: {', '.join(done)}", highlight=False, markup=False)
            where = [f"{written} written to {out}"] if out is not None else []
            where += [f"{stored} stored in the archive"] if store else []
            console.print(f"de-identified study {deid.uid(study_uid)}: {', '.join(where)}, {failed} failed",
                          highlight=False, markup=False)
    finally:
        pacs.close()
    if failed:
        raise typer.Exit(1)
