"""Training objective: class weights, loss (CE + Dice, 255 ignored), learning-rate schedule, augmentation."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from unetgeo.train.data import IGNORE


def class_weights_from_counts(counts: np.ndarray, mode: str = "inverse_sqrt_freq", max_ratio: float = 20.0) -> np.ndarray | None:
    """Per-class loss weights from pixel counts.

    ``inverse_sqrt_freq``: ``w_c = f_c^-1/2``, scaled so that ``sum_c f_c w_c = 1`` (the weighted
    loss keeps the scale of the plain one), clipped to ``max_ratio`` times the smallest weight.
    Classes without pixels get the largest weight. ``none`` gives ``None``.

    Returns:
        float32 ``(n_classes,)`` or None.
    """
    if mode == "none":
        return None
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    if total <= 0:
        return np.ones(len(counts), dtype=np.float32)
    f = counts / total
    present = f > 0
    w = np.zeros_like(f)
    w[present] = f[present] ** -0.5
    w[present] = np.minimum(w[present], w[present].min() * max_ratio)
    w /= (f * w).sum()
    w[~present] = w[present].max()
    return w.astype(np.float32)

def make_augment(seed: int):
    """albumentations pipeline for normalised ``(h, w, bands)`` float32 chips and uint8 masks.

    Flips, 90° rotations, scale jitter (constant 0 fill, mask fill 255), brightness/contrast and
    per-band Gaussian noise in normalised units (albumentations' own pixel transforms clip float
    images to [0, 1], which would destroy normalised data, so those two are small subclasses).
    """
    import albumentations as A
    from albumentations.core.transforms_interface import ImageOnlyTransform

    class BandBrightnessContrast(ImageOnlyTransform):
        """``x * alpha + beta``: one ``alpha`` in ``1 ± contrast``, per-band ``beta`` in ``± brightness``."""

        def __init__(self, brightness: float = 0.1, contrast: float = 0.15, p: float = 0.5):
            super().__init__(p=p)
            self.brightness, self.contrast = brightness, contrast

        def get_params_dependent_on_data(self, params: dict, data: dict) -> dict:
            nb = data["image"].shape[-1]
            return {
                "alpha": float(self.random_generator.uniform(1 - self.contrast, 1 + self.contrast)),
                "beta": self.random_generator.uniform(-self.brightness, self.brightness, size=nb).astype(np.float32),
            }

        def apply(self, img: np.ndarray, alpha: float = 1.0, beta: np.ndarray | None = None, **params: Any) -> np.ndarray:
            out = img * np.float32(alpha)
            return out + beta if beta is not None else out

        def get_transform_init_args_names(self) -> tuple[str, ...]:
            return ("brightness", "contrast")

    class BandNoise(ImageOnlyTransform):
        """Gaussian noise, its standard deviation drawn per band in ``[0, std_max]`` (normalised units)."""

        def __init__(self, std_max: float = 0.05, p: float = 0.3):
            super().__init__(p=p)
            self.std_max = std_max

        def get_params_dependent_on_data(self, params: dict, data: dict) -> dict:
            img = data["image"]
            std = self.random_generator.uniform(0, self.std_max, size=img.shape[-1]).astype(np.float32)
            return {"noise": self.random_generator.standard_normal(img.shape, dtype=np.float32) * std}

        def apply(self, img: np.ndarray, noise: np.ndarray | None = None, **params: Any) -> np.ndarray:
            return img + noise if noise is not None else img

        def get_transform_init_args_names(self) -> tuple[str, ...]:
            return ("std_max",)

    return A.Compose(
        [
            A.HorizontalFlip(p=0.5),
            A.VerticalFlip(p=0.5),
            A.RandomRotate90(p=0.5),
            A.Affine(
                scale=(0.8, 1.25),
                keep_ratio=True,
                border_mode=0,  # cv2.BORDER_CONSTANT (cv2 is albumentations' dependency, not ours)
                fill=0,
                fill_mask=IGNORE,
                p=0.3,
            ),
            BandBrightnessContrast(p=0.5),
            BandNoise(p=0.3),
        ],
        seed=seed,
    )


def make_loss(n_classes: int, class_weights: np.ndarray | None, ce_weight: float = 1.0, dice_weight: float = 1.0) -> Callable:
    """``loss(logits (B, C, H, W) float, target (B, H, W) int64) -> scalar``:
    ``ce_weight * CE(weights, ignore_index=255) + dice_weight * Dice(multiclass, ignore_index=255)``.
    Pixels labelled 255 contribute nothing; a batch without labelled pixels gives 0."""
    import segmentation_models_pytorch as smp
    import torch
    import torch.nn.functional as F

    w = torch.as_tensor(class_weights, dtype=torch.float32) if class_weights is not None else None
    dice = smp.losses.DiceLoss(mode="multiclass", ignore_index=IGNORE, from_logits=True)

    def loss_fn(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if not bool((target != IGNORE).any()):
            return logits.sum() * 0.0
        total = logits.new_zeros(())
        if ce_weight > 0:
            ww = w.to(logits.device) if w is not None else None
            total = total + ce_weight * F.cross_entropy(logits, target, weight=ww, ignore_index=IGNORE)
        if dice_weight > 0:
            total = total + dice_weight * dice(logits, target)
        return total

    return loss_fn


def lr_factor(step: int, warmup_steps: int, total_steps: int, floor: float = 0.02, progress: float | None = None) -> float:
    """Linear warm-up to 1 over ``warmup_steps``, then cosine decay to ``floor`` at ``total_steps``.

    ``progress`` (0..1), when given, replaces ``step / total_steps`` after warm-up (used to end the
    decay at a wall-time budget).
    """
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    t = min(1.0, (step - warmup_steps) / span)
    if progress is not None:
        t = min(1.0, max(t, progress))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))
