"""STAC inboxes for the flood monitor: static catalogs on S3 (moto, loopback), ItemCollections, a
STAC API search (a tiny local HTTP server), and SCL cloud / shadow / snow pixels as "unknown"."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import rasterio
from shapely.geometry import box
from test_tiling_s3 import BUCKET, s3  # noqa: F401 - the moto S3 server fixture

from unetgeo import monitor
from unetgeo.flood import flood_polygons, flood_raster
from unetgeo.io.vector import read_polygons
from unetgeo.stac import SCL_UNKNOWN_CLASSES, band_hrefs, stac_scene_id

BANDS = ["blue", "green", "red", "nir", "swir"]
PATCH_PX20 = 16  # side of the cloud patch in 20 m SCL pixels
WHEN = "2024-05-03T10:10:31Z"


def _item(item_id: str, when: str, hrefs: dict[str, str], **extra: object) -> dict:
    assets = {k: {"href": h, "type": "image/tiff; application=geotiff; profile=cloud-optimized"}
              for k, h in hrefs.items()}
    return {"type": "Feature", "stac_version": "1.0.0", "id": item_id, "collection": "sentinel-2-l2a",
            "geometry": {"type": "Polygon", "coordinates": [[[15, 48], [16, 48], [16, 49], [15, 49], [15, 48]]]},
            "bbox": [15, 48, 16, 49], "properties": {"datetime": when}, "links": [], "assets": assets, **extra}


def _write_band(path: Path, data: np.ndarray, transform: rasterio.Affine, crs: object, nodata: int | None) -> bytes:
    h, w = data.shape
    with rasterio.open(path, "w", driver="GTiff", height=h, width=w, count=1, dtype=data.dtype, crs=crs,
                       transform=transform, nodata=nodata, tiled=True, blockxsize=32, blockysize=32,
                       compress="deflate") as ds:
        ds.write(data, 1)
    return path.read_bytes()


def _cloud_patch(pair: dict) -> tuple[int, int]:
    """``(row, col)`` in 20 m pixels of the patch: fully valid, over the most true flood pixels."""
    with rasterio.open(pair["post"].image_uri) as ds:
        valid = ds.dataset_mask() > 0
    with rasterio.open(pair["pre"].labels_uri) as a, rasterio.open(pair["post"].labels_uri) as b:
        before, after = a.read(1), b.read(1)
    flood = (after == 1) & (before == 0)
    side, best = PATCH_PX20 * 2, (-1, (0, 0))
    for r in range(0, valid.shape[0] - side + 1, 8):
        for c in range(0, valid.shape[1] - side + 1, 8):
            if valid[r:r + side, c:c + side].all() and (before[r:r + side, c:c + side] != 255).all():
                best = max(best, (int(flood[r:r + side, c:c + side].sum()), (r // 2, c // 2)))
    assert best[0] > 0, "the synthetic pair has no clear flooded block to cover"
    return best[1]


@pytest.fixture(scope="module")
def catalog(s3, pair: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:  # noqa: F811
    """A static catalog on S3: catalog.json -> items/<id>/<id>.json with per-band COGs (10 m, 20 m) and SCL."""
    tmp = tmp_path_factory.mktemp("stac")
    with rasterio.open(pair["post"].image_uri) as ds:
        data, t, crs = ds.read(), ds.transform, ds.crs
    t20 = t @ rasterio.Affine.scale(2)
    blocks = data[4].reshape(data.shape[1] // 2, 2, data.shape[2] // 2, 2).astype(np.float64)
    n_valid = (blocks > 0).sum(axis=(1, 3))
    b11 = np.where(n_valid > 0, blocks.sum(axis=(1, 3)) / np.maximum(n_valid, 1), 0).round().astype(np.uint16)
    scl = np.where(n_valid > 0, 4, 0).astype(np.uint8)  # vegetation; no data only where all is no data
    r, c = _cloud_patch(pair)
    stripes = np.array(SCL_UNKNOWN_CLASSES[1:], np.uint8)  # shadow, clouds, cirrus, snow in stripes
    scl[r:r + PATCH_PX20, c:c + PATCH_PX20] = stripes[np.arange(PATCH_PX20) % len(stripes)][None, :]
    item_id = "S2B_33UWP_20240503_0_L2A"
    prefix = f"cat/items/{item_id}"
    files = {f"B0{i}": (data[k], t, 0) for k, i in enumerate((2, 3, 4, 8))}
    files.update(B11=(b11, t20, 0), SCL=(scl, t20, None))
    for key, (arr, tr, nd) in files.items():
        s3.put_object(Bucket=BUCKET, Key=f"{prefix}/{key}.tif", Body=_write_band(tmp / f"{key}.tif", arr, tr, crs, nd))
    item = _item(item_id, WHEN, {k: f"./{k}.tif" for k in files})
    cat = {"type": "Catalog", "stac_version": "1.0.0", "id": "site", "description": "test",
           "links": [{"rel": "root", "href": "./catalog.json"}, {"rel": "child", "href": "./s2/collection.json"}]}
    col = {**cat, "type": "Collection", "id": "s2", "links": [{"rel": "parent", "href": "../catalog.json"},
                                                              {"rel": "item", "href": f"../items/{item_id}/{item_id}.json"}]}
    s3.put_object(Bucket=BUCKET, Key=f"{prefix}/{item_id}.json", Body=json.dumps(item).encode())
    s3.put_object(Bucket=BUCKET, Key="cat/s2/collection.json", Body=json.dumps(col).encode())
    s3.put_object(Bucket=BUCKET, Key="cat/catalog.json", Body=json.dumps(cat).encode())
    x0, y0 = t20 @ (c, r)
    return {"uri": f"s3://{BUCKET}/cat/catalog.json", "item_id": item_id, "scl": f"s3://{BUCKET}/{prefix}/SCL.tif",
            "patch": box(x0, y0 - PATCH_PX20 * 20, x0 + PATCH_PX20 * 20, y0), "prefix": f"s3://{BUCKET}/{prefix}"}


@pytest.fixture(scope="module")
def processed(catalog: dict, pair: dict, tiny_model: Path, tiny_config: Path,
              tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The monitor (library functions, no Prefect) over the catalog: its scene and history row."""
    out = str(tmp_path_factory.mktemp("site"))
    todo = monitor.pending_scenes(catalog["uri"], out)
    assert len(todo) == 1
    row = monitor.append_history(out, monitor.process_scene(todo[0], reference=pair["pre"].labels_uri,
                                                            model=str(tiny_model), out_root=out,
                                                            config=str(tiny_config)))
    return {"out": out, "scene": todo[0], "row": row, "run": Path(out) / todo[0].scene_id}


