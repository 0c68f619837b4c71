"""Zarr v3 stores written chunk by chunk, resumable, published atomically.

A store is written under ``URI.tmp``; every finished chunk leaves a marker
(``URI.tmp/.unetgeo_done/<cy>_<cx>``), so a run killed part-way resumes with only the missing
chunks. :meth:`ChunkedStoreWriter.publish` drops the markers, records ``complete: true`` and
renames ``URI.tmp`` to ``URI`` (atomic for local paths). A reader only ever sees complete stores.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec, BloscShuffle

from unetgeo.errors import GridMismatchError, StoreError
from unetgeo.grid import Grid, Window
from unetgeo.io import uri as U

log = logging.getLogger(__name__)

DONE_DIR = ".unetgeo_done"


def _compressor(dtype: np.dtype) -> BloscCodec:
    """Fast compressor: Blosc-LZ4 with byte shuffle (bit shuffle for 1-byte types)."""
    shuffle = BloscShuffle.bitshuffle if np.dtype(dtype).itemsize == 1 else BloscShuffle.shuffle
    return BloscCodec(cname="lz4", clevel=5, shuffle=shuffle, typesize=np.dtype(dtype).itemsize)


def _storage_options(uri: str) -> dict | None:
    return {} if U.is_url(uri) else None


def open_store(uri: str, mode: str = "r") -> zarr.Array:
    """Open a published Zarr array; refuses a missing or incomplete one.

    Raises:
        StoreError: nothing at ``uri``, or the store was never completed.
    """
    try:
        arr = zarr.open_array(uri, mode=mode, storage_options=_storage_options(uri))
    except (FileNotFoundError, zarr.errors.NodeTypeValidationError, ValueError, KeyError) as e:
        raise StoreError(f"{uri}: no Zarr array there ({type(e).__name__}); run the stage that writes it first") from e
    except Exception as e:  # zarr raises several types for a missing store
        if "not found" in str(e).lower() or "nothing found" in str(e).lower():
            raise StoreError(f"{uri}: no Zarr array there; run the stage that writes it first") from e
        raise
    if not arr.attrs.get("complete", False):
        raise StoreError(f"{uri}: the store is incomplete (an interrupted run?); run its stage again to finish it")
    return arr


def store_grid(arr: zarr.Array) -> Grid:
    """The pixel grid recorded in a store's attributes."""
    return Grid.from_attrs(dict(arr.attrs))


def check_same_grid(a: zarr.Array, b: zarr.Array, name_a: str, name_b: str) -> None:
    """Raise :class:`GridMismatchError` if two stores are not on the same grid."""
    from unetgeo.grid import same_grid
    from unetgeo.io.scene import crs_equal

    try:
        ga, gb = store_grid(a), store_grid(b)
    except KeyError as e:
        raise GridMismatchError(f"{name_b}: store has no grid attributes ({e}); it was not written by unetgeo") from e
    same_grid(ga, gb, name_a, name_b, crs_equal=crs_equal)


