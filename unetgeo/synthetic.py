"""Deterministic synthetic Sentinel-2-like scenes with known labels (demo, tests, benchmarks).

A scene is 5 bands (``blue, green, red, nir, swir``; reflectance x 10000 as uint16 by default)
on a georeferenced grid, plus a uint8 label raster on the same grid. Its content is plausible
land cover with known classes: a meandering river, lakes, agricultural fields (Voronoi cells of a
hashed jittered lattice), forest, a town with a rotated street grid, villages, main roads, and a
nodata region outside a slanted footprint edge as in real Sentinel-2 tiles. A smooth "height
above river" field (metres) makes floods: water = river | lakes | (height < ``flood_level``).

Every pixel is a pure function of ``(seed, scene size, global pixel (row, col), flood_level)``:
noise comes from hashed lattices (no global arrays, no random state), so any window can be
rendered on its own and a scene of any size is written block by block with memory bounded by
the block size. Feature sizes are in pixels, tuned for 10 m pixels (fields ~300-500 m, river
~100-200 m wide); the resolution only sets the georeferencing.

Example:
    >>> scene = make_scene("/tmp/s.tif", size_px=512, seed=3, labels="landuse")  # doctest: +SKIP
    >>> pair = make_flood_pair("/tmp/flood", size_px=1024)  # pre/post/train scenes  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass

import numpy as np

from unetgeo.errors import InputError
from unetgeo.grid import Grid, Window, iter_tile_windows, n_tiles

log = logging.getLogger(__name__)

BAND_NAMES: tuple[str, ...] = ("blue", "green", "red", "nir", "swir")
"""Band order of every synthetic scene (Sentinel-2 B2, B3, B4, B8, B11)."""

FLOOD_CLASSES: tuple[str, ...] = ("background", "water")
"""Class ids of ``labels="flood"``: 0 background, 1 water (255 nodata)."""

LANDUSE_CLASSES: tuple[str, ...] = ("water", "vegetation", "bare_soil", "built_up")
"""Class ids of ``labels="landuse"``: 0 water, 1 vegetation, 2 bare soil, 3 built-up (255 nodata)."""

LABEL_NODATA = 255
"""Label value outside the footprint."""

NODATA_BY_DTYPE: dict[str, float] = {"uint16": 0.0, "int16": -9999.0, "float32": float("nan")}
"""Declared image nodata per output dtype (float32 holds reflectance 0-1 with NaN as nodata)."""

POST_FLOOD_LEVEL_M = 2.0
"""``flood_level`` of the ``post`` scene of :func:`make_flood_pair` (metres above the river)."""

TRAIN_FLOOD_LEVEL_M = 1.3
"""``flood_level`` of the ``train`` scene of :func:`make_flood_pair`."""

_LABEL_COLORS = {
    "flood": {0: (217, 217, 217, 255), 1: (31, 120, 180, 255)},
    "landuse": {0: (31, 120, 180, 255), 1: (51, 160, 44, 255), 2: (177, 89, 40, 255), 3: (227, 26, 28, 255)},
}

# --- spectra (reflectance x 10000; blue, green, red, nir, swir) -----------------------------
_K_WATER_CLEAR, _K_WATER_TURBID, _K_FLOOD = 0, 1, 2
_K_CROP, _K_PASTURE, _K_FOREST, _K_HEDGE, _K_URBAN_GRASS = 3, 4, 5, 6, 7
_K_SOIL, _K_STUBBLE = 8, 9
_K_ROOF_BRIGHT, _K_ROOF_RED, _K_ROOF_DARK, _K_ASPHALT, _K_SHADOW = 10, 11, 12, 13, 14
_SPECTRA = np.array(
    [
        [420, 560, 330, 230, 140],  # clear water
        [680, 900, 820, 430, 260],  # turbid water
        [720, 930, 940, 440, 280],  # muddy flood water (little sediment)
        [330, 620, 380, 3900, 1750],  # green crop
        [420, 720, 560, 3100, 2050],  # pasture / grass
        [250, 430, 240, 2900, 1200],  # forest
        [300, 560, 330, 3300, 1500],  # hedge / tree row
        [450, 700, 600, 2600, 1900],  # urban grass
        [820, 1120, 1450, 2150, 3050],  # bare soil (ploughed)
        [1000, 1300, 1650, 2400, 3300],  # dry soil / stubble
        [1350, 1420, 1480, 1850, 2250],  # bright roof
        [900, 950, 1350, 1700, 2300],  # red tile roof
        [420, 450, 470, 560, 490],  # dark roof
        [780, 820, 850, 1050, 1250],  # asphalt
        [300, 360, 300, 330, 190],  # deep building shadow (water-like, as in real S2)
    ],
    dtype=np.float32,
)
_SILTY_FLOOD = np.array([1000, 1250, 1400, 900, 650], dtype=np.float32)  # sediment-laden flood water
_LANDUSE_OF_KIND = np.array([0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 3, 3, 3, 3, 3], dtype=np.uint8)
_IS_VEG = _LANDUSE_OF_KIND == 1
# response of each band to vegetation vigour (1 + e * (vigour - 1))
_VIGOUR_EXP = np.array([-0.3, -0.1, -0.6, 1.0, -0.2], dtype=np.float32)

# --- hashing ------------------------------------------------------------------------------------
_MASK64 = (1 << 64) - 1
_M1 = np.uint64(0x9E3779B97F4A7C15)
_M2 = np.uint64(0xC2B2AE3D27D4EB4F)
_M3 = np.uint64(0xBF58476D1CE4E5B9)
_M4 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S40 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(40)


def _splitmix(x: int) -> int:
    """Scalar splitmix64 finaliser (Python ints, for salts)."""
    x &= _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def _salt(seed: int, name: str) -> int:
    """64-bit salt for one feature of one seed (stable across Python runs)."""
    h = seed & _MASK64
    for ch in name.encode():
        h = _splitmix(h * 31 + ch)
    return _splitmix(h ^ 0x5EED5EED)


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser, in place on a uint64 array (returned)."""
    h ^= h >> _S30
    h *= _M3
    h ^= h >> _S27
    h *= _M4
    h ^= h >> _S31
    return h


