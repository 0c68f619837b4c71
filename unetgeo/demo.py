"""``unetgeo demo``: synthetic flood pair -> small CPU-trained U-Net -> scene-to-polygons -> table."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from unetgeo.config import Config, SceneLabels, load_config

log = logging.getLogger(__name__)


# Training budget of the demo on a CPU: training stops (validates and saves) when it is spent.
DEMO_TRAIN_SECONDS = 170


def demo_config(train_image: str, train_labels: str) -> Config:
    """The embedded flood defaults with a lighter network and a short schedule for 2 CPU cores.

    A depth-4 ResNet-18 U-Net (3.1 M parameters) on 128 px chips, 4 x 40 steps: about 0.4 s a
    step on an idle 2-core machine; measured water IoU 0.98-0.99 on the post-flood scene.
    """
    base = load_config(None)
    training = base.training.model_copy(
        update={
            "scenes": (SceneLabels(image=train_image, labels=train_labels),),
            "chip_px": 128,
            "epochs": 4,
            "steps_per_epoch": 40,
        }
    )
    model = base.model.model_copy(update={"encoder_depth": 4, "decoder_channels": (64, 32, 16, 8)})
    return load_config(None, training=training, model=model)


def run_demo(out_dir: str, *, size_px: int = 1024, seed: int = 0, progress: bool = True) -> dict:
    """Generate data, train, run the post-flood scene with the pre-flood reference; print a table.

    Returns:
        The run's summary (also in ``out_dir/summary.json``).
    """
    from flows.cli_entry import (  # Prefect lives in flows/; imported only here
        prestart,
        run_scene_flow,
    )
    from unetgeo.synthetic import make_flood_pair
    from unetgeo.train import train

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    prestart()  # the local Prefect API starts in the background while data is made and the model trains
    t0 = time.perf_counter()
    log.info("demo: generating a synthetic %d px flood pair and a training scene in %s", size_px, out / "data")
    scenes = make_flood_pair(str(out / "data"), size_px=size_px, seed=seed)
    t_data = time.perf_counter() - t0
    cfg = demo_config(scenes["train"].image_uri, scenes["train"].labels_uri)
    t1 = time.perf_counter()
    tr = train(cfg, str(out / "model"), work_dir=str(out / "work"), progress=progress, max_seconds=DEMO_TRAIN_SECONDS)
    t_train = time.perf_counter() - t1
    summary = run_scene_flow(
        scene=scenes["post"].image_uri,
        model=tr.model_dir,
        out=str(out),
        reference=scenes["pre"].image_uri,
        truth=scenes["post"].labels_uri,
    )
    total = time.perf_counter() - t0
    water_iou = (summary.get("iou") or {}).get("water", float("nan"))
    rows = [
        ("water IoU vs synthetic truth", f"{water_iou:.3f}"),
        ("flooded area", f"{summary.get('flooded_km2', float('nan')):.3f} km²"),
        ("water area (post-flood)", f"{summary.get('area_km2', {}).get('water', float('nan')):.3f} km²"),
        ("data generation", f"{t_data:.1f} s"),
        ("training", f"{t_train:.1f} s"),
    ]
    rows += [(f"stage {k}", f"{v:.1f} s") for k, v in (summary.get("timings_s") or {}).items()]
    rows.append(("total", f"{total:.1f} s"))
    width = max(len(r[0]) for r in rows)
    print()
    print("unetgeo demo".center(width + 16, "-"))
    for k, v in rows:
        print(f"{k:<{width}}  {v:>14}")
    print(f"outputs in {out.resolve()}: classes.tif, confidence.tif, polygons.gpkg, polygons.shp, flood.gpkg, "
          "quicklook.png, summary.json")
    return summary
