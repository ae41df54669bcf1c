"""What is drawn on top of the pixels: Overlay Planes (PS3.3 C.9.2), corner text, a scale bar, and a legend
beside the image (what the RT overlays of :mod:`hounsfield.rt.overlay` name)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset

from hounsfield.imaging.lut import frame_group

OVERLAY_GROUPS = range(0x6000, 0x6020, 2)  # the 16 repeating groups of C.9.2
_BAR_LENGTHS_MM = (1, 2, 5, 10, 20, 50, 100, 200, 500)


def burn_overlays(pixels: np.ndarray, ds: Dataset, frame: int = 0) -> np.ndarray:
    """Set the pixels of every graphics overlay plane that covers ``frame`` to full intensity (white).

    Overlay Origin (60xx,0050) is 1-based (row, column); multi-frame overlays start at Image Frame Origin
    (60xx,0051), also 1-based.
    """
    out = pixels.copy()
    for group in OVERLAY_GROUPS:
        if (group, 0x3000) not in ds:
            continue
        plane = ds.overlay_array(group)
        if plane.ndim == 3:
            index = frame - (int(ds.get((group, 0x0051)).value if (group, 0x0051) in ds else 1) - 1)
            if not 0 <= index < plane.shape[0]:
                continue
            plane = plane[index]
        origin = ds.get((group, 0x0050))
        row0, col0 = (int(v) - 1 for v in origin.value) if origin is not None else (0, 0)
        _paste_mask(out, plane.astype(bool), row0, col0)
    return out


def _paste_mask(image: np.ndarray, mask: np.ndarray, row0: int, col0: int) -> None:
    rows, cols = image.shape[:2]
    r0, c0 = max(row0, 0), max(col0, 0)
    r1, c1 = min(row0 + mask.shape[0], rows), min(col0 + mask.shape[1], cols)
    if r1 <= r0 or c1 <= c0:
        return
    image[r0:r1, c0:c1][mask[r0 - row0:r1 - row0, c0 - col0:c1 - col0]] = 255


def pixel_spacing(ds: Dataset, frame: int = 0) -> tuple[float, float] | None:
    """(row spacing, column spacing) in mm from Pixel Measures (C.7.6.16.2.1) or the image plane (C.7.6.2)."""
    item = frame_group(ds, frame, "PixelMeasuresSequence")
    spacing = item.get("PixelSpacing") or ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
    try:
        row, col = (float(v) for v in spacing)
    except (TypeError, ValueError):
        return None
    return (row, col) if row > 0 and col > 0 else None


def corner_texts(ds: Dataset, frame: int, window_label: str) -> tuple[str, str, str, str]:
    """Top-left (patient), top-right (study), bottom-left (window), bottom-right (slice) corner texts."""
    patient = "\n".join(x for x in (str(ds.get("PatientName", "")), str(ds.get("PatientID", ""))) if x)
    date = str(ds.get("StudyDate", ""))
    date = f"{date[:4]}-{date[4:6]}-{date[6:]}" if len(date) == 8 else date
    study = "\n".join(x for x in (date, str(ds.get("Modality", "")), str(ds.get("SeriesDescription", ""))) if x)
    position = frame_group(ds, frame, "PlanePositionSequence").get("ImagePositionPatient")
    location = ds.get("SliceLocation")
    lines = []
    if location not in (None, ""):
        lines.append(f"Loc {float(location):.2f} mm")
    elif position:
        lines.append(f"Pos {float(position[2]):.2f} mm")
    frames = int(ds.get("NumberOfFrames") or 1)
    lines.append(f"Im {ds.get('InstanceNumber', '')}" if frames == 1 else f"Frame {frame + 1}/{frames}")
    return patient, study, window_label, "\n".join(lines)


def draw_annotations(image: Image.Image, ds: Dataset, frame: int, window_label: str,
                     scale: float = 1.0) -> Image.Image:
    """Corner texts and, when the pixel spacing is known, a scale bar; ``scale`` is output/native size."""
    out = image.convert("RGB")
    draw = ImageDraw.Draw(out)
    size = max(10, min(out.size) // 32)
    font = ImageFont.load_default(size=size)
    margin = max(2, size // 3)
    style = {"font": font, "fill": (255, 255, 0), "stroke_width": 1, "stroke_fill": (0, 0, 0)}
    top_left, top_right, bottom_left, bottom_right = corner_texts(ds, frame, window_label)
    width, height = out.size
    draw.multiline_text((margin, margin), top_left, anchor="la", **style)
    draw.multiline_text((width - margin, margin), top_right, anchor="ra", align="right", **style)
    draw.multiline_text((margin, height - margin), bottom_left, anchor="ld", **style)
    draw.multiline_text((width - margin, height - margin), bottom_right, anchor="rd", align="right", **style)
    spacing = pixel_spacing(ds, frame)
    if spacing is not None:
        _draw_scale_bar(draw, out.size, spacing[1] / scale, size, style)
    return out


def _draw_scale_bar(draw: ImageDraw.ImageDraw, size: tuple[int, int], mm_per_pixel: float, text_size: int,
                    style: dict) -> None:
    """A horizontal bar of a round length in mm, at most a quarter of the width, centred near the bottom."""
    width, height = size
    fitting = [mm for mm in _BAR_LENGTHS_MM if mm / mm_per_pixel <= width / 4]
    if not fitting:
        return
    length_mm = fitting[-1]
    length_px = round(length_mm / mm_per_pixel)
    x0 = (width - length_px) // 2
    y = height - 2 * text_size
    draw.line([(x0, y), (x0 + length_px, y)], fill=(255, 255, 0), width=max(1, text_size // 5))
    draw.text((width // 2, y - 2), f"{length_mm} mm", anchor="md", **style)


@dataclass(frozen=True)
class LegendEntry:
    """A legend line: its text after a stroke of ``colour`` (``kind`` ``line``, as contours and isodose lines
    are drawn) or after nothing (``text``)."""

    colour: tuple[int, int, int]
    text: str
    kind: str = "line"


@dataclass(frozen=True)
class ColourBar:
    """A vertical colour scale: ``colours`` (n, 3) uint8 from the bottom up, ``ticks`` (fraction of the height
    from the bottom, label), and a title above it."""

    colours: np.ndarray
    ticks: tuple[tuple[float, str], ...]
    title: str


def with_legend(image: Image.Image, entries: list[LegendEntry], colour_bar: ColourBar | None = None) -> Image.Image:
    """``image`` (as RGB) with a legend panel on its right: the image's own pixels keep their place and none
    is hidden. The panel is at least as tall as its entries; the canvas grows to it, black below the image."""
    size = max(10, image.height // 32)
    font = ImageFont.load_default(size=size)
    margin, swatch, step = max(2, size // 3), size + 4, size + size // 2
    text_width = max([font.getlength(e.text) for e in entries] + [0.0])
    bar_height = 8 * step if colour_bar is not None else 0
    if colour_bar is not None:
        text_width = max([text_width, font.getlength(colour_bar.title), swatch + margin +
                          max(font.getlength(label) for _, label in colour_bar.ticks)])
    width = int(2 * margin + swatch + margin + text_width)
    height = max(image.height, int(margin + step * len(entries) + (bar_height + 2 * step if colour_bar else 0)))
    out = Image.new("RGB", (image.width + width, height))
    out.paste(image.convert("RGB"), (0, 0))
    draw = ImageDraw.Draw(out)
    x, y = image.width + margin, margin
    for entry in entries:
        middle = y + size // 2
        if entry.kind == "line":
            draw.line([(x, middle), (x + swatch, middle)], fill=entry.colour, width=max(1, size // 6))
        draw.text((x + swatch + margin, y), entry.text, font=font, fill=(255, 255, 255))
        y += step
    if colour_bar is not None:
        draw.text((x, y), colour_bar.title, font=font, fill=(255, 255, 255))
        top, n = y + step, len(colour_bar.colours)
        for i, colour in enumerate(colour_bar.colours):  # bottom (i = 0) to top
            y0 = top + bar_height * (n - 1 - i) / n
            draw.rectangle([x, y0, x + swatch, y0 + bar_height / n], fill=tuple(int(c) for c in colour))
        for fraction, label in colour_bar.ticks:
            ty = top + bar_height * (1 - fraction)
            draw.line([(x + swatch, ty), (x + swatch + margin // 2, ty)], fill=(255, 255, 255))
            draw.text((x + swatch + margin, ty), label, font=font, fill=(255, 255, 255), anchor="lm")
    return out