def _as_u64(a: np.ndarray | int) -> np.ndarray:
    """Two's-complement uint64 view/copy of integer coordinates (at least 1-D)."""
    a = np.atleast_1d(np.asarray(a))
    if a.dtype == np.int64:
        return a.view(np.uint64)
    return a.astype(np.int64).view(np.uint64)


def _hash_u64(i: np.ndarray, j: np.ndarray, salt: int) -> np.ndarray:
    """uint64 hash of integer lattice coordinates ``(i, j)`` (broadcast) and a salt."""
    with np.errstate(over="ignore"):
        hj = _as_u64(j) * _M2
        hj ^= np.uint64(salt)
        hj = _mix(hj)
        return _mix(np.bitwise_xor(_as_u64(i) * _M1, hj))


def _hash01(i: np.ndarray, j: np.ndarray, salt: int) -> np.ndarray:
    """Uniform float32 in ``[0, 1)`` per lattice point ``(i, j)``."""
    return ((_hash_u64(i, j, salt) >> _S40).astype(np.float32)) * np.float32(1.0 / (1 << 24))


def _smooth(f: np.ndarray) -> np.ndarray:
    return f * f * (np.float32(3.0) - np.float32(2.0) * f)


# --- value noise --------------------------------------------------------------------------------
def _noise_sep(ys: np.ndarray, xs: np.ndarray, scale: float, salt: int) -> np.ndarray:
    """Axis-aligned smooth value noise in ``[-1, 1]``, float32 ``(len(ys), len(xs))``.

    ``ys``/``xs`` are global pixel-centre coordinates (float64 1-D); lattice spacing ``scale`` px.
    Separable evaluation: lattice rows are interpolated along x first, then rows are blended.
    """
    gy = ys / scale
    gx = xs / scale
    iy = np.floor(gy).astype(np.int64)
    ix = np.floor(gx).astype(np.int64)
    sy = _smooth((gy - iy).astype(np.float32))[:, None]
    sx = _smooth((gx - ix).astype(np.float32))
    ly = np.arange(iy.min(), iy.max() + 2)
    lx = np.arange(ix.min(), ix.max() + 2)
    lat = _hash01(ly[:, None], lx[None, :], salt) * np.float32(2.0) - np.float32(1.0)
    jx = ix - lx[0]
    rows = lat[:, jx] + (lat[:, jx + 1] - lat[:, jx]) * sx
    jy = iy - ly[0]
    r0 = rows[jy]
    return r0 + (rows[jy + 1] - r0) * sy


def _fbm_sep(ys: np.ndarray, xs: np.ndarray, scale: float, salt: int, octaves: int = 3) -> np.ndarray:
    """Fractal (sum of octaves, gain 0.5) separable value noise, roughly in ``[-1, 1]``."""
    out = _noise_sep(ys, xs, scale, salt)
    amp, norm = 1.0, 1.0
    for k in range(1, octaves):
        amp *= 0.5
        norm += amp
        out += np.float32(amp) * _noise_sep(ys, xs, scale / 2**k, _splitmix(salt + k))
    return out * np.float32(1.0 / norm)


def _noise_1d(u: np.ndarray, scale: float, salt: int) -> tuple[np.ndarray, np.ndarray]:
    """1-D value noise of any-shaped ``u`` (px): ``(value in [-1, 1], d value / d u)``, float32."""
    g = u * np.float32(1.0 / scale)
    i = np.floor(g)
    f = g - i
    ii = i.astype(np.int64)
    i0 = int(ii.min())
    lat = _hash01(np.arange(i0, int(ii.max()) + 2), 0, salt) * np.float32(2.0) - np.float32(1.0)
    k = ii - i0
    a = np.take(lat, k)
    d = np.take(lat, k + 1) - a
    s = _smooth(f)
    ds = np.float32(6.0) * f * (np.float32(1.0) - f) * np.float32(1.0 / scale)
    return a + d * s, d * ds


# --- scene layout -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Town:
    """A town: centre ``(y, x)`` px, radius px, street spacing px, street-grid angle (rad)."""

    cy: float
    cx: float
    radius_px: float
    spacing_px: float
    angle: float
    salt: int


@dataclass(frozen=True)
class SceneLayout:
    """Scene-wide scalars drawn from the seed; with a window they determine every pixel.

    Coordinates are global pixel-centre coordinates ``(y, x)`` of a ``height x width`` scene.
    """

    seed: int
    height: int
    width: int
    footprint: bool
    # river (in a frame rotated by river_angle around the scene centre)
    river_angle: float
    river_cu: float
    river_cv: float
    river_waves: tuple[tuple[float, float, float], ...]  # (amplitude px, wavelength px, phase)
    river_halfwidth_px: float
    # fields
    field_angle: float
    field_block_px: float
    # footprint: outside where  (x' / a + y' / b) < 1 measured from `corner`
    fp_corner: int
    fp_a_px: float
    fp_b_px: float
    towns: tuple[Town, ...]
    roads: tuple[tuple[float, float, float], ...]  # (y, x, angle) of straight main roads
    salts: dict[str, int]


