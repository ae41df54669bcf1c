"""What routing keeps in the index: the rules (``RuleBook``: the TOML's, read-only, and those added through
REST) and the delivery queue (``DeliveryQueue``) with the feed's cursor.

The queue is what makes deliveries survive a restart or a SIGKILL: a job is written in the same transaction
that moves the cursor past the instance it is for, and marked done only after the node has answered its
C-STOREs with success. So an instance is never skipped, and is sent again only if the process died between
the node's answer and that commit (at-least-once; a node stores the same SOP Instance UID once).
"""

from __future__ import annotations

import json
import time
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterable

from sqlalchemy import delete, func, select, update

from hounsfield.db import Database
from hounsfield.errors import Conflict, NotFound
from hounsfield.models import utcnow
from hounsfield.routing import rules
from hounsfield.routing.models import DONE, FAILED, PENDING, STATES, RoutingCursor, RoutingJob, RoutingRuleRow
from hounsfield.routing.rules import InvalidRule, Rule

CURSOR = "feed"


class RuleBook:
    """``known_peer(name) -> bool`` says whether a remote node exists (``PeerRegistry``): a rule added through
    REST must send to nodes that exist; a TOML rule naming one that does not is reported by ``unknown_peers``."""

    def __init__(self, db: Database, configured: Iterable[Rule], known_peer: Callable[[str], bool]) -> None:
        self.db = db
        self.configured = {r.name: r for r in configured}
        self.known_peer = known_peer

    def all(self) -> list[Rule]:
        with self.db.session() as s:
            stored = [rules.parse(r.name, json.loads(r.definition)) for r in s.scalars(select(RoutingRuleRow))]
        return sorted(({r.name: r for r in stored} | self.configured).values(), key=lambda r: r.name)

    def get(self, name: str) -> Rule:
        for rule in self.all():
            if rule.name == name:
                return rule
        raise NotFound(f"no routing rule named {name!r}")

    def is_configured(self, name: str) -> bool:
        return name in self.configured

    def put(self, name: str, spec: dict[str, Any]) -> Rule:
        rule = rules.parse(name, spec)
        if name in self.configured:
            raise Conflict(f"routing rule {name!r} is defined in the configuration file")
        unknown = [p for p in rule.send_to if not self.known_peer(p)]
        if unknown:
            raise InvalidRule(f"rule {name!r}: send_to names no known remote node: {', '.join(unknown)} (add it "
                              f"with PUT /api/peers/NAME or in the configuration file first)")
        definition = {k: v for k, v in rule.as_dict().items() if k != "name" and v not in (None, {}, [])}
        with self.db.session() as s:
            row = s.get(RoutingRuleRow, name) or RoutingRuleRow(name=name)
            row.definition, row.updated_at = json.dumps(definition), utcnow()
            s.add(row)
        return rule

    def remove(self, name: str) -> None:
        if name in self.configured:
            raise Conflict(f"routing rule {name!r} is defined in the configuration file")
        with self.db.session() as s:
            if s.execute(delete(RoutingRuleRow).where(RoutingRuleRow.name == name)).rowcount == 0:
                raise NotFound(f"no routing rule named {name!r}")

    def unknown_peers(self) -> list[tuple[str, str]]:
        """(rule, node) for each node a rule sends to that is not known (the TOML's rules are not checked
        against the REST nodes when the file is read)."""
        return [(r.name, p) for r in self.all() for p in r.send_to if not self.known_peer(p)]


@dataclass(frozen=True)
class NewJob:
    key: str
    rule: str
    peer: str
    study_instance_uid: str
    sop_instance_uid: str
    transfer_syntax: str


@dataclass(frozen=True)
class Job:
    id: int
    rule: str
    peer: str
    study_instance_uid: str
    sop_instance_uid: str
    transfer_syntax: str
    state: str
    attempts: int
    next_attempt: float | None  # seconds since the epoch, for a pending job
    last_error: str
    created_at: datetime
    updated_at: datetime

    def as_dict(self) -> dict[str, Any]:
        """The job's fields, its times as datetimes (``web.routing_api`` writes them as ISO 8601 in UTC; the
        index gives ``created_at`` / ``updated_at`` back naive on SQLite, which are UTC)."""
        out = dict(self.__dict__)
        out["next_attempt"] = (None if self.next_attempt is None
                               else datetime.fromtimestamp(self.next_attempt, timezone.utc))
        out["scope"] = "instance" if self.sop_instance_uid else "study"
        out["transfer_syntax"] = self.transfer_syntax or None
        return out


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class Backoff:
    """Retry waits: ``first`` seconds, doubling at each failure up to ``longest``; after ``attempts`` failed
    attempts a job is FAILED (retried only when asked: REST, the page)."""

    first: float = 10.0
    longest: float = 3600.0
    attempts: int = 10

    def wait(self, attempts: int) -> float:
        return min(self.longest, self.first * 2 ** max(0, attempts - 1))


