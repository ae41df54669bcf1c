"""archive: patient demographics (name, birth date, sex) kept per study instead of per patient

A patient row kept the demographics of the first study stored under its Patient ID, and every study of that
ID was matched on them: a second study with another name (an ID reused by another system, a name corrected
later) could not be found by its own name and was found by the other one. Each study now holds them as its
own instances give them. They are filled here from the DICOM JSON each study row keeps (``studies.attrs``, the
study's first indexed instance, the same values the indexer gives a new study), then the patient columns go:
a patient row is only its identity (Patient ID + Issuer).

SQLite drops the columns in place (ALTER TABLE ... DROP COLUMN, SQLite 3.35): rebuilding ``patients`` as
batch mode does would drop the table the studies refer to, which with foreign keys on deletes every study.
The downgrade puts the columns back, filled from each patient's first study as before.

Revision ID: 0005
Revises: 0004
"""

from alembic import op
import sqlalchemy as sa

from hounsfield.dicomfile import Header, unpack_json
from hounsfield import matching


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

CHUNK = 500
_studies = sa.table('studies', sa.column('id', sa.Integer), sa.column('attrs', sa.LargeBinary),
                    sa.column('patient_fk', sa.Integer), sa.column('patient_name', sa.String),
                    sa.column('patient_birth_date', sa.String), sa.column('patient_sex', sa.String))
_patients = sa.table('patients', sa.column('id', sa.Integer), sa.column('patient_name', sa.String),
                     sa.column('patient_birth_date', sa.String), sa.column('patient_sex', sa.String))
_COLUMNS = (('patient_name', 330), ('patient_birth_date', 8), ('patient_sex', 16))


def _demographics(blob: bytes | None) -> dict[str, str]:
    """As ``archive.study_demographics`` gives a new study, from the stored DICOM JSON (cut to the columns)."""
    header = Header(unpack_json(blob) if blob else {}, '', False)
    values = {
        'patient_name': matching.normalize_value('PN', header.text('PatientName')),
        'patient_birth_date': matching.normalize_date(header.text('PatientBirthDate')),
        'patient_sex': matching.normalize_value('CS', header.text('PatientSex')),
    }
    return {name: values[name][:length] for name, length in _COLUMNS}


def _columns(table: str) -> set[str]:
    return {c['name'] for c in sa.inspect(op.get_bind()).get_columns(table)}


def _indexes(table: str) -> set[str]:
    return {i['name'] for i in sa.inspect(op.get_bind()).get_indexes(table)}


def _drop_columns(table: str, index: str) -> None:
    """Drop the demographic columns of ``table`` in place (what is already gone is skipped: pysqlite runs DDL
    before the first write outside any transaction, so an upgrade cut short may have done part of this)."""
    if index in _indexes(table):
        op.drop_index(index, table_name=table)
    present = _columns(table)
    for name, _ in _COLUMNS:
        if name not in present:
            continue
        if op.get_bind().dialect.name == 'sqlite':
            op.execute(f'ALTER TABLE {table} DROP COLUMN {name}')
        else:
            op.drop_column(table, name)


def _add_columns(table: str, index: str) -> None:
    """Add the demographic columns to ``table`` in place (ADD COLUMN on both back ends), with their index."""
    present = _columns(table)
    for name, length in _COLUMNS:
        if name not in present:
            op.add_column(table, sa.Column(name, sa.String(length=length), nullable=False, server_default=''))
    if index not in _indexes(table):
        op.create_index(index, table, ['patient_name'], unique=False)


def upgrade() -> None:
    bind = op.get_bind()
    _add_columns('studies', 'ix_studies_patient_name')
    update = (_studies.update().where(_studies.c.id == sa.bindparam('study_id'))
              .values(patient_name=sa.bindparam('name'), patient_birth_date=sa.bindparam('birth'),
                      patient_sex=sa.bindparam('sex')))
    last = 0
    while True:
        rows = bind.execute(sa.select(_studies.c.id, _studies.c.attrs).where(_studies.c.id > last)
                            .order_by(_studies.c.id).limit(CHUNK)).all()
        if not rows:
            break
        params = []
        for study_id, blob in rows:
            values = _demographics(blob)
            params.append({'study_id': study_id, 'name': values['patient_name'],
                           'birth': values['patient_birth_date'], 'sex': values['patient_sex']})
        bind.execute(update, params)
        last = rows[-1][0]
    _drop_columns('patients', 'ix_patients_patient_name')


def downgrade() -> None:
    bind = op.get_bind()
    _add_columns('patients', 'ix_patients_patient_name')
    first = (sa.select(_studies.c.patient_fk, sa.func.min(_studies.c.id).label('id'))
             .group_by(_studies.c.patient_fk).subquery())
    rows = bind.execute(sa.select(first.c.patient_fk, _studies.c.patient_name, _studies.c.patient_birth_date,
                                  _studies.c.patient_sex)
                        .select_from(_studies).join(first, first.c.id == _studies.c.id)).all()
    if rows:
        bind.execute(_patients.update().where(_patients.c.id == sa.bindparam('pid'))
                     .values(patient_name=sa.bindparam('name'), patient_birth_date=sa.bindparam('birth'),
                             patient_sex=sa.bindparam('sex')),
                     [{'pid': pid, 'name': name, 'birth': birth, 'sex': sex} for pid, name, birth, sex in rows])
    _drop_columns('studies', 'ix_studies_patient_name')
