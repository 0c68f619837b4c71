"""Label scan (class frequencies, rare-class pixel pools), chip sampling and batch assembly.

Everything streams: the scan reads the labels window by window and keeps bounded reservoirs;
chips are read through the regions' chunk caches.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from unetgeo.errors import ConfigError, LabelError
from unetgeo.grid import Window, iter_tile_windows
from unetgeo.train.data import IGNORE, Region

log = logging.getLogger(__name__)

MAX_POINTS_PER_CLASS = 4096
SCAN_TARGET_PX = 4_000_000


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


def scan_step(regions: Sequence[Region], target_px: int = SCAN_TARGET_PX) -> int:
    """Subsampling step (px) of label scans: ``ceil(sqrt(total_px / target_px))``, at least 1."""
    total = sum(r.height * r.width for r in regions)
    return max(1, math.ceil(math.sqrt(total / max(target_px, 1))))


def iter_scan(reg: Region, step: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Every ``step``-th label of ``reg`` on a global lattice, window by window (streaming).

    Yields:
        ``(labels (h', w') uint8 (255 = ignore), rows (h',) int64, cols (w',) int64)``.
    """
    for win in iter_tile_windows(reg.height, reg.width, reg.scan_px):
        # first scanned row/col of this window on the global step lattice
        oy = (-win.row_off) % step
        ox = (-win.col_off) % step
        if oy >= win.height or ox >= win.width:
            continue
        lab = reg.read_labels(win)[oy::step, ox::step]
        yield lab, win.row_off + oy + step * np.arange(lab.shape[0]), win.col_off + ox + step * np.arange(lab.shape[1])


def scan_labels(regions: Sequence[Region], n_classes: int, rng: np.random.Generator, *, target_px: int = SCAN_TARGET_PX) -> LabelScan:
    """Scan every ``step``-th pixel of the training blocks, window by window (streaming).

    ``step = ceil(sqrt(total_px / target_px))``; per class a reservoir of random pixels is kept
    (random keys, the smallest ``MAX_POINTS_PER_CLASS`` survive), so memory stays bounded.
    """
    step = scan_step(regions, target_px)
    counts = np.zeros(n_classes, dtype=np.int64)
    pools: list[np.ndarray] = [np.zeros((0, 4), dtype=np.float64) for _ in range(n_classes)]
    for ri, reg in enumerate(regions):
        if reg.n_train_blocks == 0:
            continue
        for lab, ys, xs in iter_scan(reg, step):
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

class ChipSampler:
    """Random chip windows over the training blocks, a share centred on rare-class pixels.

    A rare class has a scanned frequency below ``1 / n_present`` (uniform share). With probability
    ``class_aware`` a rare class is drawn uniformly, then one of its pooled pixels; the chip is
    placed so that pixel lies in its middle half. Otherwise a random training block and a random
    pixel in it are drawn. A chip never overlaps a validation block: positions are redrawn
    (20 tries), then the chip is clipped to the pixel's own block (the rest is padding).

    ``class_share`` (per class index, or class name -> share with ``class_names``; default the
    ``training.class_share`` of :func:`unetgeo.train.objective.use_training_spec`) replaces that
    rule: with probability ``class_share[c]`` a chip is centred on a pooled pixel of class ``c``,
    the rest are placed at random. A class without training pixels gives its share to random chips.
    """

    def __init__(self, regions: Sequence[Region], scan: LabelScan, chip_px: int, class_aware: float,
                 class_share: Sequence[float] | Mapping[str, float] | None = None,
                 class_names: Sequence[str] | None = None):
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
        self.shares: np.ndarray | None = None
        if class_share is None:
            from unetgeo.train.objective import active_training_spec

            active = active_training_spec()
            if active is not None and active[0].class_share:
                class_share, class_names = active[0].class_share, active[2]
        if class_share is not None and len(class_share) > 0:
            self.shares = resolve_class_share(class_share, len(scan.points), class_names)
            for c in np.nonzero(self.shares)[0]:
                if len(self.points[c]) == 0:
                    log.warning("class %s has no training pixels: its chip share goes to random chips", c)
                    self.shares[c] = 0.0
            self.rare = [int(c) for c in np.nonzero(self.shares)[0]]

    def _centred(self, c: int, rng: np.random.Generator) -> tuple[int, Window]:
        ri, py, px = (int(v) for v in self.points[c][int(rng.integers(len(self.points[c])))])
        return ri, self._place(self.regions[ri], py, px, rng, centred=True)

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
        if self.shares is not None:
            u = rng.random()
            cum = np.cumsum(self.shares)
            if u < cum[-1]:
                return self._centred(int(np.searchsorted(cum, u, side="right")), rng)
        elif self.rare and rng.random() < self.class_aware:
            return self._centred(self.rare[int(rng.integers(len(self.rare)))], rng)
        ri = self.train_regions[int(rng.choice(len(self.train_regions), p=self.region_p))]
        reg = self.regions[ri]
        tb = np.argwhere(~reg.val_blocks)
        by, bx = tb[int(rng.integers(len(tb)))]
        blk = reg.block_window(int(by), int(bx))
        py = blk.row_off + int(rng.integers(blk.height))
        px = blk.col_off + int(rng.integers(blk.width))
        return ri, self._place(reg, py, px, rng, centred=False)


def resolve_class_share(class_share: Sequence[float] | Mapping[str, float], n_classes: int,
                        class_names: Sequence[str] | None = None) -> np.ndarray:
    """Per-class chip shares ``(n_classes,)`` float64 from a sequence, or from a name -> share mapping.

    Raises:
        ConfigError: an unknown class name, a wrong length, or shares that are negative or sum over 1.
    """
    out = np.zeros(n_classes, dtype=np.float64)
    if isinstance(class_share, Mapping):
        names = list(class_names or [])
        for name, v in class_share.items():
            if name not in names:
                raise ConfigError(f"training.class_share names {name!r}, which is not a class; the classes are {names}")
            out[names.index(name)] = float(v)
    else:
        if len(class_share) != n_classes:
            raise ConfigError(f"class_share has {len(class_share)} values for {n_classes} classes")
        out[:] = [float(v) for v in class_share]
    if (out < 0).any() or out.sum() > 1 + 1e-9:
        raise ConfigError(f"training.class_share {out.tolist()} must be shares >= 0 summing to at most 1")
    return out


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


def make_batch(regions: Sequence[Region], sampler: ChipSampler, aug: Callable, rng: np.random.Generator, batch_size: int, chip_px: int, n_bands: int) -> tuple[np.ndarray, np.ndarray]:
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
