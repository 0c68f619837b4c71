"""Undeclared nodata (a zero fill outside the footprint) is detected, masked and never classified."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from tinymodel import BANDS, write_tiny_model

from unetgeo.io.store import open_store
from unetgeo.tiling import ReadOptions, make_tiles


def _scene_with_fill(path: Path, fill_cols: int = 40, size: int = 128) -> Path:
    rng = np.random.default_rng(1)
    data = rng.integers(600, 1600, (len(BANDS), size, size)).astype(np.uint16)
    data[:, :, :fill_cols] = 0  # outside the footprint: 0 in every band, no nodata declared
    data[0, 60, 100] = 0  # a single zero in one band inside: stays valid
    with rasterio.open(path, "w", driver="GTiff", height=size, width=size, count=len(BANDS), dtype="uint16",
                       crs="EPSG:32633", transform=from_origin(600000, 5300000, 10, 10)) as ds:
        ds.write(data)
        for i, b in enumerate(BANDS):
            ds.set_band_description(i + 1, b)
    return path


def test_undeclared_zero_fill_is_detected_and_masked(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    src = _scene_with_fill(tmp_path / "s.tif")
    with caplog.at_level(logging.WARNING, logger="unetgeo"):
        r = make_tiles(str(src), str(tmp_path / "t.zarr"), tile_px=64)
    msgs = [m for m in caplog.messages if "no nodata is declared" in m]
    assert len(msgs) == 1 and "31.2 %" in msgs[0]
    valid = open_store(r.valid_uri)[:]
    assert not valid[:, :40].any() and valid[:, 40:].all()
    assert dict(open_store(r.tiles_uri).attrs)["nodata_detected"] == 0.0
    assert r.stats["blue"]["valid_pixels"] == 128 * 88


def test_nodata_none_keeps_the_fill_and_a_given_value_masks_it(tmp_path: Path) -> None:
    src = _scene_with_fill(tmp_path / "s.tif")
    r = make_tiles(str(src), str(tmp_path / "a.zarr"), tile_px=64, read=ReadOptions(nodata="none"))
    assert open_store(r.valid_uri)[:].all()
    r = make_tiles(str(src), str(tmp_path / "b.zarr"), tile_px=64, read=ReadOptions(nodata=0, detect_nodata=False))
    assert not open_store(r.valid_uri)[:, :40].any()


def test_small_interior_zero_patch_is_not_nodata(tmp_path: Path) -> None:
    src = _scene_with_fill(tmp_path / "s.tif", fill_cols=0)
    with rasterio.open(src, "r+") as ds:
        ds.write(np.zeros((len(BANDS), 20, 20), np.uint16), window=((50, 70), (50, 70)))  # 2.4 %, not at the edge
    r = make_tiles(str(src), str(tmp_path / "t.zarr"), tile_px=64)
    assert open_store(r.valid_uri)[:].all()


@pytest.mark.slow
def test_fill_gets_no_class_and_no_polygon(tmp_path: Path) -> None:
    from unetgeo.pipeline import make_run, run_scene

    src = _scene_with_fill(tmp_path / "s.tif")
    model = write_tiny_model(tmp_path / "model", calibrate_scene=str(src))
    out = tmp_path / "run"
    summary = run_scene(make_run(str(src), str(model), str(out), tile_px=64, halo_px=16))
    with rasterio.open(out / "classes.tif") as ds:
        cls = ds.read(1)
    assert (cls[:, :40] == 255).all() and (cls[:, 40:] != 255).all()
    import geopandas as gpd

    polys = gpd.read_file(out / "polygons.shp")
    x_fill = 600000 + 40 * 10
    assert len(polys) and (polys.geometry.bounds["minx"] >= x_fill - 1e-6).all()
    pq = gpd.read_parquet(out / "polygons.parquet")  # the run's GeoParquet holds the same polygons
    assert len(pq) == len(polys) and pq.area.sum() == pytest.approx(polys.area.sum())
    assert summary["input_check"]["ok"] is not None


@pytest.mark.realdata
def test_real_sentinel2_tile_with_undeclared_nodata(shared_data: Path, tmp_path: Path) -> None:
    d = shared_data / "optical" / "riotiler_s2l1c_19UDP_900m"
    files = [str(d / f"{b}.jp2") for b in ("B02", "B03", "B04", "B08")]
    r = make_tiles(files, str(tmp_path / "t.zarr"), tile_px=64)
    valid = open_store(r.valid_uri)[:]
    share = 1 - valid.mean()
    assert 0.25 < share < 0.5  # README: 37 % nodata
    assert valid.any() and r.stats[r.band_names[0]]["valid_pixels"] == int(valid.sum())
