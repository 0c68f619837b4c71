"""Scene-wide layout of a synthetic scene (river, towns, roads, footprint, lakes, villages) and its constants."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from unetgeo.synthetic.clouds import CloudLayer, _quantile_threshold, cloud_layer
from unetgeo.synthetic.noise import _MASK64, _hash01, _noise_1d, _salt, _splitmix
from unetgeo.synthetic.spectra import (
    SHADOW_DIFFUSE,
    Radiometry,
    draw_radiometry,
    identity_radiometry,
    sun_shadow_offset,
)

BAND_NAMES: tuple[str, ...] = ("blue", "green", "red", "nir", "swir")
"""Band order of every synthetic optical scene (Sentinel-2 B2, B3, B4, B8, B11)."""

SAR_BAND_NAMES: tuple[str, ...] = ("vv", "vh")
"""Band order of every synthetic Sentinel-1 scene (backscatter in dB)."""

FLOOD_CLASSES: tuple[str, ...] = ("background", "water", "cloud")
"""Class ids of ``labels="flood"``: 0 background, 1 water, 2 cloud (thick cloud; only in cloudy scenes), 255 nodata."""

PRODUCTS: tuple[str, ...] = ("l2a", "l1c")
"""Processing levels of the synthetic optical scenes: surface (L2A) or top-of-atmosphere (L1C) reflectance."""

HILL_SCALE_PX = 80.0
"""Feature size of the hill noise whose high values are in terrain shadow."""

CLOUD_CODE = 254
"""Land-use value :func:`render_window` gives thick-cloud pixels (label: cloud)."""

FIELD_KINDS: tuple[str, ...] = ("crop", "pasture", "soil", "stubble", "shrub", "sand", "burnt", "snow")
"""Surface kinds a field parcel can have; each scene draws its own shares of them."""

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
    "flood": {0: (217, 217, 217, 255), 1: (31, 120, 180, 255), 2: (255, 255, 255, 255)},
    "landuse": {0: (31, 120, 180, 255), 1: (51, 160, 44, 255), 2: (177, 89, 40, 255), 3: (227, 26, 28, 255)},
}


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
    # radiometry, land-cover mix and clouds (drawn from their own random stream)
    radiometry: Radiometry | None = None
    field_cdf: tuple[float, ...] = (0.42, 0.62, 0.85, 1.0, 1.0, 1.0, 1.0, 1.0)  # cumulative shares of FIELD_KINDS
    conifer_share: float = 0.0  # share of forest that is conifer
    dark_water: float = 0.0  # 0-1: how humic / black the permanent water of the scene is
    hills: float = 0.0  # share of land in terrain shadow (hilly scenes)
    hills_t: float = 9.0  # the hill-noise value that share of the scene exceeds (set with hills)
    adjacency: float = 0.0  # share of the shore's light scattered into water at the shore line
    adjacency_px: float = 4.0  # e-folding distance of the adjacency effect, px
    shore_soil: float = 0.0  # share of bare soil (rest: vegetation) in the shore light of the adjacency effect
    mud_m: float = 0.0  # height band above the water line (m) that is wet soil / mudflat on open land
    clouds: CloudLayer | None = None


def scene_layout(seed: int, height: int, width: int, footprint: bool = True, *, product: str = "l2a",
                 cloud_fraction: float = 0.0, thin_cloud_fraction: float = 0.0, res_m: float = 10.0,
                 calibrated: bool = True) -> SceneLayout:
    """Draw the scene-wide layout (river course, main town, roads, footprint) from ``seed``.

    Args:
        seed, height, width, footprint: content seed, size in px, cut-off corner.
        product: ``"l2a"`` or ``"l1c"`` (see :mod:`unetgeo.synthetic.spectra`).
        cloud_fraction, thin_cloud_fraction: shares of the scene under thick (labelled) and
            thin cloud; thick clouds cast shadows displaced by the sun geometry.
        res_m: pixel size in metres (for the shadow displacement).
        calibrated: draw the per-scene radiometry and land-cover mix; False gives every surface
            at its median with no atmosphere (the reference rendering of the tests).
    """
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
    halfwidth = float(rng.uniform(2.5, 8.0))  # 50-160 m wide at 10 m: small channels to large rivers
    salts = {
        k: _salt(seed, k)
        for k in (
            "river_noise", "river_width", "river_turb", "height", "height_detail", "height_slope", "fields",
            "forest", "tex", "tex_fine", "tex_vig", "lakes", "villages", "noise_a", "water_tex", "sediment",
            "conifer", "hills", "cloud_thick", "cloud_thin", "cloud_tex",
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
    layout_no_towns.update(_scene_mix(seed, height, width, product, cloud_fraction, thin_cloud_fraction, res_m,
                                      salts, calibrated))
    return SceneLayout(**layout_no_towns)


def _scene_mix(seed: int, height: int, width: int, product: str, cloud_fraction: float, thin_cloud_fraction: float,
               res_m: float, salts: dict[str, int], calibrated: bool) -> dict:
    """Radiometry, land-cover shares, water type, hills and clouds of a scene (own random stream)."""
    if product not in PRODUCTS:
        raise ValueError(f"product={product!r} must be one of {list(PRODUCTS)}")
    if not (0.0 <= cloud_fraction <= 0.9 and 0.0 <= thin_cloud_fraction <= 1.0):
        raise ValueError(f"cloud_fraction={cloud_fraction} must be in 0-0.9 and thin_cloud_fraction="
                         f"{thin_cloud_fraction} in 0-1")
    rng = np.random.default_rng(np.random.SeedSequence([seed & _MASK64, height, width, 0xC10D]))
    out: dict = {}
    if calibrated:
        out["radiometry"] = draw_radiometry(rng, product)
        # field kinds: temperate farmland always; some scenes add dry shrub, sand, burns, snow
        w = np.array([0.42, 0.20, 0.23, 0.15, 0.0, 0.0, 0.0, 0.0])
        w[:4] *= rng.uniform(0.5, 1.5, 4)
        for k, p, share in ((4, 0.35, 0.25), (5, 0.2, 0.25), (6, 0.3, 0.08), (7, 0.15, 0.3)):
            if rng.random() < p:
                w[k] = share * rng.uniform(0.3, 1.0)
        out["field_cdf"] = tuple(float(v) for v in np.cumsum(w) / w.sum())
        out["conifer_share"] = float(rng.choice([0.0, rng.uniform(0.2, 0.8)], p=[0.5, 0.5]))
        out["dark_water"] = float(rng.choice([0.0, rng.uniform(0.5, 1.0)], p=[0.5, 0.5]))
        out["hills"] = float(rng.choice([0.0, rng.uniform(0.03, 0.12)], p=[0.6, 0.4]))
        out["hills_t"] = _quantile_threshold(height, width, HILL_SCALE_PX, salts["hills"], 3, out["hills"])
        out["adjacency"] = float(rng.uniform(0.04, 0.2) * (1.3 if product == "l1c" else 1.0))
        out["adjacency_px"] = float(rng.uniform(2.0, 8.0))
        out["shore_soil"] = float(rng.uniform(0.0, 0.8))
        out["mud_m"] = float(rng.choice([0.0, rng.uniform(0.1, 0.5)], p=[0.5, 0.5]))
    else:
        out["radiometry"] = identity_radiometry()
    shadow = sun_shadow_offset(rng, res_m)
    out["clouds"] = cloud_layer(rng, height, width, cloud_fraction, thin_cloud_fraction,
                                (salts["cloud_thick"], salts["cloud_thin"], salts["cloud_tex"]), shadow[:2],
                                float(rng.uniform(*SHADOW_DIFFUSE)))
    return out


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


def _lattice_sites(y0: float, y1: float, x0: float, x1: float, cell: float, rmax: float, salt: int, n: int,
                   p_keep: float) -> Iterator[tuple[int, int, float, float, np.ndarray]]:
    """Jittered sites of a hashed ``cell`` px lattice near a window: yields ``(i, j, cy, cx, h (n,))``.

    Cells within ``rmax`` px of ``[y0, y1) x [x0, x1)`` are visited; a cell holds a site when its
    first hash is at most ``p_keep``; the site lies in the middle 70 % of the cell.
    """
    for i in range(int(math.floor((y0 - rmax) / cell)), int(math.floor((y1 + rmax) / cell)) + 1):
        for j in range(int(math.floor((x0 - rmax) / cell)), int(math.floor((x1 + rmax) / cell)) + 1):
            h = _hash01(np.arange(n) + n * i, j, salt)
            if h[0] > p_keep:
                continue
            yield i, j, (i + 0.15 + 0.7 * float(h[1])) * cell, (j + 0.15 + 0.7 * float(h[2])) * cell, h


def _villages(lay: SceneLayout, y0: float, y1: float, x0: float, x1: float) -> list[Town]:
    """Villages from a hashed 1600 px lattice whose disc may touch ``[y0, y1) x [x0, x1)``."""
    cell, rmax = 1600.0, 110.0
    out = []
    salt = lay.salts["villages"]
    main = lay.towns[0]
    for i, j, cy, cx, h in _lattice_sites(y0, y1, x0, x1, cell, rmax, salt, 5, 0.5):
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
    for i, j, cy, cx, h in _lattice_sites(y0, y1, x0, x1, cell, rmax, salt, 4, 0.33):
        r = 10.0 + 45.0 * float(h[3]) ** 1.5
        if any(math.hypot(cy - t.cy, cx - t.cx) < t.radius_px + r * 1.4 + 5 for t in towns):
            continue
        if cy + rmax < y0 or cy - rmax >= y1 or cx + rmax < x0 or cx - rmax >= x1:
            continue
        out.append((cy, cx, r, _splitmix(salt + 104729 * i + j)))
    return out
