"""Reading and writing GeoTIFF scenes, window by window.

Any local path or fsspec URL (``s3://``, ``gs://``, ``memory://``…) is accepted; URLs are opened
through fsspec as Python file objects, so credentials and endpoints follow fsspec's usual
configuration (``AWS_ENDPOINT_URL`` …). Nothing here reads a whole scene into memory.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.windows import Window as RioWindow

from unetgeo.errors import InputError, SceneReadError
from unetgeo.grid import Grid, Window, check_north_up
from unetgeo.io._gtiff import TiffFileWriter, WindowWriter, geotiff_profile
from unetgeo.io.crs import crs_equal, crs_is_geographic, crs_name
from unetgeo.io.uri import is_url, open_file

log = logging.getLogger(__name__)

_REEXPORTED = (crs_equal, crs_is_geographic, crs_name)  # from unetgeo.io.crs, for older callers
_REEXPORTED_WRITING = (WindowWriter, geotiff_profile)  # from unetgeo.io._gtiff, for older callers

#: GDAL block cache while reading, MiB. Windows are read once each, so GDAL's default cache (5 % of
#: RAM) would only grow memory with scene size; a small fixed one keeps peak memory flat.
GDAL_CACHE_MIB = 64


#: the block cache of a reader whose windows never share a block (each block is read once):
#: enough for the blocks of one read in flight per thread, not a copy of the raster
STREAM_CACHE_MIB = 8


def gdal_env(cache_mib: int = GDAL_CACHE_MIB) -> rasterio.Env:
    """The GDAL settings of every read here: a ``cache_mib`` (:data:`GDAL_CACHE_MIB`) block cache.

    A ``GDAL_CACHEMAX`` set in the environment by the user wins (nothing is overridden then).
    """
    if os.environ.get("GDAL_CACHEMAX"):
        return rasterio.Env()
    return rasterio.Env(GDAL_CACHEMAX=cache_mib << 20)  # rasterio passes bytes to GDALSetCacheMax64

#: GDAL drivers of the scenes unetgeo reads (Sentinel-2 ships JPEG2000 band files; a VRT can stack).
READ_DRIVERS = ("GTiff", "COG", "JP2OpenJPEG", "VRT")

SUPPORTED_DTYPES = ("uint8", "uint16", "int16", "uint32", "int32", "float32", "float64")


@dataclass(frozen=True)
class SceneInfo:
    """What a scene is: its grid, bands, dtype and how nodata is marked.

    ``mask_kind`` is one of ``"nodata"`` (a nodata value), ``"nan"`` (NaN as nodata),
    ``"mask_band"`` (internal mask or alpha band) or ``"none"`` (every pixel valid).
    """

    uri: str
    grid: Grid
    count: int
    dtype: str
    nodata: float | None
    band_names: tuple[str, ...]
    mask_kind: str
    is_geographic: bool
    driver: str = "GTiff"
    block_shape: tuple[int, int] = (256, 256)
    descriptions: tuple[str | None, ...] = field(default=())
    members: tuple[SceneInfo, ...] = field(default=())
    """For a band stack (:func:`unetgeo.io.stack.open_stack`): one entry per file, in band order; empty otherwise."""
    indexes: tuple[int, ...] = field(default=())
    """1-based bands of the file that are read (a ``--bands`` selection); empty: all of them."""
    scales: tuple[float, ...] = field(default=())
    """Per band: physical value = DN * scale + offset (file tags, ``--scale``); empty: 1."""
    offsets: tuple[float, ...] = field(default=())
    """Per band offsets (file tags, Sentinel-2 baseline ≥ 04.00 metadata, ``--offset``); empty: 0."""
    nodata_source: str = "file"
    """``"file"`` (the file's own mask), ``"given"`` (``--nodata V``), ``"none"`` (``--nodata none``)."""
    fill: float | None = None
    """Undeclared nodata found by :func:`unetgeo.tiling.make_tiles`: pixels equal to it in every band are masked."""

    @property
    def read_indexes(self) -> list[int] | None:
        """The 1-based file bands to read, None for all (a single file's :attr:`indexes`)."""
        return list(self.indexes) if self.indexes else None

    @property
    def radiometry(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """``(scales, offsets)``, one float per band (1 and 0 where not set)."""
        return (self.scales or (1.0,) * self.count, self.offsets or (0.0,) * self.count)

    @property
    def store_dtype(self) -> str:
        """The dtype of the tiles: float32 when a scale or offset applies, else the file's."""
        sc, of = self.radiometry
        return self.dtype if all(v == 1.0 for v in sc) and all(v == 0.0 for v in of) else "float32"

    @property
    def sources(self) -> tuple[str, ...]:
        """The files the bands come from: the stack's files in order, or ``(uri,)``."""
        return tuple(m.uri for m in self.members) if self.members else (self.uri,)


def open_dataset(uri: str) -> rasterio.io.DatasetReader:
    """Open ``uri`` with rasterio (under :func:`gdal_env`); URLs go through fsspec's opener.

    Raises:
        SceneReadError: missing file or not a raster.
    """
    with warnings.catch_warnings(), gdal_env():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        try:
            if is_url(uri):
                return rasterio.open(uri, opener=open_file)
            return rasterio.open(uri)
        except RasterioIOError as e:
            raise SceneReadError(f"{uri}: cannot be read as a raster ({' '.join(str(e).split())})") from e
        except FileNotFoundError as e:
            raise SceneReadError(f"{uri}: file not found") from e


def check_tail(uri: str) -> None:
    """Read the last block of every band of ``uri``: a truncated or corrupt file fails here, in
    milliseconds, before any output exists (a file cut short loses its last blocks first).

    Raises:
        InputError: the last block cannot be decoded (names the file).
    """
    with open_dataset(uri) as ds, gdal_env():
        bh, bw = ds.block_shapes[0]
        row, col = (ds.height - 1) // bh * bh, (ds.width - 1) // bw * bw
        try:
            ds.read(window=((row, min(ds.height, row + bh)), (col, min(ds.width, col + bw))))
        except RasterioIOError as e:
            raise InputError(f"{uri}: is truncated or corrupt: its last block cannot be read "
                             f"({' '.join(str(e).split())[:160]}); copy or download it again") from e


_S2_OFFSET_TAG = re.compile(r"(?:BOA|RADIO)_ADD_OFFSET(?:_B?0*(\d{1,2}A?))?$", re.IGNORECASE)
_S2_OFFSET_XML = re.compile(rb"<(?:BOA|RADIO)_ADD_OFFSET\s+band_id=\"(\d+)\"\s*>\s*(-?[\d.]+)\s*<")


def s2_metadata_offsets(uri: str) -> dict[str, float]:
    """Sentinel-2 baseline ≥ 04.00 offsets by band code (``{"2": -1000.0, …}``) from the product's
    ``MTD_MSIL1C.xml`` / ``MTD_MSIL2A.xml`` (RADIO_ADD_OFFSET / BOA_ADD_OFFSET), looked for beside
    the band file and up to four folders above it (the SAFE layouts of L1C and L2A); empty when there is none."""
    from unetgeo.bands import S2_BAND_IDS

    if is_url(uri):
        return {}
    here = os.path.dirname(os.path.abspath(uri))
    for _ in range(5):  # L1C: SAFE/GRANULE/*/IMG_DATA/B.jp2; L2A: SAFE/GRANULE/*/IMG_DATA/R10m/B.jp2
        for name in ("MTD_MSIL2A.xml", "MTD_MSIL1C.xml"):
            path = os.path.join(here, name)
            if os.path.isfile(path):
                with open(path, "rb") as f:
                    found = _S2_OFFSET_XML.findall(f.read())
                return {S2_BAND_IDS[int(i)]: float(v) for i, v in found if int(i) < len(S2_BAND_IDS)}
        here = os.path.dirname(here)
    return {}


def file_offsets(ds: Any, uri: str) -> tuple[float, ...]:
    """Per-band offsets of an open dataset: its offset tags (``ds.offsets``), plus a Sentinel-2
    ``BOA_ADD_OFFSET``/``RADIO_ADD_OFFSET`` from its metadata tags or the product's MTD XML."""
    from unetgeo.bands import band_code

    offsets = [float(v) for v in ds.offsets]
    by_code: dict[str, float] = {}
    for key, value in ds.tags().items():
        m = _S2_OFFSET_TAG.match(key)
        if m:
            by_code[(m.group(1) or "*").upper()] = float(value)
    if not by_code:
        by_code = s2_metadata_offsets(uri)
    if not by_code:
        return tuple(offsets)
    stem = os.path.splitext(os.path.basename(str(uri)))[0]
    for b in range(ds.count):
        code = band_code(ds.descriptions[b] or "") or (band_code(stem) if ds.count == 1 else None)
        extra = by_code.get(code or "", by_code.get("*", 0.0))
        if offsets[b] == 0.0 and extra:
            offsets[b] = extra
            log.info("%s: band %d (B%s) has the Sentinel-2 offset %g (processing baseline 04.00+); applied",
                     uri, b + 1, code, extra)
    return tuple(offsets)


def open_scene(uri: str, band_names: Sequence[str] | None = None, *, need_crs: bool = True) -> SceneInfo:
    """Open a GeoTIFF and check that unetgeo can use it.

    Args:
        uri: path or fsspec URL of a GeoTIFF.
        band_names: names to give the bands in order (defaults to the file's band
            descriptions, else ``b1..bN``); its length must equal the band count.
        need_crs: refuse a raster without a CRS (the default).

    Raises:
        SceneReadError: missing file or not a raster.
        InputError: not a GeoTIFF, no CRS, rotated grid, unsupported dtype, mixed dtypes.
    """
    with open_dataset(uri) as ds:
        if ds.driver not in READ_DRIVERS:
            raise InputError(f"{uri}: is a {ds.driver} raster, not a GeoTIFF, JPEG2000 or VRT; convert it with "
                             "`gdal_translate -of GTiff`")
        if need_crs and ds.crs is None:
            raise InputError(
                f"{uri}: has no CRS, so its pixels cannot be placed on the map; "
                "assign one with `gdal_edit.py -a_srs EPSG:XXXX` (a GeoTIFF needs georeferencing)"
            )
        if len(set(ds.dtypes)) != 1:
            raise InputError(f"{uri}: bands have different data types {ds.dtypes}; convert to one type first")
        dtype = ds.dtypes[0]
        if dtype not in SUPPORTED_DTYPES:
            raise InputError(f"{uri}: data type {dtype} is not supported; use one of {', '.join(SUPPORTED_DTYPES)}")
        t = ds.transform
        check_north_up((t.a, t.b, t.c, t.d, t.e, t.f), uri)
        flags = ds.mask_flag_enums
        from rasterio.enums import MaskFlags

        nodata = ds.nodata
        if nodata is not None and np.isnan(nodata):
            mask_kind = "nan"
        elif nodata is not None:
            mask_kind = "nodata"
        elif any(MaskFlags.per_dataset in f or MaskFlags.alpha in f for f in flags):
            mask_kind = "mask_band"
        elif np.dtype(dtype).kind == "f":
            mask_kind = "nan"
        else:
            mask_kind = "none"
        descs = tuple(ds.descriptions)
        if band_names is None:
            names = tuple(d if d else f"b{i + 1}" for i, d in enumerate(descs))
            if len(set(names)) != len(names):
                names = tuple(f"b{i + 1}" for i in range(ds.count))
        else:
            names = tuple(band_names)
            if len(names) != ds.count:
                raise InputError(f"{uri}: has {ds.count} bands but {len(names)} band names were given: {list(names)}")
        wkt = ds.crs.to_wkt() if ds.crs is not None else ""
        grid = Grid(crs_wkt=wkt, transform=(t.a, t.b, t.c, t.d, t.e, t.f), height=ds.height, width=ds.width)
        return SceneInfo(
            uri=uri,
            grid=grid,
            count=ds.count,
            dtype=dtype,
            nodata=nodata,
            band_names=names,
            mask_kind=mask_kind,
            is_geographic=bool(ds.crs.is_geographic) if ds.crs is not None else False,
            driver=ds.driver,
            block_shape=tuple(ds.block_shapes[0]),  # type: ignore[arg-type]
            descriptions=descs,
            scales=tuple(float(v) for v in ds.scales),
            offsets=file_offsets(ds, uri),
        )


class SceneReader:
    """Thread-safe windowed reader: one open dataset per thread, reused across windows.

    Use as a context manager or call :meth:`close`. Safe to pickle (reopens lazily).
    """

    def __init__(self, uri: str, indexes: Sequence[int] | None = None, nodata: float | None | str = "file",
                 cache_mib: int = GDAL_CACHE_MIB):
        """``indexes``: 1-based bands read by default (None: all); ``nodata``: ``"file"`` (the
        file's mask), None (every finite pixel valid) or a value (masked where all bands hold it);
        ``cache_mib``: GDAL's block cache while reading (:data:`STREAM_CACHE_MIB` for a reader
        whose windows share no block)."""
        self.uri = uri
        self.indexes = list(indexes) if indexes else None
        self.nodata = nodata
        self.cache_mib = cache_mib
        self._local = threading.local()
        self._all: list[tuple[int, Any]] = []  # (opening thread, dataset)
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:
        return {"uri": self.uri, "indexes": self.indexes, "nodata": self.nodata, "cache_mib": self.cache_mib}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["uri"], state.get("indexes"), state.get("nodata", "file"),  # type: ignore[misc]
                      state.get("cache_mib", GDAL_CACHE_MIB))

    @classmethod
    def of(cls, info: SceneInfo) -> SceneReader:
        """The reader of a single-file scene: its band selection and nodata setting."""
        nodata = {"file": "file", "none": None}.get(info.nodata_source, info.nodata)
        return cls(info.uri, info.read_indexes, nodata)

    def _ds(self) -> rasterio.io.DatasetReader:
        ds = getattr(self._local, "ds", None)
        if ds is None:
            ds = open_dataset(self.uri)
            self._local.ds = ds
            with self._lock:
                self._all.append((threading.get_ident(), ds))
        return ds

    def _nodata(self, ds: rasterio.io.DatasetReader) -> float:
        """The nodata value in force (the file's, or the one given)."""
        return ds.nodata if self.nodata == "file" else self.nodata  # type: ignore[return-value]

    def _mask_mode(self, ds: rasterio.io.DatasetReader) -> str:
        """How the dataset mask can be had: ``"all_valid"``, ``"nodata"`` (numpy) or ``"gdal"``."""
        from rasterio.enums import MaskFlags

        if self.nodata != "file":
            return "all_valid" if self.nodata is None else "nodata"
        flags = ds.mask_flag_enums
        if all(f == [MaskFlags.all_valid] for f in flags):
            return "all_valid"
        if ds.nodata is not None and all(f == [MaskFlags.nodata] for f in flags):
            return "nodata"
        return "gdal"

    def read(self, win: Window, bands: Sequence[int] | None = None, *,
             own_nodata: float | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """Read ``win``: ``(data (bands, h, w) in the file dtype, valid (h, w) bool)``.

        A pixel is valid when the dataset mask marks it valid (nodata value, mask or alpha band)
        and every band value is finite. With a nodata value (GDAL's rule: a pixel is masked only
        when *all* bands hold it, here all bands read) or no mask at all, the mask is computed
        from the data already read instead of a second pass through GDAL. ``bands`` (1-based)
        defaults to the reader's ``indexes``; only those bands are read.

        ``own_nodata``: a value the caller treats as invalid itself. Where the mask says no more
        than that (no mask, or that nodata value, one integer band read), ``valid`` is None
        instead of an array the size of the window.
        """
        ds = self._ds()
        rw = RioWindow(win.col_off, win.row_off, win.width, win.height)
        idx = list(bands) if bands is not None else self.indexes
        mode = getattr(self._local, "mask_mode", None)
        if mode is None:
            mode = self._local.mask_mode = self._mask_mode(ds)
        try:
            with gdal_env(self.cache_mib):
                data = ds.read(indexes=idx, window=rw)
            if own_nodata is not None and data.shape[0] == 1 and data.dtype.kind in "ui" and (
                    mode == "all_valid" or (mode == "nodata" and self._nodata(ds) == own_nodata)):
                return data, None
            if mode == "all_valid":
                valid = np.ones(data.shape[1:], dtype=bool)
            elif mode == "nodata":
                nd = self._nodata(ds)
                if np.isnan(nd):
                    valid = np.ones(data.shape[1:], dtype=bool)  # NaN is caught by the finite test below
                elif float(nd_val := np.asarray(nd).astype(data.dtype)) != float(nd):
                    valid = np.ones(data.shape[1:], dtype=bool)  # nodata not representable: never matches
                else:
                    valid = data[0] != nd_val
                    for b in range(1, data.shape[0]):
                        valid |= data[b] != nd_val
            else:
                with gdal_env(self.cache_mib):
                    valid = ds.dataset_mask(window=rw) > 0
        except RasterioIOError as e:
            raise SceneReadError(f"{self.uri}: read failed at window {win} ({' '.join(str(e).split())})") from e
        if data.dtype.kind == "f":
            valid &= np.isfinite(data).all(axis=0)
        return data, valid

    def read_onto(
        self, src_window: tuple[float, float, float, float], out_shape: tuple[int, int], resampling: str = "bilinear"
    ) -> tuple[np.ndarray, np.ndarray]:
        """Read a fractional window of this file resampled onto ``out_shape`` pixels.

        Args:
            src_window: ``(row_off, col_off, height, width)`` in this file's pixels (may be fractional).
            out_shape: ``(h, w)`` of the result.
            resampling: GDAL resampling of the data (``bilinear``, ``cubic``, ``average``, ``nearest``…).

        Returns:
            ``(data (bands, h, w) in the file dtype, valid (h, w) bool)``; the mask is resampled
            with nearest neighbour (a pixel is valid when the source pixel under it is).
        """
        from rasterio.enums import Resampling

        ds = self._ds()
        r0, c0, h, w = src_window
        rw = RioWindow(c0, r0, w, h)
        idx = self.indexes or list(range(1, ds.count + 1))
        try:
            with gdal_env(self.cache_mib):
                data = ds.read(indexes=idx, window=rw, out_shape=(len(idx), *out_shape), resampling=Resampling[resampling])
                if self.nodata == "file":
                    valid = ds.dataset_mask(window=rw, out_shape=out_shape, resampling=Resampling.nearest) > 0
                elif self.nodata is None:
                    valid = np.ones(out_shape, dtype=bool)
                else:  # a given nodata value: where the nearest source pixel holds it in every band
                    near = ds.read(indexes=idx, window=rw, out_shape=(len(idx), *out_shape),
                                   resampling=Resampling.nearest)
                    valid = ~np.all(near == np.asarray(self.nodata).astype(near.dtype), axis=0)
        except RasterioIOError as e:
            raise SceneReadError(f"{self.uri}: read failed at window {src_window} ({' '.join(str(e).split())})") from e
        if data.dtype.kind == "f":
            valid &= np.isfinite(data).all(axis=0)
        return data, valid

    def read_resampled(self, out_shape: tuple[int, int], bands: Sequence[int] | None = None, resampling: str = "average") -> np.ndarray:
        """Decimated read of the whole scene onto ``out_shape`` (for quicklooks; uses overviews)."""
        from rasterio.enums import Resampling

        ds = self._ds()
        idx = list(bands) if bands is not None else (self.indexes or list(range(1, ds.count + 1)))
        with gdal_env(self.cache_mib):
            return ds.read(indexes=idx, out_shape=(len(idx), *out_shape), resampling=Resampling[resampling])

    def close_thread(self) -> None:
        """Close the dataset the calling thread opened (files opened through fsspec must be closed
        by the thread that opened them)."""
        ds = getattr(self._local, "ds", None)
        if ds is None:
            return
        self._local.ds = None
        self._local.mask_mode = None
        with self._lock:
            self._all = [(t, d) for t, d in self._all if d is not ds]
        ds.close()

    def close(self) -> None:
        """Close every dataset; those of other threads on a best-effort basis."""
        me = threading.get_ident()
        with self._lock:
            items = list(self._all)
            self._all.clear()
        self._local = threading.local()
        for t, ds in items:
            try:
                ds.close()
            except Exception as e:  # noqa: BLE001 - an fsspec-opened file of another thread
                if t == me:
                    raise
                log.debug("%s: closing a dataset of another thread failed (%s)", self.uri, e)

    def __enter__(self) -> SceneReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(eq=False, repr=False)
class RasterWriter(TiffFileWriter):
    """Write a tiled GeoTIFF window by window to ``URI.tmp``; :meth:`close` publishes it.

    Local paths only need ``rasterio``; for URLs the file is built in a local temp folder and
    uploaded on close. On an exception inside the ``with`` block the partial file is removed,
    so no partial output is ever visible under the final name.

    Args:
        uri, grid, count, dtype, nodata, block_px, compress, predictor, band_names, colormap, tags:
            as in :class:`~unetgeo.io._gtiff.TiffFileWriter` (``colormap`` for uint8 only).
        bigtiff: GDAL ``BIGTIFF`` creation option (``IF_SAFER``, ``YES``, ``NO``).
    """

    bigtiff: str = field(default="IF_SAFER", kw_only=True)

    def __post_init__(self) -> None:
        self.tmp = self._staging_base() + ".tmp"
        self._open(self.tmp, bigtiff=self.bigtiff)

    def close(self) -> str:
        """Close and publish: rename ``.tmp`` to the final name (or upload it).

        Returns:
            The final URI.
        """
        self._ds.close()
        self._publish(self.tmp)
        return self.uri

    def _temp_files(self) -> tuple[str, ...]:
        return (self.tmp,)
