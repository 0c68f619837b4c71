"""Training: random chips from tiled scenes (or image/mask pair folders) -> a model bundle.

Data flow::

    scene.tif ──make_tiles──▶ WORK/<name>/tiles.zarr + valid.zarr     (chunked, streaming)
    labels (raster | vector) ─▶ WORK/<name>/labels.zarr               (uint8, 255 = ignore)
    subsampled label scan ────▶ class frequencies (class weights) + rare-class pixel pools
    chips (chip_px) ──augment──▶ U-Net ──CE + Dice──▶ AdamW, warm-up + cosine, per step
    validation blocks ────────▶ confusion matrix ─▶ best-mIoU weights ─▶ OUT/model.safetensors + model.json
                                                                        OUT/training_report.png

Nothing holds a scene-sized array: chips and validation blocks are read through a small
chunk cache. The train/validation split is by spatial blocks of ``val_block_px`` (a chip never
straddles a train and a validation block), or by whole scenes when ``val_scenes`` are given.
"""

from __future__ import annotations

import copy
import logging
import math
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from unetgeo.config import Config, SceneLabels
from unetgeo.errors import ConfigError, InputError, LabelError
from unetgeo.evaluate import ConfusionMatrix
from unetgeo.grid import Grid, Window, align_up, iter_tile_windows
from unetgeo.io import uri as U
from unetgeo.model import build_model, normalise, save_bundle

log = logging.getLogger(__name__)

IGNORE = 255
CHECKPOINT_NAME = "checkpoint.pt"
REPORT_NAME = "training_report.png"
MAX_POINTS_PER_CLASS = 4096
SCAN_TARGET_PX = 4_000_000
MAX_VAL_BLOCKS = 256
CACHE_BYTES = 512 << 20
"""Decoded-chunk cache budget shared by all training scenes (bytes)."""


@dataclass
class TrainResult:
    """What :func:`train` produced.

    Attributes:
        model_dir: the bundle folder (``model.safetensors`` + ``model.json`` + ``training_report.png``).
        metrics: validation metrics of the kept (best) weights (``ConfusionMatrix.as_dict``).
        epochs_run: epochs completed, counting those of an earlier run that was resumed.
        seconds: wall time of this call.
        best_epoch: 1-based epoch whose weights were kept.
        history: one dict per epoch (train loss, val mIoU, per-class IoU, lr, seconds).
    """

    model_dir: str
    metrics: dict
    epochs_run: int
    seconds: float
    best_epoch: int = 0
    history: list[dict] = field(default_factory=list)
    report_uri: str | None = None


# ----------------------------------------------------------------------------------------------
# Regions: one image with labels, read window by window
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Norm:
    """Per-band normalisation ``(x - mean) / std`` in band order."""

    mean: tuple[float, ...]
    std: tuple[float, ...]


