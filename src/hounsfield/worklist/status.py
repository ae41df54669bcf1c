"""The status of a scheduled procedure step and the transitions allowed between them.

SCHEDULED → IN PROGRESS (MPPS N-CREATE) → COMPLETED or DISCONTINUED (MPPS N-SET); SCHEDULED → CANCELED (the
desk) or DISCONTINUED (left scheduled past ``worklist_expire_hours``). Closed steps never reopen.
"""

from __future__ import annotations

from pydicom.dataset import Dataset

from hounsfield.errors import Conflict

SCHEDULED, IN_PROGRESS, COMPLETED, DISCONTINUED, CANCELED = (
    "SCHEDULED", "IN PROGRESS", "COMPLETED", "DISCONTINUED", "CANCELED")
STATUSES = (SCHEDULED, IN_PROGRESS, COMPLETED, DISCONTINUED, CANCELED)
OPEN = (SCHEDULED, IN_PROGRESS)
TRANSITIONS: dict[str, frozenset[str]] = {
    SCHEDULED: frozenset({IN_PROGRESS, DISCONTINUED, CANCELED}),
    IN_PROGRESS: frozenset({IN_PROGRESS, COMPLETED, DISCONTINUED}),  # a step may be performed by several MPPS
    COMPLETED: frozenset(),
    DISCONTINUED: frozenset(),
    CANCELED: frozenset(),
}
# Scheduled Procedure Step Status (0040,0020) as written into the stored item for each status.
STEP_STATUS = {SCHEDULED: "SCHEDULED", IN_PROGRESS: "STARTED", COMPLETED: "COMPLETED",
               DISCONTINUED: "DISCONTINUED", CANCELED: "CANCELED"}


def check_transition(current: str, new: str) -> None:
    if new not in STATUSES:
        raise Conflict(f"unknown step status {new!r}; one of {', '.join(STATUSES)}")
    if new not in TRANSITIONS[current]:
        raise Conflict(f"a step that is {current} cannot become {new}")


def status_of(step: Dataset) -> str:
    """The status an imported step starts in, from its Scheduled Procedure Step Status (SCHEDULED if absent)."""
    given = str(step.get("ScheduledProcedureStepStatus") or "").strip().upper()
    return next((ours for ours, dicom in STEP_STATUS.items() if dicom == given), SCHEDULED)


def with_status(step: Dataset, status: str) -> None:
    """Write ``status`` into the step item (an imported step without the attribute keeps it absent while
    SCHEDULED, so it is answered exactly as the file says)."""
    if status != SCHEDULED or "ScheduledProcedureStepStatus" in step:
        step.ScheduledProcedureStepStatus = STEP_STATUS[status]
