"""pynetdicom's reactor hand-shake, as hounsfield patches it (dimse/tuning.py): a message the association's
reactor takes while a send_* call waits for its response goes back to that call."""

from __future__ import annotations

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
