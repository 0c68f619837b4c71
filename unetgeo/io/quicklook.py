"""Report inputs and outputs: decimated reads for the quicklook, and the JSON summary.

The drawing itself is :func:`unetgeo.quicklook.render_quicklook`; its PNG is written by
:func:`unetgeo.io.images.save_figure`.

Every raster is read *decimated* (``out_shape`` reads that use the COG overviews), never at full
resolution, and polygons are read through GDAL filters (area, bbox, feature cap), so a quicklook of
a 100k x 100k scene costs a few megabytes.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from unetgeo.io import uri as U
from unetgeo.io.cog import read_decimated
from unetgeo.io.scene import SceneInfo, open_scene

log = logging.getLogger(__name__)

def write_json(uri: str, obj: Any) -> str:
    """Write ``obj`` as indented UTF-8 JSON atomically (:func:`unetgeo.io.uri.write_atomic`); NaN is refused."""
    return U.write_atomic(uri, json.dumps(obj, indent=2, allow_nan=False, ensure_ascii=False))


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


def read_scene_bands(info: SceneInfo, positions: Sequence[int], max_px: int = 800
                     ) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float, float]]:
    """Decimated bands of a scene or band stack, read from overviews (never at full resolution).

    Args:
        info: the scene as tiled (:func:`unetgeo.tiling.scene_info`: band selection, nodata, radiometry).
        positions: 0-based positions of the bands to read, in ``info``'s band order.
        max_px: long side of the result.

    Returns:
        ``(data (len(positions), h, w) float32 physical values (scale and offset applied),
        valid (h, w) bool, bounds (left, bottom, right, top))``.
    """
    from unetgeo.bands import apply_radiometry, fill_mask

    shape = decimated_shape(info.grid.height, info.grid.width, max_px)
    members = info.members or (info,)
    owners = [(j, k) for j, m in enumerate(members) for k in (m.read_indexes or range(1, m.count + 1))]
    data = np.zeros((len(positions), *shape), dtype=np.float32)
    valid = np.ones(shape, dtype=bool)
    for j, m in enumerate(members):
        mine = [(i, owners[p][1]) for i, p in enumerate(positions) if owners[p][0] == j]
        if mine:
            d, v, _ = read_decimated(m.uri, shape, bands=[k for _, k in mine], resampling="nearest")
            data[[i for i, _ in mine]] = d
            valid &= v if info.nodata_source != "none" else True
    for fill in (info.nodata if info.nodata_source == "given" else None, info.fill):
        if fill is not None and not np.isnan(fill):
            valid &= ~fill_mask(data, np.float32(fill))
    sc, of = info.radiometry
    data = apply_radiometry(data, [sc[p] for p in positions], [of[p] for p in positions]).astype(np.float32)
    return data, valid & np.isfinite(data).all(axis=0), info.grid.bounds


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


def quicklook_pixel_m2(bounds: tuple[float, float, float, float], shape: tuple[int, int], geographic: bool) -> float:
    """Ground area of one quicklook pixel, m² (geographic: at the centre latitude)."""
    left, bottom, right, top = bounds
    h, w = shape
    dx, dy = (right - left) / max(w, 1), (top - bottom) / max(h, 1)
    if not geographic:
        return dx * dy
    lat = math.radians((top + bottom) / 2)
    return (dx * 111_320.0 * math.cos(lat)) * (dy * 111_320.0)
