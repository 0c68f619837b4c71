"""vectorize / flood_raster: polygons merged across blocks, attributes, CRS, areas, identity."""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from pyproj import Geod
from rasterio.features import rasterize
from scipy import ndimage

from unetgeo.errors import GridMismatchError, InputError
from unetgeo.vectorize import vectorize

UTM = "EPSG:32633"
T10 = rasterio.Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 6000000.0)
NAMES = ["background", "water", "wässer"]  # non-ASCII name: UTF-8 must survive in GPKG and SHP


@pytest.fixture(params=["yes", "no"], ids=["runs", "gdal"])
def polygonizer(request, monkeypatch):
    """Both block polygonizers: the numpy run tracer (``UNETGEO_RUNS=yes``) and GDAL (``no``)."""
    monkeypatch.setenv("UNETGEO_RUNS", request.param)
    return request.param


def write_raster(path, arr, *, crs=UTM, transform=T10, nodata=255, block=16, tags=None):
    """Write a tiled single-band GeoTIFF (tile side ``block``) for the tests."""
    profile = dict(driver="GTiff", width=arr.shape[1], height=arr.shape[0], count=1, dtype=arr.dtype.name,
                   crs=crs, transform=transform, nodata=nodata, tiled=True, blockxsize=block, blockysize=block)
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(arr, 1)
        if tags:
            ds.update_tags(**tags)
    return str(path)


def scene_with_shapes():
    """64x64 class map with known objects; several of them cross 16-px block borders."""
    a = np.zeros((64, 64), np.uint8)
    a[5:40, 3:50] = 1  # big rectangle spanning 3x4 blocks ...
    a[10:20, 10:20] = 2  # ... with a hole filled by class 2
    a[50:52, 54:56] = 1  # small 2x2 square (400 m²)
    # U shape of class 2: two arms in separate block columns joined only two block rows lower
    a[42:62, 20:22] = 2
    a[42:62, 40:42] = 2
    a[60:62, 20:42] = 2
    a[0:3, 0:64] = 255  # nodata strip
    a[45:48, 5:8] = 255  # nodata hole inside background
    return a


def test_vectorize_known_shapes_merged_across_blocks(tmp_path):
    a = scene_with_shapes()
    rng = np.random.default_rng(0)
    conf = rng.integers(40, 100, size=a.shape).astype(np.uint8)
    conf[a == 255] = 255
    cu = write_raster(tmp_path / "classes.tif", a, tags={"class_names": json.dumps(NAMES), "model_id": "m1"})
    fu = write_raster(tmp_path / "confidence.tif", conf)
    res = vectorize(cu, str(tmp_path / "polygons.gpkg"), confidence_uri=fu, scene_id="s1", block_px=16)

    assert res.n_blocks == 16 and res.n_merged >= 3
    assert res.counts == {"background": 1, "water": 2, "wässer": 2}
    assert set(pyogrio.list_layers(res.out_uri)[:, 0]) == set(NAMES)
    water = gpd.read_file(res.out_uri, layer="water").sort_values("area_m2")
    assert water.crs.to_epsg() == 32633
    assert list(water["area_m2"]) == [400.0, (35 * 47 - 100) * 100.0]
    big = water.geometry.iloc[1]
    assert isinstance(big, shapely.Polygon) and len(big.interiors) == 1
    assert big.area == pytest.approx((35 * 47 - 100) * 100.0)
    assert big.bounds == (500000 + 30.0, 6000000 - 400.0, 500000 + 500.0, 6000000 - 50.0)
    # mean confidence of a merged polygon is exact (sum / count over all its blocks)
    m = a == 1
    m[50:52, 54:56] = False
    assert water["mean_conf"].iloc[1] == pytest.approx(conf[m].mean())
    assert set(water["scene_id"]) == {"s1"} and set(water["model_id"]) == {"m1"}
    assert list(water["class_name"]) == ["water", "water"] and set(water["class_id"]) == {1}

    w2 = gpd.read_file(res.out_uri, layer="wässer").sort_values("area_m2")
    assert list(w2["area_m2"]) == [100 * 100.0, (20 * 2 * 2 + 22 * 2 - 8) * 100.0]
    assert w2.geometry.iloc[1].is_valid and len(shapely.get_coordinates(w2.geometry.iloc[1])) == 9  # U: 8 corners + closing

    bg = gpd.read_file(res.out_uri, layer="background")
    assert bg["area_m2"].iloc[0] == (a == 0).sum() * 100.0
    assert len(bg.geometry.iloc[0].interiors) >= 3  # holes: water rect, small square, nodata hole (U touches edge)
    # nodata is never covered by a polygon
    nodata = shapely.union_all([shapely.box(500000, 6000000 - 30, 500640, 6000000),
                                shapely.box(500050, 6000000 - 480, 500080, 6000000 - 450)])
    all_polys = shapely.union_all(list(water.geometry) + list(w2.geometry) + list(bg.geometry))
    assert all_polys.intersection(nodata).area == 0
    assert all_polys.area == (a != 255).sum() * 100.0
    assert res.area_km2["water"] == pytest.approx(((35 * 47 - 100) + 4) * 100.0 / 1e6)


