"""stitch: probs.zarr + valid.zarr -> classes.tif / confidence.tif COGs."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import rasterio
from pyproj import CRS
from rio_cogeo.cogeo import cog_validate

from unetgeo.errors import GridMismatchError, StoreError
from unetgeo.grid import Grid, iter_tile_windows
from unetgeo.io.cog import overview_factors
from unetgeo.io.store import ChunkedStoreWriter
from unetgeo.stitch import reduce_probs, stitch

WKT = CRS.from_epsg(32633).to_wkt()
NAMES = ["background", "water", "urban"]
COLORS = ["#d9d9d9", "#1f78b4", "#e31a1c"]


def make_stores(tmp_path, probs: np.ndarray, valid: np.ndarray, *, chunk_px: int = 128,
                transform=(10.0, 0.0, 500000.0, 0.0, -10.0, 6000000.0), valid_transform=None):
    """Write probs.zarr (class, y, x) float16 and valid.zarr (y, x) bool with grid attributes."""
    c, h, w = probs.shape
    grid = Grid(WKT, transform, h, w)
    attrs = {**grid.to_attrs(), "class_names": NAMES[:c], "class_colors": COLORS[:c], "model_id": "m-test",
             "source": {"uri": "/data/scene_a.tif", "sha256": "0"}}
    pw = ChunkedStoreWriter(str(tmp_path / "probs.zarr"), shape=probs.shape, chunk_px=chunk_px, dtype="float16",
                            fill_value=0, attrs=attrs, run_key="k")
    vgrid = Grid(WKT, valid_transform or transform, h, w)
    vw = ChunkedStoreWriter(str(tmp_path / "valid.zarr"), shape=valid.shape, chunk_px=chunk_px, dtype=bool,
                            fill_value=False, attrs=vgrid.to_attrs(), run_key="k")
    for win in iter_tile_windows(h, w, chunk_px):
        pw.write(win, probs[(slice(None), *win.slices)].astype(np.float16))
        vw.write(win, valid[win.slices])
    return pw.publish(), vw.publish()


def random_probs(rng, c, h, w):
    logits = rng.normal(size=(c, h, w)).astype(np.float32) * 3
    e = np.exp(logits - logits.max(0))
    return (e / e.sum(0)).astype(np.float16)


def test_reduce_probs_argmax_confidence_nodata():
    p = np.array([[[0.2, 0.7]], [[0.8, 0.3]]], dtype=np.float16)  # (2, 1, 2)
    cls, conf = reduce_probs(p, np.array([[True, True]]))
    assert cls.tolist() == [[1, 0]]
    assert conf.tolist() == [[80, 70]]
    p[0, 0, 1] = np.nan
    cls, conf = reduce_probs(p, np.array([[False, True]]))
    assert cls.tolist() == [[255, 255]] and conf.tolist() == [[255, 255]]


def test_stitch_writes_valid_cogs_on_the_store_grid(tmp_path):
    rng = np.random.default_rng(0)
    h, w = 600, 700  # > 512: the COG needs overviews
    probs = random_probs(rng, 3, h, w)
    valid = np.ones((h, w), bool)
    valid[:50, :] = False
    valid[300:320, 400:460] = False
    pu, vu = make_stores(tmp_path, probs, valid)
    res = stitch(pu, vu, str(tmp_path / "run"), write_probs=True)

    assert res.class_names == NAMES
    for uri in (res.classes_uri, res.confidence_uri, res.probs_tif_uri):
        ok, errors, _warnings = cog_validate(uri)
        assert ok, (uri, errors)
    expected_cls = np.argmax(probs.astype(np.float32), axis=0).astype(np.uint8)
    expected_cls[~valid] = 255
    expected_conf = np.rint(probs.astype(np.float32).max(0) * 100).astype(np.uint8)
    expected_conf[~valid] = 255
    with rasterio.open(res.classes_uri) as ds:
        assert ds.crs == rasterio.crs.CRS.from_wkt(WKT)
        assert tuple(ds.transform)[:6] == (10.0, 0.0, 500000.0, 0.0, -10.0, 6000000.0)
        assert (ds.height, ds.width, ds.dtypes[0], ds.nodata) == (h, w, "uint8", 255)
        assert ds.overviews(1) == overview_factors(h, w, 512) == [2]
        got = ds.read(1)
        np.testing.assert_array_equal(got, expected_cls)
        cmap = ds.colormap(1)
        assert cmap[1] == (0x1F, 0x78, 0xB4, 255)
        assert cmap[255][3] == 0
        assert json.loads(ds.tags()["class_names"]) == NAMES
        assert ds.tags()["model_id"] == "m-test" and ds.tags()["scene_id"] == "scene_a"
    with rasterio.open(res.confidence_uri) as ds:
        np.testing.assert_array_equal(ds.read(1), expected_conf)
        assert ds.nodata == 255
    with rasterio.open(res.probs_tif_uri) as ds:
        assert ds.count == 3 and ds.descriptions == tuple(NAMES) and ds.scales == (0.01,) * 3
        pr = ds.read()
        assert (pr[:, ~valid] == 255).all()
        np.testing.assert_allclose(pr[:, valid] / 100.0, probs.astype(np.float32)[:, valid], atol=0.006)
    assert res.class_pixels == {n: int((expected_cls == i).sum()) for i, n in enumerate(NAMES)}
    assert res.nodata_pixels == int((~valid).sum())
    # the legend sidecars: QGIS style and GDAL category names
    qml = ET.parse(tmp_path / "run" / "classes.qml").getroot()
    entries = qml.findall(".//paletteEntry")
    assert [(e.get("value"), e.get("label"), e.get("color")) for e in entries] == [
        (str(i), n, c) for i, (n, c) in enumerate(zip(NAMES, COLORS, strict=True))
    ]
    aux = ET.parse(tmp_path / "run" / "classes.tif.aux.xml").getroot()
    assert [c.text for c in aux.findall(".//Category")] == NAMES
    assert not list((tmp_path / "run").glob("*.tmp"))


def test_stitch_small_scene_without_overviews(tmp_path):
    rng = np.random.default_rng(1)
    probs = random_probs(rng, 2, 70, 90)
    valid = np.ones((70, 90), bool)
    pu, vu = make_stores(tmp_path, probs, valid, chunk_px=32)
    res = stitch(pu, vu, str(tmp_path / "run"))
    assert res.probs_tif_uri is None
    assert cog_validate(res.classes_uri)[0]
    with rasterio.open(res.classes_uri) as ds:
        np.testing.assert_array_equal(ds.read(1), np.argmax(probs.astype(np.float32), 0))


def test_stitch_refuses_stores_on_other_grids(tmp_path):
    probs = random_probs(np.random.default_rng(2), 2, 64, 64)
    pu, vu = make_stores(tmp_path, probs, np.ones((64, 64), bool), chunk_px=32,
                         valid_transform=(10.0, 0.0, 500010.0, 0.0, -10.0, 6000000.0))
    with pytest.raises(GridMismatchError, match="valid.zarr"):
        stitch(pu, vu, str(tmp_path / "run"))
    assert not (tmp_path / "run" / "classes.tif").exists()


def test_stitch_missing_store(tmp_path):
    with pytest.raises(StoreError):
        stitch(str(tmp_path / "nope.zarr"), str(tmp_path / "valid.zarr"), str(tmp_path / "run"))


def test_overview_factors():
    assert overview_factors(512, 512) == []
    assert overview_factors(513, 10) == [2]
    assert overview_factors(1300, 900) == [2, 4]
    assert overview_factors(100_000, 100_000) == [2 ** k for k in range(1, 9)]


def test_stitch_and_vectorize_to_fsspec_urls(tmp_path):
    """Outputs may be URLs: files are built locally and uploaded (memory:// stands in for s3://)."""
    import fsspec
    import geopandas as gpd

    from unetgeo.vectorize import vectorize

    probs = random_probs(np.random.default_rng(3), 2, 64, 64)
    pu, vu = make_stores(tmp_path, probs, np.ones((64, 64), bool), chunk_px=32)
    fs = fsspec.filesystem("memory")
    res = stitch(pu, vu, "memory://bucket/run-a")
    assert res.classes_uri == "memory://bucket/run-a/classes.tif"
    assert {p.rsplit("/", 1)[-1] for p in fs.ls("/bucket/run-a", detail=False)} == {
        "classes.tif", "confidence.tif", "classes.qml", "classes.tif.aux.xml"}
    local = tmp_path / "classes.tif"
    fs.get_file("/bucket/run-a/classes.tif", str(local))
    assert cog_validate(str(local))[0]
    with rasterio.open(local) as ds:
        np.testing.assert_array_equal(ds.read(1), np.argmax(probs.astype(np.float32), 0))
    vec = vectorize(res.classes_uri, "memory://bucket/run-a/polygons.gpkg", block_px=32)
    assert vec.shapefile_uri == "memory://bucket/run-a/polygons.shp"
    fs.get_file("/bucket/run-a/polygons.gpkg", str(tmp_path / "p.gpkg"))
    n = sum(len(gpd.read_file(tmp_path / "p.gpkg", layer=name)) for name in NAMES[:2])
    assert n == sum(vec.counts.values()) > 0
    assert not [p for p in fs.ls("/bucket/run-a", detail=False) if p.endswith(".tmp")]
    fs.rm("/bucket/run-a", recursive=True)


@pytest.mark.slow
def test_stitch_memory_does_not_grow_with_scene_size(tmp_path):
    """Python-side peak memory (numpy and zarr buffers) is set by the chunk, not the scene."""
    import tracemalloc

    peaks = []
    for size in (256, 1024):
        d = tmp_path / str(size)
        d.mkdir()
        probs = random_probs(np.random.default_rng(4), 3, size, size)
        pu, vu = make_stores(d, probs, np.ones((size, size), bool), chunk_px=128)
        del probs
        tracemalloc.start()
        stitch(pu, vu, str(d / "run"))
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    assert peaks[1] < 1.5 * peaks[0], peaks


def copied_alone(uri, tmp_path):
    """``uri`` copied into a folder of its own (no .aux.xml, no .qml beside it); the folder."""
    import shutil

    alone = tmp_path / "elsewhere"
    alone.mkdir()
    shutil.copy(uri, alone / "classes.tif")
    assert sorted(p.name for p in alone.iterdir()) == ["classes.tif"]
    return alone


def test_classes_tif_alone_carries_a_raster_attribute_table(tmp_path):
    """With GDAL >= 3.12 at hand, the legend QGIS shows (value, name, colour) is a RAT inside the TIFF."""
    from unetgeo.io import rat

    if not rat.available():
        pytest.skip("no GDAL >= 3.12 (rasterio's or pyogrio's) in this environment")
    probs = random_probs(np.random.default_rng(6), 3, 600, 600)
    pu, vu = make_stores(tmp_path, probs, np.ones((600, 600), bool), chunk_px=128)
    res = stitch(pu, vu, str(tmp_path / "run"))
    alone = copied_alone(res.classes_uri, tmp_path)
    rows = rat.read_class_table(str(alone / "classes.tif"))
    assert [(r.value, r.name, r.rgba) for r in rows] == [
        (0, "background", (0xD9, 0xD9, 0xD9, 255)), (1, "water", (0x1F, 0x78, 0xB4, 255)),
        (2, "urban", (0xE3, 0x1A, 0x1C, 255))]
    assert sorted(p.name for p in alone.iterdir()) == ["classes.tif"]  # reading wrote no sidecar
    assert cog_validate(str(alone / "classes.tif"))[0]
    with rasterio.open(res.classes_uri) as ds, rasterio.open(alone / "classes.tif") as cp:
        assert cp.overviews(1) == ds.overviews(1) == [2]
        assert cp.crs == ds.crs and cp.transform == ds.transform
        np.testing.assert_array_equal(cp.read(1), probs.argmax(0))


def test_without_gdal_312_class_rasters_keep_tags_colours_and_sidecars(tmp_path, monkeypatch):
    """No GDAL >= 3.12 (or UNETGEO_RAT=no): rasterio's GDAL writes the COG, legend in tags and sidecars."""
    from unetgeo.io import rat
    from unetgeo.io.cog import read_class_info

    monkeypatch.setattr(rat, "_LIB", [None])
    assert not rat.available()
    probs = random_probs(np.random.default_rng(7), 3, 64, 64)
    pu, vu = make_stores(tmp_path, probs, np.ones((64, 64), bool), chunk_px=32)
    res = stitch(pu, vu, str(tmp_path / "run"))
    assert cog_validate(res.classes_uri)[0]
    assert read_class_info(str(copied_alone(res.classes_uri, tmp_path) / "classes.tif")) == (NAMES, COLORS)
    assert (tmp_path / "run" / "classes.qml").exists() and (tmp_path / "run" / "classes.tif.aux.xml").exists()
    monkeypatch.setattr(rat, "_LIB", [])
    if rat.available():  # the real library again: this file was written without a table
        assert rat.read_class_table(res.classes_uri) is None


def test_class_names_and_colours_live_in_the_tif_itself(tmp_path):
    """A copy of classes.tif alone (no .aux.xml, no .qml) still names and colours its classes."""
    from unetgeo.io.cog import read_class_info

    probs = random_probs(np.random.default_rng(5), 3, 64, 64)
    pu, vu = make_stores(tmp_path, probs, np.ones((64, 64), bool), chunk_px=32)
    res = stitch(pu, vu, str(tmp_path / "run"))
    alone = copied_alone(res.classes_uri, tmp_path)
    assert read_class_info(str(alone / "classes.tif")) == (NAMES, COLORS)
    with rasterio.open(alone / "classes.tif") as ds:
        assert {k: v for k, v in ds.tags(1).items() if k.startswith("CLASS_")} == {
            "CLASS_0": "background", "CLASS_1": "water", "CLASS_2": "urban"}
        assert [ds.colormap(1)[i][:3] for i in range(3)] == [(0xD9, 0xD9, 0xD9), (0x1F, 0x78, 0xB4), (0xE3, 0x1A, 0x1C)]
        assert ds.descriptions == ("class",)
    # band items alone are enough: a raster whose dataset tags were stripped keeps its names
    with rasterio.open(alone / "classes.tif", "r+", IGNORE_COG_LAYOUT_BREAK="YES") as ds:
        ds.update_tags(class_names="", class_colors="[]")
    names, colors = read_class_info(str(alone / "classes.tif"))
    assert names == NAMES
