"""Rendered images: a frame's display values as PNG or JPEG bytes, with optional overlays and annotations.

This is what the CLI's ``show --out``/``render`` and the web service's rendered resources call. Without
annotations or resizing the output has the image's native size, one pixel per stored pixel, and its grey
levels follow PS3.3 C.11 exactly (see :mod:`hounsfield.imaging.display`).
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset

from hounsfield.imaging.annotate import burn_overlays, draw_annotations
from hounsfield.imaging.display import VoiChoice, frame_to_display
from hounsfield.imaging.io import Source, decode_frame, read_dataset
from hounsfield.imaging.lut import apply_modality, modality_transform
from hounsfield.imaging.png import encode_png

FORMATS = {"png": "PNG", "jpeg": "JPEG", "jpg": "JPEG", "tiff": "TIFF", "tif": "TIFF"}
# What a file name's extension asks for (the CLI's --out): the format written, never another one.
EXTENSIONS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".tif": "tiff", ".tiff": "tiff"}
JPEG_QUALITY = 90


def frame_values(source: Source, frame: int = 0) -> np.ndarray:
    """Modality values of one frame (Hounsfield units for CT) as float32, shape (rows, columns).

    Colour images are returned as their stored samples (rows, columns, 3), as float32.
    """
    ds = read_dataset(source)
    stored, photometric = decode_frame(ds, frame)
    if stored.ndim == 3 or photometric == "PALETTE COLOR":
        return stored.astype(np.float32)
    return apply_modality(stored, modality_transform(ds, frame))


def render_image(ds: Dataset, *, frame: int = 0, window: tuple[float, float] | None = None,
                 preset: str | None = None, annotate: bool = False, overlays: bool = False,
                 max_size: int | None = None) -> Image.Image:
    """Render one frame of a parsed data set to a Pillow image (mode ``L`` or ``RGB``)."""
    pixels, voi = frame_to_display(ds, frame, window=window, preset=preset)
    if overlays:
        pixels = burn_overlays(pixels, ds, frame)
    image = Image.fromarray(pixels)
    scale = 1.0
    if max_size is not None and max(image.size) > max_size:
        if max_size < 1:
            raise ValueError(f"max_size must be at least 1, not {max_size}")
        scale = max_size / max(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS, reducing_gap=2.0)
    if annotate:
        image = draw_annotations(image, ds, frame, _window_label(voi), scale)
    return image


def format_for(filename: str) -> str:
    """The image format a file name's extension names (``x.tiff`` → ``tiff``); ValueError for any other."""
    suffix = "." + filename.rpartition(".")[2].lower() if "." in filename else ""
    if suffix not in EXTENSIONS:
        known = ", ".join(EXTENSIONS)
        raise ValueError(f"{'no extension' if not suffix else f'unknown extension {suffix}'} "
                         f"(write {known})")
    return EXTENSIONS[suffix]


def encode(image: Image.Image, fmt: str = "png") -> bytes:
    """PNG (see :mod:`hounsfield.imaging.png`), JPEG (quality 90) or TIFF (Pillow, deflate) bytes of an image."""
    key = fmt.lower()
    if key not in FORMATS:
        raise ValueError(f"unknown image format {fmt!r} (expected png, jpeg or tiff)")
    if FORMATS[key] == "PNG":
        return encode_png(np.asarray(image))
    buf = io.BytesIO()
    if FORMATS[key] == "JPEG":
        image.save(buf, format="JPEG", quality=JPEG_QUALITY)
    else:
        image.save(buf, format="TIFF", compression="tiff_adobe_deflate")
    return buf.getvalue()


def render_instance(source: Source, *, frame: int = 0, window: tuple[float, float] | None = None,
                    preset: str | None = None, fmt: str = "png", annotate: bool = False,
                    max_size: int | None = None, overlays: bool = False) -> bytes:
    """Render frame ``frame`` of an instance (path, bytes or Dataset) to PNG, JPEG or TIFF bytes.

    The VOI is, in order: ``window`` (center, width; LINEAR, PS3.3 C.11.2.1.2.1), ``preset`` (a name in
    :data:`~hounsfield.imaging.presets.PRESETS`), the file's first window (with its VOI LUT Function), its
    VOI LUT Sequence, or a window estimated from the data. MONOCHROME1 is inverted; colour is rendered as
    RGB. ``annotate`` adds corner text and a scale bar, ``overlays`` burns in Overlay Planes (60xx), and
    ``max_size`` bounds the longer side in pixels.
    """
    ds = read_dataset(source)
    image = render_image(ds, frame=frame, window=window, preset=preset, annotate=annotate,
                         overlays=overlays, max_size=max_size)
    return encode(image, fmt)


def _window_label(voi: VoiChoice | None) -> str:
    if voi is None:
        return ""
    if voi.window is None:
        return "VOI LUT"
    w = voi.window
    suffix = "" if w.function == "LINEAR" else f" {w.function}"
    return f"W {w.width:g} L {w.center:g}{suffix}"