def test_shapefile_crs_attributes_encoding(tmp_path):
    a = scene_with_shapes()
    cu = write_raster(tmp_path / "classes.tif", a)
    res = vectorize(cu, str(tmp_path / "out" / "polygons.gpkg"), class_names=NAMES, block_px=16, scene_id="s")
    assert res.shapefile_uri == str(tmp_path / "out" / "polygons.shp")
    for ext in (".shp", ".shx", ".dbf", ".prj", ".cpg"):
        assert (tmp_path / "out" / f"polygons{ext}").exists(), ext
    assert (tmp_path / "out" / "polygons.cpg").read_text().strip().upper() in ("UTF-8", "UTF8")
    shp = gpd.read_file(res.shapefile_uri)
    assert shp.crs.to_epsg() == 32633
    assert {"class_id", "class_name", "area_m2", "perim_m", "mean_conf", "max_conf", "scene_id", "model_id",
            "acquired", "created"} <= set(shp.columns)
    assert len(shp) == sum(res.counts.values()) == 5
    assert set(shp["class_name"]) == set(NAMES)
    assert shp["mean_conf"].isna().all()  # no confidence raster given
    assert not list((tmp_path / "out").glob("*.tmp"))
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]


def test_min_area_and_simplify(tmp_path):
    a = scene_with_shapes()
    cu = write_raster(tmp_path / "classes.tif", a)
    res = vectorize(cu, str(tmp_path / "p.gpkg"), class_names=NAMES, min_area_m2=500.0, shapefile=False, block_px=16)
    assert res.shapefile_uri is None and not (tmp_path / "p.shp").exists()
    assert res.counts == {"background": 1, "water": 1, "wässer": 2}
    # a staircase simplifies to fewer vertices; the area attribute stays the raster area
    b = np.zeros((32, 32), np.uint8)
    for i in range(32):
        b[i, : i + 1] = 1
    cu2 = write_raster(tmp_path / "stairs.tif", b)
    exact = gpd.read_file(vectorize(cu2, str(tmp_path / "e.gpkg"), shapefile=False, block_px=16).out_uri, layer="class_1")
    simp = gpd.read_file(vectorize(cu2, str(tmp_path / "s.gpkg"), shapefile=False, block_px=16, simplify_m=15.0).out_uri,
                         layer="class_1")
    assert len(shapely.get_coordinates(simp.geometry.iloc[0])) < len(shapely.get_coordinates(exact.geometry.iloc[0]))
    assert simp["area_m2"].iloc[0] == exact["area_m2"].iloc[0] == b.sum() * 100.0
    assert simp.geometry.iloc[0].is_valid


