"""archive index: patients, studies, series, instances, peers

Revision ID: 0001
Revises: 
"""

from alembic import op
import sqlalchemy as sa


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('patients',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('patient_id', sa.String(length=64), nullable=False),
    sa.Column('issuer_of_patient_id', sa.String(length=64), nullable=False),
    sa.Column('patient_name', sa.String(length=330), nullable=False),
    sa.Column('patient_birth_date', sa.String(length=8), nullable=False),
    sa.Column('patient_sex', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('patient_id', 'issuer_of_patient_id', name='uq_patient_identity')
    )
    with op.batch_alter_table('patients', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_patients_patient_id'), ['patient_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_patients_patient_name'), ['patient_name'], unique=False)

    op.create_table('peers',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('ae_title', sa.String(length=16), nullable=False),
    sa.Column('host', sa.String(length=255), nullable=False),
    sa.Column('port', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )
    with op.batch_alter_table('peers', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_peers_ae_title'), ['ae_title'], unique=False)

    op.create_table('studies',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('patient_fk', sa.Integer(), nullable=False),
    sa.Column('study_instance_uid', sa.String(length=64), nullable=False),
    sa.Column('study_date', sa.String(length=8), nullable=False),
    sa.Column('study_time', sa.String(length=13), nullable=False),
    sa.Column('accession_number', sa.String(length=64), nullable=False),
    sa.Column('study_id', sa.String(length=16), nullable=False),
    sa.Column('study_description', sa.String(length=64), nullable=False),
    sa.Column('referring_physician_name', sa.String(length=330), nullable=False),
    sa.Column('attrs', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['patient_fk'], ['patients.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('study_instance_uid')
    )
    with op.batch_alter_table('studies', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_studies_accession_number'), ['accession_number'], unique=False)
        batch_op.create_index(batch_op.f('ix_studies_patient_fk'), ['patient_fk'], unique=False)
        batch_op.create_index(batch_op.f('ix_studies_study_date'), ['study_date'], unique=False)

    op.create_table('series',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('study_fk', sa.Integer(), nullable=False),
    sa.Column('series_instance_uid', sa.String(length=64), nullable=False),
    sa.Column('modality', sa.String(length=16), nullable=False),
    sa.Column('series_number', sa.String(length=12), nullable=False),
    sa.Column('series_description', sa.String(length=64), nullable=False),
    sa.Column('body_part_examined', sa.String(length=16), nullable=False),
    sa.Column('series_date', sa.String(length=8), nullable=False),
    sa.Column('series_time', sa.String(length=13), nullable=False),
    sa.Column('attrs', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['study_fk'], ['studies.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('series_instance_uid')
    )
    with op.batch_alter_table('series', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_series_modality'), ['modality'], unique=False)
        batch_op.create_index(batch_op.f('ix_series_study_fk'), ['study_fk'], unique=False)

    op.create_table('instances',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('series_fk', sa.Integer(), nullable=False),
    sa.Column('sop_instance_uid', sa.String(length=64), nullable=False),
    sa.Column('sop_class_uid', sa.String(length=64), nullable=False),
    sa.Column('instance_number', sa.Integer(), nullable=True),
    sa.Column('rows', sa.Integer(), nullable=True),
    sa.Column('columns', sa.Integer(), nullable=True),
    sa.Column('number_of_frames', sa.Integer(), nullable=True),
    sa.Column('transfer_syntax_uid', sa.String(length=64), nullable=False),
    sa.Column('path', sa.String(length=512), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('origin', sa.String(length=64), nullable=False),
    sa.Column('header', sa.LargeBinary(), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['series_fk'], ['series.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('sop_instance_uid')
    )
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_instances_series_fk'), ['series_fk'], unique=False)
        batch_op.create_index('ix_instances_series_number', ['series_fk', 'instance_number'], unique=False)
        batch_op.create_index(batch_op.f('ix_instances_sop_class_uid'), ['sop_class_uid'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_instances_sop_class_uid'))
        batch_op.drop_index('ix_instances_series_number')
        batch_op.drop_index(batch_op.f('ix_instances_series_fk'))

    op.drop_table('instances')
    with op.batch_alter_table('series', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_series_study_fk'))
        batch_op.drop_index(batch_op.f('ix_series_modality'))

    op.drop_table('series')
    with op.batch_alter_table('studies', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_studies_study_date'))
        batch_op.drop_index(batch_op.f('ix_studies_patient_fk'))
        batch_op.drop_index(batch_op.f('ix_studies_accession_number'))

    op.drop_table('studies')
    with op.batch_alter_table('peers', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_peers_ae_title'))

    op.drop_table('peers')
    with op.batch_alter_table('patients', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_patients_patient_name'))
        batch_op.drop_index(batch_op.f('ix_patients_patient_id'))

    op.drop_table('patients')
