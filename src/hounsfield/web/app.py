"""The ASGI application: routers plus the one exception → HTTP status table."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import text

from hounsfield import __version__
from hounsfield.errors import (
    Conflict,
    DependencyMissing,
    HounsfieldError,
    InvalidDataset,
    InvalidQuery,
    NotFound,
    Rejected,
    StorageFull,
)
from hounsfield.pacs import Pacs
from hounsfield.web.multipart import MalformedMultipart, NotAcceptable, UnsupportedMediaType  # issue 5

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
}


def http_status(error: HounsfieldError) -> int:
    return next((code for kind, code in HTTP_STATUS.items() if isinstance(error, kind)), 500)


def create_app(pacs: Pacs) -> FastAPI:
    from hounsfield.web import api

    app = FastAPI(title="hounsfield", version=__version__,
                  description="A small, fast PACS: archive, worklist, DICOMweb and viewer.")
    app.state.pacs = pacs

    @app.exception_handler(HounsfieldError)
    async def domain_error(_request: Request, exc: HounsfieldError) -> JSONResponse:
        return JSONResponse({"error": type(exc).__name__, "detail": str(exc)}, status_code=http_status(exc))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        fields = [".".join(str(p) for p in e.get("loc", ()) if p != "body") for e in exc.errors()]
        return JSONResponse({"error": "ValidationError", "detail": exc.errors(), "fields": fields},
                            status_code=422)

    @app.get("/health", tags=["service"])
    def health() -> dict:
        """Liveness: the index answers and the versions."""
        with pacs.db.session() as s:
            s.execute(text("SELECT 1"))
        return {"status": "ok", "version": __version__, "ae_title": pacs.settings.ae_title,
                "dicom_port": pacs.settings.dicom_port}

    app.include_router(api.router)
    # --- issue 5: DICOMweb at /dicom-web (CORS there only) and the viewer at /ui ---
    from hounsfield.web import dicomweb, transfer, ui

    app.include_router(transfer.router)
    app.include_router(dicomweb.router)
    app.add_middleware(dicomweb.DicomWebCORS)
    ui.mount(app)
    # --- end issue 5 ---
    # --- issue 3: worklist REST API and the /worklist page ---
    from hounsfield.web import worklist_api

    app.include_router(worklist_api.router)
    app.include_router(worklist_api.pages)
    # --- end issue 3 ---
    return app
