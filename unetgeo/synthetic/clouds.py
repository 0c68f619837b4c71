"""Clouds of a synthetic scene: thick and thin cloud opacity and the cloud shadow, per pixel.

Thick clouds are a thresholded fractal noise field (cumulus-like blobs with soft edges); thin
clouds (cirrus, haze veils) a second, larger-scale field of low opacity. The shadow is the thick
cloud field displaced by ``cloud height * tan(sun zenith)`` away from the sun
(:func:`unetgeo.synthetic.spectra.sun_shadow_offset`), so clouds and shadows keep the geometry of
a real scene. Like everything in :mod:`unetgeo.synthetic`, every value is a pure function of the
global pixel coordinates, so windows render identically in any order.

The thresholds are set from the field's own quantiles (sampled on a 96 x 96 lattice over the
scene), so the share of pixels labelled cloud (thick opacity >= 0.5) is the requested fraction
to within a few per cent of the scene.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from unetgeo.synthetic.noise import _fbm_sep

THICK_SCALE_PX = 150.0
THIN_SCALE_PX = 420.0
EDGE = 0.06
"""Half-width of the thick cloud's soft edge, in noise units."""


@dataclass(frozen=True)
class CloudLayer:
    """Scene-wide cloud parameters (see :func:`cloud_layer`).

    Attributes:
        fraction, thin_fraction: requested shares of thick (labelled) and thin cloud.
        t_thick, t_thin: noise thresholds giving those shares.
        thin_max: largest thin-cloud opacity (< 0.5, so the ground stays visible and labelled).
        shadow_dy, shadow_dx: shadow displacement, px.
        diffuse: share of light left in the shadow.
        salt_thick, salt_thin, salt_tex: noise salts.
    """

    fraction: float
    thin_fraction: float
    t_thick: float
    t_thin: float
    thin_max: float
    shadow_dy: float
    shadow_dx: float
    diffuse: float
    salt_thick: int
    salt_thin: int
    salt_tex: int


def _quantile_threshold(height: int, width: int, scale: float, salt: int, octaves: int, share: float) -> float:
    """The noise value exceeded by ``share`` of the scene (from a 96 x 96 sample lattice)."""
    if share <= 0:
        return 9.0  # above any noise value: no cloud
    ys = (np.arange(96, dtype=np.float64) + 0.5) * (height / 96.0)
    xs = (np.arange(96, dtype=np.float64) + 0.5) * (width / 96.0)
    return float(np.quantile(_fbm_sep(ys, xs, scale, salt, octaves), 1.0 - min(share, 1.0)))


def cloud_layer(rng: np.random.Generator, height: int, width: int, fraction: float, thin_fraction: float,
                salts: tuple[int, int, int], shadow: tuple[float, float], diffuse: float) -> CloudLayer | None:
    """The cloud layer of a scene, or None when both fractions are 0."""
    if fraction <= 0 and thin_fraction <= 0:
        return None
    s_thick, s_thin, s_tex = salts
    return CloudLayer(
        fraction=float(fraction), thin_fraction=float(thin_fraction),
        t_thick=_quantile_threshold(height, width, THICK_SCALE_PX, s_thick, 4, fraction),
        t_thin=_quantile_threshold(height, width, THIN_SCALE_PX, s_thin, 3, thin_fraction),
        thin_max=float(rng.uniform(0.15, 0.45)), shadow_dy=float(shadow[0]), shadow_dx=float(shadow[1]),
        diffuse=float(diffuse), salt_thick=s_thick, salt_thin=s_thin, salt_tex=s_tex,
    )


def _thick(cl: CloudLayer, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    n = _fbm_sep(ys, xs, THICK_SCALE_PX, cl.salt_thick, 4)
    return np.clip((n - np.float32(cl.t_thick - EDGE)) * np.float32(0.5 / EDGE), 0.0, 1.0)


def cloud_fields(cl: CloudLayer, ys: np.ndarray, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Cloud fields of a window with global pixel-centre rows ``ys`` and columns ``xs`` (1-D float64).

    Returns:
        ``(thick, thin, light, texture)`` float32 ``(h, w)``: thick-cloud opacity 0-1 (labelled
        cloud where >= 0.5), thin-cloud opacity ``0..thin_max``, the share of light reaching the
        ground (1 outside shadows, ``diffuse`` in the core of a shadow) and a cloud-top texture
        around 1.
    """
    thick = _thick(cl, ys, xs)
    shade = _thick(cl, ys - cl.shadow_dy, xs - cl.shadow_dx)
    light = np.float32(1.0) - np.float32(1.0 - cl.diffuse) * shade
    if cl.thin_fraction > 0:
        n2 = _fbm_sep(ys, xs, THIN_SCALE_PX, cl.salt_thin, 3)
        thin = np.clip((n2 - np.float32(cl.t_thin)) * np.float32(4.0), 0.0, 1.0) * np.float32(cl.thin_max)
    else:
        thin = np.zeros_like(thick)
    tex = np.float32(1.0) + np.float32(0.18) * _fbm_sep(ys, xs, 25.0, cl.salt_tex, 3)
    return thick, thin, light, tex
