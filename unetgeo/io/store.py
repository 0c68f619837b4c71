"""Zarr v3 stores written chunk by chunk, resumable, published atomically, safe under concurrency.

A store is written under ``URI.tmp``; every finished chunk is recorded — locally as a line
``<cy>_<cx>`` appended to ``URI.tmp/.unetgeo_done.log`` (one atomic ``O_APPEND`` write, also
safe across processes), on object stores as an empty object ``URI.tmp/.unetgeo_done/<cy>_<cx>``
— so a run killed part-way resumes with only the missing chunks. :meth:`ChunkedStoreWriter.publish`
drops the markers, records ``complete: true`` and renames ``URI.tmp`` to ``URI`` (atomic for local
paths). A reader only ever sees complete stores.

Two writers of one store (two runs into one folder) never corrupt it:

- ``URI.tmp`` belongs to the writer holding the owner file ``URI.lock.tmp``
  (:class:`unetgeo.io.owner.OwnerFile`; a killed writer's claim is stale and taken over, which is
  how a rerun resumes). A writer that finds it held by a live writer writes a private
  ``URI.<pid>-<random>.tmp`` instead (nothing to resume there; it is removed on :meth:`release`).
- Publishing holds ``URI.publish.lock.tmp`` while it checks and renames, and never deletes a
  complete store that another writer finished: one with this writer's run key is adopted (the
  private copy is discarded), one with another run key is a :class:`StoreError` naming both. Only
  the store that was there when the writer started (an older run's) is replaced.

The writer handles the store's one metadata document (``zarr.json``) and its whole-chunk objects
itself — the layout is fixed (regular chunks, ``bytes`` + ``blosc`` codecs, default chunk keys),
and a test checks both against what Zarr writes — so writing a store needs neither the
``zarr`` package (about 0.2 s to import) nor its per-chunk overhead. Reading goes through Zarr.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from unetgeo.errors import GridMismatchError, StoreError
from unetgeo.grid import Grid, Window
from unetgeo.io import uri as U
from unetgeo.io.owner import OwnerFile

if TYPE_CHECKING:
    import zarr
    from zarr.codecs import BloscCodec

log = logging.getLogger(__name__)

DONE_DIR = ".unetgeo_done"  # object stores: one empty marker object per finished chunk
DONE_LOG = ".unetgeo_done.log"  # local files: one appended line per finished chunk
_DONE_NAME = re.compile(r"^\d+_\d+$")
# Open append-only done logs of this process, per (log path, writer generation): a store
# discarded and made again under the same path gets a new descriptor, never a stale one.
_LOG_FDS: OrderedDict[tuple[str, str], int] = OrderedDict()
_LOG_FDS_LOCK = threading.Lock()
_LOG_FDS_MAX = 16


def _append_done(log_path: str, generation: str, line: bytes) -> None:
    """Append ``line`` to a done log (the file descriptor is kept open per process)."""
    key = (log_path, generation)
    with _LOG_FDS_LOCK:
        fd = _LOG_FDS.get(key)
        if fd is None:
            fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            _LOG_FDS[key] = fd
            while len(_LOG_FDS) > _LOG_FDS_MAX:
                os.close(_LOG_FDS.popitem(last=False)[1])
        else:
            _LOG_FDS.move_to_end(key)
        os.write(fd, line)  # one write on an O_APPEND descriptor: lines never interleave


def _close_done_log(log_path: str, generation: str) -> None:
    with _LOG_FDS_LOCK:
        fd = _LOG_FDS.pop((log_path, generation), None)
    if fd is not None:
        os.close(fd)
META = "zarr.json"


def _blosc_config(dtype: Any) -> dict[str, Any]:
    """Fast compressor: Blosc-LZ4, byte shuffle (bit shuffle for 1-byte types); Zarr v3 ``blosc`` config."""
    size = np.dtype(dtype).itemsize
    return {"typesize": size, "cname": "lz4", "clevel": 5, "shuffle": "bitshuffle" if size == 1 else "shuffle",
            "blocksize": 0}


def _compressor(dtype: np.dtype) -> BloscCodec:
    """The Zarr codec object of :func:`_blosc_config` (for arrays created through Zarr)."""
    from zarr.codecs import BloscCodec

    return BloscCodec(**_blosc_config(dtype))


def _fill_json(value: Any, dtype: np.dtype) -> Any:
    """A fill value as Zarr v3 metadata spells it (``false``, ``0``, ``0.0``, ``"NaN"``…)."""
    v = np.asarray(value, dtype=dtype).item()
    if dtype.kind == "f":
        if math.isnan(v):
            return "NaN"
        if math.isinf(v):
            return "Infinity" if v > 0 else "-Infinity"
    return v


def array_metadata(shape: tuple[int, ...], chunks: tuple[int, ...], dtype: Any, fill_value: Any,
                   attrs: Mapping[str, Any]) -> dict[str, Any]:
    """The ``zarr.json`` document of a store written by :class:`ChunkedStoreWriter` (Zarr v3)."""
    dt = np.dtype(dtype)
    if dt.kind not in "biuf" or dt.byteorder == ">":
        raise StoreError(f"data type {dt} cannot be stored; use bool, (u)int8-64 or float16-64")
    bytes_codec: dict[str, Any] = {"name": "bytes"}
    if dt.itemsize > 1:
        bytes_codec["configuration"] = {"endian": "little"}
    return {
        "shape": [int(v) for v in shape],
        "data_type": "bool" if dt.kind == "b" else dt.name,
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [int(v) for v in chunks]}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": _fill_json(fill_value, dt),
        "codecs": [bytes_codec, {"name": "blosc", "configuration": _blosc_config(dt)}],
        "attributes": dict(attrs),
        "zarr_format": 3,
        "node_type": "array",
        "storage_transformers": [],
    }


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def _read_meta(uri: str) -> dict[str, Any] | None:
    """The ``zarr.json`` of the store at ``uri``, or None if absent or unreadable."""
    try:
        with U.open_file(U.join(uri, META), "rb") as f:
            meta = json.loads(f.read())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def _write_meta(uri: str, meta: Mapping[str, Any]) -> None:
    """Write ``zarr.json`` atomically (:func:`unetgeo.io.uri.write_atomic`)."""
    U.write_atomic(U.join(uri, META), json.dumps(meta, indent=2, default=_json_default).encode())


def _blosc_encoder(cfg: Mapping[str, Any]) -> Callable[[np.ndarray], bytes]:
    """``array -> bytes`` exactly as Zarr's ``BloscCodec`` with these settings encodes a chunk."""
    from numcodecs import Blosc

    shuffle = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}[str(cfg["shuffle"])]
    codec = Blosc(cname=cfg["cname"], clevel=int(cfg["clevel"]), shuffle=shuffle, blocksize=int(cfg["blocksize"]),
                  typesize=int(cfg["typesize"]))

    def encode(arr: np.ndarray) -> bytes:
        return bytes(codec.encode(arr.reshape(-1).view(np.uint8)))

    return encode


