"""Regions: labelled images read window by window, with a spatial train/validation split."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from unetgeo.errors import LabelError
from unetgeo.grid import Window
from unetgeo.io.chunk_cache import CACHE_BYTES, ChunkCache
from unetgeo.model import normalise

IGNORE = 255
"""Label value of pixels that are ignored in the loss and in validation (nodata, unlabelled)."""


@dataclass(frozen=True)
class Norm:
    """Per-band normalisation ``(x - mean) / std`` in band order (scene units), and the spectral
    indices appended after the bands (:mod:`unetgeo.indices`; ``in_bands`` names their bands)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    in_bands: tuple[str, ...] = ()
    indices: tuple[str, ...] = ()


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
        """Window of block ``(by, bx)`` (clipped to the image)."""
        B = self.block_px
        return Window(by * B, bx * B, min(B, self.height - by * B), min(B, self.width - bx * B))

    @property
    def n_train_blocks(self) -> int:
        return int((~self.val_blocks).sum())


class StoreRegion(Region):
    """A tiled scene: ``tiles.zarr`` + ``valid.zarr`` + ``labels.zarr`` on one grid, read through chunk caches."""

    def __init__(self, name: str, tiles: Any, valid: Any, labels: Any, tile_px: int):
        super().__init__(name, tiles.shape[-2], tiles.shape[-1], scan_px=tile_px)
        self._tiles = ChunkCache(tiles, tile_px)
        self._valid = ChunkCache(valid, tile_px, max_bytes=CACHE_BYTES // 4)
        self._labels = ChunkCache(labels, tile_px, max_bytes=CACHE_BYTES // 4)

    def read_raw(self, win: Window) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self._tiles.read(win), self._valid.read(win).astype(bool), self._labels.read(win)

    def set_cache_bytes(self, max_bytes: int) -> None:
        """Bound the decoded-chunk caches of this region (image 2/3, valid and labels 1/6 each)."""
        for cache, share in ((self._tiles, 4), (self._valid, 1), (self._labels, 1)):
            cache.set_max_bytes(max_bytes * share / 6)

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
