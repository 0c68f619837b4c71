"""Validation: the held-out blocks predicted whole (padded to the stride) into a confusion matrix."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from unetgeo.evaluate import ConfusionMatrix
from unetgeo.grid import Window, align_up
from unetgeo.train.data import IGNORE, Region

log = logging.getLogger(__name__)

MAX_VAL_BLOCKS = 256


def val_windows(regions: Sequence[Region], rng_seed: int) -> list[tuple[int, Window]]:
    """``(region index, block window)`` of every validation block; at most ``MAX_VAL_BLOCKS``, a seeded random subset."""
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
        with torch.no_grad(), autocast(device):
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


def autocast(device: str) -> Any:
    """bf16 autocast on CUDA, a no-op context elsewhere."""
    import contextlib

    import torch

    if device.startswith("cuda"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
