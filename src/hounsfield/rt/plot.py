"""A PNG of cumulative DVHs (matplotlib, imported only when asked for)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from hounsfield.errors import DependencyMissing
from hounsfield.rt.dvh import DVH


def plot_dvhs(dvhs: Sequence[DVH], path: str | os.PathLike[str], *, stored: Mapping[int, DVH] | None = None,
              title: str = "", bin_width: float = 0.01) -> None:
    """Write the cumulative relative DVHs of ``dvhs`` (ROI colours; stored DVHs dashed) as a PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        from matplotlib.figure import Figure
    except ImportError:
        raise DependencyMissing("the DVH plot needs matplotlib (pip install matplotlib)") from None
    fig = Figure(figsize=(8, 5), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    for d in dvhs:
        color = tuple(c / 255 for c in d.color) if d.color else None
        dose, pct = d.curve(bin_width)
        line, = ax.plot(dose, pct, label=f"{d.roi_name} ({d.volume_cc:.1f} cm³)", color=color, linewidth=1.5)
        if stored and d.roi_number in stored:
            sd, sp = stored[d.roi_number].curve(bin_width)
            ax.plot(sd, sp, linestyle="--", color=line.get_color(), linewidth=1.0)
    units = dvhs[0].dose_units if dvhs else "GY"
    ax.set_xlabel("Dose [Gy]" if units == "GY" else f"Dose [{units.lower()}]")
    ax.set_ylabel("Volume [%]")
    ax.set_ylim(0, 102)
    ax.set_xlim(left=0)
    ax.grid(True, alpha=0.3)
    if title:
        ax.set_title(title)
    if dvhs:
        ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(os.fspath(path), format="png")
