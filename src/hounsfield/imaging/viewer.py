"""Interactive display with matplotlib: one image, or a stack browsed with the arrow keys or mouse wheel."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

_NEXT = frozenset({"up", "right", "pageup"})
_PREVIOUS = frozenset({"down", "left", "pagedown"})


def browse(render: Callable[[int], np.ndarray], count: int, *, title: str = "", start: int = 0) -> None:
    """Open a window showing ``render(index)`` for ``index`` in 0..count-1, one pixel per pixel value.

    Arrow keys, Page Up/Down and the mouse wheel move through the stack; the title shows the position.
    """
    import matplotlib.pyplot as plt

    state = {"index": min(max(start, 0), count - 1)}
    figure, axes = plt.subplots()
    axes.set_axis_off()
    artist = axes.imshow(render(state["index"]), cmap="gray", vmin=0, vmax=255, interpolation="nearest")

    def update(step: int) -> None:
        state["index"] = min(max(state["index"] + step, 0), count - 1)
        artist.set_data(render(state["index"]))
        axes.set_title(_caption(title, state["index"], count))
        figure.canvas.draw_idle()

    def on_key(event) -> None:
        if event.key in _NEXT:
            update(1)
        elif event.key in _PREVIOUS:
            update(-1)

    def on_scroll(event) -> None:
        update(1 if event.button == "up" else -1)

    axes.set_title(_caption(title, state["index"], count))
    if count > 1:
        figure.canvas.mpl_connect("key_press_event", on_key)
        figure.canvas.mpl_connect("scroll_event", on_scroll)
    plt.show()


def _caption(title: str, index: int, count: int) -> str:
    return title if count == 1 else f"{title}  [{index + 1}/{count}]"
