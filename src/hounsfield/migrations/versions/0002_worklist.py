"""worklist: scheduled procedure steps, MPPS instances, the MWL query log

Revision ID: 0002
Revises: 0001
"""

from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('worklist_items',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('patient_id', sa.String(length=64), nullable=False),
    sa.Column('issuer_of_patient_id', sa.String(length=64), nullable=False),
    sa.Column('patient_name', sa.String(length=330), nullable=False),
    sa.Column('patient_birth_date', sa.String(length=8), nullable=False),
    sa.Column('patient_sex', sa.String(length=16), nullable=False),
    sa.Column('accession_number', sa.String(length=64), nullable=False),
    sa.Column('requested_procedure_id', sa.String(length=64), nullable=False),
    sa.Column('study_instance_uid', sa.String(length=64), nullable=False),
    sa.Column('referring_physician_name', sa.String(length=330), nullable=False),
    sa.Column('requesting_physician', sa.String(length=330), nullable=False),
    sa.Column('modality', sa.String(length=64), nullable=False),
    sa.Column('station_aet', sa.String(length=340), nullable=False),
    sa.Column('station_name', sa.String(length=64), nullable=False),
    sa.Column('start_date', sa.String(length=8), nullable=False),
    sa.Column('start_time', sa.String(length=13), nullable=False),
    sa.Column('performing_physician', sa.String(length=330), nullable=False),
    sa.Column('sps_id', sa.String(length=64), nullable=False),
    sa.Column('sps_location', sa.String(length=64), nullable=False),
    sa.Column('mpps_uid', sa.String(length=64), nullable=False),
    sa.Column('origin', sa.String(length=64), nullable=False),
    sa.Column('attrs', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('worklist_items', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_worklist_items_accession_number'), ['accession_number'], unique=False)
        batch_op.create_index('ix_worklist_items_modality_start', ['modality', 'start_date'], unique=False)
        batch_op.create_index(batch_op.f('ix_worklist_items_patient_id'), ['patient_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_worklist_items_patient_name'), ['patient_name'], unique=False)
        batch_op.create_index('ix_worklist_items_start', ['start_date', 'start_time'], unique=False)
        batch_op.create_index(batch_op.f('ix_worklist_items_status'), ['status'], unique=False)
        batch_op.create_index('ix_worklist_items_study_step', ['study_instance_uid', 'sps_id'], unique=False)

    op.create_table('mpps',
    sa.Column('sop_instance_uid', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('calling_ae', sa.String(length=16), nullable=False),
    sa.Column('attrs', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('sop_instance_uid')
    )
    with op.batch_alter_table('mpps', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_mpps_status'), ['status'], unique=False)

    op.create_table('worklist_queries',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('calling_ae', sa.String(length=16), nullable=False),
    sa.Column('address', sa.String(length=64), nullable=False),
    sa.Column('keys', sa.Text(), nullable=False),
    sa.Column('answers', sa.Integer(), nullable=False),
    sa.Column('status', sa.Integer(), nullable=False),
    sa.Column('error', sa.String(length=255), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('worklist_queries', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_worklist_queries_calling_ae'), ['calling_ae'], unique=False)
        batch_op.create_index(batch_op.f('ix_worklist_queries_received_at'), ['received_at'], unique=False)


def downgrade() -> None:
    op.drop_table('worklist_queries')
    op.drop_table('mpps')
    op.drop_table('worklist_items')
