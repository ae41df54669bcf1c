"""The ``hounsfield`` command: serve, import, ls, the DICOM client commands, and (registered from their
packages) the imaging and worklist commands. Errors are one line naming the cause, never a traceback."""

from __future__ import annotations

import signal
import socket
import ssl
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated, Optional

import typer
from pydicom.dataset import Dataset
from rich.table import Table

from hounsfield import config
from hounsfield.cli_common import (
    SERVE_SETTINGS,
    STORE_SETTINGS,
    TLS_CLIENT_SETTINGS,
    console,
    data_dir_text,
    dicom_peer,
    fail,
    open_pacs,
    progress_bar,
    with_settings,
)
from hounsfield.dimse.status import describe
from hounsfield.errors import HounsfieldError
from hounsfield.tls import Outgoing, server_context

app = typer.Typer(help="hounsfield: a small, fast PACS (archive, worklist, DICOMweb, viewer).",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)


def version() -> str:
    """The installed distribution's version (the package's own when it runs from a source tree)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("hounsfield")
    except PackageNotFoundError:
        from hounsfield import __version__

        return __version__


def _print_version(value: bool) -> None:
    if value:
        console.print(f"hounsfield {version()}", highlight=False)
        raise typer.Exit()


@app.callback()
def _root(show_version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                                     help="Print the version and exit.")] = False) -> None:
    """hounsfield: a small, fast PACS (archive, worklist, DICOMweb, viewer)."""


def _bind_http(settings: config.Settings) -> socket.socket:
    """The HTTP listening socket, bound before anything starts (uvicorn serves on it)."""
    where = f"HTTP {settings.http_host}:{settings.http_port}"
    try:
        family, kind, proto, _, address = socket.getaddrinfo(settings.http_host or None, settings.http_port,
                                                             type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        fail(f"cannot listen on {where}: {exc.strerror or exc}")
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        fail(f"cannot listen on {where}: {exc.strerror or exc}")
    return sock


def _has_admin(settings: config.Settings) -> bool:
    """Whether the archive has an enabled admin user (no data directory yet: it cannot have one, and ``serve``
    must not create it only to refuse)."""
    if not Path(settings.data_dir).is_dir():
        return False
    pacs = open_pacs(settings, announce=False)
    try:
        return pacs.users.has_admin()
    finally:
        pacs.close()


def _tls_contexts(settings: config.Settings) -> ssl.SSLContext | None:
    """The context of HTTPS, None for plain HTTP (no ``tls_cert``), once every TLS setting ``serve`` uses has
    been checked: a certificate, key or CA bundle that cannot be used is a ``tls.TlsError`` (one line). A TLS
    port that is the plain one is refused too: PS3.15 B.1 gives TLS a port of its own, and both servers would
    share it (SO_REUSEPORT), each taking part of the connections."""
    if settings.dicom_tls_port:
        if settings.dicom_tls_port == settings.dicom_port:
            fail(f"dicom_tls_port and dicom_port are both {settings.dicom_port}: DICOM over TLS needs a port of "
                 f"its own")
        server_context(settings, client_certificates=settings.dicom_tls_verify_clients)
    return server_context(settings) if settings.tls_cert or settings.tls_key else None


def _dicom_ports(settings: config.Settings) -> list[tuple[str, int]]:
    """The DICOM ports ``serve`` listens on, as its messages name them."""
    return [("DICOM port", settings.dicom_port)] + ([("DICOM TLS port", settings.dicom_tls_port)]
                                                     if settings.dicom_tls_port else [])


@app.command()
@with_settings(settings=SERVE_SETTINGS)
def serve(settings: config.Settings,
          plugin: Annotated[Optional[list[Path]], typer.Option(
              "--plugin", metavar="FILE", help="A Python plugin file to load (repeatable; added to the plugins "
              "setting).")] = None) -> None:
    """Run the DICOM service and the HTTP service until SIGINT/SIGTERM (creates the data directory if needed)."""
    from hounsfield import processes

    processes.warm_up(settings)
    import uvicorn

    from hounsfield.dimse.server import claim_port
    from hounsfield.hl7 import mllp
    from hounsfield.plugins.api import PluginError
    from hounsfield.plugins.loader import load_all, paths_of
    from hounsfield.web.app import create_app
    from hounsfield.web.auth import logins_on
    from hounsfield.web.security import check_serving

    if plugin:  # issue 14: --plugin FILE adds to the plugins setting (the DICOM processes load the same files)
        settings = settings.with_overrides(plugins=", ".join(filter(None, [settings.plugins, *map(str, plugin)])))
    plugin_paths = paths_of(settings.plugins)
    settings = settings.with_overrides(plugins=", ".join(map(str, plugin_paths)))
    try:
        plugins = load_all(plugin_paths)  # before anything listens: a plugin that cannot load is one line
    except PluginError as exc:
        fail(str(exc))
    check_serving(settings)  # issue 12: no HTTP beyond loopback without logins unless insecure_http; CORS, hosts
    https = _tls_contexts(settings)  # issue 12: a certificate or key that cannot be used, before anything listens
    http_socket = _bind_http(settings)  # both ports first: a port taken is one line, before anything is created
    for what, port in _dicom_ports(settings):
        try:
            claim_port(settings.dicom_host, port)
        except OSError as exc:
            http_socket.close()
            fail(f"cannot listen on {what} {port} of {settings.dicom_host}: {exc.strerror or exc}")
    if settings.hl7_tls:  # issue 14: a certificate or key the HL7 TLS port cannot use, before anything listens
        server_context(settings)
    hl7_socket = None
    if settings.hl7_port:
        try:
            hl7_socket = mllp.listening_socket(settings.hl7_host, settings.hl7_port)
        except OSError as exc:
            http_socket.close()
            fail(f"cannot listen on HL7 port {settings.hl7_port} of {settings.hl7_host}: {exc.strerror or exc}")
    if logins_on(settings) and not _has_admin(settings):
        http_socket.close()
        if hl7_socket is not None:
            hl7_socket.close()
        fail(f"logins are on (HTTP on {settings.http_host or 'every interface'}) and there is no admin user: create "
             f"one with `hounsfield user add NAME --role admin --password-stdin --data-dir {settings.data_dir}`, or "
             f"serve without logins with insecure_http = true (--insecure-http true, HOUNSFIELD_INSECURE_HTTP=true)")
    pacs = open_pacs(settings, create=True, announce=False)
    pacs.load_plugins(plugins)
    try:
        pacs.start_dicom()
    except OSError as exc:
        pacs.close()
        http_socket.close()
        fail(f"cannot listen on DICOM port {settings.dicom_port} of {settings.dicom_host}: {exc.strerror or exc}")
    if hl7_socket is not None:
        pacs.start_hl7(hl7_socket)
    pacs.start_events()  # issue 14: routing, the plugins' events and their on_started
    server = uvicorn.Server(uvicorn.Config(create_app(pacs), host=settings.http_host, port=settings.http_port,
                                           log_level="warning", access_log=False,
                                           ssl_context_factory=None if https is None else lambda *_: https))
    tls_port = f" (TLS on {settings.dicom_tls_port})" if settings.dicom_tls_port else ""
    hl7 = (f"HL7 MLLP{' over TLS' if settings.hl7_tls else ''} {settings.hl7_host}:{settings.hl7_port}, "
           if settings.hl7_port else "")
    console.print(f"hounsfield: DICOM {settings.ae_title}@{settings.dicom_host}:{settings.dicom_port}{tls_port}, "
                  f"HTTP {'https' if https else 'http'}://{settings.http_host}:{settings.http_port}, {hl7}"
                  f"data {data_dir_text(settings)}", highlight=False)
    # uvicorn re-raises SIGINT/SIGTERM once it has stopped; catching them here lets the DICOM service then
    # finish its in-flight associations before the process exits.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda _sig, _frame: None)
    processes.freeze_startup_heap()
    try:
        server.run(sockets=[http_socket])  # returns after SIGINT/SIGTERM
    finally:
        pacs.close()
        http_socket.close()
    if not server.started:
        fail(f"the HTTP service on {settings.http_host}:{settings.http_port} did not start")


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
@with_settings(settings=STORE_SETTINGS)
def import_(paths: Annotated[list[Path], typer.Argument(help="Files or folders (searched recursively).")],
            settings: config.Settings) -> None:
    """Import DICOM files into the archive (creating the data directory if needed); counts what was skipped
    and why."""
    files = _walk(paths)
    pacs = open_pacs(settings, create=True)
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
@with_settings(settings=STORE_SETTINGS)
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
            console.print(f"nothing in quarantine ({data_dir_text(settings)})", highlight=False)
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
    studies = search(pacs, "STUDY", filters, limit=100000, offset=0)
    table = Table("Patient", "Study date", "Study", "Series", "Mod", "Description", "Images",
                  title=f"{len(studies)} studies in {data_dir_text(settings)}")
    for st in studies:
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


@app.command()
@with_settings
def delete(settings: config.Settings,
           study_uid: Annotated[str, typer.Argument(help="Study Instance UID of the study to delete.")],
           yes: Annotated[bool, typer.Option("--yes", "-y", help="Delete without asking.")] = False) -> None:
    """Delete a study from the local archive: its index rows and its files (asks first, unless --yes)."""
    from hounsfield.web.api import search

    pacs = open_pacs(settings)
    try:
        found = search(pacs, "STUDY", {"StudyInstanceUID": study_uid}, limit=1, offset=0)
        if not found:
            fail(f"no study {study_uid} in {data_dir_text(settings)}")
        st = found[0]
        what = (f"study {study_uid} ({' '.join(x for x in (st['PatientID'], st['PatientName']) if x) or 'no patient'}"
                f", {st['StudyDescription'] or 'no description'}, {st['NumberOfStudyRelatedInstances']} instances)")
        if not yes:
            try:
                agreed = typer.confirm(f"Delete {what} from {data_dir_text(settings)}?", default=False)
            except typer.Abort:  # no answer: stdin closed
                agreed = False
            if not agreed:
                fail("nothing deleted (--yes deletes without asking)")
        removed = pacs.archive.delete("study", study_uid)
        console.print(f"deleted study {study_uid}: {removed} instances removed", highlight=False)
    finally:
        pacs.close()


# ---- the DICOM client ------------------------------------------------------------------------------
RemoteOpt = Annotated[str, typer.Option("--remote", "-r", help="Known node name or AE title, or [AET@]HOST:PORT.")]
KeysOpt = Annotated[Optional[list[str]], typer.Option("--key", "-k", help="Query key KEYWORD=VALUE (repeatable).")]
TlsOpt = Annotated[bool, typer.Option("--tls", help="Over TLS (the node's TLS port), checking its certificate "
                                      "against --tls-ca; --tls-cert/--tls-key are the client certificate. A node "
                                      "of the config file with tls = true is always reached over TLS.")]


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
@with_settings(settings=TLS_CLIENT_SETTINGS)
def echo(settings: config.Settings, remote: RemoteOpt, tls: TlsOpt = False) -> None:
    """C-ECHO a remote node."""
    from hounsfield.dimse import client

    peer = dicom_peer(settings, remote, tls=tls)
    status = client.echo(peer, settings.ae_title, Outgoing(settings))
    if status < 0:
        fail(f"C-ECHO {peer.ae_title}@{peer.host}:{peer.port}: no response")
    console.print(f"C-ECHO {peer.ae_title}@{peer.host}:{peer.port}: status {describe('C-ECHO', status)}",
                  highlight=False)
    if status != 0:
        raise typer.Exit(1)


@app.command()
@with_settings(settings=TLS_CLIENT_SETTINGS)
def store(settings: config.Settings, remote: RemoteOpt,
          paths: Annotated[list[Path], typer.Argument(help="Files or folders to send.")], tls: TlsOpt = False) -> None:
    """C-STORE files to a remote node."""
    from hounsfield.dimse import client

    peer = dicom_peer(settings, remote, tls=tls)
    files = _walk(paths)
    with progress_bar() as bar:
        task = bar.add_task(f"sending to {peer.ae_title}", total=len(files))
        results = client.store(peer, files, settings.ae_title, lambda _f, _s: bar.advance(task), Outgoing(settings))
    ok = sum(1 for s in results.values() if s == 0)
    console.print(f"sent {ok}/{len(files)} files to {peer.ae_title}", highlight=False)
    for f, s in results.items():
        if s != 0:
            console.print(f"  {f}: {'not sent' if s is None else 'status ' + describe('C-STORE', s)}",
                          highlight=False)
    if ok != len(files):
        raise typer.Exit(1)


@app.command()
@with_settings(settings=TLS_CLIENT_SETTINGS)
def find(settings: config.Settings, remote: RemoteOpt, keys: KeysOpt = None,
         level: Annotated[str, typer.Option(help="PATIENT, STUDY, SERIES or IMAGE.")] = "STUDY",
         model: Annotated[str, typer.Option(help="study or patient root.")] = "study",
         as_json: Annotated[bool, typer.Option("--json", help="Print DICOM JSON.")] = False,
         tls: TlsOpt = False) -> None:
    """C-FIND on a remote node; prints a table (or DICOM JSON)."""
    import json

    from hounsfield.dimse import client

    identifier = _identifier(level, keys)
    answers = list(client.find(dicom_peer(settings, remote, tls=tls), identifier, settings.ae_title, model,
                               Outgoing(settings)))
    if as_json:
        console.print_json(json.dumps([a.to_json_dict() for a in answers]))
        return
    columns = [e.keyword for e in identifier if e.keyword != "QueryRetrieveLevel"]
    table = Table(*columns, title=f"{len(answers)} answers")
    for a in answers:
        table.add_row(*[str(a.get(c, "") or "") for c in columns])
    console.print(table)


@app.command()
@with_settings(settings=TLS_CLIENT_SETTINGS)
def move(settings: config.Settings, remote: RemoteOpt, keys: KeysOpt = None,
         dest: Annotated[str, typer.Option("--dest", help="Destination AE title.")] = "",
         level: str = "STUDY", model: str = "study", tls: TlsOpt = False) -> None:
    """C-MOVE from a remote node to a destination AE."""
    from hounsfield.dimse import client

    summary = client.move(dicom_peer(settings, remote, tls=tls), _identifier(level, keys),
                          dest or settings.ae_title, settings.ae_title, model, Outgoing(settings))
    console.print(f"C-MOVE status {describe('C-MOVE', summary.status)}: {summary.completed} completed, "
                  f"{summary.failed} failed, {summary.warning} warning", highlight=False)
    if summary.status != 0:
        raise typer.Exit(1)


@app.command()
@with_settings(settings=TLS_CLIENT_SETTINGS)
def get(settings: config.Settings, remote: RemoteOpt, keys: KeysOpt = None,
        out: Annotated[Path, typer.Option("--out", help="Folder for the received files.")] = Path("."),
        level: str = "STUDY", model: str = "study", tls: TlsOpt = False) -> None:
    """C-GET from a remote node into a folder."""
    from hounsfield.dimse import client

    summary = client.get(dicom_peer(settings, remote, tls=tls), _identifier(level, keys), out, settings.ae_title,
                         model, Outgoing(settings))
    console.print(f"C-GET status {describe('C-GET', summary.status)}: {len(summary.received)} received into {out}, "
                  f"{summary.failed} failed", highlight=False)
    if summary.status != 0:
        raise typer.Exit(1)


_registered = False


def _register_plugins() -> None:
    """Commands that live with their feature packages (once per process: the tests run commands in theirs)."""
    global _registered
    if _registered:
        return
    _registered = True
    from hounsfield.audit import cli as audit_cli
    from hounsfield.auth import cli as user_cli
    from hounsfield.deid import cli as deid_cli
    from hounsfield.hl7 import cli as hl7_cli
    from hounsfield.imaging import cli as imaging_cli
    from hounsfield import sample
    from hounsfield.rt import cli as rt_cli
    from hounsfield.worklist import cli as worklist_cli

    imaging_cli.register(app)
    rt_cli.register(app)
    worklist_cli.register(app)
    sample.register(app)
    user_cli.register(app)
    audit_cli.register(app)
    deid_cli.register(app)
    hl7_cli.register(app)


def main() -> None:
    _register_plugins()
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
