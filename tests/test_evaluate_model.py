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


def _water_geojson(labels_uri: str, out: Path) -> Path:
    """The label raster's water pixels (1) as polygons with ``kind: "lake"``; background left uncovered."""
    import rasterio
    from rasterio.features import shapes

    with rasterio.open(labels_uri) as ds:
        lab = ds.read(1)
        crs, transform = ds.crs, ds.transform
    feats = [{"type": "Feature", "properties": {"kind": "lake"}, "geometry": g}
             for g, v in shapes(lab, mask=lab == 1, transform=transform) if v == 1]
    assert feats
    out.write_text(json.dumps({"type": "FeatureCollection", "features": feats,
                               "crs": {"type": "name", "properties": {"name": crs.to_string()}}}))
    return out


def test_cli_vector_labels_with_class_attribute_and_map(tmp_path: Path) -> None:
    """--class-attribute/--class-map rasterise a GeoJSON exactly like the label raster it came from."""
    sc = make_scene(str(tmp_path / "s.tif"), str(tmp_path / "l.tif"), size_px=128, seed=4, flood_level=2.0,
                    footprint=False)
    model = _model(tmp_path / "m", list(sc.band_names))
    gj = _water_geojson(sc.labels_uri, tmp_path / "water.geojson")
    (tmp_path / "map.json").write_text('{"lake": 1, "__other__": 0}')
    rc = main(["-q", "evaluate", "--model", str(model), "--scene", sc.image_uri, "--labels", str(gj),
               "--class-attribute", "kind", "--class-map", str(tmp_path / "map.json"), "--halo", "8",
               "--json", str(tmp_path / "vec.json")])
    assert rc == 0
    vec = json.loads((tmp_path / "vec.json").read_text())
    ras = evaluate_model(str(model), scene=sc.image_uri, labels=sc.labels_uri, inference=InferenceSpec(halo_px=8))
    assert vec["confusion_matrix"] == ras["confusion_matrix"]
    assert vec["n_pixels"] == 128 * 128
    # an attribute value the map lacks is refused with exit code 2
    rc = main(["-q", "evaluate", "--model", str(model), "--scene", sc.image_uri, "--labels", str(gj),
               "--class-attribute", "kind", "--class-map", '{"river": 1}', "--halo", "8"])
    assert rc == 2


def test_cli_ignore_values_leave_minus_one_pixels_unscored(tmp_path: Path, capsys) -> None:
    import rasterio

    sc = make_scene(str(tmp_path / "s.tif"), str(tmp_path / "l.tif"), size_px=128, seed=5, flood_level=2.0,
                    footprint=False)
    model = _model(tmp_path / "m", list(sc.band_names))
    with rasterio.open(sc.labels_uri) as ds:
        lab = ds.read(1).astype(np.int16)
        profile = {**ds.profile, "dtype": "int16", "nodata": None}
    lab[:40, :] = -1  # Sen1Floods11-style "not labelled"
    with rasterio.open(tmp_path / "l16.tif", "w", **profile) as ds:
        ds.write(lab, 1)
    base = ["-q", "evaluate", "--model", str(model), "--scene", sc.image_uri, "--labels", str(tmp_path / "l16.tif"),
            "--halo", "8"]
    assert main([*base, "--ignore-values", "-1", "--json", str(tmp_path / "s.json")]) == 0
    scores = json.loads((tmp_path / "s.json").read_text())
    full = evaluate_model(str(model), scene=sc.image_uri, labels=sc.labels_uri, inference=InferenceSpec(halo_px=8))
    assert scores["n_pixels"] == 88 * 128 < full["n_pixels"]
    truth_rows = np.array(scores["confusion_matrix"]).sum(axis=1).tolist()
    assert truth_rows == [int((lab[40:] == 0).sum()), int((lab[40:] == 1).sum())]
    capsys.readouterr()
    assert main(base) == 2  # without the option -1 is not a class id: refused, with the fix named
    assert "ignore_values" in capsys.readouterr().err
