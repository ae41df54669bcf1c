"""``hounsfield worklist …``: add, list, show, update, cancel, delete, import, export, find, explain, queries.

No ``from __future__ import annotations`` here: Typer reads the option declarations from the annotations of
signatures rebuilt by ``with_settings``, which are not evaluated from strings."""


import functools
import inspect
import json
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer
from rich.table import Table

from hounsfield import config
from hounsfield.cli_common import (
    CLIENT_SETTINGS,
    console,
    dicom_peer,
    err_console,
    fail,
    open_pacs,
    progress_bar,
    with_settings,
)
from hounsfield.worklist import client, flat, items, mwl, wlfile
from hounsfield.worklist.items import InvalidItem
from hounsfield.worklist.service import Item
from hounsfield.worklist.status import OPEN, STATUSES

app = typer.Typer(help="Modality worklist: schedule items, serve them to modalities, follow MPPS.",
                  no_args_is_help=True)
CLI_FIELDS = [f for f in flat.FIELDS if f.vr != "SQ"]


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="worklist")


def with_item_fields(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add one ``--field-name`` option per flat field (``flat.FIELDS``) and pass them as ``fields``."""
    sig = inspect.signature(func)
    own = [p for name, p in sig.parameters.items() if name != "fields"]
    extra = [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[
        Optional[str], typer.Option(f"--{f.name.replace('_', '-')}", help=f.help, show_default=False)])
        for f in CLI_FIELDS]

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        fields = {f.name: kwargs.pop(f.name) for f in CLI_FIELDS if kwargs.get(f.name) is not None}
        for f in CLI_FIELDS:
            kwargs.pop(f.name, None)
        return func(*args, fields=fields, **kwargs)

    wrapper.__signature__ = sig.replace(parameters=[*own, *extra])  # type: ignore[attr-defined]
    return wrapper


def _checked(call: Callable[[], Any]) -> Any:
    """Run a domain call; an invalid field is a one-line error naming the field by its label and its option."""
    try:
        return call()
    except InvalidItem as exc:
        name = flat.field_name(exc.field)
        option = f" (--{name.replace('_', '-')})" if name in flat.BY_NAME else f" ({exc.field})"
        fail(f"{exc.reason}{option}", 2)


def _warn(item: Item) -> None:
    for warning in item.warnings:
        err_console.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)


def _describe(item: Item) -> str:
    f = flat.from_dataset(item.dataset)
    return (f"item {item.id} [{item.status}]: {f['patient_id']} {f['patient_name']}, {f['modality']} on "
            f"{f['station_aet']} at {f['start']}, accession {f['accession_number'] or '-'}, "
            f"study {f['study_instance_uid']}")


def _table(found: list[Item], title: str) -> Table:
    table = Table("ID", "Status", "Start", "Station", "Mod", "Patient ID", "Patient name", "Accession",
                  "Procedure", "Images", title=title)
    for item in found:
        f = flat.from_dataset(item.dataset)
        table.add_row(str(item.id), item.status, f["start"] or "", f["station_aet"] or "", f["modality"] or "",
                      f["patient_id"] or "", f["patient_name"] or "", f["accession_number"] or "",
                      f["step_description"] or f["requested_procedure_description"] or "",
                      "yes" if item.study_received else "")
    return table


@app.command()
@with_settings
@with_item_fields
def add(settings: config.Settings, fields: dict[str, str]) -> None:
    """Schedule an item, e.g. --patient-id P1 --patient-name DOE^JANE --modality CT --station-aet CT1
    --start "2026-11-22 09:30". Creates the data directory if needed."""
    pacs = open_pacs(settings, create=True)
    scheduled = _checked(lambda: pacs.worklist.schedule(flat.to_dataset(fields), origin="cli"))
    for item in scheduled:
        console.print(f"scheduled {_describe(item)}", highlight=False)
    _warn(scheduled[0])  # the same for every step of the request


@app.command("list")
@with_settings
def list_(settings: config.Settings,
          day: Annotated[Optional[str], typer.Option("--date", help="Start date or range (YYYYMMDD[-YYYYMMDD]); "
                                                                     "'today'.")] = None,
          station: Annotated[Optional[str], typer.Option(help="Station AE title (wildcards allowed).")] = None,
          modality: Annotated[Optional[str], typer.Option(help="Modality.")] = None,
          patient_id: Annotated[Optional[str], typer.Option(help="Patient ID (wildcards allowed).")] = None,
          status: Annotated[Optional[list[str]], typer.Option(help="Status (repeatable); default: open ones.")] = None,
          all_: Annotated[bool, typer.Option("--all", help="Every status.")] = False,
          limit: int = 200, offset: int = 0) -> None:
    """Items as a table, in schedule order."""
    keys = {k: v for k, v in {"ScheduledProcedureStepStartDate": _day(day), "ScheduledStationAETitle": station,
                               "Modality": modality, "PatientID": patient_id}.items() if v}
    statuses = None if all_ else [s.upper() for s in status] if status else list(OPEN)
    identifier = mwl.identifier(keys, return_keys=False)
    items.normalise(identifier)  # "--modality mr" asks for MR, as items are stored
    pacs = open_pacs(settings)
    total, found = pacs.worklist.list(identifier, statuses=statuses, limit=limit, offset=offset)
    console.print(_table(found, f"{len(found)} of {total} items"))


def _day(value: str | None) -> str | None:
    return date.today().strftime("%Y%m%d") if value == "today" else value


@app.command()
@with_settings
def show(settings: config.Settings, item_id: int,
         as_json: Annotated[bool, typer.Option("--json", help="The item as DICOM JSON.")] = False) -> None:
    """One item: its fields, status and whether its images arrived."""
    item = open_pacs(settings).worklist.get(item_id)
    if as_json:
        console.print_json(json.dumps(item.dataset.to_json_dict()))
        return
    console.print(_describe(item), highlight=False)
    for name, value in flat.from_dataset(item.dataset).items():
        if value not in (None, "", []):
            console.print(f"  {name}: {value}", highlight=False)
    console.print(f"  images received: {'yes' if item.study_received else 'no'}; MPPS: {item.mpps_uid or '-'}",
                  highlight=False)


@app.command()
@with_settings
@with_item_fields
def update(settings: config.Settings, item_id: int, fields: dict[str, str]) -> None:
    """Change fields of an open item (only the options given)."""
    pacs = open_pacs(settings)
    item = _checked(lambda: pacs.worklist.update(item_id, flat.to_dataset(fields)))
    console.print(f"updated {_describe(item)}", highlight=False)
    _warn(item)


@app.command()
@with_settings
def cancel(settings: config.Settings, item_id: int) -> None:
    """Cancel a scheduled item (it is no longer offered to modalities)."""
    console.print(f"canceled {_describe(open_pacs(settings).worklist.cancel(item_id))}", highlight=False)


@app.command()
@with_settings
def delete(settings: config.Settings, item_id: int) -> None:
    """Remove an item altogether."""
    open_pacs(settings).worklist.delete(item_id)
    console.print(f"deleted item {item_id}", highlight=False)


@app.command("import")
@with_settings
def import_(settings: config.Settings,
            paths: Annotated[list[Path], typer.Argument(help=".wl files, or folders of them (as wlmscpfs and "
                                                              "Orthanc's worklist plugin use).")]) -> None:
    """Import worklist files in bulk (creating the data directory if needed); files wlmscpfs would not serve
    are skipped and listed."""
    pacs = open_pacs(settings, create=True)
    try:
        with progress_bar() as bar:
            bar.add_task("importing worklist files", total=None)
            summary = wlfile.import_files(pacs.worklist, paths)
    except FileNotFoundError as exc:
        fail(str(exc))
    console.print(f"imported {summary.added} items; {summary.duplicates} already present; "
                  f"{len(summary.invalid)} skipped", highlight=False)
    for name, reason in summary.invalid[:20]:
        console.print(f"  skipped {name}: {reason}", highlight=False)


@app.command()
@with_settings
def export(settings: config.Settings, out: Annotated[Path, typer.Argument(help="Folder (e.g. WLDIR/AETITLE).")],
           all_: Annotated[bool, typer.Option("--all", help="Closed items too.")] = False) -> None:
    """Write items as .wl files (Part-10, with a lockfile) that wlmscpfs serves unchanged."""
    count = wlfile.export_files(open_pacs(settings).worklist, out, statuses=STATUSES if all_ else OPEN)
    console.print(f"exported {count} items to {out}", highlight=False)


@app.command()
@with_settings(settings=CLIENT_SETTINGS)
def find(settings: config.Settings,
         remote: Annotated[str, typer.Option("--remote", "-r", help="Known node, AE title, or [AET@]HOST:PORT.")],
         keys: Annotated[Optional[list[str]], typer.Argument(help="KEYWORD=VALUE query keys, e.g. Modality=CT "
                                                                   "ScheduledProcedureStepStartDate=20261122.")] = None,
         as_json: Annotated[bool, typer.Option("--json", help="Print DICOM JSON.")] = False) -> None:
    """Query a remote Modality Worklist SCP (MWL C-FIND) and print the answers."""
    pairs = {}
    for item in keys or []:
        name, sep, value = item.partition("=")
        if not sep:
            fail(f"{item!r}: expected KEYWORD=VALUE", 2)
        pairs[name.strip()] = value
    from hounsfield.tls import Outgoing

    answers = list(client.find(dicom_peer(settings, remote), mwl.identifier(pairs), settings.ae_title,
                               Outgoing(settings)))  # a node of the config file flagged tls: over TLS
    if as_json:
        console.print_json(json.dumps([a.to_json_dict() for a in answers]))
        return
    table = Table("Start", "Station", "Mod", "Patient ID", "Patient name", "Accession", "Procedure", "Step",
                  title=f"{len(answers)} answers")
    for a in answers:
        step = (a.get("ScheduledProcedureStepSequence") or [None])[0] or {}
        start = f"{step.get('ScheduledProcedureStepStartDate', '')} {step.get('ScheduledProcedureStepStartTime', '')}"
        table.add_row(start,
                      str(step.get("ScheduledStationAETitle", "") or ""), str(step.get("Modality", "") or ""),
                      str(a.get("PatientID", "") or ""), str(a.get("PatientName", "") or ""),
                      str(a.get("AccessionNumber", "") or ""), str(a.get("RequestedProcedureDescription", "") or ""),
                      str(step.get("ScheduledProcedureStepID", "") or ""))
    console.print(table)


@app.command()
@with_settings
def queries(settings: config.Settings, limit: int = 20,
            ae: Annotated[Optional[str], typer.Option("--ae", help="Only this calling AE title.")] = None) -> None:
    """The MWL queries modalities sent, newest first ("why didn't my modality see it?")."""
    total, found = open_pacs(settings).worklist.queries.recent(limit=limit, calling_ae=ae)
    table = Table("ID", "Received", "Calling AE", "Address", "Keys", "Answers", "Status", title=f"{total} queries")
    for q in found:
        table.add_row(str(q.id), q.received_at.strftime("%Y-%m-%d %H:%M:%S"), q.calling_ae, q.address,
                      mwl.summary(q.keys), str(q.answers), f"0x{q.status:04X}" + (f" {q.error}" if q.error else ""))
    console.print(table)


@app.command()
@with_settings
def explain(settings: config.Settings, query_id: int, item_id: int) -> None:
    """Replay a logged MWL query against an item: which keys matched, which did not, and why."""
    entries = open_pacs(settings).worklist.explain(query_id, item_id)
    for key, ok, reason in entries:
        console.print(f"[{'green' if ok else 'red'}]{'match' if ok else 'MISS '}[/] {key}: {reason}", soft_wrap=True,
                      highlight=False)
    verdict = all(ok for _, ok, _ in entries)
    console.print(f"query {query_id} {'would' if verdict else 'would not'} return item {item_id}", highlight=False)