class _ChunkCache:
    """LRU cache of decoded chunks of a ``(..., y, x)`` Zarr array; assembles windows from them."""

    def __init__(self, arr: Any, chunk_px: int, max_bytes: int = CACHE_BYTES):
        self.arr = arr
        self.T = int(chunk_px)
        self.H, self.W = int(arr.shape[-2]), int(arr.shape[-1])
        lead = int(np.prod(arr.shape[:-2])) if arr.ndim > 2 else 1
        chunk_bytes = lead * self.T * self.T * np.dtype(arr.dtype).itemsize
        self.chunk_bytes = chunk_bytes
        self.max_chunks = max(4, int(max_bytes // max(chunk_bytes, 1)))
        self._cache: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()

    def _chunk(self, cy: int, cx: int) -> np.ndarray:
        key = (cy, cx)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        y0, x0 = cy * self.T, cx * self.T
        lead = (slice(None),) * (self.arr.ndim - 2)
        data = np.asarray(self.arr[(*lead, slice(y0, min(y0 + self.T, self.H)), slice(x0, min(x0 + self.T, self.W)))])
        self._cache[key] = data
        if len(self._cache) > self.max_chunks:
            self._cache.popitem(last=False)
        return data

    def read(self, win: Window) -> np.ndarray:
        """``arr[..., win]`` for a window inside the array."""
        r0, c0, r1, c1 = win.row_off, win.col_off, win.row_off + win.height, win.col_off + win.width
        out = None
        for cy in range(r0 // self.T, (r1 - 1) // self.T + 1):
            for cx in range(c0 // self.T, (c1 - 1) // self.T + 1):
                ch = self._chunk(cy, cx)
                ys, xs = cy * self.T, cx * self.T
                a0, a1 = max(r0, ys), min(r1, ys + ch.shape[-2])
                b0, b1 = max(c0, xs), min(c1, xs + ch.shape[-1])
                if out is None:
                    out = np.empty((*ch.shape[:-2], win.height, win.width), dtype=ch.dtype)
                out[..., a0 - r0 : a1 - r0, b0 - c0 : b1 - c0] = ch[..., a0 - ys : a1 - ys, b0 - xs : b1 - xs]
        assert out is not None
        return out


class Region:
    """One labelled image. Subclasses implement :meth:`read_raw`.

    Attributes:
        name: short name (for logs).
        height, width: size in pixels.
        val_blocks: ``(ceil(H/B), ceil(W/B))`` bool, True for validation blocks of side ``block_px``.
        scan_px: window side used when scanning the labels.
    """

    def __init__(self, name: str, height: int, width: int, scan_px: int = 512):
        self.name = name
        self.height = int(height)
        self.width = int(width)
        self.block_px = 1
        self.val_blocks = np.zeros((1, 1), dtype=bool)
        self.scan_px = scan_px
        self.norm: Norm | None = None

    def read_raw(self, win: Window) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(image (bands, h, w) scene dtype, valid (h, w) bool, labels (h, w) uint8)``."""
        raise NotImplementedError

    def read_labels(self, win: Window) -> np.ndarray:
        """Labels ``(h, w)`` uint8 with invalid image pixels set to 255."""
        _, valid, lab = self.read_raw(win)
        return np.where(valid, lab, IGNORE).astype(np.uint8)

    def read(self, win: Window) -> tuple[np.ndarray, np.ndarray]:
        """Normalised image float32 ``(bands, h, w)`` (0 at invalid pixels), labels uint8 (255 ignore)."""
        img, valid, lab = self.read_raw(win)
        assert self.norm is not None
        x = normalise(img, self.norm, valid)
        y = np.where(valid, lab, IGNORE).astype(np.uint8)
        return x, y

    # -- split ------------------------------------------------------------------------------
    def set_split(self, block_px: int, val_fraction: float, rng: np.random.Generator, all_val: bool = False) -> None:
        """Assign blocks of ``block_px`` to validation: all, none, or ``round(val_fraction * n)`` at random."""
        self.block_px = int(block_px)
        nby, nbx = math.ceil(self.height / block_px), math.ceil(self.width / block_px)
        n = nby * nbx
        flat = np.zeros(n, dtype=bool)
        if all_val:
            flat[:] = True
        elif val_fraction > 0 and n >= 2:
            k = min(n - 1, max(1, int(round(val_fraction * n))))
            flat[rng.permutation(n)[:k]] = True
        self.val_blocks = flat.reshape(nby, nbx)

    def blocks_of(self, win: Window) -> np.ndarray:
        """Split flags of the blocks that ``win`` (clipped to the image) overlaps."""
        B = self.block_px
        r0, c0 = max(0, win.row_off), max(0, win.col_off)
        r1 = min(self.height, win.row_off + win.height)
        c1 = min(self.width, win.col_off + win.width)
        if r1 <= r0 or c1 <= c0:
            return np.zeros((0,), dtype=bool)
        return self.val_blocks[r0 // B : (r1 - 1) // B + 1, c0 // B : (c1 - 1) // B + 1].ravel()

    def block_window(self, by: int, bx: int) -> Window:
        B = self.block_px
        return Window(by * B, bx * B, min(B, self.height - by * B), min(B, self.width - bx * B))

    @property
    def n_train_blocks(self) -> int:
        return int((~self.val_blocks).sum())


class StoreRegion(Region):
    """A tiled scene: ``tiles.zarr`` + ``valid.zarr`` + ``labels.zarr`` on one grid."""

    def __init__(self, name: str, tiles: Any, valid: Any, labels: Any, tile_px: int):
        super().__init__(name, tiles.shape[-2], tiles.shape[-1], scan_px=tile_px)
        self._tiles = _ChunkCache(tiles, tile_px)
        self._valid = _ChunkCache(valid, tile_px, max_bytes=CACHE_BYTES // 4)
        self._labels = _ChunkCache(labels, tile_px, max_bytes=CACHE_BYTES // 4)

    def read_raw(self, win: Window) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self._tiles.read(win), self._valid.read(win).astype(bool), self._labels.read(win)

    def set_cache_bytes(self, max_bytes: int) -> None:
        """Bound the decoded-chunk caches of this region (image 2/3, valid and labels 1/6 each)."""
        for cache, share in ((self._tiles, 4), (self._valid, 1), (self._labels, 1)):
            cache.max_chunks = max(4, int(max_bytes * share / 6 // max(cache.chunk_bytes, 1)))

    def read_labels(self, win: Window) -> np.ndarray:
        return np.where(self._valid.read(win).astype(bool), self._labels.read(win), IGNORE).astype(np.uint8)


class ArrayRegion(Region):
    """A small in-memory image (a pair-folder image, not georeferenced)."""

    def __init__(self, name: str, image: np.ndarray, labels: np.ndarray):
        super().__init__(name, image.shape[-2], image.shape[-1])
        if labels.shape != image.shape[-2:]:
            raise LabelError(f"{name}: mask is {labels.shape[1]}x{labels.shape[0]} px but the image is {image.shape[-1]}x{image.shape[-2]}")
        self.image = image
        self.labels = labels

    def read_raw(self, win: Window) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        sl = win.slices
        img = self.image[(slice(None), *sl)]
        valid = np.ones(img.shape[-2:], dtype=bool)
        if img.dtype.kind == "f":
            valid &= np.isfinite(img).all(axis=0)
        return img, valid, self.labels[sl]


# ----------------------------------------------------------------------------------------------
# Label scan, class weights, chip sampling
# ----------------------------------------------------------------------------------------------


@dataclass
class LabelScan:
    """Subsampled label statistics over the training blocks.

    Attributes:
        counts: ``(n_classes,)`` int64 labelled pixels per class among the scanned ones.
        points: per class, ``(k, 3)`` int64 rows ``(region index, y, x)``, at most
            ``MAX_POINTS_PER_CLASS``, a uniform random sample of that class's scanned pixels.
        step_px: subsampling step used.
    """

    counts: np.ndarray
    points: list[np.ndarray]
    step_px: int


def scan_labels(regions: Sequence[Region], n_classes: int, rng: np.random.Generator, *, target_px: int = SCAN_TARGET_PX) -> LabelScan:
    """Scan every ``step``-th pixel of the training blocks, window by window (streaming).

    ``step = ceil(sqrt(total_px / target_px))``; per class a reservoir of random pixels is kept
    (random keys, the smallest ``MAX_POINTS_PER_CLASS`` survive), so memory stays bounded.
    """
    total = sum(r.height * r.width for r in regions)
    step = max(1, math.ceil(math.sqrt(total / max(target_px, 1))))
    counts = np.zeros(n_classes, dtype=np.int64)
    pools: list[np.ndarray] = [np.zeros((0, 4), dtype=np.float64) for _ in range(n_classes)]
    for ri, reg in enumerate(regions):
        if reg.n_train_blocks == 0:
            continue
        for win in iter_tile_windows(reg.height, reg.width, reg.scan_px):
            # first scanned row/col of this window on the global step lattice
            oy = (-win.row_off) % step
            ox = (-win.col_off) % step
            if oy >= win.height or ox >= win.width:
                continue
            lab = reg.read_labels(win)[oy::step, ox::step]
            ys = win.row_off + oy + step * np.arange(lab.shape[0])
            xs = win.col_off + ox + step * np.arange(lab.shape[1])
            B = reg.block_px
            train = ~reg.val_blocks[np.ix_(ys // B, xs // B)]
            keep = train & (lab != IGNORE) & (lab < n_classes)
            if not keep.any():
                continue
            cls = lab[keep].astype(np.int64)
            counts += np.bincount(cls, minlength=n_classes)[:n_classes]
            yy, xx = np.nonzero(keep)
            for c in np.unique(cls):
                sel = cls == c
                n = int(sel.sum())
                new = np.empty((n, 4), dtype=np.float64)
                new[:, 0] = rng.random(n)
                new[:, 1] = ri
                new[:, 2] = ys[yy[sel]]
                new[:, 3] = xs[xx[sel]]
                both = np.concatenate([pools[c], new])
                if both.shape[0] > MAX_POINTS_PER_CLASS:
                    both = both[np.argpartition(both[:, 0], MAX_POINTS_PER_CLASS)[:MAX_POINTS_PER_CLASS]]
                pools[c] = both
    points = [p[:, 1:].astype(np.int64) for p in pools]
    return LabelScan(counts=counts, points=points, step_px=step)


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


class ChipSampler:
    """Random chip windows over the training blocks, a share centred on rare-class pixels.

    A rare class has a scanned frequency below ``1 / n_present`` (uniform share). With probability
    ``class_aware`` a rare class is drawn uniformly, then one of its pooled pixels; the chip is
    placed so that pixel lies in its middle half. Otherwise a random training block and a random
    pixel in it are drawn. A chip never overlaps a validation block: positions are redrawn
    (20 tries), then the chip is clipped to the pixel's own block (the rest is padding).
    """

    def __init__(self, regions: Sequence[Region], scan: LabelScan, chip_px: int, class_aware: float):
        self.regions = list(regions)
        self.chip_px = int(chip_px)
        self.class_aware = float(class_aware)
        self.train_regions = [i for i, r in enumerate(self.regions) if r.n_train_blocks > 0]
        if not self.train_regions:
            raise LabelError("no training blocks: every block is in validation; lower training.val_fraction")
        w = np.array([self.regions[i].n_train_blocks * self.regions[i].block_px**2 for i in self.train_regions], dtype=np.float64)
        self.region_p = w / w.sum()
        counts = scan.counts.astype(np.float64)
        present = np.nonzero((counts > 0) & np.array([len(p) > 0 for p in scan.points]))[0]
        if len(present) == 0:
            self.rare: list[int] = []
        else:
            f = counts[present] / counts[present].sum()
            rare = present[f < 1.0 / len(present)]
            self.rare = [int(c) for c in rare]
        self.points = scan.points

    def _fits(self, reg: Region, win: Window) -> bool:
        b = reg.blocks_of(win)
        return b.size > 0 and not b.any()

    def _place(self, reg: Region, py: int, px: int, rng: np.random.Generator, centred: bool) -> Window:
        c = self.chip_px
        for _ in range(20):
            if centred:
                jy, jx = rng.integers(-c // 4, c // 4 + 1, size=2)
                y0, x0 = py - c // 2 + int(jy), px - c // 2 + int(jx)
            else:
                y0, x0 = py - int(rng.integers(0, c)), px - int(rng.integers(0, c))
            # keep the chip inside the image where the image is large enough
            y0 = min(max(y0, 0), max(reg.height - c, 0)) if reg.height >= c else min(max(y0, reg.height - c), 0)
            x0 = min(max(x0, 0), max(reg.width - c, 0)) if reg.width >= c else min(max(x0, reg.width - c), 0)
            win = Window(y0, x0, c, c)
            if self._fits(reg, win):
                return win
        # fallback: the chip clipped to the pixel's own (training) block
        B = reg.block_px
        blk = reg.block_window(py // B, px // B)
        y0, x0 = py - c // 2, px - c // 2
        r0, c0 = max(y0, blk.row_off), max(x0, blk.col_off)
        r1 = min(y0 + c, blk.row_off + blk.height)
        c1 = min(x0 + c, blk.col_off + blk.width)
        return Window(r0, c0, r1 - r0, c1 - c0)

    def sample(self, rng: np.random.Generator) -> tuple[int, Window]:
        """One chip: ``(region index, window)``; the window may extend past the image (padding)."""
        if self.rare and rng.random() < self.class_aware:
            c = self.rare[int(rng.integers(len(self.rare)))]
            ri, py, px = (int(v) for v in self.points[c][int(rng.integers(len(self.points[c])))])
            return ri, self._place(self.regions[ri], py, px, rng, centred=True)
        ri = self.train_regions[int(rng.choice(len(self.train_regions), p=self.region_p))]
        reg = self.regions[ri]
        tb = np.argwhere(~reg.val_blocks)
        by, bx = tb[int(rng.integers(len(tb)))]
        blk = reg.block_window(int(by), int(bx))
        py = blk.row_off + int(rng.integers(blk.height))
        px = blk.col_off + int(rng.integers(blk.width))
        return ri, self._place(reg, py, px, rng, centred=False)


def read_chip(reg: Region, win: Window, chip_px: int, n_bands: int) -> tuple[np.ndarray, np.ndarray]:
    """Read ``win`` (clipped to the image) into a ``chip_px`` chip: image float32 ``(bands, c, c)``
    (0 in padding), labels uint8 ``(c, c)`` (255 in padding). The window's top-left stays at (0, 0)
    unless the window starts before the image."""
    x = np.zeros((n_bands, chip_px, chip_px), dtype=np.float32)
    y = np.full((chip_px, chip_px), IGNORE, dtype=np.uint8)
    r0, c0 = max(0, win.row_off), max(0, win.col_off)
    r1 = min(reg.height, win.row_off + win.height)
    c1 = min(reg.width, win.col_off + win.width)
    if r1 > r0 and c1 > c0:
        img, lab = reg.read(Window(r0, c0, r1 - r0, c1 - c0))
        oy, ox = r0 - win.row_off, c0 - win.col_off
        x[:, oy : oy + img.shape[1], ox : ox + img.shape[2]] = img
        y[oy : oy + lab.shape[0], ox : ox + lab.shape[1]] = lab
    return x, y


# ----------------------------------------------------------------------------------------------
# Augmentation
# ----------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------
# Loss, schedule
# ----------------------------------------------------------------------------------------------


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


def _pick_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"training.device={name!r} but no CUDA device is available; use 'auto' or 'cpu'")
    return name


# ----------------------------------------------------------------------------------------------
# Data preparation
# ----------------------------------------------------------------------------------------------


def _unique_names(paths: Sequence[str]) -> list[str]:
    out: list[str] = []
    for p in paths:
        base = Path(str(p).rstrip("/").split("/")[-1]).stem or "scene"
        name, k = base, 2
        while name in out:
            name, k = f"{base}_{k}", k + 1
        out.append(name)
    return out


def _prepare_scene(sl: SceneLabels, name: str, config: Config, work_dir: str, progress: bool) -> tuple[StoreRegion, dict]:
    """Tile one scene and bring its labels onto its grid: ``(region, tiles stats attribute)``."""
    import hashlib
    import json

    from unetgeo import tiling
    from unetgeo.io import labels as L
    from unetgeo.io.store import open_store

    T = config.tiling.tile_px
    sdir = U.join(work_dir, name)
    tr = tiling.make_tiles(sl.image, U.join(sdir, "tiles.zarr"), tile_px=T, band_names=list(config.bands), progress=progress)
    tiles = open_store(tr.tiles_uri)
    valid = open_store(tr.valid_uri)
    names = [str(b) for b in tiles.attrs.get("band_names", [])]
    if names and names != list(config.bands):
        raise InputError(f"{sl.image}: tiled bands {names} differ from the config's bands {list(config.bands)}")
    grid = Grid.from_attrs(dict(tiles.attrs))
    n_classes = len(config.classes)
    key_src = json.dumps(
        {
            "labels": L.file_key(sl.labels),
            "grid": grid.to_attrs(),
            "tile_px": T,
            "n_classes": n_classes,
            "class_attribute": sl.class_attribute,
            "class_map": sl.class_map,
        },
        sort_keys=True,
    )
    run_key = hashlib.sha256(key_src.encode()).hexdigest()[:16]
    lab_uri = U.join(sdir, "labels.zarr")
    if L.is_vector_file(sl.labels):
        L.write_vector_label_store(
            sl.labels,
            grid,
            lab_uri,
            tile_px=T,
            n_classes=n_classes,
            class_attribute=sl.class_attribute,
            class_map=sl.class_map,
            class_names=config.class_names,
            run_key=run_key,
            image_uri=sl.image,
        )
    else:
        L.write_raster_label_store(
            sl.labels, grid, lab_uri, tile_px=T, n_classes=n_classes, class_map=sl.class_map, run_key=run_key, image_uri=sl.image
        )
    labels = open_store(lab_uri)
    stats = dict(tiles.attrs.get("stats") or {})
    return StoreRegion(name, tiles, valid, labels, T), stats


def _combine_stats(stats: Sequence[dict], weights: Sequence[float], bands: Sequence[str], where: str) -> Norm:
    """Pool per-scene band mean/std (weighted by pixel count) into one :class:`Norm`."""
    mean, std = [], []
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    for b in bands:
        try:
            m = np.array([float(s[b]["mean"]) for s in stats])
            sd = np.array([float(s[b]["std"]) for s in stats])
        except (KeyError, TypeError) as e:
            raise InputError(f"{where}: tiles.zarr has no stats for band {b!r}; re-tile the scene") from e
        mu = float((w * m).sum())
        var = float((w * (sd**2 + m**2)).sum() - mu**2)
        mean.append(mu)
        std.append(max(math.sqrt(max(var, 0.0)), 1e-6))
    return Norm(tuple(mean), tuple(std))


def _pair_regions(config: Config, rng: np.random.Generator) -> tuple[list[Region], Norm]:
    """Regions from image / RGB-mask pair folders; norm = mean/std of the training images."""
    from unetgeo.io.labels import find_pairs, read_pair

    pc = config.training.pairs
    assert pc is not None
    class_rgb = [c.rgb for c in config.classes]
    if not any(class_rgb):
        raise ConfigError("training.pairs needs the mask colour of each class: give classes[].rgb, e.g. rgb: [226, 169, 41]")
    train_pairs = find_pairs(pc.root, pc.train_globs, pc.mask_from_image, pc.mask_suffix)
    val_pairs = find_pairs(pc.root, pc.val_globs, pc.mask_from_image, pc.mask_suffix) if pc.val_globs else []
    n_bands = len(config.bands)
    regions: list[Region] = []
    s1 = np.zeros(n_bands)
    s2 = np.zeros(n_bands)
    n = 0
    names = _unique_names([str(Path(i).parent.parent.name) + "_" + Path(i).stem for i, _ in train_pairs + val_pairs])
    for k, (img_path, mask_path) in enumerate(train_pairs + val_pairs):
        img, lab = read_pair(img_path, mask_path, class_rgb, pc.ignore_rgb, n_bands)
        reg = ArrayRegion(names[k], img, lab)
        is_val = k >= len(train_pairs)
        if val_pairs:
            reg.set_split(config.training.val_block_px, 0.0, rng, all_val=is_val)
        else:
            reg.set_split(config.training.val_block_px, config.training.val_fraction, rng)
        if not is_val:
            x = img.reshape(n_bands, -1).astype(np.float64)
            s1 += x.sum(axis=1)
            s2 += (x * x).sum(axis=1)
            n += x.shape[1]
        regions.append(reg)
    mean = s1 / max(n, 1)
    std = np.sqrt(np.maximum(s2 / max(n, 1) - mean**2, 1e-12))
    log.info("%d training and %d validation image/mask pairs from %s", len(train_pairs), len(val_pairs), pc.root)
    return regions, Norm(tuple(float(v) for v in mean), tuple(float(max(v, 1e-6)) for v in std))


def _build_regions(config: Config, work_dir: str, rng: np.random.Generator, progress: bool) -> tuple[list[Region], Norm]:
    tcfg = config.training
    regions: list[Region] = []
    stats: list[dict] = []
    weights: list[float] = []
    if tcfg.scenes:
        all_scenes = list(tcfg.scenes) + list(tcfg.val_scenes)
        names = _unique_names([s.image for s in all_scenes])
        for i, (sl, name) in enumerate(zip(all_scenes, names, strict=True)):
            is_val = i >= len(tcfg.scenes)
            reg, st = _prepare_scene(sl, name, config, work_dir, progress)
            if tcfg.val_scenes:
                reg.set_split(tcfg.val_block_px, 0.0, rng, all_val=is_val)
            else:
                reg.set_split(tcfg.val_block_px, tcfg.val_fraction, rng)
            if not is_val:
                stats.append(st)
                weights.append(reg.height * reg.width)
            regions.append(reg)
        norm = _combine_stats(stats, weights, config.bands, tcfg.scenes[0].image)
        for r in regions:  # one memory budget for all scenes' chunk caches
            r.set_cache_bytes(CACHE_BYTES // len(regions))
    elif tcfg.pairs is not None:
        regions, norm = _pair_regions(config, rng)
    else:
        raise ConfigError("training: give training.scenes (image + labels) or training.pairs (image/mask folders)")
    for r in regions:
        r.norm = norm
    return regions, norm


# ----------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------


def _val_windows(regions: Sequence[Region], rng_seed: int) -> list[tuple[int, Window]]:
    out = [
        (ri, reg.block_window(int(by), int(bx)))
        for ri, reg in enumerate(regions)
        for by, bx in np.argwhere(reg.val_blocks)
    ]
    if len(out) > MAX_VAL_BLOCKS:
        rng = np.random.default_rng([rng_seed, 7])
        idx = np.sort(rng.choice(len(out), MAX_VAL_BLOCKS, replace=False))
        log.info("validating on %d of %d validation blocks", MAX_VAL_BLOCKS, len(out))
        out = [out[i] for i in idx]
    return out


def validate(model, regions: Sequence[Region], windows: Sequence[tuple[int, Window]], n_classes: int, stride: int, device: str, batch_size: int) -> ConfusionMatrix:
    """Predict each validation window (padded to the stride) and accumulate a confusion matrix."""
    import torch

    cm = ConfusionMatrix(n_classes)
    model.eval()
    groups: dict[tuple[int, int], list[tuple[np.ndarray, np.ndarray]]] = {}

    def flush(items: list[tuple[np.ndarray, np.ndarray]]) -> None:
        h, w = items[0][1].shape
        ph, pw = align_up(h, stride) - h, align_up(w, stride) - w
        mode = "reflect" if ph < h and pw < w else "constant"
        xb = np.stack([np.pad(x, ((0, 0), (0, ph), (0, pw)), mode=mode) for x, _ in items])
        with torch.no_grad(), _autocast(device):
            logits = model(torch.from_numpy(xb).to(device).contiguous(memory_format=torch.channels_last))
        pred = logits.argmax(1).cpu().numpy()[:, :h, :w]
        for k, (_, y) in enumerate(items):
            cm.update(pred[k], y)

    for ri, win in windows:
        x, y = regions[ri].read(win)
        if not (y != IGNORE).any():
            continue
        key = y.shape
        groups.setdefault(key, []).append((x, y))
        if len(groups[key]) >= batch_size:
            flush(groups.pop(key))
    for items in groups.values():
        flush(items)
    return cm


def _autocast(device: str):
    import contextlib

    import torch

    if device.startswith("cuda"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------


def write_training_report(
    uri: str,
    history: Sequence[dict],
    step_losses: Sequence[float],
    metrics: dict,
    class_names: Sequence[str],
    title: str = "",
    step_lrs: Sequence[float] = (),
) -> str:
    """One PNG: training loss and learning rate per step, validation mIoU and per-class IoU per
    epoch, and the row-normalised validation confusion matrix of the kept weights."""
    from unetgeo.io.images import figure, save_figure

    fig, axes = figure(figsize=(12, 9), nrows=2, ncols=2)
    ax = axes[0, 0]
    if step_losses:
        s = np.asarray(step_losses, dtype=np.float64)
        ax.plot(np.arange(1, len(s) + 1), s, color="#bbbbbb", lw=0.8, label="per step")
        k = max(1, len(s) // 25)
        if k > 1:
            sm = np.convolve(s, np.ones(k) / k, mode="valid")
            ax.plot(np.arange(k, len(s) + 1), sm, color="#1f78b4", lw=1.6, label=f"mean of {k} steps")
        ax.legend(fontsize=8)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (CE + Dice)")
    ax.set_title("training loss")
    ax = axes[0, 1]
    if step_lrs:
        ax.plot(np.arange(1, len(step_lrs) + 1), step_lrs, color="#e31a1c", lw=1.2)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("learning rate")
    ax.set_title("learning rate (warm-up, cosine)")
    ax = axes[1, 0]
    if history:
        ep = [h["epoch"] for h in history]
        ax.plot(ep, [np.nan if h.get("val_miou") is None else h["val_miou"] for h in history], "o-", color="k", lw=2, label="mIoU")
        for ci, n in enumerate(class_names):
            vals = [(h.get("val_iou") or [None] * len(class_names))[ci] for h in history]
            ax.plot(ep, [np.nan if v is None else v for v in vals], ".--", lw=1, label=n)
        ax.legend(fontsize=8)
    ax.set_ylim(0, 1)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("IoU")
    ax.set_title("validation")
    ax = axes[1, 1]
    cmat = np.asarray(metrics.get("confusion_matrix") or np.zeros((len(class_names),) * 2), dtype=np.float64)
    rows = cmat.sum(axis=1, keepdims=True)
    frac = np.divide(cmat, rows, out=np.zeros_like(cmat), where=rows > 0)
    ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(class_names)), class_names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(frac.shape[0]):
        for j in range(frac.shape[1]):
            ax.text(j, i, f"{frac[i, j]:.2f}", ha="center", va="center", fontsize=8, color="white" if frac[i, j] > 0.5 else "black")
    miou = metrics.get("miou")
    ax.set_title(f"validation confusion (row = truth), mIoU {miou:.3f}" if isinstance(miou, float) else "validation confusion")
    if title:
        fig.suptitle(title)
    return save_figure(fig, uri)


# ----------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------


def _save_checkpoint(uri: str, state: dict) -> None:
    import io

    import torch

    buf = io.BytesIO()
    torch.save(state, buf)
    tmp = uri + ".tmp"
    with U.open_file(tmp, "wb") as f:
        f.write(buf.getvalue())
    U.rename(tmp, uri)


def _load_checkpoint(uri: str) -> dict:
    import io

    import torch

    with U.open_file(uri, "rb") as f:
        blob = f.read()
    try:
        return torch.load(io.BytesIO(blob), map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001
        raise InputError(f"{uri}: checkpoint cannot be read ({type(e).__name__}: {e}); delete it to start over") from e


def _model_signature(config: Config) -> dict:
    return {
        "model": config.model.model_dump(mode="json"),
        "bands": list(config.bands),
        "classes": [c.name for c in config.classes],
    }


# ----------------------------------------------------------------------------------------------
# train
# ----------------------------------------------------------------------------------------------


def train(
    config: Config,
    out_dir: str,
    *,
    work_dir: str | None = None,
    progress: bool = False,
    resume: bool = False,
    max_seconds: float | None = None,
) -> TrainResult:
    """Train a segmentation model and write its bundle to ``out_dir``.

    Args:
        config: the whole config (``model``, ``bands``, ``classes``, ``tiling``, ``training``).
        out_dir: model directory: ``model.safetensors``, ``model.json``, ``training_report.png``,
            ``checkpoint.pt`` (written every epoch).
        work_dir: where tiled training scenes go (``<work_dir>/<scene>/tiles.zarr``, ``labels.zarr``);
            default ``<out_dir>/work``. Reused across runs.
        progress: show a tqdm bar with the running loss and validation mIoU.
        resume: continue from ``out_dir/checkpoint.pt`` when it exists (same model, bands and
            classes), at the epoch after the last one it completed.
        max_seconds: wall-time budget for the optimisation; when spent, the current epoch ends
            early (validated and checkpointed) and training stops; the cosine decay ends there.

    Threads: ``training.num_threads`` when set; otherwise torch's default, except on a CPU whose
    1-minute load average already exceeds 3/4 of its cores, where 1 thread is used (OpenMP
    threads on oversubscribed cores made steps 3x slower than one thread in our measurements).
    The previous thread count is restored on return.

    Returns:
        :class:`TrainResult`.

    Raises:
        ConfigError: no training data in the config, bad device, or a checkpoint from another model.
        GridMismatchError / LabelError / InputError: labels that cannot be aligned with images.
    """
    import torch

    prev = torch.get_num_threads()
    n = _choose_threads(config.training.num_threads, config.training.device)
    if n is not None and n != prev:
        torch.set_num_threads(n)
    try:
        return _train(config, out_dir, work_dir=work_dir, progress=progress, resume=resume, max_seconds=max_seconds)
    finally:
        torch.set_num_threads(prev)


def _choose_threads(num_threads: int | None, device: str) -> int | None:
    """Torch thread count for training (None: leave torch's default)."""
    import os

    if num_threads:
        return int(num_threads)
    if device not in ("auto", "cpu"):
        return None
    if device == "auto":
        import torch

        if torch.cuda.is_available():
            return None
    try:
        load = os.getloadavg()[0]
    except OSError:
        return None
    cores = os.cpu_count() or 1
    if cores > 1 and load > 0.75 * cores:
        log.info("load average %.1f on %d cores: training with 1 thread (set training.num_threads to override)", load, cores)
        return 1
    return None


def _train(
    config: Config,
    out_dir: str,
    *,
    work_dir: str | None = None,
    progress: bool = False,
    resume: bool = False,
    max_seconds: float | None = None,
) -> TrainResult:
    """Body of :func:`train` (threads already chosen)."""
    import torch

    t_start = time.perf_counter()
    tcfg = config.training
    out_dir = str(out_dir).rstrip("/")
    work_dir = str(work_dir).rstrip("/") if work_dir is not None else U.join(out_dir, "work")
    U.makedirs(out_dir)
    device = _pick_device(tcfg.device)
    seed = int(tcfg.seed)
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)

    n_classes = len(config.classes)
    class_names = config.class_names
    stride = 2**config.model.encoder_depth
    chip_px = align_up(tcfg.chip_px, stride)
    if chip_px != tcfg.chip_px:
        log.warning("training.chip_px=%d is not a multiple of the stride %d; using %d", tcfg.chip_px, stride, chip_px)

    # -- data -------------------------------------------------------------------------------
    split_rng = np.random.default_rng([seed, 1])
    regions, norm = _build_regions(config, work_dir, split_rng, progress)
    scan = scan_labels(regions, n_classes, np.random.default_rng([seed, 2]))
    if scan.counts.sum() == 0:
        raise LabelError(f"{_first_labels(config)}: no labelled training pixels (all 255/nodata, or outside the images)")
    cw = class_weights_from_counts(scan.counts, tcfg.class_weights)
    sampler = ChipSampler(regions, scan, chip_px, tcfg.class_aware_sampling)
    val_windows = _val_windows(regions, seed)
    n_bands = len(config.bands)
    freq = (scan.counts / max(scan.counts.sum(), 1)).tolist()
    log.info(
        "training on %d region(s); class frequency %s; weights %s; rare %s; %d validation blocks",
        len(regions),
        dict(zip(class_names, [round(f, 4) for f in freq], strict=True)),
        None if cw is None else [round(float(w), 3) for w in cw],
        [class_names[c] for c in sampler.rare],
        len(val_windows),
    )

    # -- model, optimiser -------------------------------------------------------------------
    # channels-last (NHWC) convolutions: ~25 % faster steps on CPU (oneDNN) at 256 px chips, and on CUDA
    model = build_model(config.model, n_bands, n_classes).to(device, memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay)
    total_steps = tcfg.epochs * tcfg.steps_per_epoch
    # with a time budget the cosine runs from the end of warm-up to the end of the budget
    clock: dict[str, float | None] = {"t0": None, "t_warm": None}

    def _time_progress() -> float | None:
        if max_seconds is None or clock["t0"] is None or clock["t_warm"] is None:
            return None
        left = clock["t0"] + max_seconds - clock["t_warm"]
        return (time.perf_counter() - clock["t_warm"]) / max(left, 1e-9)

    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, tcfg.warmup_steps, total_steps, progress=_time_progress())
    )
    loss_fn = make_loss(n_classes, cw, tcfg.ce_weight, tcfg.dice_weight)

    ckpt_uri = U.join(out_dir, CHECKPOINT_NAME)
    start_epoch, global_step = 0, 0
    history: list[dict] = []
    step_losses: list[float] = []
    step_lrs: list[float] = []
    best: dict[str, Any] = {"miou": -1.0, "epoch": 0, "state": None, "metrics": {}}
    stale = 0
    stopped = False
    if resume and U.exists(ckpt_uri):
        ck = _load_checkpoint(ckpt_uri)
        if ck.get("signature") != _model_signature(config):
            raise ConfigError(
                f"{ckpt_uri}: checkpoint is of another model/bands/classes ({ck.get('signature')}); "
                "use the config it was trained with, or delete the checkpoint to start over"
            )
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        start_epoch, global_step = int(ck["epoch"]), int(ck["global_step"])
        history, step_losses = list(ck["history"]), list(ck["step_losses"])
        step_lrs = list(ck.get("step_lrs", []))
        best, stale, stopped = ck["best"], int(ck["stale"]), bool(ck.get("stopped", False))
        _set_rng_state(ck["rng"])
        log.info("resuming from %s after epoch %d (step %d)", ckpt_uri, start_epoch, global_step)

    # -- loop -------------------------------------------------------------------------------
    from tqdm.auto import tqdm

    bar = tqdm(total=total_steps, initial=global_step, disable=not progress, desc="train", unit="step", dynamic_ncols=True)
    t_loop = time.perf_counter()
    clock["t0"] = t_loop
    if global_step >= tcfg.warmup_steps:
        clock["t_warm"] = t_loop
    step0 = global_step
    step_seconds = 0.0
    out_of_time = False
    try:
        for epoch in range(start_epoch, tcfg.epochs):
            if stopped:
                break
            t_ep = time.perf_counter()
            rng = np.random.default_rng([seed, 100 + epoch])
            torch.manual_seed(seed * 1000 + epoch)
            aug = make_augment(seed * 1000 + epoch)
            model.train()
            ep_losses: list[float] = []
            for _ in range(tcfg.steps_per_epoch):
                t_step = time.perf_counter()
                opt.zero_grad(set_to_none=True)
                step_loss = 0.0
                for _ in range(tcfg.grad_accum):
                    xb, yb = _make_batch(regions, sampler, aug, rng, tcfg.batch_size, chip_px, n_bands)
                    xt = torch.from_numpy(xb).to(device).contiguous(memory_format=torch.channels_last)
                    yt = torch.from_numpy(yb).to(device)
                    with _autocast(device):
                        logits = model(xt)
                    loss = loss_fn(logits.float(), yt) / tcfg.grad_accum
                    loss.backward()
                    step_loss += float(loss.detach())
                opt.step()
                global_step += 1
                if clock["t_warm"] is None and global_step >= tcfg.warmup_steps:
                    clock["t_warm"] = time.perf_counter()
                sched.step()
                step_seconds += time.perf_counter() - t_step
                ep_losses.append(step_loss)
                step_losses.append(step_loss)
                step_lrs.append(float(sched.get_last_lr()[0]))
                bar.update(1)
                bar.set_postfix(loss=f"{np.mean(ep_losses[-20:]):.3f}", val_miou=f"{best['miou']:.3f}" if best["miou"] >= 0 else "-")
                if max_seconds is not None and time.perf_counter() - t_loop > max_seconds:
                    out_of_time = True
                    break
            cm = validate(model, regions, val_windows, n_classes, stride, device, tcfg.batch_size) if val_windows else None
            miou = cm.miou() if cm is not None and cm.n_pixels else float("nan")
            rec = {
                "epoch": epoch + 1,
                "steps": len(ep_losses),
                "train_loss": float(np.mean(ep_losses)) if ep_losses else None,
                "val_miou": None if math.isnan(miou) else miou,
                "val_iou": None if cm is None else [None if math.isnan(v) else float(v) for v in cm.iou()],
                "lr": float(sched.get_last_lr()[0]),
                "seconds": time.perf_counter() - t_ep,
            }
            history.append(rec)
            improved = (not math.isnan(miou) and miou > best["miou"]) or (cm is None or math.isnan(miou))
            if improved:
                best = {
                    "miou": miou if not math.isnan(miou) else best["miou"],
                    "epoch": epoch + 1,
                    "state": copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()}),
                    "metrics": cm.as_dict(class_names) if cm is not None and cm.n_pixels else {},
                }
                stale = 0
            else:
                stale += 1
            log.info(
                "epoch %d/%d: loss %.4f, val mIoU %s, %.1f s",
                epoch + 1,
                tcfg.epochs,
                rec["train_loss"] or float("nan"),
                "n/a" if rec["val_miou"] is None else f"{miou:.4f}",
                rec["seconds"],
            )
            bar.set_postfix(loss=f"{rec['train_loss'] or 0:.3f}", val_miou=f"{best['miou']:.3f}")
            if tcfg.early_stop_patience and stale >= tcfg.early_stop_patience:
                log.info("early stop: no validation mIoU gain for %d epochs", stale)
                stopped = True
            _save_checkpoint(
                ckpt_uri,
                {
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(),
                    "epoch": epoch + 1,
                    "global_step": global_step,
                    "history": history,
                    "step_losses": step_losses,
                    "step_lrs": step_lrs,
                    "best": best,
                    "stale": stale,
                    "stopped": stopped,
                    "rng": _get_rng_state(),
                    "signature": _model_signature(config),
                    "config": config.model_dump(mode="json"),
                },
            )
            if stopped:
                break
            if out_of_time:  # not persisted as "stopped": a resumed run with more time goes on
                log.info("time budget of %.0f s spent after %d steps", max_seconds, global_step)
                break
    finally:
        bar.close()
    loop_s = time.perf_counter() - t_loop

    # -- bundle -----------------------------------------------------------------------------
    if best["state"] is not None:
        model.load_state_dict(best["state"])
    model = model.to("cpu").eval()
    epochs_run = len(history)
    steps_this_run = global_step - step0
    meta = {
        "name": config.name,
        "arch": config.model.arch,
        "encoder": config.model.encoder,
        "encoder_depth": config.model.encoder_depth,
        "decoder_channels": list(config.model.decoder_channels) if config.model.decoder_channels else None,
        "in_bands": list(config.bands),
        "norm": {"mean": list(norm.mean), "std": list(norm.std)},
        "classes": [
            {"name": c.name, "color": c.color, **({"rgb": list(c.rgb)} if c.rgb else {})} for c in config.classes
        ],
        "tile_px": config.tiling.tile_px,
        "stride": stride,
        "metrics": best["metrics"],
        "training": config.model_dump(mode="json"),
        "training_summary": {
            "epochs_run": epochs_run,
            "best_epoch": best["epoch"],
            "steps": global_step,
            "chip_px": chip_px,
            "class_frequency": dict(zip(class_names, freq, strict=True)),
            "class_weights": None if cw is None else [float(w) for w in cw],
            "scan_step_px": scan.step_px,
            "n_val_blocks": len(val_windows),
            "device": device,
            "seconds_per_step": step_seconds / steps_this_run if steps_this_run > 0 else None,
            "loop_seconds": loop_s,
            "history": history,
        },
    }
    save_bundle(out_dir, model, meta)
    report_uri = None
    try:
        report_uri = write_training_report(
            U.join(out_dir, REPORT_NAME), history, step_losses, best["metrics"], class_names,
            title=f"{config.name}: {config.model.arch}/{config.model.encoder}, best epoch {best['epoch']}",
            step_lrs=step_lrs,
        )
    except Exception:  # noqa: BLE001 - a failed plot must not lose a trained model
        log.exception("could not write the training report")
    seconds = time.perf_counter() - t_start
    log.info("model saved to %s (best epoch %d, val mIoU %s) in %.1f s", out_dir, best["epoch"], best["metrics"].get("miou"), seconds)
    return TrainResult(
        model_dir=out_dir,
        metrics=best["metrics"],
        epochs_run=epochs_run,
        seconds=seconds,
        best_epoch=best["epoch"],
        history=history,
        report_uri=report_uri,
    )


