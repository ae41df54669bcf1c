"""The web viewer: static pages (plain HTML/CSS/ES modules in ``web/static``) and the resources it needs
beyond DICOMweb: the imaging presets; one frame's modality values as raw little-endian numbers so that
windowing happens in the browser on the real values (dragging the window never asks the server); one
instance's elements named from pydicom's data dictionary (the tags panel); the remote nodes with the last
C-ECHO of each, and a C-ECHO to run (the Send menu).
"""

from __future__ import annotations

import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

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


MAX_TAG_ROWS = 20_000  # the tags panel lists this many elements at most (per-frame groups of huge multi-frames)
MAX_DEPTH = 8
BINARY_VRS = {"OB", "OW", "OF", "OD", "OL", "OV", "UN"}


@router.get("/ui/api/tags/{study}/{series}/{sop}", summary="One instance's elements, named from the data dictionary")
def instance_tags(request: Request, study: str, series: str, sop: str) -> dict[str, Any]:
    """Every element of the stored file (file meta first, pixel data left out), in file order, each with its
    keyword and name from pydicom's data dictionary (private ones from its private dictionary, "Unknown" when
    neither knows it). Sequence items are rows of their own (``item`` = 1, 2…) whose elements are one ``depth``
    deeper."""
    from hounsfield.imaging import read_dataset

    found = pacs_of(request).archive.instances(study_uid=study, series_uid=series, sop_uids=[sop])
    if not found:
        raise NotFound(f"no instance {sop} in series {series} of study {study}")
    ds = read_dataset(found[0].path, pixels=False)
    rows: list[dict[str, Any]] = []
    truncated = _walk(getattr(ds, "file_meta", None), 0, rows) or _walk(ds, 0, rows)
    return {"sop": sop, "elements": rows, "truncated": truncated}


def _walk(ds: Any, depth: int, rows: list[dict[str, Any]]) -> bool:
    """Append the rows of ``ds``; True when the listing was cut at MAX_TAG_ROWS."""
    if ds is None:
        return False
    for elem in ds:
        if len(rows) >= MAX_TAG_ROWS:
            return True
        tag = f"{int(elem.tag):08X}"
        name = elem.name if elem.name and elem.name != "Private tag data" else "Private tag"
        row = {"tag": tag, "keyword": elem.keyword or "", "name": name, "vr": elem.VR, "depth": depth,
               "item": 0, "value": _value_text(elem)}
        rows.append(row)
        if elem.VR == "SQ" and depth < MAX_DEPTH:
            for number, item in enumerate(elem.value, start=1):
                if len(rows) >= MAX_TAG_ROWS:
                    return True
                rows.append({"tag": "FFFEE000", "keyword": "Item", "name": f"Item {number}", "vr": "",
                             "depth": depth + 1, "item": number, "value": f"{len(item)} element(s)"})
                if _walk(item, depth + 2, rows):
                    return True
    return False


def _value_text(elem: Any) -> str:
    if elem.VR == "SQ":
        return f"{len(elem.value)} item(s)"
    value = elem.value
    if elem.VR in BINARY_VRS or isinstance(value, (bytes, bytearray)):
        return f"[{len(value or b'')} bytes]"
    if value is None:
        return ""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        text = "\\".join(str(v) for v in value)
    else:
        text = str(value)
    return text[:1000]


# The last C-ECHO of each remote node from this server (since it started), for the Send menu.
_echo_lock = threading.Lock()


def _echo_state(request: Request) -> dict[str, dict[str, Any]]:
    state = request.app.state
    if not hasattr(state, "ui_echo"):
        state.ui_echo = {}
    return state.ui_echo


@router.get("/ui/api/peers", summary="Remote nodes with the last C-ECHO of each from here")
def peers_with_state(request: Request) -> list[dict[str, Any]]:
    """As /api/peers, each with ``last_echo``: {ok, status, error, at} of the last C-ECHO run from the viewer
    (null when none since the server started)."""
    with _echo_lock:
        known = dict(_echo_state(request))
    return [{"name": p.name, "ae_title": p.ae_title, "host": p.host, "port": p.port, "last_echo": known.get(p.name)}
            for p in pacs_of(request).peers.all()]


@router.post("/ui/api/peers/{name}/echo", summary="C-ECHO a remote node and remember the answer")
def echo_peer(request: Request, name: str) -> dict[str, Any]:
    """{ok, status, error, at}: ok when the node answered with status 0x0000."""
    from hounsfield.dimse import client

    pacs = pacs_of(request)
    peer = pacs.peers.get(name)  # 404 for an unknown name
    try:
        status = client.echo(peer, pacs.settings.ae_title)
        result = {"ok": status == 0, "status": status, "error": "" if status == 0 else f"status 0x{status & 0xFFFF:04X}"}
    except Exception as exc:  # noqa: BLE001 - any failure to reach the node is its state, not a server error
        result = {"ok": False, "status": None, "error": str(exc) or type(exc).__name__}
    result["at"] = datetime.now(timezone.utc).isoformat()
    with _echo_lock:
        _echo_state(request)[name] = result
    return result


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
