"""security: users, API tokens, web sessions, the audit trail and the de-identification mappings (issue 12)

Revision ID: 0006
Revises: 0005
"""

from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

_WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table('users',
                    sa.Column('id', sa.Integer(), primary_key=True),
                    sa.Column('name', sa.String(64), nullable=False, unique=True),
                    sa.Column('role', sa.String(32), nullable=False),
                    sa.Column('password_hash', sa.String(255), nullable=False),
                    sa.Column('disabled', sa.Boolean(), nullable=False),
                    sa.Column('created_at', _WHEN, nullable=False),
                    sa.Column('generation', sa.Integer(), nullable=False),
                    sqlite_autoincrement=True)
    op.create_table('api_tokens',
                    sa.Column('id', sa.Integer(), primary_key=True),
                    sa.Column('user_fk', sa.Integer(), sa.ForeignKey('users.id', ondelete='CASCADE'),
                              nullable=False, index=True),
                    sa.Column('digest', sa.String(64), nullable=False, unique=True),
                    sa.Column('label', sa.String(64), nullable=False),
                    sa.Column('created_at', _WHEN, nullable=False),
                    sa.Column('expires_at', _WHEN, nullable=True),
                    sa.Column('revoked_at', _WHEN, nullable=True),
                    sa.Column('last_used_at', _WHEN, nullable=True),
                    sqlite_autoincrement=True)
    op.create_table('web_sessions',
                    sa.Column('digest', sa.String(64), primary_key=True),
                    sa.Column('user_fk', sa.Integer(), sa.ForeignKey('users.id', ondelete='CASCADE'),
                              nullable=False, index=True),
                    sa.Column('generation', sa.Integer(), nullable=False),
                    sa.Column('csrf_token', sa.String(64), nullable=False),
                    sa.Column('address', sa.String(64), nullable=False),
                    sa.Column('created_at', _WHEN, nullable=False),
                    sa.Column('last_seen_at', _WHEN, nullable=False),
                    sa.Column('expires_at', _WHEN, nullable=False, index=True))
    op.create_table('audit_events',
                    sa.Column('id', sa.Integer(), primary_key=True),
                    sa.Column('at', _WHEN, nullable=False, index=True),
                    sa.Column('action', sa.String(64), nullable=False, index=True),
                    sa.Column('outcome', sa.String(16), nullable=False),
                    sa.Column('user', sa.String(64), nullable=False, index=True),
                    sa.Column('ae_title', sa.String(16), nullable=False),
                    sa.Column('address', sa.String(64), nullable=False),
                    sa.Column('patient_id', sa.String(64), nullable=False, index=True),
                    sa.Column('patient_name', sa.String(330), nullable=False),
                    sa.Column('study_instance_uid', sa.String(64), nullable=False, index=True),
                    sa.Column('detail', sa.Text(), nullable=False),
                    sqlite_autoincrement=True)
    op.create_index('ix_audit_events_action_at', 'audit_events', ['action', 'at'])
    op.create_table('deid_mappings',
                    sa.Column('kind', sa.String(16), primary_key=True),
                    sa.Column('original', sa.String(330), primary_key=True),
                    sa.Column('replacement', sa.String(330), nullable=False, index=True),
                    sa.Column('created_at', _WHEN, nullable=False))


def downgrade() -> None:
    for table in ('deid_mappings', 'audit_events', 'web_sessions', 'api_tokens', 'users'):
        op.drop_table(table)