def _storage_options(uri: str) -> dict | None:
    return {} if U.is_url(uri) else None


def open_store(uri: str, mode: str = "r") -> zarr.Array:
    """Open a published Zarr array; refuses a missing or incomplete one.

    Raises:
        StoreError: nothing at ``uri``, or the store was never completed.
    """
    import zarr

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


def peek_attrs(uri: str) -> dict[str, Any] | None:
    """Attributes of the Zarr array at ``uri`` (complete or not), or None if there is none."""
    meta = _read_meta(uri)
    if meta is None or meta.get("node_type") != "array":
        return None
    return dict(meta.get("attributes") or {})


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
        self.resumed = False  # True when a partial store of an interrupted run is continued
        self.resumed_chunks = 0
        self.private = False  # True when another live writer owns URI.tmp and this one writes its own copy
        self._array: zarr.Array | None = None
        self._done: set[str] = set()
        self._generation = uuid.uuid4().hex  # names this writer's open done log (see _append_done)
        chunks = (*self.shape[:-2], self.chunk_px, self.chunk_px)
        self._meta = array_metadata(self.shape, chunks, self.dtype, fill_value,
                                    {**dict(attrs), "run_key": run_key, "complete": False})
        self._fill = np.asarray(fill_value, dtype=self.dtype)
        self._encode: Callable[[np.ndarray], bytes] | None = _blosc_encoder(self._meta["codecs"][1]["configuration"])
        self._owner = OwnerFile(self.uri + ".lock.tmp")
        published = _read_meta(self.uri)
        self._replaces = _run_key_of(published)  # the older store this writer may replace
        if self._published_matches(published):
            self.already_complete = True
            log.debug("%s is already complete for this input; skipping", self.uri)
            return
        if self._owner.acquire():
            self._open_tmp()
        else:
            holder = self._owner.holder() or {}
            self.private = True
            self.tmp = U.tmp_name(self.uri)
            log.info("%s.tmp is being written by another run (pid %s on %s); writing %s instead", self.uri,
                     holder.get("pid"), holder.get("host"), self.tmp)
            U.makedirs(U.join(self.tmp, ".."))
            _write_meta(self.tmp, self._meta)

    def _open_tmp(self) -> None:
        """Resume ``URI.tmp`` if it was written for this run key and layout, else start it afresh."""
        old = _read_meta(self.tmp) if U.exists(self.tmp) else None
        if old is not None and self._same_layout(old) and (old.get("attributes") or {}).get("run_key") == self.run_key:
            self._meta["attributes"] = dict(old.get("attributes") or {})
            self.resumed = True
            self._done = self._done_set()
            self.resumed_chunks = len(self._done)
            log.debug("resuming %s: %d chunks already written", self.tmp, self.resumed_chunks)
            return
        if U.exists(self.tmp):
            log.info("discarding %s: it was written for other inputs or settings", self.tmp)
            U.remove(self.tmp)
        U.makedirs(U.join(self.tmp, ".."))
        _write_meta(self.tmp, self._meta)

    def _same_layout(self, meta: Mapping[str, Any]) -> bool:
        """True if ``meta`` describes the array this writer would create (attributes aside)."""
        keys = [k for k in self._meta if k != "attributes"]
        return all(meta.get(k) == self._meta[k] for k in keys)

    # -- pickling (Dask workers get a light copy: no open array, no done-set) -----------------
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_array"] = None
        state["_done"] = set()
        state["_encode"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._encode = _blosc_encoder(self._meta["codecs"][1]["configuration"])

    @property
    def array(self) -> zarr.Array:
        """The Zarr array (under ``URI.tmp`` while being written), opened on first use."""
        import zarr

        if self._array is None:
            target = self.uri if self.already_complete else self.tmp
            self._array = zarr.open_array(target, mode="r" if self.already_complete else "r+",
                                          storage_options=_storage_options(target))
        return self._array

    # -- markers ---------------------------------------------------------------------------
    def _name(self, win: Window) -> str:
        return f"{win.row_off // self.chunk_px}_{win.col_off // self.chunk_px}"

    def _done_set(self) -> set[str]:
        if not U.is_url(self.tmp):
            log_path = U.local_path(U.join(self.tmp, DONE_LOG))
            try:
                lines = log_path.read_text(errors="replace").split("\n")
            except FileNotFoundError:
                return set()
            return {ln for ln in lines if _DONE_NAME.match(ln)}  # a torn last line is ignored
        fs, path = U.fs_for(U.join(self.tmp, DONE_DIR))
        try:
            return {x.rstrip("/").rsplit("/", 1)[-1] for x in fs.ls(path, detail=False)}
        except FileNotFoundError:
            return set()

    def _published_matches(self, meta: Mapping[str, Any] | None) -> bool:
        """True if ``meta`` (a published store's) is complete, of this run key and of this shape."""
        if meta is None:
            return False
        return _run_key_of(meta) == self.run_key and tuple(meta.get("shape") or ()) == self.shape

    def is_done(self, win: Window) -> bool:
        """True if the chunk at ``win`` was written by this or an earlier (killed) run."""
        if self.already_complete:
            return True
        return self._name(win) in self._done

    def write(self, win: Window, data: np.ndarray, *, mark: bool = True) -> None:
        """Write one chunk-aligned window ``data (..., h, w)`` and mark it done. Thread-safe.

        ``mark=False`` leaves the marker out, for a caller that tracks the chunk's completion
        in another store (one marker for a pair of stores written together).
        """
        if win.row_off % self.chunk_px or win.col_off % self.chunk_px:
            raise ValueError(f"window {win} is not aligned to chunk_px={self.chunk_px}")
        if not self._write_fast(win, data):
            lead = (slice(None),) * (len(self.shape) - 2)
            self.array[(*lead, *win.slices)] = data
        if mark:
            self.mark_done(win)

    def _write_fast(self, win: Window, data: np.ndarray) -> bool:
        """Store a whole chunk's encoded bytes directly; False when this write needs Zarr."""
        if self._encode is None:
            return False
        T = self.chunk_px
        H, W = self.shape[-2:]
        full = (*self.shape[:-2], min(T, H - win.row_off), min(T, W - win.col_off))
        arr = np.asarray(data)
        if arr.shape != full or (win.height, win.width) != full[-2:]:
            return False
        arr = arr.astype(self.dtype, copy=False)
        coords = (*(0,) * (len(self.shape) - 2), win.row_off // T, win.col_off // T)
        key = U.join(self.tmp, "c/" + "/".join(str(c) for c in coords))
        if self._all_fill(arr):  # like Zarr (write_empty_chunks=False): a missing chunk reads as fill
            if self.resumed:  # an interrupted run may have left a (partial) object here
                U.remove(key)
            return True
        if full[-2:] != (T, T):  # edge chunk: Zarr stores edge chunks padded to the full chunk shape
            pad = np.full((*self.shape[:-2], T, T), self._fill, dtype=self.dtype)
            pad[(..., slice(0, full[-2]), slice(0, full[-1]))] = arr
            arr = pad
        if arr.dtype.byteorder == ">":
            arr = arr.astype(arr.dtype.newbyteorder("<"))
        blob = self._encode(np.ascontiguousarray(arr))
        if U.is_url(key):
            fs, path = U.fs_for(key)
            fs.pipe_file(path, blob)
        else:
            p = U.local_path(key)
            try:
                fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            except FileNotFoundError:
                p.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                os.write(fd, blob)
            finally:
                os.close(fd)
        return True

    def _all_fill(self, arr: np.ndarray) -> bool:
        """True if every element of ``arr`` equals the fill value (NaN fill: every element NaN)."""
        fill = self._fill
        if self.dtype.kind == "b":
            return bool(arr.all()) if bool(fill) else not bool(arr.any())
        if self.dtype.kind == "f" and np.isnan(fill):
            return bool(np.isnan(arr).all())
        if fill == 0 and self.dtype.kind == "u":
            return not arr.size or int(arr.max()) == 0  # a SIMD max beats any()'s cast to bool
        return bool((arr == fill).all())

    def mark_done(self, win: Window) -> None:
        """Record the chunk at ``win`` as finished (call after its data is stored). Thread-safe."""
        name = self._name(win)
        if U.is_url(self.tmp):
            fs, path = U.fs_for(U.join(self.tmp, DONE_DIR, name))
            fs.pipe_file(path, b"")
        else:
            log_path = str(U.local_path(U.join(self.tmp, DONE_LOG)))
            try:
                _append_done(log_path, self._generation, f"{name}\n".encode())
            except FileNotFoundError:  # the .tmp folder was never created here
                U.local_path(self.tmp).mkdir(parents=True, exist_ok=True)
                _append_done(log_path, self._generation, f"{name}\n".encode())
        self._done.add(name)

    def publish(self, attrs: Mapping[str, Any] | None = None) -> str:
        """Record ``attrs`` and ``complete: true``, drop markers, publish ``.tmp`` under the final URI.

        If another writer published this store meanwhile, its store is kept: with the same run
        key it is adopted (this writer's copy is discarded), with another one this raises.

        Raises:
            StoreError: another writer published the store for other inputs or settings meanwhile,
                or held the publish step for longer than ``publish_timeout_s``.
        """
        if self.already_complete:
            return self.uri
        meta = _read_meta(self.tmp) or self._meta
        meta["attributes"] = {**(meta.get("attributes") or {}), **dict(attrs or {}), "complete": True}
        _write_meta(self.tmp, meta)
        self._array = None
        if not U.is_url(self.tmp):
            _close_done_log(str(U.local_path(U.join(self.tmp, DONE_LOG))), self._generation)
            U.remove(U.join(self.tmp, DONE_LOG))
        U.remove(U.join(self.tmp, DONE_DIR))
        gate = OwnerFile(self.uri + ".publish.lock.tmp")
        if not gate.wait(self.publish_timeout_s):
            raise StoreError(f"{self.uri}: another run has been publishing it for over {self.publish_timeout_s:.0f} s "
                             f"({gate.holder()}); wait for it, or remove {gate.uri} if that run is gone")
        try:
            self._publish_locked()
        finally:
            gate.release()
            self.release()
        return self.uri

    publish_timeout_s = 600.0

    def _publish_locked(self) -> None:
        """Move ``self.tmp`` to ``self.uri`` (the caller holds the publish claim)."""
        there = _read_meta(self.uri)
        key = _run_key_of(there)
        if key == self.run_key:
            log.info("%s was completed by another run with the same inputs; using it", self.uri)
            U.remove(self.tmp)
            self.already_complete = True
            return
        if key is not None and key != self._replaces:
            raise StoreError(
                f"{self.uri}: another run published it for other inputs or settings (run key {key}) while this "
                f"run (run key {self.run_key}) was writing it; give the two runs different output folders"
            )
        if U.exists(self.uri):  # the older run's store (or an incomplete remnant): replaced
            aside = U.tmp_name(self.uri)
            U.rename(self.uri, aside)
            U.rename(self.tmp, self.uri)
            U.remove(aside)
        else:
            U.rename(self.tmp, self.uri)
        self.already_complete = True
        log.debug("published %s", self.uri)

    def release(self) -> None:
        """Give up ``URI.tmp`` without publishing (after an error); a later writer resumes it.

        A private copy (:attr:`private`) cannot be resumed by anyone and is removed.
        """
        if not U.is_url(self.tmp):
            _close_done_log(str(U.local_path(U.join(self.tmp, DONE_LOG))), self._generation)
        if self.private and not self.already_complete:
            U.remove(self.tmp)
        self._owner.release()


def _run_key_of(meta: Mapping[str, Any] | None) -> str | None:
    """The run key of a *complete* store's metadata, else None."""
    attrs = (meta or {}).get("attributes") or {}
    return str(attrs["run_key"]) if attrs.get("complete") and attrs.get("run_key") is not None else None


def read_window(arr: zarr.Array, win: Window) -> np.ndarray:
    """Read ``arr[..., rows, cols]`` for a window inside the grid."""
    lead = (slice(None),) * (arr.ndim - 2)
    return np.asarray(arr[(*lead, *win.slices)])
