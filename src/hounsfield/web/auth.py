"""Who may call which HTTP route (issue 12): the request's user, found from a session cookie, an API token
(``Authorization: Bearer``) or HTTP Basic, and the one permission each route needs (``ROUTE_PERMISSIONS``).

Deny by default: a route the table does not name needs ``admin``; only ``/health``, the login page and the
static files of the pages (scripts, styles, icons: no patient data) answer without a user. The pages
themselves (viewer, worklist, API documentation) need a logged-in user and send a browser to ``/login``
otherwise; every other refusal of an anonymous request is 401 with a ``WWW-Authenticate`` challenge (Basic
only for clients that are no page's ``fetch``: a browser would pop up its own dialog), and a user without
the permission gets 403.

CSRF: a state-changing request authenticated by the session cookie must carry the session's CSRF token in
``X-CSRF-Token`` (the pages' scripts send it, read from the ``hf_csrf`` cookie: the double-submit pattern of
OWASP's CSRF cheat sheet); the cookie is also SameSite=Strict, and ``web.security`` refuses cross-origin
state-changing requests before this. Tokens and Basic are not sent by a browser on its own, so requests
authenticated that way need no CSRF token (dicomweb-client's STOW-RS, scripts).

One ASGI middleware, around the routes and inside ``web.security``; with logins off it is not installed at all.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from dataclasses import dataclass
from datetime import timedelta
from http.cookies import SimpleCookie
from typing import Any, Awaitable, Callable
from urllib.parse import quote

from hounsfield.auth import roles
from hounsfield.auth.users import Principal, Users, same_secret
from hounsfield.config import Settings
from hounsfield.web.security import answer, is_loopback

log = logging.getLogger("hounsfield.web.auth")

SESSION_COOKIE, CSRF_COOKIE, CSRF_HEADER = "hf_session", "hf_csrf", "x-csrf-token"
PUBLIC, LOGGED_IN = "public", "logged in"  # pseudo-permissions: anyone; any user
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
PLUGIN_ROUTES = "/api/plugins/"  # issue 14: the routes plugins add (``web.plugin_routes``)
_UID = r"[^/]+"
_LEVELS = r"(?:patients|studies|series|instances)"

# (methods, path pattern, permission): the first match decides. HEAD is checked as GET.
ROUTE_PERMISSIONS: tuple[tuple[frozenset[str], re.Pattern[str], str], ...] = tuple(
    (frozenset(methods.split()), re.compile(pattern), permission) for methods, pattern, permission in (
        ("GET", r"/health", PUBLIC),
        ("GET POST", r"/login", PUBLIC),
        ("POST", r"/logout", PUBLIC),  # ends the session it names, if any
        ("GET", r"/ui/(?:js|css)/[^/]+|/worklist/static/[^/]+|/docs/assets/.+|/docs/swagger-init\.js", PUBLIC),
        ("GET", r"/ui/audit\.html", roles.ADMIN),
        ("GET", r"/|/ui/?|/ui/index\.html|/ui/remote\.html|/worklist/?|/docs|/redoc|/openapi\.json|/api/me",
         LOGGED_IN),
        ("GET", r"/ui/api/(?:presets|values/.+|tags/.+)", roles.READ),
        ("GET", r"/ui/api/peers", roles.SEND),
        ("POST", rf"/ui/api/peers/{_UID}/echo", roles.SEND),
        ("GET", rf"/api/instances/{_UID}/file", roles.EXPORT),
        ("GET", rf"/api/{_LEVELS}(?:/{_UID})?", roles.READ),
        ("DELETE", rf"/api/{_LEVELS}/{_UID}", roles.DELETE),
        ("POST", rf"/api/studies/{_UID}/send", roles.SEND),
        ("GET", rf"/api/jobs(?:/{_UID})?", roles.READ),  # a send's or a retrieve's progress: a study and a node
        # issue 14: remote nodes (web.remote_api): searching one is reading, its worklist is the worklist,
        # retrieving from it brings data in
        ("GET", r"/api/remote/peers", roles.READ),
        ("POST", rf"/api/peers/{_UID}/(?:echo|find)", roles.READ),
        ("POST", rf"/api/peers/{_UID}/find-worklist", roles.WORKLIST),
        ("POST", rf"/api/peers/{_UID}/retrieve", roles.STORE),
        ("POST", r"/api/upload/?", roles.STORE),
        ("POST", rf"/api/studies/{_UID}/deidentify", roles.EXPORT),
        ("GET", rf"/api/studies/{_UID}/deidentified\.zip", roles.EXPORT),
        ("GET", rf"/api/rt/studies/{_UID}", roles.READ),  # issue 13: radiotherapy
        ("GET", rf"/api/rt/series/{_UID}", roles.READ),
        ("GET", rf"/api/rt/structure-sets/{_UID}/(?:rois|contours)", roles.READ),
        ("GET", rf"/api/rt/doses/{_UID}/(?:slice|isodose)", roles.READ),
        ("GET", r"/api/rt/dvh", roles.READ),
        ("GET", rf"/api/rt/plans/{_UID}", roles.READ),
        ("POST", rf"/dicom-web/studies(?:/{_UID})?/?", roles.STORE),
        ("GET", r"/dicom-web/.*", roles.READ),
        ("DELETE", r"/dicom-web/.*", roles.DELETE),
        # issue 14: routing rules decide where data goes (admin); the deliveries name studies and nodes (send)
        ("GET", r"/ui/routing\.html", roles.SEND),
        ("GET", r"/api/routing/(?:jobs|rules(?:/[^/]+)?)", roles.SEND),
        ("POST", rf"/api/routing/jobs/{_UID}/retry", roles.SEND),
        ("GET", r"/api/worklist/.*", roles.WORKLIST),
        ("POST PATCH DELETE", r"/api/worklist/items(?:/.*)?", roles.WORKLIST_EDIT),
    ))


def required_permission(method: str, path: str) -> str:
    """The permission a request needs; ``admin`` for anything the table does not name (users, nodes, the
    quarantine, the audit trail, the de-identification mappings, and any route added without a row here)."""
    method = "GET" if method == "HEAD" else method
    for methods, pattern, permission in ROUTE_PERMISSIONS:
        if method in methods and pattern.fullmatch(path):
            return permission
    return roles.ADMIN


def logins_on(settings: Settings) -> bool:
    """Whether HTTP asks for users: ``http_auth`` on, or auto and listening beyond loopback — never with
    ``insecure_http``, the one way around it."""
    if settings.insecure_http:
        return False
    return settings.http_auth == "on" or (settings.http_auth == "auto" and not is_loopback(settings.http_host))


@dataclass(frozen=True)
class SessionPolicy:
    idle: timedelta
    lifetime: timedelta

    @classmethod
    def of(cls, settings: Settings) -> "SessionPolicy":
        return cls(timedelta(minutes=max(1, settings.session_idle_minutes)),
                   timedelta(hours=max(1, settings.session_max_hours)))


def header(scope: dict[str, Any], name: bytes) -> str:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return ""


def cookie(scope: dict[str, Any], name: str) -> str:
    jar = SimpleCookie()
    try:
        jar.load(header(scope, b"cookie"))
    except Exception:  # noqa: BLE001 - a malformed Cookie header is no session
        return ""
    morsel = jar.get(name)
    return morsel.value if morsel else ""


def principal_of(scope: dict[str, Any]) -> Principal | None:
    """The user the request acts as (``None`` with logins off)."""
    return scope.get("state", {}).get("principal")


def client_address(scope: dict[str, Any]) -> str:
    client = scope.get("client")
    return client[0] if client else ""


def user_name(scope: dict[str, Any]) -> str:
    """The name of the request's user for the audit trail ("" with logins off)."""
    principal = principal_of(scope)
    return principal.name if principal else ""


