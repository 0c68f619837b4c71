"""Label rasters, vector labels rasterised onto the scene grid, RGB-coded mask pairs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from rasterio import Affine

from unetgeo.config import load_config
from unetgeo.errors import GridMismatchError, LabelError
from unetgeo.grid import Grid
from unetgeo.io import labels as L
from unetgeo.io.store import open_store

CRS = "EPSG:32633"
T = Affine(10, 0, 500000, 0, -10, 5400000)


def _grid(h: int = 64, w: int = 80) -> Grid:
    from rasterio.crs import CRS as RCRS

    return Grid(RCRS.from_user_input(CRS).to_wkt(), tuple(T)[:6], h, w)


def _px_box(r0: int, c0: int, r1: int, c1: int):
    """Polygon covering pixel rows r0..r1-1, cols c0..c1-1 exactly (edges on pixel edges)."""
    from shapely import box

    x0, y0 = T @ (c0, r1)
    x1, y1 = T @ (c1, r0)
    return box(x0, y0, x1, y1)


def test_raster_labels_copied_mapped_and_checked(tmp_path):
    g = _grid()
    lab = np.zeros((64, 80), dtype=np.uint8)
    lab[10:20, 5:15] = 200
    lab[:, :3] = 7  # nodata below
    p = tmp_path / "lab.tif"
    with rasterio.open(p, "w", driver="GTiff", width=80, height=64, count=1, dtype="uint8", crs=CRS, transform=T, nodata=7) as ds:
        ds.write(lab, 1)
    out = tmp_path / "labels.zarr"
    L.write_raster_label_store(str(p), g, str(out), tile_px=32, n_classes=2, class_map={"0": 0, "200": 1}, run_key="k")
    arr = np.asarray(open_store(str(out))[:])
    assert (arr[10:20, 5:15] == 1).all() and (arr[:, :3] == 255).all() and (arr[30:, 20:] == 0).all()
    with pytest.raises(LabelError, match=r"values \[200\].*class_map"):
        L.write_raster_label_store(str(p), g, str(tmp_path / "l2.zarr"), tile_px=32, n_classes=2, run_key="k")
    with pytest.raises(GridMismatchError, match="lab.tif"):
        L.write_raster_label_store(str(p), _grid(64, 81), str(tmp_path / "l3.zarr"), tile_px=32, n_classes=2, run_key="k")


def _write_vectors(path, geoms, kinds, crs=CRS, driver=None):
    import geopandas as gpd

    gdf = gpd.GeoDataFrame({"kind": kinds}, geometry=list(geoms), crs=crs)
    gdf.to_file(path, driver=driver)
    return gdf


@pytest.mark.parametrize("fmt", ["gpkg", "geojson_4326"])
def test_vector_labels_rasterise_onto_the_right_pixels(tmp_path, fmt):
    g = _grid()
    water = _px_box(10, 20, 30, 50)  # crosses the 32 px window borders
    forest = _px_box(40, 0, 64, 16)
    inner = _px_box(15, 25, 20, 30)  # later feature wins where they overlap
    gdf = _write_vectors(tmp_path / "v.gpkg", [water, forest, inner], ["lake", "wood", "island"])
    path = tmp_path / "v.gpkg"
    if fmt == "geojson_4326":
        path = tmp_path / "v.geojson"
        gdf.to_crs("EPSG:4326").to_file(path, driver="GeoJSON")
    out = tmp_path / "labels.zarr"
    L.write_vector_label_store(
        str(path), g, str(out), tile_px=32, n_classes=3, class_attribute="kind",
        class_map={"lake": 2, "wood": 1, "island": 0, "__other__": 0}, class_names=["land", "forest", "water"], run_key="k",
    )
    got = np.asarray(open_store(str(out))[:])
    want = np.zeros((64, 80), dtype=np.uint8)
    want[10:30, 20:50] = 2
    want[40:64, 0:16] = 1
    want[15:20, 25:30] = 0
    if fmt == "gpkg":
        np.testing.assert_array_equal(got, want)
    else:  # the round trip through degrees moves edges by far less than a pixel
        assert (got == want).mean() > 0.995
    # without "__other__", uncovered pixels are ignored
    L.write_vector_label_store(
        str(path), g, str(tmp_path / "l2.zarr"), tile_px=32, n_classes=3, class_attribute="kind",
        class_map={"lake": 2, "wood": 1, "island": 0}, class_names=["land", "forest", "water"], run_key="k",
    )
    got2 = np.asarray(open_store(str(tmp_path / "l2.zarr"))[:])
    assert (got2[0:5, 60:80] == 255).all() and (got2[12, 40] == 2)


def test_vector_labels_unmapped_and_missing_attribute(tmp_path):
    g = _grid()
    _write_vectors(tmp_path / "v.gpkg", [_px_box(0, 0, 10, 10), _px_box(20, 20, 30, 30)], ["water", "marsh"])
    kw = dict(tile_px=32, n_classes=2, class_names=["background", "water"], run_key="k")
    with pytest.raises(LabelError, match=r"values \['marsh'\]"):
        L.write_vector_label_store(str(tmp_path / "v.gpkg"), g, str(tmp_path / "a.zarr"), class_attribute="kind", class_map=None, **kw)
    with pytest.raises(LabelError, match=r"no attribute 'cls'.*\['kind'\]"):
        L.write_vector_label_store(str(tmp_path / "v.gpkg"), g, str(tmp_path / "b.zarr"), class_attribute="cls", class_map=None, **kw)
    # class names work without a class_map; 255 ignores a value
    L.write_vector_label_store(str(tmp_path / "v.gpkg"), g, str(tmp_path / "c.zarr"), class_attribute="kind",
                               class_map={"water": 1, "marsh": 255}, **kw)
    got = np.asarray(open_store(str(tmp_path / "c.zarr"))[:])
    assert (got[:10, :10] == 1).all() and (got[20:30, 20:30] == 255).all()


def test_vector_file_with_a_crs_that_cannot_be_right_is_refused(tmp_path):
    g = _grid()
    # metres in a file that declares EPSG:4326 (GeoJSON without a crs member means 4326)
    fc = {"type": "FeatureCollection", "features": [{
        "type": "Feature", "properties": {"kind": "water"},
        "geometry": {"type": "Polygon", "coordinates": [[[500100, 5399900], [500300, 5399900], [500300, 5399700], [500100, 5399900]]]},
    }]}
    p = tmp_path / "lying.geojson"
    p.write_text(json.dumps(fc))
    with pytest.raises(LabelError) as e:
        L.write_vector_label_store(str(p), g, str(tmp_path / "x.zarr"), tile_px=32, n_classes=2, class_attribute="kind",
                                   class_map={"water": 1}, class_names=["bg", "water"], run_key="k")
    msg = str(e.value)
    assert "lying.geojson" in msg and "EPSG:4326" in msg and "500100" in msg and "ogr2ogr -a_srs" in msg
    # right CRS, wrong place: refused as not intersecting the scene
    _write_vectors(tmp_path / "far.gpkg", [_px_box(0, 0, 10, 10)], ["water"], crs="EPSG:32632")
    with pytest.raises(LabelError, match="miss the scene"):
        L.write_vector_label_store(str(tmp_path / "far.gpkg"), g, str(tmp_path / "y.zarr"), tile_px=32, n_classes=2,
                                   class_attribute="kind", class_map={"water": 1}, class_names=["bg", "water"], run_key="k")


@pytest.mark.realdata
def test_solaris_labels_declaring_4326_but_holding_albers_metres_are_refused(shared_data, tmp_path):
    from unetgeo.io.scene import open_scene

    scene = shared_data / "solaris" / "sample_geotiff_custom_proj.tif"
    vec = shared_data / "solaris" / "geotiff_custom_proj_labels.geojson"
    info = open_scene(str(scene))
    with pytest.raises(LabelError) as e:
        L.write_vector_label_store(str(vec), info.grid, str(tmp_path / "l.zarr"), tile_px=256, n_classes=2,
                                   class_attribute="id", class_map=None, class_names=["bg", "building"], run_key="k")
    msg = str(e.value)
    assert str(vec) in msg and "EPSG:4326" in msg
    assert "-663347" in msg and "2.12994e+06" in msg  # the coordinate range
    assert "ogr2ogr -a_srs" in msg
    assert not (tmp_path / "l.zarr").exists() and not (tmp_path / "l.zarr.tmp").exists()


def test_decode_rgb_mask_and_unknown_colours():
    rgb = np.zeros((2, 3, 3), dtype=np.uint8)
    rgb[0, 0] = (226, 169, 41)
    rgb[0, 1] = (60, 16, 152)
    rgb[0, 2] = (155, 155, 155)
    table = [(60, 16, 152), None, (226, 169, 41)]
    ids = L.decode_rgb_mask(rgb, table, ignore_rgb=[(155, 155, 155), (0, 0, 0)])
    assert ids.tolist() == [[2, 0, 255], [255, 255, 255]]
    rgb[1, 1] = (1, 2, 3)
    with pytest.raises(LabelError, match=r"\(1, 2, 3\) 16.67%"):
        L.decode_rgb_mask(rgb, table, ignore_rgb=[(155, 155, 155), (0, 0, 0)], uri="m.png")


def test_find_pairs_needs_every_mask(tmp_path):
    from PIL import Image

    for k in (1, 2):
        (tmp_path / "t" / "images").mkdir(parents=True, exist_ok=True)
        (tmp_path / "t" / "masks").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "t" / "images" / f"a{k}.jpg")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "t" / "masks" / "a1.png")
    with pytest.raises(LabelError, match=r"a2.jpg: its mask .*a2.png is missing"):
        L.find_pairs(str(tmp_path), ["*/images/*.jpg"], ("images/", "masks/"), ".png")
    with pytest.raises(LabelError, match="no image matches"):
        L.find_pairs(str(tmp_path), ["*/images/*.tif"], ("images/", "masks/"), ".png")


@pytest.mark.realdata
def test_dubai_masks_decode_to_the_right_class_ids(shared_data):
    from PIL import Image

    cfg = load_config("configs/dubai_landcover.yaml")
    table = [c.rgb for c in cfg.classes]
    assert cfg.class_names == ["building", "land", "road", "vegetation", "water"]
    root = shared_data / "dubai_landcover"
    pairs = L.find_pairs(str(root), ["tile_6/images/*.jpg"], ("images/", "masks/"), ".png")
    assert len(pairs) == 9
    readme = {(60, 16, 152): 0, (132, 41, 246): 1, (110, 193, 228): 2, (254, 221, 58): 3, (226, 169, 41): 4,
              (155, 155, 155): 255, (0, 0, 0): 255}
    seen = set()
    for img, mask in pairs[:4]:
        image, ids = L.read_pair(img, mask, table, cfg.training.pairs.ignore_rgb, n_bands=3)
        raw = np.asarray(Image.open(mask).convert("RGB"))
        assert image.shape == (3, *ids.shape) and ids.shape == raw.shape[:2]
        for colour, cid in readme.items():
            sel = (raw == np.array(colour, dtype=np.uint8)).all(axis=-1)
            assert (ids[sel] == cid).all(), (mask, colour)
            if sel.any():
                seen.add(cid)
    assert {0, 1, 4} <= seen  # buildings, land and water occur in tile 6
