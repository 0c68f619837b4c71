"""Report: ``RUN/summary.json`` and ``RUN/quicklook.png`` for one run.

Areas come from streaming histograms of the rasters (block by block), polygon counts from the
GeoPackage metadata, accuracy from :func:`unetgeo.evaluate.score_rasters` (a streaming confusion
matrix), and the quicklook from decimated reads. Nothing reads a raster at full size.

``summary.json`` keys (flat ones first, for scripts and flows):

- ``unetgeo_version``, ``created`` (UTC ISO 8601), ``run_dir``
- ``scene``: ``{uri, crs, epsg, height, width, res, bounds}``
- ``model``: ``{dir, model_id, arch, encoder, in_bands, metrics}`` (what model.json holds)
- ``config``: ``{name, hash, dump}`` (null without a config)
- ``class_names``; ``area_km2``: ``{class: km²}`` of the class raster; ``nodata_km2``
- ``polygon_counts``: ``{class: n}``; ``polygon_area_km2``: ``{class: km²}`` (after min_area)
- ``flooded_km2``, ``flood_polygon_count``, ``reference``: null without a flood run
- ``iou``: ``{class: IoU}``, ``miou``, ``accuracy`` (full evaluation dict): null without truth
- ``acquired``: acquisition date of the scene (``extra["acquired"]``, else a date tag of the scene
  file such as ``acquired`` or ``TIFFTAG_DATETIME``), null when unknown
- ``timings_s``: ``{stage: seconds, …, total}``; ``outputs``: ``[{name, kind, bytes}]``
- ``files``: the URIs of the inputs of the report (classes, polygons, flood, truth)
- any keys of ``write_report(extra=...)`` (e.g. the effective options and input checks of a run)
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import math
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from unetgeo import __version__
from unetgeo.area import AreaModel
from unetgeo.errors import ModelBundleError, UnetgeoError
from unetgeo.flood import FLOOD_CLASS_COLORS
from unetgeo.grid import iter_tile_windows
from unetgeo.io import uri as U
from unetgeo.io.cog import default_class_colors, read_class_info, read_tags
from unetgeo.io.quicklook import (
    list_outputs,
    quicklook_pixel_m2,
    read_class_map,
    read_outlines,
    read_scene_bands,
    write_json,
)
from unetgeo.io.scene import SceneReader, open_scene
from unetgeo.io.vector import layer_stats
from unetgeo.quicklook import acquisition_date, choose_rendering, render_quicklook, stretch_rgba

log = logging.getLogger(__name__)

QUICKLOOK_PX = 800  # long side of each decimated panel image
NODATA = 255


def raster_class_areas_m2(uri: str, block_px: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Pixel counts and areas (m²) of every value 0..255 of a uint8 class raster, streamed.

    Returns:
        ``(pixels (256,) int64, area_m2 (256,) float64)``; index 255 holds nodata (and masked pixels).
    """
    info = open_scene(uri)
    grid = info.grid
    area = AreaModel(grid)
    pixels = np.zeros(256, dtype=np.int64)
    area_m2 = np.zeros(256, dtype=np.float64)
    with SceneReader(uri) as r:
        for win in iter_tile_windows(grid.height, grid.width, block_px):
            data, valid = r.read(win, bands=[1])
            cls = np.where(valid, data[0], NODATA).astype(np.int64)
            cls = np.clip(cls, 0, NODATA)
            pixels += np.bincount(cls.ravel(), minlength=256)
            if area.geographic:
                rows = area.row_pixel_areas_m2(win.row_off, win.height)
                area_m2 += np.bincount(cls.ravel(), weights=np.repeat(rows, win.width), minlength=256)
    if not area.geographic:
        area_m2 = pixels * area.pixel_m2
    return pixels, area_m2


