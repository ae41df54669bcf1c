"""The web viewer: static pages (plain HTML/CSS/ES modules in ``web/static``) and the two resources it needs
beyond DICOMweb: the imaging presets, and one frame's modality values as raw little-endian numbers so that
windowing happens in the browser on the real values (dragging the window never asks the server).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from hounsfield.errors import InvalidQuery, NotFound
from hounsfield.web.dicomweb import pacs_of

STATIC = Path(__file__).with_name("static")
router = APIRouter(tags=["viewer"])


@router.get("/", include_in_schema=False)
def home() -> RedirectResponse:
    return RedirectResponse("/ui/")


@router.get("/ui/api/presets", summary="Imaging presets: name → [center, width]")
def presets() -> dict[str, list[float]]:
    from hounsfield.imaging import PRESETS

    return {name: [center, width] for name, (center, width) in PRESETS.items()}


@router.get("/ui/api/values/{study}/{series}/{sop}", summary="One frame's modality values (HU for CT)")
def frame_values(request: Request, study: str, series: str, sop: str, frame: int = 0) -> Response:
    """Raw little-endian values, Int16 when every value fits, else Float32; shape and type in headers
    (X-Rows, X-Columns, X-Samples, X-Dtype, X-Min, X-Max)."""
    from hounsfield.imaging import frame_values as values_of

    if frame < 0:
        raise InvalidQuery(f"frame={frame} must be 0 or more")
    found = pacs_of(request).archive.instances(study_uid=study, series_uid=series, sop_uids=[sop])
    if not found:
        raise NotFound(f"no instance {sop} in series {series} of study {study}")
    values = _palette_rgb(found[0].path, frame)
    if values is None:
        values = values_of(found[0].path, frame)
    finite = values[np.isfinite(values)] if values.size else values
    low = float(finite.min()) if finite.size else 0.0
    high = float(finite.max()) if finite.size else 0.0
    if finite.size == values.size and -32768 <= low and high <= 32767 and np.all(values == np.round(values)):
        data, dtype = values.astype("<i2").tobytes(), "int16"
    else:
        data, dtype = np.nan_to_num(values).astype("<f4").tobytes(), "float32"
    headers = {"X-Rows": str(values.shape[0]), "X-Columns": str(values.shape[1]),
               "X-Samples": str(values.shape[2] if values.ndim == 3 else 1), "X-Dtype": dtype,
               "X-Min": f"{low:g}", "X-Max": f"{high:g}", "Cache-Control": "private, max-age=3600"}
    return Response(data, media_type="application/octet-stream", headers=headers)


def _palette_rgb(path: Path, frame: int) -> np.ndarray | None:
    """A PALETTE COLOR frame as the RGB it is displayed in (PS3.3 C.7.6.3.1.5): its indices are no values
    to window. None for every other kind of image."""
    from hounsfield.imaging import read_dataset
    from hounsfield.imaging.color import palette_to_rgb
    from hounsfield.imaging.io import decode_frame

    header = read_dataset(path, pixels=False)
    if str(header.get("PhotometricInterpretation", "")).strip() != "PALETTE COLOR":
        return None
    ds = read_dataset(path)
    stored, photometric = decode_frame(ds, frame)
    if photometric != "PALETTE COLOR" or stored.ndim != 2:
        return stored.astype(np.float32)
    return palette_to_rgb(stored, ds).astype(np.float32)


def mount(app: FastAPI) -> None:
    """Routes first, then the static files at /ui (index.html at /ui/)."""
    app.include_router(router)
    app.mount("/ui", StaticFiles(directory=STATIC, html=True), name="ui")
