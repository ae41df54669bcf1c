"""``hounsfield hl7 …``: the HL7 message log of the local archive (log, show), a logged message applied again
(replay), and HL7 messages sent to any MLLP receiver (send: an interface engine, or this server's HL7 port).

No ``from __future__ import annotations`` here: Typer reads the options from the annotations of signatures
rebuilt by ``with_settings``."""

import re
from pathlib import Path
from typing import Annotated, Optional

import hl7
import typer
from rich.markup import escape
from rich.table import Table

from hounsfield import config
from hounsfield.cli_common import console, data_dir_text, fail, open_pacs, with_settings
from hounsfield.hl7 import message, mllp
from hounsfield.hl7.log import LoggedMessage
from hounsfield.tls import client_context

app = typer.Typer(help="HL7 v2 orders and patient updates: the message log, replay, send.", no_args_is_help=True)
SEND_SETTINGS = ("log_level", "tls_ca", "tls_cert", "tls_key")
MAX_LIMIT = 10000


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="hl7")


def _when(logged: LoggedMessage) -> str:
    return logged.received_at.isoformat(sep=" ", timespec="seconds").removesuffix("+00:00")


@app.command("log")
@with_settings
def log_(settings: config.Settings,
         limit: Annotated[int, typer.Option(help=f"At most this many messages (1-{MAX_LIMIT}).")] = 50,
         code: Annotated[Optional[str], typer.Option("--ack", help="Only those acknowledged AA, AE or AR.")] = None,
         kind: Annotated[Optional[str], typer.Option("--type", help="Only this message type, e.g. ORM^O01.")] = None,
         patient_id: Annotated[Optional[str], typer.Option(help="Only messages about this Patient ID.")] = None,
         ) -> None:
    """The HL7 messages received, newest first: when, from where, type, control ID, acknowledgment, outcome."""
    if not 1 <= limit <= MAX_LIMIT:
        fail(f"--limit must be between 1 and {MAX_LIMIT}, not {limit}", 2)
    if code is not None and code.upper() not in ("AA", "AE", "AR"):
        fail(f"--ack {code!r}: one of AA, AE, AR", 2)
    pacs = open_pacs(settings)
    try:
        total, found = pacs.hl7.messages.recent(limit=limit, ack_code=code.upper() if code else None,
                                                message_type=kind, patient_id=patient_id)
    finally:
        pacs.close()
    if not found:
        console.print(f"no HL7 messages in the log ({data_dir_text(settings)})", highlight=False)
        return
    table = Table("id", "received (UTC)", "from", "type", "control ID", "ACK", "outcome",
                  title=f"{len(found)} of {total} HL7 messages, newest first")
    for m in found:
        replay = f" (replay of {m.replay_of})" if m.replay_of else ""
        table.add_row(str(m.id), _when(m), escape(m.address + replay), escape(m.message_type),
                      escape(m.control_id), m.ack_code, escape(m.outcome))
    console.print(table)


@app.command()
@with_settings
def show(settings: config.Settings,
         message_id: Annotated[int, typer.Argument(help="The message's id in the log (hounsfield hl7 log).")]) -> None:
    """One logged message: its segments as received, the acknowledgment sent back, and what was done."""
    pacs = open_pacs(settings)
    try:
        m = pacs.hl7.messages.get(message_id)
    finally:
        pacs.close()
    replay = f", replay of message {m.replay_of}" if m.replay_of else ""
    console.print(f"message {m.id}: {m.message_type or '(no header)'} {m.control_id} from {m.address}, received "
                  f"{_when(m)} UTC{replay}; {len(m.raw)} bytes{'' if m.complete else ' (cut: too long)'}",
                  markup=False, highlight=False)
    console.print(message.readable(m.raw), markup=False, highlight=False)
    console.print(f"acknowledgment {m.ack_code}:", markup=False, highlight=False)
    console.print(m.ack.replace("\r", "\n").strip(), markup=False, highlight=False)
    items = f" (items {', '.join(map(str, m.item_ids))})" if m.item_ids else ""
    console.print(f"outcome: {m.outcome}{items}", markup=False, highlight=False)


