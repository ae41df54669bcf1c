"""Test support: real ``hounsfield serve`` processes on free ports, real dcmtk tools, real PostgreSQL."""

from __future__ import annotations

import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import traceback
import uuid
from pathlib import Path
from typing import Callable, Mapping

import pytest
import requests

IN_CI = os.environ.get("CI", "").lower() == "true"
PG_ADMIN_URL = os.environ.get("HOUNSFIELD_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def require(condition: bool, why: str) -> None:
    """Skip when a real peer is missing on a developer machine; fail in CI, where it must be present."""
    if not condition:
        if IN_CI:
            pytest.fail(f"CI=true but {why}")
        pytest.skip(why)


def require_module(name: str):  # noqa: ANN201 - the module
    """Import a test dependency (pyproject's test extra): skipped where it is missing on a developer machine,
    a failure in CI, where ``scripts/test`` installs it."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError as exc:
        require(False, f"{name} cannot be imported ({exc}); pip install -e .[test]")


# ---- the CLI ----------------------------------------------------------------------------------------------------
# A command runs in this process (its Typer app, through Typer's CliRunner): a new interpreter importing hounsfield
# cost ~2 s of CPU per command, ~300 s of the suite's. These run in a new interpreter all the same:
NEW_INTERPRETER = {
    # a DICOM client sets up its process's pynetdicom for good (hounsfield.dimse.fastpath.install), which would
    # change the tests' own pynetdicom clients that run after it in this worker
    ("echo",), ("store",), ("find",), ("move",), ("get",), ("worklist", "find"),
    ("serve",),  # a server of its own: support.Server
}
# HOUNSFIELD_TEST_CLI=subprocess: every command in a new interpreter, as the user's shell runs it.
ALWAYS_NEW_INTERPRETER = os.environ.get("HOUNSFIELD_TEST_CLI", "") == "subprocess"
_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"  # cli_common.with_settings's


class _ToCurrentStderr(logging.StreamHandler):
    """The CLI's log lines on the captured stderr of the command running (CliRunner swaps sys.stderr), where a
    command in its own interpreter writes them (its logging.basicConfig finds pytest's handlers and does
    nothing in here)."""

    @property  # type: ignore[override]
    def stream(self):  # noqa: ANN201
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:  # noqa: ANN001
        pass


def hounsfield(*args: str | Path, input: str | None = None, env: Mapping[str, str | None] | None = None,
               cwd: Path | str | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``hounsfield ARGS`` and return what a shell would see: exit status, stdout, stderr (text). ``env``
    is the environment's changes (None: unset) or, as for ``subprocess.run``, a whole one; ``timeout`` is the
    new interpreter's only."""
    argv = [str(a) for a in args]
    words = tuple(a for a in argv[:2] if not a.startswith("-"))
    if ALWAYS_NEW_INTERPRETER or words[:1] in NEW_INTERPRETER or words in NEW_INTERPRETER:
        return subprocess.run([sys.executable, "-m", "hounsfield", *argv], input=input, capture_output=True,
                              text=True, timeout=timeout, cwd=cwd,
                              env={k: v for k, v in {**os.environ, **(env or {})}.items() if v is not None})
    return _in_process(argv, input=input, env=env, cwd=cwd)


def _in_process(argv: list[str], *, input: str | None, env: Mapping[str, str | None] | None,
                cwd: Path | str | None) -> subprocess.CompletedProcess:
    from typer.testing import CliRunner

    from hounsfield import cli

    cli._register_plugins()  # the feature packages' commands, as cli.main() adds them
    root = logging.getLogger()
    handler = _ToCurrentStderr()
    handler.setFormatter(logging.Formatter(_LOG_FORMAT))
    levels = {name: logging.getLogger(name).level for name in ("", "pynetdicom", "alembic")}
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    here = os.getcwd()
    changed = {k: v for k, v in (env or {}).items() if os.environ.get(k) != v}
    try:
        if cwd is not None:
            os.chdir(cwd)
        result = CliRunner().invoke(cli.app, argv, input=input, env=changed, prog_name="python -m hounsfield")
    finally:
        os.chdir(here)
        root.removeHandler(handler)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
    stderr = result.stderr
    code = result.exit_code
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        stderr += "".join(traceback.format_exception(*result.exc_info))  # as the interpreter would print it
        code = 1
    return subprocess.CompletedProcess(["hounsfield", *argv], code, result.stdout, stderr)


_HANDED_OUT: set[int] = set()


_WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0")[2:])  # pytest-xdist: this process's number
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
_BAND = range(20000, 32768)  # below Linux's ephemeral range (32768-60999), where bind(0) and connect() take theirs


def free_port() -> int:
    """A port free now and not handed out before in this run (the kernel may offer a just-closed port again,
    which once gave one server the same DICOM and HTTP port). Under pytest-xdist each worker draws from its own
    slice of ``_BAND``, so that two workers never hand out the same port before either binds it."""
    if not _WORKERS:
        return _bindable(lambda: 0)
    span = len(_BAND) // _WORKERS
    first = _BAND.start + _WORKER * span
    return _bindable(lambda: random.randrange(first, first + span))


def _bindable(candidate: Callable[[], int]) -> int:
    """The first port from ``candidate()`` that binds on every interface and was not handed out before."""
    while True:
        with socket.socket() as s:
            try:
                s.bind(("", candidate()))
            except OSError:
                continue
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def dcmtk(tool: str) -> str:
    """Path of a dcmtk tool (``/usr/bin`` first: Python packages also install scripts named storescu...)."""
    for candidate in (f"/usr/bin/{tool}", shutil.which(tool)):
        if candidate and os.path.exists(candidate):
            with open(candidate, "rb") as f:
                if f.read(2) != b"#!":  # a real binary, not a Python console script
                    return candidate
    require(False, f"dcmtk's {tool} is not installed (apt-get install dcmtk)")
    return ""


def dcmtk_env() -> dict[str, str]:
    return {**os.environ, "TCP_NODELAY": "1"}


class PostgresDatabase:
    """A fresh database on the PostgreSQL server, dropped afterwards."""

    def __init__(self) -> None:
        import psycopg

        self.name = f"hf_{uuid.uuid4().hex[:12]}"
        try:
            self.admin = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5)
        except psycopg.OperationalError as exc:
            require(False, f"PostgreSQL is not reachable at {PG_ADMIN_URL}: {exc}")
        self.admin.execute(f'CREATE DATABASE "{self.name}"')
        base = PG_ADMIN_URL.rsplit("/", 1)[0]
        self.url = f"{base}/{self.name}".replace("postgresql://", "postgresql+psycopg://", 1)

    def drop(self) -> None:
        self.admin.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        self.admin.close()


