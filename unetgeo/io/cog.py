"""Cloud-optimised GeoTIFF output, written window by window, plus class-raster sidecars.

:class:`CogWriter` writes windows into a tiled staging GeoTIFF (``URI.<pid>-<random>.stage.tmp``),
builds its internal overviews with GDAL (streaming), converts it with GDAL's COG driver (streaming)
to ``URI.<pid>-<random>.tmp`` and renames that to ``URI`` (unique names: two writers of one file
never share a temporary file). For fsspec URLs both files are built in a local temp
folder and the COG is uploaded on close. Nothing here holds a raster in memory.

Class rasters carry their legend inside the TIFF: the colour table of band 1, the dataset tags
``class_names`` / ``class_colors`` (JSON lists) and one band-1 item ``CLASS_<id>=name`` per class
(all in the TIFF's GDAL_METADATA tag, so a copy of the ``.tif`` alone keeps them; ``gdalinfo``
lists them under Band 1 Metadata). Where a GDAL >= 3.12 is at hand (pyogrio's wheel bundles one),
class rasters also get a raster attribute table inside the TIFF (:mod:`unetgeo.io.rat`: value,
name, RGBA), which QGIS shows as the legend of the ``.tif`` alone. Older GDALs (rasterio's 3.10)
can only keep category names and RATs in PAM ``.aux.xml``, so class rasters also get sidecars:
``NAME.qml`` (QGIS paletted style, loaded automatically) and ``NAME.aux.xml`` (GDAL PAM
``<CategoryNames>``, for readers older than GDAL 3.12).
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar
from xml.sax.saxutils import escape, quoteattr

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning

from unetgeo.io import rat
from unetgeo.io import uri as U
from unetgeo.io._gtiff import TiffFileWriter, remove_local
from unetgeo.io.scene import gdal_env, open_dataset

log = logging.getLogger(__name__)

#: Dataset tags written on class rasters (JSON lists) and read back by :func:`read_class_info`.
TAG_CLASS_NAMES = "class_names"
TAG_CLASS_COLORS = "class_colors"
#: Band-1 metadata item of class ``i`` on class rasters: ``CLASS_<i>=<name>``.
BAND_TAG_CLASS = "CLASS_{}"

#: Colours of classes that come without any (matplotlib's tab10), ``'#rrggbb'``.
DEFAULT_CLASS_COLORS = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)


def default_class_colors(n_classes: int) -> list[str]:
    """``n_classes`` colours from :data:`DEFAULT_CLASS_COLORS`, repeating after ten."""
    return [DEFAULT_CLASS_COLORS[i % len(DEFAULT_CLASS_COLORS)] for i in range(n_classes)]


def overview_factors(height: int, width: int, block_px: int = 512) -> list[int]:
    """Overview decimation factors ``[2, 4, …]`` until the smallest level fits in one block.

    Factor ``2**k`` is included while level ``k-1`` (size ``ceil(n / 2**(k-1))``) is still larger
    than ``block_px`` on either axis, the rule GDAL's COG driver uses.
    """
    out: list[int] = []
    f = 2
    while math.ceil(height / (f // 2)) > block_px or math.ceil(width / (f // 2)) > block_px:
        out.append(f)
        f *= 2
    return out


def hex_to_rgba(color: str, alpha: int = 255) -> tuple[int, int, int, int]:
    """``'#rrggbb'`` to an ``(r, g, b, a)`` tuple of 0–255 ints."""
    c = color.lstrip("#")
    return (int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16), alpha)


@dataclass(eq=False, repr=False)
class CogWriter(TiffFileWriter):
    """Write a raster window by window and publish it as a COG with internal overviews.

    Args:
        uri, grid, count, dtype, nodata, predictor, band_names, colormap: as in
            :class:`~unetgeo.io._gtiff.TiffFileWriter`.
        block_px: internal tile side of the COG (multiple of 16); overviews stop at one block.
        compress: GDAL compression of the COG (the staging file is always fast deflate).
        tags: dataset metadata tags; when they hold ``class_names`` (:func:`class_raster_tags`), band 1
            also gets one ``CLASS_<id>=name`` item per class (:func:`class_band_tags`).
        resampling: overview resampling (``mode`` for classes, ``average`` for continuous data).
        scales: optional per-band scale factors (``value = raw * scale``).
        stage_block_px: tile side of the staging file (defaults to ``block_px``); match it to the
            windows you write so each staging tile is written once.

    Use as a context manager: on an exception the partial files are removed.
    """

    resampling: str = field(default="nearest", kw_only=True)
    scales: Sequence[float] | None = field(default=None, kw_only=True)
    stage_block_px: int | None = field(default=None, kw_only=True)

    _tmp_prefix: ClassVar[str] = "unetgeo-cog-"

    def __post_init__(self) -> None:
        self.stage_block_px = self.stage_block_px or self.block_px
        for name, v in (("block_px", self.block_px), ("stage_block_px", self.stage_block_px)):
            if v % 16:
                raise ValueError(f"{name}={v} must be a multiple of 16; use {16 * math.ceil(v / 16)}")
        base = self._staging_base()
        self.stage = base + ".stage.tmp"
        self.tmp = base + ".tmp"
        # the staging file is read once: fast compression
        self._open(self.stage, block_px=self.stage_block_px, compress="deflate", zlevel=1, scales=self.scales)
        names = parse_class_names((self.tags or {}).get(TAG_CLASS_NAMES))
        if names:
            self._ds.update_tags(1, **class_band_tags(names))
        self._closed = False

    @property
    def closed(self) -> bool:
        """True once :meth:`close` or :meth:`abort` ran."""
        return self._closed

    def close(self) -> str:
        """Build overviews, convert to COG, publish under the final URI.

        Returns:
            The final URI.
        """
        if self._closed:
            return self.uri
        self._closed = True
        factors = overview_factors(self.grid.height, self.grid.width, self.block_px)
        try:
            self._ds.close()
            if factors:
                with rasterio.Env(COMPRESS_OVERVIEW="DEFLATE", ZLEVEL_OVERVIEW="1", BIGTIFF_OVERVIEW="IF_SAFER",
                                  GDAL_NUM_THREADS="ALL_CPUS"):
                    with rasterio.open(self.stage, "r+") as ds:
                        ds.build_overviews(factors, Resampling[self.resampling])
            self._convert()
            remove_local(self.stage)
            remove_local(self.tmp + ".aux.xml")  # GDAL may leave PAM items it could not store
            self._publish(self.tmp)
        except BaseException:
            self._cleanup()
            raise
        log.info("wrote COG %s (overview factors %s)", self.uri, factors)
        return self.uri

    def _convert(self) -> None:
        """Convert the staging file (with its overviews) to the COG ``self.tmp``."""
        opts: dict[str, Any] = dict(
            COMPRESS=self.compress.upper(),
            BLOCKSIZE=self.block_px,
            BIGTIFF="IF_SAFER",
            OVERVIEWS="AUTO",
            RESAMPLING=self.resampling.upper(),
            NUM_THREADS="ALL_CPUS",
        )
        if self.predictor is not None:
            opts["PREDICTOR"] = "YES" if self.predictor in (2, 3) else "NO"
        rows = self._class_rows()
        if rows and rat.available():
            # GDAL >= 3.12 keeps the class table (RAT) inside the TIFF, through the COG copy too
            rat.set_class_table(self.stage, rows)
            rat.copy_as_cog(self.stage, self.tmp, opts)
            return
        # no PAM: everything (tags, band items, colour table) goes into the TIFF or is refused
        with warnings.catch_warnings(), rasterio.Env(GDAL_PAM_ENABLED="NO"):
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            rasterio.shutil.copy(self.stage, self.tmp, driver="COG", **opts)

    def _class_rows(self) -> list[rat.ClassRow] | None:
        """Attribute-table rows of a class raster (names and colours from its tags), else None."""
        tags = self.tags or {}
        names = parse_class_names(tags.get(TAG_CLASS_NAMES))
        if not names:
            return None
        colors = json.loads(tags[TAG_CLASS_COLORS]) if TAG_CLASS_COLORS in tags else default_class_colors(len(names))
        return rat.class_rows(names, [hex_to_rgba(c) for c in colors])

    def abort(self) -> None:
        """Close and delete the partial files."""
        self._closed = True
        super().abort()

    def _temp_files(self) -> tuple[str, ...]:
        return (self.stage, self.tmp, self.tmp + ".aux.xml", self.stage + ".ovr")


# -- sidecars ------------------------------------------------------------------------------------


def qml_paletted(class_names: Sequence[str], class_colors: Sequence[str], band: int = 1) -> str:
    """QGIS style (QML) of a paletted renderer: one entry per class id, value 255 left out (nodata)."""
    entries = "\n".join(
        f"        <paletteEntry value=\"{i}\" color={quoteattr(c.lower())} label={quoteattr(str(n))} alpha=\"255\"/>"
        for i, (n, c) in enumerate(zip(class_names, class_colors, strict=True))
    )
    return f"""<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>
