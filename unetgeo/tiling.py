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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

import unetgeo
from unetgeo.bands import (
    ReadOptions,
    apply_radiometry,
    canonical_names,
    fill_from_decimated,
    fill_mask,
    guess_sensor,
)
from unetgeo.errors import InputError
from unetgeo.grid import Grid, Window, iter_tile_windows, n_tiles
from unetgeo.guard import BandStatsAccumulator, InOrder, chunk_stats
from unetgeo.io import uri as U
from unetgeo.io.files import is_file
from unetgeo.io.store import ChunkedStoreWriter, open_store, peek_attrs, read_window
from unetgeo.parallel import executor, map_bounded
from unetgeo.progress import progress_bar

if TYPE_CHECKING:  # unetgeo.io.scene (rasterio, ~0.2 s) is imported in make_tiles, beside the hashing
    from unetgeo.io.scene import SceneInfo, SceneReader
    from unetgeo.io.stack import StackReader

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TileResult:
    """What :func:`make_tiles` wrote.

    Attributes:
        tiles_uri: the Zarr store of ``(band, y, x)`` chunks.
        valid_uri: its valid-pixel mask (``valid.zarr`` beside it by default).
        grid: the pixel grid of the tiles (the finest file's, for a band stack).
        band_names: band names in store order.
        stats: ``{band: {"mean", "std", "p2", "p98", "valid_pixels"}}`` over valid pixels.
        n_chunks: chunks in the store.
        n_written: chunks this call wrote (0 when a complete store was reused).
        seconds: wall time.
    """

    tiles_uri: str
    valid_uri: str
    grid: Grid
    band_names: tuple[str, ...]
    stats: dict[str, dict[str, float]]
    n_chunks: int
    n_written: int
    seconds: float


# --------------------------------------------------------------------------------------------
# the stage
# --------------------------------------------------------------------------------------------
_READERS: OrderedDict[tuple[tuple[str, ...], str], Any] = OrderedDict()
_READERS_LOCK = threading.Lock()
_READERS_MAX = 4  # open scenes kept per process (Dask workers serve several runs)
_FORMAT = 2  # bump when the bytes written for the same input change
_LIST_SUFFIXES = (".txt", ".lst", ".list")


def _reader(info: SceneInfo, resampling: str) -> SceneReader | StackReader:
    """One reader per scene and process (readers are thread-safe; Dask workers build their own)."""
    from unetgeo.io.scene import SceneReader
    from unetgeo.io.stack import StackReader

    key = _reader_key(info, resampling)
    with _READERS_LOCK:
        r = _READERS.get(key)
        if r is None:
            r = _READERS[key] = StackReader(info, resampling) if info.members else SceneReader.of(info)
            while len(_READERS) > _READERS_MAX:
                _READERS.popitem(last=False)[1].close()
        else:
            _READERS.move_to_end(key)
    return r


def _reader_key(info: SceneInfo, resampling: str) -> tuple:
    parts = info.members or (info,)
    return (info.sources, resampling, tuple((m.indexes, m.nodata_source, m.nodata) for m in parts))


def _release_reader(info: SceneInfo, resampling: str) -> None:
    """Close this process's reader of a scene (its files stay open otherwise)."""
    with _READERS_LOCK:
        r = _READERS.pop(_reader_key(info, resampling), None)
    if r is not None:
        r.close()


def _tile_one(
    item: tuple[int, Window, bool],
    *,
    info: SceneInfo,
    resampling: str,
    tiles: ChunkedStoreWriter,
    valid: ChunkedStoreWriter,
    on_chunk: Callable[[Window], None] | None = None,
) -> dict[str, Any]:
    """Task: read one window, write its chunk and mask, return its statistics.

    ``item`` is ``(chunk index, window, already written)``; a chunk written by an interrupted
    run is only read back from the store for its statistics. ``on_chunk(window)`` runs after the
    read and before the writes of every chunk that is written.
    """
    _, win, written = item
    if written:
        data, ok = read_window(tiles.array, win), read_window(valid.array, win)
    else:
        data, ok = _reader(info, resampling).read(win)
        if info.fill is not None:
            ok &= ~fill_mask(data, info.fill)
        data = apply_radiometry(data, *info.radiometry).astype(info.store_dtype, copy=False)
        if on_chunk is not None:
            on_chunk(win)
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


