"""Stitch: class probabilities (probs.zarr) to a class map and a confidence map (COGs).

For every chunk of ``probs.zarr`` ``(class, y, x)``::

    classes    = argmax_c probs[c]                 (uint8; ties go to the lower class id)
    confidence = round(100 * max_c probs[c])       (uint8, percent)
    both       = 255 where valid.zarr is False or a probability is not finite

Chunks are read, reduced and written one at a time, so memory does not grow with the scene.
Outputs (``out_dir``): ``classes.tif`` (COG, nodata 255; inside the TIFF: colour table, class names
and colours as tags, ``CLASS_<id>=name`` band items and, with GDAL >= 3.12 at hand, a raster
attribute table; beside it: ``classes.qml`` QGIS legend and ``classes.tif.aux.xml`` GDAL category
names for readers older than GDAL 3.12), ``confidence.tif``
(COG, nodata 255) and, on request, ``probs.tif`` (COG uint8, one band per class, percent,
band scale 0.01 so GDAL reads probabilities).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import numpy as np

from unetgeo import __version__
from unetgeo.errors import InputError
from unetgeo.grid import Grid, iter_tile_windows, n_tiles
from unetgeo.io import uri as U
from unetgeo.io.cog import (
    CogWriter,
    class_raster_tags,
    default_class_colors,
    hex_to_rgba,
    write_class_sidecars,
)
from unetgeo.io.store import check_same_grid, open_store, read_window, store_grid
from unetgeo.progress import progress_bar

log = logging.getLogger(__name__)

NODATA = 255


@dataclass(frozen=True)
class StitchResult:
    """What :func:`stitch` wrote.

    Attributes:
        classes_uri: ``out_dir/classes.tif``.
        confidence_uri: ``out_dir/confidence.tif``.
        probs_tif_uri: ``out_dir/probs.tif`` or None.
        class_names: class names in id order.
        seconds: wall time.
        sidecars: ``classes.qml`` and ``classes.tif.aux.xml``.
        class_pixels: valid pixels per class name.
        nodata_pixels: pixels set to 255.
    """

    classes_uri: str
    confidence_uri: str
    probs_tif_uri: str | None
    class_names: list[str]
    seconds: float
    sidecars: list[str] = field(default_factory=list)
    class_pixels: dict[str, int] = field(default_factory=dict)
    nodata_pixels: int = 0


def reduce_probs(probs: np.ndarray, valid: np.ndarray, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Class ids and confidence of one chunk.

    Args:
        probs: ``(n_classes, h, w)`` probabilities (float, or integers that ``scale`` maps to 0–1).
        valid: ``(h, w)`` bool; False pixels become 255 in both outputs.
        scale: multiplier that turns stored values into probabilities (1/255 for uint8 stores).

    Returns:
        ``(classes (h, w) uint8, confidence (h, w) uint8 percent)``.
    """
    ok = np.asarray(valid, dtype=bool).copy()
    if probs.dtype.kind == "f":
        ok &= np.isfinite(probs).all(axis=0)
    classes = np.argmax(probs, axis=0).astype(np.uint8)
    pmax = np.where(ok, probs.max(axis=0).astype(np.float32) * np.float32(scale), 0.0)
    conf = np.clip(np.rint(pmax * 100.0), 0, 100).astype(np.uint8)
    classes[~ok] = NODATA
    conf[~ok] = NODATA
    return classes, conf


def _probs_scale(attrs: dict, dtype: np.dtype, uri: str) -> float:
    if np.dtype(dtype).kind == "f":
        return 1.0
    if "probs_scale" in attrs:
        return float(attrs["probs_scale"])
    if np.dtype(dtype) == np.uint8:
        return 1.0 / 255.0
    raise InputError(f"{uri}: probabilities stored as {dtype} without a 'probs_scale' attribute; write float16 or uint8 probs")


def _block_px(chunk_px: int) -> int:
    """GeoTIFF tile side for a store chunk side: the chunk itself when it is a valid tile size."""
    return chunk_px if chunk_px % 16 == 0 and 64 <= chunk_px <= 2048 else 512


