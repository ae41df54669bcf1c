"""rt_references, rt_dvh_cache: what each RT object references, and the DVHs computed from them (issue 13)

The RT objects already stored get their rows from the header JSON the index keeps (no file is read).

Revision ID: 0010
Revises: 0009
"""

import json
import zlib

from alembic import op
import sqlalchemy as sa


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('rt_references',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('sop_instance_uid', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('study_instance_uid', sa.String(length=64), nullable=False),
    sa.Column('series_instance_uid', sa.String(length=64), nullable=False),
    sa.Column('frame_of_reference_uid', sa.String(length=64), nullable=False),
    sa.Column('label', sa.String(length=64), nullable=False),
    sa.Column('ref_kind', sa.String(length=16), nullable=False),
    sa.Column('ref_uid', sa.String(length=64), nullable=False),
    sa.Column('ref_frame_of_reference_uid', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    )
    with op.batch_alter_table('rt_references', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_rt_references_sop_instance_uid'), ['sop_instance_uid'], unique=False)
        batch_op.create_index(batch_op.f('ix_rt_references_study_instance_uid'), ['study_instance_uid'], unique=False)
        batch_op.create_index(batch_op.f('ix_rt_references_ref_uid'), ['ref_uid'], unique=False)
    op.create_table('rt_dvh_cache',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('structure_set_uid', sa.String(length=64), nullable=False),
    sa.Column('dose_uid', sa.String(length=64), nullable=False),
    sa.Column('roi_number', sa.Integer(), nullable=False),
    sa.Column('method', sa.String(length=16), nullable=False),
    sa.Column('structure_set_sha256', sa.String(length=64), nullable=False),
    sa.Column('dose_sha256', sa.String(length=64), nullable=False),
    sa.Column('result', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    )
    with op.batch_alter_table('rt_dvh_cache', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_rt_dvh_cache_structure_set_uid'), ['structure_set_uid'], unique=False)
        batch_op.create_index(batch_op.f('ix_rt_dvh_cache_dose_uid'), ['dose_uid'], unique=False)
    _backfill()


def _backfill() -> None:
    """Rows for the RT objects indexed before this revision, from their stored header JSON."""
    from hounsfield.rt.models import RT_SOP_CLASSES, reference_rows

    conn = op.get_bind()
    instances = sa.table('instances', sa.column('id'), sa.column('sop_class_uid'), sa.column('header'))
    refs = sa.table('rt_references', *(sa.column(c) for c in (
        'sop_instance_uid', 'kind', 'study_instance_uid', 'series_instance_uid', 'frame_of_reference_uid', 'label',
        'ref_kind', 'ref_uid', 'ref_frame_of_reference_uid')))
    found = conn.execute(sa.select(instances.c.sop_class_uid, instances.c.header)
                         .where(instances.c.sop_class_uid.in_(list(RT_SOP_CLASSES)))).all()
    for sop_class_uid, header in found:
        try:
            rows = reference_rows(json.loads(zlib.decompress(header)), sop_class_uid)
        except (zlib.error, ValueError):
            continue  # an unreadable header: the object is found again when it is stored again
        if rows:
            conn.execute(sa.insert(refs), rows)


def downgrade() -> None:
    op.drop_table('rt_dvh_cache')
    op.drop_table('rt_references')
