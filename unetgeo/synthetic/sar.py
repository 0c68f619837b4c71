"""Synthetic Sentinel-1 (C-band, IW GRD) backscatter of a scene: VV and VH sigma0 in dB.

The radar sees the same ground as the optical renderer (:func:`unetgeo.synthetic.render.surface`:
terrain, land cover, river, lakes and flood water), so labels are exactly those of
:func:`~unetgeo.synthetic.render.render_window`; clouds do not exist for it (the all-weather path
of flood mapping). Dry sand and wet snow are dark too (look-alikes of water), and
saturated soil, an optical look-alike, is bright. Per pixel, in this order:

1. **sigma0 of the surface kind** at the reference incidence angle of 38 deg (mid IW swath),
   :data:`SIGMA0` (VV, VH in dB), with per-parcel roughness / moisture offsets, a smooth soil
   moisture field, vegetation vigour (VH rises with biomass) and a little canopy texture;
2. **incidence angle** 30-46 deg across the columns (near range on the left for an ascending,
   on the right for a descending pass): sigma0 falls with the angle, ~0.1-0.2 dB/deg for land
   and ~0.4 dB/deg for calm water (specular: almost nothing comes back at far range);
3. **water**: calm open water is dark (VV about -21, VH about -28 dB at 38 deg); some scenes
   have **wind-roughened** patches (Bragg scattering: VV up by 3-9 dB, VH by about a third of
   that), the classic look-alike that makes a water threshold miss water; **flooded forest**
   and **flooded built-up** land are *brighter* than dry land (trunk-water and wall-water
   double bounce) although labelled water, as in real flood maps. Half the scenes have such
   woodland (20-60 % of the flooded tree cover, in patches); the rest of the flooded woodland is
   drawn as open water, as the optical renderer draws all flooded land;
4. land and water mixed **in linear power** by the water fraction (mixed pixels at shores; the
   bottom the optical renderer lets show through shallow flood water is not seen by the radar);
5. **speckle**: multiplicative, gamma-distributed intensity with an equivalent number of looks
   of :data:`ENL` = 4.4 (IW GRDH), independent in VV and VH, from one hash per pixel
   (Box-Muller normals, Wilson-Hilferty gamma), applied in linear power before the dB
   conversion (so the dB values have the skewed, ~2.2 dB wide speckle of real GRD);
6. a **per-scene calibration offset** of +-1 dB (both bands, plus +-0.3 dB per band) and a
   per-scene soil-moisture state (bare soil +-1.5 dB); none of it with ``calibrated=False``.

The incidence range is compressed: a synthetic scene spans the whole 250 km IW swath whatever its
width, so a model trained on any synthetic scene has seen the whole range of angles.

Every value is a pure function of the seed, the scene size and the global pixel coordinates
(hashed lattices of :mod:`unetgeo.synthetic.noise`), so windows render identically in any order.

Sources of the values (C-band, VV / VH, 10 m GRD):

- [Twele2016] Twele A., Cao W., Plank S., Martinis S. (2016). Sentinel-1-based flood mapping: a
  fully automated processing chain. Int. J. Remote Sensing 37(13), 2990-3004 (calm flood water
  VV -18 to -25 dB, thresholds about -18 to -20 dB; wind and flooded vegetation as the main
  errors).
- [Bonafilia2020] Bonafilia D., Tellman B., Anderson T., Issenberg E. (2020). Sen1Floods11: a
  georeferenced dataset to train and test deep learning flood algorithms for Sentinel-1. CVPR
  Workshops (VV/VH dB of water and land of 446 hand-labelled chips; VV Otsu baseline).
- [UlabyLong2014] Ulaby F.T., Long D.G. (2014). Microwave Radar and Radiometric Remote Sensing.
  University of Michigan Press (angular dependence of sigma0 of water, soils and vegetation;
  speckle statistics; double bounce of dihedral targets; Bragg scattering of wind waves).
- [Pulvirenti2011] Pulvirenti L., Pierdicca N., Chini M., Guerriero L. (2011). An algorithm for
  operational flood mapping from SAR data using fuzzy logic. Natural Hazards and Earth System
  Sciences 11, 529-540 (flooded vegetation brighter than dry vegetation by 1-3 dB in VV).
- [Mason2012] Mason D.C. et al. (2012). Near real-time flood detection in urban and rural areas
  using high-resolution SAR images. IEEE TGRS 50(8), 3041-3052 (urban double bounce, stronger
  when the ground is flooded).
- [ESA S1 UG] Sentinel-1 User Handbook (ESA, 2013) and Sentinel-1 product definition: IW GRDH
  10 m pixel spacing, ENL ~4.4, incidence 29-46 deg.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from unetgeo.grid import Window
from unetgeo.synthetic.clouds import _quantile_threshold
from unetgeo.synthetic.layout import LABEL_NODATA, SceneLayout
from unetgeo.synthetic.noise import _MASK64, _fbm_sep, _hash_u64, _noise_sep, _salt
from unetgeo.synthetic.render import _LANDUSE_OF_KIND, _outside_footprint, surface
from unetgeo.synthetic.spectra import KIND, SURFACES, identity_radiometry

ENL = 4.4
"""Equivalent number of looks of the speckle (Sentinel-1 IW GRDH) [ESA S1 UG]."""

THETA_NEAR_DEG, THETA_FAR_DEG, THETA_REF_DEG = 30.0, 46.0, 38.0
"""Incidence angle at near and far range and the reference angle of :data:`SIGMA0` (deg)."""


@dataclass(frozen=True)
class Sigma0:
    """Backscatter of a surface kind: VV and VH in dB at :data:`THETA_REF_DEG`, their slopes with
    the incidence angle (dB per degree, negative) and the sources."""

    vv_db: float
    vh_db: float
    slope_vv: float
    slope_vh: float
    source: str


_WATER = Sigma0(-21.0, -28.0, -0.40, -0.30, "Twele2016, Bonafilia2020; angular slope UlabyLong2014")
SIGMA0: dict[str, Sigma0] = {
    # water: dark, specular; the optical water types all look the same to the radar
    "water_clear": _WATER, "water_turbid": _WATER, "water_shallow": _WATER, "water_dark": _WATER,
    "flood_muddy": _WATER,
    # vegetation: volume scattering; VH follows biomass
    "crop": Sigma0(-9.0, -15.5, -0.15, -0.12, "Bonafilia2020 (cropland); UlabyLong2014"),
    "pasture": Sigma0(-10.0, -17.0, -0.15, -0.12, "Bonafilia2020 (grassland)"),
    "forest_broadleaf": Sigma0(-7.0, -12.8, -0.10, -0.08, "UlabyLong2014 (forest canopy, weak angular trend)"),
    "forest_conifer": Sigma0(-7.5, -13.2, -0.10, -0.08, "UlabyLong2014 (forest canopy)"),
    "shrub": Sigma0(-9.5, -16.0, -0.15, -0.12, "UlabyLong2014 (shrubland)"),
    "hedge": Sigma0(-6.5, -12.5, -0.10, -0.08, "UlabyLong2014 (tree rows)"),
    "urban_grass": Sigma0(-9.0, -16.5, -0.15, -0.12, "Bonafilia2020 (grass near buildings)"),
    # bare: surface scattering, moisture and roughness dependent; dry sand is a water look-alike
    "soil": Sigma0(-10.0, -17.5, -0.20, -0.15, "UlabyLong2014 (moist rough soil)"),
    "stubble": Sigma0(-11.0, -18.5, -0.20, -0.15, "UlabyLong2014 (dry soil, residue)"),
    "sand": Sigma0(-15.5, -23.0, -0.25, -0.20, "UlabyLong2014 (dry smooth sand: dark, a water look-alike)"),
    "wet_soil": Sigma0(-8.5, -16.0, -0.20, -0.15, "UlabyLong2014 (saturated soil: high permittivity, bright; "
                       "an optical water look-alike the radar does not confuse)"),
    "burnt": Sigma0(-11.0, -18.0, -0.20, -0.15, "UlabyLong2014 (bare burnt ground)"),
    # built-up: double bounce of walls and ground; the optical "shadow" strip beside a building is
    # where the wall meets the ground (the dihedral corner), the brightest place of a town
    "roof_bright": Sigma0(2.5, -8.5, -0.10, -0.10, "Mason2012 (buildings, 10 m)"),
    "roof_red": Sigma0(1.5, -9.0, -0.10, -0.10, "Mason2012"),
    "roof_dark": Sigma0(0.5, -9.5, -0.10, -0.10, "Mason2012"),
    "asphalt": Sigma0(-8.0, -15.0, -0.15, -0.12, "Mason2012 (streets, mixed 10 m pixels with kerbs and walls)"),
    "building_shadow": Sigma0(5.0, -7.0, -0.10, -0.10, "Mason2012 (wall-ground dihedral: double bounce)"),
    # snow and ice: wet snow absorbs (dark), dry snow lets the ground through
    "snow": Sigma0(-14.0, -21.5, -0.20, -0.15, "UlabyLong2014 (wet snow)"),
    "ice": Sigma0(-12.0, -19.5, -0.20, -0.15, "UlabyLong2014 (lake ice)"),
}
"""Backscatter of every surface kind of :data:`unetgeo.synthetic.spectra.SURFACES` (by name)."""

_BY_LANDUSE = {0: _WATER, 1: SIGMA0["pasture"], 2: SIGMA0["soil"], 3: SIGMA0["asphalt"], 4: SIGMA0["snow"]}
"""Stand-in for a surface kind without its own :data:`SIGMA0` entry (by land-use class)."""


def _sigma0(s) -> Sigma0:
    return SIGMA0.get(s.name) or _BY_LANDUSE[s.landuse]


_TABLE = np.array([[_sigma0(s).vv_db, _sigma0(s).vh_db, _sigma0(s).slope_vv, _sigma0(s).slope_vh] for s in SURFACES],
                  dtype=np.float32)
_VV, _VH, _SLOPE_VV, _SLOPE_VH = (np.ascontiguousarray(_TABLE[:, i]) for i in range(4))
_IS_FOREST = np.zeros(len(SURFACES), bool)
_IS_FOREST[[KIND[k] for k in ("forest_broadleaf", "forest_conifer", "hedge")]] = True
_IS_BARE = np.array([s.landuse == 2 for s in SURFACES])
_IS_VEG = np.array([s.landuse == 1 for s in SURFACES])
_IS_BUILT = np.array([s.landuse == 3 for s in SURFACES])

WIND_SCALE_PX = 180.0
"""Size of the wind-roughened water patches (px)."""

FLOODED_FOREST_DB = (2.0, -1.0)
"""Flooded forest: VV / VH change over the dry canopy (trunk-water double bounce) [Pulvirenti2011]."""

CANOPY_SCALE_PX = 60.0
"""Size of the patches of flooded woodland whose canopy stands above the water (px)."""

FLOODED_URBAN_DB = (3.0, 1.0)
"""Flooded built-up land: VV / VH change over dry (wall-water double bounce) [Mason2012]."""


@dataclass(frozen=True)
class SarScene:
    """Per-scene radar state, drawn from the seed (own random stream)."""

    ascending: bool  # near range (30 deg) on the left
    offset_db: tuple[float, float]  # calibration offset (VV, VH)
    soil_db: float  # soil-moisture state of the scene (bare soil offset)
    wind_share: float  # share of the water surface roughened by wind (0: calm)
    wind_db: float  # VV rise at full roughness
    wind_t: float  # noise threshold of the wind patches
    canopy_share: float  # share of the flooded woodland whose canopy stands above the water
    canopy_t: float  # noise threshold of those patches


def sar_scene(lay: SceneLayout) -> SarScene:
    """The per-scene radar state of a layout (a pure function of seed and size)."""
    rng = np.random.default_rng(np.random.SeedSequence([lay.seed & _MASK64, lay.height, lay.width, 0x5A12]))
    calibrated = lay.radiometry is not None and lay.radiometry != identity_radiometry()
    ascending = bool(rng.random() < 0.5)
    common, per_band = float(rng.uniform(-1.0, 1.0)), rng.uniform(-0.3, 0.3, 2)
    soil = float(rng.uniform(-1.5, 1.5))
    windy = rng.random() < 0.6
    share, gain = float(rng.uniform(0.05, 0.3)), float(rng.uniform(3.0, 9.0))
    canopy = float(rng.uniform(0.2, 0.6)) if rng.random() < 0.5 else 0.0
    if not calibrated:
        common, per_band, soil = 0.0, np.zeros(2), 0.0
    if not windy:
        share = 0.0
    t = _quantile_threshold(lay.height, lay.width, WIND_SCALE_PX, _salt(lay.seed, "sar_wind"), 3, share)
    return SarScene(ascending=ascending, offset_db=(common + float(per_band[0]), common + float(per_band[1])),
                    soil_db=soil, wind_share=share, wind_db=gain, wind_t=t, canopy_share=canopy,
                    canopy_t=_quantile_threshold(lay.height, lay.width, CANOPY_SCALE_PX,
                                                 _salt(lay.seed, "sar_canopy_patch"), 2, canopy))


def incidence_deg(lay: SceneLayout, xs: np.ndarray, scene: SarScene | None = None) -> np.ndarray:
    """Incidence angle (deg, float32) at global pixel-centre columns ``xs``."""
    sc = scene or sar_scene(lay)
    frac = np.asarray(xs, np.float64) / max(lay.width, 1)
    if not sc.ascending:
        frac = 1.0 - frac
    return (THETA_NEAR_DEG + (THETA_FAR_DEG - THETA_NEAR_DEG) * frac).astype(np.float32)


def speckle(win: Window, salt: int) -> tuple[np.ndarray, np.ndarray]:
    """Two independent unit-mean gamma(:data:`ENL`) intensity factors ``(h, w)`` float32 (VV, VH)."""
    yi = np.arange(win.row_off, win.row_off + win.height, dtype=np.int64)[:, None]
    xi = np.arange(win.col_off, win.col_off + win.width, dtype=np.int64)[None, :]
    h = _hash_u64(yi, xi, salt)
    u1 = ((h >> np.uint64(32)).astype(np.float64) + 0.5) * (1.0 / 4294967296.0)  # (0, 1)
    u2 = (h & np.uint64(0xFFFFFFFF)).astype(np.float64) * (1.0 / 4294967296.0)
    r = np.sqrt(-2.0 * np.log(u1))
    c = 1.0 / (9.0 * ENL)
    out = []
    for z in (r * np.cos(2 * np.pi * u2), r * np.sin(2 * np.pi * u2)):
        g = np.maximum(1.0 - c + z * np.sqrt(c), 0.05) ** 3  # Wilson-Hilferty: gamma(ENL) / ENL
        out.append(g.astype(np.float32))
    return out[0], out[1]


def render_sar_window(lay: SceneLayout, win: Window, flood_level: float = 0.0,
                      scene: SarScene | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Render one window of a Sentinel-1 scene.

    Args:
        lay: layout from :func:`unetgeo.synthetic.layout.scene_layout`.
        win: window in global pixel coordinates of the scene.
        flood_level: water level in metres above the river; 0 = normal.
        scene: the radar state of the scene; None: :func:`sar_scene` of the layout (tests replace
            it to look at the same ground from another pass, or without wind).

    Returns:
        ``(data, landuse)``: ``data`` float32 ``(2, h, w)`` sigma0 in dB, VV then VH, NaN outside
        the footprint; ``landuse`` uint8 ``(h, w)`` as :func:`~unetgeo.synthetic.render.render_window`
        (0 water, 1 vegetation, 2 bare, 3 built-up, 255 outside the footprint; never cloud).
    """
    f32 = np.float32
    cv, f_water, perm_wins, _ = surface(lay, win, flood_level)
    # the optical renderer lets 6 % of the bottom show through shallow flood water; radar does not
    f_sar = np.minimum(f_water * np.float32(1.0 / 0.94), np.float32(1.0))
    assert cv.kind is not None and cv.bright is not None and cv.vig is not None
    kind, ys, xs = cv.kind, cv.ys, cv.xs
    sc = scene or sar_scene(lay)
    seed = lay.seed
    dtheta = (incidence_deg(lay, xs, sc) - f32(THETA_REF_DEG))[None, :]

    # --- land: kind + angle + parcel roughness/moisture + moisture field + biomass + canopy texture
    moist = _fbm_sep(ys, xs, 300.0, _salt(seed, "sar_moist"), 3)
    parcel = (cv.bright - f32(1.0)) * f32(1.0 / 0.14)  # -1..1 per field parcel (and per building)
    bare = _IS_BARE[kind]
    veg = _IS_VEG[kind]
    vv = np.take(_VV, kind) + np.take(_SLOPE_VV, kind) * dtheta
    vh = np.take(_VH, kind) + np.take(_SLOPE_VH, kind) * dtheta
    vv += f32(1.2) * parcel + np.where(bare, f32(1.2), f32(0.6)) * moist + np.where(bare, f32(sc.soil_db), f32(0.0))
    vh += f32(1.0) * parcel + np.where(bare, f32(1.0), f32(0.4)) * moist + np.where(bare, f32(sc.soil_db), f32(0.0))
    vh += np.where(veg, f32(6.0) * (cv.vig - f32(1.0)), f32(0.0))  # more biomass, more volume scattering
    forest = _IS_FOREST[kind]
    tex = _noise_sep(ys, xs, 3.0, _salt(seed, "sar_canopy")) * np.where(forest, f32(0.8), f32(0.25))
    vv += tex
    vh += tex

    # --- water: calm, steep angular fall-off, wind-roughened patches; flooded forest / towns bright
    water_vv = f32(_WATER.vv_db) + f32(_WATER.slope_vv) * dtheta + np.zeros_like(vv)
    water_vh = f32(_WATER.vh_db) + f32(_WATER.slope_vh) * dtheta + np.zeros_like(vh)
    if sc.wind_share > 0:
        n = _fbm_sep(ys, xs, WIND_SCALE_PX, _salt(seed, "sar_wind"), 3)
        rough = np.clip((n - f32(sc.wind_t)) * f32(6.0), 0.0, 1.0)
        water_vv += f32(sc.wind_db) * rough
        water_vh += f32(sc.wind_db / 3.0) * rough
    water_vv += f32(0.5) * _noise_sep(ys, xs, 25.0, _salt(seed, "sar_water_tex"))
    flooded = ~perm_wins
    canopy = flooded & forest
    if sc.canopy_share > 0 and canopy.any():
        canopy &= _fbm_sep(ys, xs, CANOPY_SCALE_PX, _salt(seed, "sar_canopy_patch"), 2) > f32(sc.canopy_t)
    else:
        canopy[...] = False
    for mask, (dvv, dvh) in ((canopy, FLOODED_FOREST_DB), (flooded & _IS_BUILT[kind], FLOODED_URBAN_DB)):
        water_vv = np.where(mask, vv + f32(dvv), water_vv)
        water_vh = np.where(mask, vh + f32(dvh), water_vh)

    # --- linear mixing by the water fraction, speckle, calibration, back to dB
    spk = speckle(win, _salt(seed, "sar_speckle"))
    data = np.empty((2, win.height, win.width), np.float32)
    for b, (land_db, wat_db) in enumerate(((vv, water_vv), (vh, water_vh))):
        p_land = np.power(f32(10.0), land_db * f32(0.1))
        p_wat = np.power(f32(10.0), wat_db * f32(0.1))
        p = (p_land + f_sar * (p_wat - p_land)) * spk[b]
        data[b] = f32(10.0) * np.log10(np.maximum(p, f32(1e-6))) + f32(sc.offset_db[b])

    landuse = np.where(f_water >= f32(0.5), np.uint8(0), _LANDUSE_OF_KIND[kind])
    if lay.footprint:
        outside = _outside_footprint(lay, cv.yf, cv.xf)
        data[:, outside] = np.nan
        landuse[outside] = LABEL_NODATA
    return data, landuse


__all__ = ["ENL", "SIGMA0", "SarScene", "Sigma0", "incidence_deg", "render_sar_window", "sar_scene", "speckle"]
