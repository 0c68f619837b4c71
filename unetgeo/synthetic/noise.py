"""Hashed lattices and value noise: every value a pure function of integer coordinates and a salt."""

from __future__ import annotations

import numpy as np

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
