"""worklist: day + modality index holding start time, id and station (replaces modality + day)

Revision ID: 0003
Revises: 0002
"""

from alembic import op


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_worklist_items_modality_day', 'worklist_items',
                    ['modality', 'start_date', 'start_time', 'id', 'station_aet'], unique=False)
    op.drop_index('ix_worklist_items_modality_start', table_name='worklist_items')


def downgrade() -> None:
    op.create_index('ix_worklist_items_modality_start', 'worklist_items', ['modality', 'start_date'], unique=False)
    op.drop_index('ix_worklist_items_modality_day', table_name='worklist_items')
