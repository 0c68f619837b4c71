"""Areas and perimeters in metres on a raster grid (projected or geographic CRS).

Projected CRS: a polygon of ``n`` pixels covers exactly ``n * |a * e| * unit²`` m² (``unit`` = the
CRS's linear unit in metres), its perimeter is its planar length times ``unit``. Geographic CRS:
geodesic area and perimeter on the CRS's ellipsoid (``pyproj.Geod``), per polygon.
"""

from __future__ import annotations

import numpy as np
import shapely

from unetgeo.grid import Grid
from unetgeo.io.crs import crs_linear_unit

#: metres per degree of latitude (used to turn metre tolerances into degrees).
M_PER_DEG = 111_320.0


class AreaModel:
    """Areas in m² on a grid: pixel counts (projected CRS) or geodesic areas (geographic CRS).

    Args:
        grid: the raster grid (CRS WKT and affine transform).
    """

    def __init__(self, grid: Grid):
        self.geographic, unit = crs_linear_unit(grid.crs_wkt)
        self.geod = None
        if self.geographic:
            from pyproj import CRS

            self.geod = CRS.from_user_input(grid.crs_wkt).get_geod()
        self.unit_m = unit
        a, _, _, _, e, _ = grid.transform
        self.pixel_m2 = abs(a * e) * unit * unit
        self.grid = grid

    def polygon_areas_m2(self, counts: np.ndarray, map_geoms: np.ndarray) -> np.ndarray:
        """Areas, float64 ``(n,)`` m², of polygons of ``counts`` pixels (``map_geoms``: geographic CRSs)."""
        if not self.geographic:
            return np.asarray(counts, dtype=np.float64) * self.pixel_m2
        return np.array([abs(self.geod.geometry_area_perimeter(g)[0]) for g in map_geoms], dtype=np.float64)

    def perimeters_m(self, map_geoms: np.ndarray) -> np.ndarray:
        """Perimeters (shell + holes), float64 ``(n,)`` metres, of polygons in map coordinates."""
        if not self.geographic:
            return shapely.length(map_geoms) * self.unit_m
        return np.array([self.geod.geometry_area_perimeter(g)[1] for g in map_geoms], dtype=np.float64)

    def row_pixel_areas_m2(self, row_off: int, height: int) -> np.ndarray:
        """Area in m² of one pixel in each of rows ``row_off .. row_off+height``, float64 ``(height,)``."""
        if not self.geographic:
            return np.full(height, self.pixel_m2)
        a, _, c, _, e, f = self.grid.transform
        out = np.empty(height)
        for i in range(height):
            y0 = f + e * (row_off + i)
            y1 = y0 + e
            area, _ = self.geod.polygon_area_perimeter([c, c + a, c + a, c], [y0, y0, y1, y1])
            out[i] = abs(area)
        return out

    def tolerance(self, metres: float) -> float:
        """``metres`` in CRS units (degrees at the equator for geographic CRSs)."""
        return metres / M_PER_DEG if self.geographic else metres / self.unit_m

    def to_map(self, pixel_geoms: np.ndarray) -> np.ndarray:
        """Polygons in ``(col, row)`` pixel coordinates -> map coordinates (``x = c + a*col``, ``y = f + e*row``)."""
        a, b, c, d, e, f = self.grid.transform

        def affine(xy: np.ndarray) -> np.ndarray:  # column-wise: several times faster than ``xy @ m``
            col, row = xy[:, 0], xy[:, 1]
            out = np.empty_like(xy)
            out[:, 0] = a * col + b * row + c
            out[:, 1] = d * col + e * row + f
            return out

        return shapely.transform(pixel_geoms, affine)
