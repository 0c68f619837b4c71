"""CRS helpers shared by the readers and the checks: comparison, kind, a short name for messages.

``pyproj`` is imported only when a helper is called.
"""

from __future__ import annotations


def crs_equal(wkt1: str, wkt2: str) -> bool:
    """True if two CRS definitions (WKT, ``EPSG:n``, PROJ) describe the same CRS (PROJ semantic comparison)."""
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


def crs_linear_unit(wkt: str) -> tuple[bool, float]:
    """``(geographic, metres per CRS unit)`` of a CRS (1.0 for geographic ones), through GDAL's OSR.

    rasterio's CRS is already loaded with the rasters; pyproj's import (70 ms) is left to the
    geographic case, which needs its ellipsoid.
    """
    from rasterio.crs import CRS

    c = CRS.from_user_input(wkt)
    if c.is_geographic:
        return True, 1.0
    try:
        return False, float(c.linear_units_factor[1] or 1.0)
    except Exception:  # noqa: BLE001 - GDAL raises when the CRS declares no linear unit
        return False, 1.0


def crs_name(wkt: str | None) -> str:
    """A short name of a CRS for messages: ``EPSG:32633``, its name, ``a custom <method> CRS``,
    ``no CRS`` (empty or None) or ``an unparsable CRS``."""
    if not wkt:
        return "no CRS"
    from pyproj import CRS

    try:
        c = CRS.from_user_input(wkt)
    except Exception:  # noqa: BLE001 - a message must never fail
        return "an unparsable CRS"
    epsg = c.to_epsg()
    if epsg:
        return f"EPSG:{epsg}"
    if c.name and c.name.lower() not in ("unnamed", "unknown"):
        return c.name
    op = getattr(c, "coordinate_operation", None)
    return f"a custom {op.method_name} CRS" if op is not None and op.method_name else "a custom CRS"