def test_keep_classes_and_empty_layers(tmp_path):
    a = scene_with_shapes()
    cu = write_raster(tmp_path / "classes.tif", a)
    res = vectorize(cu, str(tmp_path / "p.gpkg"), class_names=NAMES, keep_classes=[1], shapefile=False, block_px=16)
    assert res.counts == {"water": 2}
    assert list(pyogrio.list_layers(res.out_uri)[:, 0]) == ["water"]
    empty = np.zeros((20, 20), np.uint8)
    res = vectorize(write_raster(tmp_path / "e.tif", empty), str(tmp_path / "e.gpkg"), class_names=NAMES, block_px=16)
    assert res.counts == {"background": 1, "water": 0, "wässer": 0}
    assert pyogrio.read_info(res.out_uri, layer="water")["features"] == 0
    assert gpd.read_file(res.shapefile_uri).crs.to_epsg() == 32633


def test_geographic_crs_geodesic_area(tmp_path):
    a = np.zeros((40, 40), np.uint8)
    a[4:36, 4:36] = 1
    t = rasterio.Affine(0.001, 0.0, 10.0, 0.0, -0.001, 60.0)
    cu = write_raster(tmp_path / "geo.tif", a, crs="EPSG:4326", transform=t)
    res = vectorize(cu, str(tmp_path / "g.gpkg"), class_names=["bg", "obj"], block_px=16)
    df = gpd.read_file(res.out_uri, layer="obj")
    assert df.crs.to_epsg() == 4326
    x0, x1, y0, y1 = 10.004, 10.036, 59.996, 59.964
    expected, _ = Geod(ellps="WGS84").polygon_area_perimeter([x0, x1, x1, x0], [y0, y0, y1, y1])
    assert df["area_m2"].iloc[0] == pytest.approx(abs(expected), rel=1e-9)
    assert abs(expected) == pytest.approx(32 * 32 * 111.32 * 55.7, rel=0.02)  # ~ (0.001° at 60°N)²


def test_confidence_on_another_grid_is_refused(tmp_path):
    a = np.zeros((32, 32), np.uint8)
    cu = write_raster(tmp_path / "c.tif", a)
    fu = write_raster(tmp_path / "f.tif", a, transform=rasterio.Affine(20.0, 0, 500000.0, 0, -20.0, 6000000.0))
    with pytest.raises(GridMismatchError, match="f.tif"):
        vectorize(cu, str(tmp_path / "p.gpkg"), confidence_uri=fu)
    assert not (tmp_path / "p.gpkg").exists() and not (tmp_path / "p.gpkg.tmp").exists()


def test_float_raster_is_refused(tmp_path):
    cu = write_raster(tmp_path / "c.tif", np.zeros((16, 16), np.float32), nodata=None)
    with pytest.raises(InputError, match="integer"):
        vectorize(cu, str(tmp_path / "p.gpkg"))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    arr=st.integers(1, 40).flatmap(
        lambda h: st.integers(1, 40).flatmap(
            lambda w: arrays(np.uint8, (h, w), elements=st.sampled_from([0, 1, 2, 255]))
        )
    ),
    smooth=st.booleans(),
    runs=st.sampled_from(["yes", "no", "auto"]),
)
def test_rasterize_polygonize_identity(tmp_path_factory, arr, smooth, runs):
    """rasterize(vectorize(x)) == x, one polygon per 4-connected component, all valid (either polygonizer)."""
    if smooth:  # blobs rather than noise: bigger objects crossing many blocks
        arr = ndimage.median_filter(arr, size=5, mode="nearest")
    d = tmp_path_factory.mktemp("h")
    cu = write_raster(d / "c.tif", arr)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("UNETGEO_RUNS", runs)
        res = vectorize(cu, str(d / "p.gpkg"), shapefile=False, block_px=16, batch_size=7)
    got = np.full(arr.shape, 255, np.uint8)
    for layer in pyogrio.list_layers(res.out_uri)[:, 0]:
        df = pyogrio.read_dataframe(res.out_uri, layer=layer)
        if len(df):
            assert df.geometry.is_valid.all()
            cid = int(df["class_id"].iloc[0])
            n_comp = ndimage.label(arr == cid)[1]
            assert len(df) == n_comp, (layer, len(df), n_comp)
            assert (df["area_m2"] == [100.0 * g.area / 100.0 for g in df.geometry]).all()
            burned = rasterize(((g, 1) for g in df.geometry), out_shape=arr.shape, transform=T10, fill=0,
                               dtype="uint8")
            assert not (got[burned > 0] != 255).any(), "polygons overlap"
            got[burned > 0] = cid
    np.testing.assert_array_equal(got, arr)


