"""peers: the DICOM services a node added through REST may use (``allow``, issue 12), as a TOML peer's ``allow``;
NULL: every service, as before

Revision ID: 0008
Revises: 0007
"""

from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('peers', sa.Column('allow', sa.String(128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('peers') as batch:
        batch.drop_column('allow')
