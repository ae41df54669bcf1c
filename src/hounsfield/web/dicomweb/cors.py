"""CORS (the Fetch standard's CORS protocol) for the DICOMweb root only, and only for the origins a site
names (``cors_origins``): a browser client served from one of them (OHIF on its own host) reads the archive
through it with the methods of ``cors_methods`` (GET, HEAD and POST, STOW-RS, by default; DELETE only when
listed). Off by default: no origin listed, no page of another origin reads a thing. The REST API stays
same-origin.

A listed origin is named back (never ``*``) with ``Access-Control-Allow-Credentials: true``, and every
answer under the root says ``Vary: Origin`` so that no cache hands one origin's answer to another.

Plain ASGI rather than Starlette's CORSMiddleware, so that it covers one path prefix and streamed responses
(WADO-RS) pass through untouched.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any, Iterable

from hounsfield.web.dicomweb.common import PREFIX

log = logging.getLogger(__name__)
EXPOSE = b"Content-Type, Content-Length, Content-Location, Warning"
_TOKENS = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+(?:\s*,\s*[!#$%&'*+.^_`|~0-9A-Za-z-]+)*")


class DicomWebCORS:
    """Answers preflight requests under ``prefix`` and adds the CORS headers to the responses to the listed
    ``origins`` (normalised: ``security.normal_origin``)."""

    def __init__(self, app: Any, origins: Iterable[str] = (), methods: Iterable[str] = ("GET", "HEAD", "POST"),
                 prefix: str = PREFIX) -> None:
        self.app, self.prefix = app, prefix
        self.origins = frozenset(origins)
        self.methods = tuple(methods)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not (scope["path"] == self.prefix or scope["path"].startswith(self.prefix + "/")):
            await self.app(scope, receive, send)
            return
        from hounsfield.web.security import normal_origin

        headers = {k.lower(): v for k, v in scope.get("headers") or []}
        origin = headers.get(b"origin", b"").decode("latin-1")
        listed = bool(origin) and normal_origin(origin) in self.origins
        if scope["method"] == "OPTIONS" and b"access-control-request-method" in headers and origin:
            await self.preflight(send, origin, listed, headers)
            return
        extra = [(b"vary", b"Origin")]
        if listed:
            extra += [(b"access-control-allow-origin", origin.encode("latin-1")),
                      (b"access-control-allow-credentials", b"true"),
                      (b"access-control-expose-headers", EXPOSE)]

        async def send_with_cors(message: dict) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": list(message.get("headers") or []) + extra}
            await send(message)

        await self.app(scope, receive, send_with_cors)

    async def preflight(self, send: Any, origin: str, listed: bool, headers: dict[bytes, bytes]) -> None:
        method = headers[b"access-control-request-method"].decode("latin-1").strip().upper()
        vary = (b"vary", b"Origin, Access-Control-Request-Method, Access-Control-Request-Headers")
        if not listed or method not in self.methods:
            why = (f"origin {origin[:100]!r} is not in cors_origins" if not listed else
                   f"method {method[:20]} is not in cors_methods ({', '.join(self.methods)})")
            log.info("refused a CORS preflight for %s %s: %s", method[:20], self.prefix, why)
            body = json.dumps({"error": "CorsRefused", "detail": f"cross-origin {method[:20]} refused: {why}"}).encode()
            await send({"type": "http.response.start", "status": 403, "headers": [
                (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), vary]})
            await send({"type": "http.response.body", "body": body})
            return
        asked = headers.get(b"access-control-request-headers", b"").decode("latin-1").strip()
        allow_headers = asked if _TOKENS.fullmatch(asked) else "Accept, Content-Type, Authorization"
        await send({"type": "http.response.start", "status": 204, "headers": [
            (b"access-control-allow-origin", origin.encode("latin-1")),
            (b"access-control-allow-credentials", b"true"),
            (b"access-control-allow-methods", ", ".join(self.methods).encode()),
            (b"access-control-allow-headers", allow_headers.encode()),
            (b"access-control-max-age", b"600"),
            vary,
        ]})
        await send({"type": "http.response.body", "body": b""})
