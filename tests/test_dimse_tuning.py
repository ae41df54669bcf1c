"""pynetdicom's reactor hand-shake, as hounsfield patches it (dimse/tuning.py): a message the association's
reactor takes while a send_* call waits for its response goes back to that call."""

from __future__ import annotations

import threading
import types

from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider

from hounsfield.dimse.tuning import _leaving_responses_to_the_sender, leave_responses_to_the_sender


def test_a_paused_reactor_leaves_the_response_to_the_waiting_sender() -> None:
    assoc = Association(AE(), mode="requestor")
    original = getattr(DIMSEServiceProvider.get_msg, "__wrapped__", DIMSEServiceProvider.get_msg)
    assoc.dimse.get_msg = types.MethodType(_leaving_responses_to_the_sender(original), assoc.dimse)
    response, other = (1, "C-STORE-RSP"), (1, "next")
    assoc.dimse.msg_queue.put(response)
    assoc.dimse.msg_queue.put(other)
    assoc._reactor_checkpoint.clear()  # what send_c_store does before it sends its request
    assert assoc.dimse.get_msg(block=False) == (None, None)  # the reactor's look at the queue
    assert list(assoc.dimse.msg_queue.queue) == [response, other]  # put back in front, in order
    assert assoc.dimse.get_msg(block=True) == response  # the sender's
    assoc._reactor_checkpoint.set()
    assert assoc.dimse.get_msg(block=False) == other  # an unpaused reactor takes what comes


def test_the_abort_wake_up_goes_back_to_the_waiting_sender_too() -> None:
    assoc = Association(AE(), mode="requestor")
    original = getattr(DIMSEServiceProvider.get_msg, "__wrapped__", DIMSEServiceProvider.get_msg)
    assoc.dimse.get_msg = types.MethodType(_leaving_responses_to_the_sender(original), assoc.dimse)
    assoc.dimse.msg_queue.put((None, None))  # what pynetdicom queues when the association is aborted
    assoc._reactor_checkpoint.clear()
    assert assoc.dimse.get_msg(block=False) == (None, None)
    assert list(assoc.dimse.msg_queue.queue) == [(None, None)]  # still there for the sender


def test_the_gap_can_be_closed_alone_once_per_process() -> None:
    """What a stock pynetdicom client (this suite's, in conftest) applies: only the get_msg hand-shake, once."""
    leave_responses_to_the_sender()
    wrapped = DIMSEServiceProvider.get_msg
    leave_responses_to_the_sender()
    assert DIMSEServiceProvider.get_msg is wrapped
    assert not hasattr(wrapped.__wrapped__, "__wrapped__")  # not wrapped twice
    assoc = Association(AE(), mode="requestor")
    assoc.dimse.msg_queue.put((1, "C-FIND-RSP"))
    assoc._reactor_checkpoint.clear()  # the second send_* call of an association, its request sent
    assert assoc.dimse.get_msg(block=False) == (None, None)  # the reactor, woken by the first call's end
    assert assoc.dimse.get_msg(block=True) == (1, "C-FIND-RSP")  # the call waiting for its answer


def test_a_primitive_for_the_association_wakes_its_waiting_reactor(monkeypatch) -> None:  # noqa: ANN001
    """A peer's A-RELEASE-RQ (or an abort) reaches the association thread through the DUL's to_user_queue while
    that thread waits for DIMSE messages: it must wake at once, not when its wait runs out (MAX_WAIT, made a
    minute here so that a missed wake-up shows as a thread still waiting)."""
    from pynetdicom.pdu_primitives import A_RELEASE

    from hounsfield.dimse import tuning

    monkeypatch.setattr(tuning, "MAX_WAIT", 60.0)
    assoc = Association(AE(), mode="acceptor")
    assoc._reactor_checkpoint.set()  # a reactor with nothing to do: it waits
    waiting = threading.Event()
    original_wait = assoc.dimse.msg_queue.not_empty.wait

    def wait(timeout: float | None = None) -> bool:
        waiting.set()
        return original_wait(timeout)

    assoc.dimse.msg_queue.not_empty.wait = wait
    reactor = threading.Thread(target=tuning._wait_association, args=(assoc,), daemon=True)
    reactor.start()
    assert waiting.wait(30)
    release = A_RELEASE()
    assoc.dul.to_user_queue.put(release)  # what the DUL's state machine does with a received A-RELEASE-RQ
    reactor.join(30)
    assert not reactor.is_alive()
    assert assoc.dul.to_user_queue.get_nowait() is release


def test_the_user_queue_keeps_what_was_put_before_it_wakes() -> None:
    """The queue is pynetdicom's own object, its class changed: nothing already in it is lost."""
    from hounsfield.dimse import tuning

    assoc = Association(AE(), mode="acceptor")
    before = assoc.dul.to_user_queue
    before.put("queued before")
    tuning._wake_on_user_primitives(assoc)
    assert assoc.dul.to_user_queue is before and type(before) is tuning._UserQueue
    assert before.get_nowait() == "queued before"
    tuning._wake_on_user_primitives(assoc)  # again: no change
    assert type(assoc.dul.to_user_queue) is tuning._UserQueue


def test_start_up_objects_are_left_out_of_full_collections() -> None:
    """processes.freeze_startup_heap: what exists when a process starts serving is frozen (gc.freeze), so that
    a full collection (pynetdicom runs one every 60 turns of its server loop) no longer walks it."""
    import gc

    from hounsfield.processes import freeze_startup_heap

    built_at_start = object.__new__(type("Built", (), {}))

    def tracked() -> bool:  # by identity: objects with their own == (arrays) are in the list too
        return any(o is built_at_start for o in gc.get_objects())

    assert tracked()
    frozen_before = gc.get_freeze_count()
    freeze_startup_heap()
    try:
        assert gc.get_freeze_count() > frozen_before
        assert not tracked()  # frozen objects are in no generation a collection walks
    finally:
        gc.unfreeze()
    assert tracked()