<qgis version="3.28.0" styleCategories="AllStyleCategories">
  <pipe>
    <rasterrenderer type="paletted" band="{band}" opacity="1" alphaBand="-1" nodataColor="">
      <rasterTransparency/>
      <minMaxOrigin>
        <limits>None</limits>
        <extent>WholeRaster</extent>
        <statAccuracy>Estimated</statAccuracy>
        <cumulativeCutLower>0.02</cumulativeCutLower>
        <cumulativeCutUpper>0.98</cumulativeCutUpper>
        <stdDevFactor>2</stdDevFactor>
      </minMaxOrigin>
      <colorPalette>
{entries}
      </colorPalette>
    </rasterrenderer>
    <brightnesscontrast brightness="0" contrast="0" gamma="1"/>
    <huesaturation saturation="0" grayscaleMode="0" colorizeOn="0" colorizeRed="255" colorizeGreen="128" colorizeBlue="0" colorizeStrength="100"/>
    <rasterresampler maxOversampling="2"/>
  </pipe>
  <blendMode>0</blendMode>
</qgis>
"""


def pam_category_names(class_names: Sequence[str], band: int = 1) -> str:
    """GDAL PAM (``.aux.xml``) document holding the category names of ``band``."""
    cats = "\n".join(f"      <Category>{escape(str(n))}</Category>" for n in class_names)
    return f"""<PAMDataset>
  <PAMRasterBand band="{band}">
    <CategoryNames>
{cats}
    </CategoryNames>
  </PAMRasterBand>