Send = Callable[[dict[str, Any]], Awaitable[None]]


class Authentication:
    """The ASGI middleware described in the module's docstring."""

    def __init__(self, app: Any, *, users: Users, sessions: SessionPolicy,
                 refused: Callable[[str, str, dict[str, Any]], None] | None = None,
                 plugin_permission: Callable[[str, str], str | None] | None = None) -> None:
        self.app = app
        self.users = users
        self.sessions = sessions
        self.refused = refused or (lambda _who, _why, _scope: None)
        # issue 14: the permission a plugin's route under /api/plugins/ declared (None: admin, as any route
        # the table does not name); asked for those paths only, so a plugin cannot open another route
        self.plugin_permission = plugin_permission

    def identify(self, scope: dict[str, Any]) -> Principal | None:
        """The user of the request's credentials: Authorization first (Bearer, Basic), then the session cookie.
        Credentials that are present but wrong give None: a bad token never falls back to a cookie."""
        authorization = header(scope, b"authorization")
        if authorization:
            kind, _, value = authorization.partition(" ")
            kind, value = kind.lower(), value.strip()
            if kind == "bearer":
                return self.users.by_token(value)
            if kind == "basic":
                try:
                    name, _, password = base64.b64decode(value, validate=True).decode("utf-8").partition(":")
                except (binascii.Error, UnicodeDecodeError):
                    return None
                return self.users.by_basic(name, password)
            return None
        session = cookie(scope, SESSION_COOKIE)
        if session:
            return self.users.by_session(session, idle=self.sessions.idle, lifetime=self.sessions.lifetime)
        return None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] == "OPTIONS":  # CORS preflights carry no credentials
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        permission = required_permission(method, path)
        if self.plugin_permission is not None and path.startswith(PLUGIN_ROUTES):
            permission = self.plugin_permission(method, path) or roles.ADMIN
            permission = roles.ADMIN if permission not in roles.PERMISSIONS else permission
        principal = None if permission == PUBLIC and path != "/api/me" else self.identify(scope)
        scope.setdefault("state", {})["principal"] = principal
        if permission == PUBLIC:
            await self.app(scope, receive, send)
            return
        if principal is None:
            await self._anonymous(scope, send, method, path)
            return
        if permission != LOGGED_IN and permission not in principal.permissions:
            self.refused(principal.name, f"{method} {path} needs the {permission} permission", scope)
            await answer(send, 403, "Forbidden", f"the role {principal.role} lacks the {permission} permission "
                                                 f"this needs")
            return
        if principal.via == "session" and method in UNSAFE \
                and not same_secret(principal.csrf_token, header(scope, CSRF_HEADER.encode())):
            self.refused(principal.name, f"{method} {path} without the session's CSRF token", scope)
            await answer(send, 403, "CSRFTokenMissing", f"a request from a logged-in page must carry the "
                                                        f"session's CSRF token in {CSRF_HEADER}")
            return
        await self.app(scope, receive, send)

    async def _anonymous(self, scope: dict[str, Any], send: Send, method: str, path: str) -> None:
        if method == "GET" and "text/html" in header(scope, b"accept"):  # a page: to the login form
            query = scope.get("query_string", b"").decode("latin-1")
            target = path + (f"?{query}" if query else "")
            await send({"type": "http.response.start", "status": 303,
                        "headers": [(b"location", f"/login?next={quote(target, safe='')}".encode()),
                                    (b"content-length", b"0"), (b"cache-control", b"no-store")]})
            await send({"type": "http.response.body", "body": b""})
            return
        challenge = [(b"www-authenticate", b'Bearer realm="hounsfield"')]
        if header(scope, b"sec-fetch-mode") not in ("cors", "same-origin", "no-cors"):
            challenge.append((b"www-authenticate", b'Basic realm="hounsfield", charset="UTF-8"'))
        await answer(send, 401, "Unauthorized", "log in (a session, an API token or HTTP Basic) to use this",
                     tuple(challenge))
