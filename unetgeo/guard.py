"""Input statistics and the input guard: is this scene in the units the model was trained on?

Tiling computes per-band statistics while it streams (:func:`chunk_stats` per chunk, merged by
:class:`BandStatsAccumulator`); :func:`check_input` compares them with the model's training
statistics (``model.json`` ``norm.mean`` / ``norm.std``) and names the band, both values and the
likely cause when a band is far off.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

_SKETCH_POINTS = 201  # quantiles kept per chunk for float data
_SKETCH_MAX = 8192  # the merged float sketch is compressed back to this many points


# --------------------------------------------------------------------------------------------
# streaming per-band statistics
# --------------------------------------------------------------------------------------------
def chunk_stats(data: np.ndarray, valid: np.ndarray) -> dict[str, Any]:
    """Mergeable statistics of one chunk over its valid pixels.

    Args:
        data: ``(bands, h, w)`` any numeric dtype.
        valid: ``(h, w)`` bool.

    Returns:
        ``{"n", "sum", "sumsq"}`` float64 per band, plus either exact value histograms
        (``"hist"``: per band ``(values, counts)``, integer dtypes of ≤ 16 bits, from which the
        moments are derived exactly) or a quantile sketch (``"sketch"``: per band
        ``(values, weights)``) for other dtypes.
    """
    nb = data.shape[0]
    all_valid = bool(valid.all())
    n_valid = int(valid.size if all_valid else valid.sum())
    out: dict[str, Any] = {"n": np.full(nb, n_valid, dtype=np.float64)}
    if data.dtype.kind in "ui" and data.dtype.itemsize <= 2:
        offset = 0 if data.dtype.kind == "u" else 1 << (8 * data.dtype.itemsize - 1)
        hists, sums, sumsqs = [], [], []
        for b in range(nb):
            band = data[b].ravel() if all_valid else data[b][valid]
            counts = np.bincount(band if offset == 0 else band.astype(np.int32) + offset)
            nz = np.flatnonzero(counts)
            vals = (nz - offset).astype(np.int64)
            cnt = counts[nz].astype(np.int64)
            sums.append(float(np.dot(vals, cnt)))  # exact integer dot products (no BLAS threads)
            sumsqs.append(float(np.dot(vals * vals, cnt)))
            hists.append((vals, cnt))
        out.update(sum=np.array(sums), sumsq=np.array(sumsqs), hist=hists)
        return out
    v = (data.reshape(nb, -1) if all_valid else data[:, valid]).astype(np.float64)
    out.update(sum=v.sum(axis=1), sumsq=np.square(v).sum(axis=1))
    qs = (np.arange(_SKETCH_POINTS) + 0.5) / _SKETCH_POINTS  # each point stands for n/K values
    out["sketch"] = [
        (np.quantile(v[b], qs), np.full(_SKETCH_POINTS, n_valid / _SKETCH_POINTS)) if n_valid else (np.zeros(0), np.zeros(0))
        for b in range(nb)
    ]
    return out


def _weighted_quantiles(values: np.ndarray, weights: np.ndarray, qs: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="stable")
    v, w = values[order], weights[order]
    cw = np.cumsum(w)
    if cw.size == 0 or cw[-1] <= 0:
        return np.full(qs.shape, np.nan)
    pos = (cw - 0.5 * w) / cw[-1]
    return np.interp(qs, pos, v)


_HIST_OFFSET = 1 << 15  # dense histograms cover int16 and uint16 (and uint8): index = value + offset
_HIST_SIZE = 3 << 15


class BandStatsAccumulator:
    """Merge :func:`chunk_stats` results into per-band mean, std, p2, p98 (bounded memory).

    Integer bands of ≤ 16 bits keep a dense value histogram (768 KiB per band), so their
    statistics are exact and independent of the merge order; other types keep sums and a
    bounded quantile sketch (merge in a fixed order for reproducible results).
    """

    def __init__(self, n_bands: int):
        self.n = np.zeros(n_bands)
        self.sum = np.zeros(n_bands)
        self.sumsq = np.zeros(n_bands)
        self.dense: np.ndarray | None = None  # (bands, _HIST_SIZE) int64
        self.sketch: list[tuple[np.ndarray, np.ndarray]] | None = None

    def add_hist(self, hist: Sequence[tuple[np.ndarray, np.ndarray]]) -> None:
        """Merge the exact histograms of one chunk (``chunk_stats(...)["hist"]``)."""
        if self.dense is None:
            self.dense = np.zeros((len(hist), _HIST_SIZE), np.int64)
        for b, (vals, cnts) in enumerate(hist):
            self.dense[b, vals + _HIST_OFFSET] += cnts  # vals are unique within a chunk

    def add(self, part: dict[str, Any]) -> None:
        """Merge one chunk's statistics."""
        self.n += part["n"]
        self.sum += part["sum"]
        self.sumsq += part["sumsq"]
        if "hist" in part:
            self.add_hist(part["hist"])
        if "sketch" in part:
            if self.sketch is None:
                self.sketch = [(np.zeros(0), np.zeros(0)) for _ in part["sketch"]]
            merged = []
            for (va, wa), (vb, wb) in zip(self.sketch, part["sketch"], strict=True):
                vals, wts = np.concatenate([va, vb]), np.concatenate([wa, wb])
                if vals.size > _SKETCH_MAX:
                    qs = (np.arange(_SKETCH_MAX // 2) + 0.5) / (_SKETCH_MAX // 2)
                    vals = _weighted_quantiles(vals, wts, qs)
                    wts = np.full(qs.size, wts.sum() / qs.size)
                merged.append((vals, wts))
            self.sketch = merged

    def result(self, band_names: Sequence[str]) -> dict[str, dict[str, float]]:
        """``{band: {"mean", "std", "p2", "p98", "valid_pixels"}}``; NaN for a band without valid pixels."""
        out: dict[str, dict[str, float]] = {}
        for b, name in enumerate(band_names):
            n = self.n[b]
            if self.dense is not None:
                idx = np.flatnonzero(self.dense[b])
                cnts = self.dense[b, idx].astype(np.float64)
                vals = (idx - _HIST_OFFSET).astype(np.float64)
                n = float(cnts.sum())
                mean = float(np.dot(vals, cnts) / n) if n else float("nan")
                var = float(np.dot(np.square(vals - mean), cnts) / n) if n else float("nan")
                p2, p98 = _weighted_quantiles(vals, cnts, np.array([0.02, 0.98]))
            else:
                mean = self.sum[b] / n if n else float("nan")
                var = max(self.sumsq[b] / n - mean * mean, 0.0) if n else float("nan")
                if self.sketch is not None:
                    vals, wts = self.sketch[b]
                    p2, p98 = _weighted_quantiles(vals, wts, np.array([0.02, 0.98]))
                else:
                    p2 = p98 = float("nan")
            out[name] = {
                "mean": float(mean),
                "std": float(np.sqrt(var)),
                "p2": float(p2),
                "p98": float(p98),
                "valid_pixels": int(n),
            }
        return out


class InOrder:
    """Feed chunk statistics to an accumulator in chunk order, whatever order they arrive in.

    Histograms are merged at once (exact, order-free); the small rest waits for its turn, so
    float sums and sketches come out the same for a clean, a resumed or a parallel run.
    """

    def __init__(self, acc: BandStatsAccumulator):
        self.acc = acc
        self.next = 0
        self.waiting: dict[int, dict[str, Any]] = {}

    def add(self, i: int, part: dict[str, Any]) -> None:
        if "hist" in part:
            self.acc.add_hist(part.pop("hist"))
        self.waiting[i] = part
        while self.next in self.waiting:
            self.acc.add(self.waiting.pop(self.next))
            self.next += 1




# --------------------------------------------------------------------------------------------
# the input guard
# --------------------------------------------------------------------------------------------
NARROW_FACTOR = 25.0
"""How many times narrower than the training spread a band's spread may be before it is suspicious."""


def check_input(stats: dict[str, dict[str, float]], mean: Sequence[float], std: Sequence[float],
                model_bands: Sequence[str], *, mean_sd: float = 3.0, std_ratio: float = 4.0,
                where: str = "scene") -> dict[str, Any]:
    """Compare a scene's band statistics with a model's training statistics.

    A band is *off* when its mean lies more than ``mean_sd`` training standard deviations from
    the training mean, its std is more than ``std_ratio`` times the training std, or more than
    :data:`NARROW_FACTOR` (or ``std_ratio`` if larger) times narrower. Each off band gets one warning naming the band, both values and the likely
    cause (reflectance scale 1 vs 10000, a Sentinel-2 offset of 1000, L1C vs L2A, band order).

    Args:
        stats: ``{band: {"mean", "std", "p2", "p98"}}`` of the tiles (in the model's band order).
        mean, std: the model's per-band normalisation (``model.json`` ``norm``), scene units.
        model_bands: the model's band names.

    Returns:
        ``{"ok": bool, "off_bands": [names], "warnings": [str], "bands": {name: {scene_mean,
        scene_std, scene_p2, scene_p98, model_mean, model_std, mean_sd, std_ratio, off}}}``.
    """
    names = list(stats)
    smean = [float(stats[n]["mean"]) for n in names]
    report: dict[str, Any] = {"ok": True, "off_bands": [], "warnings": [], "bands": {},
                              "thresholds": {"mean_sd": mean_sd, "std_ratio": std_ratio}}
    for i, name in enumerate(names[: len(mean)]):
        s, m_t, s_t = stats[name], float(mean[i]), max(float(std[i]), 1e-12)
        m_s, s_s = float(s["mean"]), max(float(s["std"]), 1e-12)
        z, ratio = abs(m_s - m_t) / s_t, max(s_s / s_t, s_t / s_s)
        # a scene is usually more uniform than a varied training set (one lake and a forest against
        # clouds, snow, L1C and L2A): only a spread NARROW_FACTOR times narrower is suspicious
        # (0-1 reflectance given to a x10000 model is ~10^4 narrower); a wider one by std_ratio
        too_wide, too_narrow = s_s / s_t > std_ratio, s_t / s_s > max(std_ratio, NARROW_FACTOR)
        off = bool(not np.isfinite(m_s) or z > mean_sd or too_wide or too_narrow)
        report["bands"][name] = {"scene_mean": m_s, "scene_std": float(s["std"]), "scene_p2": float(s.get("p2", np.nan)),
                                 "scene_p98": float(s.get("p98", np.nan)), "model_mean": m_t, "model_std": float(std[i]),
                                 "mean_sd": round(z, 3), "std_ratio": round(ratio, 3), "off": off}
        if off:
            cause = likely_cause(m_s, m_t, s_t, i, smean, mean, model_bands)
            report["off_bands"].append(name)
            report["warnings"].append(
                f"{where}: band {name} (model band {model_bands[i] if i < len(model_bands) else i + 1}) has mean "
                f"{m_s:.4g}, std {s_s:.4g} but the model was trained on mean {m_t:.4g}, std {s_t:.4g} "
                f"({z:.1f} training stds off, spread x{ratio:.1f}); likely {cause}")
    report["ok"] = not report["off_bands"]
    return report


def likely_cause(m_s: float, m_t: float, s_t: float, i: int, scene_means: Sequence[float],
                 model_means: Sequence[float], model_bands: Sequence[str]) -> str:
    """A one-phrase guess of why a band's mean ``m_s`` differs from the training mean ``m_t``."""
    band = str(model_bands[i]).lower() if i < len(model_bands) else ""
    if band in ("vv", "vh", "hh", "hv") and m_t < 0 <= m_s:
        return ("linear backscatter (power) given to a model trained on dB: convert with 10 * log10(sigma0) "
                "(README: Bringing your own scenes, Sentinel-1)")
    if m_s > 0 and m_t > 0 and 1000 <= m_t / m_s <= 100000:
        return "reflectance scaled 0-1 given to a model trained on x10000 integers: give --scale 10000"
    if m_s > 0 and m_t > 0 and 1000 <= m_s / m_t <= 100000:
        return "x10000 integer reflectance given to a model trained on 0-1 reflectance: give --scale 0.0001"
    if 600 <= m_s - m_t <= 1400:
        return "the Sentinel-2 baseline 04.00 offset (+1000) not removed: give --offset -1000"
    closest = int(np.argmin([abs(m_s - v) for v in model_means])) if len(model_means) else i
    if closest != i and abs(m_s - model_means[closest]) < 0.5 * s_t:
        name = model_bands[closest] if closest < len(model_bands) else closest + 1
        return f"a wrong band order (it looks like model band {name}): select bands with --bands"
    return ("another processing level (L1C top-of-atmosphere vs L2A surface reflectance), sensor or "
            "calibration than the training data")
