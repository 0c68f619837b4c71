"""GeoTIFF writing shared by :class:`~unetgeo.io.scene.RasterWriter` and :class:`~unetgeo.io.cog.CogWriter`.

:func:`geotiff_profile` gives the creation options of a tiled GeoTIFF; :class:`WindowWriter` writes
windows into an open one from any thread; :class:`TiffFileWriter` is the common base of the two
writers: the arguments both take (declared once, as dataclass fields), where the file is built
(beside the output, or in a local temp folder for URLs) and how it is published or removed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import warnings
from collections.abc import Sequence
from dataclasses import KW_ONLY, dataclass
from typing import Any, ClassVar

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window as RioWindow

from unetgeo.grid import Grid, Window
from unetgeo.io import uri as U
from unetgeo.io.uri import PublishOnExit

#: Creation options of every GeoTIFF written here: internally tiled, compressed on all cores.
GTIFF_OPTIONS: dict[str, Any] = {"driver": "GTiff", "tiled": True, "num_threads": "ALL_CPUS"}


def grid_profile(grid: Grid) -> dict[str, Any]:
    """The georeferencing of ``grid`` as rasterio profile keys.

    Args:
        grid: pixel grid (CRS, transform, size).

    Returns:
        ``{"width", "height", "crs", "transform"}`` (``crs`` None when the grid has none).
    """
    return {"width": grid.width, "height": grid.height, "crs": grid.crs_wkt or None,
            "transform": rasterio.Affine(*grid.transform)}


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
    """Creation options of a tiled GeoTIFF on ``grid`` (rasterio ``open(..., "w", **profile)``).

    Args:
        grid: pixel grid (CRS, transform, size).
        count: number of bands.
        dtype: numpy dtype name.
        nodata: nodata value or None.
        block_px: internal tile side (multiple of 16).
        compress: GDAL compression (``deflate``, ``zstd``, ``lzw``…).
        predictor: TIFF predictor (2 for integers, 3 for floats) or None for none.
        bigtiff: GDAL ``BIGTIFF`` creation option.
        **extra: further creation options (``zlevel=1`` …).

    Returns:
        :data:`GTIFF_OPTIONS` plus the grid's georeferencing and the options above.
    """
    layout = {"count": count, "dtype": dtype, "nodata": nodata, "blockxsize": block_px, "blockysize": block_px,
              "compress": compress, "BIGTIFF": bigtiff}
    if predictor is not None:
        layout["predictor"] = predictor
    return dict(GTIFF_OPTIONS, **grid_profile(grid), **layout, **extra)


class WindowWriter:
    """A GeoTIFF open for writing window by window, from any thread (the base of the raster writers)."""

    _ds: Any
    _lock: threading.Lock

    def _open_for_write(self, path: str, profile: dict[str, Any], *, band_names: Sequence[str] | None = None,
                        colormap: dict[int, tuple[int, ...]] | None = None, tags: dict[str, Any] | None = None,
                        scales: Sequence[float] | None = None) -> None:
        """Create ``path`` with ``profile`` and its band descriptions, colour table, tags and scales."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            self._ds = rasterio.open(path, "w", **profile)
        for i, n in enumerate(band_names or (), start=1):
            self._ds.set_band_description(i, str(n))
        if colormap:
            self._ds.write_colormap(1, colormap)
        if tags:
            self._ds.update_tags(**{k: str(v) for k, v in tags.items()})
        if scales is not None:
            self._ds.scales = tuple(float(v) for v in scales)
        self._lock = threading.Lock()

    def write(self, win: Window, data: np.ndarray) -> None:
        """Write ``data`` (``(bands, h, w)`` or ``(h, w)`` for one band) at ``win``. Thread-safe."""
        arr = data if data.ndim == 3 else data[None]
        rw = RioWindow(win.col_off, win.row_off, win.width, win.height)
        with self._lock:
            self._ds.write(arr, window=rw)


