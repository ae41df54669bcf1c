"""HTTP hardening that needs no user accounts (issue 12, first slice), as one ASGI middleware around the app:

* the Host header is checked against the names of this server (``allowed_hosts``): a page of another site
  whose name was made to resolve to this machine (DNS rebinding) gets 400, not the archive;
* a state-changing request (POST, PUT, PATCH, DELETE) that a browser sends on behalf of a page of another
  origin is refused with 403: the ``Origin`` header, or without one ``Sec-Fetch-Site``, must name this server
  (its own pages) or one of ``cors_origins``. Clients that are no browser send neither header (curl,
  dicomweb-client, scripts) and are not concerned;
* request bodies are bounded: STOW-RS and ``/api/upload`` (streamed to disk) by ``max_upload_bytes``, every
  other request (read whole by FastAPI: JSON) by ``MAX_OTHER_BODY``; 413 beyond, on the declared
  Content-Length before anything is read, or as soon as a chunked body goes over;
* every response says ``X-Content-Type-Options: nosniff``, ``X-Frame-Options: DENY`` and
  ``Referrer-Policy: no-referrer``; the pages of the viewer and the worklist get a Content-Security-Policy
  allowing this server's own scripts, styles and data only (``PAGE_CSP``); other HTML (the API docs: Swagger UI
  and ReDoc served from the package, started by an inline script) may not be framed (``OTHER_HTML_CSP``).

Plain ASGI rather than Starlette's BaseHTTPMiddleware, so that streamed bodies (STOW-RS in, WADO-RS out) pass
through without being buffered. Who may do what is ``web.auth``, inside this middleware. ``check_serving`` is
what ``serve`` checks before it listens: no HTTP beyond loopback without logins unless ``insecure_http`` says
so, and well-formed CORS and host settings.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import socket
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from hounsfield.config import Settings, split_list
from hounsfield.errors import HounsfieldError

log = logging.getLogger("hounsfield.web.security")

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
CORS_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
MAX_OTHER_BODY = 16 << 20  # a JSON body, read whole by FastAPI
# The routes that stream their body to disk (multipart.Spool) and so take up to max_upload_bytes.
STREAMED = re.compile(r"/dicom-web/studies(?:/[^/]+)?/?|/api/upload/?")
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})
# The viewer and the worklist: ES modules and stylesheets from /ui and /worklist/static, fetch() to this
# server, canvases (blob: and data: images for what they draw). No inline script or style attribute.
PAGE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
            "connect-src 'self'; font-src 'self'; worker-src 'self'; object-src 'none'; base-uri 'none'; "
            "form-action 'self'; frame-ancestors 'none'")
PAGE_PREFIXES = ("/ui", "/worklist", "/login")
OTHER_HTML_CSP = "object-src 'none'; base-uri 'self'; frame-ancestors 'none'"
COMMON_HEADERS = ((b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
                  (b"referrer-policy", b"no-referrer"))
_ORIGIN = re.compile(r"(https?)://([a-z0-9.-]+|\[[0-9a-f:.]+\])(?::(\d{1,5}))?")
_HOST = re.compile(r"([a-z0-9_.-]+|\[[0-9a-f:.]+\])(?::\d{1,5})?")


class UnsafeSetting(HounsfieldError):
    """A setting that would serve HTTP less safely than asked (remote access unasked for, a CORS origin
    that is no origin)."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or a name) is this machine's loopback only: a name counts when every
    address it resolves to is a loopback address; an empty host or 0.0.0.0 / :: is every interface."""
    host = host.strip().strip("[]").lower()
    if not host:
        return False
    if host in LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return False
    return bool(addresses) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses)


def normal_origin(origin: str) -> str | None:
    """``scheme://host[:port]`` lower-cased with the scheme's default port left out, or None when ``origin``
    is no such origin (a path, ``*``, ``null``)."""
    match = _ORIGIN.fullmatch(origin.strip().lower())
    if not match:
        return None
    scheme, host, port = match.groups()
    default = {"http": "80", "https": "443"}[scheme]
    return f"{scheme}://{host}" + (f":{int(port)}" if port and int(port) != int(default) else "")


def host_name(value: str) -> str | None:
    """The name or address of a Host header without its port (``[::1]:8042`` → ``::1``), lower-cased and
    without a trailing dot; None when it is no host."""
    value = value.strip().lower()
    if ":" in value and not value.startswith("["):  # a bare IPv6 address (a setting; no Host header)
        try:
            return str(ipaddress.IPv6Address(value))
        except ValueError:
            pass
    match = _HOST.fullmatch(value)
    if not match:
        return None
    return match.group(1).strip("[]").rstrip(".") or None


@dataclass(frozen=True)
class Policy:
    """What the middleware enforces, from the settings (``policy``)."""

    hosts: frozenset[str]
    host_suffixes: tuple[str, ...]  # ".example.org": example.org and its subdomains
    any_host: bool
    cors_origins: frozenset[str]
    cors_methods: tuple[str, ...]
    max_upload_bytes: int

    def host_allowed(self, name: str, local_address: str | None) -> bool:
        if self.any_host or name in self.hosts or name == local_address:
            return True
        return name.endswith(".localhost") or any(name == s[1:] or name.endswith(s) for s in self.host_suffixes)


def policy(settings: Settings) -> Policy:
    """The policy of ``settings``; ``UnsafeSetting`` naming the setting when one is malformed."""
    origins = []
    for item in split_list(settings.cors_origins):
        origin = normal_origin(item)
        if origin is None:
            raise UnsafeSetting(f"setting cors_origins: {item!r} is not an origin; list exact origins such as "
                                f"https://viewer.example.org or http://localhost:3000 (scheme, host and port "
                                f"only; no * and no path)")
        origins.append(origin)
    methods = tuple(dict.fromkeys(m.upper() for m in split_list(settings.cors_methods)))
    unknown = [m for m in methods if m not in CORS_METHODS]
    if unknown:
        raise UnsafeSetting(f"setting cors_methods: {', '.join(unknown)} is not one of {', '.join(CORS_METHODS)}")
    hosts = set(LOOPBACK_NAMES) | {"127.0.0.1", "::1"}
    for name in (socket.gethostname(), settings.http_host):
        name = host_name(name or "")
        if name and name not in ("0.0.0.0", "::"):
            hosts.add(name)
    suffixes, any_host = [], False
    for item in split_list(settings.allowed_hosts):
        if item == "*":
            any_host = True
        elif item.startswith(".") and host_name(item[1:]):
            suffixes.append("." + host_name(item[1:]))
        elif host_name(item):
            hosts.add(host_name(item))
        else:
            raise UnsafeSetting(f"setting allowed_hosts: {item!r} is not a host name or address")
    return Policy(frozenset(hosts), tuple(suffixes), any_host, frozenset(origins), methods,
                  settings.max_upload_bytes)


def check_serving(settings: Settings) -> None:
    """What ``serve`` checks before it listens: the HTTP settings are well-formed, and HTTP beyond loopback
    without logins is asked for in so many words (``insecure_http``), and then logged at every start.
    (That an admin user exists when logins are on needs the index: ``serve`` checks it once it is open.)"""
    policy(settings)
    if settings.insecure_http:
        log.warning("insecure_http is on: HTTP on %s:%s answers anyone who reaches it, without logins",
                    settings.http_host or "*", settings.http_port)
    elif settings.http_auth == "off" and not is_loopback(settings.http_host):
        where = settings.http_host or "every interface"
        raise UnsafeSetting(f"http_auth is off and http_host {where} reaches beyond this machine (anyone who "
                            f"reaches it could read, change and delete every study): turn logins on (http_auth "
                            f"= auto), listen on 127.0.0.1, or set insecure_http = true (--insecure-http true, "
                            f"HOUNSFIELD_INSECURE_HTTP=true) to serve it there without logins anyway")


Send = Callable[[dict[str, Any]], Awaitable[None]]


async def answer(send: Send, status: int, error: str, detail: str,
                 extra: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    """A JSON error answer in the app's own form (``{"error", "detail"}``)."""
    body = json.dumps({"error": error, "detail": detail}).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        *COMMON_HEADERS, *extra]})
    await send({"type": "http.response.body", "body": body})


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers") or ():
        if key.lower() == name:
            return value.decode("latin-1")
    return None


