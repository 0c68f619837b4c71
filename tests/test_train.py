"""Training: class weights, ignore index, block split, chip sampling, bundle (resume: test_checkpoint.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import torch
from rasterio import Affine

from unetgeo import train as T
from unetgeo.config import load_config
from unetgeo.grid import Window
from unetgeo.model import load_bundle

BANDS = ("blue", "green", "red", "nir", "swir")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _scene(tmp_path, size: int = 160, seed: int = 0) -> tuple[str, str]:
    """A 5-band uint16 scene with water (dark in nir/swir) in a disc and a stripe; labels beside it."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    water = ((yy - 50) ** 2 + (xx - 60) ** 2 < 25**2) | ((xx > 120) & (xx < 132))
    land = np.array([800, 900, 1000, 3000, 2500], dtype=np.float64)
    wat = np.array([900, 800, 600, 300, 150], dtype=np.float64)
    img = np.where(water[None], wat[:, None, None], land[:, None, None]) + rng.normal(0, 60, (5, size, size))
    img = np.clip(img, 1, 10000).astype(np.uint16)
    img[:, :, :6] = 0  # nodata strip
    lab = water.astype(np.uint8)
    lab[:, :6] = 255
    t = Affine(10, 0, 600000, 0, -10, 5000000)
    ip, lp = tmp_path / "scene.tif", tmp_path / "scene_labels.tif"
    with rasterio.open(ip, "w", driver="GTiff", width=size, height=size, count=5, dtype="uint16",
                       crs="EPSG:32633", transform=t, nodata=0) as ds:
        ds.write(img)
        for i, b in enumerate(BANDS, start=1):
            ds.set_band_description(i, b)
    _write_labels(lp, lab)
    return str(ip), str(lp)


def _write_labels(path, lab: np.ndarray, nodata: float | None = 255) -> str:
    """A label GeoTIFF on the grid of :func:`_scene` (same size, transform and CRS)."""
    with rasterio.open(path, "w", driver="GTiff", width=lab.shape[1], height=lab.shape[0], count=1, dtype=lab.dtype,
                       crs="EPSG:32633", transform=Affine(10, 0, 600000, 0, -10, 5000000), nodata=nodata) as ds:
        ds.write(lab, 1)
    return str(path)


def _config(image: str, labels: str, **training):
    tr = {
        "scenes": [{"image": image, "labels": labels}],
        "chip_px": 64,
        "batch_size": 2,
        "epochs": 2,
        "steps_per_epoch": 2,
        "val_block_px": 64,
        "val_fraction": 0.25,
        "warmup_steps": 1,
        "lr": 1e-3,
        **training,
    }
    return load_config(
        None,
        bands=list(BANDS),
        tiling={"tile_px": 64},
        model={"encoder": "resnet18", "encoder_depth": 3, "decoder_channels": [16, 8, 4]},
        training=tr,
    )


def test_class_weights_inverse_sqrt_frequency():
    w = T.class_weights_from_counts(np.array([900, 100]))
    assert w[1] / w[0] == pytest.approx(3.0)
    assert (np.array([0.9, 0.1]) * w).sum() == pytest.approx(1.0)
    w3 = T.class_weights_from_counts(np.array([500, 500, 0]))
    assert w3[0] == pytest.approx(1.0) and w3[2] == pytest.approx(1.0)
    assert T.class_weights_from_counts(np.array([1, 2]), "none") is None


def test_ignored_pixels_change_nothing_in_the_loss():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8, 8)
    target = torch.randint(0, 3, (2, 8, 8))
    target[:, :3] = 255
    loss_fn = T.make_loss(3, np.array([0.5, 1.0, 2.0], dtype=np.float32), ce_weight=1.0, dice_weight=1.0)
    base = loss_fn(logits, target)
    changed = logits.clone()
    changed[:, :, :3] = torch.randn(2, 3, 3, 8) * 10  # anything at ignored pixels
    assert float(loss_fn(changed, target)) == pytest.approx(float(base), rel=1e-6)
    # ...but the same change on labelled pixels does change it
    changed2 = logits.clone()
    changed2[:, :, 4:] = torch.randn(2, 3, 4, 8) * 10
    assert abs(float(loss_fn(changed2, target)) - float(base)) > 1e-3
    # class weights matter: up-weighting the class of the worst pixels raises the CE part
    ce_only = T.make_loss(3, None, 1.0, 0.0)
    assert float(ce_only(logits, target)) == pytest.approx(
        float(torch.nn.functional.cross_entropy(logits, target, ignore_index=255)), rel=1e-6
    )
    all_ignored = torch.full((2, 8, 8), 255)
    assert float(loss_fn(logits, all_ignored)) == 0.0


