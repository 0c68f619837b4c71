"""Pure pixel-grid arithmetic: tiles, halos, stride padding.

No I/O here. Index order is always ``(y, x)``; windows are ``(row_off, col_off, height, width)``
in pixels of the scene grid. An affine transform is the GDAL/rasterio 6-tuple
``(a, b, c, d, e, f)`` with ``x = a*col + b*row + c`` and ``y = d*col + e*row + f``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

from unetgeo.errors import GridMismatchError, InputError


def align_up(n: int, stride: int) -> int:
    """Smallest multiple of ``stride`` that is ``>= n``: ``stride * ceil(n / stride)``."""
    return int(stride * math.ceil(n / stride))


@dataclass(frozen=True)
class Window:
    """A rectangle of pixels: rows ``row_off .. row_off+height``, cols ``col_off .. col_off+width``."""

    row_off: int
    col_off: int
    height: int
    width: int

    @property
    def slices(self) -> tuple[slice, slice]:
        """``(rows, cols)`` slices for numpy indexing of a ``(..., y, x)`` array."""
        return (
            slice(self.row_off, self.row_off + self.height),
            slice(self.col_off, self.col_off + self.width),
        )


@dataclass(frozen=True)
class Grid:
    """The georeferencing of a raster: CRS (WKT), affine transform, size in pixels.

    Args:
        crs_wkt: coordinate reference system as WKT.
        transform: affine 6-tuple ``(a, b, c, d, e, f)``; ``a`` is the pixel width in CRS
            units, ``e`` the (negative) pixel height; ``b`` and ``d`` must be 0 (north-up).
        height: rows (y).
        width: columns (x).
    """

    crs_wkt: str
    transform: tuple[float, float, float, float, float, float]
    height: int
    width: int

    @property
    def res(self) -> tuple[float, float]:
        """Pixel size ``(res_y, res_x)`` in CRS units, both positive."""
        a, _, _, _, e, _ = self.transform
        return (abs(e), abs(a))

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(left, bottom, right, top)`` in CRS units for a north-up grid."""
        a, _, c, _, e, f = self.transform
        xs = (c, c + a * self.width)
        ys = (f, f + e * self.height)
        return (min(xs), min(ys), max(xs), max(ys))

    def window_transform(self, win: Window) -> tuple[float, float, float, float, float, float]:
        """Affine transform of the sub-grid that starts at ``win``'s top-left pixel."""
        a, b, c, d, e, f = self.transform
        return (a, b, c + a * win.col_off + b * win.row_off, d, e, f + d * win.col_off + e * win.row_off)

    def to_attrs(self) -> dict:
        """JSON-able attributes (``crs``, ``transform``, ``height``, ``width``)."""
        return {
            "crs": self.crs_wkt,
            "transform": [float(v) for v in self.transform],
            "height": int(self.height),
            "width": int(self.width),
        }

    @classmethod
    def from_attrs(cls, attrs: dict) -> Grid:
        """Inverse of :meth:`to_attrs`."""
        return cls(
            crs_wkt=str(attrs["crs"]),
            transform=tuple(float(v) for v in attrs["transform"]),  # type: ignore[arg-type]
            height=int(attrs["height"]),
            width=int(attrs["width"]),
        )


def check_north_up(transform: tuple[float, ...], name: str) -> None:
    """Raise :class:`InputError` naming ``name`` if ``transform`` is rotated or sheared."""
    a, b, _, d, e, _ = transform[:6]
    if b != 0 or d != 0:
        raise InputError(
            f"{name}: the geotransform is rotated or sheared (b={b}, d={d}); unetgeo needs a "
            "north-up grid. Warp it first, e.g. `gdalwarp -t_srs EPSG:XXXX in.tif out.tif`."
        )
    if a <= 0 or e >= 0:
        raise InputError(
            f"{name}: pixel size must be positive in x and negative in y (a={a}, e={e}); "
            "flip the raster to north-up with gdalwarp first."
        )


