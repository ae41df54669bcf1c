"""``hounsfield audit``: the audit trail of the local archive as a table, newest first, filtered like
``GET /api/audit``.

No ``from __future__ import annotations`` here: Typer reads the options from the annotations of signatures
rebuilt by ``with_settings``."""

from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from hounsfield import config
from hounsfield.audit.actions import ACTIONS, OUTCOMES
from hounsfield.audit.trail import parse_time
from hounsfield.cli_common import console, data_dir_text, fail, open_pacs, with_settings
from hounsfield.errors import InvalidQuery

MAX_LIMIT = 10000


def register(root: typer.Typer) -> None:
    root.command("audit")(audit)


@with_settings
def audit(settings: config.Settings,
          action: Annotated[Optional[list[str]], typer.Option(help=f"Action (repeatable): {', '.join(ACTIONS)}.")]
          = None,
          outcome: Annotated[Optional[str], typer.Option(help=f"Outcome: {', '.join(OUTCOMES)}.")] = None,
          user: Annotated[Optional[str], typer.Option(help="User name.")] = None,
          calling_ae: Annotated[Optional[str], typer.Option("--ae", help="Calling AE title of a DICOM node.")]
          = None,
          patient_id: Annotated[Optional[str], typer.Option(help="Patient ID.")] = None,
          study: Annotated[Optional[str], typer.Option(help="Study Instance UID.")] = None,
          since: Annotated[Optional[str], typer.Option(help="From this date or time (ISO 8601, UTC unless it "
                                                            "says otherwise).")] = None,
          until: Annotated[Optional[str], typer.Option(help="Before this time; a day alone: to its end.")] = None,
          limit: Annotated[int, typer.Option(help=f"At most this many events (1-{MAX_LIMIT}).")] = 100) -> None:
    """Who did what to which patient and study, when, with which outcome (the newest events first)."""
    unknown = [a for a in action or [] if a not in ACTIONS]
    if unknown:
        fail(f"unknown action {unknown[0]!r}: one of {', '.join(ACTIONS)}", 2)
    if outcome is not None and outcome not in OUTCOMES:
        fail(f"unknown outcome {outcome!r}: one of {', '.join(OUTCOMES)}", 2)
    if not 1 <= limit <= MAX_LIMIT:
        fail(f"--limit must be between 1 and {MAX_LIMIT}, not {limit}", 2)
    try:
        bounds = {"since": parse_time(since) if since else None,
                  "until": parse_time(until, end=True) if until else None}
    except InvalidQuery as exc:
        fail(str(exc), 2)
    pacs = open_pacs(settings)
    try:
        events = pacs.audit.search(action=action, outcome=outcome, user=user, ae_title=calling_ae,
                                   patient_id=patient_id, study_instance_uid=study, **bounds, limit=limit)
    finally:
        pacs.close()
    if not events:
        console.print(f"no audit events match ({data_dir_text(settings)})", highlight=False)
        return
    table = Table("at (UTC)", "action", "outcome", "who", "patient", "study", "detail",
                  title=f"{len(events)} audit events, newest first")
    for e in events:
        who = e["user"] or " ".join(x for x in (e["ae_title"], e["address"] and f"at {e['address']}") if x)
        patient = " ".join(x for x in (e["patient_id"], e["patient_name"]) if x)
        cells = (e["at"].isoformat(sep=" ", timespec="seconds").removesuffix("+00:00"), e["action"], e["outcome"],
                 who, patient, e["study_instance_uid"], e["detail"])
        table.add_row(*(escape(c) for c in cells))  # names and details are data, not markup
    console.print(table)
