"""worklist: the placer and filler order numbers of each item as indexed columns

An HL7 order message names its order by its placer (ORC-2) or filler (ORC-3) order number; the items of the
order were found by reading and parsing every stored item of the patient and of the accession number, twice a
message. The columns narrow that to the items of the order (``Batch.items_of_order``). They are filled here from
the DICOM JSON each row keeps (``attrs``), as ``items.columns`` gives a new item.

Revision ID: 0012
Revises: 0011
"""

import json
import zlib

from alembic import op
import sqlalchemy as sa


revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None

CHUNK = 500
LENGTH = 64
_COLUMNS = (('placer_order_number', '00402016'), ('filler_order_number', '00402017'))
_items = sa.table('worklist_items', sa.column('id', sa.Integer), sa.column('attrs', sa.LargeBinary),
                  *(sa.column(name, sa.String) for name, _ in _COLUMNS))


def _number(js: dict, tag: str) -> str:
    """An order number as ``items.order_number`` gives it, from the stored DICOM JSON."""
    values = js.get(tag, {}).get('Value') or []
    return '\\'.join('' if v is None else str(v) for v in values).strip()[:LENGTH]


def _backfill() -> None:
    bind = op.get_bind()
    last = 0
    while True:
        rows = bind.execute(sa.select(_items.c.id, _items.c.attrs).where(_items.c.id > last)
                            .order_by(_items.c.id).limit(CHUNK)).all()
        if not rows:
            return
        updates = []
        for row in rows:
            js = json.loads(zlib.decompress(row.attrs)) if row.attrs else {}
            values = {f'new_{name}': _number(js, tag) for name, tag in _COLUMNS}
            if any(values.values()):
                updates.append({'row_id': row.id, **values})
        if updates:
            bind.execute(_items.update().where(_items.c.id == sa.bindparam('row_id'))
                         .values({name: sa.bindparam(f'new_{name}') for name, _ in _COLUMNS}), updates)
        last = rows[-1].id


def upgrade() -> None:
    for name, _ in _COLUMNS:
        op.add_column('worklist_items', sa.Column(name, sa.String(length=LENGTH), nullable=False, server_default=''))
    _backfill()
    for name, _ in _COLUMNS:
        op.create_index(f'ix_worklist_items_{name}', 'worklist_items', [name], unique=False)


def downgrade() -> None:
    for name, _ in _COLUMNS:
        op.drop_index(f'ix_worklist_items_{name}', table_name='worklist_items')
        if op.get_bind().dialect.name == 'sqlite':
            op.execute(f'ALTER TABLE worklist_items DROP COLUMN {name}')
        else:
            op.drop_column('worklist_items', name)
