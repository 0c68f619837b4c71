"""Reading and writing GeoTIFF scenes, window by window.

Any local path or fsspec URL (``s3://``, ``gs://``, ``memory://``…) is accepted; URLs are opened
through fsspec as Python file objects, so credentials and endpoints follow fsspec's usual
configuration (``AWS_ENDPOINT_URL`` …). Nothing here reads a whole scene into memory.
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.windows import Window as RioWindow

from unetgeo.errors import GridMismatchError, InputError, SceneReadError
from unetgeo.grid import Grid, Window, check_north_up
from unetgeo.io.uri import PublishOnExit, is_url, open_file

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
    members: tuple[SceneInfo, ...] = field(default=())
    """For a band stack (:func:`open_stack`): one entry per file, in band order; empty otherwise."""

    @property
    def sources(self) -> tuple[str, ...]:
        """The files the bands come from: the stack's files in order, or ``(uri,)``."""
        return tuple(m.uri for m in self.members) if self.members else (self.uri,)


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
        self._all: list[tuple[int, Any]] = []  # (opening thread, dataset)
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
                self._all.append((threading.get_ident(), ds))
        return ds

    @staticmethod
    def _mask_mode(ds: rasterio.io.DatasetReader) -> str:
        """How the dataset mask can be had: ``"all_valid"``, ``"nodata"`` (numpy) or ``"gdal"``."""
        from rasterio.enums import MaskFlags

        flags = ds.mask_flag_enums
        if all(f == [MaskFlags.all_valid] for f in flags):
            return "all_valid"
        if ds.nodata is not None and all(f == [MaskFlags.nodata] for f in flags):
            return "nodata"
        return "gdal"

    def read(self, win: Window, bands: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Read ``win``: ``(data (bands, h, w) in the file dtype, valid (h, w) bool)``.

        A pixel is valid when the dataset mask marks it valid (nodata value, mask or alpha band)
        and every band value is finite. With a nodata value (GDAL's rule: a pixel is masked only
        when *all* bands hold it) or no mask at all, the mask is computed from the data already
        read instead of a second pass through GDAL.
        """
        ds = self._ds()
        rw = RioWindow(win.col_off, win.row_off, win.width, win.height)
        idx = list(bands) if bands is not None else None
        mode = getattr(self._local, "mask_mode", None)
        if mode is None:
            mode = self._local.mask_mode = self._mask_mode(ds)
        try:
            data = ds.read(indexes=idx, window=rw)
            if mode == "all_valid":
                valid = np.ones(data.shape[1:], dtype=bool)
            elif mode == "nodata" and idx is None:
                nd = ds.nodata
                if np.isnan(nd):
                    valid = np.ones(data.shape[1:], dtype=bool)  # NaN is caught by the finite test below
                elif float(nd_val := np.asarray(nd).astype(data.dtype)) != float(nd):
                    valid = np.ones(data.shape[1:], dtype=bool)  # nodata not representable: never matches
                else:
                    valid = data[0] != nd_val
                    for b in range(1, data.shape[0]):
                        valid |= data[b] != nd_val
            else:
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
        try:
            data = ds.read(window=rw, out_shape=(ds.count, *out_shape), resampling=Resampling[resampling])
            valid = ds.dataset_mask(window=rw, out_shape=out_shape, resampling=Resampling.nearest) > 0
        except RasterioIOError as e:
            raise SceneReadError(f"{self.uri}: read failed at window {src_window} ({' '.join(str(e).split())})") from e
        if data.dtype.kind == "f":
            valid &= np.isfinite(data).all(axis=0)
        return data, valid

    def read_resampled(self, out_shape: tuple[int, int], bands: Sequence[int] | None = None, resampling: str = "average") -> np.ndarray:
        """Decimated read of the whole scene onto ``out_shape`` (for quicklooks; uses overviews)."""
        from rasterio.enums import Resampling

        ds = self._ds()
        idx = list(bands) if bands is not None else list(range(1, ds.count + 1))
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


# --------------------------------------------------------------------------------------------
# band stacks: several files (e.g. one per Sentinel-2 band) read as one scene
# --------------------------------------------------------------------------------------------
_ALIGN_TOL_PX = 0.01  # extents may differ by at most this fraction of a pixel of the finest grid


def _crs_name(wkt: str) -> str:
    from pyproj import CRS

    try:
        crs = CRS.from_user_input(wkt)
        epsg = crs.to_epsg()
        return f"EPSG:{epsg}" if epsg else crs.name
    except Exception:  # noqa: BLE001
        return "an unparsable CRS"


def open_stack(uris: Sequence[str], band_names: Sequence[str] | None = None) -> SceneInfo:
    """Open several GeoTIFFs as one scene whose bands are the files' bands, in the given order.

    The files must share a CRS and cover the same extent; they may differ in resolution
    (Sentinel-2's 20 m bands beside its 10 m bands): the scene takes the grid of the finest
    file (smallest pixel area; the first such file), and coarser files are resampled onto it when
    read (:class:`StackReader`). Band names default to the file stems (``B02``…), with
    ``_<description or bN>`` appended for the bands of multi-band files.

    Args:
        uris: paths or fsspec URLs, one or more bands each, all of one data type.
        band_names: one name per band of the stack.

    Raises:
        SceneReadError / InputError: as :func:`open_scene`, naming the offending file; also
            different data types.
        GridMismatchError: a file with another CRS, or whose extent does not line up.
    """
    if not uris:
        raise InputError("no scene files were given; pass a GeoTIFF or a list of single-band GeoTIFFs")
    infos = [open_scene(u) for u in uris]
    ref = min(infos, key=lambda i: (i.grid.res[0] * i.grid.res[1], infos.index(i)))
    ry, rx = ref.grid.res
    for info in infos:
        if info.dtype != infos[0].dtype:
            raise InputError(
                f"{info.uri}: data type {info.dtype} differs from {infos[0].uri}'s {infos[0].dtype}; "
                "all files of a band stack need one data type (convert with `gdal_translate -ot`)"
            )
        if not crs_equal(info.grid.crs_wkt, ref.grid.crs_wkt):
            raise GridMismatchError(
                f"{info.uri}: its CRS ({_crs_name(info.grid.crs_wkt)}) differs from {ref.uri}'s "
                f"({_crs_name(ref.grid.crs_wkt)}); all files of a band stack must share one CRS. "
                f"Reproject it first, e.g. `gdalwarp -t_srs <CRS of {ref.uri}> -tr {rx} {ry}`"
            )
        b, rb = info.grid.bounds, ref.grid.bounds
        off_px = max(abs(b[0] - rb[0]) / rx, abs(b[2] - rb[2]) / rx, abs(b[1] - rb[1]) / ry, abs(b[3] - rb[3]) / ry)
        if off_px > _ALIGN_TOL_PX:
            raise GridMismatchError(
                f"{info.uri}: its extent {tuple(round(v, 6) for v in b)} does not line up with {ref.uri}'s "
                f"{tuple(round(v, 6) for v in rb)} (off by {off_px:.3g} pixels of the {rx:g} grid); files of a "
                f"band stack must cover the same extent. Cut it with `gdalwarp -te {rb[0]} {rb[1]} {rb[2]} {rb[3]}`"
            )
    names: list[str] = []
    for info in infos:
        stem = PurePosixPath(str(info.uri).rstrip("/")).stem
        if info.count == 1:
            names.append(stem)
        else:
            names.extend(f"{stem}_{d if d else f'b{i + 1}'}" for i, d in enumerate(info.descriptions))
    if len(set(names)) != len(names):
        names = [f"b{i + 1}" for i in range(len(names))]
    if band_names is not None:
        if len(band_names) != len(names):
            raise InputError(
                f"{infos[0].uri} (+{len(infos) - 1} more files): the stack has {len(names)} bands but "
                f"{len(band_names)} band names were given: {list(band_names)}"
            )
        names = list(band_names)
    nodatas = {("nan" if n is not None and np.isnan(n) else n) for n in (i.nodata for i in infos)}
    nodata = infos[0].nodata if len(nodatas) == 1 else None
    kinds = {i.mask_kind for i in infos}
    return SceneInfo(
        uri=infos[0].uri,
        grid=ref.grid,
        count=sum(i.count for i in infos),
        dtype=infos[0].dtype,
        nodata=nodata,
        band_names=tuple(names),
        mask_kind=kinds.pop() if len(kinds) == 1 else "mixed",
        is_geographic=ref.is_geographic,
        driver=ref.driver,
        block_shape=ref.block_shape,
        descriptions=tuple(d for i in infos for d in i.descriptions),
        members=tuple(infos),
    )


class StackReader:
    """Windowed reader of a band stack (:func:`open_stack`) on the grid of its finest file.

    Files on that grid are read as they are; the others are read through a fractional source
    window resampled onto the window's pixels (GDAL, ``resampling``; bilinear suits
    reflectance), window by window, so the result does not depend on the window layout.
    Thread-safe and picklable like :class:`SceneReader`.
    """

    def __init__(self, info: SceneInfo, resampling: str = "bilinear"):
        from rasterio.enums import Resampling

        if resampling not in Resampling.__members__:
            raise InputError(f"resampling={resampling!r} is not a GDAL resampling; use one of "
                             f"{', '.join(m for m in Resampling.__members__ if not m.startswith('_'))}")
        self.info = info
        self.resampling = resampling
        self._readers = [SceneReader(m.uri) for m in (info.members or (info,))]
        self._maps = [self._mapping(m.grid, info.grid) for m in (info.members or (info,))]

    @staticmethod
    def _mapping(g: Grid, ref: Grid) -> tuple[float, float, float, float, int, int] | None:
        """``(row0, col0, row_scale, col_scale, height, width)``: file pixel = offset + scale * scene
        pixel, and the file's size; None when the file is on the scene grid."""
        a, _, c, _, e, f = g.transform
        ra, _, rc, _, re, rf = ref.transform
        row0, col0 = (rf - f) / e, (rc - c) / a
        sy, sx = re / e, ra / a
        if (g.height, g.width) == (ref.height, ref.width) and abs(row0) < 1e-6 and abs(col0) < 1e-6 \
                and abs(sy - 1) < 1e-9 and abs(sx - 1) < 1e-9:
            return None
        return (row0, col0, sy, sx, g.height, g.width)

    def read(self, win: Window) -> tuple[np.ndarray, np.ndarray]:
        """Read ``win`` of the scene grid: ``(data (bands, h, w), valid (h, w) bool)``; valid in every file."""
        parts = []
        valid = None
        for reader, mp in zip(self._readers, self._maps, strict=True):
            if mp is None:
                d, v = reader.read(win)
            else:
                row0, col0, sy, sx, fh, fw = mp
                r0, c0 = max(0.0, row0 + sy * win.row_off), max(0.0, col0 + sx * win.col_off)
                r1 = min(float(fh), row0 + sy * (win.row_off + win.height))  # extents agree to 1 % of a
                c1 = min(float(fw), col0 + sx * (win.col_off + win.width))  # pixel: clamp the rounding
                d, v = reader.read_onto((r0, c0, r1 - r0, c1 - c0), (win.height, win.width), self.resampling)
            parts.append(d)
            valid = v if valid is None else (valid & v)
        data = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
        assert valid is not None
        return data, valid

    def close_thread(self) -> None:
        """Close the calling thread's datasets (see :meth:`SceneReader.close_thread`)."""
        for r in self._readers:
            r.close_thread()

    def close(self) -> None:
        """Close every dataset."""
        for r in self._readers:
            r.close()

    def __enter__(self) -> StackReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def sha256_of(uri: str, block_bytes: int = 8 << 20) -> str:
    """Streaming sha256 of a file (path or URL), hex."""
    from unetgeo.io.uri import sha256_of as _sha

    return str(_sha(uri, block_bytes=block_bytes))


def geotiff_profile(
    grid: Grid,
    count: int,
    dtype: str,
    nodata: float | None,
    *,
    block_px: int = 512,
    compress: str = "deflate",
    predictor: int | None = None,
    bigtiff: str = "IF_SAFER",
    **extra: Any,
) -> dict[str, Any]:
    """Creation options of a tiled GeoTIFF on ``grid`` (rasterio ``open(..., "w", **profile)``)."""
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
        **extra,
    )
    if predictor is not None:
        profile["predictor"] = predictor
    return profile


class RasterWriter(PublishOnExit):
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
        profile = geotiff_profile(grid, count, dtype, nodata, block_px=block_px, compress=compress,
                                  predictor=predictor, bigtiff=bigtiff)
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
