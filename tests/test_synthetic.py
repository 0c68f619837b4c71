"""Tests of the synthetic scene generator: determinism, georeferencing, labels, footprint, floods."""

from __future__ import annotations

import math

import numpy as np
import pytest

from unetgeo.errors import InputError
from unetgeo.grid import Window, same_grid, tile_windows
from unetgeo.io.crs import crs_equal
from unetgeo.io.scene import SceneReader, open_scene
from unetgeo.io.uri import sha256_of
from unetgeo.synthetic import (
    BAND_NAMES,
    LABEL_NODATA,
    SyntheticScene,
    make_flood_pair,
    make_scene,
    render_window,
    scene_layout,
)

WATER, VEG, BARE, BUILT = 0, 1, 2, 3


def _read_all(uri: str) -> tuple[np.ndarray, np.ndarray]:
    info = open_scene(uri)
    with SceneReader(uri) as r:
        return r.read(Window(0, 0, info.grid.height, info.grid.width))


@pytest.fixture(scope="module")
def landuse_scene(tmp_path_factory: pytest.TempPathFactory) -> tuple[SyntheticScene, np.ndarray, np.ndarray]:
    d = tmp_path_factory.mktemp("landuse")
    scene = make_scene(str(d / "s.tif"), size_px=384, seed=7, labels="landuse")
    img, _ = _read_all(scene.image_uri)
    lab, _ = _read_all(scene.labels_uri)
    return scene, img, lab[0]


def test_same_seed_gives_identical_bytes_and_other_seed_differs(tmp_path) -> None:
    a = make_scene(str(tmp_path / "a.tif"), size_px=(96, 128), seed=3)
    b = make_scene(str(tmp_path / "b.tif"), size_px=(96, 128), seed=3)
    c = make_scene(str(tmp_path / "c.tif"), size_px=(96, 128), seed=4)
    assert sha256_of(a.image_uri) == sha256_of(b.image_uri)
    assert sha256_of(a.labels_uri) == sha256_of(b.labels_uri)
    assert sha256_of(a.image_uri) != sha256_of(c.image_uri)
    assert a.labels_uri == str(tmp_path / "a_labels.tif")  # default labels path
    assert not (tmp_path / "a.tif.tmp").exists()


def test_block_size_does_not_change_content(tmp_path) -> None:
    size = (300, 260)  # not a multiple of either block size
    s128 = make_scene(str(tmp_path / "s128.tif"), size_px=size, seed=11, flood_level=1.5, block_px=128)
    s256 = make_scene(str(tmp_path / "s256.tif"), size_px=size, seed=11, flood_level=1.5, block_px=256)
    for u1, u2 in ((s128.image_uri, s256.image_uri), (s128.labels_uri, s256.labels_uri)):
        a, va = _read_all(u1)
        b, vb = _read_all(u2)
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(va, vb)
    assert open_scene(s128.image_uri).block_shape == (128, 128)


@pytest.mark.parametrize("block", [37, 64, 100])
def test_any_window_renders_like_the_whole_scene(block: int) -> None:
    lay = scene_layout(5, 180, 220)
    full, full_lu = render_window(lay, Window(0, 0, 180, 220), 1.2)
    for win in tile_windows(180, 220, block):
        dn, lu = render_window(lay, win, 1.2)
        np.testing.assert_array_equal(dn, full[:, win.slices[0], win.slices[1]])
        np.testing.assert_array_equal(lu, full_lu[win.slices])


def test_georeferencing_and_declared_nodata(tmp_path) -> None:
    s = make_scene(str(tmp_path / "g.tif"), size_px=(64, 80), seed=1, origin_xy=(400000.0, 5000000.0), res_m=20.0)
    img = open_scene(s.image_uri)
    lab = open_scene(s.labels_uri)
    assert crs_equal(img.grid.crs_wkt, "EPSG:32633")
    assert img.grid.transform == (20.0, 0.0, 400000.0, 0.0, -20.0, 5000000.0)
    assert (img.grid.height, img.grid.width) == (64, 80)
    assert img.grid == s.grid
    assert img.dtype == "uint16" and img.nodata == 0 and img.mask_kind == "nodata"
    assert img.band_names == BAND_NAMES == s.band_names
    assert lab.dtype == "uint8" and lab.nodata == LABEL_NODATA and lab.count == 1
    same_grid(img.grid, lab.grid, "image", "labels", crs_equal=crs_equal)


