"""Shared fixtures: where the third-party test data lives, and how to require it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))  # tests/support.py
SHARED_DATA = Path(os.environ.get("HOUNSFIELD_SHARED_DATA", ROOT.parent / "shared" / "data"))
IN_CI = os.environ.get("CI", "").lower() == "true"
if "PYTEST_XDIST_WORKER" in os.environ:  # its workers get COLUMNS=80, which Rich would make the width of the CLI's
    os.environ.pop("COLUMNS", None)      # console for good when it is imported; the CLI tests set their own width

# The tests' own pynetdicom clients do several requests per association; stock pynetdicom's reactor can take and
# drop the answer to the second one (its "pause the reactor" gap, dimse.tuning.leave_responses_to_the_sender),
# which under the suite's load made a test wait 30 s for an answer the server had sent. Only that gap is closed.
from hounsfield.dimse.tuning import leave_responses_to_the_sender  # noqa: E402

leave_responses_to_the_sender()


def require_shared_data() -> Path:
    """Return ../shared/data; skip when it is absent on a developer clone, fail when absent in CI."""
    if SHARED_DATA.is_dir():
        return SHARED_DATA
    if IN_CI:
        pytest.fail(f"CI=true but the shared test data is missing at {SHARED_DATA}")
    pytest.skip(f"shared test data not present at {SHARED_DATA}")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return require_shared_data()


def _database(backend: str):
    """The database URL of ``backend`` ("" for the embedded SQLite index), a fresh PostgreSQL database dropped
    when the generator closes."""
    if backend == "sqlite":
        yield ""
        return
    from support import PostgresDatabase

    db = PostgresDatabase()
    try:
        yield db.url
    finally:
        db.drop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest):
    """Every test using this runs once on the embedded SQLite index and once on PostgreSQL."""
    yield from _database(request.param)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def module_database_url(request: pytest.FixtureRequest):
    """As ``database_url``, one database per module and backend (for ``module_server``)."""
    yield from _database(request.param)


@pytest.fixture
def fresh_server(tmp_path: Path, database_url: str):
    """A running ``hounsfield serve`` of its own, on free ports (SQLite and PostgreSQL)."""
    from support import Server

    srv = Server(tmp_path / "data", database_url=database_url).start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def server(fresh_server):
    """A running ``hounsfield serve`` (SQLite and PostgreSQL); a module whose tests can share one overrides
    this with ``shared_server``."""
    return fresh_server


@pytest.fixture(scope="module")
def module_server(tmp_path_factory: pytest.TempPathFactory, module_database_url: str):
    """One ``hounsfield serve`` for the tests of a module, per backend: for tests that look only at what they
    stored themselves (their own UIDs, patients, items) or at counts before and after."""
    from support import Server

    srv = Server(tmp_path_factory.mktemp("shared") / "data", database_url=module_database_url).start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def shared_server(module_server):
    """``module_server`` as one test sees it (its log starts with the test)."""
    from support import SharedServer

    return SharedServer(module_server)
