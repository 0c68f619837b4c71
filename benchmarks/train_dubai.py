"""Train the Dubai land-cover model (tiles 1-5) on the CPU and score it on tile 6.

Real imagery nobody here made: aerial RGB with RGB-coded masks (see ../shared/data/README.md).
Targets on tile 6 after <= 30 min on 2 CPU cores: mIoU >= 0.45 and water IoU >= 0.70.

    python benchmarks/train_dubai.py [--out MODEL_DIR] [--minutes N] [--threads N] [--resume]

Prints one line per class and a final verdict line; exit code 0 when both targets are met,
1 otherwise (2 when the data folder is missing).

Leave-one-tile-out cross-validation (issue 15):

    python benchmarks/train_dubai.py --cv --out DIR [--budget-min N | --short] [--threads 1] [--json F]

Each fold trains on five tiles for a fixed time budget chosen in advance, without validation
inside training (no epoch is chosen on the held-out tile: the last weights are kept), then scores
the sixth tile through `unetgeo evaluate`, single scale and with the fused scales + flips. It
prints the mean, standard deviation and minimum of mIoU and of each class's IoU over the folds,
and the worst fold. Exit code 0 when the mean single-scale mIoU >= 0.60 and the mean water IoU
>= 0.80 (issue 15's targets). `--short` is 6 min of training per fold, so that all six folds,
evaluation included, fit in about an hour on 2 cores. `--set KEY=VALUE` (repeatable) overrides a
`training` field of the config (YAML value), e.g. `--set aug_color=0.8 --set class_share='{water: 0.2}'`,
for ablations at the same budget.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_MIOU = 0.45
TARGET_WATER_IOU = 0.70
CV_TARGET_MIOU = 0.60
CV_TARGET_WATER_IOU = 0.80
SHORT_BUDGET_MIN = 6.0


def machine() -> str:
    """CPU model, core count, memory and load average, in one line."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(next(v for v in Path("/proc/meminfo").read_text().splitlines() if v.startswith("MemTotal")).split()[1])
        mem = f", {kb / 2**20:.0f} GiB"
    except (OSError, StopIteration, ValueError):
        pass
    return f"{cpu}, {os.cpu_count()} cores{mem}, load average {os.getloadavg()[0]:.1f}"


def training_overrides(pairs: list[str]) -> dict:
    """``["aug_color=0.8", "class_share={water: 0.2}"]`` -> ``{"aug_color": 0.8, ...}`` (YAML values)."""
    import yaml

    out = {}
    for kv in pairs:
        if "=" not in kv:
            raise SystemExit(f"--set {kv!r}: give KEY=VALUE, e.g. aug_color=0.8")
        k, v = kv.split("=", 1)
        out[k.strip()] = yaml.safe_load(v)
    return out


def make_config(a, data: Path, train_tiles: list[int] | None = None, test_tile: int | None = None):
    """The config with the data root, threads and ``--set`` overrides; for a CV fold, the fold's
    training tiles and no validation (``val_globs`` empty, ``val_fraction`` 0)."""
    from unetgeo.config import load_config

    cfg = load_config(a.config)
    pairs = {"root": str(data)}
    upd = training_overrides(a.set or [])
    if train_tiles is not None:
        pairs.update(train_globs=tuple(f"tile_{t}/images/*.jpg" for t in train_tiles), val_globs=())
        upd["val_fraction"] = 0.0
    if a.threads:
        upd["num_threads"] = a.threads
    tdict = cfg.training.model_dump()
    tdict["pairs"] = {**tdict["pairs"], **pairs}
    tdict.update(upd)
    return load_config(a.config, training=tdict)


def evaluate_tile(model_dir: str, data: Path, tile: int, fused_scales: tuple[float, ...], fused: bool) -> dict:
    """Scores of ``tile`` through `unetgeo evaluate`: ``{label: as_dict + seconds}``."""
    from unetgeo.config import InferenceSpec
    from unetgeo.evaluate import evaluate_model

    runs = {"single scale": InferenceSpec(halo_px=64, scales=(1.0,), flips=False)}
    if fused:
        runs["fused"] = InferenceSpec(halo_px=64, scales=fused_scales, flips=True)
    scores = {}
    for label, spec in runs.items():
        t1 = time.perf_counter()
        scores[label] = evaluate_model(model_dir, images=str(data / f"tile_{tile}" / "images"),
                                       masks=str(data / f"tile_{tile}" / "masks"), inference=spec)
        scores[label]["seconds"] = time.perf_counter() - t1
    return scores


def _stats(values: list[float]) -> dict:
    import numpy as np

    v = np.array([np.nan if x is None else x for x in values], dtype=float)
    return {"mean": float(np.nanmean(v)), "std": float(np.nanstd(v)), "min": float(np.nanmin(v)),
            "values": [None if np.isnan(x) else float(x) for x in v]}