</PAMDataset>
"""


def write_class_sidecars(uri: str, class_names: Sequence[str], class_colors: Sequence[str]) -> list[str]:
    """Write ``<stem>.qml`` (QGIS legend) and ``<uri>.aux.xml`` (GDAL category names) next to ``uri``.

    Returns:
        The URIs written.
    """
    stem = uri[: -len(".tif")] if uri.lower().endswith(".tif") else uri
    qml = U.write_atomic(stem + ".qml", qml_paletted(class_names, class_colors))
    aux = U.write_atomic(uri + ".aux.xml", pam_category_names(class_names))
    return [qml, aux]


def class_raster_tags(class_names: Sequence[str], class_colors: Sequence[str], **extra: Any) -> dict[str, str]:
    """Dataset tags of a class raster: JSON class names/colours plus ``extra`` (None values dropped)."""
    tags = {TAG_CLASS_NAMES: json.dumps(list(class_names)), TAG_CLASS_COLORS: json.dumps(list(class_colors))}
    tags.update({k: str(v) for k, v in extra.items() if v is not None})
    return tags


def class_band_tags(class_names: Sequence[str]) -> dict[str, str]:
    """Band-1 items of a class raster: ``{"CLASS_0": name_0, …}`` (stored in the TIFF itself)."""
    return {BAND_TAG_CLASS.format(i): str(n) for i, n in enumerate(class_names)}


# -- reading -------------------------------------------------------------------------------------


def read_tags(uri: str) -> dict[str, str]:
    """Dataset metadata tags of a raster."""
    with open_dataset(uri) as ds:
        return dict(ds.tags())


def parse_class_names(value: str | None) -> list[str] | None:
    """Class names from a ``class_names`` tag: a JSON list (unetgeo class rasters) or
    comma-separated names (label rasters); None when absent or empty."""
    if not value or not value.strip():
        return None
    try:
        names = json.loads(value)
    except ValueError:
        names = [n.strip() for n in value.split(",")]
    return [str(n) for n in names] if isinstance(names, list) and names else None


def read_class_info(uri: str) -> tuple[list[str] | None, list[str] | None]:
    """``(class_names, class_colors)`` stored on a class raster by unetgeo (None when absent).

    Names come from the ``class_names`` tag, else from band 1's ``CLASS_<id>`` items; colours fall
    back to the raster's colour table when the tag is missing.
    """
    with open_dataset(uri) as ds:
        tags = ds.tags()
        names = parse_class_names(tags.get(TAG_CLASS_NAMES)) or _band_class_names(ds.tags(1))
        colors = json.loads(tags[TAG_CLASS_COLORS]) if TAG_CLASS_COLORS in tags else None
        if colors is None and names is not None:
            try:
                cmap = ds.colormap(1)
                colors = ["#{:02x}{:02x}{:02x}".format(*cmap[i][:3]) for i in range(len(names))]
            except ValueError:  # no colour table
                colors = None
    return names, colors


def _band_class_names(band_tags: dict[str, str]) -> list[str] | None:
    """Names from ``CLASS_0, CLASS_1, …`` band items (consecutive from 0), None when there are none."""
    names = []
    while BAND_TAG_CLASS.format(len(names)) in band_tags:
        names.append(band_tags[BAND_TAG_CLASS.format(len(names))])
    return names or None


def read_decimated(
    uri: str, out_shape: tuple[int, int], bands: Sequence[int] | None = None, resampling: str = "nearest"
) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float, float]]:
    """Read a whole raster decimated onto ``out_shape`` (uses overviews; never full resolution).

    Returns:
        ``(data (bands, h, w) file dtype, valid (h, w) bool, bounds (left, bottom, right, top))``.
    """
    with open_dataset(uri) as ds, gdal_env():
        idx = list(bands) if bands is not None else list(range(1, ds.count + 1))
        data = ds.read(indexes=idx, out_shape=(len(idx), *out_shape), resampling=Resampling[resampling])
        mask = ds.dataset_mask(out_shape=out_shape, resampling=Resampling.nearest) > 0
        if data.dtype.kind == "f":
            mask &= np.isfinite(data).all(axis=0)
        b = ds.bounds
        return data, mask, (b.left, b.bottom, b.right, b.top)