class Security:
    """The middleware (see the module's docstring)."""

    def __init__(self, app: Any, policy: Policy) -> None:
        self.app, self.policy = app, policy

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        client = (scope.get("client") or ("-",))[0]
        host = _header(scope, b"host")
        name = host_name(host) if host is not None else None
        local = str((scope.get("server") or ("",))[0]).lower()
        if host is not None and (name is None or not self.policy.host_allowed(name, local)):
            log.warning("refused %s %s from %s: Host %r is not a name of this server", method, path, client,
                        host[:100])
            await answer(send, 400, "InvalidHost", f"Host {host[:100]!r} is not a name of this server; if it is "
                         f"one, add it to allowed_hosts (HOUNSFIELD_ALLOWED_HOSTS)")
            return
        if method in UNSAFE_METHODS:
            refused = self.cross_origin(scope, method, host)
            if refused:
                log.warning("refused %s %s from %s: %s", method, path, client, refused)
                await answer(send, 403, "CrossOriginRequest",
                             f"{method} {path} {refused}: this server takes state-changing requests only from "
                             f"its own pages and from the origins in cors_origins")
                return
        limit = self.policy.max_upload_bytes if STREAMED.fullmatch(path) else min(
            MAX_OTHER_BODY, self.policy.max_upload_bytes)
        declared = _header(scope, b"content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > limit:
            await self.too_large(send, method, path, client, limit, int(declared))
            return
        state = {"answered": False, "started": False}  # this request's: a 413 sent, the app's answer begun
        await self.app(scope, self.bounded(receive, send, state, method, path, client, limit),
                       self.with_headers(path, send, state))

    def cross_origin(self, scope: dict[str, Any], method: str, host: str | None) -> str | None:
        """Why a state-changing request comes from a page of another origin, or None when it does not: its
        Origin is this server (the Host it was sent to) or one of cors_origins allowed ``method``; without
        an Origin, Sec-Fetch-Site must be same-origin or none (a browser's own navigation), or absent (no
        browser at all). ``Origin: null`` is what a browser sends for a form of this server's own pages (they
        say ``Referrer-Policy: no-referrer``, under which the Fetch standard serialises the origin as null) as
        well as for a sandboxed frame or a ``data:`` page of anyone: it passes only with Sec-Fetch-Site:
        same-origin."""
        origin = _header(scope, b"origin")
        site = _header(scope, b"sec-fetch-site")
        if origin is not None and origin.strip() == "null":
            if site is not None and site.strip().lower() == "same-origin":
                return None
            return "from origin 'null' (a sandboxed frame or a page of no origin) refused"
        if origin is not None:
            normal = normal_origin(origin)
            if normal is not None and host is not None and normal.partition("://")[2] == own_authority(
                    host, normal.partition("://")[0]):
                return None
            if normal in self.policy.cors_origins and method in self.policy.cors_methods:
                return None
            return f"from origin {origin[:100]!r} refused"
        if site is not None and site.strip().lower() not in ("same-origin", "none"):
            return f"from a page of another origin (Sec-Fetch-Site: {site[:40]}) refused"
        return None

    async def too_large(self, send: Send, method: str, path: str, client: str, limit: int,
                        size: int | None) -> None:
        log.warning("refused %s %s from %s: request body %s over the limit of %d bytes", method, path, client,
                    f"of {size} bytes" if size is not None else "", limit)
        said = f"of {size} bytes " if size is not None else ""
        await answer(send, 413, "PayloadTooLarge", f"the request body {said}is over the limit of {limit} bytes",
                     ((b"connection", b"close"),))

    def bounded(self, receive: Any, send: Send, state: dict[str, bool], method: str, path: str, client: str,
                limit: int) -> Any:
        """``receive`` counting the body: past ``limit``, the client is answered 413 here and the application
        sees the client go away (what it then sends is dropped by ``with_headers``)."""
        received = 0

        async def receive_bounded() -> dict[str, Any]:
            nonlocal received
            if state["answered"]:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    if not state["started"]:
                        await self.too_large(send, method, path, client, limit, None)
                    state["answered"] = True
                    return {"type": "http.disconnect"}
            return message

        return receive_bounded

    def with_headers(self, path: str, send: Send, state: dict[str, bool]) -> Send:

        async def send_with_headers(message: dict[str, Any]) -> None:
            if state["answered"]:
                return  # the client had its 413
            if message["type"] == "http.response.start":
                state["started"] = True
                headers = list(message.get("headers") or [])
                present = {key.lower() for key, _ in headers}
                headers += [(k, v) for k, v in COMMON_HEADERS if k not in present]
                content_type = next((v for k, v in headers if k.lower() == b"content-type"), b"")
                if content_type.lower().startswith(b"text/html") and b"content-security-policy" not in present:
                    page = any(path == p or path.startswith(p + "/") for p in PAGE_PREFIXES)
                    headers.append((b"content-security-policy", (PAGE_CSP if page else OTHER_HTML_CSP).encode()))
                message = {**message, "headers": headers}
            await send(message)

        return send_with_headers


def own_authority(host: str, scheme: str) -> str:
    """The ``host[:port]`` an Origin of this server has, from the Host header a request was sent to (the
    scheme's default port left out, as in an Origin)."""
    host = host.strip().lower().rstrip(".")
    name, _, port = host.rpartition(":") if not host.endswith("]") else (host, "", "")
    if not name or not port.isdigit():
        return host
    default = {"http": 80, "https": 443}.get(scheme)
    return name if int(port) == default else f"{name}:{int(port)}"
