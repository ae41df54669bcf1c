"""The login page, logout, and who is logged in (``/api/me``) — the HTTP side of ``auth.users`` sessions.

A login sets two cookies: ``hf_session`` (HttpOnly, SameSite=Strict, Secure under TLS, Path=/; the random
value whose digest the session row holds) and ``hf_csrf`` (readable by the pages' scripts, which send it back
in ``X-CSRF-Token``: ``web.auth``). Failed logins are counted per user name and per address
(``auth.throttle``) and answered 429 with Retry-After once over the limit. The page itself is plain HTML with
no script, under the same Content-Security-Policy as the other pages.
"""

from __future__ import annotations

import html
import math
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from hounsfield.auth import roles
from hounsfield.auth.throttle import LoginThrottle
from hounsfield.web.auth import CSRF_COOKIE, SESSION_COOKIE, SessionPolicy, client_address, cookie, principal_of

router = APIRouter(include_in_schema=False)


def safe_next(target: str | None, default: str = "/ui/") -> str:
    """Where to go after logging in: a path of this server only (never ``//evil`` or ``https://evil``: an
    open redirect would lend this server's name to a phishing page)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target \
            or any(ord(c) < 32 for c in target):
        return default
    return target


def home_of(permissions: frozenset[str]) -> str:
    """A user's first page: the viewer, or the worklist for those who may not read studies (schedulers)."""
    return "/ui/" if roles.READ in permissions or roles.WORKLIST not in permissions else "/worklist"


def page(message: str = "", next_url: str = "", status: int = 200) -> HTMLResponse:
    notice = f'<p class="login-error" role="alert">{html.escape(message)}</p>' if message else ""
    return HTMLResponse(f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Log in – hounsfield</title>
<link rel="stylesheet" href="/ui/css/theme.css"><link rel="stylesheet" href="/ui/css/login.css"></head>
<body class="login-page"><main class="login-box">
<h1 class="brand">hounsfield</h1>
<form method="post" action="/login" id="login-form">
{notice}
<label>User name <input name="username" id="username" autocomplete="username" required maxlength="64" autofocus></label>
<label>Password <input name="password" id="password" type="password" autocomplete="current-password" required maxlength="1024"></label>
<input type="hidden" name="next" value="{html.escape(next_url)}">
<button type="submit" id="login-submit">Log in</button>
</form></main></body></html>
""", status_code=status, headers={"Cache-Control": "no-store"})


def throttle_of(request: Request) -> LoginThrottle:
    state = request.app.state
    if not hasattr(state, "login_throttle"):
        settings = state.pacs.settings
        state.login_throttle = LoginThrottle(settings.login_max_failures, float(settings.login_lockout_seconds))
    return state.login_throttle


@router.get("/login")
def login_form(request: Request, next: str = "") -> Response:  # noqa: A002 - the query parameter's name
    if principal_of(request.scope) is not None:
        return RedirectResponse(safe_next(next), status_code=303)
    return page(next_url=safe_next(next, ""))


@router.post("/login")
def login(request: Request, username: Annotated[str, Form(max_length=64)] = "",
          password: Annotated[str, Form(max_length=1024)] = "", next: Annotated[str, Form()] = "") -> Response:  # noqa: A002
    pacs = request.app.state.pacs
    address = client_address(request.scope)
    throttle = throttle_of(request)
    keys = throttle.keys(username, address)
    wait = throttle.wait_for(keys)
    if wait > 0:
        pacs.audit.record("login_failed", outcome="refused", user=username, address=address,
                          detail="too many failed logins")
        response = page(f"Too many failed logins: try again in {math.ceil(wait)} s.", safe_next(next, ""), 429)
        response.headers["Retry-After"] = str(math.ceil(wait))
        return response
    principal = pacs.users.by_password(username, password)
    if principal is None:
        throttle.failed(keys)
        pacs.audit.record("login_failed", outcome="failure", user=username, address=address)
        return page("Wrong user name or password.", safe_next(next, ""), 401)
    throttle.succeeded(keys[0])
    policy = SessionPolicy.of(pacs.settings)
    session = pacs.users.start_session(principal, address=address, idle=policy.idle, lifetime=policy.lifetime)
    pacs.audit.record("login", user=principal.name, address=address)
    response = RedirectResponse(safe_next(next, home_of(principal.permissions)), status_code=303)
    secure = request.url.scheme == "https"
    max_age = int(policy.lifetime.total_seconds())
    response.set_cookie(SESSION_COOKIE, session.cookie, max_age=max_age, httponly=True, secure=secure,
                        samesite="strict", path="/")
    response.set_cookie(CSRF_COOKIE, session.csrf_token, max_age=max_age, httponly=False, secure=secure,
                        samesite="strict", path="/")
    return response


@router.post("/logout")
def logout(request: Request) -> Response:
    pacs = request.app.state.pacs
    value = cookie(request.scope, SESSION_COOKIE)
    if value:
        principal = principal_of(request.scope) or pacs.users.by_session(value, **vars(SessionPolicy.of(pacs.settings)))
        pacs.users.end_session(value)
        if principal is not None:
            pacs.audit.record("logout", user=principal.name, address=client_address(request.scope))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    response.delete_cookie(CSRF_COOKIE, path="/")
    return response


@router.get("/api/me", tags=["users"])
def me(request: Request) -> JSONResponse:
    """The user this request acts as, the role's permissions, and whether logins are on at all."""
    principal = principal_of(request.scope)
    if principal is None:
        return JSONResponse({"logins": False, "name": None, "role": None, "permissions": list(roles.PERMISSIONS)})
    return JSONResponse({"logins": True, "name": principal.name, "role": principal.role,
                         "permissions": sorted(principal.permissions)})