def _read(uri: str | Path) -> np.ndarray:
    with rasterio.open(uri) as ds:
        return ds.read(1)


def _flooded_in(gpkg: str, patch: object) -> float:
    gdf = read_polygons(gpkg, layer="flooded")
    return float(sum(g.intersection(patch).area for g in gdf.geometry))


def test_monitor_runs_a_stac_item_from_s3_and_scl_clouds_are_unknown(processed: dict, catalog: dict, pair: dict,
                                                                     tmp_path: Path) -> None:
    scene, row = processed["scene"], processed["row"]
    assert row["status"] == "ok", row["message"]
    assert row["acquired"] == WHEN and scene.acquired == WHEN
    assert scene.scene_id == stac_scene_id(catalog["item_id"], catalog["uri"])
    assert scene.unknown_mask == catalog["scl"]
    assert band_hrefs(scene.assets, BANDS, "x") == [f"{catalog['prefix']}/{b}.tif"
                                                    for b in ("B02", "B03", "B04", "B08", "B11")]
    classes = str(processed["run"] / "classes.tif")
    with rasterio.open(classes) as ds:  # stacked onto the 10 m grid
        assert (ds.height, ds.width, ds.transform.a) == (128, 128, 10.0)
    assert monitor.pending_scenes(catalog["uri"], processed["out"]) == []  # in the history: not taken again

    ref, water = pair["pre"].labels_uri, 1
    base = flood_raster(classes, ref, str(tmp_path / "base.tif"), water_class_id=water, block_px=48)
    masked = flood_raster(classes, ref, str(tmp_path / "masked.tif"), water_class_id=water, block_px=48,
                          unknown_uri=catalog["scl"])
    base_gpkg = flood_polygons(base, str(tmp_path / "base.gpkg")).out_uri
    masked_gpkg = flood_polygons(masked, str(tmp_path / "masked.gpkg")).out_uri
    patch = catalog["patch"]
    assert _flooded_in(base_gpkg, patch) > 0  # without the SCL the patch holds flood polygons
    assert _flooded_in(masked_gpkg, patch) == 0
    unknown_m2 = (_read(masked) == 255).sum() * 100.0 - (_read(base) == 255).sum() * 100.0  # 10 m pixels
    assert abs(unknown_m2 - patch.area) <= 20 * 20
    with rasterio.open(masked) as ds:
        assert json.loads(ds.tags()["unknown_classes"].replace("'", '"')) == list(SCL_UNKNOWN_CLASSES)