@dataclass(eq=False, repr=False)
class TiffFileWriter(WindowWriter, PublishOnExit):
    """What the GeoTIFF writers share: their common arguments, staging, publishing and clean-up.

    A subclass (itself a dataclass) adds its own keyword arguments as fields and opens its file in
    ``__post_init__`` with :meth:`_staging_base` and :meth:`_open`; its ``close`` publishes with
    :meth:`_publish`, and :meth:`abort` removes its :meth:`_temp_files`.

    Args:
        uri: final path or URL.
        grid: pixel grid (CRS, transform, size).
        count: number of bands.
        dtype: numpy dtype name (``uint8``, ``float32`` …).
        nodata: nodata value or None.
        block_px: internal tile side of the output (multiple of 16).
        compress: GDAL compression of the output (``deflate``, ``zstd``, ``lzw``…).
        predictor: TIFF predictor (2 for integers, 3 for floats) or None.
        band_names: band descriptions.
        colormap: ``{value: (r, g, b[, a])}`` colour table of band 1 (uint8/uint16 only).
        tags: dataset metadata tags.
    """

    uri: str
    grid: Grid
    count: int
    dtype: str
    nodata: float | None = None
    _: KW_ONLY
    block_px: int = 512
    compress: str = "deflate"
    predictor: int | None = None
    band_names: Sequence[str] | None = None
    colormap: dict[int, tuple[int, ...]] | None = None
    tags: dict[str, str] | None = None

    #: Prefix of the local temp folder in which a file bound for a URL is built.
    _tmp_prefix: ClassVar[str] = "unetgeo-"

    def _staging_base(self) -> str:
        """Prepare the place where the file is built and return the stem of the files built there.

        Sets ``uri`` (as str), ``_remote`` and ``_tmpdir``. A URL's files are built in a new local
        temp folder; a local output's beside it, under a name unique to this writer (two writers
        of one file never share a temporary file), its folder created when missing.

        Returns:
            The stem: the files built are the stem plus a ``.tmp`` suffix.
        """
        self.uri = str(self.uri)
        self._remote = U.is_url(self.uri)
        if self._remote:
            self._tmpdir: str | None = tempfile.mkdtemp(prefix=self._tmp_prefix)
            return os.path.join(self._tmpdir, os.path.basename(self.uri))
        self._tmpdir = None
        local = U.local_path(self.uri)
        local.parent.mkdir(parents=True, exist_ok=True)
        return U.tmp_name(str(local))[: -len(".tmp")]

    def _open(self, path: str, *, scales: Sequence[float] | None = None, **profile: Any) -> None:
        """Create ``path`` from this writer's arguments, with ``profile`` overriding creation options.

        Args:
            path: the file to create.
            scales: per-band scale factors to record, or None.
            **profile: :func:`geotiff_profile` keywords that replace the writer's (``block_px``,
                ``compress``, ``zlevel`` …).
        """
        options: dict[str, Any] = {"block_px": self.block_px, "compress": self.compress, "predictor": self.predictor}
        options.update(profile)
        self._open_for_write(path, geotiff_profile(self.grid, self.count, self.dtype, self.nodata, **options),
                             band_names=self.band_names, colormap=self.colormap, tags=self.tags, scales=scales)

    def _publish(self, built: str) -> None:
        """Put the finished file ``built`` under :attr:`uri` (a rename, or an upload for URLs).

        Args:
            built: the local file to publish; the temp folder of a URL is removed afterwards.
        """
        if self._remote:
            fs, path = U.fs_for(self.uri)
            fs.put_file(built, path)
        else:
            os.replace(built, U.local_path(self.uri))
        self._remove_tmpdir()

    @property
    def dataset(self) -> Any:
        """The open rasterio dataset (for overviews or tags before closing)."""
        return self._ds

    def abort(self) -> None:
        """Close and delete the partial file(s)."""
        try:
            self._ds.close()
        finally:
            self._cleanup()

    def _temp_files(self) -> tuple[str, ...]:  # pragma: no cover - subclasses implement it
        """The local files this writer may have left (removed by :meth:`_cleanup`)."""
        raise NotImplementedError

    def _cleanup(self) -> None:
        """Remove every temporary file and the temp folder (after an abort or a failed close)."""
        for p in self._temp_files():
            remove_local(p)
        self._remove_tmpdir()

    def _remove_tmpdir(self) -> None:
        if self._tmpdir:
            shutil.rmtree(self._tmpdir, ignore_errors=True)


def remove_local(path: str) -> None:
    """Delete the local file ``path`` if it exists.

    Args:
        path: a local file path.
    """
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
