"""Modality worklist and MPPS: items in the index, served by the MWL SCP, closed by MPPS.

Modules: ``models`` (tables), ``items`` (an item as a dataset: validation, columns), ``mwl`` (identifier →
SQL + answers), ``service`` (the ``Worklist``), ``querylog``, ``mpps``, ``flat`` (the friendly JSON form),
``wlfile`` (.wl import/export), ``dimse`` (thin handlers), ``client`` (MWL SCU), ``cli``.
"""

from __future__ import annotations

from hounsfield.config import Settings
from hounsfield.worklist.mpps import Mpps
from hounsfield.worklist.service import Options, Worklist


def options_from(settings: Settings) -> Options:
    return Options(station_only=settings.worklist_station_only, days=settings.worklist_days,
                   max_answers=settings.worklist_max_answers, fuzzy_pn=settings.worklist_fuzzy_pn,
                   show_closed=settings.worklist_show_closed, expire_hours=settings.worklist_expire_hours)


__all__ = ["Mpps", "Options", "Worklist", "options_from"]
