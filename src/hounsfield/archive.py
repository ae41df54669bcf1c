"""The archive: store instances (file + index), find what is there, hand back files, delete.

Every way in — C-STORE, STOW-RS, ``hounsfield import`` — calls ``Archive.store_*`` (C-STORE through
``accept_file`` and the indexer process); every way out — C-FIND, C-GET, C-MOVE, QIDO-RS, WADO-RS, the REST
API — goes through ``Archive.reading`` and ``query``.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import itertools
import logging
import os
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from sqlalchemy import Connection, Integer, Select, String, bindparam, delete, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from hounsfield import matching, uids
from hounsfield.audit.actions import NOT_RECORDED, STUDY_DELETED, Recorder
from hounsfield.db import Database
from hounsfield.dicomfile import REQUIRED_UIDS, Header, part10_prefix, read_header
from hounsfield.errors import HounsfieldError, InvalidDataset, NotFound, StorageFull
from hounsfield.headerjson import MAX_DEPTH
from hounsfield.models import Instance, Patient, Series, Study, utcnow
from hounsfield.query import Query
from hounsfield.storage import FileStore, PathTaken, claim_stripe, safe_component, sha256_file

log = logging.getLogger(__name__)
SETTLE_HELP_AFTER = 0.05  # seconds a query waits for the indexer before it indexes what it waits for
INDEX_BATCH = 32  # pending instances indexed in one transaction
_arrivals = itertools.count()
Put = Callable[[str, bool], None]  # put(rel, new): place the instance's file at rel; new: never replace a file


class StoreOutcome(enum.Enum):
    STORED = "stored"
    REPLACED = "replaced"
    DUPLICATE_KEPT = "duplicate-kept"


@dataclass(frozen=True)
class StoreResult:
    outcome: StoreOutcome
    sop_instance_uid: str
    sop_class_uid: str
    study_instance_uid: str
    series_instance_uid: str
    transfer_syntax_uid: str


@dataclass(frozen=True)
class StoredInstance:
    """What retrieval needs of a stored instance."""

    sop_instance_uid: str
    sop_class_uid: str
    study_instance_uid: str
    series_instance_uid: str
    transfer_syntax_uid: str
    path: Path
    size: int


def uid_component(uid: str) -> str:
    """A file or directory name for a UID that no other UID can have.

    A UID of digits and dots is its own name (no file system changes such a name). Anything else — a UID
    that breaks PS3.5 9.1 but was accepted (``uid_policy = lenient``), e.g. with a trailing dot, which some
    file systems drop — is named by its harmless characters plus a digest of the whole value, and the ``~``
    that no UID has keeps the two kinds apart."""
    if uids.conformance(uid) is not uids.Conformance.INVALID and uid[0] != "." and uid[-1] != ".":
        return uid
    digest = hashlib.sha256(uid.encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return f"{safe_component(uid, 'uid')[:24]}~{digest}"


def relative_path(header: Header) -> str:
    """Browsable layout: PatientID / StudyInstanceUID / SeriesInstanceUID / SOPInstanceUID.dcm.

    The patient directory is only for browsing (Patient IDs can hold anything, so it is lossy); the other
    names are ``uid_component``s, so two instances never get the same path (and a placement that finds
    its path taken anyway never replaces the file there: ``Archive._place``)."""
    return "/".join(
        (
            safe_component(header.text("PatientID"), "no-patient-id"),
            uid_component(header.text("StudyInstanceUID")),
            uid_component(header.text("SeriesInstanceUID")),
            uid_component(header.sop_instance_uid) + ".dcm",
        )
    )


class Archive:
    def __init__(self, db: Database, store: FileStore, *, duplicate_policy: str = "keep",
                 uid_policy: str = "lenient", max_depth: int = MAX_DEPTH, audit: Recorder = NOT_RECORDED) -> None:
        self.db = db
        self.files = store
        self.audit = audit  # also the DICOM handlers' (``dimse.handlers``)
        self.duplicate_policy = duplicate_policy
        self.strict_uids = uid_policy == "strict"
        self.max_depth = max_depth

    # ---- ways in -------------------------------------------------------------------------------
    def read(self, source: Path | bytes, *, keys_only: bool = False) -> Header:
        """The header of an instance offered for storage, checked as every way in checks it: complete,
        sequences within ``max_depth``, identifying UIDs that are UIDs (``uid_policy``)."""
        header = read_header(source, keys_only=keys_only, max_depth=self.max_depth)
        for keyword in REQUIRED_UIDS:
            why = uids.problem(header.text(keyword), strict=self.strict_uids)
            if why is not None:
                raise InvalidDataset(f"{keyword} is not a valid UID: {why}")
        return header

    def store_file(self, path: Path, origin: str = "") -> StoreResult:
        """Store (a copy of) a Part-10 file or a raw dataset file."""
        header = self.read(path)
        if not header.has_file_meta:
            return self.store_bytes(Path(path).read_bytes(), origin, header=header)
        data = Path(path).read_bytes()
        return self._store_claimed(header, origin, lambda rel, new: self.files.put_bytes(rel, data, exclusive=new))

    def store_bytes(self, data: bytes, origin: str = "", *, header: Header | None = None) -> StoreResult:
        """Store an encoded instance held in memory (STOW-RS part, a file read by ``import``)."""
        header = header or self.read(data)
        if not header.has_file_meta:  # a bare dataset: give it the Part-10 wrapper an archive file needs
            data = part10_prefix(header) + bytes(data)
        return self._store_claimed(header, origin, lambda rel, new: self.files.put_bytes(rel, data, exclusive=new))

    def _store_claimed(self, header: Header, origin: str, put: "Put") -> StoreResult:
        with self.files.claiming_instance(header.sop_instance_uid, wait=True):
            return self._store(header, origin, put)

    # ---- C-STORE's way in: acknowledged once durable, indexed by the indexer process ------------------
    def accept_file(self, path: Path, origin: str = "", *,
                    admit: Callable[[Header], None] | None = None) -> Header:
        """Check a received Part-10 file and make it durable in the pending queue (moving it).

        A sender waits for each C-STORE response, so the response goes out as soon as the instance is safe
        on disk; ``index_pending``, in the indexer process, then puts it in the layout and the index on the
        other core. Queries ``settle`` first, so a client finds what it has just stored.

        ``admit`` (a site's filter, issue 14) sees the whole header first and refuses by raising: only then is
        the header read whole, which the identifying UIDs alone do not need.
        """
        header = self.read(path, keys_only=admit is None)
        if admit is not None:
            admit(header)
        if not header.has_file_meta:
            self.store_file(path, origin)
            return header
        name = f"{time.time_ns():020d}-{os.getpid()}-{next(_arrivals)}_{safe_component(origin, '-')}.dcm"
        self.files.put_pending(path, name)
        return header

    def index_pending(self, paths: Iterable[Path] | None = None, *, deadline: float | None = None) -> int:
        """Index the pending instances (``paths``, or all of them), oldest first; returns how many were handled.

        The pending file is linked into the layout and removed only after the index row is committed, so a
        crash at any point leaves it pending, and indexing it again is harmless. A failure that may pass
        (database busy, disk full) leaves it for the next round. A query may help a lagging indexer
        (``settle``, with a ``deadline`` on ``time.monotonic()``): each file, and each SOP Instance UID, is claimed
        while it is indexed; each skips what the other holds, so both work at once on different instances, and
        the second to come to a file finds it gone.

        Up to ``INDEX_BATCH`` instances go into one transaction (``_store_batch``): one commit and one fsync per
        directory for all of them instead of one each, which was most of an instance's indexing time. A batch
        that fails as a whole is indexed again one instance at a time, so that one file that cannot be indexed
        is quarantined alone and never holds up the others.
        """
        todo = self.files.pending_files() if paths is None else list(paths)
        handled = 0
        for start in range(0, len(todo), INDEX_BATCH):
            if deadline is not None and time.monotonic() > deadline:
                break
            done, retry_later = self._index_batch(todo[start:start + INDEX_BATCH])
            handled += done
            if retry_later:
                break
        return handled

    def _index_batch(self, paths: list[Path], *, retry_refused: bool = True) -> tuple[int, bool]:
        """Claim, read and index ``paths`` together; (how many were handled, whether to stop this round).

        A file is claimed for as long as it is in the batch, and given up at once when the batch leaves it
        (another process holds its instance, or it is a second copy of one already in the batch), so that
        whoever comes to it next is never kept from it by a batch that does not index it. A file whose claim
        was refused is tried once more after the batch: it may be another name of a file the batch held (a
        pending file linked twice, as a crash between the commit and the unlink leaves it)."""
        with ExitStack() as claims:
            ready: list[tuple[Path, Header]] = []
            again: list[tuple[Path, Header]] = []
            refused: list[Path] = []
            uids: set[str] = set()
            stripes: set[int] = set()
            for path in paths:
                held = ExitStack()
                if not held.enter_context(self.files.claiming_pending(path)):
                    held.close()
                    refused.append(path)  # the indexer is on it, or has indexed it meanwhile
                    continue
                try:
                    header = self.read(path)
                except OSError as exc:  # may pass: retried next round
                    held.close()
                    log.warning("indexing %s failed, will retry: %s", path.name, exc)
                    return self._index_each(ready)[0], True
                except Exception as exc:  # noqa: BLE001 - a file that cannot be indexed must not stop the queue
                    self._quarantine(path, exc)
                    held.close()
                    continue
                uid = header.sop_instance_uid
                if uid not in uids and claim_stripe(uid) not in stripes:  # a stripe held covers its other UIDs
                    if not held.enter_context(self.files.claiming_instance(uid)):
                        held.close()
                        continue  # a copy of the same instance is being stored: this one waits its turn
                    stripes.add(claim_stripe(uid))
                claims.push(held)
                if uid in uids:
                    again.append((path, header))  # a second copy of one instance: after the first is in
                    continue
                uids.add(uid)
                ready.append((path, header))
            handled, retry_later = self._index_claimed(ready, again)
        if retry_refused and not retry_later:
            for path in refused:
                if path.exists():
                    done, retry_later = self._index_batch([path], retry_refused=False)
                    handled += done
                    if retry_later:
                        break
        return handled, retry_later

    def _index_claimed(self, ready: list[tuple[Path, Header]],
                       again: list[tuple[Path, Header]]) -> tuple[int, bool]:
        """Index what a batch holds: ``ready`` in one transaction (one by one when that fails), then ``again``."""
        if len(ready) < 2:
            return self._index_each(ready + again)
        try:
            self._store_batch(ready)
        except Exception as exc:  # noqa: BLE001 - each on its own, where the failure is told apart
            log.info("indexing %d instances together failed (%s); indexing them one by one", len(ready), exc)
            return self._index_each(ready + again)
        for path, _ in ready:
            path.unlink()
        done, retry_later = self._index_each(again)
        return len(ready) + done, retry_later

    def _index_each(self, ready: list[tuple[Path, Header]]) -> tuple[int, bool]:
        """Index claimed pending instances one transaction each; (how many were handled, whether to stop)."""
        handled = 0
        for path, header in ready:
            try:
                self._store(header, _origin(path), lambda rel, new, path=path: self.files.put_link(rel, path,
                                                                                                 exclusive=new))
            except (StorageFull, OperationalError, OSError) as exc:  # may pass: retried next round
                log.warning("indexing %s failed, will retry: %s", path.name, exc)
                return handled, True
            except Exception as exc:  # noqa: BLE001 - a file that cannot be indexed must not stop the queue
                self._quarantine(path, exc)
                continue
            path.unlink()
            handled += 1
        return handled, False

    def _store_batch(self, ready: list[tuple[Path, Header]]) -> None:
        """``_store`` for several claimed pending instances in one transaction: every file linked into the
        layout, their directories made durable once each, then the index rows committed together."""
        placed: list[str] = []
        linked: list[str] = []
        ids: dict[tuple, int] = {}
        try:
            with self.db.session() as s:
                for path, header in ready:
                    uid = header.sop_instance_uid
                    existing = s.execute(_STORED_PATH, {"uid": uid}).scalar()
                    if existing is not None and self.duplicate_policy == "keep":
                        log.info("duplicate SOP Instance UID %s from %s kept the stored copy", uid,
                                 _origin(path) or "-")
                        continue

                    def put(rel: str, new: bool, path: Path = path) -> None:
                        self.files.put_link(rel, path, exclusive=new, sync_dir=False)
                        linked.append(rel)

                    if existing is None:
                        rel = self._place(s, header, put)
                        placed.append(rel)
                    else:
                        rel = existing
                        put(rel, False)
                    self._index(s.connection(), header, rel, _origin(path), replace=existing is not None, ids=ids)
                self.files.sync_dirs(linked)  # the files durable in the layout before their rows exist
        except Exception:
            for rel in placed:
                self.files.delete(rel)
            raise

    def _quarantine(self, path: Path, exc: Exception) -> None:
        reason = str(exc) if isinstance(exc, HounsfieldError) else f"{type(exc).__name__}: {exc}"
        where = self.files.quarantine(path, reason[:2000], origin=_origin(path))
        log.error("received file %s cannot be indexed, quarantined as %s: %s", path.name, where.name, reason[:500])

    def backlog(self) -> tuple[int, float]:
        """How many acknowledged instances wait for the indexer, and how long the oldest has waited (s)."""
        waiting = self.files.pending_files()
        if not waiting:
            return 0, 0.0
        try:
            arrived = int(waiting[0].name[:20]) / 1e9  # names start with the arrival time (``accept_file``)
        except ValueError:
            arrived = waiting[0].stat().st_mtime
        return len(waiting), max(0.0, time.time() - arrived)

    # ---- files the indexer could not take --------------------------------------------------------
    def quarantined(self) -> list[dict[str, Any]]:
        """What is in quarantine: name, reason, time, size and sender of each file, oldest first."""
        return self.files.quarantined()

    def retry_quarantined(self, name: str) -> bool:
        """Queue a quarantined file again (after the cause was fixed); whether it is indexed now (if not, it
        is back in quarantine with the new reason)."""
        path = self._quarantined(name)
        origin = _origin(path)
        pending = self.files.put_pending(path, f"{time.time_ns():020d}-{os.getpid()}-{next(_arrivals)}_{origin}.dcm")
        self.files.release_record(name)
        self.index_pending([pending])
        return not pending.exists() and not any(r["name"] == pending.name for r in self.quarantined())

    def discard_quarantined(self, name: str) -> None:
        self._quarantined(name)
        self.files.release(name)
        log.info("quarantined file %s discarded", name)

    def _quarantined(self, name: str) -> Path:
        try:
            return self.files.quarantined_file(name)
        except FileNotFoundError:
            raise NotFound(f"no quarantined file {name}") from None

    def settle(self, timeout: float = 10.0) -> None:
        """Wait until the instances acknowledged before this call are indexed (read-your-writes), at most
        ``timeout`` seconds.

        The indexer process only gets CPU the receivers leave (``processes``); when it lags by more than
        ``SETTLE_HELP_AFTER``, the waiting process indexes what it waits for itself (what the indexer is not
        working on), so a query does not wait on a starved indexer.
        """
        waiting = set(self.files.pending_files())
        start = time.monotonic()
        deadline = start + timeout
        while waiting:
            now = time.monotonic()
            if now > deadline:
                log.warning("%d received instances are still waiting for the indexer", len(waiting))
                return
            if now - start > SETTLE_HELP_AFTER:
                self.index_pending(sorted(waiting), deadline=deadline)
            time.sleep(0.002)
            waiting.intersection_update(self.files.pending_files())

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A session on the index that sees every instance acknowledged so far."""
        self.settle()
        with self.db.session() as s:
            yield s

    def _store(self, header: Header, origin: str, put: Put) -> StoreResult:
        uid = header.sop_instance_uid
        result = StoreResult(
            StoreOutcome.STORED, uid, header.text("SOPClassUID"), header.text("StudyInstanceUID"),
            header.text("SeriesInstanceUID"), header.transfer_syntax_uid,
        )
        existing: str | None = None
        placed: str | None = None
        try:
            with self.db.session() as s:  # one transaction: the duplicate check, then the rows
                existing = s.execute(_STORED_PATH, {"uid": uid}).scalar()
                if existing is not None and self.duplicate_policy == "keep":
                    log.info("duplicate SOP Instance UID %s from %s kept the stored copy", uid, origin or "-")
                    return _replace(result, StoreOutcome.DUPLICATE_KEPT)
                if existing is None:
                    rel = placed = self._place(s, header, put)  # durable before the index row exists
                else:
                    rel = existing
                    put(rel, False)  # duplicate_policy = overwrite: the instance's own file, replaced
                self._index(s.connection(), header, rel, origin, replace=existing is not None)
        except IntegrityError:  # another association stored the same instance at the same moment
            log.info("SOP Instance UID %s was stored concurrently; keeping one copy", uid)
            return _replace(result, StoreOutcome.DUPLICATE_KEPT)
        except Exception:
            if placed is not None:
                self.files.delete(placed)
            raise
        return _replace(result, StoreOutcome.REPLACED if existing else StoreOutcome.STORED)

    def _place(self, s: Session, header: Header, put: Put) -> str:
        """Put a new instance's file in the layout without ever replacing another instance's file; returns
        where it went. The caller holds the instance's claim, and no index row has its SOP Instance UID.

        Names are unique per UID (``relative_path``), so a file already there is either what a crash left
        between placing and indexing this same instance (no row owns it: replaced), or a file of an earlier
        layout that an index row still owns: then this instance goes beside it, under a name of its own."""
        rel = relative_path(header)
        try:
            put(rel, True)
            return rel
        except PathTaken:
            owner = s.execute(_PATH_OWNER, {"path": rel}).scalar()
            if owner is None:
                log.warning("replacing %s, left unindexed by an earlier crash", rel)
                put(rel, False)
                return rel
        digest = hashlib.sha256(header.sop_instance_uid.encode("utf-8", "surrogateescape")).hexdigest()[:32]
        beside = f"{rel.removesuffix('.dcm')}~{digest}.dcm"
        log.warning("%s belongs to instance %s; storing %s as %s", rel, owner, header.sop_instance_uid, beside)
        put(beside, True)
        return beside

    def _index(self, conn: Connection, header: Header, rel: str, origin: str, *, replace: bool,
               ids: dict[tuple, int] | None = None) -> None:
        """Patient, study and series rows when new, then the instance row (SQLAlchemy Core: this is the
        per-instance hot path, where the ORM's unit of work costs more than the statements). ``ids``: the row
        ids found so far in this transaction (a batch of one series looks its patient, study and series up
        once)."""
        h = header
        path = self.files.path(rel)
        size = os.path.getsize(path)
        digest = sha256_file(path)
        header_json = h.packed("/dicom-web/studies/{}/series/{}/instances/{}/bulk".format(
            h.text("StudyInstanceUID"), h.text("SeriesInstanceUID"), h.sop_instance_uid))
        patient = _get_or_create(
            conn, Patient, ids,
            {"patient_id": h.text("PatientID"), "issuer_of_patient_id": h.text("IssuerOfPatientID")}, {},
        )
        study = _get_or_create(
            conn, Study, ids, {"study_instance_uid": h.text("StudyInstanceUID")},
            {
                "patient_fk": patient,
                **study_demographics(h),
                "study_date": matching.normalize_date(h.text("StudyDate")),
                "study_time": matching.normalize_time(h.text("StudyTime")),
                "accession_number": h.text("AccessionNumber"),
                "study_id": h.text("StudyID"),
                "study_description": h.text("StudyDescription")[:64],
                "referring_physician_name": matching.normalize_value("PN", h.text("ReferringPhysicianName")),
                "attrs": header_json,
            },
        )
        series = _get_or_create(
            conn, Series, ids, {"series_instance_uid": h.text("SeriesInstanceUID")},
            {
                "study_fk": study,
                "modality": h.text("Modality"),
                "series_number": h.text("SeriesNumber"),
                "series_description": h.text("SeriesDescription")[:64],
                "body_part_examined": h.text("BodyPartExamined"),
                "series_date": matching.normalize_date(h.text("SeriesDate")),
                "series_time": matching.normalize_time(h.text("SeriesTime")),
                "attrs": header_json,
            },
        )
        values: dict[str, Any] = {
            "series_fk": series,
            "sop_class_uid": h.text("SOPClassUID"),
            "instance_number": h.integer("InstanceNumber"),
            "rows": h.integer("Rows"),
            "columns": h.integer("Columns"),
            "number_of_frames": h.integer("NumberOfFrames"),
            "transfer_syntax_uid": header.transfer_syntax_uid,
            "path": rel,
            "size": size,
            "sha256": digest,
            "origin": origin[:64],
            "header": header_json,
        }
        values = fitted(Instance, values)
        if replace:
            conn.execute(update(Instance).where(Instance.sop_instance_uid == header.sop_instance_uid)
                         .values(**values, received_at=utcnow()))
        else:
            conn.execute(insert(Instance), {"sop_instance_uid": header.sop_instance_uid, **values})
        # --- issue 13: what an RT object references, from the header JSON at hand (RT SOP classes only) ---
        if values["sop_class_uid"].startswith(_RT_SOP_CLASS_PREFIX):
            from hounsfield.rt.models import index_references

            index_references(conn, h.json, values["sop_class_uid"], replace=replace)
        # --- end issue 13 ---

    # ---- ways out ------------------------------------------------------------------------------
    def stored(self, rows: Iterable[tuple[Instance, str, str]]) -> list[StoredInstance]:
        return [
            StoredInstance(i.sop_instance_uid, i.sop_class_uid, study_uid, series_uid, i.transfer_syntax_uid,
                           self.files.path(i.path), i.size)
            for i, series_uid, study_uid in rows
        ]

    def instances(
        self, *, study_uid: str | None = None, series_uid: str | None = None,
        sop_uids: Iterable[str] | None = None, patient_id: str | None = None,
    ) -> list[StoredInstance]:
        """Stored instances under the given keys, in series then instance-number order."""
        q = (
            select(Instance, Series.series_instance_uid, Study.study_instance_uid)
            .join(Series, Instance.series_fk == Series.id)
            .join(Study, Series.study_fk == Study.id)
            .join(Patient, Study.patient_fk == Patient.id)
        )
        if patient_id is not None:
            q = q.where(Patient.patient_id == patient_id)
        if study_uid is not None:
            q = q.where(Study.study_instance_uid == study_uid)
        if series_uid is not None:
            q = q.where(Series.series_instance_uid == series_uid)
        if sop_uids is not None:
            q = q.where(Instance.sop_instance_uid.in_(list(sop_uids)))
        q = q.order_by(Series.id, Instance.instance_number, Instance.id)
        with self.reading() as s:
            return self.stored(s.execute(q).all())

    def retrieve(self, query: Query) -> list[StoredInstance]:
        """The stored instances a C-GET / C-MOVE identifier names."""
        with self.reading() as s:
            return self.stored(s.execute(query.instances_statement()).all())

    def instance(self, sop_uid: str) -> StoredInstance:
        found = self.instances(sop_uids=[sop_uid])
        if not found:
            raise NotFound(f"no instance with SOP Instance UID {sop_uid}")
        return found[0]

    # ---- deletion ------------------------------------------------------------------------------
    def delete(self, level: str, uid: str, *, user: str = "", address: str = "") -> int:
        """Delete a patient (by PatientID), study, series or instance; returns the number of instances removed.
        Each study it removes instances of is one ``study_deleted`` audit event, done by ``user`` from
        ``address`` ("" for this machine: the CLI, the system)."""
        column = {
            "patient": Patient.patient_id, "study": Study.study_instance_uid,
            "series": Series.series_instance_uid, "instance": Instance.sop_instance_uid,
        }[level]
        q = (
            select(Instance.id, Instance.path, Study.study_instance_uid, Patient.patient_id, Study.patient_name)
            .join(Series, Instance.series_fk == Series.id)
            .join(Study, Series.study_fk == Study.id)
            .join(Patient, Study.patient_fk == Patient.id)
            .where(column == uid)
        )
        # the events recorded about what goes (a study viewed a moment ago names only its study: the audit
        # writer looks its patient up in the index) are written while the index still holds it
        self.audit.flush()
        with self.reading() as s:
            doomed = s.execute(q).all()
            if not doomed:
                exists = s.scalar(select(column).where(column == uid).limit(1)) if level != "instance" else None
                if exists is None:
                    raise NotFound(f"no {level} {uid}")
            ids = [row.id for row in doomed]
            from hounsfield.rt.models import forget_instances  # issue 13: RT references and DVHs go with them

            for chunk in range(0, len(ids), 500):
                forget_instances(s, ids[chunk:chunk + 500])
                s.execute(delete(Instance).where(Instance.id.in_(ids[chunk:chunk + 500])))
            _prune_empty(s)
        for row in doomed:  # files go after the index no longer points at them
            self.files.delete(row.path)
        log.info("deleted %s %s (%d instances)", level, uid, len(doomed))
        studies: dict[str, list[Any]] = {}
        for row in doomed:
            studies.setdefault(row.study_instance_uid, []).append(row)
        for study_uid, rows in studies.items():
            what = "" if level == "study" else f"{level} {uid}: "
            self.audit.record(STUDY_DELETED, user=user, address=address, patient_id=rows[0].patient_id,
                              patient_name=rows[0].patient_name, study_instance_uid=study_uid,
                              detail=f"{what}{len(rows)} instances")
        return len(doomed)


def study_demographics(header: Header) -> dict[str, str]:
    """The patient-level columns of a study row, from the instance it is created from (normalised for
    matching): kept per study, as two studies under one Patient ID may disagree."""
    return {
        "patient_name": matching.normalize_value("PN", header.text("PatientName")),
        "patient_birth_date": matching.normalize_date(header.text("PatientBirthDate")),
        "patient_sex": matching.normalize_value("CS", header.text("PatientSex")),
    }


def _prune_empty(s: Session) -> None:
    """Remove series without instances, studies without series, patients without studies."""
    s.execute(delete(Series).where(~select(Instance.id).where(Instance.series_fk == Series.id).exists()))
    s.execute(delete(Study).where(~select(Series.id).where(Series.study_fk == Study.id).exists()))
    s.execute(delete(Patient).where(~select(Study.id).where(Study.patient_fk == Patient.id).exists()))


def _replace(result: StoreResult, outcome: StoreOutcome) -> StoreResult:
    return StoreResult(outcome, result.sop_instance_uid, result.sop_class_uid, result.study_instance_uid,
                       result.series_instance_uid, result.transfer_syntax_uid)


@functools.cache
def _id_lookup(model: type, keys: tuple[str, ...]) -> Select:
    """``SELECT id FROM model WHERE key = :key ...``, built once: per instance, building the expression cost
    more than running it."""
    return select(model.id).where(*(getattr(model, k) == bindparam(k) for k in keys))


def _origin(pending: Path) -> str:
    """The sender a pending file's name records (``accept_file``)."""
    return pending.stem.partition("_")[2]


_RT_SOP_CLASS_PREFIX = "1.2.840.10008.5.1.4.1.1.481."  # issue 13: RT objects (hounsfield.rt.models)
_STORED_PATH = select(Instance.path).where(Instance.sop_instance_uid == bindparam("uid"))
_PATH_OWNER = select(Instance.sop_instance_uid).where(Instance.path == bindparam("path"))


@functools.cache
def _limits(model: type) -> tuple[dict[str, int], frozenset[str]]:
    """The length of each string column and the names of the 32-bit integer columns of ``model``."""
    lengths, integers = {}, set()
    for column in model.__table__.columns:
        if isinstance(column.type, String) and column.type.length:
            lengths[column.name] = column.type.length
        elif type(column.type) is Integer and not column.primary_key and not column.foreign_keys:
            integers.add(column.name)
    return lengths, frozenset(integers)


def fitted(model: type, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` cut to what the index columns hold: a header may carry any length or number (a 10,000
    character Patient ID, an Instance Number of 10^12), which PostgreSQL refuses and SQLite keeps. Columns
    are for matching and sorting; answers come from the stored header, which keeps every value whole."""
    lengths, integers = _limits(model)
    out = dict(values)
    for name, value in values.items():
        if isinstance(value, str) and len(value) > lengths.get(name, len(value)):
            out[name] = value[:lengths[name]]
        elif name in integers and isinstance(value, int) and not -2**31 <= value < 2**31:
            out[name] = None
    return out


def _get_or_create(conn: Connection, model: type, ids: dict[tuple, int] | None, unique: dict[str, Any],
                   values: dict[str, Any]) -> int:
    """The primary key of the row with ``unique`` keys, inserting it (race-free) when missing; remembered in
    ``ids`` (this transaction's, when given)."""
    unique = fitted(model, unique)
    key = (model, *unique.items())
    if ids is not None and key in ids:
        return ids[key]
    lookup = _id_lookup(model, tuple(unique))
    found = conn.execute(lookup, unique).scalar()
    if found is None:
        upsert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
        conn.execute(upsert(model).on_conflict_do_nothing(), {**unique, **fitted(model, values)})
        found = conn.execute(lookup, unique).scalar_one()
    if ids is not None:
        ids[key] = found
    return found

