"""Stage ``tile``: a GeoTIFF scene into a chunked Zarr store plus a valid-pixel mask.

One pass over the scene, chunk by chunk, in parallel on a Dask cluster. Each task reads one
chunk-aligned window (all bands), writes it to ``tiles.zarr`` and its valid mask to
``valid.zarr``, and returns small per-band statistics that the driver merges as results
arrive (mean, std, 2nd/98th percentiles over valid pixels) — no second read of the scene.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

import unetgeo
from unetgeo.grid import Grid, Window, iter_tile_windows, n_tiles
from unetgeo.io import uri as U
from unetgeo.io.scene import SceneReader, open_scene, sha256_of
from unetgeo.io.store import ChunkedStoreWriter

log = logging.getLogger(__name__)

_SKETCH_POINTS = 201  # quantiles kept per chunk for float data
_SKETCH_MAX = 8192  # the merged float sketch is compressed back to this many points


@dataclass(frozen=True)
class TileResult:
    """What :func:`make_tiles` wrote."""

    tiles_uri: str
    valid_uri: str
    grid: Grid
    band_names: tuple[str, ...]
    stats: dict[str, dict[str, float]]
    n_chunks: int
    n_written: int
    seconds: float


# --------------------------------------------------------------------------------------------
# streaming per-band statistics
# --------------------------------------------------------------------------------------------
def chunk_stats(data: np.ndarray, valid: np.ndarray) -> dict[str, Any]:
    """Mergeable statistics of one chunk over its valid pixels.

    Args:
        data: ``(bands, h, w)`` any numeric dtype.
        valid: ``(h, w)`` bool.

    Returns:
        ``{"n", "sum", "sumsq"}`` float64 per band, plus either exact value histograms
        (``"hist"``: per band ``(values, counts)``, integer dtypes of ≤ 16 bits, from which the
        moments are derived exactly) or a quantile sketch (``"sketch"``: per band
        ``(values, weights)``) for other dtypes.
    """
    nb = data.shape[0]
    all_valid = bool(valid.all())
    n_valid = int(valid.size if all_valid else valid.sum())
    out: dict[str, Any] = {"n": np.full(nb, n_valid, dtype=np.float64)}
    if data.dtype.kind in "ui" and data.dtype.itemsize <= 2:
        offset = 0 if data.dtype.kind == "u" else 1 << (8 * data.dtype.itemsize - 1)
        hists, sums, sumsqs = [], [], []
        for b in range(nb):
            band = data[b].ravel() if all_valid else data[b][valid]
            counts = np.bincount(band if offset == 0 else band.astype(np.int32) + offset)
            nz = np.flatnonzero(counts)
            vals = (nz - offset).astype(np.int64)
            cnt = counts[nz].astype(np.int64)
            vf = vals.astype(np.float64)
            sums.append(float(np.dot(vf, cnt)))
            sumsqs.append(float(np.dot(vf * vf, cnt)))
            hists.append((vals, cnt))
        out.update(sum=np.array(sums), sumsq=np.array(sumsqs), hist=hists)
        return out
    v = (data.reshape(nb, -1) if all_valid else data[:, valid]).astype(np.float64)
    out.update(sum=v.sum(axis=1), sumsq=np.square(v).sum(axis=1))
    qs = (np.arange(_SKETCH_POINTS) + 0.5) / _SKETCH_POINTS  # each point stands for n/K values
    out["sketch"] = [
        (np.quantile(v[b], qs), np.full(_SKETCH_POINTS, n_valid / _SKETCH_POINTS)) if n_valid else (np.zeros(0), np.zeros(0))
        for b in range(nb)
    ]
    return out


def _weighted_quantiles(values: np.ndarray, weights: np.ndarray, qs: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="stable")
    v, w = values[order], weights[order]
    cw = np.cumsum(w)
    if cw.size == 0 or cw[-1] <= 0:
        return np.full(qs.shape, np.nan)
    pos = (cw - 0.5 * w) / cw[-1]
    return np.interp(qs, pos, v)


class BandStatsAccumulator:
    """Merge :func:`chunk_stats` results into per-band mean, std, p2, p98 (bounded memory)."""

    def __init__(self, n_bands: int):
        self.n = np.zeros(n_bands)
        self.sum = np.zeros(n_bands)
        self.sumsq = np.zeros(n_bands)
        self.hist: list[dict[int, int]] | None = None
        self.hist_arr: list[tuple[np.ndarray, np.ndarray]] | None = None
        self.sketch: list[tuple[np.ndarray, np.ndarray]] | None = None

    def add(self, part: dict[str, Any]) -> None:
        """Merge one chunk's statistics."""
        self.n += part["n"]
        self.sum += part["sum"]
        self.sumsq += part["sumsq"]
        if "hist" in part:
            if self.hist_arr is None:
                self.hist_arr = [(np.zeros(0, np.int64), np.zeros(0, np.int64)) for _ in part["hist"]]
            merged = []
            for (va, ca), (vb, cb) in zip(self.hist_arr, part["hist"], strict=True):
                vals = np.concatenate([va, vb])
                cnts = np.concatenate([ca, cb])
                u, inv = np.unique(vals, return_inverse=True)
                merged.append((u, np.bincount(inv, weights=cnts).astype(np.int64)))
            self.hist_arr = merged
        if "sketch" in part:
            if self.sketch is None:
                self.sketch = [(np.zeros(0), np.zeros(0)) for _ in part["sketch"]]
            merged = []
            for (va, wa), (vb, wb) in zip(self.sketch, part["sketch"], strict=True):
                vals, wts = np.concatenate([va, vb]), np.concatenate([wa, wb])
                if vals.size > _SKETCH_MAX:
                    qs = (np.arange(_SKETCH_MAX // 2) + 0.5) / (_SKETCH_MAX // 2)
                    vals = _weighted_quantiles(vals, wts, qs)
                    wts = np.full(qs.size, wts.sum() / qs.size)
                merged.append((vals, wts))
            self.sketch = merged

    def result(self, band_names: Sequence[str]) -> dict[str, dict[str, float]]:
        """``{band: {"mean", "std", "p2", "p98", "valid_pixels"}}``; NaN for a band without valid pixels."""
        out: dict[str, dict[str, float]] = {}
        for b, name in enumerate(band_names):
            n = self.n[b]
            mean = self.sum[b] / n if n else float("nan")
            var = max(self.sumsq[b] / n - mean * mean, 0.0) if n else float("nan")
            if self.hist_arr is not None:
                vals, cnts = self.hist_arr[b]
                p2, p98 = _weighted_quantiles(vals.astype(np.float64), cnts.astype(np.float64), np.array([0.02, 0.98]))
            elif self.sketch is not None:
                vals, wts = self.sketch[b]
                p2, p98 = _weighted_quantiles(vals, wts, np.array([0.02, 0.98]))
            else:
                p2 = p98 = float("nan")
            out[name] = {
                "mean": float(mean),
                "std": float(np.sqrt(var)),
                "p2": float(p2),
                "p98": float(p98),
                "valid_pixels": int(n),
            }
        return out


# --------------------------------------------------------------------------------------------
# the stage
# --------------------------------------------------------------------------------------------
_READERS: dict[str, SceneReader] = {}
# Slows each chunk down so the resume test can kill a run part-way (tests only; 0 = off).
_TEST_DELAY_S = float(os.environ.get("UNETGEO_TEST_SLOW_TILE_S", "0") or 0)


def _reader(scene_uri: str) -> SceneReader:
    r = _READERS.get(scene_uri)
    if r is None:
        r = _READERS.setdefault(scene_uri, SceneReader(scene_uri))
    return r


def _tile_one(win: Window, *, scene_uri: str, tiles: ChunkedStoreWriter, valid: ChunkedStoreWriter) -> dict[str, Any]:
    """Dask task: read one window, write its chunk and mask, return its statistics."""
    data, ok = _reader(scene_uri).read(win)
    if _TEST_DELAY_S:
        time.sleep(_TEST_DELAY_S)
    tiles.write(win, data)
    valid.write(win, ok)
    return chunk_stats(data, ok)


def make_tiles(
    scene_uri: str,
    out_uri: str,
    *,
    tile_px: int = 512,
    band_names: Sequence[str] | None = None,
    valid_uri: str | None = None,
    dask_address: str | None = None,
    progress: bool = False,
    config_hash: str = "",
) -> TileResult:
    """Tile ``scene_uri`` into ``out_uri`` (Zarr v3, ``(band, y, x)``) and ``valid_uri`` (``(y, x)`` bool).

    Args:
        scene_uri: GeoTIFF path or fsspec URL.
        out_uri: the tiles store to write (``RUN/tiles.zarr``).
        tile_px: chunk side T; chunks are ``(all bands, T, T)``.
        band_names: names of the bands in order (default: the file's descriptions, else ``b1..``).
        valid_uri: the valid-mask store (default: ``valid.zarr`` beside ``out_uri``).
        dask_address: scheduler of an existing Dask cluster; default a local threaded cluster.
        progress: show a progress bar.
        config_hash: hash of the config that asked for this run (recorded in the attributes).

    Returns:
        A :class:`TileResult`. Chunks already written by an interrupted run with the same inputs
        are not written again; a complete store for the same inputs is reused as it is.

    Raises:
        SceneReadError / InputError: the scene cannot be used (names the file and the problem).
    """
    t0 = time.perf_counter()
    info = open_scene(scene_uri, band_names)
    grid = info.grid
    if valid_uri is None:
        valid_uri = _sibling(out_uri, "valid.zarr")
    sha = sha256_of(scene_uri)
    run_key = hashlib.sha256(
        json.dumps({"sha": sha, "tile_px": tile_px, "bands": list(info.band_names), "fmt": 1}).encode()
    ).hexdigest()[:16]
    base_attrs = {
        **grid.to_attrs(),
        "nodata": None if info.nodata is None or np.isnan(info.nodata) else info.nodata,
        "nodata_is_nan": bool(info.nodata is not None and np.isnan(info.nodata)),
        "mask_kind": info.mask_kind,
        "band_names": list(info.band_names),
        "source": {"uri": str(scene_uri), "sha256": sha},
        "unetgeo_version": unetgeo.__version__,
        "config_hash": config_hash,
        "tile_px": tile_px,
        "dtype": info.dtype,
    }
    tiles = ChunkedStoreWriter(
        out_uri,
        shape=(info.count, grid.height, grid.width),
        chunk_px=tile_px,
        dtype=info.dtype,
        fill_value=0,
        attrs=base_attrs,
        run_key=run_key,
    )
    valid = ChunkedStoreWriter(
        valid_uri,
        shape=(grid.height, grid.width),
        chunk_px=tile_px,
        dtype=bool,
        fill_value=False,
        attrs={k: base_attrs[k] for k in ("crs", "transform", "height", "width", "source", "unetgeo_version", "tile_px")},
        run_key=run_key,
    )
    total = n_tiles(grid.height, grid.width, tile_px)
    if tiles.already_complete and valid.already_complete:
        from unetgeo.io.store import open_store

        stats = dict(open_store(out_uri).attrs)["stats"]
        log.info("tile: %s already complete (%d chunks); nothing to do", out_uri, total)
        return TileResult(out_uri, valid_uri, grid, info.band_names, stats, total, 0, time.perf_counter() - t0)

    # Statistics need every chunk, so chunks written by an interrupted run are read back from the
    # store (cheap, local) rather than from the scene; only missing chunks touch the scene.
    acc = BandStatsAccumulator(info.count)
    todo = []
    redo_stats = []
    for win in iter_tile_windows(grid.height, grid.width, tile_px):
        if tiles.is_done(win) and valid.is_done(win):
            redo_stats.append(win)
        else:
            todo.append(win)
    bar = _progress(progress, total, f"tile {os.path.basename(str(scene_uri))}")
    for win in redo_stats:
        from unetgeo.io.store import read_window

        acc.add(chunk_stats(read_window(tiles.array, win), read_window(valid.array, win)))
        bar.update(1)

    from unetgeo.parallel import dask_client, map_bounded

    def on_result(part: dict[str, Any]) -> None:
        acc.add(part)
        bar.update(1)

    with dask_client(dask_address) as client:
        nthreads = sum(client.nthreads().values()) or 1
        map_bounded(
            client,
            _tile_one,
            todo,
            max_in_flight=2 * nthreads,
            on_result=on_result,
            scene_uri=scene_uri,
            tiles=tiles,
            valid=valid,
        )
    bar.close()
    stats = acc.result(info.band_names)
    tiles.publish({"stats": stats})
    valid.publish({})
    seconds = time.perf_counter() - t0
    log.info(
        "tile: %s -> %s: %dx%d px, %d bands, %d chunks (%d written, %d resumed) in %.1f s",
        scene_uri, out_uri, grid.height, grid.width, info.count, total, len(todo), len(redo_stats), seconds,
    )
    return TileResult(out_uri, valid_uri, grid, info.band_names, stats, total, len(todo), seconds)


def _sibling(uri: str, name: str) -> str:
    s = str(uri).rstrip("/")
    return (s.rsplit("/", 1)[0] + "/" + name) if "/" in s else name


def _progress(enabled: bool, total: int, desc: str) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="chunk", disable=not enabled, leave=False, dynamic_ncols=True)