def test_lr_schedule_warms_up_then_decays():
    f = [T.lr_factor(s, 10, 100) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[10:], f[11:], strict=False))
    assert f[-1] < 0.05
    assert T.lr_factor(20, 10, 100, progress=1.0) == pytest.approx(0.02)


def test_split_scan_and_chips_never_straddle_validation(tmp_path):
    ip, lp = _scene(tmp_path)
    cfg = _config(ip, lp, val_block_px=32, val_fraction=0.3)
    regions, norm = T.build_regions(cfg, str(tmp_path / "work"), np.random.default_rng(0), False)
    (reg,) = regions
    assert reg.val_blocks.shape == (5, 5) and reg.val_blocks.sum() == 8  # round(0.3 * 25)
    assert len(norm.mean) == 5 and norm.mean[3] > norm.mean[0]  # nir brighter than blue on land
    scan = T.scan_labels(regions, 2, np.random.default_rng(1))
    assert scan.step_px == 1
    # every scanned pixel is in a training block and has the class it is pooled under
    for c in (0, 1):
        pts = scan.points[c]
        assert len(pts) > 0
        assert not reg.val_blocks[pts[:, 1] // 32, pts[:, 2] // 32].any()
        labs = np.array([reg.read_labels(Window(int(y), int(x), 1, 1))[0, 0] for _, y, x in pts[:50]])
        assert (labs == c).all()
    sampler = T.ChipSampler(regions, scan, 48, class_aware=0.5)
    assert sampler.rare == [1]
    rng = np.random.default_rng(2)
    for _ in range(300):
        _, win = sampler.sample(rng)
        assert not reg.blocks_of(win).any(), win
        x, y = T.read_chip(reg, win, 48, 5)
        assert x.shape == (5, 48, 48) and y.shape == (48, 48)
    # the nodata strip is labelled 255 and normalised to 0
    x, y = T.read_chip(reg, Window(0, 0, 48, 48), 48, 5)
    assert (y[:, :6] == 255).all() and (x[:, :, :6] == 0).all()


def test_train_writes_bundle_metrics_and_report(tmp_path):
    ip, lp = _scene(tmp_path)
    cfg = _config(ip, lp)
    res = T.train(cfg, str(tmp_path / "model"), work_dir=str(tmp_path / "work"))
    out = tmp_path / "model"
    for name in ("model.safetensors", "model.json", "training_report.png", "checkpoint.safetensors", "checkpoint.json"):
        assert (out / name).is_file(), name
    assert res.epochs_run == 2 and len(res.history) == 2 and res.best_epoch in (1, 2)
    meta = json.loads((out / "model.json").read_text())
    assert meta["in_bands"] == list(BANDS) and meta["stride"] == 8 and meta["tile_px"] == 64
    assert [c["name"] for c in meta["classes"]] == ["background", "water", "cloud"]  # the embedded flood classes
    assert meta["input"]["indices"] == list(cfg.model.indices)
    m = meta["metrics"]
    assert set(m["per_class"]) == {"background", "water", "cloud"}  # cloud: no pixels in this scene
    assert set(m["per_class"]["water"]) >= {"iou", "f1", "precision", "recall"}
    assert np.array(m["confusion_matrix"]).shape == (3, 3)
    assert m["n_pixels"] > 0 and 0 <= m["pixel_accuracy"] <= 1
    assert m == res.metrics
    # the norm recorded is the tiles' stats (nodata excluded: blue mean near 800-900, not pulled to 0)
    assert 700 < meta["norm"]["mean"][0] < 1000
    model, mm = load_bundle(str(out))
    assert mm.model_id.startswith("flood-")
    assert meta["training"]["training"]["chip_px"] == 64


def test_train_from_vector_labels(tmp_path):
    import geopandas as gpd
    from shapely import box

    ip, _ = _scene(tmp_path)
    # the stripe x in (120, 132) px as a polygon, everything else background via "__other__"
    t = Affine(10, 0, 600000, 0, -10, 5000000)
    x0, y1 = t @ (121, 0)
    x1, y0 = t @ (132, 160)
    gpd.GeoDataFrame({"cls": ["river"]}, geometry=[box(x0, y0, x1, y1)], crs="EPSG:32633").to_file(tmp_path / "v.gpkg")
    cfg = _config(ip, str(tmp_path / "v.gpkg"), epochs=1)
    cfg = load_config(None, **{**cfg.model_dump(exclude={"training"}), "training": {
        **cfg.training.model_dump(), "scenes": [{"image": ip, "labels": str(tmp_path / "v.gpkg"),
                                                 "class_attribute": "cls", "class_map": {"river": 1, "__other__": 0}}]}})
    res = T.train(cfg, str(tmp_path / "model"), work_dir=str(tmp_path / "work"))
    lab = np.asarray(__import__("zarr").open_array(str(tmp_path / "work" / "scene" / "labels.zarr"))[:])
    assert (lab[:, 121:132] == 1).all() and (lab[:, :121] == 0).all() and (lab[:, 132:] == 0).all()
    assert res.epochs_run == 1 and res.metrics["per_class"]["water"]["support"] > 0


def test_train_from_rgb_pair_folders(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    colours = {0: (60, 16, 152), 1: (226, 169, 41)}
    for t in ("a", "b"):
        for k in range(2):
            (tmp_path / t / "images").mkdir(parents=True, exist_ok=True)
            (tmp_path / t / "masks").mkdir(parents=True, exist_ok=True)
            lab = np.zeros((72, 96), dtype=np.uint8)
            lab[10 + 5 * k : 40, 30:70] = 1
            img = np.where(lab[..., None] == 1, [40, 60, 160], [200, 180, 150]) + rng.normal(0, 8, (72, 96, 3))
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(tmp_path / t / "images" / f"p{k}.jpg", quality=95)
            mask = np.zeros((72, 96, 3), dtype=np.uint8)
            for c, col in colours.items():
                mask[lab == c] = col
            mask[:4] = (155, 155, 155)  # unlabeled
            Image.fromarray(mask).save(tmp_path / t / "masks" / f"p{k}.png")
    cfg = load_config(
        None,
        bands=["red", "green", "blue"],
        classes=[{"name": "building", "color": "#3c1098", "rgb": [60, 16, 152]},
                 {"name": "water", "color": "#e2a929", "rgb": [226, 169, 41]}],
        model={"encoder": "resnet18", "encoder_depth": 3, "decoder_channels": [16, 8, 4]},
        training={"pairs": {"root": str(tmp_path), "train_globs": ["a/images/*.jpg"], "val_globs": ["b/images/*.jpg"],
                            "ignore_rgb": [[155, 155, 155], [0, 0, 0]]},
                  "chip_px": 48, "batch_size": 2, "epochs": 1, "steps_per_epoch": 2, "val_block_px": 64},
    )
    res = T.train(cfg, str(tmp_path / "model"), work_dir=str(tmp_path / "work"))
    meta = json.loads((tmp_path / "model" / "model.json").read_text())
    assert meta["in_bands"] == ["red", "green", "blue"]
    assert 100 < meta["norm"]["mean"][0] < 200  # mean red of the training images (0-255)
    # validation is the whole of folder b: 2 images, unlabeled rows ignored
    assert res.metrics["n_pixels"] == 2 * (72 - 4) * 96


def test_val_scenes_hold_out_whole_scenes(tmp_path):
    a = tmp_path / "a"
    b = tmp_path / "b"
    a.mkdir()
    b.mkdir()
    ip, lp = _scene(a, size=96, seed=1)
    vp, vl = _scene(b, size=96, seed=2)
    cfg = _config(ip, lp, val_scenes=[{"image": vp, "labels": vl}], val_block_px=32)
    regions, norm = T.build_regions(cfg, str(tmp_path / "work"), np.random.default_rng(0), False)
    assert [r.name for r in regions] == ["scene", "scene_2"]
    assert not regions[0].val_blocks.any() and regions[1].val_blocks.all()
    wins = T.val_windows(regions, 0)
    assert {ri for ri, _ in wins} == {1} and len(wins) == 9
    scan = T.scan_labels(regions, 2, np.random.default_rng(1))
    sampler = T.ChipSampler(regions, scan, 32, 0.5)
    rng = np.random.default_rng(3)
    assert {sampler.sample(rng)[0] for _ in range(100)} == {0}


def test_chunk_cache_assembles_windows_across_chunks():
    import zarr

    rng = np.random.default_rng(0)
    data = rng.integers(0, 1000, size=(3, 100, 130)).astype(np.uint16)
    arr = zarr.create_array(store={}, shape=data.shape, chunks=(3, 32, 32), dtype="uint16")
    arr[:] = data
    cache = T.ChunkCache(arr, 32, max_bytes=4 * 3 * 32 * 32 * 2)  # room for 4 chunks only
    for _ in range(50):
        r0, c0 = int(rng.integers(0, 99)), int(rng.integers(0, 129))
        h, w = int(rng.integers(1, 101 - r0)), int(rng.integers(1, 131 - c0))
        np.testing.assert_array_equal(cache.read(Window(r0, c0, h, w)), data[:, r0 : r0 + h, c0 : c0 + w])
    assert len(cache) <= 4


def test_ignore_values_are_left_out_of_loss_and_validation(tmp_path):
    """Sen1Floods11-style int16 labels: -1 = not labelled, 0 = land, 1 = water."""
    from unetgeo.errors import LabelError

    ip, lp = _scene(tmp_path)
    with rasterio.open(lp) as ds:
        lab = ds.read(1).astype(np.int16)
    lab[lab == 255] = 0
    lab[100:130, 20:100] = -1  # an unlabelled patch
    lp16 = _write_labels(tmp_path / "s1f11.tif", lab, nodata=None)
    with pytest.raises(LabelError, match=r"values \[-1\].*ignore_values"):
        T.build_regions(_config(ip, lp16), str(tmp_path / "w0"), np.random.default_rng(0), False)
    for extra in ({"ignore_values": [-1]}, {"class_map": {"-1": 255, "0": 0, "1": 1}}):
        cfg = _config(ip, lp16, val_block_px=32, val_fraction=0.3)
        cfg = load_config(None, **{**cfg.model_dump(exclude={"training"}), "training": {
            **cfg.training.model_dump(), "scenes": [{"image": ip, "labels": lp16, **extra}]}})
        work = tmp_path / f"w{len(extra)}{'class_map' in extra}"
        (reg,), _ = T.build_regions(cfg, str(work), np.random.default_rng([0, 1]), False)  # train's split rng
        got = reg.read_labels(Window(0, 0, 160, 160))
        assert (got[100:130, 20:100] == 255).all() and (got[:, :6] == 255).all()
        np.testing.assert_array_equal(got[:100, 6:], lab[:100, 6:])
    res = T.train(cfg, str(tmp_path / "model"), work_dir=str(work))
    val = reg.val_blocks.repeat(32, 0).repeat(32, 1)
    assert res.metrics["n_pixels"] == int((val & (got != 255)).sum())  # -1 and nodata pixels not scored


def test_one_class_vector_labels_are_refused_with_the_background_rule(tmp_path):
    import geopandas as gpd
    from shapely import box

    from unetgeo.errors import LabelError

    ip, _ = _scene(tmp_path)
    gpd.GeoDataFrame({"cls": ["river"]}, geometry=[box(601210, 4998400, 601320, 5000000)], crs="EPSG:32633").to_file(
        tmp_path / "v.gpkg")
    cfg = _config(ip, str(tmp_path / "v.gpkg"))
    cfg = load_config(None, **{**cfg.model_dump(exclude={"training"}), "training": {
        **cfg.training.model_dump(), "scenes": [{"image": ip, "labels": str(tmp_path / "v.gpkg"),
                                                 "class_attribute": "cls", "class_map": {"river": 1}}]}})
    with pytest.raises(LabelError) as e:
        T.build_regions(cfg, str(tmp_path / "work"), np.random.default_rng(0), False)
    msg = str(e.value)
    assert "v.gpkg" in msg and "['water']" in msg and '"__other__: 0"' in msg and "'background'" in msg


def _block_labels(tmp_path, water_cols: slice) -> str:
    lab = np.zeros((160, 160), dtype=np.uint8)
    lab[0:32, water_cols] = 1
    return _write_labels(tmp_path / f"lab{water_cols.stop}.tif", lab)


@pytest.mark.parametrize("seed", range(6))
def test_block_split_gives_every_labelled_class_validation_blocks(tmp_path, seed):
    ip, _ = _scene(tmp_path)
    lp = _block_labels(tmp_path, slice(64, 128))  # water in blocks (0, 2) and (0, 3) of 25
    cfg = _config(ip, lp, val_block_px=32, val_fraction=0.2)
    (reg,), _ = T.build_regions(cfg, str(tmp_path / "work"), np.random.default_rng(seed), False)
    assert reg.val_blocks[0, 2] != reg.val_blocks[0, 3]  # one water block on each side
    assert 5 <= reg.val_blocks.sum() <= 6


def test_block_split_stops_with_labelled_pixels_per_split(tmp_path):
    from unetgeo.errors import LabelError

    ip, _ = _scene(tmp_path)
    lp = _block_labels(tmp_path, slice(64, 96))  # all water in one block
    cfg = _config(ip, lp, val_block_px=32, val_fraction=0.2)
    with pytest.raises(LabelError) as e:
        T.build_regions(cfg, str(tmp_path / "work"), np.random.default_rng(0), False)
    msg = str(e.value)
    assert "class 'water'" in msg and "val_block_px=32" in msg
    n_train, n_val = (int(v) for v in msg.split("background ")[1].split(",")[0].split("/"))
    assert n_train + n_val == 160 * (160 - 6) - 32 * 32 and n_val > 0  # every labelled background pixel (exact scan)
    assert "water 1024/0" in msg  # the whole 32 x 32 water block is in training
