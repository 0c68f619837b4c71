"""Train the Dubai land-cover model (tiles 1-5) on the CPU and score it on tile 6.

Real imagery nobody here made: aerial RGB with RGB-coded masks (see ../shared/data/README.md).
Targets on tile 6 after <= 30 min on 2 CPU cores: mIoU >= 0.45 and water IoU >= 0.70.

    python benchmarks/train_dubai.py [--out MODEL_DIR] [--minutes N] [--threads N] [--resume]

Prints one line per class and a final verdict line; exit code 0 when both targets are met,
1 otherwise (2 when the data folder is missing).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_MIOU = 0.45
TARGET_WATER_IOU = 0.70


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(ROOT / "models" / "dubai_landcover"), help="model directory")
    p.add_argument("--minutes", type=float, default=30.0, help="training time budget (default 30)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: all cores, or 1 when the machine is already busy; see unetgeo.train.train)")
    p.add_argument("--config", default=str(ROOT / "configs" / "dubai_landcover.yaml"))
    p.add_argument("--resume", action="store_true", help="continue from MODEL_DIR/checkpoint.json + checkpoint.safetensors")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--eval-only", action="store_true", help="skip training; score MODEL_DIR on tile 6")
    p.add_argument("--fused-scales", default="0.75,1.0,1.25", help="scales of the fused evaluation (with flips)")
    p.add_argument("--json", default=None, help="write all figures to this JSON file")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    import torch

    from unetgeo.config import load_config
    from unetgeo.model import check_bundle
    from unetgeo.train import train

    data = Path(os.environ.get("UNETGEO_SHARED_DATA", ROOT.parent / "shared" / "data")) / "dubai_landcover"
    if not data.is_dir():
        print(f"{data}: Dubai land-cover data not found; set UNETGEO_SHARED_DATA", file=sys.stderr)
        return 2
    cfg = load_config(a.config)
    training = cfg.training.model_copy(update={"pairs": cfg.training.pairs.model_copy(update={"root": str(data)})})
    if a.threads:
        training = training.model_copy(update={"num_threads": a.threads})
    cfg = load_config(a.config, training=training)
    print(f"torch {torch.__version__}, {a.threads or 'auto'} threads, load average {os.getloadavg()[0]:.1f}, "
          f"budget {a.minutes:.1f} min, model {cfg.model.arch}/{cfg.model.encoder} depth {cfg.model.encoder_depth}")
    t0 = time.perf_counter()
    if not a.eval_only:
        train(cfg, a.out, progress=not a.quiet, resume=a.resume, max_seconds=a.minutes * 60)
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
    from unetgeo.config import InferenceSpec
    from unetgeo.evaluate import evaluate_model

    fused_scales = tuple(float(v) for v in a.fused_scales.split(","))
    runs = {
        "single scale": InferenceSpec(halo_px=64, scales=(1.0,), flips=False),
        f"scales {a.fused_scales} + flips": InferenceSpec(halo_px=64, scales=fused_scales, flips=True),
    }
    scores = {}
    for label, spec in runs.items():
        t1 = time.perf_counter()
        scores[label] = evaluate_model(a.out, images=str(data / "tile_6" / "images"), masks=str(data / "tile_6" / "masks"),
                                       inference=spec)
        scores[label]["seconds"] = time.perf_counter() - t1
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
            "wall_minutes": wall / 60, "evaluate": scores}, indent=1, default=str))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
