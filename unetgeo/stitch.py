"""Stitch: class probabilities (probs.zarr) to a class map and a confidence map (COGs).

For every chunk of ``probs.zarr`` ``(class, y, x)``::

    classes    = argmax_c probs[c]                 (uint8; ties go to the lower class id)
    confidence = round(100 * max_c probs[c])       (uint8, percent)
    both       = 255 where valid.zarr is False or a probability is not finite

Chunks are read, reduced and written one at a time, so memory does not grow with the scene.
Outputs (``out_dir``): ``classes.tif`` (COG, nodata 255, colour table, class names as tags,
``classes.qml`` QGIS legend, ``classes.tif.aux.xml`` GDAL category names), ``confidence.tif``
(COG, nodata 255) and, on request, ``probs.tif`` (COG uint8, one band per class, percent,
band scale 0.01 so GDAL reads probabilities).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import numpy as np

from unetgeo import __version__
from unetgeo.errors import InputError
from unetgeo.grid import iter_tile_windows, n_tiles
from unetgeo.io import uri as U
from unetgeo.io.cog import CogWriter, class_raster_tags, hex_to_rgba, write_class_sidecars
from unetgeo.io.store import check_same_grid, open_store, read_window, store_grid

log = logging.getLogger(__name__)

NODATA = 255
#: Colours for classes whose probs.zarr carries no ``class_colors`` (tab10).
DEFAULT_COLORS = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)


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
    n_classes = int(probs.shape[0])
    if n_classes > 255:
        raise InputError(f"{probs_uri}: {n_classes} classes do not fit in uint8 with 255 as nodata; use at most 255")
    names = [str(n) for n in attrs.get("class_names") or [f"class_{i}" for i in range(n_classes)]]
    colors = [str(c) for c in attrs.get("class_colors") or [DEFAULT_COLORS[i % 10] for i in range(n_classes)]]
    if len(names) != n_classes or len(colors) != n_classes:
        raise InputError(
            f"{probs_uri}: {n_classes} probability bands but {len(names)} class_names and {len(colors)} class_colors; "
            "re-run predict with a consistent model bundle"
        )
    scale = _probs_scale(attrs, probs.dtype, probs_uri)
    chunk_px = int(probs.chunks[-1])
    stage_px = _block_px(chunk_px)
    source = attrs.get("source") or {}
    scene_uri = source.get("uri") if isinstance(source, dict) else None
    scene_id = PurePosixPath(str(scene_uri)).stem if scene_uri else None
    model_id = attrs.get("model_id")
    common_tags = {
        "model_id": model_id,
        "scene_id": scene_id,
        "source_uri": scene_uri,
        "unetgeo_version": __version__,
        "config_hash": attrs.get("config_hash"),
    }

    U.makedirs(out_dir)
    classes_uri = U.join(out_dir, "classes.tif")
    confidence_uri = U.join(out_dir, "confidence.tif")
    probs_tif_uri = U.join(out_dir, "probs.tif") if write_probs else None
    cmap = {i: hex_to_rgba(c) for i, c in enumerate(colors)}
    cmap[NODATA] = (0, 0, 0, 0)

    writers: list[CogWriter] = []
    try:
        wc = CogWriter(
            classes_uri, grid, 1, "uint8", NODATA, resampling="mode", stage_block_px=stage_px,
            band_names=["class"], colormap=cmap, tags=class_raster_tags(names, colors, **common_tags),
        )
        writers.append(wc)
        wf = CogWriter(
            confidence_uri, grid, 1, "uint8", NODATA, resampling="average", stage_block_px=stage_px,
            band_names=["confidence_percent"], tags={k: str(v) for k, v in common_tags.items() if v is not None},
        )
        writers.append(wf)
        wp = None
        if probs_tif_uri:
            wp = CogWriter(
                probs_tif_uri, grid, n_classes, "uint8", NODATA, resampling="average", stage_block_px=stage_px,
                band_names=names, scales=[0.01] * n_classes,
                tags={**{k: str(v) for k, v in common_tags.items() if v is not None}, "units": "percent"},
            )
            writers.append(wp)

        counts = np.zeros(256, dtype=np.int64)
        wins = iter_tile_windows(grid.height, grid.width, chunk_px)
        if progress:
            from tqdm.auto import tqdm

            wins = tqdm(wins, total=n_tiles(grid.height, grid.width, chunk_px), desc="stitch", unit="chunk")
        for win in wins:
            p = read_window(probs, win)
            v = read_window(valid, win)
            cls, conf = reduce_probs(p, v, scale)
            wc.write(win, cls)
            wf.write(win, conf)
            counts += np.bincount(cls.ravel(), minlength=256)
            if wp is not None:
                pp = np.clip(np.rint(p.astype(np.float32) * np.float32(scale * 100.0)), 0, 100).astype(np.uint8)
                pp[:, cls == NODATA] = NODATA
                wp.write(win, pp)
        for w in writers:
            w.close()
    except BaseException:
        for w in writers:
            if not w.closed:
                w.abort()
        raise
    sidecars = write_class_sidecars(classes_uri, names, colors)
    seconds = time.perf_counter() - t0
    class_pixels = {n: int(counts[i]) for i, n in enumerate(names)}
    log.info(
        "stitched %s -> %s (%dx%d px, %d classes) in %.1f s",
        probs_uri, classes_uri, grid.height, grid.width, n_classes, seconds,
    )
    return StitchResult(
        classes_uri=classes_uri,
        confidence_uri=confidence_uri,
        probs_tif_uri=probs_tif_uri,
        class_names=names,
        seconds=seconds,
        sidecars=sidecars,
        class_pixels=class_pixels,
        nodata_pixels=int(counts[NODATA]),
    )
