"""Rendering one window of a synthetic scene: spectra, land cover, water, textures, sensor noise."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from unetgeo.grid import Window
from unetgeo.synthetic.clouds import cloud_fields
from unetgeo.synthetic.layout import (
    BAND_NAMES,
    CLOUD_CODE,
    FIELD_KINDS,
    HILL_SCALE_PX,
    LABEL_NODATA,
    SceneLayout,
    Town,
    _lakes,
    _river_geometry,
    _villages,
)
from unetgeo.synthetic.noise import (
    _S40,
    _fbm_sep,
    _hash01,
    _hash_u64,
    _noise_1d,
    _noise_sep,
    _splitmix,
)
from unetgeo.synthetic.spectra import (
    CLOUD_THICK,
    CLOUD_THIN_ADD,
    KIND,
    LANDUSE_OF_KIND,
    P10,
    P90,
    identity_radiometry,
    scene_spectra,
)

# --- surface kinds (rows of unetgeo.synthetic.spectra.SURFACES) ----------------------------------
_K_WATER_CLEAR, _K_WATER_TURBID, _K_WATER_SHALLOW, _K_WATER_DARK, _K_FLOOD = (
    KIND[k] for k in ("water_clear", "water_turbid", "water_shallow", "water_dark", "flood_muddy"))
_K_CROP, _K_PASTURE, _K_FOREST, _K_CONIFER, _K_SHRUB, _K_HEDGE, _K_URBAN_GRASS = (
    KIND[k] for k in ("crop", "pasture", "forest_broadleaf", "forest_conifer", "shrub", "hedge", "urban_grass"))
_K_SOIL, _K_STUBBLE, _K_SAND, _K_BURNT, _K_WET_SOIL = (KIND[k] for k in ("soil", "stubble", "sand", "burnt", "wet_soil"))
_OPEN_LAND = np.array([KIND[k] for k in ("crop", "pasture", "soil", "stubble", "sand", "shrub")], dtype=np.uint8)
_K_ROOF_BRIGHT, _K_ROOF_RED, _K_ROOF_DARK, _K_ASPHALT, _K_SHADOW = (
    KIND[k] for k in ("roof_bright", "roof_red", "roof_dark", "asphalt", "building_shadow"))
_K_SNOW = KIND["snow"]
_FIELD_KIND_IDS = np.array([KIND[k] for k in FIELD_KINDS], dtype=np.uint8)
_LANDUSE_OF_KIND = np.minimum(LANDUSE_OF_KIND, 3)  # snow / ice are "bare" in the land-use labels
_LANDUSE_OF_KIND[LANDUSE_OF_KIND == 4] = 2
_IS_VEG = LANDUSE_OF_KIND == 1
# response of each band to vegetation vigour (1 + e * (vigour - 1))
_VIGOUR_EXP = np.array([-0.3, -0.1, -0.6, 1.0, -0.2], dtype=np.float32)


# --- rendering ------------------------------------------------------------------------------------
@dataclass
class _Canvas:
    """The per-pixel fields of one window while it is rendered (all ``(h, w)`` unless noted)."""

    ys: np.ndarray  # (h,) float64 global pixel-centre rows
    xs: np.ndarray  # (w,) float64 global pixel-centre columns
    yf: np.ndarray  # (h, 1) float32
    xf: np.ndarray  # (1, w) float32
    f_river: np.ndarray  # river water fraction 0-1
    turbidity: np.ndarray
    halfwidth: np.ndarray  # river half-width, px
    d_river: np.ndarray  # distance to the river centre line, px
    wn: np.ndarray  # river width noise
    height_m: np.ndarray  # height above the river, m
    kind: np.ndarray | None = None  # uint8 surface kind (_K_*)
    bright: np.ndarray | None = None  # float32 brightness factor
    vig: np.ndarray | None = None  # float32 vegetation vigour
    d_shore: np.ndarray | None = None  # float32 px from the nearest shore, inside water (for adjacency)


def render_window(lay: SceneLayout, win: Window, flood_level: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Render one window of a scene.

    Args:
        lay: layout from :func:`scene_layout`.
        win: window in global pixel coordinates of the scene.
        flood_level: water level in metres above the river; 0 = normal (river and lakes only).

    Returns:
        ``(dn, landuse)``: ``dn`` uint16 ``(5, h, w)`` reflectance x 10000 in band order
        :data:`BAND_NAMES` (L2A surface or L1C top-of-atmosphere, as the layout's product), 0
        outside the footprint and >= 1 inside; ``landuse`` uint8 ``(h, w)`` with
        :data:`LANDUSE_CLASSES` ids, :data:`CLOUD_CODE` under thick cloud and 255 outside the
        footprint.
    """
    f32 = np.float32
    cv, f_water, perm_wins, turb = surface(lay, win, flood_level)
    clouds = cloud_fields(lay.clouds, cv.ys, cv.xs) if lay.clouds is not None else None
    dn = _bands(lay, win, cv, f_water, perm_wins, turb, clouds)
    assert cv.kind is not None
    landuse = np.where(f_water >= f32(0.5), np.uint8(0), _LANDUSE_OF_KIND[cv.kind])
    if clouds is not None:
        landuse[clouds[0] >= f32(0.5)] = CLOUD_CODE
    if lay.footprint:
        outside = _outside_footprint(lay, cv.yf, cv.xf)
        dn[:, outside] = 0
        landuse[outside] = LABEL_NODATA
    return dn, landuse