def test_union_pixel_polygons_dissolves_shared_edges(caplog):
    import logging

    from unetgeo.merge import union_pixel_polygons

    # pieces whose shared edges have different vertices on each side (as across block borders)
    a, b, c = shapely.box(0, 0, 10, 4), shapely.box(0, 4, 5, 8), shapely.box(5, 4, 10, 6)
    with caplog.at_level(logging.DEBUG, logger="unetgeo.merge"):
        parts = union_pixel_polygons([a, b, c])
    assert "using" not in caplog.text  # the exact edge dissolve handled it, no GEOS fallback
    assert len(parts) == 1 and parts[0].area == 40 + 20 + 10 and parts[0].is_valid
    assert len(shapely.get_coordinates(parts[0])) == 7  # 6 corners + closing: no seam vertices left
    ring = shapely.box(0, 0, 6, 6).difference(shapely.box(2, 2, 4, 4))  # a ring cut in two pieces
    top, bottom = ring.intersection(shapely.box(0, 3, 6, 6)), ring.intersection(shapely.box(0, 0, 6, 3))
    (merged,) = union_pixel_polygons([top, bottom])
    assert merged.equals(ring) and len(merged.interiors) == 1


@settings(max_examples=60, deadline=None)
@given(
    mask=st.integers(2, 30).flatmap(lambda h: st.integers(2, 30).flatmap(
        lambda w: arrays(np.bool_, (h, w), elements=st.booleans()))),
    cut=st.tuples(st.integers(1, 9), st.integers(1, 9)),
)
def test_dissolve_equals_geos_union(mask, cut):
    """Edge dissolve of block pieces == GEOS union, valid, also with diagonal pinches and holes."""
    from unetgeo.io.vector import polygonize_labels
    from unetgeo.merge import dissolve_pixel_polygons

    lab, k = ndimage.label(mask)
    if k == 0:
        return
    obj = lab == np.bincount(lab.ravel())[1:].argmax() + 1
    pieces = []
    for r in range(0, mask.shape[0], cut[0]):
        for c in range(0, mask.shape[1], cut[1]):
            sub, n = ndimage.label(obj[r : r + cut[0], c : c + cut[1]])
            if n:
                pieces.extend(polygonize_labels(sub.astype(np.int32), r, c)[0])
    got = dissolve_pixel_polygons(pieces)
    assert got is not None and got.is_valid, shapely.is_valid_reason(got) if got is not None else None
    assert got.equals(shapely.union_all(pieces)) and got.area == obj.sum()


@settings(max_examples=40, deadline=None)
@given(
    cls=st.integers(2, 40).flatmap(lambda h: st.integers(2, 40).flatmap(
        lambda w: arrays(np.uint8, (h, w), elements=st.integers(0, 2)))),
    cut=st.tuples(st.integers(1, 9), st.integers(1, 9)),
)
def test_dissolve_groups_many_objects_at_once(cls, cut):
    """Batched dissolve of all objects of several classes == GEOS union of each object, valid."""
    from unetgeo.io.vector import polygonize_labels
    from unetgeo.merge import dissolve_groups

    pieces, group, count = [], [], []
    for c in range(3):
        lab, k = ndimage.label(cls == c)
        base = len(count)
        count.extend(np.bincount(lab.ravel(), minlength=k + 1)[1:])
        for r in range(0, cls.shape[0], cut[0]):
            for col in range(0, cls.shape[1], cut[1]):
                blk = lab[r : r + cut[0], col : col + cut[1]]
                sub, n = ndimage.label(blk > 0)
                if n:
                    polys, ids = polygonize_labels(sub.astype(np.int32), r, col)
                    gid = np.zeros(n + 1, np.int64)
                    gid[sub.ravel()] = blk.ravel()
                    pieces.extend(polys)
                    group.extend(base + gid[ids] - 1)
    pieces, group = np.array(pieces, dtype=object), np.array(group)
    got, ok = dissolve_groups(pieces, group, np.array(count), cut)
    assert ok.all()
    assert shapely.is_valid(got).all(), [shapely.is_valid_reason(g) for g in got if not g.is_valid]
    assert (shapely.area(got) == count).all()
    want = np.array([shapely.union_all(pieces[group == g]) for g in range(len(count))], dtype=object)
    assert shapely.equals(got, want).all()