def same_grid(g1: Grid, g2: Grid, name1: str, name2: str, *, crs_equal=None, rel_tol: float = 1e-9) -> None:
    """Raise :class:`GridMismatchError` unless ``g1`` and ``g2`` are the same pixel grid.

    Args:
        crs_equal: optional callable ``(wkt1, wkt2) -> bool`` for a semantic CRS comparison;
            plain string equality when omitted.
    """
    problems = []
    if (g1.height, g1.width) != (g2.height, g2.width):
        problems.append(f"size {g1.height}x{g1.width} vs {g2.height}x{g2.width} (rows x cols)")
    scale = max(abs(g1.transform[0]), abs(g1.transform[4]), 1e-12)
    if any(abs(p - q) > rel_tol * max(scale, abs(p), abs(q)) for p, q in zip(g1.transform, g2.transform, strict=True)):
        problems.append(f"transform {tuple(g1.transform)} vs {tuple(g2.transform)}")
    eq = crs_equal or (lambda a, b: a == b)
    if not eq(g1.crs_wkt, g2.crs_wkt):
        problems.append("CRS differs")
    if problems:
        raise GridMismatchError(
            f"{name2} is not on the grid of {name1}: " + "; ".join(problems)
            + ". Resample it onto the same grid (e.g. gdalwarp -te/-tr/-t_srs) first."
        )


def tile_windows(height: int, width: int, tile_px: int) -> list[Window]:
    """Chunk-aligned tiles that cover every pixel exactly once, row-major.

    Tile ``(i, j)`` is ``Window(i*T, j*T, min(T, H - i*T), min(T, W - j*T))`` for
    ``i < ceil(H/T)``, ``j < ceil(W/T)``: edge tiles are smaller, never padded.
    """
    if tile_px <= 0:
        raise InputError(f"tile_px={tile_px} must be a positive number of pixels; use 512")
    return [
        Window(r, c, min(tile_px, height - r), min(tile_px, width - c))
        for r in range(0, height, tile_px)
        for c in range(0, width, tile_px)
    ]


def iter_tile_windows(height: int, width: int, tile_px: int) -> Iterator[Window]:
    """Lazy version of :func:`tile_windows` for very large grids."""
    for r in range(0, height, tile_px):
        for c in range(0, width, tile_px):
            yield Window(r, c, min(tile_px, height - r), min(tile_px, width - c))


def n_tiles(height: int, width: int, tile_px: int) -> int:
    """Number of tiles of :func:`tile_windows`: ``ceil(H/T) * ceil(W/T)``."""
    return math.ceil(height / tile_px) * math.ceil(width / tile_px)


@dataclass(frozen=True)
class HaloWindow:
    """A window grown by a halo and padded to a stride.

    ``read`` is the part of the grown window inside the scene; ``pad`` is
    ``(top, bottom, left, right)`` pixels of padding (reflect) that complete it to the padded
    size; ``crop`` are the slices of the padded array that give back the original window.
    """

    core: Window
    read: Window
    pad: tuple[int, int, int, int]
    crop: tuple[slice, slice]

    @property
    def padded_shape(self) -> tuple[int, int]:
        """``(height, width)`` of the padded array."""
        top, bottom, left, right = self.pad
        return (self.read.height + top + bottom, self.read.width + left + right)


def halo_window(core: Window, halo_px: int, height: int, width: int, stride: int = 32) -> HaloWindow:
    """Grow ``core`` by ``halo_px`` on every side and pad to a multiple of ``stride``.

    The grown window is clipped to the scene; the clipped part plus any extra needed to reach
    ``align_up(core + 2*halo, stride)`` on each axis is padding. Padding at a scene edge is
    placed on that edge's side (reflect padding there stands in for the missing context);
    the stride remainder goes to the bottom/right.
    """
    top_want = bottom_want = left_want = right_want = halo_px
    r0 = max(0, core.row_off - top_want)
    c0 = max(0, core.col_off - left_want)
    r1 = min(height, core.row_off + core.height + bottom_want)
    c1 = min(width, core.col_off + core.width + right_want)
    pad_t = top_want - (core.row_off - r0)
    pad_l = left_want - (core.col_off - c0)
    pad_b = bottom_want - (r1 - core.row_off - core.height)
    pad_r = right_want - (c1 - core.col_off - core.width)
    h_full = core.height + 2 * halo_px
    w_full = core.width + 2 * halo_px
    pad_b += align_up(h_full, stride) - h_full
    pad_r += align_up(w_full, stride) - w_full
    read = Window(r0, c0, r1 - r0, c1 - c0)
    crop = (
        slice(pad_t + core.row_off - r0, pad_t + core.row_off - r0 + core.height),
        slice(pad_l + core.col_off - c0, pad_l + core.col_off - c0 + core.width),
    )
    return HaloWindow(core=core, read=read, pad=(pad_t, pad_b, pad_l, pad_r), crop=crop)
