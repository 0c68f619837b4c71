"""Seam evaluation: tiled prediction against whole-image prediction, by distance to the nearest tile edge.

Predicts a synthetic 1024² scene twice with the same model: through `predict_tiles` (chunks of
--tile-px with a --halo-px halo) and in one whole-image pass (same reflect edge policy, probabilities
stored as float16 like probs.zarr). Prints the share of pixels whose class differs (target <= 0.01 %)
and plots agreement against the distance to the nearest internal tile edge (a flat line = no seams)
into benchmarks/seams.png.

Usage: python benchmarks/seams.py [--model MODEL_DIR] [--tile-px 256] [--halo-px 64] [--out benchmarks/seams.png]
Without --model, a small U-Net is trained for a minute on a synthetic flood scene (a trained model,
not a random one, is what users run).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine  # noqa: E402

from unetgeo.config import InferenceSpec  # noqa: E402
from unetgeo.grid import Window  # noqa: E402
from unetgeo.infer import predict_array, predict_tiles  # noqa: E402
from unetgeo.io.scene import SceneReader, open_scene  # noqa: E402
from unetgeo.io.store import open_store  # noqa: E402
from unetgeo.model import load_bundle, normalise  # noqa: E402
from unetgeo.synthetic import make_scene  # noqa: E402
from unetgeo.tiling import make_tiles  # noqa: E402


def quick_model(work: Path) -> Path:
    from unetgeo.config import ModelSpec, SceneLabels, load_config
    from unetgeo.errors import ModelBundleError
    from unetgeo.model import check_bundle
    from unetgeo.train import train

    model_dir = work / "model"
    try:
        check_bundle(str(model_dir))  # a complete bundle from an earlier run is reused
        return model_dir
    except ModelBundleError:
        pass
    tr = make_scene(str(work / "train.tif"), str(work / "train_labels.tif"), size_px=512, seed=7, flood_level=1.3)
    base = load_config(None)
    cfg = load_config(
        None,
        model=ModelSpec(encoder="resnet18", encoder_depth=4, decoder_channels=(64, 32, 16, 8)),
        training=base.training.model_copy(update={
            "scenes": (SceneLabels(image=tr.image_uri, labels=tr.labels_uri),), "epochs": 2, "steps_per_epoch": 30,
            "chip_px": 128, "batch_size": 8,
        }),
    )
    return Path(train(cfg, str(model_dir), work_dir=str(work / "train_work")).model_dir)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--tile-px", type=int, default=256)
    ap.add_argument("--halo-px", type=int, default=64)
    ap.add_argument("--work", default="bench_out/seams")
    ap.add_argument("--out", default=str(Path(__file__).with_name("seams.png")))
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    model_dir = Path(args.model) if args.model else quick_model(work)
    sc = make_scene(str(work / "scene.tif"), str(work / "scene_labels.tif"), size_px=args.size, seed=3, flood_level=2.0)
    shutil.rmtree(work / "run", ignore_errors=True)
    tr = make_tiles(sc.image_uri, str(work / "run" / "tiles.zarr"), tile_px=args.tile_px)
    pr = predict_tiles(tr.tiles_uri, str(model_dir), str(work / "run" / "probs.zarr"),
                       inference=InferenceSpec(halo_px=args.halo_px))
    tiled = open_store(pr.probs_uri)[:].astype(np.float32)
    valid = open_store(tr.valid_uri)[:]
    model, meta = load_bundle(str(model_dir))
    info = open_scene(sc.image_uri)
    with SceneReader(sc.image_uri) as r:  # the reference reads the small scene whole, on purpose
        data, ok = r.read(Window(0, 0, info.grid.height, info.grid.width))
    whole = predict_array(model, normalise(data, meta, ok), stride=meta.stride, edge_pad_px=args.halo_px)
    whole = whole.astype(np.float16).astype(np.float32)
    a, b = tiled.argmax(0), whole.argmax(0)
    agree = (a == b) | ~valid
    differ = 1 - agree[valid].mean()
    H, W = a.shape
    yy, xx = np.mgrid[0:H, 0:W]
    t = args.tile_px
    d_tile = np.minimum(np.minimum(yy % t, t - 1 - yy % t), np.minimum(xx % t, t - 1 - xx % t))
    dists = np.arange(0, t // 2)
    curve = np.array([agree[valid & (d_tile == d)].mean() for d in dists])
    maxdiff = float(np.abs(tiled - whole)[:, valid].max())
    print(f"machine: {machine()}")
    print(f"model {meta.model_id} (depth {meta.encoder_depth}), scene {args.size}², tile {t}, halo {args.halo_px}")
    print(f"pixels whose class differs, tiled vs whole image: {differ:.5%}   (target <= 0.01 %)")
    print(f"max |probability difference|: {maxdiff:.4f}; agreement at tile edges (d=0): {curve[0]:.5f}, "
          f"mid-tile: {curve[-1]:.5f}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=120)
    ax.plot(dists, curve * 100, lw=2)
    ax.set_ylim(min(99.0, float(curve.min() * 100) - 0.1), 100.05)
    ax.set_xlabel("distance to the nearest tile edge (px)")
    ax.set_ylabel("agreement with whole-image (%)")
    ax.set_title(f"tiled (tile {t}, halo {args.halo_px}) vs whole-image: {differ:.4%} of pixels differ")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(args.out)
    print(f"plot written to {args.out}")


if __name__ == "__main__":
    main()
