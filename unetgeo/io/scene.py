"""Reading and writing GeoTIFF scenes, window by window.

Any local path or fsspec URL (``s3://``, ``gs://``, ``memory://``…) is accepted; URLs are opened
through fsspec as Python file objects, so credentials and endpoints follow fsspec's usual
configuration (``AWS_ENDPOINT_URL`` …). Nothing here reads a whole scene into memory.
"""

from __future__ import annotations

import hashlib
import logging
import os
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
from unetgeo.io.uri import is_url, open_file

log = logging.getLogger(__name__)

# Windows are read once each, so GDAL's block cache (5 % of RAM by default) only grows memory with
# scene size; a small fixed cache keeps peak memory flat. Users may still set GDAL_CACHEMAX.
os.environ.setdefault("GDAL_CACHEMAX", "64")

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


def _open(uri: str) -> rasterio.io.DatasetReader:
    """Open ``uri`` with rasterio; URLs go through fsspec's opener."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        try:
            if is_url(uri):
                return rasterio.open(uri, opener=open_file)
            return rasterio.open(uri)
        except RasterioIOError as e:
            raise SceneReadError(f"{uri}: cannot be read as a raster ({' '.join(str(e).split())})") from e
        except FileNotFoundError as e:
            raise SceneReadError(f"{uri}: file not found") from e


def crs_equal(wkt1: str, wkt2: str) -> bool:
    """True if two CRS definitions describe the same CRS (PROJ semantic comparison)."""
    if wkt1 == wkt2:
        return True
    from pyproj import CRS

    try:
        return CRS.from_user_input(wkt1).equals(CRS.from_user_input(wkt2), ignore_axis_order=True)
    except Exception:  # noqa: BLE001 - an unparsable CRS is simply not equal
        return False


def crs_is_geographic(wkt: str) -> bool:
    """True for a geographic (degrees) CRS."""
    from pyproj import CRS

    return bool(CRS.from_user_input(wkt).is_geographic)


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
    with _open(uri) as ds:
        if ds.driver not in ("GTiff", "COG"):
            raise InputError(f"{uri}: is a {ds.driver} raster, not a GeoTIFF; convert it with `gdal_translate -of GTiff`")
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
        )


class SceneReader:
    """Thread-safe windowed reader: one open dataset per thread, reused across windows.

    Use as a context manager or call :meth:`close`. Safe to pickle (reopens lazily).
    """

    def __init__(self, uri: str):
        self.uri = uri
        self._local = threading.local()
        self._all: list[Any] = []
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:
        return {"uri": self.uri}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["uri"])  # type: ignore[misc]

    def _ds(self) -> rasterio.io.DatasetReader:
        ds = getattr(self._local, "ds", None)
        if ds is None:
            ds = _open(self.uri)
            self._local.ds = ds
            with self._lock:
                self._all.append(ds)
        return ds

    def read(self, win: Window, bands: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Read ``win``: ``(data (bands, h, w) in the file dtype, valid (h, w) bool)``.

        A pixel is valid when the dataset mask marks it valid (nodata value, mask or alpha band)
        and every band value is finite.
        """
        ds = self._ds()
        rw = RioWindow(win.col_off, win.row_off, win.width, win.height)
        idx = list(bands) if bands is not None else None
        try:
            data = ds.read(indexes=idx, window=rw)
            valid = ds.dataset_mask(window=rw) > 0
        except RasterioIOError as e:
            raise SceneReadError(f"{self.uri}: read failed at window {win} ({' '.join(str(e).split())})") from e
        if data.dtype.kind == "f":
            valid &= np.isfinite(data).all(axis=0)
        return data, valid

    def read_resampled(self, out_shape: tuple[int, int], bands: Sequence[int] | None = None, resampling: str = "average") -> np.ndarray:
        """Decimated read of the whole scene onto ``out_shape`` (for quicklooks; uses overviews)."""
        from rasterio.enums import Resampling

        ds = self._ds()
        idx = list(bands) if bands is not None else list(range(1, ds.count + 1))
        return ds.read(indexes=idx, out_shape=(len(idx), *out_shape), resampling=Resampling[resampling])

    def close(self) -> None:
        with self._lock:
            for ds in self._all:
                ds.close()
            self._all.clear()
        self._local = threading.local()

    def __enter__(self) -> SceneReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def sha256_of(uri: str, block_bytes: int = 8 << 20) -> str:
    """Streaming sha256 of a file (path or URL), hex."""
    h = hashlib.sha256()
    with open_file(uri, "rb") as f:
        while chunk := f.read(block_bytes):
            h.update(chunk)
    return h.hexdigest()


