"""The quicklook drawing (matplotlib, Agg canvas, no pyplot): scene, classes, outlines, flood.

Inputs are the small decimated arrays that :mod:`unetgeo.io.quicklook` reads; the PNG is written
by :func:`unetgeo.io.images.save_figure` (atomically). Nothing here opens a file.
"""

from __future__ import annotations

import datetime as _dt
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from unetgeo.io.images import save_figure
from unetgeo.io.quicklook import OutlineLayer

Bounds = tuple[float, float, float, float]
"""``(left, bottom, right, top)`` in map units."""

_DPI = 100
_FLOOD_RGB = "#e31a1c"

#: Band triples shown as false colour (R, G, B), in order of preference, as canonical band names.
FALSE_COLOUR = (("nir", "red", "green"), ("swir", "nir", "red"), ("swir2", "nir", "red"), ("swir", "nir", "green"))
#: Bands shown in grey when no colour triple exists, in order of preference (else the first band).
GREY = ("vv", "hh", "vh", "hv", "pan", "nir", "red")
_SAR = frozenset({"vv", "vh", "hh", "hv"})
_UNNAMED = re.compile(r"b\d+")


@dataclass(frozen=True)
class Rendering:
    """How the scene is drawn.

    Attributes:
        bands: 0-based band positions shown as (R, G, B), or one position (grey).
        title: ``"true colour"``, ``"false colour (nir, red, green)"`` or ``"grey (VV)"``.
        sar: the grey band is SAR backscatter (shown in dB when its values are linear).
    """

    bands: tuple[int, ...]
    title: str
    sar: bool = False


def choose_rendering(band_names: Sequence[str], sensor: str | None = None) -> Rendering:
    """The scene rendering for bands named ``band_names`` (names, codes or canonical names).

    True colour when blue, green and red exist; else the first :data:`FALSE_COLOUR` triple present;
    else grey of the first :data:`GREY` band present, or of band 1. Names of the form ``b<k>``
    (unetgeo's names of undescribed bands) are unnamed: an unnamed 3-band scene is drawn in grey,
    not assumed to be R-G-B in file order.
    """
    from unetgeo.bands import canonical_names

    idx = [i for i, n in enumerate(band_names) if not _UNNAMED.fullmatch(str(n))]
    canon = canonical_names([band_names[i] for i in idx], sensor) if idx else []
    pos: dict[str, int] = {}
    for i, c in zip(idx, canon, strict=True):
        pos.setdefault(c, i)
    if all(c in pos for c in ("red", "green", "blue")):
        return Rendering((pos["red"], pos["green"], pos["blue"]), "true colour")
    for triple in FALSE_COLOUR:
        if all(c in pos for c in triple):
            return Rendering(tuple(pos[c] for c in triple), f"false colour ({', '.join(triple)})")
    grey = next((c for c in GREY if c in pos), None)
    if grey is None:
        return Rendering((0,), f"grey ({band_names[0]})" if band_names else "grey")
    return Rendering((pos[grey],), f"grey ({grey.upper() if grey in _SAR else grey})", sar=grey in _SAR)


def stretch_rgba(data: np.ndarray, valid: np.ndarray, *, to_db: bool = False) -> np.ndarray:
    """Percentile-stretched (2–98 % of valid pixels, per band) image of 1 or 3 bands.

    Args:
        data: ``(1|3, h, w)`` float32; one band is drawn grey.
        valid: ``(h, w)`` bool; alpha 0 elsewhere.
        to_db: show ``10 log10(value)`` when every valid value is positive (linear SAR backscatter).

    Returns:
        ``(h, w, 4)`` float32 in ``0..1``.
    """
    ok = valid & np.isfinite(data).all(axis=0)
    if to_db and ok.any() and (data[:, ok] > 0).all():
        data = 10.0 * np.log10(np.where(ok, data, 1.0))
    rgba = np.zeros((*data.shape[1:], 4), dtype=np.float32)
    for i in range(3):
        b = data[min(i, data.shape[0] - 1)]
        v = b[ok]
        lo, hi = (np.percentile(v, [2, 98]) if v.size else (0.0, 1.0))
        rgba[..., i] = np.clip((b - lo) / max(hi - lo, 1e-6), 0, 1)
    rgba[..., 3] = ok.astype(np.float32)
    rgba[~ok, :3] = 0
    return rgba


