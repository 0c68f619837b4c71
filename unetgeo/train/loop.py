"""The training loop: setup, epochs of small steps, validation, checkpoints, the bundle.

``train`` → ``_prepare_data`` (regions, label scan, sampler, validation blocks) → ``_make_run``
(network, AdamW, warm-up + cosine schedule, loss) → optional resume → ``_fit`` (per epoch:
``_run_epoch`` of ``_train_step``s, ``_end_epoch`` validation / best weights / early stop,
``save_checkpoint``) → ``_write_outputs`` (bundle + training report).
"""

from __future__ import annotations

import copy
import logging
import math
import random
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from unetgeo.config import Config
from unetgeo.errors import ConfigError, LabelError
from unetgeo.grid import Window, align_up
from unetgeo.io import uri as U
from unetgeo.model import build_model, bundle_meta, save_bundle
from unetgeo.train.data import Norm, Region
from unetgeo.train.objective import (
    class_weights_from_counts,
    lr_factor,
    make_augment,
    make_loss,
    use_training_spec,
)
from unetgeo.train.plots import write_training_report
from unetgeo.train.prepare import build_regions
from unetgeo.train.sampling import ChipSampler, LabelScan, make_batch, scan_labels
from unetgeo.train.state import TrainState, restore_checkpoint, save_checkpoint
from unetgeo.train.validation import autocast, val_windows, validate

log = logging.getLogger(__name__)

REPORT_NAME = "training_report.png"


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
        report_uri: the training report PNG, or None if it could not be drawn.
    """

    model_dir: str
    metrics: dict
    epochs_run: int
    seconds: float
    best_epoch: int = 0
    history: list[dict] = field(default_factory=list)
    report_uri: str | None = None


@dataclass
class _Data:
    """Training data: regions with their split, label statistics, chip sampler, validation blocks."""

    regions: list[Region]
    norm: Norm
    scan: LabelScan
    class_weights: np.ndarray | None
    sampler: ChipSampler
    val_windows: list[tuple[int, Window]]
    chip_px: int
    n_bands: int  # input channels: the bands and the spectral indices


@dataclass
class _Clock:
    """Wall-time budget; with one, the cosine decay runs from the end of warm-up to the end of the budget."""

    max_seconds: float | None
    t0: float | None = None
    t_warm: float | None = None

    def progress(self) -> float | None:
        """Share (0..1+) of the post-warm-up budget spent, or None without a budget."""
        if self.max_seconds is None or self.t0 is None or self.t_warm is None:
            return None
        left = self.t0 + self.max_seconds - self.t_warm
        return (time.perf_counter() - self.t_warm) / max(left, 1e-9)

    def spent(self) -> bool:
        return self.max_seconds is not None and self.t0 is not None and time.perf_counter() - self.t0 > self.max_seconds


@dataclass
class _Run:
    """One training run's fixed parts (network, optimiser, schedule, loss, data, device)."""

    config: Config
    out_dir: str
    data: _Data
    model: Any
    opt: Any
    sched: Any
    loss_fn: Any
    device: str
    clock: _Clock
    step_seconds: float = 0.0

    @property
    def seed(self) -> int:
        return int(self.config.training.seed)


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
            ``checkpoint.safetensors`` + ``checkpoint.json`` (written every epoch).
        work_dir: where tiled training scenes go (``<work_dir>/<scene>/tiles.zarr``, ``labels.zarr``);
            default ``<out_dir>/work``. Reused across runs.
        progress: show a tqdm bar with the running loss and validation mIoU.
        resume: continue from ``out_dir/checkpoint.json`` when it exists (same model, bands and
            classes), at the epoch after the last one it completed. An old pickled
            ``checkpoint.pt`` is never loaded (a warning names it).
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
        InputError: a corrupted checkpoint (names the file); images or labels that cannot be used.
        GridMismatchError / LabelError: labels that cannot be aligned with images.
    """
    import torch

    prev = torch.get_num_threads()
    n = _choose_threads(config.training.num_threads, config.training.device)
    if n is not None and n != prev:
        torch.set_num_threads(n)
    try:
        with use_training_spec(config):  # the config's augmentation / sampling / loss switches
            return _train(config, out_dir, work_dir=work_dir, progress=progress, resume=resume,
                          max_seconds=max_seconds)
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


def pick_device(name: str) -> str:
    """``'auto'`` → ``'cuda'`` when available, else ``'cpu'``; other names are checked and passed on."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"training.device={name!r} but no CUDA device is available; use 'auto' or 'cpu'")
    return name


