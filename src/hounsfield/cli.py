"""The ``hounsfield`` command: serve, import, ls, the DICOM client commands, and (registered from their
packages) the imaging and worklist commands. Errors are one line naming the cause, never a traceback."""

from __future__ import annotations

import signal
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated, Optional

import typer
from pydicom.dataset import Dataset
from rich.table import Table

from hounsfield import config
from hounsfield.cli_common import console, fail, open_pacs, progress_bar, dicom_peer, with_settings
from hounsfield.errors import HounsfieldError

app = typer.Typer(help="hounsfield: a small, fast PACS (archive, worklist, DICOMweb, viewer).",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
@app.command()
@with_settings
def serve(settings: config.Settings) -> None:
    """Run the DICOM service and the HTTP service until SIGINT/SIGTERM."""
    import uvicorn

    from hounsfield.web.app import create_app

    pacs = open_pacs(settings)
    try:
        pacs.start_dicom()
    except OSError as exc:
        fail(f"cannot listen on DICOM port {settings.dicom_port}: {exc.strerror or exc}")
    server = uvicorn.Server(uvicorn.Config(create_app(pacs), host=settings.http_host, port=settings.http_port,
                                           log_level="warning", access_log=False))
    console.print(f"hounsfield: DICOM {settings.ae_title}@{settings.dicom_host}:{settings.dicom_port}, "
                  f"HTTP http://{settings.http_host}:{settings.http_port}, data {settings.data_dir}",
                  highlight=False)
    # uvicorn re-raises SIGINT/SIGTERM once it has stopped; catching them here lets the DICOM service then
    # finish its in-flight associations before the process exits.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda _sig, _frame: None)
    try:
        server.run()  # returns after SIGINT/SIGTERM
    finally:
        pacs.close()
    if not server.started:
        fail(f"cannot listen on HTTP {settings.http_host}:{settings.http_port}")


def _walk(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files.extend(sorted(f for f in p.rglob("*") if f.is_file()))
        elif p.is_file():
            files.append(p)
        else:
            fail(f"{p}: no such file or directory")
    return files


@app.command("import")
@with_settings
def import_(paths: Annotated[list[Path], typer.Argument(help="Files or folders (searched recursively).")],
            settings: config.Settings) -> None:
    """Import DICOM files into the archive; counts what was skipped and why."""
    pacs = open_pacs(settings)
    files = _walk(paths)
    outcomes: dict[str, int] = {}
    skipped: dict[str, list[Path]] = {}
    with progress_bar() as bar:
        task = bar.add_task("importing", total=len(files))
        for f in files:
            try:
                result = pacs.archive.store_file(f, "import")
                outcomes[result.outcome.value] = outcomes.get(result.outcome.value, 0) + 1
            except HounsfieldError as exc:
                skipped.setdefault(str(exc), []).append(f)
            bar.advance(task)
    pacs.close()
    summary = ", ".join(f"{n} {k}" for k, n in sorted(outcomes.items())) or "nothing stored"
    console.print(f"imported {len(files)} files: {summary}; {sum(map(len, skipped.values()))} skipped",
                  highlight=False)
    for reason, which in sorted(skipped.items(), key=lambda kv: -len(kv[1])):
        console.print(f"  skipped {len(which)}: {reason} (e.g. {which[0]})", highlight=False)


@app.command()
@with_settings
def quarantine(settings: config.Settings,
               retry: Annotated[Optional[str], typer.Option(help="Index this quarantined file again.")] = None,
               discard: Annotated[Optional[str], typer.Option(help="Delete this quarantined file.")] = None) -> None:
    """List the received files the indexer could not take and why; retry or discard one."""
    pacs = open_pacs(settings)
    try:
        if retry:
            ok = pacs.archive.retry_quarantined(retry)
            console.print(f"{retry}: {'indexed' if ok else 'still cannot be indexed (quarantined again)'}",
                          highlight=False)
            return
        if discard:
            pacs.archive.discard_quarantined(discard)
            console.print(f"{discard}: deleted", highlight=False)
            return
        records = pacs.archive.quarantined()
        if not records:
            console.print(f"nothing in quarantine ({settings.data_dir})", highlight=False)
            return
        table = Table("file", "quarantined", "from", "size", "reason")
        for r in records:
            when = datetime.fromtimestamp(r.get("quarantined_at", 0)).isoformat(sep=" ", timespec="seconds")
            table.add_row(r["name"], when, r.get("origin", ""), str(r.get("size", "")), r.get("reason", ""))
        console.print(table)
    finally:
        pacs.close()


@app.command()
@with_settings
def ls(settings: config.Settings,
       patient: Annotated[Optional[str], typer.Option(help="PatientID filter (wildcards allowed).")] = None) -> None:
    """Patients → studies → series in the local archive, as a table."""
    from hounsfield.web.api import search

    pacs = open_pacs(settings)
    filters = {"PatientID": patient} if patient else {}
    table = Table("Patient", "Study date", "Study", "Series", "Mod", "Description", "Images")
    for st in search(pacs, "STUDY", filters, limit=100000, offset=0):
        first = True
        for se in search(pacs, "SERIES", {"StudyInstanceUID": st["StudyInstanceUID"]}, limit=100000, offset=0):
            table.add_row(f"{st['PatientID'] or ''} {st['PatientName'] or ''}" if first else "",
                          (st["StudyDate"] or "") if first else "",
                          (st["StudyDescription"] or st["StudyInstanceUID"]) if first else "",
                          str(se["SeriesNumber"] or ""), se["Modality"] or "", se["SeriesDescription"] or "",
                          str(se["NumberOfSeriesRelatedInstances"]))
            first = False
    pacs.close()
    console.print(table)


# ---- the DICOM client ------------------------------------------------------------------------------
RemoteOpt = Annotated[str, typer.Option("--remote", "-r", help="Known node name or AE title, or [AET@]HOST:PORT.")]
KeysOpt = Annotated[Optional[list[str]], typer.Option("--key", "-k", help="Query key KEYWORD=VALUE (repeatable).")]


def _identifier(level: str, keys: list[str] | None) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level.upper()
    for item in keys or []:
        name, _, value = item.partition("=")  # a bare KEYWORD asks for the attribute (universal match)
        try:
            setattr(ds, name.strip(), value or None)
        except (ValueError, TypeError, AttributeError) as exc:
            fail(f"--key {item!r}: {exc}", 2)
    return ds


@app.command()
@with_settings
def echo(settings: config.Settings, remote: RemoteOpt) -> None:
    """C-ECHO a remote node."""
    from hounsfield.dimse import client

    peer = dicom_peer(settings, remote)
    status = client.echo(peer, settings.ae_title)
    console.print(f"C-ECHO {peer.ae_title}@{peer.host}:{peer.port}: status 0x{status:04X}", highlight=False)
    if status != 0:
        raise typer.Exit(1)


@app.command()
@with_settings
def store(settings: config.Settings, remote: RemoteOpt,
          paths: Annotated[list[Path], typer.Argument(help="Files or folders to send.")]) -> None:
    """C-STORE files to a remote node."""
    from hounsfield.dimse import client

    peer = dicom_peer(settings, remote)
    files = _walk(paths)
    with progress_bar() as bar:
        task = bar.add_task(f"sending to {peer.ae_title}", total=len(files))
        results = client.store(peer, files, settings.ae_title, lambda _f, _s: bar.advance(task))
    ok = sum(1 for s in results.values() if s == 0)
    console.print(f"sent {ok}/{len(files)} files to {peer.ae_title}", highlight=False)
    for f, s in results.items():
        if s != 0:
            console.print(f"  {f}: {'not sent' if s is None else f'status 0x{s:04X}'}", highlight=False)
    if ok != len(files):
        raise typer.Exit(1)


@app.command()
@with_settings
def find(settings: config.Settings, remote: RemoteOpt, keys: KeysOpt = None,
         level: Annotated[str, typer.Option(help="PATIENT, STUDY, SERIES or IMAGE.")] = "STUDY",
         model: Annotated[str, typer.Option(help="study or patient root.")] = "study",
         as_json: Annotated[bool, typer.Option("--json", help="Print DICOM JSON.")] = False) -> None:
    """C-FIND on a remote node; prints a table (or DICOM JSON)."""
    import json

    from hounsfield.dimse import client

    identifier = _identifier(level, keys)
    answers = list(client.find(dicom_peer(settings, remote), identifier, settings.ae_title, model))
    if as_json:
        console.print_json(json.dumps([a.to_json_dict() for a in answers]))
        return
    columns = [e.keyword for e in identifier if e.keyword != "QueryRetrieveLevel"]
    table = Table(*columns, title=f"{len(answers)} answers")
    for a in answers:
        table.add_row(*[str(a.get(c, "") or "") for c in columns])
    console.print(table)


@app.command()
@with_settings
def move(settings: config.Settings, remote: RemoteOpt, keys: KeysOpt = None,
         dest: Annotated[str, typer.Option("--dest", help="Destination AE title.")] = "",
         level: str = "STUDY", model: str = "study") -> None:
    """C-MOVE from a remote node to a destination AE."""
    from hounsfield.dimse import client

    summary = client.move(dicom_peer(settings, remote), _identifier(level, keys), dest or settings.ae_title,
                          settings.ae_title, model)
    console.print(f"C-MOVE status 0x{summary.status:04X}: {summary.completed} completed, "
                  f"{summary.failed} failed, {summary.warning} warning", highlight=False)
    if summary.status != 0:
        raise typer.Exit(1)


@app.command()
@with_settings
def get(settings: config.Settings, remote: RemoteOpt, keys: KeysOpt = None,
        out: Annotated[Path, typer.Option("--out", help="Folder for the received files.")] = Path("."),
        level: str = "STUDY", model: str = "study") -> None:
    """C-GET from a remote node into a folder."""
    from hounsfield.dimse import client

    summary = client.get(dicom_peer(settings, remote), _identifier(level, keys), out, settings.ae_title, model)
    console.print(f"C-GET status 0x{summary.status:04X}: {len(summary.received)} received into {out}, "
                  f"{summary.failed} failed", highlight=False)
    if summary.status != 0:
        raise typer.Exit(1)


def _register_plugins() -> None:
    """Commands that live with their feature packages."""
    from hounsfield.imaging import cli as imaging_cli
    from hounsfield.worklist import cli as worklist_cli

    imaging_cli.register(app)
    worklist_cli.register(app)


def main() -> None:
    _register_plugins()
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
