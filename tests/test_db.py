"""The index database's schema check: a database at the newest revision opens without Alembic."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import text

from hounsfield.db import MIGRATIONS, SCHEMA_HEAD, Database, at_head


def test_the_known_head_is_alembics_head() -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    assert ScriptDirectory.from_config(cfg).get_heads() == [SCHEMA_HEAD]


def test_a_new_database_is_migrated_and_then_recognised_at_head(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'index.db'}")
    assert not at_head(db.engine)
    db.migrate()
    assert at_head(db.engine)
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == SCHEMA_HEAD
    db.dispose()


def test_a_database_at_another_revision_is_left_to_alembic(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'index.db'}")
    db.migrate()
    with db.engine.begin() as conn:  # as a database one revision behind says of itself (0012 adds columns
        conn.execute(text("UPDATE alembic_version SET version_num = '0011'"))  # that then already exist)
    assert not at_head(db.engine)
    db.dispose()


def test_opening_a_database_at_head_does_not_import_alembic(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'index.db'}"
    Database(url).migrate()
    probe = ("import sys; from hounsfield.db import Database; Database(sys.argv[1]).migrate(); "
             "print('alembic' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe, url], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