def test_scl_end_to_end_through_the_pipeline(processed: dict, catalog: dict, pair: dict) -> None:
    from dataclasses import fields

    from unetgeo.pipeline import SceneRun

    if "unknown_mask" not in {f.name for f in fields(SceneRun)}:
        pytest.skip("pipeline.SceneRun.unknown_mask is not wired yet (lead's change)")
    run = processed["run"]
    summary = json.loads((run / "summary.json").read_text())
    flood = _read(run / "flood.tif")
    base_unknown = ((_read(run / "classes.tif") == 255) | (_read(pair["pre"].labels_uri) == 255)).sum() * 100.0
    assert abs(summary["flood_unknown_km2"] * 1e6 - base_unknown - catalog["patch"].area) <= 20 * 20
    assert (flood == 255).sum() * 100.0 >= catalog["patch"].area
    assert _flooded_in(str(run / "flood.gpkg"), catalog["patch"]) == 0


def test_unknown_mask_off_the_scene_and_items_without_a_band_are_refused(pair: dict, tiny_model: Path,
                                                                         tmp_path: Path) -> None:
    from unetgeo.errors import GridMismatchError

    with rasterio.open(pair["post"].labels_uri) as ds:
        t, crs = ds.transform, ds.crs
    half = tmp_path / "SCL.tif"  # covers only the upper half of the scene
    _write_band(half, np.full((32, 64), 9, np.uint8), t @ rasterio.Affine.scale(2), crs, None)
    with pytest.raises(GridMismatchError, match="SCL.tif: the unknown mask"):
        flood_raster(pair["post"].labels_uri, pair["pre"].labels_uri, str(tmp_path / "f.tif"), water_class_id=1,
                     unknown_uri=str(half))
    assert not (tmp_path / "f.tif").exists()
    item = monitor.InboxScene(uri="s3://b/x.json", scene_id="x", fingerprint="{}", assets=(("blue", "s3://b/B02.tif"),))
    row = monitor.process_scene(item, reference=pair["pre"].labels_uri, model=str(tiny_model), out_root=str(tmp_path))
    assert row["status"] == "failed" and "no asset for band(s) ['green'" in row["message"]


def _collection(tmp_path: Path) -> Path:
    """An ItemCollection of three items, out of time order, in both asset key styles."""
    s2 = {k: f"https://data.example/{{i}}/{k}.tif" for k in ("B02", "B03", "B04", "B08", "B11", "SCL")}
    named = {"blue": "./c/B02.tif", "green": "./c/B03.tif", "red": "./c/B04.tif", "nir": "./c/B08.tif",
             "swir16": "./c/B11.tif", "nir08": "./c/B8A.tif"}
    late = _item("late", "2024-06-02T10:00:00Z", {k: v.format(i="late") for k, v in s2.items()})
    early = _item("early", "2024-06-01T10:00:00+00:00", {k: v.format(i="early") for k, v in s2.items()})
    middle = _item("middle", "2024-06-01T12:00:00Z", named)
    middle["assets"]["blue-jp2"] = {"href": "./c/B02.jp2", "type": "image/jp2"}
    p = tmp_path / "stac" / "items.json"
    p.parent.mkdir()
    p.write_text(json.dumps({"type": "FeatureCollection", "features": [late, middle, early]}))
    return p