class DeliveryQueue:
    def __init__(self, db: Database, backoff: Backoff = Backoff()) -> None:
        self.db = db
        self.backoff = backoff

    def cursor(self) -> int | None:
        with self.db.session() as s:
            row = s.get(RoutingCursor, CURSOR)
            return None if row is None else row.value

    def add(self, jobs: list[NewJob], cursor: int) -> int:
        """Queue the jobs not queued before (by key) and move the cursor, in one transaction; how many were new."""
        with self.db.session() as s:
            keys = [j.key for j in jobs]
            known: set[str] = set()
            for start in range(0, len(keys), 500):
                known |= set(s.scalars(select(RoutingJob.key).where(RoutingJob.key.in_(keys[start:start + 500]))))
            fresh = {j.key: j for j in jobs if j.key not in known}
            due = now_ms()
            s.add_all(RoutingJob(key=j.key, rule=j.rule, peer=j.peer, study_instance_uid=j.study_instance_uid,
                                 sop_instance_uid=j.sop_instance_uid, transfer_syntax=j.transfer_syntax,
                                 state=PENDING, due_ms=due) for j in fresh.values())
            row = s.get(RoutingCursor, CURSOR)
            if row is None:
                s.add(RoutingCursor(name=CURSOR, value=cursor))
            else:
                row.value = cursor
        return len(fresh)

    def due(self, limit: int = 200, *, besides: Collection[str] = ()) -> list[Job]:
        """Pending jobs whose time has come, oldest first; none for the nodes ``besides`` (being sent to)."""
        with self.db.session() as s:
            rows = s.scalars(select(RoutingJob).where(RoutingJob.state == PENDING, RoutingJob.due_ms <= now_ms(),
                                                      RoutingJob.peer.not_in(list(besides)))
                             .order_by(RoutingJob.id).limit(limit))
            return [_job(r) for r in rows]

    def next_due(self, *, besides: Collection[str] = ()) -> float | None:
        """Seconds until the next pending job is due (0 when one is), None when none is pending; the nodes
        ``besides`` left out."""
        with self.db.session() as s:
            due = s.scalar(select(func.min(RoutingJob.due_ms)).where(RoutingJob.state == PENDING,
                                                                     RoutingJob.peer.not_in(list(besides))))
        return None if due is None else max(0.0, (due - now_ms()) / 1000)

    def done(self, ids: list[int]) -> None:
        if ids:
            with self.db.session() as s:
                s.execute(update(RoutingJob).where(RoutingJob.id.in_(ids))
                          .values(state=DONE, last_error="", updated_at=utcnow()))

    def attempt_failed(self, ids: list[int], error: str, *, final: bool = False) -> None:
        """One more failed attempt for each job: due again after the back-off, FAILED after the last attempt
        (or at once when ``final``: nothing a retry could change, e.g. the instance was deleted)."""
        if not ids:
            return
        with self.db.session() as s:
            for row in s.scalars(select(RoutingJob).where(RoutingJob.id.in_(ids))):
                row.attempts += 1
                row.last_error = error[:2000]
                row.updated_at = utcnow()
                if final or row.attempts >= self.backoff.attempts:
                    row.state = FAILED
                else:
                    row.due_ms = now_ms() + int(self.backoff.wait(row.attempts) * 1000)

    def retry(self, job_id: int) -> Job:
        """A failed (or waiting) job tried again at once, its attempts counted from zero."""
        with self.db.session() as s:
            row = s.get(RoutingJob, job_id)
            if row is None:
                raise NotFound(f"no routing job {job_id}")
            if row.state == DONE:
                raise Conflict(f"routing job {job_id} is done")
            row.state, row.attempts, row.due_ms, row.updated_at = PENDING, 0, now_ms(), utcnow()
            s.flush()
            return _job(row)

    def jobs(self, state: str | None = None, *, rule: str | None = None, limit: int = 100,
             offset: int = 0) -> list[Job]:
        if state is not None and state not in STATES:
            raise InvalidRule(f"state must be one of {', '.join(STATES)}, not {state!r}")
        q = select(RoutingJob)
        if state is not None:
            q = q.where(RoutingJob.state == state)
        if rule is not None:
            q = q.where(RoutingJob.rule == rule)
        with self.db.session() as s:
            return [_job(r) for r in s.scalars(q.order_by(RoutingJob.id.desc()).limit(limit).offset(offset))]

    def counts(self) -> dict[str, int]:
        with self.db.session() as s:
            found = dict(s.execute(select(RoutingJob.state, func.count()).group_by(RoutingJob.state)).all())
        return {state: int(found.get(state, 0)) for state in STATES}


def _job(r: RoutingJob) -> Job:
    return Job(r.id, r.rule, r.peer, r.study_instance_uid, r.sop_instance_uid, r.transfer_syntax, r.state,
               r.attempts, r.due_ms / 1000 if r.state == PENDING else None, r.last_error, r.created_at, r.updated_at)
