"""Stage ``tile``: a GeoTIFF scene into a chunked Zarr store plus a valid-pixel mask.

One pass over the scene, chunk by chunk, in parallel (local threads, or the workers of a Dask
cluster). Each task reads one chunk-aligned window (all bands), writes it to ``tiles.zarr``
and its valid mask to ``valid.zarr``, and returns small per-band statistics that the driver
merges as results arrive (mean, std, 2nd/98th percentiles over valid pixels) — no second read
of the scene. The scene may be one GeoTIFF or a stack of files (one per band, resolutions may
differ) read onto the grid of the finest.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

import unetgeo
from unetgeo.errors import InputError
from unetgeo.grid import Grid, Window, iter_tile_windows, n_tiles
from unetgeo.io import uri as U
from unetgeo.io.store import ChunkedStoreWriter, open_store, peek_attrs, read_window
from unetgeo.parallel import executor, map_bounded

if TYPE_CHECKING:  # unetgeo.io.scene (rasterio, ~0.2 s) is imported in make_tiles, beside the hashing
    from unetgeo.io.scene import SceneInfo, SceneReader, StackReader

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
            sums.append(float(np.dot(vals, cnt)))  # exact integer dot products (no BLAS threads)
            sumsqs.append(float(np.dot(vals * vals, cnt)))
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


_HIST_OFFSET = 1 << 15  # dense histograms cover int16 and uint16 (and uint8): index = value + offset
_HIST_SIZE = 3 << 15


class BandStatsAccumulator:
    """Merge :func:`chunk_stats` results into per-band mean, std, p2, p98 (bounded memory).

    Integer bands of ≤ 16 bits keep a dense value histogram (768 KiB per band), so their
    statistics are exact and independent of the merge order; other types keep sums and a
    bounded quantile sketch (merge in a fixed order for reproducible results).
    """

    def __init__(self, n_bands: int):
        self.n = np.zeros(n_bands)
        self.sum = np.zeros(n_bands)
        self.sumsq = np.zeros(n_bands)
        self.dense: np.ndarray | None = None  # (bands, _HIST_SIZE) int64
        self.sketch: list[tuple[np.ndarray, np.ndarray]] | None = None

    def add_hist(self, hist: Sequence[tuple[np.ndarray, np.ndarray]]) -> None:
        """Merge the exact histograms of one chunk (``chunk_stats(...)["hist"]``)."""
        if self.dense is None:
            self.dense = np.zeros((len(hist), _HIST_SIZE), np.int64)
        for b, (vals, cnts) in enumerate(hist):
            self.dense[b, vals + _HIST_OFFSET] += cnts  # vals are unique within a chunk

    def add(self, part: dict[str, Any]) -> None:
        """Merge one chunk's statistics."""
        self.n += part["n"]
        self.sum += part["sum"]
        self.sumsq += part["sumsq"]
        if "hist" in part:
            self.add_hist(part["hist"])
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
            if self.dense is not None:
                idx = np.flatnonzero(self.dense[b])
                cnts = self.dense[b, idx].astype(np.float64)
                vals = (idx - _HIST_OFFSET).astype(np.float64)
                n = float(cnts.sum())
                mean = float(np.dot(vals, cnts) / n) if n else float("nan")
                var = float(np.dot(np.square(vals - mean), cnts) / n) if n else float("nan")
                p2, p98 = _weighted_quantiles(vals, cnts, np.array([0.02, 0.98]))
            else:
                mean = self.sum[b] / n if n else float("nan")
                var = max(self.sumsq[b] / n - mean * mean, 0.0) if n else float("nan")
                if self.sketch is not None:
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


class _InOrder:
    """Feed chunk statistics to an accumulator in chunk order, whatever order they arrive in.

    Histograms are merged at once (exact, order-free); the small rest waits for its turn, so
    float sums and sketches come out the same for a clean, a resumed or a parallel run.
    """

    def __init__(self, acc: BandStatsAccumulator):
        self.acc = acc
        self.next = 0
        self.waiting: dict[int, dict[str, Any]] = {}

    def add(self, i: int, part: dict[str, Any]) -> None:
        if "hist" in part:
            self.acc.add_hist(part.pop("hist"))
        self.waiting[i] = part
        while self.next in self.waiting:
            self.acc.add(self.waiting.pop(self.next))
            self.next += 1


# --------------------------------------------------------------------------------------------
# the stage
# --------------------------------------------------------------------------------------------
_READERS: OrderedDict[tuple[tuple[str, ...], str], Any] = OrderedDict()
_READERS_LOCK = threading.Lock()
_READERS_MAX = 4  # open scenes kept per process (Dask workers serve several runs)
# Slows each chunk down so the resume test can kill a run part-way (tests only; 0 = off).
_TEST_DELAY_S = float(os.environ.get("UNETGEO_TEST_SLOW_TILE_S", "0") or 0)
_FORMAT = 2  # bump when the bytes written for the same input change
_LIST_SUFFIXES = (".txt", ".lst", ".list")


