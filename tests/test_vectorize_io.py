"""vectorize internals of issue 12: the GeoPackage writer on GDAL's C API, chunked merge output,
the numpy connected components, int32 dissolve at large coordinates."""

from __future__ import annotations

import os
import sqlite3

import numpy as np
import pyogrio
import pytest
import shapely
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from test_vectorize import pd_concat, write_raster

import unetgeo.merge as merge
from unetgeo.merge import components, dissolve_groups
from unetgeo.vectorize import vectorize


def _arr(seed, shape=(150, 170), k=4):
    return ndimage.median_filter(np.random.default_rng(seed).integers(0, k, shape).astype(np.uint8), 3)


@pytest.mark.parametrize("n,m", [(1, 0), (10, 5), (1000, 700), (20000, 19000), (5000, 0)])
def test_components_equal_scipy(n, m):
    rng = np.random.default_rng(n + m)
    a, b = rng.integers(0, n, m), rng.integers(0, n, m)
    got = components(n, a, b)
    k, ref = connected_components(coo_matrix((np.ones(m), (a, b)), shape=(n, n)), directed=False)
    assert got.shape == (n,) and got.max() + 1 == k
    assert len(set(zip(got.tolist(), ref.tolist(), strict=True))) == k  # the same partition


def test_components_of_a_long_chain_and_cycles():
    n = 50_000
    assert (components(n, np.arange(n), np.r_[np.arange(1, n), 0]) == 0).all()
    perm = np.random.default_rng(1).permutation(n)
    got = components(n, np.arange(n), perm)
    _, ref = connected_components(coo_matrix((np.ones(n), (np.arange(n), perm)), shape=(n, n)), directed=False)
    assert len(set(zip(got.tolist(), ref.tolist(), strict=True))) == ref.max() + 1


def test_gpkg_on_gdal_c_api_equals_pyogrio(tmp_path, monkeypatch):
    """The GeoPackage kept open through GDAL's C API holds what pyogrio's appends write, with R-trees."""
    cu = write_raster(tmp_path / "c.tif", _arr(11))
    kw = dict(shapefile=False, block_px=32, batch_size=50, class_names=["a", "b", "c", "d"])
    ours = vectorize(cu, str(tmp_path / "ours.gpkg"), **kw)
    monkeypatch.setenv("UNETGEO_GPKG_WRITER", "pyogrio")
    peer = vectorize(cu, str(tmp_path / "peer.gpkg"), **kw)
    assert ours.counts == peer.counts and sum(ours.counts.values()) > 100
    assert pd_concat(ours.out_uri) == pd_concat(peer.out_uri)
    for uri in (ours.out_uri, peer.out_uri):
        with sqlite3.connect(uri) as db:
            assert db.execute("PRAGMA application_id").fetchone()[0] == 0x47504B47
            assert db.execute("PRAGMA user_version").fetchone()[0] == 10200
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            assert {f"rtree_{c}_geom" for c in "abcd"} <= tables
            n_rtree = db.execute('SELECT COUNT(*) FROM "rtree_b_geom"').fetchone()[0]
            assert n_rtree == ours.counts["b"]
    info_o, info_p = pyogrio.read_info(ours.out_uri, layer="b"), pyogrio.read_info(peer.out_uri, layer="b")
    assert list(info_o["fields"]) == list(info_p["fields"]) and info_o["crs"] == info_p["crs"]
    bbox = (500000.0, 5999000.0, 500500.0, 6000000.0)
    a = pyogrio.read_dataframe(ours.out_uri, layer="b", bbox=bbox)
    b = pyogrio.read_dataframe(peer.out_uri, layer="b", bbox=bbox)
    assert 0 < len(a) == len(b) < ours.counts["b"]
    assert not list(tmp_path.glob("*.tmp*"))