@app.command()
@with_settings
def replay(settings: config.Settings,
           message_id: Annotated[int, typer.Argument(help="The message's id in the log.")]) -> None:
    """Apply a logged message to the worklist again (after fixing what made it fail); it is logged anew."""
    import getpass

    pacs = open_pacs(settings)
    try:
        again = pacs.hl7.replay(message_id, actor=f"cli:{getpass.getuser()}")
    finally:
        pacs.close()
    console.print(f"message {message_id} replayed as message {again.id}: {again.ack_code} {again.outcome}",
                  markup=False, highlight=False)
    if again.ack_code != "AA":
        raise typer.Exit(1)


_ADDRESS = re.compile(r"(?P<host>\[[^\]]+\]|[^:]+):(?P<port>\d{1,5})")


def _messages(text: bytes) -> list[bytes]:
    """The messages of a file: each begins with MSH at the start of a line; segments may end with CR, CR LF
    or LF (an editor's), and are sent ending with CR (HL7 v2.5.1 2.5.2)."""
    lines = [line for line in re.split(rb"\r\n|\r|\n", text) if line.strip()]
    found: list[list[bytes]] = []
    for line in lines:
        if line.startswith(b"MSH") or not found:
            found.append([])
        found[-1].append(line)
    return [b"\r".join(segments) + b"\r" for segments in found]


def _summary(answer: bytes) -> tuple[str, str]:
    """(MSA-1, what the ACK says: MSA-3 and ERR-8) of an acknowledgment."""
    try:
        ack = hl7.parse(message.readable(answer).replace("\n", "\r"))
        msa = ack.segment("MSA")
    except Exception:  # noqa: BLE001 - whatever came back is reported, never a traceback
        return "", f"not an acknowledgment: {message.readable(answer)[:200]!r}"
    errors = [message.value(s, 8) for s in ack if str(s[0][0]) == "ERR"]
    return message.value(msa, 1), "; ".join(t for t in errors if t) or message.value(msa, 3)


@app.command()
@with_settings(settings=SEND_SETTINGS)
def send(settings: config.Settings,
         file: Annotated[Path, typer.Argument(help="A file of HL7 v2 messages (each beginning with MSH).")],
         to: Annotated[str, typer.Option("--to", help="The MLLP receiver, HOST:PORT.")],
         tls: Annotated[bool, typer.Option("--tls", help="Over TLS, checking the receiver's certificate against "
                                           "--tls-ca (--tls-cert/--tls-key: the client certificate).")] = False,
         timeout: Annotated[float, typer.Option(help="Seconds to wait for each acknowledgment.")] = 30.0) -> None:
    """Send the messages of a file over MLLP, one at a time, each after the last one's acknowledgment; print
    what each acknowledgment says (exit 1 unless every one is AA)."""
    address = _ADDRESS.fullmatch(to)
    if address is None or not 0 < int(address["port"]) < 65536:
        fail(f"--to {to!r} is not HOST:PORT", 2)
    host = address["host"].strip("[]")
    try:
        messages = _messages(file.read_bytes())
    except OSError as exc:
        fail(f"{file}: cannot read it ({exc.strerror or exc})")
    if not messages:
        fail(f"{file}: no HL7 message in it")
    context = client_context(settings) if tls else None
    accepted = 0
    for number, data in enumerate(messages, start=1):
        control = message.header(data).control_id or f"message {number}"
        try:
            answer = mllp.send(host, int(address["port"]), data, timeout=timeout, context=context)
        except (OSError, mllp.FramingError) as exc:
            fail(f"{control}: no acknowledgment from {to} ({getattr(exc, 'strerror', None) or exc})")
        code, said = _summary(answer)
        accepted += code == "AA"
        console.print(f"{control}: {code or '?'} {said}".rstrip(), markup=False, highlight=False)
    if accepted != len(messages):
        raise typer.Exit(1)
