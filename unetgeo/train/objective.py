"""Training objective: class weights, loss (CE + Dice, 255 ignored), learning-rate schedule, augmentation."""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from unetgeo.train.data import IGNORE

if TYPE_CHECKING:
    from unetgeo.config import Config, TrainingSpec

UNIT_OFFSET = 4.0
"""Normalised chips are mapped to ``(x + 4) / 8`` (about [0, 1]: -4 sigma is taken as the scene's
zero) for the colour, gamma and gain transforms, then mapped back."""

RGB_NAMES = (("red", "green", "blue"), ("b04", "b03", "b02"), ("sr_b4", "sr_b3", "sr_b2"))

_ACTIVE: contextvars.ContextVar[tuple[TrainingSpec, tuple[int, int, int] | None, tuple[str, ...]] | None] = (
    contextvars.ContextVar("unetgeo_training_spec", default=None)
)


def rgb_band_indices(bands: Sequence[str]) -> tuple[int, int, int] | None:
    """Positions of the red, green and blue bands in ``bands`` (names or S2/Landsat codes), or None."""
    low = [str(b).lower() for b in bands]
    for names in RGB_NAMES:
        if all(n in low for n in names):
            return tuple(low.index(n) for n in names)  # type: ignore[return-value]
    return None


@contextlib.contextmanager
def use_training_spec(config: Config) -> Iterator[None]:
    """Make ``config.training``'s augmentation / sampling / loss switches the defaults of
    :func:`make_augment`, :class:`~unetgeo.train.sampling.ChipSampler` and :func:`make_loss` while
    the block runs, for callers of :func:`unetgeo.train.train` whose loop does not pass them."""
    tok = _ACTIVE.set((config.training, rgb_band_indices(config.bands), tuple(config.class_names)))
    try:
        yield
    finally:
        _ACTIVE.reset(tok)


def active_training_spec() -> tuple[TrainingSpec, tuple[int, int, int] | None, tuple[str, ...]] | None:
    """``(training spec, rgb indices, class names)`` set by :func:`use_training_spec`, or None."""
    return _ACTIVE.get()


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

def make_augment(seed: int, spec: TrainingSpec | None = None, rgb: tuple[int, int, int] | None = None):
    """albumentations pipeline for normalised ``(h, w, bands)`` float32 chips and uint8 masks.

    Flips, 90° rotations, scale jitter (constant 0 fill, mask fill 255), brightness/contrast and
    per-band Gaussian noise in normalised units (albumentations' own pixel transforms clip float
    images to [0, 1], which would destroy normalised data, so those two are small subclasses).

    ``spec`` (a :class:`~unetgeo.config.TrainingSpec`; default the one of :func:`use_training_spec`,
    else today's settings) switches on the photometric transforms for differences between scenes:
    ``aug_color`` (albumentations ``ColorJitter``: brightness, contrast, saturation, hue, on the
    ``rgb`` channels only), ``aug_gamma`` (``RandomGamma``), ``aug_gain`` (a gain per band), and
    sets the scale jitter (``aug_scale``, ``aug_scale_p``). These run in the unit space
    ``(x + 4) / 8`` of the normalised chip (so albumentations' [0, 1] clipping does not bite).
    """
    import albumentations as A

    from unetgeo.train.augment_ops import augment_ops

    if spec is None:
        active = active_training_spec()
        if active is not None:
            spec, rgb = active[0], (active[1] if rgb is None else rgb)
    color_p = spec.aug_color if spec is not None else 0.0
    gamma_p = spec.aug_gamma if spec is not None else 0.0
    gain_p = spec.aug_gain if spec is not None else 0.0
    scale = tuple(spec.aug_scale) if spec is not None else (0.8, 1.25)
    scale_p = spec.aug_scale_p if spec is not None else 0.3
    T = augment_ops()

    photometric: list[Any] = []
    if color_p > 0 and rgb is not None:
        jitter = A.ColorJitter(brightness=(0.75, 1.25), contrast=(0.7, 1.3), saturation=(0.6, 1.4), hue=(-0.06, 0.06), p=1.0)
        photometric.append(T.UnitSpace(jitter, channels=tuple(rgb), p=color_p))
    if gamma_p > 0:
        photometric.append(T.UnitSpace(A.RandomGamma(gamma_limit=(70, 150), p=1.0), p=gamma_p))
    if gain_p > 0:
        photometric.append(T.BandGain(0.2, p=gain_p))
    aug = A.Compose(
        [
            A.HorizontalFlip(p=0.5),
            A.VerticalFlip(p=0.5),
            A.RandomRotate90(p=0.5),
            A.Affine(
                scale=scale,
                keep_ratio=True,
                border_mode=0,  # cv2.BORDER_CONSTANT (cv2 is albumentations' dependency, not ours)
                fill=0,
                fill_mask=IGNORE,
                p=scale_p,
            ),
            *photometric,
            T.BandBrightnessContrast(p=0.5),
            T.BandNoise(p=0.3),
        ],
        seed=seed,
    )
    # Compose(seed=) gives every transform the same seed, hence the same random stream: the
    # horizontal and the vertical flip then always agree (mirror images never occur) and every
    # probability draw is shared. One seed per transform makes them independent.
    for i, t in enumerate(aug.transforms):
        t.set_random_seed(int(np.random.SeedSequence([seed, i]).generate_state(1)[0]))
    return aug


def make_loss(n_classes: int, class_weights: np.ndarray | None, ce_weight: float = 1.0, dice_weight: float = 1.0,
              label_smoothing: float | None = None) -> Callable:
    """``loss(logits (B, C, H, W) float, target (B, H, W) int64) -> scalar``:
    ``ce_weight * CE(weights, ignore_index=255) + dice_weight * Dice(multiclass, ignore_index=255)``.
    Pixels labelled 255 contribute nothing; a batch without labelled pixels gives 0.
    ``label_smoothing`` of the CE term: default the :func:`use_training_spec` one, else 0."""
    import segmentation_models_pytorch as smp
    import torch
    import torch.nn.functional as F

    if label_smoothing is None:
        active = active_training_spec()
        label_smoothing = float(active[0].label_smoothing) if active is not None else 0.0
    w = torch.as_tensor(class_weights, dtype=torch.float32) if class_weights is not None else None
    dice = smp.losses.DiceLoss(mode="multiclass", ignore_index=IGNORE, from_logits=True)

    def loss_fn(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if not bool((target != IGNORE).any()):
            return logits.sum() * 0.0
        total = logits.new_zeros(())
        if ce_weight > 0:
            ww = w.to(logits.device) if w is not None else None
            total = total + ce_weight * F.cross_entropy(logits, target, weight=ww, ignore_index=IGNORE,
                                                        label_smoothing=label_smoothing)
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
