"""``unetgeo demo``: synthetic flood pair -> small CPU-trained U-Net -> scene-to-polygons -> table."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from unetgeo.config import Config, SceneLabels, load_config

log = logging.getLogger(__name__)


# Training budget of the demo on a CPU: training stops (validates and saves) when it is spent.
DEMO_TRAIN_SECONDS = 540
DEMO_EPOCHS = 14
DEMO_TRAIN_SCENES = 6
DEMO_TRAIN_PX = 640
DEMO_POST_CLOUDS = 0.03  # share of the post-flood scene under cloud: unknown in the flood map
DEMO_INFERENCE = {"flips": True}  # test-time fusion of the flipped views (the demo scene is small)


def demo_config(train: Sequence[tuple[str, str]]) -> Config:
    """The embedded flood defaults with a lighter network and a short schedule for 2 CPU cores.

    A depth-4 ResNet-18 U-Net on 128 px chips (the embedded input: the five bands),
    trained on ``train`` (``(image, labels)`` pairs: the varied L1C / L2A, clear / cloudy scenes of
    :func:`unetgeo.synthetic.make_training_set`) until :data:`DEMO_TRAIN_SECONDS` are spent.
    """
    base = load_config(None)
    training = base.training.model_copy(
        update={
            "scenes": tuple(SceneLabels(image=i, labels=lab) for i, lab in train),
            "chip_px": 128,
            "epochs": DEMO_EPOCHS,
            "steps_per_epoch": 40,
        }
    )
    model = base.model.model_copy(update={"encoder_depth": 4, "decoder_channels": (64, 32, 16, 8)})
    return load_config(None, training=training, model=model)


@dataclass(frozen=True)
class DemoData:
    """The demo's inputs, made by :func:`prepare_demo`.

    Attributes:
        out: the demo folder.
        post, pre, truth: the post-flood scene, the pre-flood reference and the post-flood labels.
        model_dir: the trained model bundle.
        seconds: ``{"data generation": s, "training": s}``.
    """

    out: str
    post: str
    pre: str
    truth: str
    model_dir: str
    seconds: dict[str, float]


def prepare_demo(out_dir: str, *, size_px: int = 1024, seed: int = 0, progress: bool = True) -> DemoData:
    """Generate the synthetic flood pair and the training scene, then train the demo model."""
    from unetgeo.io.uri import join
    from unetgeo.synthetic import make_flood_pair, make_training_set
    from unetgeo.train import train

    t0 = time.perf_counter()
    log.info("demo: generating a synthetic %d px flood pair and %d training scenes in %s", size_px, DEMO_TRAIN_SCENES, join(out_dir, "data"))
    scenes = make_flood_pair(join(out_dir, "data"), size_px=size_px, seed=seed, post_cloud_fraction=DEMO_POST_CLOUDS,
                             with_train=False)
    train_set = make_training_set(join(out_dir, "data"), n=DEMO_TRAIN_SCENES, size_px=DEMO_TRAIN_PX, seed=seed + 1000)
    t_data = time.perf_counter() - t0
    cfg = demo_config([(s.image_uri, s.labels_uri) for s in train_set])
    t1 = time.perf_counter()
    tr = train(cfg, join(out_dir, "model"), work_dir=join(out_dir, "work"), progress=progress,
               max_seconds=DEMO_TRAIN_SECONDS)
    return DemoData(out=str(out_dir), post=scenes["post"].image_uri, pre=scenes["pre"].image_uri,
                    truth=scenes["post"].labels_uri, model_dir=tr.model_dir,
                    seconds={"data generation": t_data, "training": time.perf_counter() - t1})


def demo_table(data: DemoData, summary: dict, total_s: float) -> str:
    """The demo's result table: water IoU, flooded km², seconds per step and stage."""
    water_iou = (summary.get("iou") or {}).get("water", float("nan"))
    rows = [
        ("water IoU vs synthetic truth", f"{water_iou:.3f}"),
        ("flooded area", f"{summary.get('flooded_km2') or float('nan'):.3f} km²"),
        ("unknown (cloud, no data)", f"{summary.get('unknown_km2') or float('nan'):.3f} km²"),
        ("water area (post-flood)", f"{summary.get('area_km2', {}).get('water', float('nan')):.3f} km²"),
        *((k, f"{v:.1f} s") for k, v in data.seconds.items()),
        *((f"stage {k}", f"{v:.1f} s") for k, v in (summary.get("timings_s") or {}).items()),
        ("total", f"{total_s:.1f} s"),
    ]
    width = max(len(r[0]) for r in rows)
    lines = ["", "unetgeo demo".center(width + 16, "-"), *(f"{k:<{width}}  {v:>14}" for k, v in rows)]
    lines.append(f"outputs in {data.out}: classes.tif, confidence.tif, polygons.gpkg (.parquet, .shp), "
                 "flood.gpkg, quicklook.png, summary.json")
    return "\n".join(lines)


def run_demo(out_dir: str, *, size_px: int = 1024, seed: int = 0, progress: bool = True) -> dict:
    """Generate data, train, run the post-flood scene with the pre-flood reference; print a table.

    The scene goes through :func:`unetgeo.pipeline.run_scene` in this process (``make demo``
    runs the same through the Prefect flow ``scene-to-polygons``: ``python -m flows.demo``).

    Returns:
        The run's summary (also in ``out_dir/summary.json``).
    """
    from unetgeo.pipeline import make_run, run_scene

    t0 = time.perf_counter()
    data = prepare_demo(out_dir, size_px=size_px, seed=seed, progress=progress)
    run = make_run(data.post, data.model_dir, data.out, reference=data.pre, truth=data.truth, **DEMO_INFERENCE)
    summary = run_scene(run, progress=progress)
    print(demo_table(data, summary, time.perf_counter() - t0))
    return summary
