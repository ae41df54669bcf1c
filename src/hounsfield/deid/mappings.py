"""The replacements de-identification made, kept in the ``deid_mappings`` table: the same original (a UID, a
Patient ID) always gets the same replacement, whichever process, request or run de-identifies it (PS3.15 E.1.1
Note 3: UIDs and the Patient ID consistent across every instance protected), and an admin can look one up.

A replacement is made once: written with "insert unless present" and read back in the same transaction, so two
processes de-identifying the same study at once agree on the replacement the first one committed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Callable, Collection

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from hounsfield.db import Database
from hounsfield.deid.models import DeidMapping

UID = "uid"
PATIENT_ID = "patient_id"
ORIGINAL_LENGTH = 330  # the column's size; a longer original (a hostile value) is kept as its digest
_CHUNK = 500  # values per IN (...) list


@dataclass(frozen=True)
class Mapping:
    kind: str
    original: str
    replacement: str
    created_at: datetime


def stored_original(value: str) -> str:
    """The form of ``value`` the table keeps: itself, or ``sha256:`` and its digest when it is too long."""
    if len(value) <= ORIGINAL_LENGTH:
        return value
    return "sha256:" + hashlib.sha256(value.encode("utf-8", "surrogateescape")).hexdigest()


class Mappings:
    def __init__(self, db: Database) -> None:
        self.db = db

    def replacements(self, kind: str, originals: Collection[str], new: Callable[[], str]) -> dict[str, str]:
        """The replacement of each of ``originals`` of ``kind``, made by ``new`` for those that have none yet."""
        keys = {o: stored_original(o) for o in originals}
        wanted = sorted(set(keys.values()))
        found: dict[str, str] = {}
        with self.db.session() as s:
            found.update(self._lookup(s, kind, wanted))
            missing = [k for k in wanted if k not in found]
            if missing:
                upsert = pg_insert if s.bind.dialect.name == "postgresql" else sqlite_insert
                for start in range(0, len(missing), _CHUNK):
                    rows = [{"kind": kind, "original": k, "replacement": new()} for k in missing[start:start + _CHUNK]]
                    s.execute(upsert(DeidMapping).on_conflict_do_nothing(), rows)
                found.update(self._lookup(s, kind, missing))  # another process's replacement wins if it was first
        return {o: found[k] for o, k in keys.items()}

    @staticmethod
    def _lookup(s: Session, kind: str, keys: list[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for start in range(0, len(keys), _CHUNK):
            rows = s.execute(select(DeidMapping.original, DeidMapping.replacement)
                             .where(DeidMapping.kind == kind, DeidMapping.original.in_(keys[start:start + _CHUNK])))
            out.update({original: replacement for original, replacement in rows})
        return out

    def search(self, *, original: str | None = None, replacement: str | None = None, kind: str | None = None,
               limit: int = 100, offset: int = 0) -> list[Mapping]:
        """The mappings with exactly these values (each filter optional), oldest first. Admins only: this is the
        way back from a de-identified instance to the patient."""
        q = select(DeidMapping)
        if original is not None:
            q = q.where(DeidMapping.original == stored_original(original))
        if replacement is not None:
            q = q.where(DeidMapping.replacement == replacement)
        if kind is not None:
            q = q.where(DeidMapping.kind == kind)
        q = q.order_by(DeidMapping.created_at, DeidMapping.kind, DeidMapping.original).offset(offset).limit(limit)
        with self.db.session() as s:
            return [Mapping(m.kind, m.original, m.replacement, m.created_at) for m in s.scalars(q)]
