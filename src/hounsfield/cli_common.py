"""What every ``hounsfield`` command module shares: the console, one-line errors, the options of commands
that act on the local archive, opening it, a progress bar, and naming a remote node.

The root command (``hounsfield.cli``) and the feature packages' commands (``worklist.cli``, ``imaging.cli``)
import it; it imports none of them.
"""

from __future__ import annotations

import functools
import inspect
import logging
import typing
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from hounsfield import config
from hounsfield.errors import HounsfieldError

console = Console()
err_console = Console(stderr=True, soft_wrap=True)  # an error stays one line, however long

# The options every command acting on the local archive takes, each with its environment variable.
COMMON_OPTIONS: dict[str, tuple[type, Any]] = {
    "config_file": (Optional[Path], typer.Option("--config", envvar="HOUNSFIELD_CONFIG",
                                                 help="TOML settings file.")),
    "data_dir": (Optional[Path], typer.Option("--data-dir", envvar="HOUNSFIELD_DATA_DIR",
                                              help="Data directory (files + SQLite index).")),
    "database_url": (Optional[str], typer.Option("--database-url", envvar="HOUNSFIELD_DATABASE_URL",
                                                 help="SQLAlchemy URL of the index (default SQLite in the data dir).")),
    "ae_title": (Optional[str], typer.Option("--ae-title", envvar="HOUNSFIELD_AE_TITLE",
                                             help="Our AE title.")),
    "dicom_port": (Optional[int], typer.Option("--dicom-port", envvar="HOUNSFIELD_DICOM_PORT",
                                               help="DICOM port.")),
    "http_host": (Optional[str], typer.Option("--http-host", envvar="HOUNSFIELD_HTTP_HOST",
                                              help="HTTP listen address.")),
    "http_port": (Optional[int], typer.Option("--http-port", envvar="HOUNSFIELD_HTTP_PORT",
                                              help="HTTP port.")),
}


def fail(message: str, code: int = 1) -> None:
    err_console.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(code)


def with_settings(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add the common options to a command and pass it the loaded ``settings`` instead."""
    sig = inspect.signature(func)
    hints = typing.get_type_hints(func, include_extras=True)  # resolve the postponed annotations for Typer
    own = [p.replace(annotation=hints.get(name, p.annotation)) for name, p in sig.parameters.items()
           if name != "settings"]
    extra = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[kind, opt], default=None)
             for name, (kind, opt) in COMMON_OPTIONS.items()]

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        common = {name: kwargs.pop(name, None) for name in COMMON_OPTIONS}
        config_file = common.pop("config_file")
        try:
            settings = config.load(config_file, **common)
        except ValueError as exc:
            fail(str(exc), 2)
        logging.basicConfig(level=getattr(logging, settings.log_level.upper(), logging.INFO),
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        # The server logs pynetdicom's warnings; a client command reports its own one-line errors.
        logging.getLogger("pynetdicom").setLevel(logging.WARNING if func.__name__ == "serve" else logging.CRITICAL)
        logging.getLogger("alembic").setLevel(logging.WARNING)  # its INFO lines say nothing a user needs
        try:
            return func(*args, settings=settings, **kwargs)
        except HounsfieldError as exc:
            fail(str(exc))

    wrapper.__signature__ = sig.replace(parameters=[*own, *extra])  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in [*own, *extra]}
    return wrapper


def open_pacs(settings: config.Settings):  # noqa: ANN201
    from hounsfield.pacs import Pacs

    try:
        return Pacs(settings)
    except Exception as exc:  # noqa: BLE001 - a database that cannot be opened is a one-line error
        fail(f"cannot open the index at {settings.index_url}: {exc}")


def progress_bar() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=err_console, transient=True)


def dicom_peer(settings: config.Settings, spec: str) -> config.Peer:
    """The remote node a DICOM client command talks to — from the config file, a HOST:PORT address, or a node
    added to the local archive's registry — with this process's DICOM layer set up as the settings say
    (``dicom_fast_path``: the server's fixes, or stock pynetdicom)."""
    from hounsfield.dimse import fastpath
    from hounsfield.peers import parse_address

    fastpath.install(settings.dicom_fast_path)
    for peer in settings.peers:
        if spec in (peer.name, peer.ae_title):
            return peer
    return parse_address(spec) or open_pacs(settings).peers.resolve(spec)