def stitch(
    probs_uri: str,
    valid_uri: str,
    out_dir: str,
    *,
    write_probs: bool = False,
    progress: bool = False,
) -> StitchResult:
    """Turn ``probs.zarr`` into ``classes.tif`` and ``confidence.tif`` COGs, chunk by chunk.

    Args:
        probs_uri: ``(class, y, x)`` Zarr store of probabilities (float16, or uint8 / 255).
        valid_uri: ``(y, x)`` bool Zarr store on the same grid.
        out_dir: output folder (path or URL).
        write_probs: also write ``probs.tif`` (uint8 percent, one band per class).
        progress: show a progress bar.

    Returns:
        :class:`StitchResult`.

    Raises:
        StoreError: a store is missing or incomplete.
        GridMismatchError: the stores are not on the same grid.
        InputError: the probabilities store is not ``(class, y, x)`` or has more than 255 classes.
    """
    t0 = time.perf_counter()
    probs = open_store(probs_uri)
    valid = open_store(valid_uri)
    check_same_grid(probs, valid, probs_uri, valid_uri)
    if probs.ndim != 3 or valid.ndim != 2:
        raise InputError(
            f"{probs_uri}: expected probs (class, y, x) and valid (y, x), got shapes {probs.shape} and {valid.shape}; "
            "pass the probs.zarr written by predict and the valid.zarr written by tile"
        )
    attrs = dict(probs.attrs)
    grid = store_grid(probs)
    names, colors = _class_names_colors(attrs, int(probs.shape[0]), probs_uri)
    scale = _probs_scale(attrs, probs.dtype, probs_uri)
    U.makedirs(out_dir)
    uris = [U.join(out_dir, "classes.tif"), U.join(out_dir, "confidence.tif")]
    if write_probs:
        uris.append(U.join(out_dir, "probs.tif"))
    writers: list[CogWriter] = []
    try:
        writers.extend(_open_writers(uris, grid, names, colors, _common_tags(attrs), _block_px(int(probs.chunks[-1]))))
        counts = _reduce_chunks(probs, valid, scale, writers, progress)
        for w in writers:
            w.close()
    except BaseException:
        for w in writers:
            if not w.closed:
                w.abort()
        raise
    sidecars = write_class_sidecars(uris[0], names, colors)
    seconds = time.perf_counter() - t0
    log.info("stitched %s -> %s (%dx%d px, %d classes) in %.1f s",
             probs_uri, uris[0], grid.height, grid.width, len(names), seconds)
    return StitchResult(
        classes_uri=uris[0],
        confidence_uri=uris[1],
        probs_tif_uri=uris[2] if write_probs else None,
        class_names=names,
        seconds=seconds,
        sidecars=sidecars,
        class_pixels={n: int(counts[i]) for i, n in enumerate(names)},
        nodata_pixels=int(counts[NODATA]),
    )


def _class_names_colors(attrs: dict, n_classes: int, probs_uri: str) -> tuple[list[str], list[str]]:
    """Class names and colours of the probs store (defaults ``class_<i>`` and tab10).

    Raises:
        InputError: more than 255 classes, or names / colours that do not match the bands.
    """
    if n_classes > 255:
        raise InputError(f"{probs_uri}: {n_classes} classes do not fit in uint8 with 255 as nodata; use at most 255")
    names = [str(n) for n in attrs.get("class_names") or [f"class_{i}" for i in range(n_classes)]]
    colors = [str(c) for c in attrs.get("class_colors") or default_class_colors(n_classes)]
    if len(names) != n_classes or len(colors) != n_classes:
        raise InputError(
            f"{probs_uri}: {n_classes} probability bands but {len(names)} class_names and {len(colors)} class_colors; "
            "re-run predict with a consistent model bundle"
        )
    return names, colors


def _common_tags(attrs: dict) -> dict[str, str]:
    """Dataset tags of every output: model, scene, source, version, config hash (missing ones left out)."""
    source = attrs.get("source") or {}
    scene_uri = source.get("uri") if isinstance(source, dict) else None
    tags = {
        "model_id": attrs.get("model_id"),
        "scene_id": PurePosixPath(str(scene_uri)).stem if scene_uri else None,
        "source_uri": scene_uri,
        "unetgeo_version": __version__,
        "config_hash": attrs.get("config_hash"),
    }
    return {k: str(v) for k, v in tags.items() if v is not None}


def _open_writers(uris: Sequence[str], grid: Grid, names: list[str], colors: list[str], tags: dict[str, str],
                  stage_px: int) -> list[CogWriter]:
    """COG writers of ``classes.tif``, ``confidence.tif`` and (a third URI) ``probs.tif``."""
    cmap: dict[int, tuple[int, ...]] = {i: hex_to_rgba(c) for i, c in enumerate(colors)}
    cmap[NODATA] = (0, 0, 0, 0)
    out: list[CogWriter] = []
    try:
        out.append(CogWriter(uris[0], grid, 1, "uint8", NODATA, resampling="mode", stage_block_px=stage_px,
                             band_names=["class"], colormap=cmap, tags=class_raster_tags(names, colors, **tags)))
        out.append(CogWriter(uris[1], grid, 1, "uint8", NODATA, resampling="average", stage_block_px=stage_px,
                             band_names=["confidence_percent"], tags=tags))
        if len(uris) > 2:
            out.append(CogWriter(uris[2], grid, len(names), "uint8", NODATA, resampling="average",
                                 stage_block_px=stage_px, band_names=names, scales=[0.01] * len(names),
                                 tags={**tags, "units": "percent"}))
    except BaseException:
        for w in out:
            w.abort()
        raise
    return out


def _reduce_chunks(probs: Any, valid: Any, scale: float, writers: Sequence[CogWriter], progress: bool) -> np.ndarray:
    """Reduce every chunk into the writers (classes, confidence[, probs]); returns pixel counts ``(256,)`` int64."""
    grid = store_grid(probs)
    chunk_px = int(probs.chunks[-1])
    counts = np.zeros(256, dtype=np.int64)
    bar = progress_bar(progress, n_tiles(grid.height, grid.width, chunk_px), "stitch")
    try:
        for win in iter_tile_windows(grid.height, grid.width, chunk_px):
            p = read_window(probs, win)
            cls, conf = reduce_probs(p, read_window(valid, win), scale)
            writers[0].write(win, cls)
            writers[1].write(win, conf)
            counts += np.bincount(cls.ravel(), minlength=256)
            if len(writers) > 2:
                pp = np.clip(np.rint(p.astype(np.float32) * np.float32(scale * 100.0)), 0, 100).astype(np.uint8)
                pp[:, cls == NODATA] = NODATA
                writers[2].write(win, pp)
            bar.update(1)
    finally:
        bar.close()
    return counts