#: Tags that may hold the acquisition time, in order of preference (compared case-insensitively).
DATE_TAGS = ("acquired", "acquisition_date", "date_acquired", "datetime", "sensing_time", "product_start_time",
             "start_datetime", "tifftag_datetime")


def acquisition_date(tags: Mapping[str, Any]) -> str | None:
    """``"YYYY-MM-DD"`` (plus ``" HH:MM"`` when a time is given) from the first :data:`DATE_TAGS` tag
    that parses (ISO 8601, or TIFF's ``YYYY:MM:DD HH:MM:SS``); None when none does."""
    low = {str(k).lower(): v for k, v in tags.items()}
    for key in DATE_TAGS:
        text = str(low.get(key) or "").strip()
        m = re.match(r"(\d{4})[-:](\d{2})[-:](\d{2})(?:[T ](\d{2}):(\d{2}))?", text)
        if not m:
            continue
        try:
            day = _dt.date(int(m[1]), int(m[2]), int(m[3]))
        except ValueError:
            continue
        return day.isoformat() + (f" {m[4]}:{m[5]}" if m[4] else "")
    return None


def scale_bar_m(view_width_m: float) -> tuple[float, str]:
    """A round scale-bar length (1, 2 or 5 × 10^k m) of about a fifth of ``view_width_m``, and its label."""
    target = max(view_width_m / 5.0, 1e-3)
    k = math.floor(math.log10(target))
    length = max((f * 10.0**k for f in (1, 2, 5) if f * 10.0**k <= target), default=10.0**k)
    label = f"{length / 1000:g} km" if length >= 1000 else f"{length:g} m"
    return length, label


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
    """The scene image ``(h, w, 3|4)`` float 0–1 as background, clipped to ``view``."""
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


def _draw_scale_bar(ax: Any, view: Bounds, map_unit_m: float) -> None:
    """A round-length scale bar in the lower left of ``view``; ``map_unit_m``: metres per map unit."""
    length_m, label = scale_bar_m((view[2] - view[0]) * map_unit_m)
    w, h = view[2] - view[0], view[3] - view[1]
    x0, y0 = view[0] + 0.05 * w, view[1] + 0.06 * h
    x1 = x0 + length_m / map_unit_m
    ax.plot([x0, x1], [y0, y0], color="k", linewidth=5, solid_capstyle="butt")
    ax.plot([x0, x1], [y0, y0], color="w", linewidth=3, solid_capstyle="butt")
    ax.text((x0 + x1) / 2, y0 + 0.03 * h, label, ha="center", va="bottom", fontsize=8, color="w",
            bbox={"facecolor": "k", "alpha": 0.5, "edgecolor": "none", "pad": 1.5})


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
    scene_title: str = "scene",
    map_unit_m: float | None = None,
    width_px: int = 1600,
) -> str:
    """Draw the quicklook and write it as PNG (atomically); returns ``uri``.

    Panels: scene | class map with legend | outlines over the scene (| flood over the scene).
    Three panels are laid out 1x3, four 2x2; the image is at most ``width_px`` wide and high.

    Args:
        rgb: ``(h, w, 4)`` float32 0–1 scene image (:func:`stretch_rgba`), or None (the panels say so).
        classes: ``(h, w)`` uint8 class ids, 255 nodata; ``class_bounds`` its map bounds.
        class_labels: legend texts (default: the class names).
        flood: ``(h, w)`` uint8, 1 where flooded; ``flood_bounds`` defaults to ``class_bounds``.
        outlines: polygon layers; the legend shows each layer's ``n_polygons``.
        scene_title: title of the scene panel (e.g. ``"scene: true colour"``).
        map_unit_m: metres per map unit at the scene: draws a scale bar on the scene panel (None: none).
    """
    fig, axes = _figure(4 if flood is not None else 3, class_bounds, width_px, title)
    _show_scene(axes[0], rgb, rgb_bounds, class_bounds)
    axes[0].set_title(scene_title, fontsize=10)
    if map_unit_m:
        _draw_scale_bar(axes[0], class_bounds, map_unit_m)
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
