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


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest):
    """Every test using this runs once on the embedded SQLite index and once on PostgreSQL."""
    if request.param == "sqlite":
        yield ""
        return
    from support import PostgresDatabase

    db = PostgresDatabase()
    try:
        yield db.url
    finally:
        db.drop()


@pytest.fixture
def server(tmp_path: Path, database_url: str):
    """A running ``hounsfield serve`` on free ports (SQLite and PostgreSQL)."""
    from support import Server

    srv = Server(tmp_path / "data", database_url=database_url).start()
    try:
        yield srv
    finally:
        srv.stop()
