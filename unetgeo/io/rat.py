"""Class legends inside the GeoTIFF: a raster attribute table (RAT) written by GDAL ≥ 3.12.

GDAL 3.12's GeoTIFF driver stores a band's default RAT in the TIFF itself (the
``DEFAULT_RASTER_ATTRIBUTE_TABLE`` item of the GDAL_METADATA tag); older drivers write it to a PAM
``.aux.xml`` that is lost when the ``.tif`` is copied alone. rasterio's wheels bundle GDAL 3.10 and
have no RAT API, so this module drives a GDAL ≥ 3.12 through its C API (ctypes): rasterio's own
libgdal when it is new enough, else the one that pyogrio's wheel bundles. When neither is there,
:func:`available` is False and class rasters keep their tags, colour table and sidecars only.

The table has one row per class: ``Value`` (class id, GFU_MinMax), ``Class`` (name, GFU_Name) and
``Red``/``Green``/``Blue``/``Alpha`` (0–255), the layout QGIS (3.30+) reads as a paletted legend.
"""

from __future__ import annotations

import ctypes
import glob
import importlib.util
import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

#: The first GDAL release whose GeoTIFF driver keeps a RAT inside the file.
MIN_VERSION = 3_12_00_00

_OF_RASTER, _OF_UPDATE = 0x02, 0x01
_GFT_INTEGER, _GFT_STRING = 0, 2
_GFU_NAME, _GFU_MINMAX, _GFU_RED, _GFU_GREEN, _GFU_BLUE, _GFU_ALPHA = 2, 5, 6, 7, 8, 9
_COLUMNS = (("Value", _GFT_INTEGER, _GFU_MINMAX), ("Class", _GFT_STRING, _GFU_NAME),
            ("Red", _GFT_INTEGER, _GFU_RED), ("Green", _GFT_INTEGER, _GFU_GREEN),
            ("Blue", _GFT_INTEGER, _GFU_BLUE), ("Alpha", _GFT_INTEGER, _GFU_ALPHA))


@dataclass(frozen=True)
class ClassRow:
    """One row of a class raster's attribute table."""

    value: int
    name: str
    rgba: tuple[int, int, int, int]


class _Gdal:
    """The few GDAL C functions this module needs, bound on one libgdal."""

    def __init__(self, path: str):
        lib = ctypes.CDLL(path)
        vp, ci, cp = ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p
        sigs: dict[str, tuple[list[Any], Any]] = {
            "GDALVersionInfo": ([cp], cp), "GDALAllRegister": ([], None),
            "CPLSetConfigOption": ([cp, cp], None), "OSRSetPROJSearchPaths": ([ctypes.POINTER(cp)], None),
            "GDALOpenEx": ([cp, ctypes.c_uint, vp, vp, vp], vp), "GDALClose": ([vp], ci),
            "GDALGetRasterBand": ([vp, ci], vp), "GDALGetDriverByName": ([cp], vp),
            "GDALCreateCopy": ([vp, cp, vp, ci, ctypes.POINTER(cp), vp, vp], vp),
            "GDALCreateRasterAttributeTable": ([], vp), "GDALDestroyRasterAttributeTable": ([vp], None),
            "GDALRATCreateColumn": ([vp, cp, ci, ci], ci), "GDALRATSetRowCount": ([vp, ci], None),
            "GDALRATSetValueAsInt": ([vp, ci, ci, ci], None), "GDALRATSetValueAsString": ([vp, ci, ci, cp], None),
            "GDALSetDefaultRAT": ([vp, vp], ci), "GDALGetDefaultRAT": ([vp], vp),
            "GDALRATGetRowCount": ([vp], ci), "GDALRATGetColumnCount": ([vp], ci),
            "GDALRATGetUsageOfCol": ([vp, ci], ci), "GDALRATGetValueAsInt": ([vp, ci, ci], ci),
            "GDALRATGetValueAsString": ([vp, ci, ci], cp), "CPLGetLastErrorMsg": ([], cp),
        }
        for name, (args, res) in sigs.items():
            fn = getattr(lib, name)
            fn.argtypes, fn.restype = args, res
        self.lib = lib
        self.version = int(lib.GDALVersionInfo(b"VERSION_NUM"))
        self.path = path

    def setup(self) -> None:
        """Register drivers and point the library at its own GDAL and PROJ data (when bundled)."""
        lib = self.lib
        here = os.path.dirname(os.path.dirname(self.path))
        for pkg in ("pyogrio", "rasterio"):
            data = os.path.join(here, pkg, "gdal_data")
            if self.path.startswith(os.path.join(here, pkg)) and os.path.isdir(data):
                lib.CPLSetConfigOption(b"GDAL_DATA", os.fsencode(data))
                proj = os.path.join(here, pkg, "proj_data")
                if os.path.isdir(proj):
                    lib.OSRSetPROJSearchPaths((ctypes.c_char_p * 2)(os.fsencode(proj), None))
        lib.GDALAllRegister()

    def error(self, what: str, path: str) -> OSError:
        msg = (self.lib.CPLGetLastErrorMsg() or b"").decode(errors="replace")
        return OSError(f"{path}: {what} failed" + (f": {msg}" if msg else ""))

    def open(self, path: str, update: bool = False) -> int:
        flags = _OF_RASTER | (_OF_UPDATE if update else 0)
        h = self.lib.GDALOpenEx(os.fsencode(path), flags, None, None, None)
        if not h:
            raise self.error("GDALOpenEx", path)
        return h


_LIB: list[_Gdal | None] = []
_LIB_LOCK = threading.Lock()