class Server:
    """A ``hounsfield serve`` subprocess with its own data directory and ports."""

    def __init__(self, data_dir: Path, *, database_url: str = "", ae_title: str = "HOUNSFIELD",
                 config: str | None = None, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.database_url = database_url
        self.ae_title = ae_title
        self.dicom_port = free_port()
        self.http_port = free_port()
        self.config_text = config
        self.env = env or {}
        self.proc: subprocess.Popen | None = None
        self.log_path = data_dir.parent / f"{data_dir.name}-serve.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def args(self) -> list[str]:
        args = ["--data-dir", str(self.data_dir), "--ae-title", self.ae_title]
        if self.database_url:
            args += ["--database-url", self.database_url]
        if self.config_text is not None:
            cfg = self.data_dir.parent / f"{self.data_dir.name}.toml"
            cfg.write_text(self.config_text)
            args += ["--config", str(cfg)]
        return args

    def start(self) -> "Server":
        cmd = [sys.executable, "-m", "hounsfield", "serve", *self.args(), "--dicom-port", str(self.dicom_port),
               "--http-host", "127.0.0.1", "--http-port", str(self.http_port)]
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT,
                                     env={**os.environ, **self.env}, start_new_session=True)  # its own group
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}: {self.log_text()[-2000:]}")
            try:
                if requests.get(f"{self.url}/health", timeout=1).ok and self._dicom_open():
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.02)
        raise RuntimeError(f"server did not start: {self.log_text()[-2000:]}")

    def kill_group(self, timeout: float = 60) -> None:
        """SIGKILL the server and every process it started, as a power cut would, and wait until all are gone
        (the DICOM processes and the indexer must not outlive it into the restart)."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.killpg(self.proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        raise AssertionError("processes of the killed server are still running")

    def _dicom_open(self) -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.dicom_port)) == 0

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_size(self) -> int:
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        code, self.proc = self.proc.returncode, None
        return code

    def cli(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        """Run a ``hounsfield`` command against this server's data directory and database."""
        proc = hounsfield(*args, *self.args(), timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"hounsfield {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
        return proc


class SharedServer:
    """A server shared by the tests of a module, as one test sees it: everything of the server, but
    ``log_text()`` is only what it logged since the test began (what an earlier test made it log is not
    evidence for this one)."""

    def __init__(self, server: Server) -> None:
        self._server = server
        self._log_start = server.log_size()

    def __getattr__(self, name: str):
        return getattr(self._server, name)

    def log_text(self) -> str:
        with open(self._server.log_path, "rb") as f:
            f.seek(self._log_start)
            return f.read().decode(errors="replace")
