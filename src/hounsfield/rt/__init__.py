"""Radiotherapy objects: structure sets, dose grids, DVHs, plans and the links between them.

* :mod:`~hounsfield.rt.structure` — RT Structure Set (PS3.3 C.8.8.5), ROI Contour (C.8.8.6), RT ROI
  Observations (C.8.8.8): :class:`StructureSet`, :class:`ROI`, :class:`Contour`.
* :mod:`~hounsfield.rt.raster` — contours to masks on any :class:`Grid`, holes by the even-odd (XOR) rule,
  supersampled or voxel-centre (dicompyler-core) sampling: :func:`roi_mask`, :func:`roi_occupancy`.
* :mod:`~hounsfield.rt.export` — masks or a NIfTI label map to a new RTSTRUCT:
  :func:`structure_set_from_masks`, :func:`structure_set_from_label_map`.
* :mod:`~hounsfield.rt.dose` — RT Dose (C.8.8.3, Grid Frame Offset Vector C.8.8.3.2): :class:`DoseGrid`
  (Gy, affine, dose at a point, trilinear resampling onto a CT slice or volume).
* :mod:`~hounsfield.rt.dvh` — DVHs computed (:func:`compute_dvh`, :func:`compute_dvhs`) or stored in the
  RT Dose (RT DVH module, C.8.8.4: :func:`stored_dvhs`); :class:`DVH` statistics.
* :mod:`~hounsfield.rt.plan` — RT Plan summary (C.8.8.9, C.8.8.10, C.8.8.13, C.8.8.14): :class:`PlanSummary`.
* :mod:`~hounsfield.rt.links` — plan → structure set → series, dose → plan: :func:`resolve`.
* :mod:`~hounsfield.rt.volumes` — a structure set as a label map and masks, a dose resampled, on a CT series'
  grid (``hounsfield export --rtstruct/--rtdose``): :func:`~hounsfield.rt.volumes.label_map`,
  :func:`~hounsfield.rt.volumes.dose_volume`.
* :mod:`~hounsfield.rt.overlay` — contours, isodose lines or a colour-wash and a legend on an image slice
  (``hounsfield show --rtstruct/--rtdose``): :class:`~hounsfield.rt.overlay.Overlay`.
* :mod:`~hounsfield.rt.cli` — ``hounsfield rt info`` and ``hounsfield rt dvh`` (:func:`~hounsfield.rt.cli.register`).

Every error raised on purpose is an :class:`RTError` whose message names the object and the cause.
"""

from hounsfield.rt.common import RTError
from hounsfield.rt.dose import DoseGrid
from hounsfield.rt.dvh import DVH, compute_dvh, compute_dvhs, stored_dvhs
from hounsfield.rt.export import (mask_outlines, structure_set_from_label_map, structure_set_from_masks,
                                  write_structure_set)
from hounsfield.rt.grid import CTSeries, Grid, load_series
from hounsfield.rt.links import RTSet, resolve
from hounsfield.rt.plan import Beam, PlanSummary
from hounsfield.rt.raster import dice, roi_mask, roi_occupancy
from hounsfield.rt.structure import ROI, Contour, StructureSet

__all__ = ["Beam", "CTSeries", "Contour", "DVH", "DoseGrid", "Grid", "PlanSummary", "ROI", "RTError", "RTSet",
           "StructureSet", "compute_dvh", "compute_dvhs", "dice", "load_series", "mask_outlines", "resolve",
           "roi_mask", "roi_occupancy", "stored_dvhs", "structure_set_from_label_map", "structure_set_from_masks",
           "write_structure_set"]