def scene_info(scene_uri: str | os.PathLike | Sequence[str | os.PathLike], band_names: Sequence[str] | None = None,
               read: ReadOptions | None = None) -> SceneInfo:
    """Open a scene argument as :func:`make_tiles` takes it (one file, a stack, a list file).

    Returns the :class:`~unetgeo.io.scene.SceneInfo` of the single file, or of the stack
    (:func:`~unetgeo.io.stack.open_stack`: finest grid, band names from the file stems),
    restricted to ``read.bands`` and with ``read``'s nodata, scale and offset (headers only).
    """
    from dataclasses import replace

    from unetgeo.io.scene import open_scene
    from unetgeo.io.stack import open_stack, select_bands, with_input_settings

    sources = scene_sources(scene_uri)
    info = open_scene(sources[0], band_names) if len(sources) == 1 else open_stack(sources, band_names)
    if read is None:
        return info
    generic = tuple(f"b{i + 1}" for i in range(info.count))
    if read.bands and info.band_names == generic and len(read.bands) == info.count and band_names is None \
            and not any(b.isdigit() or b.lower() in generic for b in read.bands):
        info = replace(info, band_names=tuple(read.bands))  # undescribed bands: --bands names them (as before)
    elif read.bands:
        info = select_bands(info, read.bands, read.sensor)
    return with_input_settings(info, nodata=read.nodata, scale=read.scale, offset=read.offset)


_DETECT_MAX_PX = 1024


