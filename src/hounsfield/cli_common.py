"""What every ``hounsfield`` command module shares: the console, one-line errors, the setting options of
commands (one flag per setting, named after it), opening the local archive, a progress bar, and naming a
remote node.

The root command (``hounsfield.cli``) and the feature packages' commands (``worklist.cli``, ``imaging.cli``)
import it; it imports none of them.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
import typing
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Callable, Iterator, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from hounsfield import config
from hounsfield.errors import HounsfieldError

# The archives the running command opened (open_pacs), closed when it ends (with_settings): its audit events are
# written and its database connections given back before it returns, not by an exit hook of the interpreter.
_opened: list[Any] = []

console = Console(soft_wrap=True)  # a line of output stays one line (tables still fit the width)
err_console = Console(stderr=True, soft_wrap=True)  # an error stays one line, however long

CHOOSE_DATA_DIR = "choose one with --data-dir, HOUNSFIELD_DATA_DIR or data_dir in the config file"

# Which settings a command takes as flags. Every command acting on the local archive takes BASE_SETTINGS
# (ae_title too: the archive's own AE title, the calling AE title of the client commands); a flag a command
# would ignore is not offered. The environment variables and the config file set every setting whatever the
# command.
BASE_SETTINGS: tuple[str, ...] = ("data_dir", "database_url", "ae_title", "log_level")
STORE_SETTINGS: tuple[str, ...] = (*BASE_SETTINGS, "duplicate_policy", "uid_policy", "max_sequence_depth", "fsync")
CLIENT_SETTINGS: tuple[str, ...] = (*BASE_SETTINGS, "dicom_fast_path")
# The DICOM client commands that may go over TLS (``--tls``, or a node flagged ``tls``): the CA bundle the node's
# certificate is checked against, and the client certificate.
TLS_CLIENT_SETTINGS: tuple[str, ...] = (*CLIENT_SETTINGS, "tls_ca", "tls_cert", "tls_key")
SERVE_SETTINGS: tuple[str, ...] = tuple(s.name for s in config.SETTINGS)

_BY_NAME = {s.name: s for s in config.SETTINGS}
_CONFIG_OPTION = (Optional[Path], typer.Option("--config", envvar="HOUNSFIELD_CONFIG", help="TOML settings file."))


def flag_of(name: str) -> str:
    """The command-line flag of a setting: ``dicom_host`` → ``--dicom-host``."""
    return f"--{name.replace('_', '-')}"


def setting_option(name: str) -> tuple[Any, Any]:
    """(annotation, typer.Option) of a setting's flag. Values reach ``config.load`` as given (as text, booleans
    too: ``--fsync false``), so a wrong one is reported there in one line naming the setting and the type it
    needs, like a wrong one in the file or the environment; the environment variable is read by
    ``config.load`` as well, not by Click."""
    s = _BY_NAME[name]
    kind = config.kind_of(s)
    default = "SQLite in the data directory" if name == "database_url" else s.default
    default = str(default).lower() if kind == "boolean" else default
    text = f"{s.help} Env: {config.env_var(name)}. Default: {default}."
    return Optional[str], typer.Option(flag_of(name), help=text, show_default=False, metavar=kind.upper())


def fail(message: str, code: int = 1) -> typing.NoReturn:
    err_console.print(f"[red]error:[/red] {escape(message)}", highlight=False)
    raise typer.Exit(code)


def note(message: str) -> None:
    """A dim line on stderr: what a command is working on (its data directory…), apart from its output."""
    err_console.print(message, style="dim", markup=False, highlight=False)


@contextmanager
def one_line_errors(unexpected: Callable[[Exception], str],
                    report: Callable[[str], Any] = fail) -> Iterator[None]:
    """Quiet pydicom's warnings and turn any failure into one ``report``ed error line (exit code 1): a domain
    error as it says itself, anything else as ``unexpected`` words it. The promise: never a traceback."""
    logging.getLogger("pydicom").setLevel(logging.CRITICAL)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            yield
        except (typer.Exit, typer.Abort, KeyboardInterrupt):
            raise
        except HounsfieldError as exc:
            report(str(exc))
        except Exception as exc:  # noqa: BLE001 - see the docstring
            report(unexpected(exc))


def with_settings(func: Callable[..., Any] | None = None, *,
                  settings: tuple[str, ...] = BASE_SETTINGS) -> Any:
    """Add ``--config`` and the flags of ``settings`` to a command and pass it the loaded ``settings``
    instead. Used bare (``@with_settings``) or with the settings the command takes as flags."""
    if func is None:
        return lambda f: with_settings(f, settings=settings)
    names = tuple(settings)
    sig = inspect.signature(func)
    hints = typing.get_type_hints(func, include_extras=True)  # resolve the postponed annotations for Typer
    own = [p.replace(annotation=hints.get(name, p.annotation)) for name, p in sig.parameters.items()
           if name != "settings"]
    options = {"config_file": _CONFIG_OPTION, **{name: setting_option(name) for name in names}}
    extra = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[kind, opt], default=None)
             for name, (kind, opt) in options.items()]

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        config_file = kwargs.pop("config_file", None)
        flags = {name: kwargs.pop(name, None) for name in names}
        try:
            loaded = config.load(config_file, **flags)
        except ValueError as exc:
            fail(str(exc), 2)
        logging.basicConfig(level=getattr(logging, loaded.log_level.upper(), logging.INFO),
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        # The server logs pynetdicom's warnings; a client command reports its own one-line errors.
        logging.getLogger("pynetdicom").setLevel(logging.WARNING if func.__name__ == "serve" else logging.CRITICAL)
        logging.getLogger("alembic").setLevel(logging.WARNING)  # its INFO lines say nothing a user needs
        opened = len(_opened)
        try:
            return func(*args, settings=loaded, **kwargs)
        except HounsfieldError as exc:
            fail(str(exc))
        finally:
            while len(_opened) > opened:
                _opened.pop().close()

    wrapper.__signature__ = sig.replace(parameters=[*own, *extra])  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in [*own, *extra]}
    wrapper.setting_flags = names  # type: ignore[attr-defined]  # for the tests tying README, flags and settings
    return wrapper


def data_dir_text(settings: config.Settings) -> str:
    """The data directory as messages name it (absolute), with the index when it lives elsewhere."""
    text = str(Path(settings.data_dir).resolve())
    if settings.database_url:
        from sqlalchemy.engine import make_url

        try:
            url = make_url(settings.database_url).render_as_string(hide_password=True)
        except Exception:  # noqa: BLE001 - a malformed URL fails when it is opened, with its own message
            url = settings.database_url
        text += f" (index {url})"
    return text


def check_data_dir(settings: config.Settings, *, create: bool = False, announce: bool = True) -> None:
    """Make sure the data directory exists before anything opens it: a command that only reads from the archive
    never invents an empty one in the current folder; one that stores (``create``) makes it and says so."""
    data_dir = Path(settings.data_dir)
    where = Path(data_dir).resolve()
    if data_dir.is_dir():
        if announce:
            note(f"data directory {data_dir_text(settings)}")
        return
    if data_dir.exists():
        fail(f"data directory {where} is not a directory: {CHOOSE_DATA_DIR}")
    if not create:
        fail(f"no data directory at {where}: {CHOOSE_DATA_DIR} (serve and import create it)")
    try:
        data_dir.mkdir(parents=True)
    except OSError as exc:
        fail(f"cannot create data directory {where}: {exc.strerror or exc}")
    note(f"created data directory {data_dir_text(settings)}")


def open_pacs(settings: config.Settings, *, create: bool = False, announce: bool = True):  # noqa: ANN201
    """The local archive of ``settings``; see :func:`check_data_dir` for ``create`` and ``announce``."""
    from hounsfield.pacs import Pacs

    check_data_dir(settings, create=create, announce=announce)
    try:
        pacs = Pacs(settings)
    except Exception as exc:  # noqa: BLE001 - a database that cannot be opened is a one-line error
        fail(f"cannot open the index at {settings.index_url}: {exc}")
    _opened.append(pacs)
    return pacs


def progress_bar() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=err_console, transient=True, disable=not err_console.is_terminal)


def dicom_peer(settings: config.Settings, spec: str, *, tls: bool = False) -> config.Peer:
    """The remote node a DICOM client command talks to — from the config file, a HOST:PORT address, or a node
    added to the local archive's registry — reached over TLS when it is flagged ``tls`` or the command is given
    ``--tls`` (``tls``), with this process's DICOM layer set up as the settings say (``dicom_fast_path``: the
    server's fixes, or stock pynetdicom). Only a name that is none of the first two opens the archive (its
    registry), and never creates one."""
    peer = _dicom_peer(settings, spec)
    return dataclasses.replace(peer, tls=True) if tls else peer


def _dicom_peer(settings: config.Settings, spec: str) -> config.Peer:
    from hounsfield.dimse import fastpath
    from hounsfield.peers import parse_address

    fastpath.install(settings.dicom_fast_path)
    for peer in settings.peers:
        if spec in (peer.name, peer.ae_title):
            return peer
    address = parse_address(spec)
    if address is not None:
        return address
    if not Path(settings.data_dir).is_dir():
        fail(f"{spec!r} is neither a node of the config file nor [AET@]HOST:PORT, and there is no data directory "
             f"at {Path(settings.data_dir).resolve()} whose registry could name it ({CHOOSE_DATA_DIR})")
    pacs = open_pacs(settings)
    try:
        return pacs.peers.resolve(spec)
    finally:
        pacs.close()