def scene_layout(seed: int, height: int, width: int, footprint: bool = True) -> SceneLayout:
    """Draw the scene-wide layout (river course, main town, roads, footprint) from ``seed``."""
    rng = np.random.default_rng(np.random.SeedSequence([seed & _MASK64, height, width, 0x5EED]))
    size = float(min(height, width))
    # river roughly W-E or N-S, tilted up to 35 degrees, passing near the centre
    base = 0.0 if rng.random() < 0.5 else math.pi / 2
    angle = base + float(rng.uniform(-0.6, 0.6))
    cu = width / 2.0
    cv = height / 2.0 + float(rng.uniform(-0.12, 0.12)) * size
    extent = abs(width * math.cos(angle)) + abs(height * math.sin(angle))
    waves = (
        (0.07 * extent, 1.3 * extent, float(rng.uniform(0, 2 * math.pi))),
        (float(rng.uniform(35, 60)), float(rng.uniform(380, 620)), float(rng.uniform(0, 2 * math.pi))),
        (float(rng.uniform(8, 16)), float(rng.uniform(150, 240)), float(rng.uniform(0, 2 * math.pi))),
    )
    halfwidth = float(rng.uniform(5.0, 8.0))
    salts = {
        k: _salt(seed, k)
        for k in (
            "river_noise", "river_width", "river_turb", "height", "height_detail", "height_slope", "fields",
            "forest", "tex", "tex_fine", "tex_vig", "lakes", "villages", "noise_a", "water_tex", "sediment",
        )
    }
    layout_no_towns = dict(
        seed=seed, height=height, width=width, footprint=footprint, river_angle=angle, river_cu=cu, river_cv=cv,
        river_waves=waves, river_halfwidth_px=halfwidth, field_angle=float(rng.uniform(0, math.pi)),
        field_block_px=float(rng.uniform(130, 180)),
        fp_corner=int(rng.integers(4)), fp_a_px=float(rng.uniform(0.2, 0.45)) * width,
        fp_b_px=float(rng.uniform(0.4, 0.85)) * height, towns=(), roads=(), salts=salts,
    )
    tmp = SceneLayout(**layout_no_towns)
    radius = float(np.clip(0.16 * size, 30.0, 700.0))
    # main town near the river but not across it: of 24 candidate centres in the middle of the
    # scene, take the one whose disc (1.05 radius) ends closest to 12 px from the river bank
    cand_y = rng.uniform(0.25, 0.75, 24) * height
    cand_x = rng.uniform(0.25, 0.75, 24) * width
    ang = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    best = None
    for ty, tx in zip(cand_y.tolist(), cand_x.tolist(), strict=True):
        py = np.concatenate([[ty], ty + 1.05 * radius * np.sin(ang)]).astype(np.float32)
        px = np.concatenate([[tx], tx + 1.05 * radius * np.cos(ang)]).astype(np.float32)
        _, d, hw, _ = _river_geometry(tmp, py, px)
        clearance = min(float((d[1:] - hw[1:]).min()), float(d[0] - hw[0]) - radius)
        score = -abs(clearance - 12.0) - (1e3 if clearance < 0 else 0.0)
        if best is None or score > best[0]:
            best = (score, ty, tx)
    _, ty, tx = best
    ty = float(np.clip(ty, 0.2 * height, 0.8 * height))
    tx = float(np.clip(tx, 0.2 * width, 0.8 * width))
    t_angle = float(rng.uniform(0, math.pi / 2))
    main = Town(ty, tx, radius, float(rng.uniform(13, 20)), t_angle, _salt(seed, "town0"))
    roads = [(ty, tx, t_angle), (ty, tx, t_angle + math.pi / 2)]
    n_extra = int(min(10, (height * width) // (2048 * 2048)))
    for _ in range(n_extra):
        roads.append((float(rng.uniform(0, height)), float(rng.uniform(0, width)), float(rng.uniform(0, math.pi))))
    layout_no_towns.update(towns=(main,), roads=tuple(roads))
    return SceneLayout(**layout_no_towns)


def _river_centre(lay: SceneLayout, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre-line offset ``v_c(u)`` (px, float32) and its slope ``dv_c/du``."""
    vc = np.full(u.shape, lay.river_cv, dtype=np.float32)
    dvc = np.zeros(u.shape, dtype=np.float32)
    for amp, wl, ph in lay.river_waves:
        arg = u * np.float32(2 * math.pi / wl) + np.float32(ph)
        vc += np.float32(amp) * np.sin(arg)
        dvc += np.float32(amp * 2 * math.pi / wl) * np.cos(arg)
    n, dn = _noise_1d(u, 110.0, lay.salts["river_noise"])
    vc += np.float32(9.0) * n
    dvc += np.float32(9.0) * dn
    return vc, dvc


def _river_geometry(lay: SceneLayout, yf: np.ndarray, xf: np.ndarray) -> tuple[np.ndarray, ...]:
    """River frame for pixel centres ``yf (h, 1)``, ``xf (1, w)`` (float32 px).

    Returns ``(u, d_river, halfwidth, width_noise)``: along-river coordinate, perpendicular
    distance to the centre line ``|v - v_c(u)| / sqrt(1 + v_c'(u)^2)`` and local half-width (px).
    """
    f32 = np.float32
    c, s = math.cos(lay.river_angle), math.sin(lay.river_angle)
    dx = xf - f32(lay.river_cu)
    dy = yf - f32(lay.river_cv)
    u = dx * f32(c) + dy * f32(s) + f32(lay.river_cu)
    v = dy * f32(c) - dx * f32(s) + f32(lay.river_cv)
    vc, dvc = _river_centre(lay, u)
    d_river = np.abs(v - vc) / np.sqrt(f32(1.0) + dvc * dvc)
    wn, _ = _noise_1d(u, 300.0, lay.salts["river_width"])
    halfwidth = f32(lay.river_halfwidth_px) * (f32(1.0) + f32(0.35) * wn)
    return u, d_river, halfwidth, wn


def _villages(lay: SceneLayout, y0: float, y1: float, x0: float, x1: float) -> list[Town]:
    """Villages from a hashed 1600 px lattice whose disc may touch ``[y0, y1) x [x0, x1)``."""
    cell, rmax = 1600.0, 110.0
    out = []
    salt = lay.salts["villages"]
    main = lay.towns[0]
    for i in range(int(math.floor((y0 - rmax) / cell)), int(math.floor((y1 + rmax) / cell)) + 1):
        for j in range(int(math.floor((x0 - rmax) / cell)), int(math.floor((x1 + rmax) / cell)) + 1):
            h = _hash01(np.arange(5) + 5 * i, j, salt)
            if h[0] > 0.5:
                continue
            cy = (i + 0.15 + 0.7 * float(h[1])) * cell
            cx = (j + 0.15 + 0.7 * float(h[2])) * cell
            r = 35.0 + 75.0 * float(h[3])
            if math.hypot(cy - main.cy, cx - main.cx) < main.radius_px + r + 40:
                continue
            if cy + r < y0 or cy - r >= y1 or cx + r < x0 or cx - r >= x1:
                continue
            out.append(Town(cy, cx, r, 12.0 + 5.0 * float(h[4]), float(h[4]) * 1.5, _splitmix(salt + 7919 * i + j)))
    return out


def _lakes(lay: SceneLayout, y0: float, y1: float, x0: float, x1: float) -> list[tuple[float, float, float, int]]:
    """Lakes ``(cy, cx, radius_px, salt)`` from a hashed 420 px lattice touching the window."""
    cell, rmax = 420.0, 55.0 * 1.4 + 2
    out = []
    salt = lay.salts["lakes"]
    towns = lay.towns
    for i in range(int(math.floor((y0 - rmax) / cell)), int(math.floor((y1 + rmax) / cell)) + 1):
        for j in range(int(math.floor((x0 - rmax) / cell)), int(math.floor((x1 + rmax) / cell)) + 1):
            h = _hash01(np.arange(4) + 4 * i, j, salt)
            if h[0] > 0.33:
                continue
            cy = (i + 0.15 + 0.7 * float(h[1])) * cell
            cx = (j + 0.15 + 0.7 * float(h[2])) * cell
            r = 10.0 + 45.0 * float(h[3]) ** 1.5
            if any(math.hypot(cy - t.cy, cx - t.cx) < t.radius_px + r * 1.4 + 5 for t in towns):
                continue
            if cy + rmax < y0 or cy - rmax >= y1 or cx + rmax < x0 or cx - rmax >= x1:
                continue
            out.append((cy, cx, r, _splitmix(salt + 104729 * i + j)))
    return out


# --- rendering ------------------------------------------------------------------------------------
def render_window(lay: SceneLayout, win: Window, flood_level: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Render one window of a scene.

    Args:
        lay: layout from :func:`scene_layout`.
        win: window in global pixel coordinates of the scene.
        flood_level: water level in metres above the river; 0 = normal (river and lakes only).

    Returns:
        ``(dn, landuse)``: ``dn`` uint16 ``(5, h, w)`` reflectance x 10000 in band order
        :data:`BAND_NAMES`, 0 outside the footprint and >= 1 inside; ``landuse`` uint8 ``(h, w)``
        with :data:`LANDUSE_CLASSES` ids and 255 outside the footprint.
    """
    h, w = win.height, win.width
    ys = np.arange(win.row_off, win.row_off + h, dtype=np.float64) + 0.5
    xs = np.arange(win.col_off, win.col_off + w, dtype=np.float64) + 0.5
    yf = ys.astype(np.float32)[:, None]
    xf = xs.astype(np.float32)[None, :]
    S = lay.salts
    f32 = np.float32

    # --- river: distance to the centre line in the rotated frame
    u, d_river, halfwidth, wn = _river_geometry(lay, yf, xf)
    f_river = np.clip(halfwidth - d_river + f32(0.5), 0.0, 1.0)
    turb_n, _ = _noise_1d(u, 450.0, S["river_turb"])
    turbidity = np.clip(f32(0.35) + f32(0.45) * turb_n + f32(0.25 * min(max(flood_level, 0.0) / 2.0, 1.0)), 0.0, 1.0)

    # --- height above river (m): floodplain rising away from the river, with smooth terrain
    terrain01 = _fbm_sep(ys, xs, 260.0, S["height"], 2) * f32(0.5) + f32(0.5)
    terrain01 += f32(0.08) * _fbm_sep(ys, xs, 45.0, S["height_detail"], 2)
    slope = f32(0.011) * (f32(1.0) + f32(0.5) * _noise_sep(ys, xs, 700.0, S["height_slope"]))
    bank = np.maximum(d_river - halfwidth, f32(0.0))
    height_m = f32(0.3) + slope * bank + f32(2.4) * np.maximum(terrain01, f32(0.0))

    # --- countryside: fields (anisotropic Voronoi cells of a hashed jittered lattice)
    kind = np.empty((h, w), dtype=np.uint8)
    bright = np.ones((h, w), dtype=np.float32)
    vig = np.ones((h, w), dtype=np.float32)
    _fields(lay, xf, yf, kind, bright, vig)

    # forest patches and riparian trees
    forest_n = _fbm_sep(ys, xs, 230.0, S["forest"], 3)
    forest = (forest_n > f32(0.32)) | (d_river < halfwidth + f32(3.0) + f32(2.0) * wn)
    kind[forest] = _K_FOREST
    bright[forest] = f32(1.0)
    vig[forest] = f32(1.0) + f32(0.15) * forest_n[forest]

    # --- towns and villages, main roads
    y0, y1, x0, x1 = win.row_off, win.row_off + h, win.col_off, win.col_off + w
    for town in (*lay.towns, *_villages(lay, y0, y1, x0, x1)):
        _town(town, ys, xs, kind, bright, vig, height_m)
    road = np.zeros((h, w), dtype=bool)
    for ry, rx, ra in lay.roads:
        dist = (xf - f32(rx)) * f32(math.sin(ra)) - (yf - f32(ry)) * f32(math.cos(ra))
        road |= np.abs(dist) < f32(0.85)
    kind[road] = _K_ASPHALT
    bright[road] = f32(1.0)
    vig[road] = f32(1.0)
    height_m[road] += f32(6.0)  # embankments and bridges stay dry
    f_river[road] = 0.0

    # --- lakes
    f_lake = np.zeros((h, w), dtype=np.float32)
    lake_turb = np.zeros((h, w), dtype=np.float32)
    for cy, cx, r, lsalt in _lakes(lay, y0, y1, x0, x1):
        reach = r * 1.4 + 2
        r0, r1 = max(0, int(math.floor(cy - reach)) - y0), min(h, int(math.ceil(cy + reach)) - y0)
        c0, c1 = max(0, int(math.floor(cx - reach)) - x0), min(w, int(math.ceil(cx + reach)) - x0)
        if r0 >= r1 or c0 >= c1:
            continue
        sub_y, sub_x = ys[r0:r1], xs[c0:c1]
        dist = np.sqrt((sub_y[:, None] - cy) ** 2 + (sub_x[None, :] - cx) ** 2).astype(np.float32)
        r_eff = f32(r) * (f32(1.0) + f32(0.33) * _noise_sep(sub_y, sub_x, max(r * 0.7, 6.0), lsalt))
        fl = np.clip(r_eff - dist + f32(0.5), 0.0, 1.0)
        blk = (slice(r0, r1), slice(c0, c1))
        f_lake[blk] = np.maximum(f_lake[blk], fl)
        lake_turb[blk] = np.where(fl > 0, f32(0.15 * float(_hash01(1, 1, lsalt)[0])), lake_turb[blk])

    # --- flood water: level above the height field; soft edge 0.01 m each side; shallow water
    # (< 0.8 m) lets a little of the submerged land show through
    depth = f32(flood_level) - height_m
    f_flood = np.clip(f32(0.5) + depth * f32(1.0 / 0.02), 0.0, 1.0)
    f_flood = np.minimum(f_flood, f32(0.94) + f32(0.06 / 0.8) * np.clip(depth, 0.0, 0.8))
    f_perm = np.maximum(f_river, f_lake)
    f_water = np.maximum(f_perm, f_flood)
    perm_wins = f_perm >= f_flood
    turb = np.where(f_lake > f_river, lake_turb, turbidity)

    # --- textures
    tex = _fbm_sep(ys, xs, 26.0, S["tex"], 2)
    tex_fine = _noise_sep(ys, xs, 2.7, S["tex_fine"])
    is_forest_like = (kind == _K_FOREST) | (kind == _K_HEDGE)
    land_mod = bright * (f32(1.0) + f32(0.07) * tex + np.where(is_forest_like, f32(0.12), f32(0.035)) * tex_fine)
    veg = _IS_VEG[kind]
    vig = np.where(veg, vig * (f32(1.0) + f32(0.08) * _noise_sep(ys, xs, 14.0, S["tex_vig"])), f32(1.0))
    water_tex = f32(1.0) + f32(0.05) * _fbm_sep(ys, xs, 60.0, S["water_tex"], 2)
    sediment = np.clip(f32(0.45) + f32(0.8) * _fbm_sep(ys, xs, 150.0, S["sediment"], 2), 0.0, 1.0)

    # --- sensor noise: one 64-bit hash per pixel -> five 12-bit uniforms (one per band)
    yi = np.arange(win.row_off, win.row_off + h, dtype=np.int64)[:, None]
    xi = np.arange(win.col_off, win.col_off + w, dtype=np.int64)[None, :]
    ha = _hash_u64(yi, xi, S["noise_a"])

    dn = np.empty((len(BAND_NAMES), h, w), dtype=np.uint16)
    m12 = np.uint64(0xFFF)
    for b in range(len(BAND_NAMES)):
        land = np.take(_SPECTRA[:, b], kind) * land_mod
        land *= f32(1.0) + _VIGOUR_EXP[b] * (vig - f32(1.0))
        clear, turbid, flood = (_SPECTRA[k, b] for k in (_K_WATER_CLEAR, _K_WATER_TURBID, _K_FLOOD))
        water_perm = f32(clear) + f32(turbid - clear) * turb
        water_flood = f32(flood) + f32(_SILTY_FLOOD[b] - flood) * sediment
        water = np.where(perm_wins, water_perm, water_flood) * water_tex
        val = land + f_water * (water - land)
        shift = np.uint64(12 * b)
        n = ((ha >> shift) & m12).astype(np.float32) * f32(2.0 / 4096.0) - f32(1.0)  # uniform [-1, 1)
        val += n * (val * f32(0.021) + f32(28.0))
        dn[b] = np.clip(np.rint(val), 1, 65535).astype(np.uint16)

    landuse = np.where(f_water >= f32(0.5), np.uint8(0), _LANDUSE_OF_KIND[kind])
    if lay.footprint:
        outside = _outside_footprint(lay, yf, xf)
        dn[:, outside] = 0
        landuse[outside] = LABEL_NODATA
    return dn, landuse


def _outside_footprint(lay: SceneLayout, yf: np.ndarray, xf: np.ndarray) -> np.ndarray:
    """Bool ``(h, w)``: pixel centre in the cut-off corner triangle (no data)."""
    xx = xf if lay.fp_corner in (0, 3) else np.float32(lay.width) - xf
    yy = yf if lay.fp_corner in (0, 1) else np.float32(lay.height) - yf
    return (xx * np.float32(1.0 / lay.fp_a_px) + yy * np.float32(1.0 / lay.fp_b_px)) < np.float32(1.0)


def _fields(lay: SceneLayout, xf: np.ndarray, yf: np.ndarray, kind: np.ndarray, bright: np.ndarray, vig: np.ndarray) -> None:
    """Fill ``kind``/``bright``/``vig`` with agricultural parcels separated by hedges/tracks.

    The land is cut into square blocks (``field_block_px``, in a frame rotated by
    ``field_angle``); each block holds parallel strips (random width and direction) cut into
    parcels of random length, like cadastral farmland. Each parcel gets a crop type and
    brightness from a hash of its global index, so any window renders identically.
    """
    f32 = np.float32
    c, s = math.cos(lay.field_angle), math.sin(lay.field_angle)
    blk = lay.field_block_px
    gu = (xf * f32(c) + yf * f32(s)) * f32(1.0 / blk)
    gv = (yf * f32(c) - xf * f32(s)) * f32(1.0 / blk)
    bu = np.floor(gu)
    bv = np.floor(gv)
    fa = (gu - bu) * f32(blk)  # px inside the block
    fb = (gv - bv) * f32(blk)
    bu_i = bu.astype(np.int64)
    bv_i = bv.astype(np.int64)
    u0, v0 = int(bu_i.min()), int(bv_i.min())
    nu, nv = int(bu_i.max()) + 1 - u0, int(bv_i.max()) + 1 - v0
    lu = np.arange(u0, u0 + nu)[:, None]
    lv = np.arange(v0, v0 + nv)[None, :]
    salt = lay.salts["fields"]
    # per block: strip direction, strip width (px; sometimes one big field), parcel length (px)
    h_dir = _hash01(lu, lv, salt).ravel()
    h_w = _hash01(lu, lv, _splitmix(salt + 1)).ravel()
    h_l = _hash01(lu, lv, _splitmix(salt + 2)).ravel()
    strip_px = np.where(h_w < 0.15, f32(blk), f32(14.0) + f32(30.0) * h_w)
    parcel_px = f32(35.0) + f32(blk - 35.0) * h_l
    flat = (bu_i - u0) * nv + (bv_i - v0)
    swap = np.take(h_dir, flat) < f32(0.5)
    along = np.where(swap, fb, fa)
    across = np.where(swap, fa, fb)
    sw = np.take(strip_px, flat)
    pl = np.take(parcel_px, flat)
    j = np.floor(across / sw)
    f_across = across - j * sw
    key = (bu_i * 100003 + bv_i) * 64 + j.astype(np.int64)
    shifted = along + _hash01(key, 0, _splitmix(salt + 3)) * pl
    i = np.floor(shifted / pl)
    f_along = shifted - i * pl
    hp = _hash_u64(key, i.astype(np.int64), _splitmix(salt + 4))
    h_type = ((hp >> _S40).astype(np.float32)) * f32(1.0 / (1 << 24))
    h_bright = ((hp & np.uint64(0xFFFFFF)).astype(np.float32)) * f32(1.0 / (1 << 24))
    kind[...] = np.where(
        h_type < 0.42, _K_CROP, np.where(h_type < 0.62, _K_PASTURE, np.where(h_type < 0.85, _K_SOIL, _K_STUBBLE))
    ).astype(np.uint8)
    bright[...] = f32(0.86) + f32(0.28) * h_bright
    vig[...] = f32(0.75) + f32(0.45) * h_bright
    edge = np.minimum(np.minimum(f_across, sw - f_across), np.minimum(f_along, pl - f_along))
    edge = np.minimum(edge, np.minimum(np.minimum(fa, f32(blk) - fa), np.minimum(fb, f32(blk) - fb)))
    hedge = edge < f32(0.75)
    kind[hedge] = _K_HEDGE
    bright[hedge] = f32(1.0)
    vig[hedge] = f32(1.0)


def _town(town: Town, ys: np.ndarray, xs: np.ndarray, kind: np.ndarray, bright: np.ndarray, vig: np.ndarray, height_m: np.ndarray) -> None:
    """Paint a town (street grid, building blocks, parks, shadows) into the window arrays."""
    f32 = np.float32
    reach = town.radius_px * 1.35 + 2
    r0 = int(np.searchsorted(ys, town.cy - reach))
    r1 = int(np.searchsorted(ys, town.cy + reach))
    c0 = int(np.searchsorted(xs, town.cx - reach))
    c1 = int(np.searchsorted(xs, town.cx + reach))
    if r0 >= r1 or c0 >= c1:
        return
    sy, sx = ys[r0:r1], xs[c0:c1]
    dy = (sy - town.cy).astype(np.float32)[:, None]
    dx = (sx - town.cx).astype(np.float32)[None, :]
    q = np.sqrt(dx * dx + dy * dy) * f32(1.0 / town.radius_px)
    edge = _noise_sep(sy, sx, max(town.radius_px * 0.45, 8.0), town.salt)
    inside = (q + f32(0.28) * edge) < f32(1.0)
    if not inside.any():
        return
    c, s = math.cos(town.angle), math.sin(town.angle)
    a = dx * f32(c) + dy * f32(s)
    b = dy * f32(c) - dx * f32(s)
    sp, rw = f32(town.spacing_px), f32(1.6)
    ia = np.floor(a / sp)
    ib = np.floor(b / sp)
    fa = a - ia * sp
    fb = b - ib * sp
    street = (fa < rw) | (fb < rw)
    hblk = _hash01(ia.astype(np.int64), ib.astype(np.int64), _splitmix(town.salt + 1))
    park = hblk < f32(0.08) + f32(0.4) * q * q
    bare = (~park) & (hblk < f32(0.12) + f32(0.4) * q * q)
    # 1 x 1 to 3 x 3 buildings per block; a shadow strip on one side of most buildings
    m = (sp - rw) / (f32(1.0) + np.floor(hblk * f32(23.0)) % f32(3.0))
    la = fa - rw
    lb = fb - rw
    sa = np.floor(la / m)
    sb = np.floor(lb / m)
    lla = la - sa * m
    llb = lb - sb * m
    hb = _hash01((ia * 4 + sa).astype(np.int64), (ib * 4 + sb).astype(np.int64), _splitmix(town.salt + 2))
    in_a = (lla > f32(0.45)) & (lla < m - f32(0.35))
    building = in_a & (llb > f32(1.3)) & (llb < m - f32(0.25))
    shadow = in_a & (llb <= f32(1.3)) & (hb < f32(0.65))
    roof = np.where(hb < 0.45, _K_ROOF_BRIGHT, np.where(hb < 0.75, _K_ROOF_RED, _K_ROOF_DARK))
    yard = np.where(hb < 0.5, _K_URBAN_GRASS, _K_ASPHALT)
    sub_kind = np.where(building, roof, np.where(shadow, _K_SHADOW, yard))
    park_kind = np.where(_noise_sep(sy, sx, 5.0, _splitmix(town.salt + 3)) > 0.1, _K_FOREST, _K_URBAN_GRASS)
    sub_kind = np.where(park, park_kind, np.where(bare, _K_SOIL, sub_kind))
    sub_kind = np.where(street, _K_ASPHALT, sub_kind).astype(np.uint8)
    blk = (slice(r0, r1), slice(c0, c1))
    kind[blk] = np.where(inside, sub_kind, kind[blk])
    bright[blk] = np.where(inside, f32(0.85) + f32(0.3) * hb, bright[blk])
    vig[blk] = np.where(inside, f32(1.0), vig[blk])
    height_m[blk] += f32(1.5) * inside  # towns sit on higher ground


# --- writing ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SyntheticScene:
    """What :func:`make_scene` wrote.

    Attributes:
        image_uri: the 5-band GeoTIFF (band descriptions = ``band_names``).
        labels_uri: the uint8 label GeoTIFF on the same grid (nodata 255).
        grid: the pixel grid of both.
        band_names: ``("blue", "green", "red", "nir", "swir")``.
        seed: the seed.
        flood_level: water level in metres above the river that was used.
    """

    image_uri: str
    labels_uri: str
    grid: Grid
    band_names: tuple[str, ...]
    seed: int
    flood_level: float


def _default_labels_uri(image_uri: str) -> str:
    root, ext = os.path.splitext(image_uri)
    return f"{root}_labels{ext or '.tif'}"


def _resolve_crs(crs: str, res_m: float, origin_xy: tuple[float, float]) -> tuple[str, float, tuple[float, float]]:
    """WKT, resolution and origin; geographic CRSs get degree defaults when left at the metre defaults."""
    from rasterio.crs import CRS
    from rasterio.errors import CRSError

    try:
        crs_obj = CRS.from_user_input(crs)
    except CRSError as e:
        raise InputError(f"synthetic scene: crs={crs!r} is not a CRS ({e}); use e.g. 'EPSG:32633'") from e
    if not res_m > 0:
        raise InputError(f"synthetic scene: res_m={res_m} must be > 0 (pixel size in CRS units)")
    if crs_obj.is_geographic:
        if tuple(origin_xy) == (500000.0, 5400000.0) and res_m == 10.0:
            res_m, origin_xy = 1e-4, (15.0, 48.75)
        if res_m > 1.0 or not (-180 <= origin_xy[0] <= 180 and -90 <= origin_xy[1] <= 90):
            raise InputError(
                f"synthetic scene: crs={crs!r} is geographic, so res_m={res_m} and origin_xy={tuple(origin_xy)} "
                "are in degrees; use e.g. res_m=0.0001, origin_xy=(15.0, 48.75)"
            )
    return crs_obj.to_wkt(), float(res_m), (float(origin_xy[0]), float(origin_xy[1]))


def make_scene(
    image_uri: str,
    labels_uri: str | None = None,
    *,
    size_px: int | tuple[int, int] = 512,
    res_m: float = 10.0,
    crs: str = "EPSG:32633",
    origin_xy: tuple[float, float] = (500000.0, 5400000.0),
    seed: int = 0,
    flood_level: float = 0.0,
    labels: str = "flood",
    footprint: bool = True,
    block_px: int = 512,
    dtype: str = "uint16",
    progress: bool = False,
) -> SyntheticScene:
    """Write a synthetic Sentinel-2-like scene and its labels, block by block.

    Args:
        image_uri: output GeoTIFF path or URL (5 bands, tiled, deflate).
        labels_uri: output label GeoTIFF; default ``<image stem>_labels.tif`` next to the image.
        size_px: ``n`` (square) or ``(height, width)`` in pixels.
        res_m: pixel size in CRS units: metres for a projected CRS, **degrees** for a geographic
            one (with ``crs="EPSG:4326"`` and the metre defaults left unchanged, 0.0001 deg and
            origin (15.0, 48.75) are used).
        crs: any CRS rasterio understands (``"EPSG:32633"``, WKT, PROJ string).
        origin_xy: ``(x, y)`` of the top-left corner in CRS units.
        seed: content seed; same seed and size give byte-identical files.
        flood_level: water level in metres above the river: 0 = normal, ~2 = a clear flood.
        labels: ``"flood"`` (0 background, 1 water) or ``"landuse"`` (0 water, 1 vegetation,
            2 bare soil, 3 built-up); 255 outside the footprint in both.
        footprint: cut one corner off as no data (as at a Sentinel-2 swath edge).
        block_px: rendering block and GeoTIFF tile size (memory ~ 100 bytes x block_px²).
        dtype: ``"uint16"`` (reflectance x 10000, nodata 0), ``"int16"`` (x 10000, nodata -9999)
            or ``"float32"`` (reflectance 0-1, nodata NaN).
        progress: show a progress bar.

    Returns:
        :class:`SyntheticScene` with the written URIs and grid.

    Raises:
        InputError: bad size, dtype, labels kind, block size or CRS/resolution.
    """
    from tqdm.auto import tqdm

    from unetgeo.io.scene import RasterWriter

    if isinstance(size_px, (int, np.integer)):
        height = width = int(size_px)
    else:
        height, width = (int(v) for v in size_px)
    if height < 1 or width < 1:
        raise InputError(f"synthetic scene {image_uri}: size_px={size_px} must be positive (pixels)")
    if labels not in ("flood", "landuse"):
        raise InputError(f"synthetic scene {image_uri}: labels={labels!r} is unknown; use 'flood' or 'landuse'")
    if dtype not in NODATA_BY_DTYPE:
        raise InputError(f"synthetic scene {image_uri}: dtype={dtype!r} is unsupported; use one of {list(NODATA_BY_DTYPE)}")
    if block_px < 16 or block_px % 16:
        raise InputError(f"synthetic scene {image_uri}: block_px={block_px} must be a multiple of 16 (>= 16); use 512")
    crs_wkt, res, (ox, oy) = _resolve_crs(crs, res_m, origin_xy)
    grid = Grid(crs_wkt=crs_wkt, transform=(res, 0.0, ox, 0.0, -res, oy), height=height, width=width)
    labels_uri = labels_uri or _default_labels_uri(str(image_uri))
    lay = scene_layout(seed, height, width, footprint)
    nodata = NODATA_BY_DTYPE[dtype]
    classes = FLOOD_CLASSES if labels == "flood" else LANDUSE_CLASSES
    tags = {"unetgeo_synthetic_seed": str(seed), "flood_level_m": repr(float(flood_level))}
    t0 = time.perf_counter()
    with (
        RasterWriter(image_uri, grid, len(BAND_NAMES), dtype, nodata, block_px=block_px, band_names=BAND_NAMES,
                     tags={**tags, "scale_factor": "0.0001" if dtype != "float32" else "1"}) as img,
        RasterWriter(labels_uri, grid, 1, "uint8", LABEL_NODATA, block_px=block_px, band_names=(labels,),
                     colormap=_LABEL_COLORS[labels], tags={**tags, "class_names": json.dumps(list(classes))}) as lab,
    ):
        for win in tqdm(iter_tile_windows(height, width, block_px), total=n_tiles(height, width, block_px),
                        disable=not progress, desc="synthetic", unit="block"):
            dn, landuse = render_window(lay, win, flood_level)
            valid = landuse != LABEL_NODATA
            img.write(win, _convert(dn, valid, dtype))
            if labels == "flood":
                lab_arr = np.where(valid, (landuse == 0).astype(np.uint8), np.uint8(LABEL_NODATA))
            else:
                lab_arr = landuse
            lab.write(win, lab_arr)
    log.info("synthetic scene %s (%dx%d, seed %d, flood %.2f m) written in %.1f s",
             image_uri, height, width, seed, flood_level, time.perf_counter() - t0)
    return SyntheticScene(str(image_uri), str(labels_uri), grid, BAND_NAMES, int(seed), float(flood_level))


def _convert(dn: np.ndarray, valid: np.ndarray, dtype: str) -> np.ndarray:
    """uint16 DN (0 outside) -> output dtype with that dtype's nodata outside."""
    if dtype == "uint16":
        return dn
    if dtype == "int16":
        out = np.minimum(dn, 32767).astype(np.int16)
        out[:, ~valid] = -9999
        return out
    out = dn.astype(np.float32) * np.float32(1e-4)
    out[:, ~valid] = np.nan
    return out


def make_flood_pair(out_dir: str, size_px: int = 1024, seed: int = 0, *, res_m: float = 10.0) -> dict[str, SyntheticScene]:
    """Write a pre/post flood pair and a training scene with flood labels.

    ``pre`` (``flood_level`` 0) and ``post`` (:data:`POST_FLOOD_LEVEL_M`) share grid and seed, so
    post water is a superset of pre water; ``train`` has seed ``seed + 1000``, lies east of them
    and is moderately flooded (:data:`TRAIN_FLOOD_LEVEL_M`).

    Returns:
        ``{"pre", "post", "train"}`` -> :class:`SyntheticScene`; files ``out_dir/{key}.tif`` and
        ``out_dir/{key}_labels.tif``.
    """
    from unetgeo.io.uri import join

    out = {}
    origin = (500000.0, 5400000.0)
    for key, level, s, orig in (
        ("pre", 0.0, seed, origin),
        ("post", POST_FLOOD_LEVEL_M, seed, origin),
        ("train", TRAIN_FLOOD_LEVEL_M, seed + 1000, (origin[0] + (size_px + 256) * res_m, origin[1])),
    ):
        out[key] = make_scene(join(out_dir, f"{key}.tif"), join(out_dir, f"{key}_labels.tif"), size_px=size_px,
                              res_m=res_m, origin_xy=orig, seed=s, flood_level=level, labels="flood")
    return out