def _first_labels(config: Config) -> str:
    if config.training.scenes:
        return config.training.scenes[0].labels
    return config.training.pairs.root if config.training.pairs else "training data"


def _make_batch(regions, sampler: ChipSampler, aug, rng: np.random.Generator, batch_size: int, chip_px: int, n_bands: int) -> tuple[np.ndarray, np.ndarray]:
    """A batch ``(x float32 (B, bands, c, c), y int64 (B, c, c))`` of augmented chips; chips with
    under 1 % labelled pixels are redrawn (up to 10 times)."""
    xs = np.empty((batch_size, n_bands, chip_px, chip_px), dtype=np.float32)
    ys = np.empty((batch_size, chip_px, chip_px), dtype=np.int64)
    for i in range(batch_size):
        for _ in range(10):
            ri, win = sampler.sample(rng)
            x, y = read_chip(regions[ri], win, chip_px, n_bands)
            if (y != IGNORE).mean() >= 0.01:
                break
        out = aug(image=np.ascontiguousarray(x.transpose(1, 2, 0)), mask=y)
        xs[i] = out["image"].transpose(2, 0, 1)
        ys[i] = out["mask"]
    return xs, ys


def _get_rng_state() -> dict:
    import torch

    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "random": random.getstate()}


def _set_rng_state(state: dict) -> None:
    import torch

    try:
        torch.set_rng_state(state["torch"])
        np.random.set_state(state["numpy"])
        random.setstate(state["random"])
    except (KeyError, TypeError, ValueError, RuntimeError):
        log.warning("could not restore the random state from the checkpoint; continuing with fresh seeds")
