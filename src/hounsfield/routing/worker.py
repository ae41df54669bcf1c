"""Routing at work, in the main process of ``serve``: one thread turns what the index gains (``feed``) into
deliveries of the rules that match (``store.DeliveryQueue``, with the feed's cursor, in one transaction); another
hands the deliveries that are due to senders (``DELIVERY_THREADS``, one node each at a time) that send them by
C-STORE, in one association per node and round, and mark each done or failed (``store.Backoff``: retried later,
FAILED after the last attempt). A node that is down or hangs delays only its own deliveries; the rules are read at every round, so a rule added through REST applies to what is
stored from then on (never to what was stored before it).
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from collections import defaultdict
from typing import Callable

from sqlalchemy import select

from hounsfield.archive import Archive, StoredInstance
from hounsfield.audit.actions import STUDY_SENT
from hounsfield.config import Peer
from hounsfield.dimse.status import STORE_STORED
from hounsfield.errors import HounsfieldError, NotFound
from hounsfield.feed import IndexFeed, InstanceStored, Poller, StudyStable
from hounsfield.models import Instance, Series, Study
from hounsfield.peers import PeerRegistry
from hounsfield.routing.rules import INSTANCE_STORED, STUDY_STABLE, Rule
from hounsfield.routing.store import DeliveryQueue, Job, NewJob, RuleBook

log = logging.getLogger("hounsfield.routing")
POLL = 0.5  # seconds between looks at the index and at the queue
DELIVERY_THREADS = 4  # nodes sent to at once
# send(peer, instances, calling AE, transfer syntax or "") → each instance's C-STORE status in order (None: not
# sent); raises HounsfieldError when the association cannot be made (``dimse.client.store_instances`` with the
# server's TLS set-up)
Sender = Callable[[Peer, list[StoredInstance], str, str], list[int | None]]


def jobs_for(rules: list[Rule], stored: list[InstanceStored], stable: list[StudyStable]) -> list[NewJob]:
    """The deliveries the rules make of what the feed told, each keyed so that telling it again adds nothing."""
    out = []
    for rule in rules:
        if rule.on == INSTANCE_STORED:
            for e in stored:
                if rule.matches({"modality": [e.modality], "calling_ae": [e.calling_ae],
                                 "study_description": [e.study_description]}):
                    out += [NewJob(f"{rule.name}|{peer}|i|{e.sop_instance_uid}", rule.name, peer,
                                   e.study_instance_uid, e.sop_instance_uid, rule.transfer_syntax)
                            for peer in rule.send_to]
        elif rule.on == STUDY_STABLE:
            for s in stable:
                if rule.matches({"modality": s.modalities, "calling_ae": s.calling_aes,
                                 "study_description": [s.study_description]}):
                    out += [NewJob(f"{rule.name}|{peer}|s|{s.study_instance_uid}|{s.last_instance_id}", rule.name,
                                   peer, s.study_instance_uid, "", rule.transfer_syntax) for peer in rule.send_to]
    return out


class Routing:
    def __init__(self, archive: Archive, peers: PeerRegistry, book: RuleBook, queue: DeliveryQueue, *,
                 ae_title: str, sender: Sender, stable_seconds: float) -> None:
        self.archive = archive
        self.peers = peers
        self.book = book
        self.queue = queue
        self.ae_title = ae_title
        self.sender = sender
        self.stable_seconds = stable_seconds
        self.feed: IndexFeed | None = None
        self._pollers: list[Poller] = []
        self._senders = ThreadPoolExecutor(DELIVERY_THREADS, thread_name_prefix="routing-send")
        self._busy: set[str] = set()  # nodes a sender is sending to
        self._busy_lock = threading.Lock()

    def start(self) -> None:
        cursor = self.queue.cursor()
        if cursor is None:  # routing's first start: rules apply from now on, not to the archive's past
            cursor = IndexFeed.last_id(self.archive.db)
            self.queue.add([], cursor)
        self.feed = IndexFeed(self.archive.db, after=cursor, stable_seconds=self.stable_seconds)
        for problem in self.book.unknown_peers():
            log.warning("routing rule %s sends to %r, which is no known remote node: its deliveries will fail "
                        "until the node is added", *problem)
        self._pollers = [Poller("routing-feed", self.route_once, POLL).start(),
                         Poller("routing-delivery", self.deliver_once, POLL).start()]

    def stop(self, grace: float = 10.0) -> None:
        for poller in self._pollers:
            poller.stop(grace)
        self._senders.shutdown(wait=True, cancel_futures=True)  # what is being sent ends (or times out)

    # ---- the index → deliveries ----------------------------------------------------------------------------
    def route_once(self) -> None:
        assert self.feed is not None
        before = self.feed.resume_point
        stored, stable = self.feed.poll()
        jobs = jobs_for(self.book.all(), stored, stable) if stored or stable else []
        if jobs or self.feed.resume_point != before:
            added = self.queue.add(jobs, self.feed.resume_point)
            if added:
                log.info("routing: %d deliveries queued", added)

    # ---- deliveries → the nodes ----------------------------------------------------------------------------
    def deliver_once(self) -> float | None:
        """Hand what is due to the senders, a node's deliveries to one sender while no other sends to it;
        returns how soon to look again (at once while more is due)."""
        with self._busy_lock:
            busy = set(self._busy)
        due = self.queue.due(besides=busy)
        groups: dict[tuple[str, str], list[Job]] = defaultdict(list)
        for job in due:
            groups[(job.peer, job.transfer_syntax)].append(job)
        by_peer: dict[str, list[tuple[str, list[Job]]]] = defaultdict(list)
        for (peer_name, syntax), jobs in groups.items():
            by_peer[peer_name].append((syntax, jobs))
        with self._busy_lock:
            self._busy.update(by_peer)
        for peer_name, batches in by_peer.items():
            self._senders.submit(self._send_to, peer_name, batches)
        return 0.0 if len(due) >= 200 else self.queue.next_due(besides=busy | set(by_peer))

    def _send_to(self, peer_name: str, batches: list[tuple[str, list[Job]]]) -> None:
        try:
            for syntax, jobs in batches:
                self._deliver(peer_name, syntax, jobs)
        except Exception:  # noqa: BLE001 - logged; the jobs stay pending and are tried again
            log.exception("routing: delivering to %s failed", peer_name)
        finally:
            with self._busy_lock:
                self._busy.discard(peer_name)

    def _deliver(self, peer_name: str, syntax: str, jobs: list[Job]) -> None:
        ids = [j.id for j in jobs]
        try:
            peer = self.peers.get(peer_name)
        except NotFound as exc:
            self.queue.attempt_failed(ids, str(exc))
            return
        files_of: dict[int, list[StoredInstance]] = {j.id: self._instances(j) for j in jobs}
        gone = [j for j in jobs if not files_of[j.id]]
        self.queue.attempt_failed([j.id for j in gone], "no longer in the archive", final=True)
        jobs = [j for j in jobs if files_of[j.id]]
        if not jobs:
            return
        sending = jobs
        try:
            sent = self.sender(peer, [i for j in sending for i in files_of[j.id]], self.ae_title, syntax)
        except HounsfieldError as exc:
            self._failed(sending, peer, str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - a bug must not stop the queue: logged, retried later
            log.exception("routing: sending to %s failed", peer.name)
            self._failed(sending, peer, f"{type(exc).__name__}: {exc}")
            return
        done, failed = [], defaultdict(list)
        codes = iter(sent)
        for job in sending:
            bad = [c for c in (next(codes) for _ in files_of[job.id]) if c not in STORE_STORED]
            if bad:
                why = "not sent" + (f" (not convertible to {syntax})" if syntax else "") if bad[0] is None \
                    else f"{peer.name} answered C-STORE status 0x{bad[0]:04X}"
                failed[why].append(job)
            else:
                done.append(job.id)
        self.queue.done(done)
        if done:
            log.info("routing: %d deliveries to %s done", len(done), peer.name)
            self._audit_sent([j for j in sending if j.id in set(done)], files_of, peer)
        for why, failed_jobs in failed.items():
            self._failed(failed_jobs, peer, why)

    def _audit_sent(self, jobs: list[Job], files_of: dict[int, list[StoredInstance]], peer: Peer) -> None:
        """One ``study_sent`` audit event per rule and study delivered (PS3.15 A.5.3.2, as a REST send is): data
        leaving the archive is recorded whether a person or a rule sent it."""
        sent: dict[tuple[str, str], int] = defaultdict(int)
        for job in jobs:
            sent[(job.rule, job.study_instance_uid)] += len(files_of[job.id])
        for (rule, study), count in sent.items():
            self.archive.audit.record(STUDY_SENT, user=f"routing rule {rule}", ae_title=peer.ae_title,
                                      address=peer.host, study_instance_uid=study,
                                      detail=f"{count} instances to {peer.name} ({peer.ae_title})")

    def _failed(self, jobs: list[Job], peer: Peer, why: str) -> None:
        self.queue.attempt_failed([j.id for j in jobs], why)
        attempts = max(j.attempts for j in jobs) + 1
        log.warning("routing: %d deliveries to %s failed (attempt %d, retried in %.0f s at most): %s", len(jobs),
                    peer.name, attempts, self.queue.backoff.wait(attempts), why)

    def _instances(self, job: Job) -> list[StoredInstance]:
        """The stored instances of a delivery, read from the index as it is (no waiting for the indexer: the
        feed only tells what is indexed)."""
        q = (select(Instance, Series.series_instance_uid, Study.study_instance_uid)
             .join(Series, Instance.series_fk == Series.id).join(Study, Series.study_fk == Study.id))
        q = q.where(Instance.sop_instance_uid == job.sop_instance_uid) if job.sop_instance_uid else \
            q.where(Study.study_instance_uid == job.study_instance_uid)
        with self.archive.db.session() as s:
            return self.archive.stored(s.execute(q.order_by(Series.id, Instance.instance_number, Instance.id)).all())