def _reader(info: SceneInfo, resampling: str) -> SceneReader | StackReader:
    """One reader per scene and process (readers are thread-safe; Dask workers build their own)."""
    from unetgeo.io.scene import SceneReader, StackReader

    key = (info.sources, resampling)
    with _READERS_LOCK:
        r = _READERS.get(key)
        if r is None:
            r = _READERS[key] = StackReader(info, resampling) if info.members else SceneReader(info.uri)
            while len(_READERS) > _READERS_MAX:
                _READERS.popitem(last=False)[1].close()
        else:
            _READERS.move_to_end(key)
    return r


def _release_reader(info: SceneInfo, resampling: str) -> None:
    """Close this process's reader of a scene (its files stay open otherwise)."""
    with _READERS_LOCK:
        r = _READERS.pop((info.sources, resampling), None)
    if r is not None:
        r.close()


def _tile_one(
    item: tuple[int, Window, bool],
    *,
    info: SceneInfo,
    resampling: str,
    tiles: ChunkedStoreWriter,
    valid: ChunkedStoreWriter,
) -> dict[str, Any]:
    """Task: read one window, write its chunk and mask, return its statistics.

    ``item`` is ``(chunk index, window, already written)``; a chunk written by an interrupted
    run is only read back from the store for its statistics.
    """
    _, win, written = item
    if written:
        data, ok = read_window(tiles.array, win), read_window(valid.array, win)
    else:
        data, ok = _reader(info, resampling).read(win)
        if _TEST_DELAY_S:
            time.sleep(_TEST_DELAY_S)
        valid.write(win, ok, mark=False)  # the tiles marker, written last, stands for both
        tiles.write(win, data)
    return chunk_stats(data, ok)