def _train(config: Config, out_dir: str, *, work_dir: str | None, progress: bool, resume: bool, max_seconds: float | None) -> TrainResult:
    """Body of :func:`train` (threads already chosen)."""
    import torch

    t_start = time.perf_counter()
    out_dir = str(out_dir).rstrip("/")
    work_dir = str(work_dir).rstrip("/") if work_dir is not None else U.join(out_dir, "work")
    U.makedirs(out_dir)
    device = pick_device(config.training.device)
    seed = int(config.training.seed)
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    data = _prepare_data(config, work_dir, progress)
    run = _make_run(config, out_dir, data, device, _Clock(max_seconds))
    state = restore_checkpoint(out_dir, run.model, run.opt, run.sched, config) if resume else None
    state = state or TrainState()
    step0 = state.global_step
    loop_s = _fit(run, state, progress)
    report_uri = _write_outputs(run, state, state.global_step - step0, loop_s)
    seconds = time.perf_counter() - t_start
    log.info("model saved to %s (best epoch %d, val mIoU %s) in %.1f s", out_dir, state.best_epoch, state.best_metrics.get("miou"), seconds)
    return TrainResult(
        model_dir=out_dir,
        metrics=state.best_metrics,
        epochs_run=len(state.history),
        seconds=seconds,
        best_epoch=state.best_epoch,
        history=state.history,
        report_uri=report_uri,
    )


def _first_labels(config: Config) -> str:
    if config.training.scenes:
        return config.training.scenes[0].labels
    return config.training.pairs.root if config.training.pairs else "training data"


def _prepare_data(config: Config, work_dir: str, progress: bool) -> _Data:
    """Regions with their split, label scan, class weights, chip sampler and validation blocks."""
    tcfg = config.training
    seed = int(tcfg.seed)
    stride = 2**config.model.encoder_depth
    chip_px = align_up(tcfg.chip_px, stride)
    if chip_px != tcfg.chip_px:
        log.warning("training.chip_px=%d is not a multiple of the stride %d; using %d", tcfg.chip_px, stride, chip_px)
    n_classes = len(config.classes)
    regions, norm = build_regions(config, work_dir, np.random.default_rng([seed, 1]), progress)
    scan = scan_labels(regions, n_classes, np.random.default_rng([seed, 2]))
    if scan.counts.sum() == 0:
        raise LabelError(f"{_first_labels(config)}: no labelled training pixels (all 255/nodata, or outside the images)")
    cw = class_weights_from_counts(scan.counts, tcfg.class_weights)
    sampler = ChipSampler(regions, scan, chip_px, tcfg.class_aware_sampling)
    vw = val_windows(regions, seed)
    names = config.class_names
    freq = (scan.counts / max(scan.counts.sum(), 1)).tolist()
    log.info(
        "training on %d region(s); class frequency %s; weights %s; rare %s; %d validation blocks",
        len(regions),
        dict(zip(names, [round(f, 4) for f in freq], strict=True)),
        None if cw is None else [round(float(w), 3) for w in cw],
        [names[c] for c in sampler.rare],
        len(vw),
    )
    return _Data(regions, norm, scan, cw, sampler, vw, chip_px, len(config.bands) + len(config.model.indices))


