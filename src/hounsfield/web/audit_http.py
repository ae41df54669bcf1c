"""What users do with patients' data over HTTP, into the audit trail (issue 12): searches, studies viewed,
downloaded, exported, de-identified, sent, instances stored — one ASGI middleware that sees each request's
route, user and outcome, so the routes themselves stay one domain call each.

Deletes and worklist changes are recorded by the domain services they go through (``Archive.delete``, the
worklist service), given the user by their routes; logins by ``web.login``; refusals by ``web.auth``.

A viewer asks for a study's metadata, frames and renderings many times while it is open: "viewed" and
"downloaded" are recorded once per user, study and ``REPEAT_AFTER`` seconds, not once per request. Only
requests that were answered are recorded (status < 500 and not 401 / 403, which are no access), with the
outcome of their status.
"""

from __future__ import annotations

import re
import threading
import time
from typing import Any, Awaitable, Callable

from hounsfield.audit import actions as A
from hounsfield.audit.actions import Recorder
from hounsfield.web.auth import client_address, principal_of

REPEAT_AFTER = 300.0
_UID = r"(?P<study>[^/]+)"
_LEVELS = r"(?:patients|studies|series|instances)"
# (method, path pattern, action, once per user and study): the first match decides.
EVENTS: tuple[tuple[str, re.Pattern[str], str, bool], ...] = tuple(
    (method, re.compile(pattern), action, once) for method, pattern, action, once in (
        ("GET", rf"/dicom-web/studies/{_UID}(?:/series/[^/]+)?/metadata", A.STUDY_VIEWED, True),
        ("GET", rf"/ui/api/(?:tags|values)/{_UID}/.+", A.STUDY_VIEWED, True),
        ("GET", rf"/dicom-web/studies/{_UID}(?:/series/[^/]+(?:/instances/[^/]+)?)?", A.STUDY_DOWNLOADED, True),
        ("GET", r"/api/instances/[^/]+/file", A.STUDY_DOWNLOADED, False),
        ("GET", rf"/api/studies/{_UID}/deidentified\.zip", A.STUDY_EXPORTED, False),
        ("POST", rf"/api/studies/{_UID}/deidentify", A.DEIDENTIFIED, False),
        ("POST", rf"/api/studies/{_UID}/send", A.STUDY_SENT, False),
        ("POST", rf"/dicom-web/studies(?:/{_UID})?/?", A.INSTANCES_STORED, False),
        ("POST", r"/api/upload/?", A.INSTANCES_STORED, False),
        ("GET", r"/dicom-web/(?:studies|series|instances)|/dicom-web/studies/(?P<study>[^/]+)/(?:series|instances)"
                r"(?:/[^/]+/instances)?", A.QUERY_ANSWERED, False),
        ("GET", rf"/api/{_LEVELS}", A.QUERY_ANSWERED, False),
    ))
Send = Callable[[dict[str, Any]], Awaitable[None]]


def event_of(method: str, path: str) -> tuple[str, str, bool] | None:
    """(action, study UID or "", once per user and study) of a request, or None for one that is no event."""
    method = "GET" if method == "HEAD" else method
    for m, pattern, action, once in EVENTS:
        match = pattern.fullmatch(path) if m == method else None
        if match:
            return action, (match.groupdict().get("study") or ""), once
    return None


def outcome_of(status: int) -> str:
    return A.SUCCESS if status < 400 else (A.REFUSED if status in (401, 403, 429) else A.FAILURE)


class HttpAudit:
    def __init__(self, app: Any, *, audit: Recorder, clock: Callable[[], float] = time.monotonic) -> None:
        self.app = app
        self.audit = audit
        self.clock = clock
        self._recent: dict[tuple[str, str, str], float] = {}
        self._lock = threading.Lock()

    def _first_in_a_while(self, key: tuple[str, str, str]) -> bool:
        now = self.clock()
        with self._lock:
            if len(self._recent) > 50000:
                self._recent = {k: t for k, t in self._recent.items() if now - t < REPEAT_AFTER}
            last = self._recent.get(key)
            if last is not None and now - last < REPEAT_AFTER:
                return False
            self._recent[key] = now
            return True

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Send) -> None:
        event = event_of(scope["method"], scope["path"]) if scope["type"] == "http" else None
        if event is None:
            await self.app(scope, receive, send)
            return
        status = 500

        async def watching(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watching)
        finally:
            self._record(scope, event, status)

    def _record(self, scope: dict[str, Any], event: tuple[str, str, bool], status: int) -> None:
        if status >= 500 or status in (401, 403):
            return  # not answered (the log has it), or no access (web.auth records refusals)
        action, study, once = event
        principal = principal_of(scope)
        user = principal.name if principal else ""
        if once and not self._first_in_a_while((action, user, study)):
            return
        query = scope.get("query_string", b"").decode("latin-1")[:1000]
        detail = f"{scope['method']} {scope['path']}" + (f"?{query}" if query else "") + f" → {status}"
        self.audit.record(action, outcome=outcome_of(status), user=user, address=client_address(scope),
                          study_instance_uid=study[:64], detail=detail)
