"""Training state and its checkpoint form (tensors + plain JSON; see :mod:`unetgeo.io.checkpoint`).

Tensor names in ``checkpoint.safetensors``: ``model/<param>``, ``best/<param>`` (the kept
weights), ``optimizer/<param id>/<key>`` (e.g. AdamW's ``exp_avg``), ``rng/torch`` and
``rng/cuda/<device>``. Everything else (epoch, step, history, optimizer hyper-parameters,
scheduler, numpy and Python RNG states as ints) goes to ``checkpoint.json``.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from unetgeo.config import Config
from unetgeo.errors import ConfigError, InputError
from unetgeo.io import checkpoint as C
from unetgeo.io import uri as U

log = logging.getLogger(__name__)


@dataclass
class TrainState:
    """Everything a resumed run needs besides the network, optimizer and scheduler.

    Attributes:
        epoch: epochs completed.
        global_step: optimizer steps taken.
        history: one dict per completed epoch (train loss, val mIoU, per-class IoU, lr, seconds).
        step_losses, step_lrs: loss and learning rate of every step so far.
        best_miou: validation mIoU of the kept weights (-1 before the first validation).
        best_epoch: 1-based epoch of the kept weights (0: none yet).
        best_metrics: ``ConfusionMatrix.as_dict`` of the kept weights.
        best_state: the kept weights (CPU tensors), or None.
        stale: epochs since the last mIoU gain.
        stopped: early stopping fired.
    """

    epoch: int = 0
    global_step: int = 0
    history: list[dict] = field(default_factory=list)
    step_losses: list[float] = field(default_factory=list)
    step_lrs: list[float] = field(default_factory=list)
    best_miou: float = -1.0
    best_epoch: int = 0
    best_metrics: dict = field(default_factory=dict)
    best_state: dict[str, Any] | None = None
    stale: int = 0
    stopped: bool = False


def model_signature(config: Config) -> dict:
    """What a checkpoint must share with the config to be resumed: model spec, bands, class names."""
    return {
        "model": config.model.model_dump(mode="json"),
        "bands": list(config.bands),
        "classes": [c.name for c in config.classes],
    }


# -- optimizer and RNG <-> tensors + JSON -------------------------------------------------------


def optimizer_to_flat(sd: dict) -> tuple[dict[str, Any], dict]:
    """Split an optimizer ``state_dict`` into ``{"optimizer/<pid>/<key>": tensor}`` and JSON data."""
    import torch

    tensors: dict[str, Any] = {}
    scalars: dict[str, dict] = {}
    for pid, st in sd["state"].items():
        for key, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"optimizer/{int(pid)}/{key}"] = v
            else:
                scalars.setdefault(str(int(pid)), {})[key] = v
    return tensors, {"param_groups": C.to_jsonable(sd["param_groups"]), "scalars": C.to_jsonable(scalars)}


def optimizer_from_flat(tensors: dict[str, Any], data: dict, opt: Any) -> dict:
    """Rebuild an optimizer ``state_dict`` for ``opt`` (tuples, e.g. ``betas``, restored where ``opt`` has them)."""
    state: dict[int, dict] = {int(pid): dict(v) for pid, v in data["scalars"].items()}
    for name, v in tensors.items():
        if name.startswith("optimizer/"):
            _, pid, key = name.split("/", 2)
            state.setdefault(int(pid), {})[key] = v
    groups = []
    for saved, cur in zip(data["param_groups"], opt.param_groups, strict=True):
        groups.append({k: tuple(v) if isinstance(cur.get(k), tuple) and isinstance(v, list) else v for k, v in saved.items()})
    return {"state": state, "param_groups": groups}


def rng_to_flat() -> tuple[dict[str, Any], dict]:
    """Torch (and CUDA) RNG states as uint8 tensors; numpy's and Python's as plain ints."""
    import torch

    tensors = {"rng/torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, t in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng/cuda/{i}"] = t
    py = random.getstate()
    return tensors, {"numpy": C.to_jsonable(np.random.get_state(legacy=False)), "random": [py[0], list(py[1]), py[2]]}


def rng_from_flat(tensors: dict[str, Any], data: dict) -> None:
    """Restore the RNG states written by :func:`rng_to_flat`."""
    import torch

    torch.set_rng_state(tensors["rng/torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng/cuda/"))]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    st = dict(data["numpy"])
    st["state"] = {**st["state"], "key": np.asarray(st["state"]["key"], dtype=np.uint32)}
    np.random.set_state(st)
    version, internal, gauss = data["random"]
    random.setstate((int(version), tuple(int(v) for v in internal), gauss))


# -- save / restore ---------------------------------------------------------------------------


_SCALARS = ("epoch", "global_step", "history", "step_losses", "step_lrs", "best_miou", "best_epoch", "best_metrics", "stale", "stopped")


def save_checkpoint(model_dir: str, state: TrainState, model: Any, opt: Any, sched: Any, config: Config) -> None:
    """Write ``checkpoint.safetensors`` + ``checkpoint.json`` for ``state`` into ``model_dir``."""
    tensors: dict[str, Any] = {f"model/{k}": v for k, v in model.state_dict().items()}
    if state.best_state is not None:
        tensors.update({f"best/{k}": v for k, v in state.best_state.items()})
    opt_t, opt_j = optimizer_to_flat(opt.state_dict())
    rng_t, rng_j = rng_to_flat()
    doc = {k: getattr(state, k) for k in _SCALARS}
    doc.update(optimizer=opt_j, scheduler=sched.state_dict(), rng=rng_j, signature=model_signature(config),
               config=config.model_dump(mode="json"))
    C.write_checkpoint(model_dir, {**tensors, **opt_t, **rng_t}, doc)


def _section(tensors: dict[str, Any], prefix: str) -> dict[str, Any]:
    n = len(prefix)
    return {k[n:]: v for k, v in tensors.items() if k.startswith(prefix)}


def restore_checkpoint(model_dir: str, model: Any, opt: Any, sched: Any, config: Config) -> TrainState | None:
    """Load ``model_dir``'s checkpoint into ``model``, ``opt``, ``sched`` and the RNGs; None without one.

    Raises:
        ConfigError: the checkpoint is of another model, bands or classes.
        InputError: the files are corrupted or do not fit the network (names the file).
    """
    got = C.read_checkpoint(model_dir)
    if got is None:
        return None
    tensors, doc = got
    state_uri = U.join(model_dir, C.STATE_NAME)
    if doc.get("signature") != model_signature(config):
        raise ConfigError(
            f"{state_uri}: checkpoint is of another model/bands/classes ({doc.get('signature')}); "
            "use the config it was trained with, or delete the checkpoint to start over"
        )
    try:
        model.load_state_dict(_section(tensors, "model/"))
        opt.load_state_dict(optimizer_from_flat(tensors, doc["optimizer"], opt))
        sched.load_state_dict(doc["scheduler"])
        best = _section(tensors, "best/") or None
        state = TrainState(**{k: doc[k] for k in _SCALARS}, best_state=best)
        state.epoch, state.global_step, state.stale = int(state.epoch), int(state.global_step), int(state.stale)
        rng_from_flat(tensors, doc["rng"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        why = " ".join(f"{type(e).__name__}: {e}".split())[:300]
        raise InputError(f"{state_uri}: checkpoint does not fit this training run ({why}); delete it and "
                         f"{C.TENSORS_NAME} to start over") from e
    state.step_losses = [float("nan") if v is None else float(v) for v in state.step_losses]
    log.info("resuming from %s after epoch %d (step %d)", state_uri, state.epoch, state.global_step)
    return state
