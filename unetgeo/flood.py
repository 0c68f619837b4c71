"""Flood difference: water now minus reference water, as a raster (COG) and as polygons.

``flood_raster`` compares the class raster of the current scene with a reference (class raster
of a dry scene, or a water mask) block by block; ``flood_polygons`` vectorizes its flooded pixels.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import replace
from typing import Any

import numpy as np

from unetgeo.errors import GridMismatchError, InputError
from unetgeo.grid import Grid, iter_tile_windows, same_grid
from unetgeo.io.cog import (
    CogWriter,
    class_raster_tags,
    hex_to_rgba,
    read_tags,
    write_class_sidecars,
)
from unetgeo.io.scene import SceneReader, crs_equal, open_scene
from unetgeo.io.stack import StackReader
from unetgeo.stac import SCL_UNKNOWN_CLASSES
from unetgeo.vectorize import NODATA, VectorizeResult, vectorize

log = logging.getLogger(__name__)

FLOOD_CLASS_NAMES = ("dry", "flooded")
FLOOD_CLASS_COLORS = ("#f0f0f0", "#e31a1c")


def flood_pixels(
    now: np.ndarray,
    now_valid: np.ndarray,
    before: np.ndarray,
    before_valid: np.ndarray,
    water_class_id: int,
    reference_is_mask: bool = False,
    unknown_class_ids: Sequence[int] = (),
) -> np.ndarray:
    """Flood map of one window.

    Args:
        now: ``(h, w)`` class ids of the current scene (255 nodata).
        now_valid: ``(h, w)`` bool validity of ``now``.
        before: ``(h, w)`` reference: class ids (255 nodata), or a water mask (nonzero = water).
        before_valid: ``(h, w)`` bool validity of ``before``.
        water_class_id: the water class id.
        reference_is_mask: ``before`` is a water mask rather than class ids.
        unknown_class_ids: classes that are neither dry nor water (``cloud``): unknown (255) where
            the current scene or the reference class raster has them.

    Returns:
        ``(h, w)`` uint8: 1 water now and not water before, 0 otherwise, 255 where either is
        invalid or unknown.
    """
    valid = now_valid & before_valid & (now != NODATA)
    unknown = list(unknown_class_ids)
    if unknown:
        valid &= ~np.isin(now, unknown)
    if reference_is_mask:
        water_before = before != 0
    else:
        valid &= before != NODATA
        if unknown:
            valid &= ~np.isin(before, unknown)
        water_before = before == water_class_id
    flooded = (now == water_class_id) & ~water_before
    return np.where(valid, flooded.astype(np.uint8), np.uint8(NODATA)).astype(np.uint8)


def flood_raster(
    classes_uri: str,
    reference_uri: str,
    out_uri: str,
    *,
    water_class_id: int,
    reference_is_mask: bool = False,
    block_px: int = 1024,
    unknown_uri: str | None = None,
    unknown_classes: Sequence[int] | None = None,
    unknown_class_ids: Sequence[int] = (),
) -> str:
    """Flood difference raster (COG uint8: 1 flooded, 0 not flooded, 255 nodata / unknown), block by block.

    Args:
        classes_uri: class raster of the current scene.
        reference_uri: class raster of the reference (dry) scene, or a water mask
            (``reference_is_mask=True``: nonzero = water, its nodata / mask = unknown), same grid.
        out_uri: output COG (``flood.tif``); ``flood.qml`` and ``flood.tif.aux.xml`` sidecars too.
        water_class_id: id of the water class in ``classes_uri`` (and in the reference classes).
        reference_is_mask: see ``reference_uri``.
        block_px: window side in pixels.
        unknown_uri: a class raster of pixels that are neither dry nor water (Sentinel-2 SCL), on
            its own grid over the same extent (20 m beside 10 m classes), read window by window
            resampled nearest onto the classes grid; 255 where it holds ``unknown_classes`` or no data.
        unknown_classes: the values of ``unknown_uri`` that are unknown (None: the SCL's
            :data:`unetgeo.stac.SCL_UNKNOWN_CLASSES`: no data, cloud shadow, clouds, cirrus, snow).
        unknown_class_ids: the model's classes that are unknown in the flood map (its ``cloud``
            class): 255 where the scene or the reference has them, never dry, never flooded.

    Returns:
        ``out_uri``.

    Raises:
        GridMismatchError: the reference is not on the grid of the class raster, or the unknown
            raster has another CRS or extent.
        InputError: ``water_class_id`` is not a valid class id.
    """
    t0 = time.perf_counter()
    if not 0 <= int(water_class_id) < NODATA:
        raise InputError(f"water_class_id={water_class_id} must be a class id in 0..254")
    ci = open_scene(classes_uri)
    ri = open_scene(reference_uri)
    same_grid(ci.grid, ri.grid, classes_uri, reference_uri, crs_equal=crs_equal)
    grid = ci.grid
    unknown = unknown_reader(unknown_uri, grid, classes_uri) if unknown_uri else None
    classes = tuple(SCL_UNKNOWN_CLASSES if unknown_classes is None else unknown_classes)
    tags = read_tags(classes_uri)
    cmap = {i: hex_to_rgba(c) for i, c in enumerate(FLOOD_CLASS_COLORS)}
    cmap[NODATA] = (0, 0, 0, 0)
    extra = {"water_class_id": int(water_class_id), "reference_uri": reference_uri,
             "scene_id": tags.get("scene_id"), "model_id": tags.get("model_id")}
    if unknown_uri:
        extra.update(unknown_uri=unknown_uri, unknown_classes=list(classes))
    if unknown_class_ids:
        extra.update(unknown_class_ids=[int(i) for i in unknown_class_ids])
    with SceneReader(classes_uri) as cr, SceneReader(reference_uri) as rr, unknown or nullcontext(), CogWriter(
        out_uri, grid, 1, "uint8", NODATA, resampling="mode", band_names=["flooded"], colormap=cmap,
        tags=class_raster_tags(FLOOD_CLASS_NAMES, FLOOD_CLASS_COLORS, **extra),
    ) as w:
        for win in iter_tile_windows(grid.height, grid.width, block_px):
            now, now_valid = cr.read(win, bands=[1])
            before, before_valid = rr.read(win, bands=[1])
            flood = flood_pixels(now[0], now_valid, before[0], before_valid, int(water_class_id), reference_is_mask,
                                 unknown_class_ids)
            if unknown is not None:
                values, known = unknown.read(win)
                flood[~known | np.isin(values[0], classes)] = NODATA
            w.write(win, flood)
    write_class_sidecars(out_uri, FLOOD_CLASS_NAMES, FLOOD_CLASS_COLORS)
    log.info("flood raster %s (reference %s) in %.1f s", out_uri, reference_uri, time.perf_counter() - t0)
    return out_uri


def unknown_reader(unknown_uri: str, grid: Grid, classes_uri: str) -> StackReader:
    """A nearest-neighbour reader of ``unknown_uri``'s first band on ``grid`` (the classes grid),
    window by window; the raster may have another resolution but must cover the same extent.

    Raises:
        SceneReadError: the raster cannot be read.
        GridMismatchError: another CRS, or an extent off by more than 1 % of a pixel of ``grid``.
    """
    info = open_scene(unknown_uri)
    b, rb, (ry, rx) = info.grid.bounds, grid.bounds, grid.res
    off_px = max(abs(b[0] - rb[0]) / rx, abs(b[2] - rb[2]) / rx, abs(b[1] - rb[1]) / ry, abs(b[3] - rb[3]) / ry)
    if not crs_equal(info.grid.crs_wkt, grid.crs_wkt) or off_px > 0.01:
        raise GridMismatchError(
            f"{unknown_uri}: the unknown mask (SCL) does not cover {classes_uri}'s extent {tuple(rb)} in its CRS "
            f"(extent {tuple(b)}); give the scene's own SCL, or cut it with `gdalwarp -te {rb[0]} {rb[1]} {rb[2]} {rb[3]}`"
        )
    first = replace(info, indexes=(1,), count=1, band_names=info.band_names[:1])
    return StackReader(replace(first, grid=grid, members=(first,)), resampling="nearest")


def flood_polygons(flood_uri: str, out_uri: str, **kwargs: Any) -> VectorizeResult:
    """Polygons of the flooded pixels of :func:`flood_raster`'s output (layer ``flooded``).

    ``kwargs`` go to :func:`vectorize` (``min_area_m2``, ``simplify_m``, ``shapefile``, …).
    """
    return vectorize(flood_uri, out_uri, class_names=list(FLOOD_CLASS_NAMES), keep_classes=[1], **kwargs)


__all__ = ["FLOOD_CLASS_COLORS", "FLOOD_CLASS_NAMES", "flood_pixels", "flood_polygons", "flood_raster",
           "unknown_reader"]
