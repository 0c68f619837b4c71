"""`unetgeo evaluate`: scores come from the full inference path, for scenes and for pair folders."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from unetgeo.cli import main
from unetgeo.config import InferenceSpec, ModelSpec
from unetgeo.evaluate import ConfusionMatrix, evaluate_model
from unetgeo.infer import predict_tiles
from unetgeo.io.store import open_store
from unetgeo.model import build_model, save_bundle
from unetgeo.synthetic import make_scene
from unetgeo.tiling import make_tiles

sys.path.insert(0, str(Path(__file__).parent))

SPEC = ModelSpec(arch="Unet", encoder="resnet18", encoder_depth=3, decoder_channels=(16, 8, 4))
RGB = [(0, 0, 255), (0, 255, 0)]


def _model(model_dir: Path, bands: list[str], rgb: bool = False) -> Path:
    torch.manual_seed(0)
    classes = [{"name": "background", "color": "#d9d9d9"}, {"name": "water", "color": "#1f78b4"}]
    if rgb:
        for c, col in zip(classes, RGB, strict=True):
            c["rgb"] = list(col)
    save_bundle(str(model_dir), build_model(SPEC, len(bands), 2), {
        "arch": SPEC.arch, "encoder": SPEC.encoder, "encoder_depth": SPEC.encoder_depth,
        "decoder_channels": list(SPEC.decoder_channels), "in_bands": bands,
        "norm": {"mean": [1000.0] * len(bands), "std": [500.0] * len(bands)},
        "classes": classes, "tile_px": 64, "metrics": {}, "training": {}, "name": "t",
    })
    return model_dir


def test_scene_scores_equal_scoring_predict_output(tmp_path: Path) -> None:
    sc = make_scene(str(tmp_path / "s.tif"), str(tmp_path / "l.tif"), size_px=160, seed=2, flood_level=2.0)
    model = _model(tmp_path / "m", list(sc.band_names))
    spec = InferenceSpec(halo_px=16, flips=True)
    scores = evaluate_model(str(model), scene=sc.image_uri, labels=sc.labels_uri, inference=spec,
                            work_dir=str(tmp_path / "work"))
    # the same thing by hand: tile, predict, argmax, compare with the labels over valid pixels
    tr = make_tiles(sc.image_uri, str(tmp_path / "ref" / "tiles.zarr"), tile_px=64)
    pr = predict_tiles(tr.tiles_uri, str(model), str(tmp_path / "ref" / "probs.zarr"), inference=spec)
    import rasterio

    with rasterio.open(sc.labels_uri) as ds:
        truth = ds.read(1)
    cm = ConfusionMatrix(2).update(open_store(pr.probs_uri)[:].argmax(0).astype(np.uint8), truth,
                                   open_store(tr.valid_uri)[:])
    assert scores["miou"] == pytest.approx(cm.miou())
    assert scores["confusion_matrix"] == cm.as_dict(["background", "water"])["confusion_matrix"]
    assert set(scores["iou"]) == {"background", "water"}


def test_pair_folders_decode_rgb_masks_and_cli_writes_json(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        img = rng.integers(0, 255, (90, 110, 3), dtype=np.uint8)
        mask = np.zeros((90, 110, 3), np.uint8)
        mask[:] = RGB[0]
        mask[:, 50:] = RGB[1]
        Image.fromarray(img).save(tmp_path / "images" / f"p{i}.jpg")
        Image.fromarray(mask).save(tmp_path / "masks" / f"p{i}.png")
    model = _model(tmp_path / "m", ["red", "green", "blue"], rgb=True)
    rc = main(["-q", "evaluate", "--model", str(model), "--images", str(tmp_path / "images"),
               "--masks", str(tmp_path / "masks"), "--json", str(tmp_path / "scores.json"), "--halo", "8"])
    assert rc == 0
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert scores["images"] == 2
    cmx = np.array(scores["confusion_matrix"])
    assert cmx.sum() == 2 * 90 * 110  # every labelled pixel of both images scored once
    assert cmx.sum(axis=1).tolist() == [2 * 90 * 50, 2 * 90 * 60]  # truth rows from the decoded masks
