"""peers: a remote node added through REST may be reached over TLS (``tls``, issue 12), as a TOML peer's ``tls``

Revision ID: 0007
Revises: 0006
"""

from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('peers', sa.Column('tls', sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table('peers') as batch:
        batch.drop_column('tls')
