"""flood_pixels / flood_raster / flood_polygons: truth table, georeferenced COG, polygons of flooded pixels."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import rasterio
from rio_cogeo.cogeo import cog_validate

from tests.test_vectorize import T10, write_raster
from unetgeo.errors import GridMismatchError, InputError
from unetgeo.flood import FLOOD_CLASS_COLORS, flood_pixels, flood_polygons, flood_raster


def test_flood_pixels_truth_table():
    now = np.array([[1, 1, 0, 1, 255, 1]], np.uint8)
    before = np.array([[0, 1, 0, 255, 0, 2]], np.uint8)
    ok = np.ones((1, 6), bool)
    out = flood_pixels(now, ok, before, ok, water_class_id=1)
    assert out.tolist() == [[1, 0, 0, 255, 255, 1]]
    out = flood_pixels(now, ok, before, np.array([[True, True, True, True, True, False]]), water_class_id=1)
    assert out.tolist() == [[1, 0, 0, 255, 255, 255]]
    mask = np.array([[0, 1, 0, 0, 0, 7]], np.uint8)  # nonzero = water before
    assert flood_pixels(now, ok, mask, ok, 1, reference_is_mask=True).tolist() == [[1, 0, 0, 1, 255, 0]]


def test_flood_raster_and_polygons(tmp_path):
    now = np.zeros((48, 48), np.uint8)
    now[10:30, 5:40] = 1  # water now
    now[0:2, :] = 255
    before = np.zeros((48, 48), np.uint8)
    before[10:30, 5:20] = 1  # the river already there
    before[40:, :] = 255
    cu = write_raster(tmp_path / "now.tif", now, block=16)
    ru = write_raster(tmp_path / "before.tif", before, block=16)
    fu = flood_raster(cu, ru, str(tmp_path / "flood.tif"), water_class_id=1, block_px=16)
    assert cog_validate(fu)[0]
    with rasterio.open(fu) as ds:
        f = ds.read(1)
        assert ds.crs.to_epsg() == 32633 and ds.transform == T10 and ds.nodata == 255
        assert ds.colormap(1)[1][:3] == (0xE3, 0x1A, 0x1C) and FLOOD_CLASS_COLORS[1] == "#e31a1c"
    expected = np.zeros_like(now)
    expected[10:30, 20:40] = 1
    expected[0:2, :] = 255
    expected[40:, :] = 255
    np.testing.assert_array_equal(f, expected)
    assert (tmp_path / "flood.qml").exists()
    res = flood_polygons(fu, str(tmp_path / "flood.gpkg"), shapefile=False)
    assert res.counts == {"flooded": 1}
    assert list(pyogrio.list_layers(res.out_uri)[:, 0]) == ["flooded"]
    df = gpd.read_file(res.out_uri, layer="flooded")
    assert df["area_m2"].iloc[0] == 20 * 20 * 100.0 and df["class_name"].iloc[0] == "flooded"


def test_cloud_pixels_are_never_dry_or_flooded(tmp_path):
    """The model's cloud class (id 2) is unknown (255) in flood.tif, in the scene and in the reference."""
    ok = np.ones((1, 5), bool)
    now = np.array([[1, 2, 0, 1, 2]], np.uint8)
    before = np.array([[0, 0, 2, 2, 1]], np.uint8)
    out = flood_pixels(now, ok, before, ok, water_class_id=1, unknown_class_ids=(2,))
    assert out.tolist() == [[1, 255, 255, 255, 255]]
    # a cloudy synthetic post-flood scene: its label raster as the class raster, the pre-flood labels as reference
    from unetgeo.synthetic import make_flood_pair

    pair = make_flood_pair(str(tmp_path / "pair"), size_px=192, seed=5, post_cloud_fraction=0.3)
    fu = flood_raster(pair["post"].labels_uri, pair["pre"].labels_uri, str(tmp_path / "flood.tif"), water_class_id=1,
                      unknown_class_ids=(2,), block_px=64)
    with rasterio.open(fu) as ds:
        f = ds.read(1)
        assert ds.tags()["unknown_class_ids"] == "[2]"
    with rasterio.open(pair["post"].labels_uri) as ds:
        post = ds.read(1)
    with rasterio.open(pair["pre"].labels_uri) as ds:
        pre = ds.read(1)
    cloud = post == 2
    assert 0.15 < cloud.mean() < 0.45
    assert np.all(f[cloud] == 255)  # never dry (0), never flooded (1)
    clear = ~cloud & (post != 255) & (pre != 255)
    np.testing.assert_array_equal(f[clear], ((post == 1) & (pre != 1))[clear].astype(np.uint8))
    assert np.count_nonzero(f == 1) > 0 and np.count_nonzero(f == 0) > 0


def test_flood_raster_refuses_another_grid(tmp_path):
    a = np.zeros((32, 32), np.uint8)
    cu = write_raster(tmp_path / "now.tif", a)
    ru = write_raster(tmp_path / "ref.tif", a, crs="EPSG:32632")
    with pytest.raises(GridMismatchError, match="CRS"):
        flood_raster(cu, ru, str(tmp_path / "flood.tif"), water_class_id=1)
    assert not (tmp_path / "flood.tif").exists()
    with pytest.raises(InputError):
        flood_raster(cu, cu, str(tmp_path / "flood.tif"), water_class_id=255)