def _make_run(config: Config, out_dir: str, data: _Data, device: str, clock: _Clock) -> _Run:
    """Network (channels-last), AdamW, warm-up + cosine LambdaLR and the loss."""
    import torch

    tcfg = config.training
    n_classes = len(config.classes)
    # channels-last (NHWC) convolutions: ~25 % faster steps on CPU (oneDNN) at 256 px chips, and on CUDA
    model = build_model(config.model, data.n_bands, n_classes).to(device, memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay)
    total_steps = tcfg.epochs * tcfg.steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, tcfg.warmup_steps, total_steps, progress=clock.progress())
    )
    loss_fn = make_loss(n_classes, data.class_weights, tcfg.ce_weight, tcfg.dice_weight)
    return _Run(config, out_dir, data, model, opt, sched, loss_fn, device, clock)


def _fit(run: _Run, state: TrainState, progress: bool) -> float:
    """Epochs from ``state.epoch`` on (checkpoint after each); returns the loop's wall seconds."""
    from tqdm.auto import tqdm

    tcfg = run.config.training
    total = tcfg.epochs * tcfg.steps_per_epoch
    bar = tqdm(total=total, initial=state.global_step, disable=not progress, desc="train", unit="step", dynamic_ncols=True)
    t_loop = time.perf_counter()
    run.clock.t0 = t_loop
    if state.global_step >= tcfg.warmup_steps:
        run.clock.t_warm = t_loop
    try:
        for epoch in range(state.epoch, tcfg.epochs):
            if state.stopped:
                break
            t_ep = time.perf_counter()
            ep_losses, out_of_time = _run_epoch(run, state, epoch, bar)
            _end_epoch(run, state, epoch, ep_losses, time.perf_counter() - t_ep)
            bar.set_postfix(loss=f"{state.history[-1]['train_loss'] or 0:.3f}", val_miou=f"{state.best_miou:.3f}")
            save_checkpoint(run.out_dir, state, run.model, run.opt, run.sched, run.config)
            if state.stopped:
                break
            if out_of_time:  # not persisted as "stopped": a resumed run with more time goes on
                log.info("time budget of %.0f s spent after %d steps", run.clock.max_seconds, state.global_step)
                break
    finally:
        bar.close()
    return time.perf_counter() - t_loop


def _run_epoch(run: _Run, state: TrainState, epoch: int, bar: Any) -> tuple[list[float], bool]:
    """``steps_per_epoch`` optimizer steps (fewer when the time budget runs out): ``(losses, out_of_time)``."""
    import torch

    tcfg = run.config.training
    rng = np.random.default_rng([run.seed, 100 + epoch])
    torch.manual_seed(run.seed * 1000 + epoch)
    aug = make_augment(run.seed * 1000 + epoch)
    run.model.train()
    losses: list[float] = []
    for _ in range(tcfg.steps_per_epoch):
        t_step = time.perf_counter()
        loss = _train_step(run, rng, aug)
        state.global_step += 1
        if run.clock.t_warm is None and state.global_step >= tcfg.warmup_steps:
            run.clock.t_warm = time.perf_counter()
        run.sched.step()
        run.step_seconds += time.perf_counter() - t_step
        losses.append(loss)
        state.step_losses.append(loss)
        state.step_lrs.append(float(run.sched.get_last_lr()[0]))
        bar.update(1)
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", val_miou=f"{state.best_miou:.3f}" if state.best_miou >= 0 else "-")
        if run.clock.spent():
            return losses, True
    return losses, False


def _train_step(run: _Run, rng: np.random.Generator, aug: Any) -> float:
    """One optimizer step over ``grad_accum`` batches; returns the summed (scaled) loss."""
    import torch

    tcfg = run.config.training
    d = run.data
    run.opt.zero_grad(set_to_none=True)
    total = 0.0
    for _ in range(tcfg.grad_accum):
        xb, yb = make_batch(d.regions, d.sampler, aug, rng, tcfg.batch_size, d.chip_px, d.n_bands)
        xt = torch.from_numpy(xb).to(run.device).contiguous(memory_format=torch.channels_last)
        yt = torch.from_numpy(yb).to(run.device)
        with autocast(run.device):
            logits = run.model(xt)
        loss = run.loss_fn(logits.float(), yt) / tcfg.grad_accum
        loss.backward()
        total += float(loss.detach())
    run.opt.step()
    return total


