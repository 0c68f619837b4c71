"""Spectral indices computed from the bands as extra model input channels.

A normalised difference ``(a - b) / (a + b)`` does not change when a band is multiplied by a
gain, so it carries across scenes whose illumination, sensor calibration or reflectance scale
differ, which a network that sees only the bands learns poorly from synthetic data (issue 11: the
ablation in ``benchmarks/RESULTS.md``). The indices are computed from the bands in scene units
(reflectance, any scale, offset already removed), before the per-band normalisation, and appended
after the normalised bands. A model bundle records them in ``model.json`` (``input.indices``).

- ``ndwi``: (green - nir) / (green + nir), McFeeters (1996), Int. J. Remote Sensing 17(7) 1425-1432.
- ``mndwi``: (green - swir) / (green + swir), Xu (2006), Int. J. Remote Sensing 27(14) 3025-3033.
- ``ndvi``: (nir - red) / (nir + red), Rouse et al. (1974), NASA SP-351.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from unetgeo.errors import ConfigError

INDEX_BANDS: dict[str, tuple[str, str]] = {
    "ndwi": ("green", "nir"),
    "mndwi": ("green", "swir"),
    "ndvi": ("nir", "red"),
}
"""Each index's ``(a, b)`` band names: ``(a - b) / (a + b)``."""


def index_positions(bands: Sequence[str], indices: Sequence[str], where: str = "config") -> list[tuple[int, int]]:
    """Positions ``(i_a, i_b)`` in ``bands`` of each index's two bands.

    Raises:
        ConfigError: an unknown index, or a band it needs is not among ``bands``.
    """
    names = [str(b).lower() for b in bands]
    out = []
    for ix in indices:
        if ix not in INDEX_BANDS:
            raise ConfigError(f"{where}: index {ix!r} is unknown; use one of {sorted(INDEX_BANDS)}")
        a, b = INDEX_BANDS[ix]
        missing = [n for n in (a, b) if n not in names]
        if missing:
            raise ConfigError(f"{where}: index {ix!r} needs bands {a!r} and {b!r}, but the bands are {list(bands)}; "
                              f"name them so, or drop {ix!r} from model.indices")
        out.append((names.index(a), names.index(b)))
    return out


def normalized_differences(x: np.ndarray, positions: Sequence[tuple[int, int]]) -> np.ndarray:
    """``(len(positions), h, w)`` float32 normalised differences of the bands of ``x`` ``(bands, h, w)``.

    Pixels where ``a + b <= 0`` or either band is not finite get 0; values are clipped to [-1, 1].
    """
    out = np.zeros((len(positions), *x.shape[1:]), dtype=np.float32)
    for k, (i, j) in enumerate(positions):
        a = x[i].astype(np.float32, copy=False)
        b = x[j].astype(np.float32, copy=False)
        den = a + b
        ok = np.isfinite(den) & (den > 0)
        np.divide(a - b, den, out=out[k], where=ok)
        np.clip(out[k], -1.0, 1.0, out=out[k])
    return out