def surface(lay: SceneLayout, win: Window, flood_level: float = 0.0) -> tuple[_Canvas, np.ndarray, np.ndarray, np.ndarray]:
    """The ground of a window, before any sensor: terrain, land cover and water.

    Returns:
        ``(canvas, f_water, perm_wins, turbidity)``: the per-pixel fields (``canvas.kind`` holds the
        surface kinds), the water fraction 0-1 (river, lakes and flood; water where >= 0.5), True
        where permanent water rather than flood water is the larger part, and the water's turbidity.
        The optical (:func:`render_window`) and radar (:mod:`unetgeo.synthetic.sar`) renderers
        share it, so both sensors see the same ground.
    """
    cv = _terrain(lay, win, flood_level)
    _land_cover(lay, win, cv)
    f_lake, lake_turb, lake_d = _lake_cover(lay, win, cv)
    # --- flood water: level above the height field; soft edge 0.01 m each side; shallow water
    # (< 0.8 m) lets a little of the submerged land show through
    f32 = np.float32
    depth = f32(flood_level) - cv.height_m
    f_flood = np.clip(f32(0.5) + depth * f32(1.0 / 0.02), 0.0, 1.0)
    f_flood = np.minimum(f_flood, f32(0.94) + f32(0.06 / 0.8) * np.clip(depth, 0.0, 0.8))
    f_perm = np.maximum(cv.f_river, f_lake)
    f_water = np.maximum(f_perm, f_flood)
    if lay.mud_m > 0:  # wet soil and mudflats on open land just above the water line (receding floods)
        above = -depth
        mud = (above > 0) & (above < f32(lay.mud_m)) & (f_water < f32(0.5)) & np.isin(cv.kind, _OPEN_LAND)
        cv.kind[mud] = _K_WET_SOIL
    perm_wins = f_perm >= f_flood
    turb = np.where(f_lake > cv.f_river, lake_turb, cv.turbidity)
    d_perm = np.maximum(cv.halfwidth - cv.d_river, lake_d)
    cv.d_shore = np.where(perm_wins, d_perm, depth * f32(1.0 / 0.011))  # flood: depth / floodplain slope
    return cv, f_water, perm_wins, turb


def _terrain(lay: SceneLayout, win: Window, flood_level: float) -> _Canvas:
    """Pixel coordinates, the river (distance, fraction, turbidity) and the height above it (m)."""
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
    return _Canvas(ys, xs, yf, xf, f_river, turbidity, halfwidth, d_river, wn, height_m)


