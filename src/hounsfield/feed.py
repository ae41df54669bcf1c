"""The index feed (issue 14): the instances the index gains, in order, and the studies that stop gaining any.

Plugins (``on_instance_stored``, ``on_study_stable``) and routing rules act on what has been stored. C-STORE
acknowledges an instance once it is durable in the pending queue, in whichever DICOM process received it, and
the indexer process puts it in the index later; STOW-RS and uploads index in the HTTP process. The one place
that sees every way in, after it is complete, is the ``instances`` table, so the feed reads that: rows with an
``Instance.id`` above its cursor, oldest first, polled by the main process.

Why the id order is safe: on SQLite every write transaction holds the database's one write lock from its first
insert to its commit, so the ids are committed in the order they are handed out, and the feed never sees id
n + 1 before id n. On PostgreSQL two transactions (the indexer, a query helping it: ``Archive.settle``) may
commit out of order; an id the feed skips over is remembered as a *hole* and looked for again at every poll for
``GAP_WAIT`` seconds (an id rolled back never comes). SQLite hands the largest id out again once its row is
deleted; the feed sees the largest id fall below its cursor and steps back to it.

A study is *stable* when it has gained no instance for ``stable_seconds`` (Orthanc's StableAge): the feed keeps
the studies that gained instances since they were last stable, in memory. ``resume_point`` is the id a restarted
feed starts after so that it misses nothing it has not told yet: below every hole and every study not yet
stable. Telling again what was told (after a restart) is the consumer's to ignore (routing keys its jobs).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from sqlalchemy import func, select

from hounsfield.db import Database
from hounsfield.models import Instance, Patient, Series, Study

GAP_WAIT = 30.0  # seconds a hole in the ids is looked for (a PostgreSQL transaction still committing)
MAX_HOLES = 10000  # holes remembered at most (a jump of the sequence beyond this is no transaction)
BATCH = 500  # rows read per poll


@dataclass(frozen=True)
class InstanceStored:
    """An instance the index gained (``on_instance_stored``; a routing rule ``on = "instance_stored"``)."""

    instance_id: int
    sop_instance_uid: str
    sop_class_uid: str
    series_instance_uid: str
    study_instance_uid: str
    patient_id: str
    modality: str
    study_description: str
    calling_ae: str  # who sent it (the index's origin: the calling AE title of a C-STORE)
    transfer_syntax_uid: str


@dataclass(frozen=True)
class StudyStable:
    """A study that gained no instance for ``stable_seconds`` (``on_study_stable``). ``modalities`` and
    ``calling_aes`` are those of the instances it gained since it was last stable (``instances`` of them);
    ``last_instance_id`` names this moment of the study (routing keys its study jobs by it)."""

    study_instance_uid: str
    patient_id: str
    study_description: str
    last_instance_id: int
    instances: int
    modalities: frozenset[str]
    calling_aes: frozenset[str]


@dataclass
class _Open:
    first_id: int
    last_id: int
    last_seen: float
    patient_id: str
    description: str
    count: int = 0
    modalities: set[str] = field(default_factory=set)
    calling_aes: set[str] = field(default_factory=set)


_COLUMNS = (Instance.id, Instance.sop_instance_uid, Instance.sop_class_uid, Series.series_instance_uid,
            Study.study_instance_uid, Patient.patient_id, Series.modality, Study.study_description,
            Instance.origin, Instance.transfer_syntax_uid)


class IndexFeed:
    """Polled by one thread: ``poll`` returns what happened since the last poll."""

    def __init__(self, db: Database, *, after: int, stable_seconds: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.db = db
        self.high = after  # the largest id seen
        self.stable_seconds = stable_seconds
        self.clock = clock
        self._holes: dict[int, float] = {}  # id → when it was skipped over
        self._open: dict[str, _Open] = {}  # Study Instance UID → what it gained since it was last stable

    @staticmethod
    def last_id(db: Database) -> int:
        """The largest instance id in the index now (0 when empty): where a feed that tells only what comes
        from now on starts."""
        with db.session() as s:
            return s.scalar(select(func.max(Instance.id))) or 0

    @property
    def resume_point(self) -> int:
        """The cursor to persist: a feed restarted ``after`` it tells everything this one has not told yet."""
        point = self.high
        if self._holes:
            point = min(point, min(self._holes) - 1)
        if self._open:
            point = min(point, min(o.first_id for o in self._open.values()) - 1)
        return point

    def poll(self) -> tuple[list[InstanceStored], list[StudyStable]]:
        now = self.clock()
        stored = self._read(now)
        for event in stored:
            self._gained(event, now)
        return stored, self._stable(now)

    def _statement(self):  # noqa: ANN202 - a Select
        return (select(*_COLUMNS).join(Series, Instance.series_fk == Series.id)
                .join(Study, Series.study_fk == Study.id).join(Patient, Study.patient_fk == Patient.id))

    def _read(self, now: float) -> list[InstanceStored]:
        with self.db.session() as s:
            rows = list(s.execute(self._statement().where(Instance.id > self.high).order_by(Instance.id)
                                  .limit(BATCH)))
            if self._holes:
                wanted = sorted(self._holes)[:BATCH]
                rows += list(s.execute(self._statement().where(Instance.id.in_(wanted))))
            if not rows:
                largest = s.scalar(select(func.max(Instance.id))) or 0
                if largest < self.high:  # SQLite: the largest rows were deleted, their ids come again
                    self.high = largest
                    self._holes = {i: t for i, t in self._holes.items() if i <= largest}
        events = sorted({row[0]: InstanceStored(*(v if v is not None else "" for v in row)) for row in rows}.values(),
                        key=lambda e: e.instance_id)
        for event in events:
            self._holes.pop(event.instance_id, None)
            if event.instance_id > self.high:
                if event.instance_id - self.high - 1 <= MAX_HOLES - len(self._holes):
                    self._holes.update((i, now) for i in range(self.high + 1, event.instance_id))
                self.high = event.instance_id
        for hole in [i for i, t in self._holes.items() if now - t > GAP_WAIT]:
            del self._holes[hole]
        return events

    def _gained(self, event: InstanceStored, now: float) -> None:
        study = self._open.get(event.study_instance_uid)
        if study is None:
            study = self._open[event.study_instance_uid] = _Open(event.instance_id, event.instance_id, now,
                                                                 event.patient_id, event.study_description)
        study.first_id = min(study.first_id, event.instance_id)
        study.last_id = max(study.last_id, event.instance_id)
        study.last_seen = now
        study.count += 1
        study.modalities.add(event.modality)
        study.calling_aes.add(event.calling_ae)

    def _stable(self, now: float) -> list[StudyStable]:
        done = [uid for uid, o in self._open.items() if now - o.last_seen >= self.stable_seconds]
        out = []
        for uid in done:
            o = self._open.pop(uid)
            out.append(StudyStable(uid, o.patient_id, o.description, o.last_id, o.count, frozenset(o.modalities),
                                   frozenset(o.calling_aes)))
        return out


class Poller:
    """A daemon thread calling ``step`` every ``interval`` seconds (``step`` returning a shorter wait makes the
    next call sooner) until ``stop``; a step that raises is logged and the thread goes on after the interval:
    a database outage must not end the feed for good."""

    def __init__(self, name: str, step: Callable[[], float | None], interval: float) -> None:
        import threading

        self.name = name
        self.step = step
        self.interval = interval
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> "Poller":
        self.thread.start()
        return self

    def _run(self) -> None:
        import logging

        while not self._stop.is_set():
            try:
                wait = self.step()
            except Exception:  # noqa: BLE001 - see the class docstring
                logging.getLogger("hounsfield.feed").exception("%s failed; trying again in %.1f s", self.name,
                                                               self.interval)
                wait = None
            self._stop.wait(self.interval if wait is None else min(wait, self.interval))

    def stop(self, grace: float = 10.0) -> None:
        self._stop.set()
        if self.thread.is_alive():
            self.thread.join(grace)
