"""Input-step ablation of the embedded flood model (issue 11): bands only vs bands + NDWI/MNDWI.

Each variant trains the demo's network on the demo's synthetic training set
(:func:`unetgeo.demo.demo_config`, :func:`unetgeo.synthetic.make_training_set`, the same budget),
then is scored in the same run on the labelled real scenes (``real_water.evaluate_scene``: water IoU,
recall, non-water and forest called water, next to NDWI>0 and MNDWI+Otsu) and on the demo's
synthetic post-flood scene (water IoU against its truth, through ``run_scene`` with the demo's
inference options). Training is deterministic for a fixed step count, so a variant rerun gives the
same figures (the time cap only binds on a loaded machine: the steps run are printed).

Usage: python benchmarks/flood_ablation.py --work DIR [--variants bands indices] [--seconds 540]
       [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import real_water as rw  # noqa: E402
from _common import machine  # noqa: E402

VARIANTS = {"bands": (), "indices": ("ndwi", "mndwi")}
"""Variant name -> ``model.indices``."""


def make_data(data: Path) -> list[tuple[str, str]]:
    """The demo's flood pair and training set under ``data`` (reused when present)."""
    from unetgeo.demo import DEMO_POST_CLOUDS, DEMO_TRAIN_PX, DEMO_TRAIN_SCENES
    from unetgeo.synthetic import make_flood_pair, make_training_set

    pairs = [(str(data / f"train_{i}.tif"), str(data / f"train_{i}_labels.tif")) for i in range(DEMO_TRAIN_SCENES)]
    if not all(Path(p).is_file() for pair in pairs for p in pair) or not (data / "post.tif").is_file():
        make_flood_pair(str(data), size_px=1024, seed=0, post_cloud_fraction=DEMO_POST_CLOUDS, with_train=False)
        make_training_set(str(data), n=DEMO_TRAIN_SCENES, size_px=DEMO_TRAIN_PX, seed=1000)
    return pairs


def run_variant(name: str, work: Path, pairs: Sequence[tuple[str, str]], seconds: float) -> dict[str, Any]:
    """Train one variant and score it on the real scenes and the synthetic post-flood scene."""
    from unetgeo.config import load_config
    from unetgeo.demo import DEMO_INFERENCE, demo_config
    from unetgeo.pipeline import make_run, run_scene
    from unetgeo.train import train

    cfg = demo_config(pairs)
    cfg = load_config(None, training=cfg.training, model=cfg.model.model_copy(update={"indices": VARIANTS[name]}))
    model_dir = work / f"model_{name}"
    t0 = time.perf_counter()
    tr = train(cfg, str(model_dir), work_dir=str(work / f"work_{name}"), progress=False, max_seconds=seconds)
    train_s = time.perf_counter() - t0
    real = {s.name: rw.evaluate_scene(s, rw.DATA, work / f"real_{name}", str(model_dir)) for s in rw.SCENES}
    data = work / "data"
    run = make_run(str(data / "post.tif"), str(model_dir), str(work / f"post_{name}"), reference=str(data / "pre.tif"),
                   truth=str(data / "post_labels.tif"), **DEMO_INFERENCE)
    summary = run_scene(run)
    return {"indices": list(VARIANTS[name]), "train_s": train_s, "epochs_run": tr.epochs_run,
            "real": real, "synthetic_iou": summary.get("iou")}


def format_row(name: str, r: dict[str, Any]) -> str:
    """One Markdown row: the model's water IoU per real scene and the synthetic water IoU."""
    real = [r["real"][s.name]["methods"]["model"]["iou"] for s in rw.SCENES]
    syn = (r["synthetic_iou"] or {}).get("water")
    return (f"| {name} | " + " | ".join(rw._f(v) for v in real) + f" | {rw._f(syn)} | {r['epochs_run']} | "
            f"{r['train_s']:.0f} |")


def main(argv: Sequence[str] | None = None) -> int:
    """Train and score every requested variant; print one table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", required=True, help="working folder (data, models, runs)")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--seconds", type=float, default=None, help="training time cap (default: the demo's)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    from unetgeo.demo import DEMO_TRAIN_SECONDS

    work = Path(args.work)
    pairs = make_data(work / "data")
    results = {v: run_variant(v, work, pairs, args.seconds or DEMO_TRAIN_SECONDS) for v in args.variants}
    print(f"machine: {machine()}\n")
    print("| input | " + " | ".join(s.name for s in rw.SCENES) + " | synthetic | epochs | train s |")
    print("|---" * (len(rw.SCENES) + 4) + "|")
    for v, r in results.items():
        print(format_row(v, r))
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine(), "variants": results}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
