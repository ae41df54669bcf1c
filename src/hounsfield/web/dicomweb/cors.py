"""CORS (the Fetch standard's CORS protocol) for the DICOMweb root only: browser clients served from another
origin (OHIF) read the archive through it, while the REST API stays same-origin.

Plain ASGI rather than Starlette's CORSMiddleware, so that it covers one path prefix and streamed responses
(WADO-RS) pass through untouched.
"""

from __future__ import annotations

from typing import Any

from hounsfield.web.dicomweb.common import PREFIX


class DicomWebCORS:
    """Answers preflight requests under ``prefix`` and adds the CORS headers to its responses."""

    HEADERS = [
        (b"access-control-allow-origin", b"*"),
        (b"access-control-expose-headers", b"Content-Type, Content-Length, Content-Location, Warning"),
    ]

    def __init__(self, app: Any, prefix: str = PREFIX) -> None:
        self.app, self.prefix = app, prefix

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        if scope["method"] == "OPTIONS" and b"access-control-request-method" in headers:
            allow_headers = headers.get(b"access-control-request-headers", b"Accept, Content-Type")
            await send({"type": "http.response.start", "status": 204, "headers": self.HEADERS + [
                (b"access-control-allow-methods", b"GET, POST, DELETE, OPTIONS"),
                (b"access-control-allow-headers", allow_headers),
                (b"access-control-max-age", b"86400"),
            ]})
            await send({"type": "http.response.body", "body": b""})
            return

        async def send_with_cors(message: dict) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": list(message.get("headers") or []) + self.HEADERS}
            await send(message)

        await self.app(scope, receive, send_with_cors)
