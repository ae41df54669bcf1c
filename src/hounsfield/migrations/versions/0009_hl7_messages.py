"""hl7_messages: the log of HL7 v2 messages received on the MLLP port (issue 14)

Revision ID: 0009
Revises: 0008
"""

from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('hl7_messages',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('address', sa.String(length=64), nullable=False),
    sa.Column('sending_application', sa.String(length=255), nullable=False),
    sa.Column('sending_facility', sa.String(length=255), nullable=False),
    sa.Column('message_type', sa.String(length=32), nullable=False),
    sa.Column('control_id', sa.String(length=64), nullable=False),
    sa.Column('patient_id', sa.String(length=64), nullable=False),
    sa.Column('raw', sa.LargeBinary(), nullable=False),
    sa.Column('complete', sa.Integer(), nullable=False),
    sa.Column('ack_code', sa.String(length=2), nullable=False),
    sa.Column('ack', sa.Text(), nullable=False),
    sa.Column('outcome', sa.Text(), nullable=False),
    sa.Column('item_ids', sa.String(length=1024), nullable=False),
    sa.Column('replay_of', sa.Integer(), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sqlite_autoincrement=True,
    )
    with op.batch_alter_table('hl7_messages', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_hl7_messages_received_at'), ['received_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_hl7_messages_message_type'), ['message_type'], unique=False)
        batch_op.create_index(batch_op.f('ix_hl7_messages_control_id'), ['control_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_hl7_messages_patient_id'), ['patient_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_hl7_messages_ack_code'), ['ack_code'], unique=False)


def downgrade() -> None:
    op.drop_table('hl7_messages')
