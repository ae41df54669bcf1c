"""worklist: item ids are never reused after a delete (SQLite AUTOINCREMENT)

SQLite gives a plain INTEGER PRIMARY KEY the highest rowid + 1, so deleting the newest item handed its id to the
next one; AUTOINCREMENT remembers the highest id ever given (sqlite_sequence). SQLite cannot add it to a table,
so the table is rebuilt (batch mode copies rows and indexes); the count goes on from the highest id present, as
ids deleted before the upgrade above it are nowhere recorded. PostgreSQL's sequence never gives a value twice:
nothing to do there.

Revision ID: 0004
Revises: 0003
"""

from alembic import op


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def _rebuild(autoincrement: bool) -> None:
    if op.get_bind().dialect.name != 'sqlite':
        return
    with op.batch_alter_table('worklist_items', recreate='always',
                              table_kwargs={'sqlite_autoincrement': autoincrement}):
        pass


def upgrade() -> None:
    _rebuild(True)


def downgrade() -> None:
    _rebuild(False)
