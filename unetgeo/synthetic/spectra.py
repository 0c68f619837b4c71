"""Surface spectra of the synthetic scenes, calibrated to Sentinel-2, and the per-scene radiometry.

Bands are Sentinel-2 MSI B2 (blue, 490 nm), B3 (green, 560 nm), B4 (red, 665 nm), B8 (nir,
842 nm) and B11 (swir, 1610 nm) [Drusch2012]; values are reflectance x 10000.

Every surface kind has a **bottom-of-atmosphere (L2A) range** ``(p10, median, p90)`` per band. The
ranges are compiled from published spectral libraries and Sentinel-2 studies, resampled to the MSI
bands by their band centres (the ECOSTRESS / USGS library spectra are smooth over a 20-40 nm band):

- [Drusch2012] Drusch M. et al. (2012). Sentinel-2: ESA's optical high-resolution mission for GMES
  operational services. Remote Sensing of Environment 120, 25-36 (band centres and widths).
- [Kokaly2017] Kokaly R.F. et al. (2017). USGS Spectral Library Version 7. USGS Data Series 1035,
  doi:10.3133/ds1035 (vegetation, soils, sand, snow, asphalt, roofing, burnt vegetation).
- [Meerdink2019] Meerdink S.K. et al. (2019). The ECOSTRESS spectral library version 1.0. Remote
  Sensing of Environment 230, 111196 (vegetation, soils, man-made materials, snow and ice).
- [Pahlevan2020] Pahlevan N. et al. (2020). Seamless retrievals of chlorophyll-a from Sentinel-2
  (MSI) and Sentinel-3 (OLCI) in inland and coastal waters. Remote Sensing of Environment 240,
  111604 (in-situ water-leaving reflectance of clear, eutrophic and turbid waters at MSI bands).
- [Doxaran2002] Doxaran D. et al. (2002). Spectral signature of highly turbid waters. Remote
  Sensing of Environment 81, 149-161 (sediment-laden water: red > green, NIR 0.02-0.07).
- [Lobell2002] Lobell D.B., Asner G.P. (2002). Moisture effects on soil reflectance. Soil Science
  Society of America Journal 66, 722-727 (wet soil: darker in every band, most in the SWIR).
- [Xu2006] Xu H. (2006). Modification of normalised difference water index (NDWI) to enhance open
  water features in remotely sensed imagery. Int. J. Remote Sensing 27(14), 3025-3033 (water,
  built-up and shadow confusion in the SWIR).
- [Key2006] Key C.H., Benson N.C. (2006). Landscape assessment: the normalized burn ratio.
  FIREMON, USDA RMRS-GTR-164-CD (burnt areas: low NIR, high SWIR).
- [Dozier1989] Dozier J. (1989). Spectral signature of alpine snow cover from the Landsat TM.
  Remote Sensing of Environment 28, 9-22 (snow: bright visible, dark SWIR).
- [Baetens2019] Baetens L., Desjardins C., Hagolle O. (2019). Validation of Copernicus Sentinel-2
  cloud masks obtained from MAJA, Sen2Cor and FMask processors using reference cloud masks
  generated with a supervised active learning procedure. Remote Sensing 11(4), 433 (cloud, thin
  cloud and cloud-shadow reflectance in MSI bands).
- [Sterckx2011] Sterckx S., Knaeps E., Ruddick K. (2011). Detection and correction of adjacency
  effects in hyperspectral airborne data of coastal and inland waters: the use of the near
  infrared similarity spectrum. Int. J. Remote Sensing 32(21), 6479-6505 (light from bright land
  raises the NIR of water pixels near the shore).
- [Vermote2016] Vermote E. et al. (2016). Preliminary analysis of the performance of the Landsat 8
  / OLI land surface reflectance product. Remote Sensing of Environment 185, 46-56 (the size of the
  atmospheric path term between TOA and surface reflectance per band; residual errors of the
  correction, used for L1C and for the L2A residuals below).

The ranges were checked against the labelled real scenes of ``../shared/data/optical`` (eo-box L1C
lakes and forest, RStoolbox L2A Amazon blackwater, forest and village, scikit-eo Landsat-8 turbid
Madeira river): each real class median lies inside the range of its kind (after the L1C path term
for eo-box); ``tests/test_spectra.py`` checks it on the files and ``benchmarks/RESULTS.md`` has the
table.

**Top of atmosphere (L1C)** is ``toa = path + T * boa`` per band, with a Rayleigh term ``~ lambda^-4``
and an aerosol term ``~ lambda^-alpha`` (Angstrom exponent 0.5-2) whose size is drawn per scene
[Vermote2016]. L2A scenes get the residual of an imperfect correction (+-5 % gain, a small
adjacency offset). Both get a per-scene illumination factor and a per-band sensor gain.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

WAVELENGTH_NM = np.array([490.0, 560.0, 665.0, 842.0, 1610.0])
"""Band centres of B2, B3, B4, B8, B11 [Drusch2012]."""


@dataclass(frozen=True)
class Surface:
    """A surface kind: name, land-use class, BOA reflectance range x 10000 per band, sources."""

    name: str
    landuse: int  # 0 water, 1 vegetation, 2 bare soil, 3 built-up, 4 snow/ice (label: not water)
    p10: tuple[float, float, float, float, float]
    median: tuple[float, float, float, float, float]
    p90: tuple[float, float, float, float, float]
    source: str


SURFACES: tuple[Surface, ...] = (
    # --- water ------------------------------------------------------------------------------
    Surface("water_clear", 0, (300, 250, 100, 40, 10), (450, 400, 200, 100, 40), (700, 650, 380, 220, 120),
            "Pahlevan2020 (oligotrophic lakes), Xu2006"),
    Surface("water_turbid", 0, (550, 750, 650, 220, 20), (750, 1050, 1050, 420, 110), (1050, 1450, 1650, 750, 300),
            "Doxaran2002, Pahlevan2020 (turbid inland water); scikit-eo Madeira river"),
    Surface("water_shallow", 0, (450, 550, 350, 120, 30), (650, 760, 560, 220, 80), (950, 1050, 850, 400, 180),
            "Pahlevan2020 (bright bottom through < 2 m of water)"),
    Surface("water_dark", 0, (120, 150, 100, 60, 20), (220, 250, 200, 160, 80), (320, 360, 300, 300, 210),
            "Pahlevan2020 (humic / black water); RStoolbox Amazon water"),
    Surface("flood_muddy", 0, (600, 800, 800, 300, 100), (800, 1050, 1100, 520, 250), (1150, 1450, 1600, 900, 600),
            "Doxaran2002 (sediment-laden flood water)"),
    # --- vegetation -------------------------------------------------------------------------
    Surface("crop", 1, (200, 450, 200, 3000, 1500), (320, 620, 380, 3900, 1900), (450, 800, 550, 5000, 2500),
            "Kokaly2017, Meerdink2019 (green crops)"),
    Surface("pasture", 1, (300, 550, 400, 2500, 1800), (420, 720, 560, 3100, 2300), (550, 900, 800, 3800, 2800),
            "Kokaly2017 (grass)"),
    Surface("forest_broadleaf", 1, (150, 350, 150, 2500, 1200), (230, 450, 240, 3100, 1550), (350, 600, 400, 4000, 1900),
            "Meerdink2019 (deciduous canopy); RStoolbox and scikit-eo forest"),
    Surface("forest_conifer", 1, (120, 250, 110, 1500, 650), (200, 350, 200, 2000, 950), (300, 480, 320, 2600, 1300),
            "Meerdink2019 (conifer canopy)"),
    Surface("shrub", 1, (400, 600, 700, 2000, 2500), (550, 800, 950, 2500, 3000), (750, 1050, 1250, 3100, 3600),
            "Kokaly2017 (dry grass and shrubland)"),
    Surface("hedge", 1, (200, 400, 200, 2600, 1200), (300, 560, 330, 3300, 1500), (420, 750, 480, 4200, 2000),
            "Kokaly2017 (tree rows)"),
    Surface("urban_grass", 1, (300, 500, 400, 2000, 1500), (450, 700, 600, 2600, 1900), (600, 900, 850, 3300, 2400),
            "Kokaly2017 (lawn, mixed with paving)"),
    # --- bare ---------------------------------------------------------------------------------
    Surface("soil", 2, (550, 750, 950, 1500, 2000), (820, 1120, 1450, 2150, 3050), (1200, 1550, 2000, 2800, 3800),
            "Kokaly2017, Meerdink2019 (ploughed soils)"),
    Surface("stubble", 2, (750, 1000, 1250, 1800, 2500), (1000, 1300, 1650, 2400, 3300), (1350, 1700, 2100, 3000, 4000),
            "Kokaly2017 (dry soil, crop residue)"),
    Surface("sand", 2, (1200, 1500, 1800, 2200, 2800), (1600, 2100, 2600, 3000, 3700), (2200, 2800, 3500, 4000, 4800),
            "Kokaly2017 (quartz sand, dunes)"),
    Surface("wet_soil", 2, (250, 400, 500, 800, 200), (380, 580, 850, 1250, 550), (550, 800, 1250, 1800, 1100),
            "Lobell2002 (moist soil and mudflats: water absorption darkens the SWIR most)"),
    Surface("burnt", 2, (250, 350, 350, 700, 1300), (420, 530, 580, 1050, 1850), (600, 750, 850, 1500, 2500),
            "Key2006 (burn scars: low NIR, high SWIR)"),
    # --- built-up -----------------------------------------------------------------------------
    Surface("roof_bright", 3, (1000, 1050, 1100, 1400, 1700), (1350, 1420, 1480, 1850, 2250), (1800, 1900, 2000, 2400, 2900),
            "Meerdink2019 (concrete, metal roofing)"),
    Surface("roof_red", 3, (650, 700, 1000, 1300, 1800), (900, 950, 1350, 1700, 2300), (1200, 1300, 1800, 2200, 2900),
            "Meerdink2019 (terracotta tiles)"),
    Surface("roof_dark", 3, (300, 320, 330, 380, 340), (420, 450, 470, 560, 490), (600, 640, 680, 800, 750),
            "Meerdink2019 (tar and slate roofing)"),
    Surface("asphalt", 3, (500, 540, 560, 700, 800), (780, 820, 850, 1050, 1250), (1050, 1100, 1150, 1400, 1650),
            "Kokaly2017 (asphalt, aged and fresh)"),
    Surface("building_shadow", 3, (200, 240, 200, 220, 120), (300, 360, 300, 330, 190), (420, 500, 420, 480, 300),
            "Xu2006 (shadows are the main water confusion of urban scenes)"),
    # --- snow and ice -------------------------------------------------------------------------
    Surface("snow", 4, (6500, 6500, 6200, 5200, 150), (8500, 8400, 8100, 7200, 600), (9600, 9500, 9300, 8600, 1500),
            "Dozier1989, Meerdink2019 (fresh and old snow)"),
    Surface("ice", 4, (3000, 3000, 2800, 2000, 80), (5000, 4900, 4700, 3800, 300), (7000, 6800, 6500, 5500, 800),
            "Meerdink2019 (glacier and lake ice)"),
)
"""Every surface kind, in kind-id order (the renderer's ``kind`` values index this tuple)."""

KIND = {s.name: i for i, s in enumerate(SURFACES)}
"""Kind id of each surface name."""

P10 = np.array([s.p10 for s in SURFACES], dtype=np.float32)
MEDIAN = np.array([s.median for s in SURFACES], dtype=np.float32)
P90 = np.array([s.p90 for s in SURFACES], dtype=np.float32)
LANDUSE_OF_KIND = np.array([s.landuse for s in SURFACES], dtype=np.uint8)
"""Land-use class of each kind (0 water, 1 vegetation, 2 bare, 3 built-up, 4 snow/ice)."""

CLOUD_THICK = (np.array([3800, 3700, 3700, 3800, 2400], np.float32), np.array([5600, 5500, 5500, 5600, 3900], np.float32),
               np.array([8000, 7900, 7900, 8000, 5600], np.float32))
"""Thick (water) cloud TOA reflectance ``(p10, median, p90)`` [Baetens2019]; little below-cloud light."""

CLOUD_THIN_ADD = np.array([1500, 1400, 1350, 1300, 900], np.float32)
"""What an opaque-looking thin cloud / cirrus adds at full strength (scaled by its opacity) [Baetens2019]."""

SHADOW_DIFFUSE = (0.22, 0.45)
"""Range of the share of light left in a cloud or terrain shadow (diffuse sky only) [Baetens2019]."""


@dataclass(frozen=True)
class Radiometry:
    """Per-scene radiometry: ``dn = gain * (path + trans * illum * boa)`` per band (x 10000).

    Attributes:
        product: ``"l1c"`` (top of atmosphere) or ``"l2a"`` (surface reflectance).
        path: additive path reflectance x 10000 per band (L1C: Rayleigh + aerosol; L2A: residual).
        trans: two-way transmittance per band (L2A: the residual gain of the correction).
        illum: scene illumination factor (sun elevation, BRDF).
        gain: sensor gain per band.
        surface_u: per kind, where in its ``[p10, p90]`` range this scene's surface lies (0-1).
    """

    product: str
    path: tuple[float, ...]
    trans: tuple[float, ...]
    illum: float
    gain: tuple[float, ...]
    surface_u: tuple[float, ...]

    def apply(self, boa: np.ndarray, band: int) -> np.ndarray:
        """Sensor value of one band from BOA reflectance x 10000 (float32, in place when possible)."""
        f32 = np.float32
        boa *= f32(self.gain[band] * self.trans[band] * self.illum)
        boa += f32(self.gain[band] * self.path[band])
        return boa


def identity_radiometry() -> Radiometry:
    """L2A with no residual, gain or illumination change, every surface at its median."""
    n = len(WAVELENGTH_NM)
    return Radiometry("l2a", (0.0,) * n, (1.0,) * n, 1.0, (1.0,) * n, (0.5,) * len(SURFACES))


def draw_radiometry(rng: np.random.Generator, product: str) -> Radiometry:
    """Draw a scene's radiometry for ``product`` (``"l1c"`` or ``"l2a"``) from ``rng``."""
    lam = WAVELENGTH_NM / 490.0
    n = len(lam)
    if product == "l1c":
        rayleigh = float(rng.uniform(350.0, 900.0))  # at 490 nm; larger at low sun [Vermote2016]
        aerosol = float(rng.uniform(50.0, 700.0))
        alpha = float(rng.uniform(0.5, 2.0))
        path = rayleigh * lam ** -4.0 + aerosol * lam ** -alpha
        trans = 1.0 - (0.22 * (rayleigh / 900.0) + 0.12 * (aerosol / 700.0)) * lam ** -1.5
    elif product == "l2a":
        path = rng.uniform(-60.0, 90.0, n) * lam ** -1.0  # adjacency / residual haze
        trans = rng.uniform(0.95, 1.05, n)
    else:
        raise ValueError(f"product={product!r} must be 'l1c' or 'l2a'")
    illum = float(rng.uniform(0.82, 1.15))
    gain = rng.uniform(0.97, 1.03, n)
    surface_u = rng.uniform(0.1, 0.9, len(SURFACES))
    return Radiometry(product, tuple(float(v) for v in path), tuple(float(v) for v in trans), illum,
                      tuple(float(v) for v in gain), tuple(float(v) for v in surface_u))


def scene_spectra(rad: Radiometry) -> np.ndarray:
    """``(n_kinds, 5)`` float32 BOA spectra of this scene: each kind at ``surface_u`` within its range.

    Below the median the value moves towards ``p10``, above it towards ``p90``, band by band with
    the same ``u`` (so a kind keeps its spectral shape).
    """
    u = np.asarray(rad.surface_u, dtype=np.float32)[:, None]
    lo = MEDIAN + (P10 - MEDIAN) * np.clip(1.0 - 2.0 * u, 0.0, 1.0)
    hi = MEDIAN + (P90 - MEDIAN) * np.clip(2.0 * u - 1.0, 0.0, 1.0)
    return np.where(u < 0.5, lo, hi).astype(np.float32)


def sun_shadow_offset(rng: np.random.Generator, res_m: float = 10.0) -> tuple[float, float, float]:
    """``(dy, dx, cloud height m)``: where a cloud's shadow falls, in pixels, for a random sun.

    Sun zenith 20-65 deg, azimuth 100-260 deg (from north, clockwise: a morning overpass in either
    hemisphere); cloud base 800-3500 m. The shadow lies ``h * tan(zenith)`` away from the sun.
    """
    zen = math.radians(float(rng.uniform(20.0, 65.0)))
    az = math.radians(float(rng.uniform(100.0, 260.0)))
    h = float(rng.uniform(800.0, 3500.0))
    d = h * math.tan(zen) / res_m
    # away from the sun: azimuth + 180 deg; rows grow southwards, columns eastwards
    return float(d * math.cos(az)), float(-d * math.sin(az)), h