def test_geographic_crs_uses_degrees(tmp_path) -> None:
    s = make_scene(str(tmp_path / "geo.tif"), size_px=64, crs="EPSG:4326")
    info = open_scene(s.image_uri)
    assert info.is_geographic
    assert info.grid.transform == pytest.approx((1e-4, 0.0, 15.0, 0.0, -1e-4, 48.75))
    s2 = make_scene(str(tmp_path / "geo2.tif"), size_px=32, crs="EPSG:4326", res_m=0.001, origin_xy=(-3.0, 40.0))
    assert open_scene(s2.image_uri).grid.transform == pytest.approx((0.001, 0.0, -3.0, 0.0, -0.001, 40.0))
    with pytest.raises(InputError, match="degrees"):
        make_scene(str(tmp_path / "bad.tif"), size_px=32, crs="EPSG:4326", res_m=10.0, origin_xy=(15.0, 48.0))


def test_landuse_classes_and_spectra_are_plausible(landuse_scene) -> None:
    _, img, lab = landuse_scene
    valid = lab != LABEL_NODATA
    n = valid.sum()
    frac = {c: (lab == c).sum() / n for c in (WATER, VEG, BARE, BUILT)}
    assert 0.005 < frac[WATER] < 0.3, frac
    assert frac[VEG] > 0.2 and frac[BARE] > 0.03 and frac[BUILT] > 0.01, frac
    assert set(np.unique(lab)) <= {WATER, VEG, BARE, BUILT, LABEL_NODATA}
    blue, green, red, nir, swir = (img[i].astype(float) for i in range(5))
    med = {c: {b: float(np.median(x[lab == c])) for b, x in zip(BAND_NAMES, (blue, green, red, nir, swir), strict=True)}
           for c in frac}
    assert med[WATER]["nir"] < 600 and med[WATER]["swir"] < 450  # water: dark in NIR/SWIR
    assert med[VEG]["nir"] > 2500 and med[VEG]["red"] < 700  # vegetation: red edge
    assert med[BARE]["swir"] > med[BARE]["nir"] > med[BARE]["red"] > med[BARE]["blue"]  # soil rises
    assert med[BUILT]["nir"] < 2 * med[BUILT]["blue"]  # built-up: flat spectrum
    # most water pixels have NIR below every vegetation median
    assert np.mean(nir[lab == WATER] < 1000) > 0.9


def test_footprint_nodata_outside(landuse_scene, tmp_path) -> None:
    scene, img, lab = landuse_scene
    outside = lab == LABEL_NODATA
    assert 0.02 < outside.mean() < 0.5
    assert (img[:, outside] == 0).all()
    assert (img[:, ~outside] >= 1).all()
    _, valid = _read_all(scene.image_uri)
    np.testing.assert_array_equal(valid, ~outside)
    # the cut is a straight line through one corner: that corner is outside, the opposite inside
    corners = [outside[0, 0], outside[0, -1], outside[-1, -1], outside[-1, 0]]
    assert sum(corners) == 1
    full = make_scene(str(tmp_path / "nofp.tif"), size_px=96, seed=7, footprint=False)
    lab2, _ = _read_all(full.labels_uri)
    assert (lab2 != LABEL_NODATA).all()


def test_flood_labels_match_landuse_water(tmp_path) -> None:
    f = make_scene(str(tmp_path / "f.tif"), size_px=200, seed=2, flood_level=1.0, labels="flood")
    lu = make_scene(str(tmp_path / "l.tif"), size_px=200, seed=2, flood_level=1.0, labels="landuse")
    a, _ = _read_all(f.labels_uri)
    b, _ = _read_all(lu.labels_uri)
    assert set(np.unique(a)) <= {0, 1, LABEL_NODATA}
    np.testing.assert_array_equal(a[0] == 1, b[0] == WATER)
    np.testing.assert_array_equal(a[0] == LABEL_NODATA, b[0] == LABEL_NODATA)
    assert sha256_of(f.image_uri) == sha256_of(lu.image_uri)  # labels kind does not change the image


