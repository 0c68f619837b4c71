"""write_report: summary.json keys and values, quicklook.png written and sized."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from PIL import Image
from pyproj import CRS

from unetgeo.config import Config
from unetgeo.flood import flood_polygons, flood_raster
from unetgeo.grid import Grid, iter_tile_windows
from unetgeo.io.store import ChunkedStoreWriter
from unetgeo.report import raster_class_areas_m2, write_report
from unetgeo.stitch import stitch
from unetgeo.vectorize import vectorize

WKT = CRS.from_epsg(32633).to_wkt()
T = (10.0, 0.0, 500000.0, 0.0, -10.0, 6000000.0)
H, W = 200, 260


def water_mask(h=H, w=W, cx=130, r=60):
    yy, xx = np.mgrid[:h, :w]
    return (yy - 100) ** 2 + (xx - cx) ** 2 < r**2


def make_run(tmp_path):
    """scene.tif (RGB) + probs/valid stores -> stitch -> classes.tif, polygons, flood."""
    water = water_mask()
    valid = np.ones((H, W), bool)
    valid[:, :10] = False
    rgb = np.zeros((3, H, W), np.uint8)
    rgb[:, ~water] = np.array([[90], [140], [60]])
    rgb[:, water] = np.array([[20], [40], [150]])
    rgb[:, ~valid] = 0
    prof = dict(driver="GTiff", width=W, height=H, count=3, dtype="uint8", crs=WKT, transform=rasterio.Affine(*T),
                nodata=0, tiled=True, blockxsize=64, blockysize=64)
    scene = tmp_path / "scene.tif"
    with rasterio.open(scene, "w", **prof) as ds:
        ds.write(rgb)
        ds.descriptions = ("red", "green", "blue")
    probs = np.stack([np.where(water, 0.1, 0.9), np.where(water, 0.9, 0.1)]).astype(np.float16)
    probs[:, ~valid] = 0
    grid = Grid(WKT, T, H, W)
    attrs = {**grid.to_attrs(), "class_names": ["background", "water"], "class_colors": ["#d9d9d9", "#1f78b4"],
             "model_id": "m-report", "source": {"uri": str(scene), "sha256": "0"}}
    pw = ChunkedStoreWriter(str(tmp_path / "run" / "probs.zarr"), shape=probs.shape, chunk_px=64, dtype="float16",
                            fill_value=0, attrs=attrs, run_key="k")
    vw = ChunkedStoreWriter(str(tmp_path / "run" / "valid.zarr"), shape=(H, W), chunk_px=64, dtype=bool,
                            fill_value=False, attrs=grid.to_attrs(), run_key="k")
    for win in iter_tile_windows(H, W, 64):
        pw.write(win, probs[(slice(None), *win.slices)])
        vw.write(win, valid[win.slices])
    run = tmp_path / "run"
    st = stitch(pw.publish(), vw.publish(), str(run))
    vec = vectorize(st.classes_uri, str(run / "polygons.gpkg"), confidence_uri=st.confidence_uri, block_px=64)
    return scene, run, st, vec, water, valid


def test_report_summary_and_quicklook(tmp_path):
    scene, run, st, vec, water, valid = make_run(tmp_path)
    # reference: a smaller lake -> the ring between is flooded
    ref = np.where(water_mask(r=40), 1, 0).astype(np.uint8)
    ref_uri = tmp_path / "reference.tif"
    with rasterio.open(ref_uri, "w", driver="GTiff", width=W, height=H, count=1, dtype="uint8", crs=WKT,
                       transform=rasterio.Affine(*T), nodata=255) as ds:
        ds.write(ref, 1)
    fu = flood_raster(st.classes_uri, str(ref_uri), str(run / "flood.tif"), water_class_id=1)
    fv = flood_polygons(fu, str(run / "flood.gpkg"), shapefile=False)
    # truth: the true lake, with a 10-px strip mislabelled as background
    truth = water.astype(np.uint8)
    truth[95:105, 70:190] = 0
    truth_uri = tmp_path / "truth.tif"
    with rasterio.open(truth_uri, "w", driver="GTiff", width=W, height=H, count=1, dtype="uint8", crs=WKT,
                       transform=rasterio.Affine(*T), nodata=255) as ds:
        ds.write(truth, 1)

    cfg = Config()
    timings = {"tile": 1.0, "predict": 2.5, "stitch": st.seconds, "vectorize": vec.seconds}
    s = write_report(str(run), scene_uri=str(scene), model_dir=str(tmp_path / "no_model"), config=cfg,
                     timings=timings, classes_uri=st.classes_uri, polygons_uri=vec.out_uri, flood_uri=fu,
                     flood_polygons_uri=fv.out_uri, truth_uri=str(truth_uri), reference_uri=str(ref_uri))

    on_disk = json.loads((run / "summary.json").read_text())
    assert on_disk == s
    for key in ("scene", "model", "config", "area_km2", "polygon_counts", "flooded_km2", "iou", "miou",
                "timings_s", "outputs", "unetgeo_version", "created"):
        assert key in s, key
    assert s["scene"]["uri"] == str(scene) and s["scene"]["epsg"] == 32633
    assert (s["scene"]["height"], s["scene"]["width"]) == (H, W)
    assert s["model"]["dir"] == str(tmp_path / "no_model") and "error" in s["model"]
    assert s["config"]["name"] == "flood" and s["config"]["hash"] == cfg.config_hash()
    assert s["config"]["dump"]["classes"][1]["name"] == "water"
    n_water = int((water & valid).sum())
    assert s["area_km2"]["water"] == pytest.approx(n_water * 100 / 1e6)
    assert s["area_km2"]["background"] == pytest.approx(int((~water & valid).sum()) * 100 / 1e6)
    assert s["nodata_km2"] == pytest.approx(int((~valid).sum()) * 100 / 1e6)
    assert s["polygon_counts"] == vec.counts == {"background": 1, "water": 1}
    assert s["polygon_area_km2"]["water"] == pytest.approx(n_water * 100 / 1e6)
    flooded = water & valid & ~water_mask(r=40)
    assert s["flooded_km2"] == pytest.approx(int(flooded.sum()) * 100 / 1e6)
    assert s["flood_polygon_count"] == 1
    assert s["reference"] == str(ref_uri)
    # IoU against the truth: the strip inside the lake is a false positive for water
    t, p, v = truth.astype(bool), water, valid
    iou_w = (t & p & v).sum() / ((t | p) & v).sum()
    iou_b = (~t & ~p & v).sum() / ((~t | ~p) & v).sum()
    assert s["iou"]["water"] == pytest.approx(iou_w)
    assert s["iou"]["background"] == pytest.approx(iou_b)
    assert s["miou"] == pytest.approx((iou_w + iou_b) / 2)
    assert s["timings_s"]["predict"] == 2.5 and s["timings_s"]["total"] >= 3.5 and "report" in s["timings_s"]
    names = {o["name"] for o in s["outputs"]}
    assert {"classes.tif", "confidence.tif", "polygons.gpkg", "polygons.shp", "flood.tif", "flood.gpkg",
            "quicklook.png", "summary.json", "classes.qml"} <= names
    img = Image.open(run / "quicklook.png")
    assert img.size[0] <= 1600 and img.size[1] <= 1600 and img.size[0] >= 800
    px = np.asarray(img.convert("RGB"))
    assert px.std() > 10  # something was drawn
    assert not list(run.glob("*.tmp"))


def test_report_minimal_without_flood_or_truth(tmp_path):
    scene, run, st, vec, water, valid = make_run(tmp_path)
    s = write_report(str(run), scene_uri=str(scene), model_dir=None, config=None, timings={},
                     classes_uri=st.classes_uri, polygons_uri=vec.out_uri)
    assert s["flooded_km2"] is None and s["iou"] is None and s["miou"] is None and s["config"] is None
    assert s["polygon_counts"] == {"background": 1, "water": 1}
    assert (run / "quicklook.png").stat().st_size > 10_000
    assert "_class_colors" not in s


def test_report_extra_keys_are_merged_into_summary_json(tmp_path):
    scene, run, st, vec, water, valid = make_run(tmp_path)
    extra = {"options": {"tile_px": 64, "flips": True}, "input_checks": [{"file": str(scene), "ok": True}]}
    s = write_report(str(run), scene_uri=str(scene), model_dir=None, config=None, timings={},
                     classes_uri=st.classes_uri, polygons_uri=None, extra=extra)
    on_disk = json.loads((run / "summary.json").read_text())
    assert on_disk["options"] == {"tile_px": 64, "flips": True} == s["options"]
    assert on_disk["input_checks"] == [{"file": str(scene), "ok": True}]
    assert on_disk["class_names"] == ["background", "water"] and on_disk["polygon_counts"] is None


def test_raster_class_areas_geographic(tmp_path):
    a = np.zeros((30, 20), np.uint8)
    a[:10] = 1
    a[25:] = 255
    p = tmp_path / "geo.tif"
    with rasterio.open(p, "w", driver="GTiff", width=20, height=30, count=1, dtype="uint8", crs="EPSG:4326",
                       transform=rasterio.Affine(0.01, 0, 10.0, 0, -0.01, 60.0), nodata=255) as ds:
        ds.write(a, 1)
    pixels, area = raster_class_areas_m2(str(p), block_px=16)
    assert pixels[1] == 200 and pixels[0] == 300 and pixels[255] == 100
    # rows nearer the pole are smaller: class 1 (northern rows) has less area per pixel
    assert area[1] / 200 < area[0] / 300
    from pyproj import Geod

    expected, _ = Geod(ellps="WGS84").polygon_area_perimeter([10.0, 10.2, 10.2, 10.0], [60.0, 60.0, 59.9, 59.9])
    assert area[1] == pytest.approx(abs(expected), rel=1e-5)  # cells follow parallels, the polygon geodesics