def run_cv(a, data: Path) -> int:
    """Leave-one-tile-out over ``--cv-tiles``; see the module docstring."""
    from unetgeo.model import check_bundle
    from unetgeo.train import train
    from unetgeo.train.objective import use_training_spec

    tiles = [int(t) for t in a.cv_tiles.split(",")]
    budget = SHORT_BUDGET_MIN if a.short and a.minutes is None else (a.minutes if a.minutes is not None else 30.0)
    fused_scales = tuple(float(v) for v in a.fused_scales.split(","))
    fused = not a.no_fused
    out = Path(a.out)
    cfg0 = make_config(a, data, tiles[1:], tiles[0])
    print(f"leave-one-tile-out over tiles {tiles}: {budget:.1f} min of training per fold, "
          f"{a.threads or 'auto'} torch threads; machine: {machine()}")
    t = cfg0.training
    print(f"training: aug_color {t.aug_color}, aug_gamma {t.aug_gamma}, aug_gain {t.aug_gain}, aug_scale "
          f"{list(t.aug_scale)} p {t.aug_scale_p}, class_share {t.class_share or None} (class_aware "
          f"{t.class_aware_sampling}), label_smoothing {t.label_smoothing}")
    folds = []
    t_all = time.perf_counter()
    for k in tiles:
        train_tiles = [x for x in tiles if x != k]
        cfg = make_config(a, data, train_tiles, k)
        fold_dir = str(out / f"fold_{k}")
        t0 = time.perf_counter()
        reused = a.reuse and (Path(fold_dir) / "model.json").is_file()
        if not reused:
            with use_training_spec(cfg):
                train(cfg, fold_dir, progress=not a.quiet, max_seconds=budget * 60)
        train_min = (time.perf_counter() - t0) / 60
        summary = dict(check_bundle(fold_dir).raw)["training_summary"]
        scores = evaluate_tile(fold_dir, data, k, fused_scales, fused)
        fold = {"test_tile": k, "train_tiles": train_tiles, "train_minutes": train_min, "reused": reused,
                "steps": summary.get("steps"), "seconds_per_step": summary.get("seconds_per_step"),
                "load_average": os.getloadavg()[0], "evaluate": scores}
        folds.append(fold)
        ss = scores["single scale"]
        print(f"fold {k}: train on {train_tiles}, {summary.get('steps')} steps in {train_min:.1f} min; tile {k}: "
              f"mIoU {ss['miou']:.3f}, water {ss['iou'].get('water') or 0:.3f}"
              + (f"; fused mIoU {scores['fused']['miou']:.3f}, water {scores['fused']['iou'].get('water') or 0:.3f}"
                 if fused else ""), flush=True)
    names = list(folds[0]["evaluate"]["single scale"]["iou"])
    labels = list(folds[0]["evaluate"])
    agg = {lab: {"miou": _stats([f["evaluate"][lab]["miou"] for f in folds]),
                 "pixel_accuracy": _stats([f["evaluate"][lab].get("pixel_accuracy") for f in folds]),
                 "iou": {n: _stats([f["evaluate"][lab]["iou"].get(n) for f in folds]) for n in names}}
           for lab in labels}
    worst = min(folds, key=lambda f: f["evaluate"]["single scale"]["miou"])
    print()
    print(f"leave-one-tile-out, {len(folds)} folds, {budget:.1f} min training per fold "
          f"({a.threads or 'auto'} threads), {(time.perf_counter() - t_all) / 60:.1f} min in all")
    print(f"{'':<14}" + "".join(f"{lab + ' mean ± std (min)':>32}" for lab in labels)
          + f"{'worst fold (tile ' + str(worst['test_tile']) + ')':>24}")
    for key in [*names, "miou"]:
        cells = []
        for lab in labels:
            st = agg[lab]["miou"] if key == "miou" else agg[lab]["iou"][key]
            cells.append(f"{st['mean']:.3f} ± {st['std']:.3f} ({st['min']:.3f})")
        w = worst["evaluate"]["single scale"]
        wv = w["miou"] if key == "miou" else (w["iou"].get(key) or 0.0)
        print(f"{key:<14}" + "".join(f"{c:>32}" for c in cells) + f"{wv:24.3f}")
    mean_miou = agg["single scale"]["miou"]["mean"]
    mean_water = agg["single scale"]["iou"].get("water", {"mean": 0.0})["mean"]
    ok = mean_miou >= CV_TARGET_MIOU and mean_water >= CV_TARGET_WATER_IOU
    print(f"mean mIoU {mean_miou:.3f} (target {CV_TARGET_MIOU}), mean water IoU {mean_water:.3f} "
          f"(target {CV_TARGET_WATER_IOU}) -> " + ("PASS" if ok else "BELOW TARGET"))
    if a.json:
        Path(a.json).write_text(json.dumps({
            "budget_minutes_per_fold": budget, "threads": a.threads, "machine": machine(),
            "training": cfg0.training.model_dump(mode="json", exclude={"pairs"}), "overrides": a.set or [],
            "fused_scales": list(fused_scales), "folds": folds, "aggregate": agg,
            "worst_fold": worst["test_tile"], "wall_minutes": (time.perf_counter() - t_all) / 60}, indent=1, default=str))
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(ROOT / "models" / "dubai_landcover"), help="model directory (--cv: one fold_N per tile)")
    p.add_argument("--minutes", "--budget-min", dest="minutes", type=float, default=None,
                   help="training time budget in minutes, per fold with --cv (default 30; --cv --short: 6)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: all cores, or 1 when the machine is already busy; see unetgeo.train.train)")
    p.add_argument("--config", default=str(ROOT / "configs" / "dubai_landcover.yaml"))
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a training field (YAML value); repeatable")
    p.add_argument("--resume", action="store_true", help="continue from MODEL_DIR/checkpoint.json + checkpoint.safetensors")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--eval-only", action="store_true", help="skip training; score MODEL_DIR on tile 6")
    p.add_argument("--fused-scales", default="0.75,1.0,1.25", help="scales of the fused evaluation (with flips)")
    p.add_argument("--json", default=None, help="write all figures to this JSON file")
    p.add_argument("--cv", action="store_true", help="leave-one-tile-out cross-validation over --cv-tiles")
    p.add_argument("--cv-tiles", default="1,2,3,4,5,6", help="tiles of the cross-validation (default 1-6)")
    p.add_argument("--short", action="store_true", help=f"--cv: {SHORT_BUDGET_MIN:g} min of training per fold")
    p.add_argument("--no-fused", action="store_true", help="--cv: single-scale evaluation only")
    p.add_argument("--reuse", action="store_true", help="--cv: score an existing fold_N model instead of training it")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    import torch

    from unetgeo.model import check_bundle
    from unetgeo.train import train
    from unetgeo.train.objective import use_training_spec

    data = Path(os.environ.get("UNETGEO_SHARED_DATA", ROOT.parent / "shared" / "data")) / "dubai_landcover"
    if not data.is_dir():
        print(f"{data}: Dubai land-cover data not found; set UNETGEO_SHARED_DATA", file=sys.stderr)
        return 2
    if a.threads:
        torch.set_num_threads(a.threads)  # evaluation too, not only training
    if a.cv:
        return run_cv(a, data)
    minutes = a.minutes if a.minutes is not None else 30.0
    cfg = make_config(a, data)
    print(f"torch {torch.__version__}, {a.threads or 'auto'} threads, budget {minutes:.1f} min, "
          f"model {cfg.model.arch}/{cfg.model.encoder} depth {cfg.model.encoder_depth}; machine: {machine()}")
    t0 = time.perf_counter()
    if not a.eval_only:
        with use_training_spec(cfg):
            train(cfg, a.out, progress=not a.quiet, resume=a.resume, max_seconds=minutes * 60)
    wall = time.perf_counter() - t0
    meta = dict(check_bundle(a.out).raw)
    m = meta["metrics"]
    summary = meta["training_summary"]
    print()
    print(f"{'class':<12} {'IoU':>6} {'F1':>6} {'prec':>6} {'recall':>6}")
    for name, v in m["per_class"].items():
        f = lambda x: "   n/a" if x is None else f"{x:6.3f}"  # noqa: E731
        print(f"{name:<12} {f(v['iou'])} {f(v['f1'])} {f(v['precision'])} {f(v['recall'])}")
    water = m["per_class"].get("water", {}).get("iou") or 0.0
    miou = m.get("miou") or 0.0
    ok = miou >= TARGET_MIOU and water >= TARGET_WATER_IOU
    sps = summary.get("seconds_per_step")
    print(
        f"tile 6: mIoU {miou:.3f} (target {TARGET_MIOU}), water IoU {water:.3f} (target {TARGET_WATER_IOU}), "
        f"pixel accuracy {m.get('pixel_accuracy') or 0:.3f}; {summary['steps']} steps, "
        f"{sps:.2f} s/step, best epoch {summary.get('best_epoch')}/{summary.get('epochs_run')}, wall {wall / 60:.1f} min -> "
        + ("PASS" if ok else "BELOW TARGET")
    )
    # The scores users get: tile 6 through the full inference path (tiles, halo, fusion).
    fused_scales = tuple(float(v) for v in a.fused_scales.split(","))
    scores = evaluate_tile(a.out, data, 6, fused_scales, fused=True)
    scores[f"scales {a.fused_scales} + flips"] = scores.pop("fused")
    print()
    print("tile 6 through `unetgeo evaluate` (full inference path):")
    labels = list(scores)
    print(f"{'class':<12} " + " ".join(f"{lab:>26}" for lab in labels))
    for name in m["per_class"]:
        print(f"{name:<12} " + " ".join(f"{(scores[lab]['iou'].get(name) or 0):26.3f}" for lab in labels))
    print(f"{'mIoU':<12} " + " ".join(f"{scores[lab]['miou']:26.3f}" for lab in labels))
    print(f"{'seconds':<12} " + " ".join(f"{scores[lab]['seconds']:26.1f}" for lab in labels))
    if a.json:
        Path(a.json).write_text(json.dumps({"training_metrics": m, "training_summary": {
            k: summary.get(k) for k in ("steps", "seconds_per_step", "epochs_run", "best_epoch", "loop_seconds")},
            "wall_minutes": wall / 60, "budget_minutes": minutes, "machine": machine(),
            "training": cfg.training.model_dump(mode="json", exclude={"pairs"}), "evaluate": scores}, indent=1, default=str))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