def _blobs(h, w, seed=0):
    rng = np.random.default_rng(seed)
    f = ndimage.gaussian_filter(rng.normal(size=(h // 4 + 1, w // 4 + 1)), 2)
    f = ndimage.zoom(f, 4, order=1)[:h, :w]
    return np.digitize(f, np.quantile(f, [0.4, 0.85])).astype(np.uint8)


@pytest.mark.slow
def test_vectorize_memory_does_not_grow_with_scene_height(tmp_path):
    """Python-side peak memory (numpy included) is set by the block and the width, not the height.

    Only the isolated blobs of class 2 are polygonized: a class that percolates through the whole
    scene is one polygon, and that polygon's size (and memory) grows with the scene.
    """
    import tracemalloc

    peaks = []
    for h in (512, 2048):
        cu = write_raster(tmp_path / f"c{h}.tif", _blobs(h, 1024), block=256)
        tracemalloc.start()
        # the write buffer is bounded by batch_size, not the scene; it is well below the smaller
        # scene's polygons (about 170), else that scene is written in one short batch and its
        # peak is not the steady state
        res = vectorize(cu, str(tmp_path / f"p{h}.gpkg"), shapefile=False, block_px=256, keep_classes=[2],
                        batch_size=50)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert sum(res.counts.values()) > 50
    assert peaks[1] < 1.5 * peaks[0], peaks


# -- agreement with the whole-raster peer, borders, outputs ------------------------------------------


def _peer(arr):
    """rasterio.features.shapes over the whole array (4-connectivity): {class: (count, area px)}."""
    from rasterio.features import shapes

    out = {}
    for g, v in shapes(arr, mask=arr != 255, connectivity=4):
        n, a = out.get(int(v), (0, 0.0))
        out[int(v)] = (n + 1, a + shapely.geometry.shape(g).area)
    return out


@pytest.mark.parametrize("seed,size,block,smooth", [(0, 64, 16, True), (1, 200, 32, True), (2, 256, 64, False),
                                                     (3, 512, 128, True)])
def test_counts_and_areas_equal_rasterio_shapes(tmp_path, seed, size, block, smooth, polygonizer):
    arr = np.random.default_rng(seed).choice(np.array([0, 1, 2, 255], np.uint8), size=(size, size), p=[.4, .3, .25, .05])
    if smooth:
        arr = ndimage.median_filter(arr, size=5, mode="nearest")
    cu = write_raster(tmp_path / "c.tif", arr, block=16)
    res = vectorize(cu, str(tmp_path / "p.gpkg"), shapefile=False, block_px=block, n_threads=3)
    peer = _peer(arr)
    got = {int(k.split("_")[1]): v for k, v in res.counts.items() if v}
    assert got == {c: n for c, (n, _) in peer.items()}
    for c, (_, area_px) in peer.items():
        assert res.area_km2[f"class_{c}"] == pytest.approx(area_px * 100.0 / 1e6, rel=1e-12)


def test_objects_straddling_block_corners_are_one_polygon(tmp_path, polygonizer):
    a = np.zeros((48, 48), np.uint8)
    a[10:22, 10:22] = 1  # square on the corner of four 16-px blocks
    a[4:44, 30:34] = 2  # bar through three block rows
    a[30:34, 2:46] = 2  # ... crossed by a bar through three block columns: one plus-shaped object
    a[16:17, 0:28] = 1  # a one-pixel line just below a block border, through the square
    cu = write_raster(tmp_path / "c.tif", a)
    res = vectorize(cu, str(tmp_path / "p.gpkg"), shapefile=False, block_px=16, n_threads=2)
    assert res.counts["class_1"] == 1 and res.counts["class_2"] == 1 and res.n_merged >= 2
    from rasterio.features import shapes

    for layer, cid in (("class_1", 1), ("class_2", 2)):
        df = gpd.read_file(res.out_uri, layer=layer)
        assert len(df) == 1
        expect = [shapely.geometry.shape(g) for g, v in shapes(a, mask=a == cid, connectivity=4, transform=T10)]
        assert len(expect) == 1 and df.geometry.iloc[0].equals(expect[0])
        assert df.geometry.iloc[0].is_valid
        # no vertex left on a straight stretch of border (seams dissolved, collinear points dropped)
        assert len(shapely.get_coordinates(df.geometry.iloc[0])) == len(shapely.get_coordinates(expect[0].normalize()))


def test_threads_do_not_change_the_output(tmp_path):
    arr = ndimage.median_filter(np.random.default_rng(5).integers(0, 3, (160, 160)).astype(np.uint8), 3)
    cu = write_raster(tmp_path / "c.tif", arr)
    outs = []
    for n in (1, 4):
        res = vectorize(cu, str(tmp_path / f"p{n}.gpkg"), shapefile=False, block_px=32, n_threads=n)
        outs.append(pd_concat(res.out_uri))
    assert outs[0] == outs[1]


@pytest.mark.parametrize("nodata_hole", [False, True])
def test_class_path_equals_label_path(tmp_path, nodata_hole, polygonizer):
    """Without a confidence raster the class image is polygonized directly (run tracer or GDAL); the polygons equal the ndimage-label path's."""
    arr = ndimage.median_filter(np.random.default_rng(7).integers(0, 4, (150, 170)).astype(np.uint8), 3)
    if nodata_hole:
        arr[40:90, 30:33] = 255
        arr[100:101, :] = 255
    cu = write_raster(tmp_path / "c.tif", arr)
    fu = write_raster(tmp_path / "f.tif", np.full(arr.shape, 50, np.uint8))
    by_class = vectorize(cu, str(tmp_path / "a.gpkg"), shapefile=False, block_px=32)
    by_label = vectorize(cu, str(tmp_path / "b.gpkg"), confidence_uri=fu, shapefile=False, block_px=32)
    assert by_class.n_merged > 10 and by_class.counts == by_label.counts
    assert pd_concat(by_class.out_uri) == pd_concat(by_label.out_uri)


def test_write_buffer_is_bounded_by_vertices(tmp_path, monkeypatch):
    """A few huge polygons are written in several batches too (memory set by vertices, not polygon count)."""
    import unetgeo.vectorize as vec
    from unetgeo.io.vector import PolygonWriter

    arr = ndimage.median_filter(np.random.default_rng(3).integers(0, 3, (128, 128)).astype(np.uint8), 3)
    cu = write_raster(tmp_path / "c.tif", arr)
    writes = []
    real = PolygonWriter.write
    monkeypatch.setattr(PolygonWriter, "write", lambda self, layer, t, bounds=None: (writes.append(t.num_rows), real(self, layer, t, bounds)))
    one = vectorize(cu, str(tmp_path / "a.gpkg"), shapefile=False, block_px=32)
    n_default = len(writes)
    monkeypatch.setattr(vec, "SINK_VERTICES", 200)
    many = vectorize(cu, str(tmp_path / "b.gpkg"), shapefile=False, block_px=32)
    assert n_default <= 2 * 3 and len(writes) - n_default > 10  # by default one flush: per class, the block polygons and the merged ones
    assert pd_concat(one.out_uri) == pd_concat(many.out_uri)


def pd_concat(uri):
    """Sorted (layer, area, WKB of the normalized geometry) of every polygon."""
    rows = []
    for layer in pyogrio.list_layers(uri)[:, 0]:
        df = pyogrio.read_dataframe(uri, layer=layer)
        rows += [(layer, a, shapely.normalize(g).wkb) for a, g in zip(df["area_m2"], df.geometry, strict=True)]
    return sorted(rows)


def test_attributes_gpkg_version_and_geoparquet(tmp_path):
    import sqlite3

    import pyarrow.parquet as pq

    a = scene_with_shapes()
    conf = np.full(a.shape, 80, np.uint8)
    conf[5:10, 3:50] = 95
    conf[a == 255] = 255
    cu = write_raster(tmp_path / "classes.tif", a, tags={"class_names": json.dumps(NAMES), "model_id": "m1",
                                                         "acquired": "2024-05-01T10:30:00Z"})
    fu = write_raster(tmp_path / "conf.tif", conf)
    res = vectorize(cu, str(tmp_path / "polygons.gpkg"), confidence_uri=fu, block_px=16, parquet=True, scene_id="s1")
    assert res.parquet_uri == str(tmp_path / "polygons.parquet")
    with sqlite3.connect(res.out_uri) as db:
        assert db.execute("PRAGMA application_id").fetchone()[0] == 0x47504B47  # "GPKG"
        assert db.execute("PRAGMA user_version").fetchone()[0] == 10200  # 1.2.0
    water = gpd.read_file(res.out_uri, layer="water").sort_values("area_m2")
    expected_cols = {"class_id", "class_name", "area_m2", "perimeter_m", "mean_conf", "max_conf", "scene_id",
                     "model_id", "acquired", "created"}
    assert expected_cols <= set(water.columns)
    assert list(water["perimeter_m"]) == [80.0, pytest.approx(water.geometry.iloc[1].length)]
    assert water.geometry.iloc[1].length == 2 * (350 + 470) + 4 * 100  # rectangle + the 10x10 hole, metres
    assert list(water["max_conf"]) == [80, 95]
    assert str(water["acquired"].iloc[0]).startswith("2024-05-01 10:30:00")
    assert water["created"].notna().all()

    pqdf = gpd.read_parquet(res.parquet_uri)
    assert pqdf.crs.to_epsg() == 32633 and len(pqdf) == sum(res.counts.values())
    assert expected_cols <= set(pqdf.columns)  # geopandas knows the covering column and hides it
    geo = json.loads(pq.read_schema(res.parquet_uri).metadata[b"geo"])
    assert geo["version"] == "1.1.0" and geo["columns"]["geometry"]["covering"]["bbox"]["xmin"] == ["bbox", "xmin"]
    raw = pq.read_table(res.parquet_uri, columns=["bbox"]).column("bbox").to_pylist()
    bounds = np.array([[b["xmin"], b["ymin"], b["xmax"], b["ymax"]] for b in raw])
    np.testing.assert_array_equal(bounds, pqdf.geometry.bounds.to_numpy())
    md = pq.ParquetFile(res.parquet_uri).metadata  # readers filter row groups on the bbox statistics
    stats = [{rg.column(i).path_in_schema: rg.column(i).statistics for i in range(rg.num_columns)}
             for rg in (md.row_group(j) for j in range(md.num_row_groups))]
    assert all(s["geometry"] is None for s in stats)  # none of the WKB (whole values: huge for huge outlines)
    assert min(s["bbox.xmin"].min for s in stats) == bounds[:, 0].min()
    assert max(s["bbox.ymax"].max for s in stats) == bounds[:, 3].max()
    by_class = pqdf.groupby("class_name")["area_m2"].sum()
    assert by_class["water"] == pytest.approx(res.area_km2["water"] * 1e6)


def test_ogrinfo_reads_gpkg_without_warning(tmp_path):
    import shutil
    import subprocess

    if shutil.which("ogrinfo") is None:
        pytest.skip("ogrinfo is not on PATH")
    cu = write_raster(tmp_path / "c.tif", scene_with_shapes())
    res = vectorize(cu, str(tmp_path / "p.gpkg"), class_names=NAMES, block_px=16, shapefile=False)
    p = subprocess.run(["ogrinfo", "-so", "-al", res.out_uri], capture_output=True, text=True, check=True)
    assert "perimeter_m" in p.stdout and "max_conf" in p.stdout
    assert "Warning" not in p.stderr, p.stderr


def test_fill_holes_and_coverage_simplify_keep_shared_borders(tmp_path):
    a = scene_with_shapes()
    cu = write_raster(tmp_path / "c.tif", a)
    res = vectorize(cu, str(tmp_path / "f.gpkg"), class_names=NAMES, block_px=16, shapefile=False,
                    fill_holes_m2=1000.0)  # the 2x2 (400 m²) nodata-free hole goes, the 10x10 one stays
    bg = gpd.read_file(res.out_uri, layer="background")
    water = gpd.read_file(res.out_uri, layer="water").sort_values("area_m2")
    big = water.geometry.iloc[1]
    assert len(big.interiors) == 1  # 10000 m² hole kept
    assert bg["area_m2"].iloc[0] == ((a == 0).sum() + 4 + 9) * 100.0  # 2x2 water and 3x3 nodata holes filled
    res = vectorize(cu, str(tmp_path / "s.gpkg"), class_names=NAMES, block_px=16, shapefile=False, simplify_m=25.0,
                    batch_size=100_000)
    allg = np.concatenate([gpd.read_file(res.out_uri, layer=n).geometry.to_numpy() for n in NAMES])
    assert shapely.is_valid(allg).all()
    union = shapely.union_all(allg)
    assert shapely.area(allg).sum() == pytest.approx(union.area, rel=1e-9)  # no overlaps ...
    assert union.area == pytest.approx((a != 255).sum() * 100.0, rel=1e-9)  # ... and no gaps


def test_bad_acquired_time_is_refused(tmp_path):
    cu = write_raster(tmp_path / "c.tif", np.zeros((16, 16), np.uint8))
    with pytest.raises(InputError, match="acquired='yesterday'"):
        vectorize(cu, str(tmp_path / "p.gpkg"), acquired="yesterday")


def test_confidence_statistics_equal_on_both_polygonizers(tmp_path, monkeypatch):
    """mean_conf / max_conf per polygon: the run tracer's pixel map gives the ndimage-label path's values."""
    rng = np.random.default_rng(11)
    arr = ndimage.median_filter(rng.integers(0, 3, (120, 140)).astype(np.uint8), 5)
    conf = rng.integers(30, 100, arr.shape).astype(np.uint8)
    conf[10:20, 10:60] = 255  # confidence nodata: left out of the sums
    cu, fu = write_raster(tmp_path / "c.tif", arr), write_raster(tmp_path / "f.tif", conf)
    rows = {}
    for mode in ("yes", "no"):
        monkeypatch.setenv("UNETGEO_RUNS", mode)
        res = vectorize(cu, str(tmp_path / f"{mode}.gpkg"), confidence_uri=fu, shapefile=False, block_px=32)
        got = []
        for layer in pyogrio.list_layers(res.out_uri)[:, 0]:
            df = pyogrio.read_dataframe(res.out_uri, layer=layer)
            got += [(layer, shapely.normalize(g).wkb, None if np.isnan(m) else round(m, 9), None if np.isnan(x) else int(x))
                    for g, m, x in zip(df.geometry, df["mean_conf"], df["max_conf"], strict=True)]
        rows[mode] = sorted(got)
    assert rows["yes"] == rows["no"] and len(rows["yes"]) > 20
    # one polygon checked by hand: the mean of its valid confidence pixels
    lab, _ = ndimage.label(arr == arr[60, 70])
    sel = (lab == lab[60, 70]) & (conf != 255)
    df = pyogrio.read_dataframe(str(tmp_path / "yes.gpkg"), layer=f"class_{arr[60, 70]}")
    x, y = T10 @ (70.5, 60.5)
    hit = df[df.geometry.contains(shapely.Point(x, y))]
    assert len(hit) == 1
    assert hit["mean_conf"].iloc[0] == pytest.approx(conf[sel].mean()) and hit["max_conf"].iloc[0] == conf[sel].max()