def test_flood_pair_post_floods_more_and_contains_pre_water(tmp_path) -> None:
    pair = make_flood_pair(str(tmp_path / "pair"), size_px=256, seed=0)
    assert set(pair) == {"pre", "post", "train"}
    for key, s in pair.items():
        assert s.image_uri.endswith(f"{key}.tif") and s.labels_uri.endswith(f"{key}_labels.tif")
    assert pair["pre"].grid == pair["post"].grid and pair["pre"].seed == pair["post"].seed
    assert pair["post"].flood_level > pair["pre"].flood_level
    assert pair["train"].seed != pair["pre"].seed and pair["train"].grid != pair["pre"].grid
    pre = _read_all(pair["pre"].labels_uri)[0][0]
    post = _read_all(pair["post"].labels_uri)[0][0]
    train = _read_all(pair["train"].labels_uri)[0][0]
    valid = pre != LABEL_NODATA
    np.testing.assert_array_equal(valid, post != LABEL_NODATA)
    pre_w, post_w = (pre == 1) & valid, (post == 1) & valid
    assert 0.003 < pre_w.sum() / valid.sum() < 0.2
    assert (post_w & ~pre_w).sum() / valid.sum() > 0.03  # several % newly flooded
    assert (pre_w & ~post_w).sum() <= 0.001 * pre_w.sum()  # pre water (nearly) a subset of post
    assert 0.01 < ((train == 1).sum() / (train != LABEL_NODATA).sum()) < 0.7
    # newly flooded land looks like (muddy) water: NIR below green (NDWI > 0), unlike dry land
    post_img, _ = _read_all(pair["post"].image_uri)
    green, nir = post_img[1].astype(float), post_img[3].astype(float)
    ndwi = (green - nir) / (green + nir + 1e-9)
    assert np.median(ndwi[post_w & ~pre_w]) > 0.1
    assert np.median(ndwi[valid & ~post_w]) < -0.2


@pytest.mark.parametrize(("dtype", "nodata"), [("float32", math.nan), ("int16", -9999.0), ("uint16", 0.0)])
def test_dtype_variants_declare_nodata(tmp_path, dtype: str, nodata: float) -> None:
    ref = make_scene(str(tmp_path / "ref.tif"), size_px=96, seed=5)
    s = make_scene(str(tmp_path / f"{dtype}.tif"), size_px=96, seed=5, dtype=dtype)
    info = open_scene(s.image_uri)
    assert info.dtype == dtype
    if math.isnan(nodata):
        assert info.nodata is not None and math.isnan(info.nodata) and info.mask_kind == "nan"
    else:
        assert info.nodata == nodata and info.mask_kind == "nodata"
    data, valid = _read_all(s.image_uri)
    ref_data, ref_valid = _read_all(ref.image_uri)
    np.testing.assert_array_equal(valid, ref_valid)
    assert 0 < (~valid).sum() < valid.size
    if dtype == "float32":
        assert np.isnan(data[:, ~valid]).all()
        assert 0 < data[:, valid].min() and data[:, valid].max() < 1.0
        np.testing.assert_allclose(data[:, valid], ref_data[:, valid] * 1e-4, rtol=1e-6)
    else:
        assert (data[:, ~valid] == nodata).all()
        np.testing.assert_array_equal(data[:, valid], ref_data[:, valid])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"labels": "crops"}, "labels="),
        ({"dtype": "uint8"}, "dtype="),
        ({"block_px": 100}, "block_px=100"),
        ({"size_px": 0}, "size_px=0"),
        ({"crs": "EPSG:999999"}, "crs="),
        ({"res_m": -1.0}, "res_m=-1.0"),
    ],
)
def test_bad_arguments_raise_input_error(tmp_path, kwargs: dict, match: str) -> None:
    with pytest.raises(InputError, match=match):
        make_scene(str(tmp_path / "x.tif"), **{"size_px": 32, **kwargs})
    assert not (tmp_path / "x.tif").exists()