def test_item_collection_in_datetime_order_and_history_skips_seen_items(tmp_path: Path) -> None:
    inbox, out = _collection(tmp_path), str(tmp_path / "site")
    todo = monitor.pending_scenes(str(inbox), out)
    assert [s.scene_id.rsplit("-", 1)[0] for s in todo] == ["early", "middle", "late"]
    assert [s.acquired for s in todo] == ["2024-06-01T10:00:00+00:00", "2024-06-01T12:00:00Z", "2024-06-02T10:00:00Z"]
    assert band_hrefs(todo[0].assets, BANDS, "early") == [f"https://data.example/early/{b}.tif"
                                                          for b in ("B02", "B03", "B04", "B08", "B11")]
    assert todo[0].unknown_mask == "https://data.example/early/SCL.tif" and todo[1].unknown_mask is None
    here = inbox.parent / "c"
    assert band_hrefs(todo[1].assets, BANDS, "middle") == [str(here / f"{b}.tif")
                                                           for b in ("B02", "B03", "B04", "B08", "B11")]
    with pytest.raises(ValueError, match="no asset for band"):
        band_hrefs(todo[1].assets, [*BANDS, "swir2"], "middle")
    monitor.append_history(out, {"scene_id": todo[0].scene_id, "status": "ok", "flooded_km2": 1.0,
                                 "uri": todo[0].uri, "fingerprint": todo[0].fingerprint})
    assert [s.scene_id for s in monitor.pending_scenes(str(inbox), out)] == [todo[1].scene_id, todo[2].scene_id]
    (tmp_path / "geo.json").write_text(json.dumps({"type": "Point", "coordinates": [0, 0]}))
    with pytest.raises(ValueError, match="STAC type 'Point'"):
        monitor.pending_scenes(str(tmp_path / "geo.json"), out)
    other = tmp_path / "other" / "items.json"
    other.parent.mkdir()
    other.write_text(inbox.read_text())  # the same item ids from another catalog: other folders
    assert {s.scene_id for s in monitor.pending_scenes(str(other), out)}.isdisjoint(s.scene_id for s in todo)


class _StacApi(BaseHTTPRequestHandler):
    """A STAC API answering ``/``, ``/conformance`` and ``/search`` (GET or POST) with fixed items."""

    items: list[dict] = []
    searches: list[dict] = []

    def _send(self, doc: dict) -> None:
        body = json.dumps(doc).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _root(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        root = self._root()
        conforms = ["https://api.stacspec.org/v1.0.0/core", "https://api.stacspec.org/v1.0.0/item-search"]
        if self.path.split("?")[0] in ("/", ""):
            self._send({"type": "Catalog", "stac_version": "1.0.0", "id": "api", "description": "test api",
                        "conformsTo": conforms,
                        "links": [{"rel": "self", "href": f"{root}/"}, {"rel": "root", "href": f"{root}/"},
                                  {"rel": "search", "href": f"{root}/search", "method": "POST",
                                   "type": "application/geo+json"}]})
        elif self.path.startswith("/conformance"):
            self._send({"conformsTo": conforms})
        else:
            self.searches.append({"query": self.path})
            self._send({"type": "FeatureCollection", "features": self.items, "links": []})

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self.searches.append(json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}"))
        self._send({"type": "FeatureCollection", "features": self.items, "links": []})

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def stac_api() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _StacApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_stac_api_search_by_bbox_and_aoi(stac_api: str, tmp_path: Path) -> None:
    pytest.importorskip("pystac_client")
    hrefs = {k: f"https://data.example/a/{k}.tif" for k in ("B02", "B03", "B04", "B08", "B11", "SCL")}
    second = _item("b", "2024-06-03T10:00:00Z", hrefs, links=[{"rel": "self", "href": f"{stac_api}/x/b"}])
    _StacApi.items, _StacApi.searches = [second, _item("a", "2024-06-01T10:00:00Z", hrefs)], []
    out = str(tmp_path / "site")
    search = {"url": stac_api, "collections": ["sentinel-2-l2a"], "bbox": [15.0, 48.0, 16.0, 49.0],
              "datetime": "2024-06-01/2024-06-30"}
    todo = monitor.pending_scenes("", out, stac_search=search)
    assert [s.scene_id.rsplit("-", 1)[0] for s in todo] == ["a", "b"]
    assert todo[1].uri == f"{stac_api}/x/b" and todo[0].uri == f"{stac_api}#a"
    assert todo[0].scene_id == stac_scene_id("a", f"{stac_api}/collections/sentinel-2-l2a")
    sent = _StacApi.searches[-1]
    assert sent["collections"] == ["sentinel-2-l2a"] and sent["bbox"] == [15.0, 48.0, 16.0, 49.0]
    assert sent["datetime"].startswith("2024-06-01T00:00:00") and sent["datetime"].split("/")[1].startswith("2024-06-30")
    aoi = tmp_path / "aoi.geojson"
    aoi.write_text(json.dumps({"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {},
                   "geometry": {"type": "Polygon", "coordinates": [[[15, 48], [15.5, 48], [15.5, 48.5], [15, 48]]]}}]}))
    monitor.pending_scenes("", out, stac_search={**{k: v for k, v in search.items() if k != "bbox"}, "aoi": str(aoi)})
    assert _StacApi.searches[-1]["intersects"]["type"] == "Polygon" and "bbox" not in _StacApi.searches[-1]
    with pytest.raises(ValueError, match="unknown key"):
        monitor.pending_scenes("", out, stac_search={**search, "limit": 3})