def _candidates() -> list[str]:
    """libgdal files that may be new enough: rasterio's own, then pyogrio's bundled one."""
    out: list[str] = []
    for pkg in ("rasterio", "pyogrio"):
        spec = importlib.util.find_spec(pkg)
        if spec is None or not spec.submodule_search_locations:
            continue
        site = os.path.dirname(next(iter(spec.submodule_search_locations)))
        out += sorted(glob.glob(os.path.join(site, f"{pkg}.libs", "libgdal*.so*")))
    return out


def _library() -> _Gdal | None:
    with _LIB_LOCK:
        if not _LIB:
            found = None
            if os.environ.get("UNETGEO_RAT", "yes").lower() not in ("0", "no", "off"):
                for path in _candidates():
                    try:
                        g = _Gdal(path)
                    except (OSError, AttributeError) as e:
                        log.debug("%s not usable for RATs: %s", path, e)
                        continue
                    if g.version >= MIN_VERSION:
                        g.setup()
                        found = g
                        break
            if found is None:
                log.info("no GDAL >= 3.12 found: class names stay in tags, colour table and .aux.xml")
            _LIB.append(found)
        return _LIB[0]


def available() -> bool:
    """True when a GDAL that stores RATs inside GeoTIFFs can be used."""
    return _library() is not None


def _required() -> _Gdal:
    g = _library()
    if g is None:
        raise RuntimeError("no GDAL >= 3.12 available for raster attribute tables")
    return g


def class_rows(class_names: Sequence[str], rgba: Sequence[tuple[int, int, int, int]]) -> list[ClassRow]:
    """Rows for classes ``0..n-1``."""
    return [ClassRow(i, str(n), tuple(int(v) for v in c)) for i, (n, c) in enumerate(zip(class_names, rgba, strict=True))]


def set_class_table(path: str, rows: Sequence[ClassRow], band: int = 1) -> None:
    """Write ``rows`` as the default RAT of ``band`` of the local GeoTIFF ``path`` (in the file).

    Raises:
        RuntimeError: no GDAL ≥ 3.12 (check :func:`available` first).
        OSError: GDAL could not open or update the file.
    """
    g = _required()
    lib = g.lib
    h = g.open(path, update=True)
    rat = lib.GDALCreateRasterAttributeTable()
    try:
        for name, ftype, usage in _COLUMNS:
            if lib.GDALRATCreateColumn(rat, name.encode(), ftype, usage) != 0:
                raise g.error(f"creating RAT column {name}", path)
        lib.GDALRATSetRowCount(rat, len(rows))
        for r, row in enumerate(rows):
            lib.GDALRATSetValueAsInt(rat, r, 0, int(row.value))
            lib.GDALRATSetValueAsString(rat, r, 1, row.name.encode())
            for c, v in enumerate(row.rgba):
                lib.GDALRATSetValueAsInt(rat, r, 2 + c, int(v))
        if lib.GDALSetDefaultRAT(lib.GDALGetRasterBand(h, band), rat) != 0:
            raise g.error("GDALSetDefaultRAT", path)
    finally:
        lib.GDALDestroyRasterAttributeTable(rat)
        if lib.GDALClose(h) != 0:
            raise g.error("writing the RAT", path)


def read_class_table(path: str, band: int = 1) -> list[ClassRow] | None:
    """The class rows of ``band``'s default RAT as GDAL ≥ 3.12 reads it, None when it has none.

    Columns are found by usage (GFU_MinMax, GFU_Name, GFU_Red/Green/Blue/Alpha), so tables written
    by other tools are read too; a missing colour column reads as 0 (alpha as 255).
    """
    g = _required()
    lib = g.lib
    h = g.open(path)
    try:
        rat = lib.GDALGetDefaultRAT(lib.GDALGetRasterBand(h, band))
        if not rat:
            return None
        by_usage = {lib.GDALRATGetUsageOfCol(rat, c): c for c in range(lib.GDALRATGetColumnCount(rat))}
        if _GFU_MINMAX not in by_usage or _GFU_NAME not in by_usage:
            return None
        rows = []
        for r in range(lib.GDALRATGetRowCount(rat)):
            rgba = tuple(lib.GDALRATGetValueAsInt(rat, r, by_usage[u]) if u in by_usage else default
                         for u, default in ((_GFU_RED, 0), (_GFU_GREEN, 0), (_GFU_BLUE, 0), (_GFU_ALPHA, 255)))
            name = (lib.GDALRATGetValueAsString(rat, r, by_usage[_GFU_NAME]) or b"").decode()
            rows.append(ClassRow(lib.GDALRATGetValueAsInt(rat, r, by_usage[_GFU_MINMAX]), name, rgba))
        return rows
    finally:
        lib.GDALClose(h)


def copy_as_cog(src: str, dst: str, options: dict[str, Any]) -> None:
    """``src`` (a local GeoTIFF, overviews included) to the COG ``dst`` with this GDAL, RAT kept."""
    g = _required()
    lib = g.lib
    h = g.open(src)
    try:
        opts = [f"{k}={v}".encode() for k, v in options.items()]
        arr = (ctypes.c_char_p * (len(opts) + 1))(*opts, None)
        out = lib.GDALCreateCopy(lib.GDALGetDriverByName(b"COG"), os.fsencode(dst), h, 0, arr, None, None)
        if not out:
            raise g.error("COG CreateCopy", dst)
        if lib.GDALClose(out) != 0:
            raise g.error("COG close", dst)
    finally:
        lib.GDALClose(h)
