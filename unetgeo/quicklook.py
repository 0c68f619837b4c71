"""The quicklook drawing (matplotlib, Agg canvas, no pyplot): scene, classes, outlines, flood.

Inputs are the small decimated arrays that :mod:`unetgeo.io.quicklook` reads; the PNG is written
by :func:`unetgeo.io.images.save_figure` (atomically). Nothing here opens a file.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from unetgeo.io.images import save_figure
from unetgeo.io.quicklook import OutlineLayer

Bounds = tuple[float, float, float, float]
"""``(left, bottom, right, top)`` in map units."""

_DPI = 100
_FLOOD_RGB = "#e31a1c"


def _hex(c: str) -> tuple[float, float, float]:
    """``'#rrggbb'`` to an ``(r, g, b)`` tuple of 0–1 floats."""
    c = c.lstrip("#")
    return tuple(int(c[i : i + 2], 16) / 255 for i in (0, 2, 4))  # type: ignore[return-value]


def _figure(n_panels: int, class_bounds: Bounds, width_px: int, title: str) -> tuple[Any, np.ndarray]:
    """A constrained-layout figure of 1x3 (three panels) or 2x2 (four) axes: ``(fig, axes (n,))``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows, cols = (2, 2) if n_panels == 4 else (1, 3)
    left, bottom, right, top = class_bounds
    aspect = (top - bottom) / max(right - left, 1e-12)
    panel_w = width_px / _DPI / cols
    panel_h = min(max(panel_w * aspect, 1.5), (width_px / _DPI - 0.8) / rows)
    fig = Figure(figsize=(width_px / _DPI, rows * panel_h + 0.8), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    if title:
        fig.suptitle(title, fontsize=11)
    return fig, axes


def _show_scene(ax: Any, rgb: np.ndarray | None, rgb_bounds: Bounds | None, view: Bounds) -> None:
    """The scene RGB ``(h, w, 3|4)`` float 0–1 as background, clipped to ``view``."""
    ax.set_facecolor("#202020")
    if rgb is not None and rgb_bounds is not None:
        lft, btm, rgt, tp = rgb_bounds
        ax.imshow(rgb, extent=(lft, rgt, btm, tp), interpolation="nearest")
    else:
        ax.text(0.5, 0.5, "scene not readable", ha="center", va="center", color="w", transform=ax.transAxes)
    ax.set_xlim(view[0], view[2])
    ax.set_ylim(view[1], view[3])


def _draw_classes(ax: Any, classes: np.ndarray, bounds: Bounds, colors: Sequence[str], labels: Sequence[str]) -> None:
    """Class ids ``(h, w)`` uint8 (255 transparent) in their colours, with a legend of ``labels``."""
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    n = len(colors)
    cmap = ListedColormap([(*_hex(c), 1.0) for c in colors] + [(0, 0, 0, 0)] * (256 - n))
    ax.set_facecolor("white")
    ax.imshow(classes, cmap=cmap, vmin=-0.5, vmax=255.5, extent=(bounds[0], bounds[2], bounds[1], bounds[3]),
              interpolation="nearest")
    handles = [Patch(facecolor=colors[i], edgecolor="k", linewidth=0.3, label=labels[i]) for i in range(n)]
    ax.legend(handles=handles, loc="lower right", fontsize=8, framealpha=0.85)
    ax.set_title("classes", fontsize=10)


def _draw_outlines(ax: Any, outlines: Sequence[OutlineLayer], title: str) -> None:
    """Polygon rings of each layer in its colour; the legend counts the polygons."""
    from matplotlib.collections import LineCollection
    from matplotlib.patches import Patch

    legend = []
    for layer in outlines:
        if layer.rings:
            ax.add_collection(LineCollection(layer.rings, colors=layer.color, linewidths=0.9))
        legend.append(Patch(facecolor="none", edgecolor=layer.color, label=f"{layer.label} ({layer.n_polygons})"))
    if legend:
        ax.legend(handles=legend, loc="lower right", fontsize=8, framealpha=0.85)
    ax.set_title(title, fontsize=10)


def _draw_flood(ax: Any, flood: np.ndarray, bounds: Bounds) -> None:
    """Flooded pixels (``flood == 1``) in translucent red over whatever is drawn."""
    fl = np.zeros((*flood.shape, 4), dtype=np.float32)
    fl[flood == 1] = (*_hex(_FLOOD_RGB), 0.75)
    ax.imshow(fl, extent=(bounds[0], bounds[2], bounds[1], bounds[3]), interpolation="nearest")
    ax.set_title("flooded (red)", fontsize=10)


def render_quicklook(
    uri: str,
    *,
    rgb: np.ndarray | None,
    rgb_bounds: Bounds | None,
    classes: np.ndarray,
    class_bounds: Bounds,
    class_names: Sequence[str],
    class_colors: Sequence[str],
    class_labels: Sequence[str] | None = None,
    outlines: Sequence[OutlineLayer] = (),
    outline_title: str = "polygons",
    flood: np.ndarray | None = None,
    flood_bounds: Bounds | None = None,
    title: str = "",
    width_px: int = 1600,
) -> str:
    """Draw the quicklook and write it as PNG (atomically); returns ``uri``.

    Panels: scene RGB | class map with legend | outlines over the scene (| flood over the scene).
    Three panels are laid out 1x3, four 2x2; the image is at most ``width_px`` wide and high.

    Args:
        rgb: ``(h, w, 4)`` float32 0–1 scene image, or None (the panels say so).
        classes: ``(h, w)`` uint8 class ids, 255 nodata; ``class_bounds`` its map bounds.
        class_labels: legend texts (default: the class names).
        flood: ``(h, w)`` uint8, 1 where flooded; ``flood_bounds`` defaults to ``class_bounds``.
    """
    fig, axes = _figure(4 if flood is not None else 3, class_bounds, width_px, title)
    _show_scene(axes[0], rgb, rgb_bounds, class_bounds)
    axes[0].set_title("scene (RGB)", fontsize=10)
    labels = list(class_labels) if class_labels is not None else list(class_names)
    _draw_classes(axes[1], classes, class_bounds, class_colors, labels)
    _show_scene(axes[2], rgb, rgb_bounds, class_bounds)
    _draw_outlines(axes[2], outlines, outline_title)
    if flood is not None:
        _show_scene(axes[3], rgb, rgb_bounds, class_bounds)
        _draw_flood(axes[3], flood, flood_bounds or class_bounds)
    for ax in axes:
        ax.set_aspect("equal")
        ax.tick_params(labelsize=6)
        ax.ticklabel_format(useOffset=False, style="plain")
    return save_figure(fig, uri, dpi=_DPI)
