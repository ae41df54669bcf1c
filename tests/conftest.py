"""Shared fixtures: where the third-party test data lives, and how to require it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
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
