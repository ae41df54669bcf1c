"""The audit trail's vocabulary, in one place: what an event can be (its action), how it ended (its outcome), and
what every recorder of events offers (``Recorder``).

The actions are the events PS3.15 A.5.3 and IHE ATNA ask a PACS to report — user authentication, security
alerts, instances transferred, accessed, exported and deleted, queries, procedure records — named as a reader of
the table or the REST answer says them. ``audit.atna`` maps each one to its DICOM Audit Message codes.
"""

from __future__ import annotations

from typing import Callable, Protocol

# who logged in or out on HTTP, and who failed to
LOGIN = "login"
LOGOUT = "logout"
LOGIN_FAILED = "login_failed"
# a user's doing with a stored study (web layer)
STUDY_VIEWED = "study_viewed"
STUDY_DOWNLOADED = "study_downloaded"
STUDY_EXPORTED = "study_exported"
STUDY_SENT = "study_sent"
STUDY_DELETED = "study_deleted"
DEIDENTIFIED = "deidentified"
# the DICOM services answered
INSTANCES_STORED = "instances_stored"  # one event per association and study, with the count
QUERY_ANSWERED = "query_answered"  # C-FIND (Query/Retrieve models), QIDO-RS
RETRIEVE_ANSWERED = "retrieve_answered"  # C-MOVE, C-GET: one event per study sent
# the worklist
WORKLIST_ITEM_CREATED = "worklist_item_created"
WORKLIST_ITEM_CHANGED = "worklist_item_changed"
WORKLIST_ITEM_CANCELLED = "worklist_item_cancelled"
WORKLIST_ITEM_DELETED = "worklist_item_deleted"
WORKLIST_QUERIED = "worklist_queried"  # MWL C-FIND
MPPS_RECEIVED = "mpps_received"  # N-CREATE, N-SET
HL7_MESSAGE_RECEIVED = "hl7_message_received"  # an HL7 v2 order or patient message, applied or not (issue 14)
# accounts and permissions
USER_CHANGED = "user_changed"
PERMISSION_CHANGED = "permission_changed"
ACCESS_REFUSED = "access_refused"  # a user or a DICOM node asked for what it may not do

ACTIONS = (LOGIN, LOGOUT, LOGIN_FAILED, STUDY_VIEWED, STUDY_DOWNLOADED, STUDY_EXPORTED, STUDY_SENT, STUDY_DELETED,
           DEIDENTIFIED, INSTANCES_STORED, QUERY_ANSWERED, RETRIEVE_ANSWERED, WORKLIST_ITEM_CREATED,
           WORKLIST_ITEM_CHANGED, WORKLIST_ITEM_CANCELLED, WORKLIST_ITEM_DELETED, WORKLIST_QUERIED, MPPS_RECEIVED,
           HL7_MESSAGE_RECEIVED, USER_CHANGED, PERMISSION_CHANGED, ACCESS_REFUSED)

SUCCESS = "success"
WARNING = "warning"  # done in part: some sub-operations failed, or the requestor cancelled
FAILURE = "failure"  # not done: bad input, an error
REFUSED = "refused"  # not done: not allowed (permissions, throttling)
OUTCOMES = (SUCCESS, WARNING, FAILURE, REFUSED)

Detail = str | Callable[[], str]  # a callable is evaluated by the trail's writer, off the caller's path


class Recorder(Protocol):
    """What the services that report events (archive, worklist, DICOM handlers, web layer) are given."""

    def record(self, action: str, *, outcome: str = SUCCESS, user: str = "", ae_title: str = "",
               address: str = "", patient_id: str = "", patient_name: str = "", study_instance_uid: str = "",
               detail: Detail = "") -> None: ...

    def flush(self) -> None:
        """Until what was recorded so far is written (its patient looked up in the index where the event named
        only the study)."""


class NotRecorded:
    """The recorder of a service built without an audit trail (a test, a one-off tool): records nothing."""

    def record(self, action: str, **_: object) -> None:
        return None

    def flush(self) -> None:
        return None


NOT_RECORDED = NotRecorded()