def detect_fill(info: SceneInfo, resampling: str) -> tuple[float | None, float]:
    """``(fill value, share of the scene)`` of undeclared nodata, or ``(None, 0.0)``.

    A decimated read (at most 1024 px a side, nearest neighbour; GDAL uses overviews / JPEG2000
    resolution levels, so memory is bounded) is judged by :func:`unetgeo.bands.fill_from_decimated`.
    When a fill is found, every full-resolution pixel equal to it in all bands is masked while
    tiling. Only scenes without a declared nodata / mask (and no ``--nodata``) are examined.
    """
    if info.nodata_source != "file" or info.mask_kind not in ("none", "nan"):
        return None, 0.0
    g = info.grid
    f = max(1, -(-max(g.height, g.width) // _DETECT_MAX_PX))
    shape = (max(1, g.height // f), max(1, g.width // f))
    from unetgeo.io.scene import SceneReader
    from unetgeo.io.stack import StackReader

    # A reader of its own, closed at once: the per-process reader cache serves the chunk tasks
    # (on a Dask cluster they run in the workers, and this process keeps no scene open).
    with StackReader(info, resampling) if info.members else SceneReader.of(info) as r:
        dec = r.read_resampled(shape, resampling="nearest")
    return fill_from_decimated(dec, info.dtype)


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
    on_chunk: Callable[[Window], None] | None = None,
    read: ReadOptions | None = None,
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
        on_chunk: called with each chunk's window before it is written (a hook for progress
            reporting, or for tests that slow a run down to interrupt it); picklable for Dask.
        read: band selection, nodata, scale and offset (:class:`ReadOptions`). Only the selected
            bands are read. With a scale or offset (given, or the files' scale/offset tags, or a
            Sentinel-2 baseline ≥ 04.00 offset) the tiles hold the physical values
            ``DN * scale + offset`` as float32, so statistics and the model see them; the values
            used are recorded in the attributes (``radiometry``). Without a declared nodata, an
            undeclared fill (0 or the dtype maximum) is detected (:func:`detect_fill`), logged
            with its share and masked (``nodata_detected`` in the attributes).

    Returns:
        A :class:`TileResult`. Chunks already written by an interrupted run with the same inputs
        are not written again; a complete store for the same inputs is reused as it is.

    Raises:
        SceneReadError / InputError: the scene cannot be used (names the file and the problem).
        GridMismatchError: files of a stack with different CRSs or extents (names the file).
    """
    t0 = time.perf_counter()
    sources = scene_sources(scene_uri)
    if is_file(out_uri):
        raise InputError(f"{out_uri}: the output store is a file; give a folder path such as run/tiles.zarr")
    if tile_px <= 0:
        raise InputError(f"tile_px={tile_px} must be a positive number of pixels; use 512")
    # The content sha256 is recorded in the attributes. It is computed on its own thread from
    # the start, so it overlaps importing rasterio, the setup and the tiling itself.
    hasher = _Hasher(sources)
    hasher.start()
    try:
        return _make_tiles(sources, hasher, t0, out_uri, tile_px=tile_px, band_names=band_names,
                           valid_uri=valid_uri, dask_address=dask_address, progress=progress,
                           config_hash=config_hash, resampling=resampling, on_chunk=on_chunk,
                           read=read or ReadOptions())
    finally:
        hasher.cancel()  # no-op once it has finished; stops it after an error or a reused store


@dataclass
class _Plan:
    """What a tiling run writes: the scene, its stores' run key and attributes."""

    info: SceneInfo
    sources: list[str]
    out_uri: str
    valid_uri: str
    tile_px: int
    resampling: str
    run_key: str
    attrs: dict[str, Any]
    source: dict[str, Any]

    def writers(self) -> tuple[ChunkedStoreWriter, ChunkedStoreWriter]:
        """``(tiles, valid)`` writers of the two stores."""
        g, a = self.info.grid, self.attrs
        t = ChunkedStoreWriter(self.out_uri, shape=(self.info.count, g.height, g.width), chunk_px=self.tile_px,
                               dtype=self.info.store_dtype, fill_value=0, attrs=a, run_key=self.run_key)
        # fill True: all-valid chunks (most of them) are not stored at all, as Zarr itself does
        v = ChunkedStoreWriter(self.valid_uri, shape=(g.height, g.width), chunk_px=self.tile_px, dtype=bool,
                               fill_value=True, attrs={k: a[k] for k in _VALID_ATTRS}, run_key=self.run_key)
        return t, v


_VALID_ATTRS = ("crs", "transform", "height", "width", "source", "unetgeo_version", "tile_px", "settings_key")


def _run_key(info: SceneInfo, sources: list[str], hasher: _Hasher, out_uri: str, tile_px: int,
             resampling: str, read: ReadOptions) -> tuple[str, str]:
    """``(run key, settings key)`` of a run.

    The run key names the inputs cheaply (size + mtime/ETag of each file, and the settings), so
    tiling starts at once; the content sha256 is recorded at publish. A complete store made from a
    file with another mtime but the same sha256 is adopted rather than redone.
    """
    settings = {"tile_px": tile_px, "bands": list(info.band_names), "fmt": _FORMAT,
                "resampling": resampling if info.members else None,
                **({"read": read.key()} if read != ReadOptions() else {})}
    settings_key = _key(settings)
    run_key = _key({"settings": settings_key, "files": [U.fingerprint(u) for u in sources]})
    prev = peek_attrs(out_uri)
    if (prev and prev.get("complete") and prev.get("run_key") != run_key
            and prev.get("settings_key") == settings_key and (prev.get("source") or {}).get("sha256")):
        if _combined_sha(hasher.result()) == prev["source"]["sha256"]:
            run_key = str(prev["run_key"])
    return run_key, settings_key


def _plan(sources: list[str], hasher: _Hasher, out_uri: str, valid_uri: str | None, *, tile_px: int,
          band_names: Sequence[str] | None, config_hash: str, resampling: str, read: ReadOptions) -> _Plan:
    """Open the scene and settle the stores' run key and attributes."""
    info = scene_info(sources, band_names, read)
    if info.members:
        _reader(info, resampling)  # checks the resampling name before any work is started
    run_key, settings_key = _run_key(info, sources, hasher, out_uri, tile_px, resampling, read)
    info = _with_fill(info, resampling, read, out_uri)
    nodata = None if info.nodata is None or np.isnan(info.nodata) else info.nodata
    source: dict[str, Any] = {"uri": str(sources[0]), "sha256": None}
    if info.members:
        source["files"] = [{"uri": m.uri, "bands": m.count} for m in info.members]  # the files read, in band order
    attrs = {
        **info.grid.to_attrs(),
        "nodata": nodata,
        "nodata_is_nan": bool(info.nodata is not None and np.isnan(info.nodata)),
        "mask_kind": info.mask_kind,
        "band_names": list(info.band_names),
        "source": source,
        "unetgeo_version": unetgeo.__version__,
        "config_hash": config_hash,
        "tile_px": tile_px,
        "dtype": info.store_dtype,
        "settings_key": settings_key,
        **_band_attrs(info, read),
    }
    if info.members:
        attrs["resampling"] = resampling
    return _Plan(info, sources, out_uri, valid_uri or U.sibling(out_uri, "valid.zarr"), tile_px, resampling,
                 run_key, attrs, source)


def _with_fill(info: SceneInfo, resampling: str, read: ReadOptions, out_uri: str) -> SceneInfo:
    """``info`` with the undeclared nodata that :func:`detect_fill` finds (one warning when found)."""
    from dataclasses import replace

    if not read.detect_nodata:
        return info
    fill, share = detect_fill(info, resampling)
    if fill is None:
        return info
    log.warning("%s: no nodata is declared, but %.1f %% of the scene (connected to its edge) is %g in every band; "
                "masking those pixels as nodata (give --nodata none to keep them, or --nodata V)",
                info.uri, 100 * share, fill)
    return replace(info, fill=fill)


def _band_attrs(info: SceneInfo, read: ReadOptions) -> dict[str, Any]:
    """Attributes of the bands: sensor, canonical names, radiometry, nodata found."""
    names = list(info.band_names) + [d for d in info.descriptions if d]
    sensor = read.sensor or guess_sensor(names)
    sc, of = info.radiometry
    return {"sensor": sensor, "canonical_bands": canonical_names(list(info.band_names), sensor),
            "radiometry": {"scale": list(sc), "offset": list(of)},
            "nodata_detected": info.fill}


def _run_chunks(plan: _Plan, tiles: ChunkedStoreWriter, valid: ChunkedStoreWriter, *, dask_address: str | None,
                progress: bool, on_chunk: Callable[[Window], None] | None) -> tuple[BandStatsAccumulator, int, str]:
    """Tile every chunk: ``(merged statistics, chunks resumed, where it ran)``.

    Every chunk is one task, in chunk order: missing chunks are read from the scene and
    written; chunks an interrupted run already wrote are read back from the store (cheap)
    only for their statistics. Statistics are merged in chunk order as results arrive.
    """
    info, grid = plan.info, plan.info.grid
    pair_resumed = tiles.resumed and valid.resumed  # a lost valid.zarr.tmp voids the tiles markers
    items = [(i, win, pair_resumed and tiles.is_done(win))
             for i, win in enumerate(iter_tile_windows(grid.height, grid.width, plan.tile_px))]
    acc = BandStatsAccumulator(info.count)
    merge = InOrder(acc)
    bar = progress_bar(progress, len(items), f"tile {os.path.basename(str(plan.sources[0]).rstrip('/'))}")

    def on_result(item: tuple[int, Window, bool], part: dict[str, Any]) -> None:
        merge.add(item[0], part)
        bar.update(1)

    try:
        with executor(dask_address) as ex:
            where = f"{ex.kind}, {ex.n_threads} threads"
            try:
                map_bounded(ex, _tile_one, items, max_in_flight=2 * ex.n_threads, on_result=on_result,
                            info=info, resampling=plan.resampling, tiles=tiles, valid=valid, on_chunk=on_chunk)
            finally:
                ex.on_each_thread(lambda: _reader(info, plan.resampling).close_thread())
    finally:
        bar.close()
        _release_reader(info, plan.resampling)
    return acc, sum(1 for it in items if it[2]), where


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
    on_chunk: Callable[[Window], None] | None = None,
    read: ReadOptions,
) -> TileResult:
    plan = _plan(sources, hasher, out_uri, valid_uri, tile_px=tile_px, band_names=band_names,
                 config_hash=config_hash, resampling=resampling, read=read)
    info, grid = plan.info, plan.info.grid
    tiles, valid = plan.writers()
    total = n_tiles(grid.height, grid.width, tile_px)
    if tiles.already_complete and valid.already_complete:
        stats = dict(open_store(out_uri).attrs)["stats"]
        log.info("tile: %s already complete (%d chunks); nothing to do", out_uri, total)
        return TileResult(out_uri, plan.valid_uri, grid, info.band_names, stats, total, 0, time.perf_counter() - t0)
    if tiles.already_complete or valid.already_complete:  # one of the pair lost: redo both
        (valid if tiles.already_complete else tiles).release()
        U.remove(out_uri if tiles.already_complete else plan.valid_uri)
        tiles, valid = plan.writers()
    try:
        acc, n_resumed, where = _run_chunks(plan, tiles, valid, dask_address=dask_address, progress=progress,
                                            on_chunk=on_chunk)
        digests = hasher.result()
        plan.source["sha256"] = _combined_sha(digests)
        if info.members:
            by_uri = dict(zip(sources, digests, strict=True))
            for f in plan.source["files"]:
                f["sha256"] = by_uri.get(f["uri"])
        stats = acc.result(info.band_names)
        valid.publish({"source": plan.source})  # the mask first: once tiles.zarr is visible, so is valid.zarr
        tiles.publish({"stats": stats, "source": plan.source})
    finally:  # after an error: a later run resumes the .tmp stores (a no-op once published)
        valid.release()
        tiles.release()
    seconds = time.perf_counter() - t0
    log.info(
        "tile: %s -> %s: %dx%d px, %d bands %s, %d chunks (%d written, %d resumed) in %.1f s (%s)",
        sources[0] if len(sources) == 1 else f"{len(sources)} files", out_uri, grid.height, grid.width,
        info.count, info.dtype, total, total - n_resumed, n_resumed, seconds, where,
    )
    return TileResult(out_uri, plan.valid_uri, grid, info.band_names, stats, total, total - n_resumed, seconds)


def _key(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]