class RasterWriter:
    """Write a tiled GeoTIFF window by window to ``URI.tmp``; :meth:`close` publishes it.

    Local paths only need ``rasterio``; for URLs the file is built in a local temp folder and
    uploaded on close. On an exception inside the ``with`` block the partial file is removed,
    so no partial output is ever visible under the final name.

    Args:
        uri: final path or URL.
        grid: pixel grid (CRS, transform, size).
        count: number of bands.
        dtype: numpy dtype name.
        nodata: nodata value or None.
        block_px: internal tile size (multiple of 16).
        compress: GDAL compression (``deflate``, ``zstd``, ``lzw``…).
        band_names: optional band descriptions.
        colormap: optional ``{value: (r, g, b[, a])}`` colour table for band 1 (uint8 only).
        tags: optional dataset metadata tags.
    """

    def __init__(
        self,
        uri: str,
        grid: Grid,
        count: int,
        dtype: str,
        nodata: float | None = None,
        *,
        block_px: int = 512,
        compress: str = "deflate",
        predictor: int | None = None,
        band_names: Sequence[str] | None = None,
        colormap: dict[int, tuple[int, ...]] | None = None,
        tags: dict[str, str] | None = None,
        bigtiff: str = "IF_SAFER",
    ):
        import os
        import tempfile

        from unetgeo.io import uri as U

        self.uri = str(uri)
        self._remote = U.is_url(self.uri)
        if self._remote:
            self._tmpdir = tempfile.mkdtemp(prefix="unetgeo-")
            self.tmp = os.path.join(self._tmpdir, os.path.basename(self.uri) + ".tmp")
        else:
            self._tmpdir = None
            self.tmp = self.uri + ".tmp"
            U.local_path(self.uri).parent.mkdir(parents=True, exist_ok=True)
        profile: dict[str, Any] = dict(
            driver="GTiff",
            width=grid.width,
            height=grid.height,
            count=count,
            dtype=dtype,
            crs=grid.crs_wkt or None,
            transform=rasterio.Affine(*grid.transform),
            nodata=nodata,
            tiled=True,
            blockxsize=block_px,
            blockysize=block_px,
            compress=compress,
            BIGTIFF=bigtiff,
            num_threads="ALL_CPUS",
        )
        if predictor is not None:
            profile["predictor"] = predictor
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            self._ds = rasterio.open(self.tmp, "w", **profile)
        if band_names:
            for i, n in enumerate(band_names, start=1):
                self._ds.set_band_description(i, n)
        if colormap:
            self._ds.write_colormap(1, colormap)
        if tags:
            self._ds.update_tags(**tags)
        self._lock = threading.Lock()

    def write(self, win: Window, data: np.ndarray) -> None:
        """Write ``data`` (``(bands, h, w)`` or ``(h, w)`` for one band) at ``win``. Thread-safe."""
        arr = data if data.ndim == 3 else data[None]
        rw = RioWindow(win.col_off, win.row_off, win.width, win.height)
        with self._lock:
            self._ds.write(arr, window=rw)

    @property
    def dataset(self) -> Any:
        """The open rasterio dataset (for overviews or tags before closing)."""
        return self._ds

    def close(self) -> str:
        """Close and publish: rename ``.tmp`` to the final name (or upload it)."""
        import os
        import shutil

        from unetgeo.io import uri as U

        self._ds.close()
        if self._remote:
            fs, path = U.fs_for(self.uri)
            fs.put_file(self.tmp, path)
            shutil.rmtree(self._tmpdir, ignore_errors=True)
        else:
            os.replace(self.tmp, self.uri)
        return self.uri

    def abort(self) -> None:
        """Close and delete the partial file."""
        import shutil

        from unetgeo.io import uri as U

        try:
            self._ds.close()
        finally:
            if self._remote:
                shutil.rmtree(self._tmpdir, ignore_errors=True)
            else:
                U.remove(self.tmp)

    def __enter__(self) -> RasterWriter:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