def _config_section(config: Any) -> dict | None:
    if config is None:
        return None
    if hasattr(config, "model_dump"):
        dump = config.model_dump(mode="json")
        h = config.config_hash() if hasattr(config, "config_hash") else None
    elif isinstance(config, Mapping):
        dump = dict(config)
        h = None
    else:
        return {"name": str(config), "hash": None, "dump": None}
    if h is None:
        h = hashlib.sha256(json.dumps(dump, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return {"name": dump.get("name"), "hash": h, "dump": dump}


def _model_section(model_dir: str | None) -> dict:
    out: dict[str, Any] = {"dir": model_dir}
    if not model_dir:
        return out
    from unetgeo.io.bundle import read_meta

    try:
        meta = read_meta(model_dir)
    except ModelBundleError as e:
        out["error"] = e.one_line()
        return out
    for k in ("model_id", "arch", "encoder", "encoder_depth", "in_bands", "tile_px", "metrics", "unetgeo_version"):
        if k in meta:
            out[k] = meta[k]
    return out


def _scene_section(scene_uri: str, classes_uri: str) -> dict:
    out: dict[str, Any] = {"uri": scene_uri}
    info = open_scene(classes_uri)
    g = info.grid
    from pyproj import CRS

    crs = CRS.from_user_input(g.crs_wkt)
    out.update(
        crs=crs.to_string(),
        epsg=crs.to_epsg(),
        height=g.height,
        width=g.width,
        res=list(g.res),
        bounds=list(g.bounds),
    )
    return out


def write_report(
    run_dir: str,
    *,
    scene_uri: str,
    model_dir: str | None,
    config: Any,
    timings: Mapping[str, float],
    classes_uri: str,
    polygons_uri: str | None,
    flood_uri: str | None = None,
    flood_polygons_uri: str | None = None,
    truth_uri: str | None = None,
    reference_uri: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict:
    """Write ``run_dir/summary.json`` and ``run_dir/quicklook.png``; returns the summary.

    Args:
        run_dir: the run folder (path or URL).
        scene_uri: the input scene (its RGB is the quicklook background).
        model_dir: the model bundle used (its model.json is summarised).
        config: the :class:`unetgeo.config.Config` (or a dict) of the run.
        timings: seconds per stage, e.g. ``{"tile": 1.2, "predict": 30.5, …}``.
        classes_uri: ``classes.tif`` from stitch.
        polygons_uri: ``polygons.gpkg`` from vectorize (or None).
        flood_uri: ``flood.tif`` (flood runs).
        flood_polygons_uri: ``flood.gpkg`` (flood runs).
        truth_uri: a truth class raster on the grid of ``classes_uri``: adds IoU / mIoU.
        reference_uri: the flood reference (recorded only).
        extra: JSON-able keys merged into the summary (they win over the computed ones).

    Raises:
        SceneReadError: the class raster cannot be read.
        GridMismatchError: the truth raster is on another grid.
    """
    t0 = time.perf_counter()
    U.makedirs(run_dir)
    summary = _class_summary(run_dir, scene_uri, model_dir, config, classes_uri)
    summary["reference"] = reference_uri
    summary["files"] = {"classes": classes_uri, "polygons": polygons_uri, "flood": flood_uri,
                        "flood_polygons": flood_polygons_uri, "truth": truth_uri}
    _add_polygons_and_flood(summary, polygons_uri, flood_uri, flood_polygons_uri)
    if truth_uri:
        from unetgeo.evaluate import score_rasters

        names = summary["class_names"]
        acc = score_rasters(classes_uri, truth_uri, len(names), class_names=names)
        summary.update(accuracy=acc, iou={n: acc["per_class"][n]["iou"] for n in names}, miou=acc["miou"])
    _write_quicklook(U.join(run_dir, "quicklook.png"), summary, scene_uri, config, extra,
                     {"classes": classes_uri, "polygons": polygons_uri, "flood": flood_uri,
                      "flood_polygons": flood_polygons_uri})
    summary.pop("_class_colors")
    timings_s = {k: float(v) for k, v in timings.items()}
    timings_s["report"] = time.perf_counter() - t0
    timings_s["total"] = float(sum(v for k, v in timings_s.items() if k != "total"))
    summary["timings_s"] = timings_s
    summary.update(dict(extra or {}))
    summary_uri = U.join(run_dir, "summary.json")
    outputs = [o for o in list_outputs(run_dir) if o["name"] != "summary.json"]
    summary["outputs"] = sorted([*outputs, {"name": "summary.json", "kind": "file", "bytes": None}],
                                key=lambda d: d["name"])
    write_json(summary_uri, summary)
    log.info("report %s: %s", summary_uri, {k: round(v, 4) for k, v in summary["area_km2"].items()})
    return summary


def _class_summary(run_dir: str, scene_uri: str, model_dir: str | None, config: Any, classes_uri: str) -> dict:
    """The summary's scene, model, config and class-area keys (others still null).

    ``_class_colors`` (a private key, dropped before writing) carries the class colours.
    """
    names, colors = read_class_info(classes_uri)
    pixels, area_m2 = raster_class_areas_m2(classes_uri)
    if names is None:
        n = int(np.flatnonzero(pixels[:NODATA]).max(initial=-1)) + 1
        names = [f"class_{i}" for i in range(max(n, 1))]
    if colors is None:
        colors = default_class_colors(len(names))
    return {
        "unetgeo_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "run_dir": run_dir,
        "scene": _scene_section(scene_uri, classes_uri),
        "model": _model_section(model_dir),
        "config": _config_section(config),
        "class_names": list(names),
        "area_km2": {n: float(area_m2[i]) / 1e6 for i, n in enumerate(names)},
        "nodata_km2": float(area_m2[NODATA]) / 1e6,
        "polygon_counts": None,
        "polygon_area_km2": None,
        "flooded_km2": None,
        "flood_polygon_count": None,
        "reference": None,
        "iou": None,
        "miou": None,
        "accuracy": None,
        "_class_colors": list(colors),
    }


def _add_polygons_and_flood(summary: dict, polygons_uri: str | None, flood_uri: str | None,
                            flood_polygons_uri: str | None) -> None:
    """Fill the polygon counts / areas (km²) and the flooded area (km²) and polygon count."""
    if polygons_uri:
        stats = layer_stats(polygons_uri)
        summary["polygon_counts"] = {k: int(v["count"]) for k, v in stats.items()}
        summary["polygon_area_km2"] = {k: v["area_m2"] / 1e6 for k, v in stats.items()}
    if flood_uri:
        _, farea = raster_class_areas_m2(flood_uri)
        summary["flooded_km2"] = float(farea[1]) / 1e6
        summary["flood_unknown_km2"] = float(farea[NODATA]) / 1e6
        summary["unknown_km2"] = summary["flood_unknown_km2"]  # neither dry nor water: nodata, clouds (SCL)
    if flood_polygons_uri:
        fstats = layer_stats(flood_polygons_uri)
        summary["flood_polygon_count"] = int(sum(v["count"] for k, v in fstats.items() if k == "flooded"))


def _write_quicklook(uri: str, summary: dict, scene_uri: str, config: Any, extra: Mapping[str, Any] | None,
                     files: Mapping[str, str | None]) -> None:
    """Read the decimated rasters and polygons (never full size) and draw ``quicklook.png``.

    The legend's polygon counts are the GeoPackage layers' feature counts (``summary``), not the
    number of outlines drawn (those smaller than a quicklook pixel are left out).
    """
    names, colors = summary["class_names"], summary["_class_colors"]
    classes_uri = str(files["classes"])
    classes_small, class_bounds = read_class_map(classes_uri, QUICKLOOK_PX)
    rgb, rgb_bounds, scene_title, acquired = _scene_image(scene_uri, config)
    summary["acquired"] = acquisition_date(extra or {}) or acquired
    grid = open_scene(classes_uri).grid
    min_px_m2 = quicklook_pixel_m2(class_bounds, classes_small.shape, AreaModel(grid).geographic)
    outlines, outline_title, counts = [], "polygons", {}
    if files["flood_polygons"]:
        outlines = read_outlines(str(files["flood_polygons"]), [("flooded", FLOOD_CLASS_COLORS[1])],
                                 bounds=class_bounds, min_area_m2=min_px_m2)
        outline_title, counts = "flood polygons", {"flooded": summary["flood_polygon_count"]}
    elif files["polygons"]:
        outlines = read_outlines(str(files["polygons"]), list(zip(names, colors, strict=True)), bounds=class_bounds,
                                 min_area_m2=min_px_m2)
        outline_title, counts = "class polygons", summary["polygon_counts"] or {}
    for layer in outlines:
        layer.n_polygons = int(counts.get(layer.label, layer.n_polygons))
    flood_small = flood_bounds = None
    if files["flood"]:
        flood_small, flood_bounds = read_class_map(str(files["flood"]), QUICKLOOK_PX)
    render_quicklook(
        uri, rgb=rgb, rgb_bounds=rgb_bounds, classes=classes_small, class_bounds=class_bounds,
        class_names=names, class_colors=colors,
        class_labels=[f"{n} ({_fmt_km2(summary['area_km2'][n])} km²)" for n in names], outlines=outlines,
        outline_title=outline_title, flood=flood_small, flood_bounds=flood_bounds, title=_title(summary, scene_uri),
        scene_title=scene_title, map_unit_m=_map_unit_m(grid),
    )


def _scene_image(scene_uri: str, config: Any) -> tuple[np.ndarray | None, tuple | None, str, str | None]:
    """``(rgba, bounds, panel title, acquisition date)`` of the scene, read as the run tiled it
    (``config.input``: bands, sensor, nodata, scale); ``(None, None, …)`` when it cannot be read."""
    from dataclasses import replace

    from unetgeo.bands import ReadOptions
    from unetgeo.tiling import detect_fill, scene_info

    spec = getattr(config, "input", None)
    read = ReadOptions.from_spec(spec) if spec is not None else None
    try:
        info = scene_info(scene_uri, read=read)
        if info.fill is None and (read is None or read.detect_nodata):
            info = replace(info, fill=detect_fill(info, "nearest")[0])
        rendering = choose_rendering(list(info.band_names), read.sensor if read else None)
        data, valid, bounds = read_scene_bands(info, rendering.bands, QUICKLOOK_PX)
        tags = read_tags(info.sources[0])
    except UnetgeoError as e:  # the map is still worth drawing without its background
        log.warning("quicklook without the scene: %s", e.one_line())
        return None, None, "scene (not readable)", None
    return stretch_rgba(data, valid, to_db=rendering.sar), bounds, f"scene: {rendering.title}", acquisition_date(tags)


def _map_unit_m(grid: Any) -> float:
    """Metres per map unit of ``grid``'s CRS at its centre (degrees: along the parallel)."""
    from pyproj import CRS

    crs = CRS.from_user_input(grid.crs_wkt)
    if crs.is_geographic:
        left, bottom, right, top = grid.bounds
        return 111_320.0 * math.cos(math.radians((top + bottom) / 2))
    return float(crs.axis_info[0].unit_conversion_factor) if crs.axis_info else 1.0


def _title(summary: dict, scene_uri: str) -> str:
    """Quicklook title: scene, acquisition date, model id, mIoU and flooded area when known."""
    title = f"{_basename(scene_uri)}"
    if summary.get("acquired"):
        title += f" — acquired {summary['acquired']}"
    if summary["model"].get("model_id"):
        title += f" — model {summary['model']['model_id']}"
    if summary["miou"] is not None:
        title += f" — mIoU {summary['miou']:.3f}"
    if summary["flooded_km2"] is not None:
        title += f" — flooded {_fmt_km2(summary['flooded_km2'])} km²"
    return title


def _fmt_km2(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}" if v >= 1 else f"{v:.3g}"


def _basename(uri: str) -> str:
    return str(uri).rstrip("/").rsplit("/", 1)[-1]


__all__ = ["raster_class_areas_m2", "write_report"]
