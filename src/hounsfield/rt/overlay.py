"""RT overlays on an image slice: the contours of a structure set, the dose as isodose lines or a colour-wash,
and a legend beside the image (:func:`hounsfield.imaging.annotate.with_legend`).

**Placement.** Every point goes through the slice's Image Position (Patient), Image Orientation (Patient) and
Pixel Spacing (PS3.3 C.7.6.2.1.1; :meth:`hounsfield.rt.grid.Grid.plane_coordinates`), so the overlays sit where
the patient coordinates put them whatever the orientation. A contour (ROI Contour module, PS3.3 C.8.8.6) is
drawn on a slice when all its points lie in the slab the slice stands for, half the slice spacing either side
(half-open, as :mod:`hounsfield.rt.raster` takes its planes); any other contour is off the slice plane and
not drawn. CLOSED_PLANAR contours are closed polylines, OPEN_PLANAR / OPEN_NONPLANAR open ones, a POINT a
cross, in the ROI Display Color (else a palette colour).

**Dose** (RT Dose, PS3.3 C.8.8.3) is sampled trilinearly at the slice's pixel centres
(:meth:`hounsfield.rt.dose.DoseGrid.resample_slice`); pixels outside the dose grid have none, and a slice the
grid misses altogether gets a note, not an error.

* *Isodose lines*: the pixels whose dose is at least the level and one of whose four neighbours (inside the
  grid) has less: the inner edge of the region receiving the level, one pixel wide. A level is in Gy
  (``40Gy``) or in % of the reference dose (``95``): the prescription of the RT Plan (Target Prescription
  Dose of the RT Prescription module, PS3.3 C.8.8.10, :attr:`PlanSummary.prescription_gy`), else the dose
  grid's maximum, with a note.
* *Colour-wash*: matplotlib's ``jet`` from 0 to the grid's maximum, blended half and half with the grey
  where the dose is at least 10 % of that maximum; the legend has the scale in Gy.

Both the structure set and the dose must share the images' Frame of Reference (PS3.3 C.7.4.1).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

from hounsfield.imaging.annotate import ColourBar, LegendEntry, with_legend
from hounsfield.rt.dose import DoseGrid
from hounsfield.rt.export import PALETTE
from hounsfield.rt.grid import CTSeries, Grid
from hounsfield.rt.links import resolve
from hounsfield.rt.plan import PlanSummary
from hounsfield.rt.structure import POINT, ROI, Contour, StructureSet

#: Colours of the isodose lines, highest level first.
ISODOSE_COLOURS = ((255, 0, 0), (255, 128, 0), (255, 255, 0), (0, 255, 0), (0, 255, 255), (0, 128, 255),
                   (255, 0, 255), (255, 255, 255))
#: Isodose levels drawn when none are asked for: % of the reference dose.
DEFAULT_ISODOSE = "95,80,50,20"
WASH_COLOURMAP = "jet"
WASH_FLOOR = 0.1  # of the grid maximum
WASH_ALPHA = 0.5
_CROSS = 3  # half-size (pixels) of a POINT's cross


@dataclass(frozen=True)
class IsodoseLevel:
    """An isodose level: ``value`` Gy when ``absolute``, else ``value`` % of the reference dose."""

    value: float
    absolute: bool

    def gy(self, reference: float | None) -> float:
        return self.value if self.absolute else self.value * (reference or 0.0) / 100.0


def parse_isodose(spec: str) -> tuple[IsodoseLevel, ...]:
    """``95,50`` (% of the reference dose; ``95%`` too) and ``40Gy,20Gy`` (absolute), mixed as wished; a
    ValueError names an item that is neither."""
    levels = []
    for item in spec.split(","):
        text = item.strip().lower()
        absolute = text.endswith("gy")
        digits = text[:-2] if absolute else text.removesuffix("%")
        try:
            value = float(digits)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{item.strip()!r} is not an isodose level (95 or 95% of the prescription, 40Gy)")
        levels.append(IsodoseLevel(value, absolute))
    return tuple(levels)


@dataclass(frozen=True)
class ReferenceDose:
    """What 100 % means: ``gy``, and where it comes from (for the legend)."""

    gy: float
    source: str


def find_plan(dose: DoseGrid, related: Sequence[str | os.PathLike[str]]) -> PlanSummary | None:
    """The RT Plan ``dose`` references (Referenced RT Plan Sequence, PS3.3 C.8.8.3), when it is among
    ``related`` (files or folders, :func:`hounsfield.rt.links.resolve`)."""
    if not related or dose.dataset is None:
        return None
    return resolve([*related, dose.dataset]).plan_of_dose(dose.sop_instance_uid)


def contour_colour(roi: ROI) -> tuple[int, int, int]:
    """The ROI Display Color (PS3.3 C.8.8.6), else a palette colour by ROI Number."""
    return roi.color or PALETTE[(roi.number - 1) % len(PALETTE)]


def slice_contours(roi: ROI, grid: Grid) -> list[tuple[Contour, np.ndarray]]:
    """The ROI's contours on the slice of the one-slice ``grid``, each with its (row, column) pixel coordinates:
    those whose points all lie within the slice's slab, ``[-t/2, t/2)`` of its plane (``t``: the grid's
    thickness, the slice spacing of a series)."""
    half = grid.thickness / 2
    out = []
    for contour in roi.contours:
        wvu = grid.plane_coordinates(contour.points)
        dw = wvu[:, 0] - grid.offsets[0]
        if np.all((dw >= -half - 1e-6) & (dw < half - 1e-6)):
            out.append((contour, wvu[:, 1:]))
    return out


def isodose_line(plane: np.ndarray, level: float) -> np.ndarray:
    """The pixels of the isodose line of ``level``: dose at least ``level`` with a 4-neighbour (not NaN) below."""
    above = plane >= level  # NaN (outside the grid) is neither above nor below
    below = plane < level
    near_below = np.zeros_like(below)
    near_below[1:] |= below[:-1]
    near_below[:-1] |= below[1:]
    near_below[:, 1:] |= below[:, :-1]
    near_below[:, :-1] |= below[:, 1:]
    return above & near_below


def _wash_colours(fractions: np.ndarray) -> np.ndarray:
    import matplotlib

    return np.asarray(matplotlib.colormaps[WASH_COLOURMAP](np.clip(fractions, 0.0, 1.0)))[..., :3] * 255.0


@dataclass(eq=False)
class Overlay:
    """What to draw on the slices of one series; :meth:`draw` puts it on one slice."""

    structure_set: StructureSet | None = None
    dose: DoseGrid | None = None
    levels: tuple[IsodoseLevel, ...] = ()
    colourwash: bool = False
    reference: ReferenceDose | None = None
    notes: list[str] = field(default_factory=list)

    @classmethod
    def read(cls, *, rtstruct: str | os.PathLike[str] | None = None, rtdose: str | os.PathLike[str] | None = None,
             rtplan: str | os.PathLike[str] | None = None, related: Sequence[str | os.PathLike[str]] = (),
             levels: tuple[IsodoseLevel, ...] = (), colourwash: bool = False) -> Overlay:
        """Read the objects (an unusable one raises, naming it) and settle the reference dose: ``rtplan``'s
        prescription, else that of the plan the dose references when it is among ``related``, else the dose
        maximum."""
        overlay = cls(levels=levels if levels or colourwash else parse_isodose(DEFAULT_ISODOSE),
                      colourwash=colourwash)
        if rtstruct is not None:
            overlay.structure_set = StructureSet.read(rtstruct)
            overlay.notes += overlay.structure_set.issues
        if rtdose is None:
            return overlay
        dose = overlay.dose = DoseGrid.read(rtdose)
        overlay.notes += dose.issues
        plan = PlanSummary.read(rtplan) if rtplan is not None else find_plan(dose, related)
        if plan is not None and dose.referenced_plan_uids and plan.sop_instance_uid not in dose.referenced_plan_uids:
            overlay.notes.append(f"{plan.name} is not the RT Plan {dose.name} references "
                                 f"({', '.join(dose.referenced_plan_uids)}); its prescription is used all the same")
        if plan is not None and plan.prescription_gy:
            overlay.reference = ReferenceDose(plan.prescription_gy, f"prescription of {os.path.basename(plan.name)}")
        else:
            overlay.reference = ReferenceDose(dose.max, "dose maximum")
            if not colourwash and not all(level.absolute for level in overlay.levels):
                why = f"{plan.name} has no Target Prescription Dose" if plan is not None else "no RT Plan found"
                overlay.notes.append(f"{dose.name}: {why}; the isodose percentages are of the dose maximum, "
                                     f"{dose.max:.3g} {overlay.unit}")
        return overlay

    def check(self, series: CTSeries) -> None:
        """Refuse objects of another Frame of Reference than ``series`` (:meth:`CTSeries.require_frame_of_reference`)."""
        if self.structure_set is not None:
            series.require_frame_of_reference(self.structure_set.frame_of_reference_uid, self.structure_set.name)
        if self.dose is not None:
            series.require_frame_of_reference(self.dose.frame_of_reference_uid, self.dose.name)

    @property
    def unit(self) -> str:
        units = self.dose.units if self.dose is not None else ""
        return "Gy" if units in ("GY", "") else units.lower()

    def isodose_lines(self) -> list[tuple[float, tuple[int, int, int], str]]:
        """(dose, colour, legend text) of each isodose level, highest first."""
        ref = self.reference.gy if self.reference else None
        lines = []
        for n, level in enumerate(sorted(self.levels, key=lambda lv: -lv.gy(ref))):
            gy = level.gy(ref)
            if level.absolute:
                text = f"{level.value:g} {self.unit}" + (f" ({100 * gy / ref:.0f} %)" if ref else "")
            else:
                text = f"{level.value:g} % ({gy:.3g} {self.unit})"
            lines.append((gy, ISODOSE_COLOURS[n % len(ISODOSE_COLOURS)], text))
        return lines

    def draw(self, image: Image.Image, grid: Grid, where: str) -> tuple[Image.Image, list[str]]:
        """``image`` (the slice of one-slice ``grid`` at native size) with the overlays and the legend, and the
        notes about this slice (``where`` names it in them)."""
        rgb = np.array(image.convert("RGB"))
        notes: list[str] = []
        if self.dose is not None:
            plane = self.dose.resample_slice(grid, 0, fill=np.nan)
            if np.isnan(plane).all():
                notes.append(f"{self.dose.name}: the dose grid does not cover {where}; no dose drawn")
            elif self.colourwash:
                shown = np.isfinite(plane) & (plane >= WASH_FLOOR * self.dose.max) & (self.dose.max > 0)
                colours = _wash_colours(plane[shown] / (self.dose.max or 1.0))
                rgb[shown] = np.rint((1 - WASH_ALPHA) * rgb[shown] + WASH_ALPHA * colours).astype(np.uint8)
            else:
                for gy, colour, _ in reversed(self.isodose_lines()):  # the highest level on top
                    rgb[isodose_line(plane, gy)] = colour
        out = Image.fromarray(rgb)
        if self.structure_set is not None:
            pen = ImageDraw.Draw(out)
            for roi in self.structure_set.rois:
                for contour, rows_cols in slice_contours(roi, grid):
                    xy = [(int(c), int(r)) for r, c in np.rint(rows_cols)]
                    colour = contour_colour(roi)
                    if contour.geometric_type == POINT or len(xy) == 1:
                        for x, y in xy:
                            pen.line([(x - _CROSS, y), (x + _CROSS, y)], fill=colour)
                            pen.line([(x, y - _CROSS), (x, y + _CROSS)], fill=colour)
                    else:
                        pen.line(xy + xy[:1] if contour.closed else xy, fill=colour)
        return with_legend(out, self.legend(), self.colour_bar()), notes

    def legend(self) -> list[LegendEntry]:
        """The same on every slice: each ROI with contours, then the isodose levels and what 100 % is."""
        entries = [LegendEntry(contour_colour(r), r.name) for r in (self.structure_set.rois if self.structure_set
                                                                      else []) if r.contours]
        if self.dose is not None and not self.colourwash:
            entries += [LegendEntry(colour, text) for _, colour, text in self.isodose_lines()]
            if self.reference is not None and not all(level.absolute for level in self.levels):
                entries.append(LegendEntry((255, 255, 255), f"100 % = {self.reference.gy:.3g} {self.unit} "
                                                            f"({self.reference.source})", "text"))
        return entries

    def colour_bar(self) -> ColourBar | None:
        if self.dose is None or not self.colourwash:
            return None
        top = self.dose.max
        fractions = np.linspace(0.0, 1.0, 64)
        ticks = tuple((f, f"{f * top:.3g} {self.unit}") for f in (0.0, 0.25, 0.5, 0.75, 1.0))
        return ColourBar(_wash_colours(fractions).astype(np.uint8), ticks,
                         f"dose in {self.unit}, from {WASH_FLOOR * top:.3g}")