class ChunkedStoreWriter:
    """Write a ``(..., y, x)`` Zarr array one chunk at a time; resume; publish atomically.

    Args:
        uri: final location (path or fsspec URL) of the array.
        shape: full array shape, leading dims then ``(height, width)``.
        chunk_px: chunk side in pixels; leading dims are never split.
        dtype: numpy dtype of the array.
        fill_value: value of chunks never written (e.g. 0, or 255 for nodata classes).
        attrs: attributes stored now; more can be added at :meth:`publish`.
        run_key: identifies the inputs and settings; a partial ``.tmp`` store with another key
            is discarded rather than resumed, a published store with the same key is reused.
    """

    def __init__(
        self,
        uri: str,
        *,
        shape: tuple[int, ...],
        chunk_px: int,
        dtype: Any,
        fill_value: Any,
        attrs: Mapping[str, Any],
        run_key: str,
    ):
        self.uri = str(uri).rstrip("/")
        self.tmp = self.uri + ".tmp"
        self.shape = tuple(int(s) for s in shape)
        self.chunk_px = int(chunk_px)
        self.dtype = np.dtype(dtype)
        self.run_key = run_key
        self.already_complete = False
        self.resumed_chunks = 0
        if self._published_matches():
            self.already_complete = True
            log.info("%s is already complete for this input; skipping", self.uri)
            return
        chunks = (*self.shape[:-2], self.chunk_px, self.chunk_px)
        arr = None
        if U.exists(self.tmp):
            try:
                arr = zarr.open_array(self.tmp, mode="r+", storage_options=_storage_options(self.tmp))
                if arr.attrs.get("run_key") != run_key or tuple(arr.shape) != self.shape or tuple(arr.chunks) != chunks:
                    arr = None
            except Exception:  # noqa: BLE001 - a broken partial store is simply restarted
                arr = None
            if arr is None:
                log.info("discarding %s: it was written for other inputs or settings", self.tmp)
                U.remove(self.tmp)
            else:
                self.resumed_chunks = len(self._done_set())
                log.info("resuming %s: %d chunks already written", self.tmp, self.resumed_chunks)
        if arr is None:
            U.makedirs(U.join(self.tmp, ".."))
            arr = zarr.create_array(
                store=self.tmp,
                shape=self.shape,
                chunks=chunks,
                dtype=self.dtype,
                fill_value=fill_value,
                compressors=_compressor(self.dtype),
                attributes={**dict(attrs), "run_key": run_key, "complete": False},
                zarr_format=3,
                overwrite=True,
                storage_options=_storage_options(self.tmp),
            )
        self.array = arr
        self._done = self._done_set()

    # -- markers ---------------------------------------------------------------------------
    def _marker(self, win: Window) -> str:
        return U.join(self.tmp, DONE_DIR, f"{win.row_off // self.chunk_px}_{win.col_off // self.chunk_px}")

    def _done_set(self) -> set[str]:
        d = U.join(self.tmp, DONE_DIR)
        if not U.is_url(d):
            p = U.local_path(d)
            return {q.name for q in p.iterdir()} if p.exists() else set()
        fs, path = U.fs_for(d)
        try:
            return {x.rstrip("/").rsplit("/", 1)[-1] for x in fs.ls(path, detail=False)}
        except FileNotFoundError:
            return set()

    def _published_matches(self) -> bool:
        if not U.exists(self.uri):
            return False
        try:
            arr = zarr.open_array(self.uri, mode="r", storage_options=_storage_options(self.uri))
        except Exception:  # noqa: BLE001
            return False
        return bool(arr.attrs.get("complete")) and arr.attrs.get("run_key") == self.run_key and tuple(arr.shape) == self.shape

    def is_done(self, win: Window) -> bool:
        """True if the chunk at ``win`` was written by this or an earlier (killed) run."""
        if self.already_complete:
            return True
        return f"{win.row_off // self.chunk_px}_{win.col_off // self.chunk_px}" in self._done

    def write(self, win: Window, data: np.ndarray) -> None:
        """Write one chunk-aligned window ``data (..., h, w)`` and mark it done."""
        if win.row_off % self.chunk_px or win.col_off % self.chunk_px:
            raise ValueError(f"window {win} is not aligned to chunk_px={self.chunk_px}")
        lead = (slice(None),) * (len(self.shape) - 2)
        self.array[(*lead, *win.slices)] = data
        m = self._marker(win)
        if U.is_url(m):
            fs, path = U.fs_for(m)
            fs.pipe(path, b"")
        else:
            p = U.local_path(m)
            p.parent.mkdir(parents=True, exist_ok=True)
            p.touch()
        self._done.add(m.rsplit("/", 1)[-1])

    def publish(self, attrs: Mapping[str, Any] | None = None) -> str:
        """Record ``attrs`` and ``complete: true``, drop markers, rename ``.tmp`` to the final URI."""
        if self.already_complete:
            return self.uri
        self.array.attrs.update({**dict(attrs or {}), "complete": True})
        U.remove(U.join(self.tmp, DONE_DIR))
        U.rename(self.tmp, self.uri)
        log.info("published %s", self.uri)
        return self.uri


def read_window(arr: zarr.Array, win: Window) -> np.ndarray:
    """Read ``arr[..., rows, cols]`` for a window inside the grid."""
    lead = (slice(None),) * (arr.ndim - 2)
    return np.asarray(arr[(*lead, *win.slices)])
