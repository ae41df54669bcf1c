"""The ASGI application: routers plus the one exception → HTTP status table."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import DataError

from hounsfield import __version__
from hounsfield.errors import (
    Conflict,
    DependencyMissing,
    HounsfieldError,
    InvalidDataset,
    InvalidQuery,
    NotFound,
    Rejected,
    RemoteFailure,
    StorageFull,
)
from hounsfield.pacs import Pacs
from hounsfield.web.paths import path_scrubber, public_detail
from hounsfield.web.multipart import MalformedMultipart, NotAcceptable, PayloadTooLarge, UnsupportedMediaType

log = logging.getLogger("hounsfield.web")
HTTP_STATUS: dict[type[HounsfieldError], int] = {
    NotFound: 404,
    InvalidQuery: 400,
    InvalidDataset: 400,
    Conflict: 409,
    Rejected: 409,
    StorageFull: 507,
    DependencyMissing: 501,
    MalformedMultipart: 400,  # issue 5: DICOMweb / uploads
    UnsupportedMediaType: 415,
    NotAcceptable: 406,
    PayloadTooLarge: 413,
    RemoteFailure: 502,  # issue 14: a remote node did not answer, refused, or failed
}


def http_status(error: HounsfieldError) -> int:
    return next((code for kind, code in HTTP_STATUS.items() if isinstance(error, kind)), 500)


def public_error(error: dict[str, Any]) -> dict[str, Any]:
    """A validation error without the value sent: a 10 MB string or a raw body would come straight back, and
    deeply nested JSON cannot be written out again."""
    out = {"type": error.get("type"), "loc": list(error.get("loc", ())), "msg": error.get("msg")}
    if error.get("ctx"):
        out["ctx"] = {k: v if isinstance(v, (str, int, float, bool)) else str(v) for k, v in error["ctx"].items()}
    return out


def unparsed_body(errors: list[dict[str, Any]]) -> bool:
    """FastAPI reads a body as JSON only when it says so (Content-Type application/json or +json); any other
    body reaches validation as bytes."""
    return any(e.get("loc", ())[:1] == ("body",) and isinstance(e.get("input"), (bytes, bytearray)) for e in errors)


# --- issue 11: the API documentation pages, with Swagger UI and ReDoc served from the package ---
DOCS_ASSETS = Path(__file__).with_name("static") / "vendor"  # swagger-ui-dist (Apache-2.0), redoc (MIT)
DOCS_ASSETS_URL = "/docs/assets"
SWAGGER_INIT = """window.ui = SwaggerUIBundle({
  url: document.getElementById("swagger-ui").dataset.openapiUrl, dom_id: "#swagger-ui", layout: "BaseLayout",
  deepLinking: true, showExtensions: true, showCommonExtensions: true, validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset].filter(Boolean),
});
"""


def add_docs(app: FastAPI) -> None:
    """/docs (Swagger UI) and /redoc (ReDoc) with every script, style sheet and icon from this server: a
    hospital network is often offline, and a CDN page is blank there. No inline script either (a Content
    Security Policy of script-src 'self' allows these pages)."""
    from fastapi.responses import HTMLResponse, Response
    from fastapi.staticfiles import StaticFiles

    assets = DOCS_ASSETS_URL
    title = f"{app.title} {app.version}"

    @app.get("/docs", include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return HTMLResponse(f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}: API (Swagger UI)</title>
<link rel="icon" type="image/png" href="{assets}/swagger-ui/favicon-32x32.png">
<link rel="stylesheet" href="{assets}/swagger-ui/swagger-ui.css"></head>
<body><div id="swagger-ui" data-openapi-url="{app.openapi_url}"></div>
<script src="{assets}/swagger-ui/swagger-ui-bundle.js"></script>
<script src="/docs/swagger-init.js"></script></body></html>
""")

    @app.get("/docs/swagger-init.js", include_in_schema=False)
    def swagger_init() -> Response:
        return Response(SWAGGER_INIT, media_type="text/javascript")

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        return HTMLResponse(f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}: API (ReDoc)</title>
<link rel="icon" type="image/png" href="{assets}/swagger-ui/favicon-32x32.png"></head>
<body><redoc spec-url="{app.openapi_url}"></redoc>
<script src="{assets}/redoc/redoc.standalone.js"></script></body></html>
""")

    app.mount(assets, StaticFiles(directory=DOCS_ASSETS), name="docs-assets")
# --- end issue 11 ---


def add_logins(app: FastAPI, pacs: Pacs) -> None:
    """Issue 12: the login page, ``/api/me``, the users' REST API and the HTTP audit always; the check of every
    request's user only with logins on (``web.auth.logins_on``), inside CORS (preflights are answered before
    it) and ``web.security``."""
    from hounsfield.web import audit_http, auth, login, users_api

    app.include_router(login.router)
    app.include_router(users_api.router)
    app.add_middleware(audit_http.HttpAudit, audit=pacs.audit)  # inside the login check: it knows the user
    if not auth.logins_on(pacs.settings):
        return

    def refused(user: str, why: str, scope: dict[str, Any]) -> None:
        log.info("refused %s: %s", user, why)
        pacs.audit.record("access_refused", outcome="refused", user=user, address=auth.client_address(scope),
                          detail=why)

    app.add_middleware(auth.Authentication, users=pacs.users, sessions=auth.SessionPolicy.of(pacs.settings),
                       refused=refused, plugin_permission=pacs.plugins.permission_for if pacs.plugins else None)


def create_app(pacs: Pacs) -> FastAPI:
    from hounsfield.web import api

    app = FastAPI(title="hounsfield", version=__version__,
                  description="A small, fast PACS: archive, worklist, DICOMweb and viewer.",
                  docs_url=None, redoc_url=None)  # served from the package by add_docs (no CDN)
    app.state.pacs = pacs

    internal_paths = path_scrubber(pacs.settings.data_dir)

    @app.exception_handler(HounsfieldError)
    async def domain_error(request: Request, exc: HounsfieldError) -> JSONResponse:
        status = http_status(exc)
        if isinstance(exc, (InvalidDataset, DependencyMissing, StorageFull)) or status >= 500:
            # about a stored file or the server itself (unreadable, undecodable, missing, no codec): the
            # details, paths and all, are for the log only
            log.warning("%s %s: %s %s", request.method, request.url.path, type(exc).__name__, exc)
        detail = public_detail(str(exc), internal_paths)
        return JSONResponse({"error": type(exc).__name__, "detail": detail}, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        if unparsed_body(exc.errors()):
            return JSONResponse({"error": "UnsupportedMediaType",
                                 "detail": "the body must be JSON, sent with Content-Type: application/json"},
                                status_code=415)
        fields = [".".join(str(p) for p in e.get("loc", ()) if p != "body") for e in exc.errors()]
        return JSONResponse({"error": "ValidationError", "detail": [public_error(e) for e in exc.errors()],
                             "fields": fields}, status_code=422)

    @app.exception_handler(DataError)
    async def data_error(request: Request, exc: DataError) -> JSONResponse:
        """The database refused a value of the request (PostgreSQL: a NUL character, a number out of range)."""
        log.info("%s %s: the database refused a value: %s", request.method, request.url.path, exc.orig)
        return JSONResponse({"error": "InvalidQuery", "detail": "a value in the request cannot be searched or "
                             "stored (a NUL character, or a number out of range)"}, status_code=400)

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        """A bug, not the client's doing: the traceback goes to the log, the client learns nothing internal."""
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return JSONResponse({"error": "InternalError", "detail": "the server failed to answer this request; "
                             "the cause is in its log"}, status_code=500)

    add_docs(app)

    @app.get("/health", tags=["service"])
    def health() -> JSONResponse:
        """Liveness: the index answers, the indexer runs and keeps up (503 "degraded" when not), the
        quarantine's size, the versions."""
        with pacs.db.session() as s:
            s.execute(text("SELECT 1"))
        state = pacs.health()
        body = {"status": "degraded" if state["problems"] else "ok", "version": __version__,
                "ae_title": pacs.settings.ae_title, "dicom_port": pacs.settings.dicom_port, **state}
        return JSONResponse(body, status_code=503 if state["problems"] else 200)

    app.include_router(api.router)
    from hounsfield.web import quarantine_api

    app.include_router(quarantine_api.router)
    from hounsfield.web import audit_api  # issue 12: the audit trail

    app.include_router(audit_api.router)
    # --- issue 5: DICOMweb at /dicom-web (CORS there only) and the viewer at /ui ---
    from hounsfield.web import dicomweb, security, transfer, ui

    http_policy = security.policy(pacs.settings)  # issue 12: CORS only for the origins configured
    app.include_router(transfer.router)
    app.include_router(dicomweb.router)
    add_logins(app, pacs)
    app.add_middleware(dicomweb.DicomWebCORS, origins=http_policy.cors_origins, methods=http_policy.cors_methods)
    ui.mount(app)
    # --- end issue 5 ---
    # --- issue 3: worklist REST API and the /worklist page ---
    from hounsfield.web import worklist_api

    app.include_router(worklist_api.router)
    app.include_router(worklist_api.pages)
    # --- end issue 3 ---
    # --- issue 14: the HL7 message log (/api/hl7) ---
    from hounsfield.web import hl7_api

    app.include_router(hl7_api.router)
    # --- end issue 14 ---
    # --- issue 12: de-identification (PS3.15 Annex E) ---
    from hounsfield.web import deid_api

    app.include_router(deid_api.router)
    # --- end issue 12 (de-identification) ---
    # --- issue 13: the radiotherapy REST API (/api/rt) ---
    from hounsfield.web import rt_api

    app.include_router(rt_api.router)
    # --- end issue 13 ---
    # --- issue 14: remote nodes (echo, C-FIND, MWL C-FIND, retrieve) ---
    from hounsfield.web import remote_api

    app.include_router(remote_api.router)
    # --- end issue 14 (remote nodes) ---
    # --- issue 14: routing rules and their deliveries (/api/routing), the plugins' routes (/api/plugins) ---
    from hounsfield.web import plugin_routes, routing_api

    app.include_router(routing_api.router)
    if pacs.plugins:
        plugin_routes.add(app, pacs.plugins)
    # --- end issue 14 (routing, plugins) ---
    # --- issue 12: Host header, cross-origin requests, body sizes, security headers (outermost middleware) ---
    app.add_middleware(security.Security, policy=http_policy)
    # --- end issue 12 ---
    return app
