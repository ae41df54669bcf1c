"""Alembic environment: always run with the connection handed over by ``hounsfield.db.migrate``."""

from alembic import context

from hounsfield.models import Base
from hounsfield.audit import models as _audit_models  # noqa: F401 - registers the audit table
from hounsfield.auth import models as _auth_models  # noqa: F401 - registers the users, tokens, sessions
from hounsfield.deid import models as _deid_models  # noqa: F401 - registers the de-identification mappings
from hounsfield.hl7 import models as _hl7_models  # noqa: F401 - registers the HL7 message log
from hounsfield.routing import models as _routing_models  # noqa: F401 - registers the routing rules and queue
from hounsfield.rt import models as _rt_models  # noqa: F401 - registers the RT references and DVH cache
from hounsfield.worklist import models as _worklist_models  # noqa: F401 - registers the worklist tables

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
