"""Training augmentation (issue 15): labels stay aligned with the pixels under every transform,
the photometric switches of TrainingSpec act, and the defaults keep the earlier pipeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from unetgeo.config import TrainingSpec, load_config
from unetgeo.train.data import IGNORE
from unetgeo.train.objective import make_augment, rgb_band_indices, use_training_spec

DUBAI = str(Path(__file__).resolve().parent.parent / "configs" / "dubai_landcover.yaml")

STRONG = {"aug_color": 1.0, "aug_gamma": 1.0, "aug_gain": 1.0, "aug_scale": (0.6, 1.6), "aug_scale_p": 1.0}


def _pattern(size: int = 96, block: int = 12, seed: int = 0, bands: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """An asymmetric blocky binary pattern: labels 0/1 per block (no flip or rotation maps it onto
    itself), the image -1 / +1 in every band (grey, so colour jitter keeps the two levels apart)."""
    rng = np.random.default_rng(seed)
    n = size // block
    while True:
        blocks = rng.integers(0, 2, size=(n, n)).astype(np.uint8)
        variants = [np.rot90(b, k) for b in (blocks, blocks[::-1], blocks[:, ::-1]) for k in range(4)]
        if sum(np.array_equal(v, blocks) for v in variants) == 1 and 0.3 < blocks.mean() < 0.7:
            break
    lab = np.kron(blocks, np.ones((block, block), dtype=np.uint8))
    img = np.repeat((lab.astype(np.float32) * 2 - 1)[..., None], bands, axis=-1)
    return np.ascontiguousarray(img), lab


def _agreement(img: np.ndarray, mask: np.ndarray) -> float:
    """Share of labelled pixels whose image level (band mean, split at the midpoint of the
    1st and 99th percentiles) says the same class as the mask."""
    v = img.mean(axis=-1)
    keep = mask != IGNORE
    lo, hi = np.percentile(v[keep], [1, 99])
    return float(((v > (lo + hi) / 2) == (mask == 1))[keep].mean())


@pytest.mark.parametrize("spec", [None, TrainingSpec(**STRONG)], ids=["default", "strong"])
def test_labels_follow_pixels_through_geometric_and_photometric_transforms(spec):
    img, lab = _pattern()
    changed = 0
    for seed in range(40):
        aug = make_augment(seed, spec, rgb=(0, 1, 2))
        out = aug(image=img.copy(), mask=lab.copy())
        x, y = out["image"], out["mask"]
        assert x.shape == img.shape and y.shape == lab.shape and x.dtype == np.float32
        assert np.isfinite(x).all()
        assert set(np.unique(y)) <= {0, 1, IGNORE}
        if (y != IGNORE).mean() < 0.2:
            continue
        # bilinear image vs nearest mask differ only along the block edges
        assert _agreement(x, y) > 0.95, seed
        changed += not np.array_equal(y, lab)
    assert changed >= 20  # the transforms did move the pattern


@pytest.mark.parametrize("k", [1, 2, 3])
def test_known_pattern_under_each_rotation_and_flip(k):
    """One bright pixel at a known asymmetric spot: after the transform, the labelled pixel and the
    bright pixel are the same one (checked through the deterministic ops albumentations applies)."""
    import albumentations as A

    img = np.zeros((32, 32, 3), dtype=np.float32)
    lab = np.zeros((32, 32), dtype=np.uint8)
    img[3, 7] = 5.0
    lab[3, 7] = 1
    ops = {1: A.HorizontalFlip(p=1), 2: A.VerticalFlip(p=1), 3: A.RandomRotate90(p=1)}
    out = A.Compose([ops[k]], seed=k)(image=img, mask=lab)
    (yy, xx) = np.argwhere(out["mask"] == 1)[0]
    assert out["image"][yy, xx, 0] == 5.0 and (yy, xx) != (3, 7)
    # and make_augment's own pipeline keeps the pair together over many draws
    for seed in range(30):
        o = make_augment(seed, TrainingSpec(**STRONG), rgb=(0, 1, 2))(image=img.copy(), mask=lab.copy())
        m = o["mask"] == 1
        if m.any():
            bright = np.unravel_index(np.argmax(o["image"].mean(axis=-1)), m.shape)
            assert m[bright] or np.hypot(*(np.argwhere(m).mean(axis=0) - bright)) <= 1.5, seed


def test_scale_jitter_keeps_alignment_and_fills_ignore():
    img, lab = _pattern(seed=3)
    spec = TrainingSpec(aug_scale=(0.5, 0.6), aug_scale_p=1.0)  # always zoom out: a padded border
    out = make_augment(7, spec)(image=img.copy(), mask=lab.copy())
    assert (out["mask"] == IGNORE).mean() > 0.3
    assert _agreement(out["image"], out["mask"]) > 0.95


def test_photometric_switches_change_pixels_only_when_on():
    img, lab = _pattern(bands=4)
    img = img + np.linspace(-0.5, 0.5, 4, dtype=np.float32)  # not grey: hue and saturation act
    off = TrainingSpec(aug_scale_p=0.0)
    base = [make_augment(s, off, rgb=(0, 1, 2))(image=img.copy(), mask=lab.copy())["image"] for s in range(8)]
    for field in ("aug_color", "aug_gamma", "aug_gain"):
        spec = off.model_copy(update={field: 1.0})
        outs = [make_augment(s, spec, rgb=(0, 1, 2))(image=img.copy(), mask=lab.copy())["image"] for s in range(8)]
        assert any(not np.allclose(a, b) for a, b in zip(base, outs, strict=True)), field
    # colour jitter needs red/green/blue: without them it is left out
    spec = off.model_copy(update={"aug_color": 1.0})
    a = make_augment(1, spec, rgb=None)(image=img.copy(), mask=lab.copy())["image"]
    b = make_augment(1, off, rgb=None)(image=img.copy(), mask=lab.copy())["image"]
    np.testing.assert_allclose(a, b)


def test_defaults_keep_the_earlier_pipeline_and_context_spec_is_used():
    names = lambda aug: [type(t).__name__ for t in aug.transforms]  # noqa: E731
    assert names(make_augment(0)) == ["HorizontalFlip", "VerticalFlip", "RandomRotate90", "Affine",
                                      "BandBrightnessContrast", "BandNoise"]
    assert names(make_augment(0, TrainingSpec())) == names(make_augment(0))
    cfg = load_config(DUBAI, training={**load_config(DUBAI).training.model_dump(), **STRONG})
    assert rgb_band_indices(cfg.bands) == (0, 1, 2)
    assert rgb_band_indices(["nir", "swir16"]) is None and rgb_band_indices(["B02", "B03", "B04"]) == (2, 1, 0)
    with use_training_spec(cfg):
        inside = names(make_augment(0))
    assert inside.count("UnitSpace") == 2 and "BandGain" in inside
    assert names(make_augment(0)) == names(make_augment(0, TrainingSpec()))  # reset after the block