def _end_epoch(run: _Run, state: TrainState, epoch: int, ep_losses: list[float], seconds: float) -> None:
    """Validate, append the epoch to the history, keep the best weights, apply early stopping."""
    tcfg = run.config.training
    d = run.data
    n_classes = len(run.config.classes)
    stride = 2**run.config.model.encoder_depth
    cm = validate(run.model, d.regions, d.val_windows, n_classes, stride, run.device, tcfg.batch_size) if d.val_windows else None
    miou = cm.miou() if cm is not None and cm.n_pixels else float("nan")
    rec = {
        "epoch": epoch + 1,
        "steps": len(ep_losses),
        "train_loss": float(np.mean(ep_losses)) if ep_losses else None,
        "val_miou": None if math.isnan(miou) else miou,
        "val_iou": None if cm is None else [None if math.isnan(v) else float(v) for v in cm.iou()],
        "lr": float(run.sched.get_last_lr()[0]),
        "seconds": seconds,
    }
    state.history.append(rec)
    state.epoch = epoch + 1
    if math.isnan(miou) or miou > state.best_miou:  # without validation the last weights are kept
        state.best_miou = state.best_miou if math.isnan(miou) else miou
        state.best_epoch = epoch + 1
        state.best_state = copy.deepcopy({k: v.detach().cpu() for k, v in run.model.state_dict().items()})
        state.best_metrics = cm.as_dict(run.config.class_names) if cm is not None and cm.n_pixels else {}
        state.stale = 0
    else:
        state.stale += 1
    log.info(
        "epoch %d/%d: loss %.4f, val mIoU %s, %.1f s",
        epoch + 1, tcfg.epochs, rec["train_loss"] or float("nan"),
        "n/a" if rec["val_miou"] is None else f"{miou:.4f}", seconds,
    )
    if tcfg.early_stop_patience and state.stale >= tcfg.early_stop_patience:
        log.info("early stop: no validation mIoU gain for %d epochs", state.stale)
        state.stopped = True


def _write_outputs(run: _Run, state: TrainState, steps_this_run: int, loop_s: float) -> str | None:
    """Write the bundle (best weights) and the training report; returns the report's URI (None if it failed)."""
    config, d = run.config, run.data
    if state.best_state is not None:
        run.model.load_state_dict(state.best_state)
    model = run.model.to("cpu").eval()
    names = config.class_names
    freq = (d.scan.counts / max(d.scan.counts.sum(), 1)).tolist()
    summary = {
        "epochs_run": len(state.history),
        "best_epoch": state.best_epoch,
        "steps": state.global_step,
        "chip_px": d.chip_px,
        "class_frequency": dict(zip(names, freq, strict=True)),
        "class_weights": None if d.class_weights is None else [float(w) for w in d.class_weights],
        "scan_step_px": d.scan.step_px,
        "n_val_blocks": len(d.val_windows),
        "device": run.device,
        "seconds_per_step": run.step_seconds / steps_this_run if steps_this_run > 0 else None,
        "loop_seconds": loop_s,
        "history": state.history,
    }
    meta = bundle_meta(
        config.model, config.bands, config.classes, mean=d.norm.mean, std=d.norm.std, tile_px=config.tiling.tile_px,
        name=config.name, metrics=state.best_metrics, training=config.model_dump(mode="json"), summary=summary,
        indices=config.model.indices,
    )
    save_bundle(run.out_dir, model, meta)
    try:
        return write_training_report(
            U.join(run.out_dir, REPORT_NAME), state.history, state.step_losses, state.best_metrics, names,
            title=f"{config.name}: {config.model.arch}/{config.model.encoder}, best epoch {state.best_epoch}",
            step_lrs=state.step_lrs,
        )
    except Exception:  # noqa: BLE001 - a failed plot must not lose a trained model
        log.exception("could not write the training report")
        return None