def test_gpkg_writer_leaves_nothing_on_error(tmp_path, monkeypatch):
    import unetgeo.vectorize as vec

    cu = write_raster(tmp_path / "c.tif", _arr(12))

    def boom(self, *a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(vec._Sink, "_write", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        vectorize(cu, str(tmp_path / "p.gpkg"), shapefile=False, block_px=32)
    assert not list(tmp_path.glob("p.gpkg*"))


def test_merge_output_in_small_chunks_is_the_same(tmp_path, monkeypatch):
    """Merged objects go to the writer chunk by chunk (bounded memory); the polygons do not change."""
    cu = write_raster(tmp_path / "c.tif", _arr(13, (200, 200), 3))
    one = vectorize(cu, str(tmp_path / "a.gpkg"), shapefile=False, block_px=32)
    calls = []
    real = merge.dissolve_to_rings
    monkeypatch.setattr(merge, "dissolve_to_rings", lambda *a: (calls.append(len(a[2])), real(*a))[1])
    monkeypatch.setattr(merge, "CHUNK_VERTICES", 60)
    many = vectorize(cu, str(tmp_path / "b.gpkg"), shapefile=False, block_px=32)
    assert one.n_merged == many.n_merged > 10 and len(calls) > 20
    assert pd_concat(one.out_uri) == pd_concat(many.out_uri)


def test_dissolve_at_coordinates_whose_products_pass_int32():
    """int32 coordinates: products of coordinates (ring areas) must not overflow far from the origin."""
    x0, y0 = 3_000_000, 2_000_000  # a raster this wide: x * y > 2**31
    boxes = [shapely.box(x0 - 5, y0 - 7, x0, y0), shapely.box(x0, y0 - 7, x0 + 7, y0),
             shapely.box(x0 - 5, y0, x0 + 7, y0 + 5)]  # seams on the block lines x0 and y0
    out, ok = dissolve_groups(np.array(boxes, dtype=object), np.zeros(3, dtype=np.int64),
                              np.array([12 * 12]), (1_000_000, 1_000_000))
    assert ok[0] and out[0].equals(shapely.box(x0 - 5, y0 - 7, x0 + 7, y0 + 5))


def test_geoparquet_output_does_not_load_pandas(tmp_path):
    """pandas costs a GeoPackage + GeoParquet run ~40 MiB and half a second (pyogrio's package, which the
    Shapefile went through, ~70 MiB with geopandas); the writers use Arrow and GDAL's C API alone."""
    import subprocess
    import sys

    arr = np.zeros((48, 48), dtype=np.uint8)
    arr[4:20, 6:30] = 1
    cu = write_raster(tmp_path / "c.tif", arr)
    for huge, shp in ((10**9, False), (2, True)):  # the merged object written as usual, then spooled; the Shapefile
        out_gpkg = tmp_path / f"p{huge}.gpkg"
        code = ("import sys; import unetgeo.vectorize as V; "
                f"V.HUGE_VERTICES = {huge}; "
                f"r = V.vectorize({cu!r}, {str(out_gpkg)!r}, shapefile={shp}, parquet=True, block_px=16); "
                "print(sorted(r.counts.items()), 'pandas' in sys.modules)")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert out.stdout.split()[-1] == "False", out.stdout
        assert out_gpkg.with_suffix(".parquet").exists() and out_gpkg.with_suffix(".shp").exists() == shp


def test_stream_reader_keeps_its_small_block_cache_across_pickling(tmp_path):
    """vectorize's readers (each block read once) use an 8 MiB GDAL cache, not the 64 MiB of tiling."""
    import pickle

    from unetgeo.grid import Window
    from unetgeo.io.scene import STREAM_CACHE_MIB, SceneReader

    arr = (np.arange(64 * 64) % 7).astype(np.uint8).reshape(64, 64)
    cu = write_raster(tmp_path / "c.tif", arr)
    with SceneReader(cu, cache_mib=STREAM_CACHE_MIB) as r:
        back = pickle.loads(pickle.dumps(r))
        assert back.cache_mib == STREAM_CACHE_MIB == 8
        data, valid = back.read(Window(16, 32, 16, 16), bands=[1])
        np.testing.assert_array_equal(data[0], arr[16:32, 32:48])
        assert valid.all()
        back.close()


def test_small_read_cache_only_where_every_tile_lies_in_one_block(tmp_path):
    """Strips wider than a block are read by every block beside them: those rasters keep the big cache."""
    import rasterio

    from unetgeo.io.scene import GDAL_CACHE_MIB, STREAM_CACHE_MIB, open_scene
    from unetgeo.vectorize import _block_steps, _read_cache_mib

    arr = np.zeros((96, 96), dtype=np.uint8)
    tiled = open_scene(write_raster(tmp_path / "t.tif", arr, block=16))
    assert _read_cache_mib([tiled], _block_steps(tiled, 40)) == STREAM_CACHE_MIB  # 40 -> 48: three tiles a block
    profile = dict(driver="GTiff", width=96, height=96, count=1, dtype="uint8", crs="EPSG:32633", nodata=255,
                   transform=rasterio.Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 6000000.0))
    with rasterio.open(tmp_path / "s.tif", "w", **profile) as ds:  # striped: 96-px-wide strips
        ds.write(arr, 1)
    striped = open_scene(str(tmp_path / "s.tif"))
    assert striped.block_shape[1] == 96
    assert _read_cache_mib([striped], _block_steps(striped, 32)) == GDAL_CACHE_MIB
    assert _read_cache_mib([striped], _block_steps(striped, 128)) == STREAM_CACHE_MIB  # one block spans the width
    assert _read_cache_mib([tiled, striped], (48, 48)) == GDAL_CACHE_MIB  # one cache for both readers


def test_arrow_allocates_from_malloc_unless_the_user_chose_a_pool():
    """jemalloc kept freed Parquet pages resident (vectorize's peak RSS grew with the scene); a user's choice stands."""
    import subprocess
    import sys

    code = "import unetgeo, pyarrow as pa; print(pa.default_memory_pool().backend_name)"
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "system"
    out = subprocess.run([sys.executable, "-c", code], env={**env, "ARROW_DEFAULT_MEMORY_POOL": "mimalloc"},
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "mimalloc"


def _triggers(db):
    return sorted(db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'").fetchall())


@pytest.mark.parametrize("writer", ["ctypes", "pyogrio"])
def test_huge_objects_spooled_into_the_geopackage_are_the_same_polygons(tmp_path, monkeypatch, caplog, writer):
    """Objects over HUGE_VERTICES go to the GeoPackage as a placeholder whose blob is swapped after GDAL closes:
    the same rows, R-tree, triggers and extent as when GDAL writes them, and the GeoParquet and Shapefile too
    (written from the spool on close; the WKB streamed into the closed GeoParquet and .shp files). Through pyogrio's
    GeoPackage writer nothing is swapped; the rows are the same."""
    import logging

    import pyarrow.parquet as pq

    import unetgeo.vectorize as vec

    cu = write_raster(tmp_path / "c.tif", _arr(13, (200, 200), 3))
    kw = dict(block_px=32, parquet=True, class_names=["a", "b", "c"])
    monkeypatch.setenv("UNETGEO_GPKG_WRITER", writer)
    monkeypatch.setattr(vec, "HUGE_VERTICES", 10**12)
    whole = vectorize(cu, str(tmp_path / "whole" / "p.gpkg"), **kw)
    monkeypatch.setattr(vec, "HUGE_VERTICES", 12)  # every merged object but the smallest
    with caplog.at_level(logging.DEBUG, logger="unetgeo.io.vector"):
        spooled = vectorize(cu, str(tmp_path / "spooled" / "p.gpkg"), **kw)
    n_spooled = [r.args[0] for r in caplog.records if "spooled polygons" in r.getMessage()]
    assert (n_spooled and n_spooled[0] >= 5) if writer == "ctypes" else not n_spooled
    streamed = {r.args[1].split(".")[-1]: r.args[0] for r in caplog.records if "outlines streamed into" in r.getMessage()}
    assert streamed.get("tmp", 0) >= 5 and streamed.get("shp", 0) >= 5  # WKB put into the closed .parquet.tmp / .shp
    assert spooled.counts == whole.counts
    assert pd_concat(spooled.out_uri) == pd_concat(whole.out_uri)
    with sqlite3.connect(spooled.out_uri) as s, sqlite3.connect(whole.out_uri) as w:
        assert s.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert _triggers(s) == _triggers(w)
        for name in "abc":
            # huge objects are written alone, before the rest of their batch: the same rows, other fids
            q = f'SELECT geom, class_id, area_m2, perimeter_m, mean_conf, max_conf FROM "{name}" ORDER BY geom'
            assert s.execute(q).fetchall() == w.execute(q).fetchall()  # the blobs byte for byte, header included
            r = (f'SELECT t.geom, minx, maxx, miny, maxy FROM "rtree_{name}_geom" JOIN "{name}" t ON t.fid = id '
                 "ORDER BY t.geom")
            assert s.execute(r).fetchall() == w.execute(r).fetchall()
        ext = "SELECT table_name, min_x, min_y, max_x, max_y FROM gpkg_contents ORDER BY table_name"
        assert s.execute(ext).fetchall() == w.execute(ext).fetchall()
        seq = "SELECT name, seq FROM sqlite_sequence ORDER BY name"  # AUTOINCREMENT goes on from the same fid
        assert s.execute(seq).fetchall() == w.execute(seq).fetchall()
        for name in "abc":  # swapped layers are rebuilt with the geometry column last (SQLite then streams the blob)
            cols_s, cols_w = ([r[1] for r in db.execute(f'PRAGMA table_info("{name}")')] for db in (s, w))
            assert sorted(cols_s) == sorted(cols_w)
            assert (cols_s[-1] == "geom") == (writer == "ctypes")
    info = pyogrio.read_info(spooled.out_uri, layer="b")
    xmin, ymin, xmax, ymax = info["total_bounds"]
    half = (xmin, ymin, (xmin + xmax) / 2, ymax)
    a = pyogrio.read_dataframe(spooled.out_uri, layer="b", bbox=half)
    b = pyogrio.read_dataframe(whole.out_uri, layer="b", bbox=half)
    assert 0 < len(a) == len(b) < info["features"]
    cols = ["class_id", "area_m2", "perimeter_m", "geometry", "bbox"]
    ta, tw = (pq.read_table(u, columns=cols).to_pylist() for u in (spooled.parquet_uri, whole.parquet_uri))
    assert sorted(ta, key=lambda r: r["geometry"]) == sorted(tw, key=lambda r: r["geometry"])
    import geopandas as gpd

    ga, gw = (gpd.read_parquet(u) for u in (spooled.parquet_uri, whole.parquet_uri))  # GeoParquet metadata and all
    assert ga.crs == gw.crs and sorted(shapely.to_wkb(ga.geometry.values)) == sorted(shapely.to_wkb(gw.geometry.values))
    sa, sw = (sorted(shapely.to_wkb(pyogrio.read_dataframe(u).geometry.values))
              for u in (spooled.shapefile_uri, whole.shapefile_uri))
    assert sa == sw
    assert sorted(p.name for p in (tmp_path / "spooled").iterdir()) == sorted(p.name for p in (tmp_path / "whole").iterdir())


def test_a_swap_onto_a_row_that_is_not_its_placeholder_fails_and_changes_nothing(tmp_path, monkeypatch):
    import unetgeo.vectorize as vec
    from unetgeo.io.vector import _swap_blobs

    cu = write_raster(tmp_path / "c.tif", _arr(13, (200, 200), 3))
    monkeypatch.setattr(vec, "HUGE_VERTICES", 40)
    out = vectorize(cu, str(tmp_path / "p.gpkg"), block_px=32, shapefile=False, class_names=["a", "b", "c"]).out_uri
    with sqlite3.connect(out) as db:
        before = db.execute('SELECT fid, geom FROM "b" ORDER BY fid').fetchall(), _triggers(db)
    spool = tmp_path / "spool"
    spool.write_bytes(b"\1" * 1000)
    with open(spool, "rb") as f, pytest.raises(RuntimeError, match="row 2 of layer b is not the placeholder"):
        _swap_blobs(out, [("b", 2, b"not this row", (0, 1000))], f)
    with sqlite3.connect(out) as db:
        assert (db.execute('SELECT fid, geom FROM "b" ORDER BY fid').fetchall(), _triggers(db)) == before
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_polygon_wkb_streamed_in_pieces_is_the_one_piece_wkb(monkeypatch):
    import unetgeo.io.wkb as W
    from unetgeo.dissolve import Rings

    g = shapely.Polygon([(0, 0), (100, 0), (100, 100), (0, 100)],
                        [[(10, 10), (10, 20), (20, 20), (20, 10)], [(30, 30), (30, 40), (40, 40), (40, 35), (40, 30)],
                         [(60, 60), (60, 61), (61, 61), (61, 60)]])
    r = Rings.from_polygons(np.array([g]))
    tr = (10.0, 0.0, 500000.0, 0.0, -10.0, 5000000.0)
    ref, per, bnd = W.rings_wkb(r.xy, r.ring_len, r.piece_rings, tr)
    assert shapely.equals(shapely.from_wkb(ref[0].as_py()), shapely.affinity.affine_transform(g, [10, 0, 0, -10, 500000, 5000000]))
    for chunk in (2, 3, 4, 5, 6, 9, 1 << 18):  # rings longer than a chunk are cut in slices; runs of short rings
        monkeypatch.setattr(W, "CHUNK", chunk)
        parts = []
        n, perimeter, bounds = W.stream_polygon_wkb(parts.append, r.xy, r.ring_len, tr)
        got = b"".join(bytes(p) for p in parts)
        assert got == ref[0].as_py() and n == len(got)
        assert perimeter == pytest.approx(per[0]) and np.array_equal(bounds, bnd[0])


def test_geometry_last_rebuilds_gdal_tables_and_leaves_others_alone(tmp_path):
    """The rebuild keeps rows, fids, triggers and the AUTOINCREMENT sequence; a table whose SQL has a
    table constraint or an unquoted column is not touched (the swap then goes the slow way)."""
    from unetgeo.io.vector import _geometry_last, _top_level

    assert _top_level('"a" TEXT DEFAULT \'x,y\', "b" REAL CHECK ("b" IN (1, 2)), "c d" BLOB') == [
        '"a" TEXT DEFAULT \'x,y\'', '"b" REAL CHECK ("b" IN (1, 2))', '"c d" BLOB']
    db = sqlite3.connect(tmp_path / "t.db", isolation_level=None)
    db.execute('CREATE TABLE "my ""layer""" ("fid" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL, "geom" POLYGON, '
               '"name" TEXT, "area, m2" REAL)')
    db.execute('CREATE TABLE log (n)')
    db.execute('CREATE TRIGGER "count" AFTER INSERT ON "my ""layer""" BEGIN INSERT INTO log VALUES (NEW."fid"); END')
    db.executemany('INSERT INTO "my ""layer""" (fid, geom, name, "area, m2") VALUES (?, ?, ?, ?)',
                   [(3, b"g3", "x", 1.5), (7, b"g7", "y", None)])
    db.execute("BEGIN")
    assert _geometry_last(db, 'my "layer"', "geom")
    db.execute("COMMIT")
    assert [r[1] for r in db.execute('PRAGMA table_info("my ""layer""")')] == ["fid", "name", "area, m2", "geom"]
    assert db.execute('SELECT fid, geom, name, "area, m2" FROM "my ""layer""" ORDER BY fid').fetchall() == [
        (3, b"g3", "x", 1.5), (7, b"g7", "y", None)]
    db.execute('INSERT INTO "my ""layer""" (geom) VALUES (x\'00\')')  # the trigger and the sequence came along
    assert db.execute("SELECT n FROM log").fetchall() == [(3,), (7,), (8,)]
    assert db.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE '%rebuild%'").fetchall() == []
    db.execute('CREATE TABLE other ("fid" INTEGER PRIMARY KEY, "geom" BLOB, "n" INT, UNIQUE ("n"))')
    before = db.execute("SELECT sql FROM sqlite_master WHERE name = 'other'").fetchone()
    assert not _geometry_last(db, "other", "geom")
    assert db.execute("SELECT sql FROM sqlite_master WHERE name = 'other'").fetchone() == before


@pytest.mark.parametrize("how", ["nodata255", "no_nodata", "nodata0", "mask_band"])
def test_block_masks_without_a_mask_array_where_the_nodata_value_says_it_all(tmp_path, how):
    """Blocks skip the valid mask array only where it says no more than "255 is nodata": with nodata 0
    or a mask band the masked pixels still never become polygons, and every class's area is its
    valid pixel count."""
    import rasterio

    from unetgeo.grid import Window
    from unetgeo.io.scene import SceneReader

    a = _arr(5, (96, 80), 3)
    a[10:20, 30:50] = 255
    masked = np.zeros(a.shape, dtype=bool)
    masked[60:75, 5:40] = True
    cu = write_raster(tmp_path / "c.tif", a, nodata={"nodata0": 0, "no_nodata": None}.get(how, 255))
    if how == "mask_band":
        with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(cu, "r+") as ds:
            ds.write_mask((~masked).astype(np.uint8) * 255)
    invalid = a == 255
    if how == "nodata0":
        invalid |= a == 0
    if how == "mask_band":
        invalid |= masked
    with SceneReader(cu) as r:
        _, valid = r.read(Window(0, 0, 96, 80), bands=[1], own_nodata=255)
    assert (valid is None) == (how in ("nodata255", "no_nodata"))
    if valid is not None:
        assert (valid | (a == 255) == ~invalid | (a == 255)).all()
    res = vectorize(cu, str(tmp_path / "p.gpkg"), shapefile=False, block_px=32, class_names=["a", "b", "c"])
    for c, name in enumerate("abc"):
        assert res.area_km2[name] * 1e6 == pytest.approx(((a == c) & ~invalid).sum() * 100.0)
    polys = shapely.union_all(pyogrio.read_dataframe(res.out_uri, layer="b").geometry.values)
    assert polys.area == pytest.approx(((a == 1) & ~invalid).sum() * 100.0)


def test_bounded_heap_gives_freed_arrays_back_and_leaves_dynamic_limits(tmp_path):
    """Inside bounded_heap a freed 8 MiB array leaves the resident set at once; after a 30 MiB array
    was freed glibc's dynamic thresholds would keep it in the heap (run in a fresh process)."""
    import subprocess
    import sys

    code = """if True:
        import numpy as np, os
        from unetgeo.merge_util import bounded_heap
        page = os.sysconf("SC_PAGE_SIZE")
        def rss():
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * page / 2**20
        def drop():  # MiB given back by freeing a touched array of 8 MiB built from smaller pieces
            parts = [np.ones(1 << 20, np.uint8) for _ in range(8)]
            r0 = rss(); del parts; return r0 - rss()
        a = np.ones(30 << 20, np.uint8); del a  # glibc now takes anything below 30 MiB from the heap
        before = drop()
        with bounded_heap() as on:
            inside = drop()
        print(on, round(before), round(inside))
    """
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")})
    assert out.returncode == 0, out.stderr
    on, before, inside = out.stdout.split()
    if on != "True":
        pytest.skip("not glibc")
    assert int(inside) >= 7 > int(before)


def test_shapefile_through_gdal_c_api_equals_pyogrio(tmp_path, monkeypatch):
    """The Shapefile written through GDAL's C API holds what pyogrio's appends write: the same rows,
    attributes (times as ISO 8601 text), CRS and encoding."""
    import re

    cu = write_raster(tmp_path / "c.tif", _arr(11))
    kw = dict(block_px=32, batch_size=50, class_names=["a", "b", "c", "d"], parquet=False, acquired="2024-05-01T10:30:00Z")
    ours = vectorize(cu, str(tmp_path / "ours" / "p.gpkg"), **kw)
    monkeypatch.setenv("UNETGEO_GPKG_WRITER", "pyogrio")
    peer = vectorize(cu, str(tmp_path / "peer" / "p.gpkg"), **kw)
    a, b = (pyogrio.read_dataframe(r.shapefile_uri) for r in (ours, peer))
    assert len(a) == len(b) == sum(ours.counts.values()) > 100
    a, b = (df.assign(wkb=[shapely.to_wkb(g) for g in df.geometry]).sort_values("wkb").reset_index(drop=True) for df in (a, b))
    cols = ["class_id", "class_name", "area_m2", "perim_m", "mean_conf", "max_conf", "scene_id", "model_id", "acquired", "wkb"]
    assert a[cols].equals(b[cols])
    assert set(a["acquired"]) == {"2024-05-01T10:30:00Z"}
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", t) for t in a["created"])
    assert a.crs == b.crs and a.crs.to_epsg() == 32633
    for ext in (".cpg", ".prj"):
        assert (tmp_path / "ours" / f"p{ext}").read_text() == (tmp_path / "peer" / f"p{ext}").read_text()


@pytest.mark.parametrize("writer", ["ctypes", "pyogrio"])
def test_shapefile_keeps_areas_over_ten_to_the_eight_square_metres(tmp_path, monkeypatch, capfd, writer):
    """A lake of 400 km² keeps its area in the Shapefile without a GDAL warning per polygon (GDAL's
    default Real(24.15) field leaves 8 digits before the point)."""
    import rasterio

    monkeypatch.setenv("UNETGEO_GPKG_WRITER", writer)
    a = np.zeros((40, 40), dtype=np.uint8)
    a[5:25, 5:25] = 1
    cu = write_raster(tmp_path / "c.tif", a, transform=rasterio.transform.from_origin(500000, 6000000, 1000, 1000))
    res = vectorize(cu, str(tmp_path / "p.gpkg"), class_names=["land", "lake"], block_px=16, parquet=False)
    shp = pyogrio.read_dataframe(res.shapefile_uri)
    assert sorted(shp["area_m2"]) == [4e8, 1200e6]
    assert sorted(shp["perim_m"]) == [80e3, 160e3 + 80e3]
    assert "not successfully written" not in capfd.readouterr().err


def test_a_failure_while_streaming_outlines_publishes_no_file(tmp_path, monkeypatch):
    """Every output is complete before the first is published: a failure in the last step (the
    Shapefile's streamed outlines) leaves neither the GeoPackage nor the GeoParquet file behind."""
    import unetgeo.io.shapefile as S
    import unetgeo.vectorize as vec

    def broken(*a, **k):
        raise OSError("disk full")

    cu = write_raster(tmp_path / "c.tif", _arr(13, (200, 200), 3))
    monkeypatch.setattr(vec, "HUGE_VERTICES", 12)
    monkeypatch.setattr(S, "stream_polygons", broken)
    out = tmp_path / "out"
    with pytest.raises(OSError, match="disk full"):
        vectorize(cu, str(out / "p.gpkg"), block_px=32, parquet=True, class_names=["a", "b", "c"])
    assert sorted(p.name for p in out.iterdir()) == []
