"""Spatial train/validation split that gives every labelled class pixels on both sides.

A random block split can leave a rare class without validation blocks (its IoU is then never
measured, and the kept weights ignore it) or without training blocks. :func:`balance_split`
counts labelled pixels per block and class (subsampled, streaming) and moves blocks across the
split until each labelled class is on both sides, or stops with the counts per split.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from unetgeo.errors import LabelError
from unetgeo.train.data import Region
from unetgeo.train.sampling import iter_scan, scan_step

log = logging.getLogger(__name__)


def block_class_counts(reg: Region, n_classes: int, step: int) -> np.ndarray:
    """Scanned labelled pixels per block and class: int64 ``(n_blocks, n_classes)``, blocks in row-major order."""
    nby, nbx = reg.val_blocks.shape
    B = reg.block_px
    counts = np.zeros(nby * nbx * n_classes, dtype=np.int64)
    for lab, ys, xs in iter_scan(reg, step):
        blk = (ys // B)[:, None] * nbx + (xs // B)[None, :]
        keep = lab < n_classes
        counts += np.bincount(blk[keep] * n_classes + lab[keep], minlength=counts.size)
    return counts.reshape(nby * nbx, n_classes)


def _split_counts(regions: Sequence[Region], counts: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """``(train, val)`` scanned pixels per class, int64 ``(n_classes,)`` each."""
    val = sum(c[r.val_blocks.ravel()].sum(axis=0) for r, c in zip(regions, counts, strict=True))
    train = sum(c[~r.val_blocks.ravel()].sum(axis=0) for r, c in zip(regions, counts, strict=True))
    return np.asarray(train), np.asarray(val)


def _move_one(regions: Sequence[Region], counts: Sequence[np.ndarray], c: int, to_val: bool, rng: np.random.Generator) -> bool:
    """Move one random block holding class ``c`` to the side that lacks it; False when none qualifies.

    A block qualifies when its side keeps pixels of every class it had (``c`` included) and its
    region keeps a training block.
    """
    train, val = _split_counts(regions, counts)
    side = train if to_val else val
    cands = []
    for ri, (reg, cnt) in enumerate(zip(regions, counts, strict=True)):
        flags = reg.val_blocks.ravel()
        ok = (flags != to_val) & (cnt[:, c] > 0) & ((cnt < side[None, :]) | (side[None, :] == 0)).all(axis=1)
        if to_val and reg.n_train_blocks <= 1:
            continue
        cands.extend((ri, int(b)) for b in np.nonzero(ok)[0])
    if not cands:
        return False
    ri, b = cands[int(rng.integers(len(cands)))]
    reg = regions[ri]
    flat = reg.val_blocks.ravel().copy()
    flat[b] = to_val
    reg.val_blocks = flat.reshape(reg.val_blocks.shape)
    return True


def balance_split(regions: Sequence[Region], class_names: Sequence[str], rng: np.random.Generator) -> None:
    """Move blocks so that every labelled class has scanned pixels in training and in validation blocks.

    Raises:
        LabelError: a class cannot be on both sides (e.g. all of it lies in one block); the message
            gives the labelled pixels of every class per split (estimated from the scan) and the fix.
    """
    n = len(class_names)
    step = scan_step(regions)
    counts = [block_class_counts(r, n, step) for r in regions]
    moved = 0
    for _ in range(n * sum(len(x) for x in counts)):
        train, val = _split_counts(regions, counts)
        lacking = [c for c in range(n) if (train[c] > 0) != (val[c] > 0)]
        if not lacking:
            break
        c = lacking[0]
        if not _move_one(regions, counts, c, to_val=bool(val[c] == 0), rng=rng):
            _refuse(regions, class_names, c, train, val, step)
        moved += 1
    if moved:
        log.info("moved %d block(s) across the train/validation split so every labelled class is on both sides", moved)


def _refuse(regions: Sequence[Region], names: Sequence[str], c: int, train: np.ndarray, val: np.ndarray, step: int) -> None:
    per = ", ".join(f"{nm} {int(t) * step * step}/{int(v) * step * step}" for nm, t, v in zip(names, train, val, strict=True))
    side = "validation" if val[c] == 0 else "training"
    B = regions[0].block_px
    raise LabelError(
        f"training.val_block_px={B}: class {names[c]!r} gets no {side} blocks (it lies in too few blocks); labelled "
        f"pixels (train/validation{', estimated' if step > 1 else ''}): {per}; lower training.val_block_px, "
        "label more of that class, or give training.val_scenes"
    )
