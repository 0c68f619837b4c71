"""Report outputs: the quicklook PNG (matplotlib, Agg, no pyplot) and the JSON summary.

Every raster is read *decimated* (``out_shape`` reads that use the COG overviews), never at full
resolution, and polygons are read through GDAL filters (area, bbox, feature cap), so a quicklook of
a 100k x 100k scene costs a few megabytes.
"""

from __future__ import annotations

import io
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from unetgeo.io import uri as U
from unetgeo.io.cog import read_decimated
from unetgeo.io.scene import open_scene

log = logging.getLogger(__name__)

RGB_NAMES = ("red", "green", "blue")


def write_json(uri: str, obj: Any) -> str:
    """Write ``obj`` as indented JSON atomically (``URI.tmp`` then rename); NaN is refused."""
    blob = json.dumps(obj, indent=2, allow_nan=False, ensure_ascii=False).encode("utf-8")
    tmp = uri + ".tmp"
    with U.open_file(tmp, "wb") as f:
        f.write(blob)
    U.rename(tmp, uri)
    return uri


def read_json(uri: str) -> Any:
    """Read a JSON file."""
    with U.open_file(uri, "rb") as f:
        return json.loads(f.read().decode("utf-8"))


def list_outputs(run_dir: str) -> list[dict[str, Any]]:
    """Top-level entries of ``run_dir``: ``[{"name", "bytes" (files; folders: null), "kind"}]``, sorted."""
    fs, path = U.fs_for(run_dir)
    try:
        entries = fs.ls(path, detail=True)
    except FileNotFoundError:
        return []
    out = []
    for e in entries:
        name = str(e["name"]).rstrip("/").rsplit("/", 1)[-1]
        if name.endswith(".tmp"):
            continue
        is_dir = e.get("type") == "directory"
        out.append({"name": name, "kind": "folder" if is_dir else "file", "bytes": None if is_dir else int(e.get("size") or 0)})
    return sorted(out, key=lambda d: d["name"])


def decimated_shape(height: int, width: int, max_px: int) -> tuple[int, int]:
    """``(h, w)`` of at most ``max_px`` on the long side, keeping the aspect ratio (never upsampled)."""
    f = max(height, width) / max_px
    if f <= 1:
        return height, width
    return max(1, round(height / f)), max(1, round(width / f))


def read_scene_rgb(scene_uri: str, max_px: int = 800) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """Decimated RGB of a scene, percentile-stretched (2–98 %) to ``0..1``.

    Bands named red/green/blue (band descriptions) are used when present, else the first three
    (one band: grey).

    Returns:
        ``(rgba (h, w, 4) float32, bounds (left, bottom, right, top))``; alpha 0 on nodata.
    """
    info = open_scene(scene_uri, need_crs=False)
    names = [n.lower() for n in info.band_names]
    if all(n in names for n in RGB_NAMES):
        bands = [names.index(n) + 1 for n in RGB_NAMES]
    elif info.count >= 3:
        bands = [1, 2, 3]
    else:
        bands = [1, 1, 1]
    shape = decimated_shape(info.grid.height, info.grid.width, max_px)
    data, valid, bounds = read_decimated(scene_uri, shape, bands=bands, resampling="nearest")
    data = data.astype(np.float32)
    if info.nodata is not None and not np.isnan(info.nodata):
        valid &= ~(data == np.float32(info.nodata)).all(axis=0)
    rgba = np.zeros((*shape, 4), dtype=np.float32)
    for i in range(3):
        b = data[i]
        v = b[valid & np.isfinite(b)]
        lo, hi = (np.percentile(v, [2, 98]) if v.size else (0.0, 1.0))
        rgba[..., i] = np.clip((b - lo) / max(hi - lo, 1e-6), 0, 1)
    rgba[..., 3] = valid.astype(np.float32)
    rgba[~valid, :3] = 0
    return rgba, bounds


def read_class_map(uri: str, max_px: int = 800) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """Decimated class ids (uint8, 255 nodata) from the COG overviews, and the raster bounds."""
    g = open_scene(uri, need_crs=False).grid
    shape = decimated_shape(g.height, g.width, max_px)
    data, valid, bounds = read_decimated(uri, shape, bands=[1], resampling="nearest")
    out = data[0].astype(np.uint8)
    out[~valid] = 255
    return out, bounds


@dataclass
class OutlineLayer:
    """Polygon outlines to draw: ``rings`` are ``(n_i, 2)`` map coordinates, one colour per layer."""

    label: str
    color: str
    rings: list[np.ndarray]
    n_polygons: int


def read_outlines(
    uri: str,
    layers: Sequence[tuple[str, str]],
    *,
    bounds: tuple[float, float, float, float],
    min_area_m2: float,
    max_features: int = 20_000,
) -> list[OutlineLayer]:
    """Outlines of polygons larger than ``min_area_m2`` inside ``bounds``, at most ``max_features`` per layer.

    Args:
        uri: GeoPackage.
        layers: ``(layer name, colour)`` pairs; missing layers are skipped.
    """
    import shapely

    from unetgeo.io.vector import list_layers, read_polygons

    have = set(list_layers(uri))
    out = []
    for name, color in layers:
        if name not in have:
            continue
        df = read_polygons(uri, name, columns=["area_m2"], where=f"area_m2 >= {float(min_area_m2)!r}",
                           bbox=bounds, max_features=max_features)
        geoms = np.asarray(df.geometry.values, dtype=object) if len(df) else np.array([], dtype=object)
        rings = [shapely.get_coordinates(r) for r in shapely.get_rings(geoms)] if len(geoms) else []
        out.append(OutlineLayer(name, color, rings, len(df)))
    return out