def _land_cover(lay: SceneLayout, win: Window, cv: _Canvas) -> None:
    """Fields, forest, towns, villages and main roads into ``cv.kind / bright / vig`` (roads: dry, no river)."""
    h, w = win.height, win.width
    ys, xs, yf, xf = cv.ys, cv.xs, cv.yf, cv.xf
    f32 = np.float32
    # --- countryside: fields (anisotropic Voronoi cells of a hashed jittered lattice)
    kind = np.empty((h, w), dtype=np.uint8)
    bright = np.ones((h, w), dtype=np.float32)
    vig = np.ones((h, w), dtype=np.float32)
    _fields(lay, xf, yf, kind, bright, vig)

    # forest patches and riparian trees
    forest_n = _fbm_sep(ys, xs, 230.0, lay.salts["forest"], 3)
    forest = (forest_n > f32(0.32)) | (cv.d_river < cv.halfwidth + f32(3.0) + f32(2.0) * cv.wn)
    kind[forest] = _K_FOREST
    if lay.conifer_share > 0:
        conifer = forest & (_noise_sep(ys, xs, 120.0, lay.salts["conifer"]) < f32(2.0 * lay.conifer_share - 1.0))
        kind[conifer] = _K_CONIFER
    bright[forest] = f32(1.0)
    vig[forest] = f32(1.0) + f32(0.15) * forest_n[forest]

    # --- towns and villages, main roads
    y0, y1, x0, x1 = win.row_off, win.row_off + h, win.col_off, win.col_off + w
    for town in (*lay.towns, *_villages(lay, y0, y1, x0, x1)):
        _town(town, ys, xs, kind, bright, vig, cv.height_m)
    road = np.zeros((h, w), dtype=bool)
    for ry, rx, ra in lay.roads:
        dist = (xf - f32(rx)) * f32(math.sin(ra)) - (yf - f32(ry)) * f32(math.cos(ra))
        road |= np.abs(dist) < f32(0.85)
    kind[road] = _K_ASPHALT
    bright[road] = f32(1.0)
    vig[road] = f32(1.0)
    cv.height_m[road] += f32(6.0)  # embankments and bridges stay dry
    cv.f_river[road] = 0.0
    cv.kind, cv.bright, cv.vig = kind, bright, vig


