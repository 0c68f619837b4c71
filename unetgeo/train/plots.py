"""Training report: one PNG with loss, learning rate, validation IoU and the confusion matrix."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


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
