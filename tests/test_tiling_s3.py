"""Stage tile with s3:// input and output, against a local S3 emulator (moto's server mode, loopback only)."""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from unetgeo.io.store import ChunkedStoreWriter, open_store
from unetgeo.tiling import make_tiles

pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")
BUCKET = "scenes"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def s3() -> Iterator[object]:
    """A moto S3 server on 127.0.0.1 with one bucket; fsspec/s3fs reach it through AWS_ENDPOINT_URL."""
    import boto3
    import s3fs

    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    with pytest.MonkeyPatch.context() as mp:
        for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
                     "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint}.items():
            mp.setenv(k, v)
        mp.delenv("AWS_PROFILE", raising=False)
        s3fs.S3FileSystem.clear_instance_cache()
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        try:
            yield client
        finally:
            s3fs.S3FileSystem.clear_instance_cache()
            server.stop()


def _scene_bytes(tmp_path: Path) -> tuple[bytes, np.ndarray]:
    rng = np.random.default_rng(11)
    data = rng.integers(1, 5000, (3, 150, 170)).astype(np.uint16)
    data[:, :20, :30] = 0
    p = tmp_path / "scene.tif"
    with rasterio.open(p, "w", driver="GTiff", height=150, width=170, count=3, dtype="uint16", nodata=0,
                       crs="EPSG:32633", transform=from_origin(500000, 5400000, 10, 10), tiled=True,
                       blockxsize=64, blockysize=64, compress="deflate") as ds:
        ds.write(data)
    return p.read_bytes(), data


def _keys(client, prefix: str) -> set[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return {o["Key"] for page in pages for o in page.get("Contents", [])}


def test_s3_scene_to_s3_store_round_trips(s3, tmp_path: Path) -> None:
    blob, data = _scene_bytes(tmp_path)
    s3.put_object(Bucket=BUCKET, Key="a/scene.tif", Body=blob)
    r = make_tiles(f"s3://{BUCKET}/a/scene.tif", f"s3://{BUCKET}/a/run/tiles.zarr", tile_px=64)
    assert r.valid_uri == f"s3://{BUCKET}/a/run/valid.zarr" and r.n_chunks == 9 and r.n_written == 9
    tiles, valid = open_store(r.tiles_uri), open_store(r.valid_uri)
    np.testing.assert_array_equal(tiles[:], data)
    np.testing.assert_array_equal(valid[:], (data != 0).any(axis=0))
    attrs = dict(tiles.attrs)
    assert attrs["source"] == {"uri": f"s3://{BUCKET}/a/scene.tif", "sha256": hashlib.sha256(blob).hexdigest()}
    assert tuple(attrs["transform"]) == (10.0, 0.0, 500000.0, 0.0, -10.0, 5400000.0)
    assert rasterio.CRS.from_wkt(attrs["crs"]).to_epsg() == 32633 and attrs["complete"] is True
    assert attrs["stats"]["b1"]["valid_pixels"] == int((data[0] != 0).sum())
    assert not _keys(s3, "a/run/tiles.zarr.tmp") and not _keys(s3, "a/run/valid.zarr.tmp")
    # a rerun finds the complete store and writes nothing
    assert make_tiles(f"s3://{BUCKET}/a/scene.tif", f"s3://{BUCKET}/a/run/tiles.zarr", tile_px=64).n_written == 0


def test_s3_interrupted_run_is_invisible_then_resumes(s3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed part-way: no zarr.json under the final name; the rerun writes only the missing chunks."""
    import s3fs

    blob, data = _scene_bytes(tmp_path)
    s3.put_object(Bucket=BUCKET, Key="b/scene.tif", Body=blob)
    scene, out = f"s3://{BUCKET}/b/scene.tif", f"s3://{BUCKET}/b/run/tiles.zarr"
    real_write = ChunkedStoreWriter.write
    calls = {"n": 0}

    def failing_write(self, win, arr, **kw):
        if self.uri.endswith("tiles.zarr"):
            calls["n"] += 1
            if calls["n"] > 4:
                raise OSError("simulated crash")
        real_write(self, win, arr, **kw)

    monkeypatch.setattr(ChunkedStoreWriter, "write", failing_write)
    with pytest.raises(OSError, match="simulated crash"):
        make_tiles(scene, out, tile_px=64)
    monkeypatch.setattr(ChunkedStoreWriter, "write", real_write)
    keys = _keys(s3, "b/run/")
    assert "b/run/tiles.zarr/zarr.json" not in keys and not any(k.startswith("b/run/tiles.zarr/") for k in keys)
    assert "b/run/tiles.zarr.tmp/zarr.json" in keys
    done = {k for k in keys if k.startswith("b/run/tiles.zarr.tmp/.unetgeo_done/")}
    assert len(done) == 4
    with pytest.raises(Exception, match="no Zarr array"):
        open_store(out)

    # publish copies every chunk before the root zarr.json: spy on the copies
    copies: list[list[str]] = []
    real_copy = s3fs.S3FileSystem._copy

    async def spy_copy(self, path1, path2, *a, **k):
        srcs = path1 if isinstance(path1, list) else [path1]
        copies.append([p.rsplit("/", 1)[-1] for p in srcs])
        if any(p.endswith("tiles.zarr.tmp/zarr.json") for p in srcs):
            present = _keys(s3, "b/run/tiles.zarr/")
            assert len([k for k in present if "/c/" in k]) == 9, "zarr.json published before all chunks"
        return await real_copy(self, path1, path2, *a, **k)

    monkeypatch.setattr(s3fs.S3FileSystem, "_copy", spy_copy)
    s3fs.S3FileSystem.clear_instance_cache()  # sync wrappers are bound when an instance is made
    r = make_tiles(scene, out, tile_px=64)
    assert r.n_written == 9 - 4
    assert copies and copies[-1] == ["zarr.json"]
    np.testing.assert_array_equal(open_store(out)[:], data)
    keys = _keys(s3, "b/run/")
    assert "b/run/tiles.zarr/zarr.json" in keys and not any(".tmp/" in k for k in keys)
    assert not any(".unetgeo_done" in k for k in keys)
