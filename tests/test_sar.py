"""Synthetic Sentinel-1 scenes (unetgeo.synthetic.sar) and the all-weather flood path (configs/flood_s1.yaml)."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from unetgeo.grid import Window, tile_windows
from unetgeo.synthetic import SAR_BAND_NAMES, make_scene, scene_layout
from unetgeo.synthetic.sar import (
    ENL,
    THETA_FAR_DEG,
    THETA_NEAR_DEG,
    incidence_deg,
    render_sar_window,
    sar_scene,
    speckle,
)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import real_water as rw  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
WATER, VEG, BARE, BUILT = 0, 1, 2, 3
# cited ranges of the class medians, dB (module docstring of unetgeo.synthetic.sar)
VV_RANGE = {WATER: (-25, -18), VEG: (-10, -6), BARE: (-14, -8), BUILT: (-2, 5)}
VH_RANGE = {WATER: (-32, -25), VEG: (-18, -12), BARE: (-22, -15), BUILT: (-14, -6)}


def _iou(pred: np.ndarray, truth: np.ndarray, valid: np.ndarray) -> float:
    p, t = pred & valid, truth & valid
    return float((p & t).sum() / max((p | t).sum(), 1))


@pytest.fixture(scope="module")
def rendered() -> list[tuple[np.ndarray, np.ndarray]]:
    """Three calibrated 384 px scenes with a moderate flood: ``[(data (2, h, w) dB, landuse)]``."""
    out = []
    for seed in (0, 1, 4):
        lay = scene_layout(seed, 384, 384)
        out.append(render_sar_window(lay, Window(0, 0, 384, 384), 1.3))
    return out


def test_every_surface_kind_has_its_backscatter() -> None:
    from unetgeo.synthetic.sar import SIGMA0
    from unetgeo.synthetic.spectra import SURFACES

    assert [s.name for s in SURFACES if s.name not in SIGMA0] == []
    for s in SURFACES:
        sig = SIGMA0[s.name]
        assert sig.vh_db < sig.vv_db and sig.slope_vv < 0 and sig.slope_vh < 0 and sig.source, s.name


def test_class_medians_are_in_the_cited_ranges(rendered) -> None:
    for data, lu in rendered:
        assert data.dtype == np.float32 and data.shape[0] == 2
        med = {}
        for c in (WATER, VEG, BARE, BUILT):
            m = lu == c
            assert m.sum() > 500, c
            vv, vh = float(np.median(data[0][m])), float(np.median(data[1][m]))
            med[c] = vv
            assert VV_RANGE[c][0] <= vv <= VV_RANGE[c][1], (c, vv)
            assert VH_RANGE[c][0] <= vh <= VH_RANGE[c][1], (c, vh)
            assert vh < vv - 4.0, (c, vv, vh)  # cross-pol is weaker than co-pol
        assert med[WATER] < min(med[VEG], med[BARE], med[BUILT]) - 6.0  # water is dark
        assert med[BUILT] > max(med[VEG], med[BARE]) + 4.0  # towns are bright (double bounce)
        valid = lu != 255
        assert np.isfinite(data[:, valid]).all() and np.isnan(data[:, ~valid]).all()


def test_backscatter_falls_with_incidence_angle_more_for_water() -> None:
    lay = scene_layout(1, 384, 384, footprint=False, calibrated=False)
    xs = np.arange(384) + 0.5
    sc = sar_scene(lay)
    th = incidence_deg(lay, xs, sc)
    assert abs(th.min() - THETA_NEAR_DEG) < 0.1 and abs(th.max() - THETA_FAR_DEG) < 0.1
    assert (np.diff(th) > 0).all() == sc.ascending and (np.diff(th) < 0).all() != sc.ascending
    # the same ground seen from the other pass: the angle changes, the speckle does not
    calm = dataclasses.replace(sc, wind_share=0.0)
    other = dataclasses.replace(calm, ascending=not sc.ascending)
    a, lu = render_sar_window(lay, Window(0, 0, 384, 384), 2.0, scene=calm)
    b, _ = render_sar_window(lay, Window(0, 0, 384, 384), 2.0, scene=other)
    dth = np.broadcast_to((th - incidence_deg(lay, xs, other))[None, :], lu.shape)
    slopes = {}
    for c in (WATER, VEG, BARE, BUILT):
        m = (lu == c) & (np.abs(dth) > 4)
        slopes[c] = float(np.median((a[0] - b[0])[m] / dth[m]))  # dB per degree (VV)
    assert all(-0.21 <= slopes[c] <= -0.09 for c in (VEG, BARE, BUILT)), slopes  # land: ~0.1-0.2 dB/deg
    assert -0.5 < slopes[WATER] < -0.3, slopes  # calm water falls off faster (specular)
    water = (lu == WATER) & (np.abs(dth) > 4)
    assert float(np.median(((a[1] - b[1]) / dth)[water])) < -0.2  # VH too


def test_speckle_is_unit_mean_gamma_with_the_enl() -> None:
    vv, vh = speckle(Window(0, 0, 400, 400), 12345)
    for s in (vv, vh):
        assert abs(float(s.mean()) - 1.0) < 0.01
        assert abs(float(s.mean() ** 2 / s.var()) - ENL) < 0.2  # equivalent number of looks
        assert float(s.min()) > 0
    assert abs(float(np.corrcoef(vv.ravel(), vh.ravel())[0, 1])) < 0.02  # independent in VV and VH


def test_calibration_offset_and_calibrated_false() -> None:
    off = [sar_scene(scene_layout(s, 256, 256)).offset_db for s in range(12)]
    assert all(-1.31 <= v <= 1.31 for o in off for v in o) and np.std([o[0] for o in off]) > 0.2
    assert sar_scene(scene_layout(3, 256, 256, calibrated=False)).offset_db == (0.0, 0.0)


@pytest.mark.parametrize("block", [37, 100])
def test_any_window_renders_like_the_whole_scene(block: int) -> None:
    lay = scene_layout(5, 180, 220)
    full, full_lu = render_sar_window(lay, Window(0, 0, 180, 220), 1.6)
    for win in reversed(tile_windows(180, 220, block)):  # any order
        data, lu = render_sar_window(lay, win, 1.6)
        np.testing.assert_array_equal(data, full[:, win.slices[0], win.slices[1]])
        np.testing.assert_array_equal(lu, full_lu[win.slices])


def test_labels_are_those_of_the_optical_scene() -> None:
    from unetgeo.synthetic import render_window

    lay = scene_layout(8, 200, 200)
    _, lu_sar = render_sar_window(lay, Window(0, 0, 200, 200), 1.3)
    _, lu_opt = render_window(lay, Window(0, 0, 200, 200), 1.3)
    np.testing.assert_array_equal(lu_sar, lu_opt)


def test_make_scene_s1_writes_two_band_float32_db_with_nan_nodata(tmp_path) -> None:
    s = make_scene(str(tmp_path / "s1.tif"), size_px=(150, 170), seed=2, flood_level=1.5, sensor="s1",
                   block_px=64, dtype="uint16", cloud_fraction=0.3)  # dtype and clouds do not apply to radar
    assert s.band_names == SAR_BAND_NAMES == ("vv", "vh")
    with rasterio.open(s.image_uri) as ds:
        assert (ds.count, ds.dtypes, ds.descriptions) == (2, ("float32", "float32"), ("vv", "vh"))
        assert ds.nodata is not None and np.isnan(ds.nodata)
        assert ds.tags()["units"] == "dB" and ds.crs.to_epsg() == 32633
        assert tuple(ds.transform)[:6] == (10.0, 0.0, 500000.0, 0.0, -10.0, 5400000.0)
        data = ds.read()
    with rasterio.open(s.labels_uri) as ds:
        lab = ds.read(1)
    lay = scene_layout(2, 150, 170)
    want, lu = render_sar_window(lay, Window(0, 0, 150, 170), 1.5)
    np.testing.assert_array_equal(data, want)  # block by block = the whole window
    assert set(np.unique(lab)) <= {0, 1, 255} and ((lab == 1) == (lu == WATER)).all()
    assert (np.isnan(data[0]) == (lab == 255)).all()
    assert -30 < float(np.nanmedian(data[0])) < 0


def test_vv_otsu_baseline_finds_the_synthetic_water() -> None:
    ious = []
    for seed in (1, 2, 5):
        lay = scene_layout(seed, 384, 384)
        data, lu = render_sar_window(lay, Window(0, 0, 384, 384), 2.0)
        valid = lu != 255
        truth = lu == WATER
        assert truth[valid].mean() > 0.25  # Otsu needs a bimodal histogram: a large flood
        ious.append(_iou(rw.baseline_masks(data, valid, sar=True)["VV+Otsu"], truth, valid))
    assert min(ious) > 0.7, ious


def test_flood_s1_config_trains_and_predicts_end_to_end(tmp_path) -> None:
    """~20 s on 2 cores: a 320 px S1 training scene, 2 x 10 steps of a depth-3 U-Net, a 256 px post scene."""
    from unetgeo.config import load_config
    from unetgeo.pipeline import make_run, run_scene
    from unetgeo.train import train

    base = load_config("flood_s1")
    assert base.bands == ("vv", "vh") and base.input.sensor == "s1" and base.class_names == ["background", "water"]
    train_s = make_scene(str(tmp_path / "train.tif"), size_px=320, seed=9, flood_level=1.3, sensor="s1")
    post = make_scene(str(tmp_path / "post.tif"), size_px=256, seed=12, flood_level=2.0, sensor="s1",
                      origin_xy=(503000.0, 5400000.0))
    cfg = load_config(
        ROOT / "configs" / "flood_s1.yaml",
        model={"arch": "Unet", "encoder": "resnet18", "encoder_depth": 3, "decoder_channels": [16, 8, 8]},
        tiling={"tile_px": 64},
        training={"scenes": [{"image": train_s.image_uri, "labels": train_s.labels_uri}], "chip_px": 64,
                  "batch_size": 4, "epochs": 2, "steps_per_epoch": 10, "val_block_px": 64, "val_fraction": 0.2,
                  "warmup_steps": 2, "lr": 3e-3, "device": "cpu", "num_threads": 2, "seed": 0},
    )
    n = torch.get_num_threads()
    try:
        res = train(cfg, str(tmp_path / "model"), work_dir=str(tmp_path / "work"))
    finally:
        torch.set_num_threads(n)
    meta = json.loads((tmp_path / "model" / "model.json").read_text())
    assert meta["in_bands"] == ["vv", "vh"]
    assert -20 < meta["norm"]["mean"][0] < -5 and meta["norm"]["mean"][1] < meta["norm"]["mean"][0]  # dB
    assert res.metrics["per_class"]["water"]["support"] > 0

    out = tmp_path / "run"
    summary = run_scene(make_run(post.image_uri, str(tmp_path / "model"), str(out), config="flood_s1",
                                 tile_px=64, halo_px=16, device="cpu"))
    assert summary["input_check"]["ok"], summary["input_check"]
    for name in ("classes.tif", "confidence.tif", "polygons.gpkg", "summary.json"):
        assert (out / name).is_file(), name
    with rasterio.open(post.image_uri) as src, rasterio.open(out / "classes.tif") as ds:
        assert (ds.crs, ds.transform, ds.shape) == (src.crs, src.transform, src.shape)
        cls = ds.read(1)
    with rasterio.open(post.labels_uri) as ds:
        truth = ds.read(1)
    valid = truth != 255
    assert (cls[~valid] == 255).all() and (cls[valid] != 255).all()
    iou = _iou(cls == 1, truth == 1, valid)
    # all-water would score the water share (~0.4); 80 chips of training give 0.88-0.98 (training seeds 0-3)
    assert iou > 0.75, iou