def _lake_cover(lay: SceneLayout, win: Window, cv: _Canvas) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(lake water fraction, lake turbidity, px inside the nearest lake shore)``, float32 ``(h, w)``."""
    h, w = win.height, win.width
    y0, x0 = win.row_off, win.col_off
    f32 = np.float32
    f_lake = np.zeros((h, w), dtype=np.float32)
    lake_turb = np.zeros((h, w), dtype=np.float32)
    lake_d = np.full((h, w), -1e3, dtype=np.float32)
    for cy, cx, r, lsalt in _lakes(lay, y0, y0 + h, x0, x0 + w):
        reach = r * 1.4 + 2
        r0, r1 = max(0, int(math.floor(cy - reach)) - y0), min(h, int(math.ceil(cy + reach)) - y0)
        c0, c1 = max(0, int(math.floor(cx - reach)) - x0), min(w, int(math.ceil(cx + reach)) - x0)
        if r0 >= r1 or c0 >= c1:
            continue
        sub_y, sub_x = cv.ys[r0:r1], cv.xs[c0:c1]
        dist = np.sqrt((sub_y[:, None] - cy) ** 2 + (sub_x[None, :] - cx) ** 2).astype(np.float32)
        r_eff = f32(r) * (f32(1.0) + f32(0.33) * _noise_sep(sub_y, sub_x, max(r * 0.7, 6.0), lsalt))
        fl = np.clip(r_eff - dist + f32(0.5), 0.0, 1.0)
        blk = (slice(r0, r1), slice(c0, c1))
        f_lake[blk] = np.maximum(f_lake[blk], fl)
        lake_d[blk] = np.maximum(lake_d[blk], r_eff - dist)
        lake_turb[blk] = np.where(fl > 0, f32(0.15 * float(_hash01(1, 1, lsalt)[0])), lake_turb[blk])
    return f_lake, lake_turb, lake_d


def _terrain_light(lay: SceneLayout, cv: _Canvas) -> np.ndarray | None:
    """Share of light on the ground in hilly scenes: terrain shadow on the slopes away from the valley."""
    if lay.hills <= 0:
        return None
    f32 = np.float32
    n = _fbm_sep(cv.ys, cv.xs, HILL_SCALE_PX, lay.salts["hills"], 3)
    shade = np.clip((n - f32(lay.hills_t)) * f32(12.0) + f32(0.5), 0.0, 1.0) * (cv.height_m > f32(1.6))
    return f32(1.0) - f32(0.7) * shade


def _bands(lay: SceneLayout, win: Window, cv: _Canvas, f_water: np.ndarray, perm_wins: np.ndarray,
           turb: np.ndarray, clouds: tuple[np.ndarray, ...] | None) -> np.ndarray:
    """Sensor values ``(5, h, w)`` uint16 (>= 1): land, water mixed in by ``f_water``, terrain and cloud
    shadows, clouds, the scene's radiometry (L1C / L2A) and sensor noise."""
    assert cv.kind is not None and cv.bright is not None and cv.vig is not None
    h, w = win.height, win.width
    ys, xs, kind = cv.ys, cv.xs, cv.kind
    S = lay.salts
    f32 = np.float32
    rad = lay.radiometry or identity_radiometry()
    spec = scene_spectra(rad)
    tex = _fbm_sep(ys, xs, 26.0, S["tex"], 2)
    tex_fine = _noise_sep(ys, xs, 2.7, S["tex_fine"])
    is_forest_like = (kind == _K_FOREST) | (kind == _K_HEDGE) | (kind == _K_CONIFER)
    land_mod = cv.bright * (f32(1.0) + f32(0.07) * tex + np.where(is_forest_like, f32(0.12), f32(0.035)) * tex_fine)
    light = _terrain_light(lay, cv)
    if light is not None:
        land_mod *= light
    veg = _IS_VEG[kind]
    vig = np.where(veg, cv.vig * (f32(1.0) + f32(0.08) * _noise_sep(ys, xs, 14.0, S["tex_vig"])), f32(1.0))
    water_tex = f32(1.0) + f32(0.05) * _fbm_sep(ys, xs, 60.0, S["water_tex"], 2)
    sediment = np.clip(f32(0.45) + f32(0.8) * _fbm_sep(ys, xs, 150.0, S["sediment"], 2), 0.0, 1.0)
    # river banks: the bottom shows through the last 2.5 px of the river
    shallow = np.clip(f32(1.0) - (cv.halfwidth - cv.d_river) * f32(1.0 / 2.5), 0.0, 1.0) * f32(0.6)
    # adjacency: light scattered from the bright (vegetated) shore into the water pixels near it
    # raises their NIR and SWIR above the water's own (Sterckx2011); small / narrow waters look
    # like this in every Sentinel-2 scene, with NDWI < 0 but still dark
    assert cv.d_shore is not None
    adjacency = f32(lay.adjacency) * np.exp(-np.maximum(cv.d_shore, f32(0.0)) * f32(1.0 / lay.adjacency_px))
    shore = f32(1.0 - lay.shore_soil) * f32(0.5) * (spec[_K_FOREST] + spec[_K_CROP]) + f32(lay.shore_soil) * spec[_K_SOIL]

    # --- sensor noise: one 64-bit hash per pixel -> five 12-bit uniforms (one per band)
    yi = np.arange(win.row_off, win.row_off + h, dtype=np.int64)[:, None]
    xi = np.arange(win.col_off, win.col_off + w, dtype=np.int64)[None, :]
    ha = _hash_u64(yi, xi, S["noise_a"])

    dn = np.empty((len(BAND_NAMES), h, w), dtype=np.uint16)
    m12 = np.uint64(0xFFF)
    for b in range(len(BAND_NAMES)):
        land = np.take(spec[:, b], kind) * land_mod
        land *= f32(1.0) + _VIGOUR_EXP[b] * (vig - f32(1.0))
        clear, turbid, dark, shallow_b = (spec[k, b] for k in (_K_WATER_CLEAR, _K_WATER_TURBID, _K_WATER_DARK,
                                                                _K_WATER_SHALLOW))
        water_perm = f32(clear) + f32(turbid - clear) * turb
        water_perm += (f32(dark) - water_perm) * f32(lay.dark_water)
        water_perm += (f32(shallow_b) - water_perm) * shallow
        water_flood = f32(P10[_K_FLOOD, b]) + f32(P90[_K_FLOOD, b] - P10[_K_FLOOD, b]) * sediment
        water = np.where(perm_wins, water_perm, water_flood) * water_tex + adjacency * f32(shore[b])
        val = land + f_water * (water - land)
        if clouds is not None:
            thick, thin, c_light, c_tex = clouds
            val *= c_light
            val = val * (f32(1.0) - f32(0.35) * thin) + thin * f32(CLOUD_THIN_ADD[b])
            val += thick * (f32(CLOUD_THICK[1][b]) * c_tex - val)
        val = rad.apply(val, b)
        shift = np.uint64(12 * b)
        n = ((ha >> shift) & m12).astype(np.float32) * f32(2.0 / 4096.0) - f32(1.0)  # uniform [-1, 1)
        val += n * (val * f32(0.021) + f32(28.0))
        dn[b] = np.clip(np.rint(val), 1, 65535).astype(np.uint16)
    return dn


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
    cdf = np.asarray(lay.field_cdf, dtype=np.float32)
    kind[...] = _FIELD_KIND_IDS[np.minimum(np.searchsorted(cdf, h_type, side="right"), len(cdf) - 1)]
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