def _hex(c: str) -> tuple[float, float, float]:
    c = c.lstrip("#")
    return tuple(int(c[i : i + 2], 16) / 255 for i in (0, 2, 4))  # type: ignore[return-value]


def render_quicklook(
    uri: str,
    *,
    rgb: np.ndarray | None,
    rgb_bounds: tuple[float, float, float, float] | None,
    classes: np.ndarray,
    class_bounds: tuple[float, float, float, float],
    class_names: Sequence[str],
    class_colors: Sequence[str],
    class_labels: Sequence[str] | None = None,
    outlines: Sequence[OutlineLayer] = (),
    outline_title: str = "polygons",
    flood: np.ndarray | None = None,
    flood_bounds: tuple[float, float, float, float] | None = None,
    title: str = "",
    width_px: int = 1600,
) -> str:
    """Draw the quicklook and write it as PNG (atomically).

    Panels: scene RGB | class map with legend | outlines over the scene (| flood over the scene).
    Three panels are laid out 1x3, four 2x2; the image is at most ``width_px`` wide and high.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.collections import LineCollection
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    dpi = 100
    n_panels = 4 if flood is not None else 3
    rows, cols = (2, 2) if n_panels == 4 else (1, 3)
    left, bottom, right, top = class_bounds
    aspect = (top - bottom) / max(right - left, 1e-12)
    panel_w = width_px / dpi / cols
    panel_h = min(max(panel_w * aspect, 1.5), (width_px / dpi - 0.8) / rows)
    fig = Figure(figsize=(width_px / dpi, rows * panel_h + 0.8), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    if title:
        fig.suptitle(title, fontsize=11)
    extent = (left, right, bottom, top)

    def show_scene(ax: Any) -> None:
        ax.set_facecolor("#202020")
        if rgb is not None and rgb_bounds is not None:
            lft, btm, rgt, tp = rgb_bounds
            ax.imshow(rgb, extent=(lft, rgt, btm, tp), interpolation="nearest")
        else:
            ax.text(0.5, 0.5, "scene not readable", ha="center", va="center", color="w", transform=ax.transAxes)
        ax.set_xlim(left, right)
        ax.set_ylim(bottom, top)

    ax = axes[0]
    show_scene(ax)
    ax.set_title("scene (RGB)", fontsize=10)

    ax = axes[1]
    n = len(class_names)
    colors = [(*_hex(c), 1.0) for c in class_colors] + [(0, 0, 0, 0)] * (256 - n)
    cmap = ListedColormap(colors)
    ax.set_facecolor("white")
    ax.imshow(classes, cmap=cmap, vmin=-0.5, vmax=255.5, extent=extent, interpolation="nearest")
    labels = list(class_labels) if class_labels is not None else list(class_names)
    handles = [Patch(facecolor=class_colors[i], edgecolor="k", linewidth=0.3, label=labels[i]) for i in range(n)]
    ax.legend(handles=handles, loc="lower right", fontsize=8, framealpha=0.85)
    ax.set_title("classes", fontsize=10)

    ax = axes[2]
    show_scene(ax)
    legend = []
    for layer in outlines:
        if layer.rings:
            ax.add_collection(LineCollection(layer.rings, colors=layer.color, linewidths=0.9))
        legend.append(Patch(facecolor="none", edgecolor=layer.color, label=f"{layer.label} ({layer.n_polygons})"))
    if legend:
        ax.legend(handles=legend, loc="lower right", fontsize=8, framealpha=0.85)
    ax.set_title(outline_title, fontsize=10)

    if flood is not None:
        ax = axes[3]
        show_scene(ax)
        fl = np.zeros((*flood.shape, 4), dtype=np.float32)
        fl[flood == 1] = (*_hex("#e31a1c"), 0.75)
        fb = flood_bounds or class_bounds
        ax.imshow(fl, extent=(fb[0], fb[2], fb[1], fb[3]), interpolation="nearest")
        ax.set_title("flooded (red)", fontsize=10)

    for ax in axes:
        ax.set_aspect("equal")
        ax.tick_params(labelsize=6)
        ax.ticklabel_format(useOffset=False, style="plain")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    tmp = uri + ".tmp"
    with U.open_file(tmp, "wb") as f:
        f.write(buf.getvalue())
    U.rename(tmp, uri)
    return uri


def quicklook_pixel_m2(bounds: tuple[float, float, float, float], shape: tuple[int, int], geographic: bool) -> float:
    """Ground area of one quicklook pixel, m² (geographic: at the centre latitude)."""
    left, bottom, right, top = bounds
    h, w = shape
    dx, dy = (right - left) / max(w, 1), (top - bottom) / max(h, 1)
    if not geographic:
        return dx * dy
    lat = math.radians((top + bottom) / 2)
    return (dx * 111_320.0 * math.cos(lat)) * (dy * 111_320.0)