def scene_sources(scene_uri: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """The file(s) of a scene argument: one GeoTIFF, a band stack, or a list file.

    Accepts a path/URL, a sequence of them (a band stack, in band order), a comma-separated
    string of them, or a text file (``.txt``/``.lst``/``.list``) naming one file per line
    (blank lines and ``#`` comments skipped; relative names are relative to the list file).
    """
    if not isinstance(scene_uri, (str, os.PathLike)):
        return [str(u) for u in scene_uri]
    s = str(scene_uri)
    if s.lower().endswith(_LIST_SUFFIXES) and U.exists(s):
        with U.open_file(s, "rb") as f:
            lines = [ln.strip() for ln in f.read().decode("utf-8").splitlines()]
        base = s.rsplit("/", 1)[0] if "/" in s else ""
        out = []
        for ln in lines:
            if not ln or ln.startswith("#"):
                continue
            absolute = U.is_url(ln) or ln.startswith(("/", "file://")) or not base
            out.append(ln if absolute else U.join(base, ln))
        if not out:
            raise InputError(f"{s}: the list of scene files is empty; put one GeoTIFF path per line")
        return out
    if "," in s and not U.exists(s):
        return [p.strip() for p in s.split(",") if p.strip()]
    return [s]


def scene_info(scene_uri: str | os.PathLike | Sequence[str | os.PathLike], band_names: Sequence[str] | None = None) -> SceneInfo:
    """Open a scene argument as :func:`make_tiles` takes it (one file, a stack, a list file).

    Returns the :class:`~unetgeo.io.scene.SceneInfo` of the single file, or of the stack
    (:func:`~unetgeo.io.scene.open_stack`: finest grid, band names from the file stems).
    """
    from unetgeo.io.scene import open_scene, open_stack

    sources = scene_sources(scene_uri)
    return open_scene(sources[0], band_names) if len(sources) == 1 else open_stack(sources, band_names)


class _Hasher(threading.Thread):
    """sha256 of the source files, computed beside the tiling (and the imports) instead of before it."""

    def __init__(self, uris: Sequence[str]):
        super().__init__(name="unetgeo-sha256", daemon=True)
        self.uris = list(uris)
        self.digests: list[str] | None = None
        self.error: BaseException | None = None
        self._stop_event = threading.Event()

    def run(self) -> None:
        try:
            digests = [U.sha256_of(u, stop=self._stop_event) for u in self.uris]
            if all(d is not None for d in digests):
                self.digests = [str(d) for d in digests]
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread by result()
            self.error = e

    def cancel(self) -> None:
        """Stop hashing (the result is not needed)."""
        self._stop_event.set()

    def result(self) -> list[str]:
        self.join()
        if self.error is not None:
            raise self.error
        assert self.digests is not None
        return self.digests


def _combined_sha(digests: Sequence[str]) -> str:
    """The file's sha256, or for a stack the sha256 of its files' hex digests joined by newlines."""
    return digests[0] if len(digests) == 1 else hashlib.sha256("\n".join(digests).encode()).hexdigest()


def make_tiles(
    scene_uri: str | Sequence[str],
    out_uri: str,
    *,
    tile_px: int = 512,
    band_names: Sequence[str] | None = None,
    valid_uri: str | None = None,
    dask_address: str | None = None,
    progress: bool = False,
    config_hash: str = "",
    resampling: str = "bilinear",
) -> TileResult:
    """Tile a scene into ``out_uri`` (Zarr v3, ``(band, y, x)``) and ``valid_uri`` (``(y, x)`` bool).

    Args:
        scene_uri: GeoTIFF path or fsspec URL; or a band stack: a list of GeoTIFFs (e.g.
            Sentinel-2 ``B02 B03 B04 B08`` at 10 m and ``B11`` at 20 m) in band order, also as a
            comma-separated string or a ``.txt`` list file (see :func:`scene_sources`). A stack
            is tiled on the grid of its finest file; coarser files are resampled onto it.
        out_uri: the tiles store to write (``RUN/tiles.zarr``).
        tile_px: chunk side T; chunks are ``(all bands, T, T)``.
        band_names: names of the bands in order (default: the file's descriptions, else
            ``b1..``; for a stack the file stems).
        valid_uri: the valid-mask store (default: ``valid.zarr`` beside ``out_uri``).
        dask_address: scheduler of an existing Dask cluster; default: local threads.
        progress: show a progress bar.
        config_hash: hash of the config that asked for this run (recorded in the attributes).
        resampling: GDAL resampling of stack files coarser than the finest (default bilinear).

    Returns:
        A :class:`TileResult`. Chunks already written by an interrupted run with the same inputs
        are not written again; a complete store for the same inputs is reused as it is.

    Raises:
        SceneReadError / InputError: the scene cannot be used (names the file and the problem).
        GridMismatchError: files of a stack with different CRSs or extents (names the file).
    """
    t0 = time.perf_counter()
    sources = scene_sources(scene_uri)
    if tile_px <= 0:
        raise InputError(f"tile_px={tile_px} must be a positive number of pixels; use 512")
    # The content sha256 is recorded in the attributes. It is computed on its own thread from
    # the start, so it overlaps importing rasterio, the setup and the tiling itself.
    hasher = _Hasher(sources)
    hasher.start()
    try:
        return _make_tiles(sources, hasher, t0, out_uri, tile_px=tile_px, band_names=band_names,
                           valid_uri=valid_uri, dask_address=dask_address, progress=progress,
                           config_hash=config_hash, resampling=resampling)
    finally:
        hasher.cancel()  # no-op once it has finished; stops it after an error or a reused store


def _make_tiles(
    sources: list[str],
    hasher: _Hasher,
    t0: float,
    out_uri: str,
    *,
    tile_px: int,
    band_names: Sequence[str] | None,
    valid_uri: str | None,
    dask_address: str | None,
    progress: bool,
    config_hash: str,
    resampling: str,
) -> TileResult:
    info = scene_info(sources, band_names)
    if info.members:
        _reader(info, resampling)  # checks the resampling name before any work is started
    grid = info.grid
    if valid_uri is None:
        valid_uri = _sibling(out_uri, "valid.zarr")

    # The run key names the inputs cheaply (size + mtime/ETag of each file, and the settings), so
    # tiling starts at once; the content sha256 is recorded at publish. A complete store made
    # from a file with another mtime but the same sha256 is adopted rather than redone.
    settings = {"tile_px": tile_px, "bands": list(info.band_names), "fmt": _FORMAT,
                "resampling": resampling if info.members else None}
    settings_key = _key(settings)
    quick = [U.fingerprint(u) for u in sources]
    run_key = _key({"settings": settings_key, "files": quick})
    prev = peek_attrs(out_uri)
    if (prev and prev.get("complete") and prev.get("run_key") != run_key
            and prev.get("settings_key") == settings_key and (prev.get("source") or {}).get("sha256")):
        if _combined_sha(hasher.result()) == prev["source"]["sha256"]:
            run_key = str(prev["run_key"])

    nodata = None if info.nodata is None or np.isnan(info.nodata) else info.nodata
    source: dict[str, Any] = {"uri": str(sources[0]), "sha256": None}
    if info.members:
        source["files"] = [{"uri": u, "bands": m.count} for u, m in zip(sources, info.members, strict=True)]
    base_attrs = {
        **grid.to_attrs(),
        "nodata": nodata,
        "nodata_is_nan": bool(info.nodata is not None and np.isnan(info.nodata)),
        "mask_kind": info.mask_kind,
        "band_names": list(info.band_names),
        "source": source,
        "unetgeo_version": unetgeo.__version__,
        "config_hash": config_hash,
        "tile_px": tile_px,
        "dtype": info.dtype,
        "settings_key": settings_key,
    }
    if info.members:
        base_attrs["resampling"] = resampling
    valid_attrs = ("crs", "transform", "height", "width", "source", "unetgeo_version", "tile_px", "settings_key")

    def writers() -> tuple[ChunkedStoreWriter, ChunkedStoreWriter]:
        t = ChunkedStoreWriter(out_uri, shape=(info.count, grid.height, grid.width), chunk_px=tile_px,
                               dtype=info.dtype, fill_value=0, attrs=base_attrs, run_key=run_key)
        # fill True: all-valid chunks (most of them) are not stored at all, as Zarr itself does
        v = ChunkedStoreWriter(valid_uri, shape=(grid.height, grid.width), chunk_px=tile_px, dtype=bool,
                               fill_value=True, attrs={k: base_attrs[k] for k in valid_attrs}, run_key=run_key)
        return t, v

    tiles, valid = writers()
    total = n_tiles(grid.height, grid.width, tile_px)
    if tiles.already_complete and valid.already_complete:
        stats = dict(open_store(out_uri).attrs)["stats"]
        log.info("tile: %s already complete (%d chunks); nothing to do", out_uri, total)
        return TileResult(out_uri, valid_uri, grid, info.band_names, stats, total, 0, time.perf_counter() - t0)
    if tiles.already_complete or valid.already_complete:  # one of the pair lost: redo both
        U.remove(out_uri if tiles.already_complete else valid_uri)
        tiles, valid = writers()

    # Every chunk is one task, in chunk order: missing chunks are read from the scene and
    # written; chunks an interrupted run already wrote are read back from the store (cheap)
    # only for their statistics. Statistics are merged in chunk order as results arrive.
    pair_resumed = tiles.resumed and valid.resumed  # a lost valid.zarr.tmp voids the tiles markers
    items = [(i, win, pair_resumed and tiles.is_done(win))
             for i, win in enumerate(iter_tile_windows(grid.height, grid.width, tile_px))]
    n_resumed = sum(1 for it in items if it[2])
    acc = BandStatsAccumulator(info.count)
    merge = _InOrder(acc)
    bar = _progress(progress, total, f"tile {os.path.basename(str(sources[0]).rstrip('/'))}")

    def on_result(item: tuple[int, Window, bool], part: dict[str, Any]) -> None:
        merge.add(item[0], part)
        bar.update(1)

    try:
        with executor(dask_address) as ex:
            where = f"{ex.kind}, {ex.n_threads} threads"
            try:
                map_bounded(ex, _tile_one, items, max_in_flight=2 * ex.n_threads, on_result=on_result,
                            info=info, resampling=resampling, tiles=tiles, valid=valid)
            finally:
                ex.on_each_thread(lambda: _reader(info, resampling).close_thread())
    finally:
        bar.close()
        _release_reader(info, resampling)
    digests = hasher.result()
    source["sha256"] = _combined_sha(digests)
    if info.members:
        for f, d in zip(source["files"], digests, strict=True):
            f["sha256"] = d
    stats = acc.result(info.band_names)
    valid.publish({"source": source})  # the mask first: once tiles.zarr is visible, so is valid.zarr
    tiles.publish({"stats": stats, "source": source})
    seconds = time.perf_counter() - t0
    log.info(
        "tile: %s -> %s: %dx%d px, %d bands %s, %d chunks (%d written, %d resumed) in %.1f s (%s)",
        sources[0] if len(sources) == 1 else f"{len(sources)} files", out_uri, grid.height, grid.width,
        info.count, info.dtype, total, total - n_resumed, n_resumed, seconds, where,
    )
    return TileResult(out_uri, valid_uri, grid, info.band_names, stats, total, total - n_resumed, seconds)


def _key(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _sibling(uri: str, name: str) -> str:
    s = str(uri).rstrip("/")
    return (s.rsplit("/", 1)[0] + "/" + name) if "/" in s else name


class _NoProgress:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(enabled: bool, total: int, desc: str) -> Any:
    """A tqdm bar, or a silent stand-in (without importing tqdm) when disabled."""
    if not enabled:
        return _NoProgress()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="chunk", disable=not enabled, leave=False, dynamic_ncols=True)
