"""The command-line contract: exit codes, one-line errors naming the file, outputs of predict."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio

from unetgeo.cli import main

sys.path.insert(0, str(Path(__file__).parent))
from test_infer import _bundle, _scene  # noqa: E402


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "unetgeo.cli", *args], capture_output=True, text=True, timeout=300)


def _one_line_error(res: subprocess.CompletedProcess, *must_contain: str) -> None:
    assert res.returncode == 2, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one line, got: {res.stderr!r}"
    for text in must_contain:
        assert text in lines[0]


def test_help_teaches_every_stage() -> None:
    res = run_cli("--help")
    assert res.returncode == 0
    for cmd in ("tile", "train", "predict", "stitch", "vectorize", "run", "evaluate", "demo"):
        assert cmd in res.stdout
    assert "Exit codes" in res.stdout
    res = run_cli("predict", "--help")
    assert "--scales" in res.stdout and "--flips" in res.stdout and "--device" in res.stdout


def test_not_a_geotiff_exits_2_with_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "scene.tif"
    bad.write_text("not an image")
    _one_line_error(run_cli("tile", str(bad), str(tmp_path / "t.zarr")), "scene.tif", "cannot be read as a raster")
    assert not any(p.name.startswith("t.zarr") for p in tmp_path.iterdir())


def test_no_crs_exits_2_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "nocrs.tif"
    with rasterio.open(path, "w", driver="GTiff", height=16, width=16, count=1, dtype="uint8") as ds:
        ds.write(np.ones((1, 16, 16), np.uint8))
    _one_line_error(run_cli("tile", str(path), str(tmp_path / "t.zarr")), "nocrs.tif", "has no CRS")


def test_missing_model_and_bad_args(tmp_path: Path) -> None:
    scene = _scene(tmp_path / "s.tif", 64)
    res = run_cli("predict", str(scene), "--model", str(tmp_path / "nomodel"), "--out", str(tmp_path / "run"))
    _one_line_error(res, "nomodel")
    assert not (tmp_path / "run").exists()
    res = run_cli("predict", str(scene), "--model", "m", "--out", "o", "--scales", "1,abc")
    assert res.returncode == 2 and "--scales" in res.stderr


def test_band_mismatch_exits_2_naming_both_lists(tmp_path: Path) -> None:
    scene = _scene(tmp_path / "s.tif", 64)
    model = _bundle(tmp_path / "model", bands=["b02", "b03", "b04", "b08", "b12"])  # b12 = swir2, not swir
    res = run_cli("predict", str(scene), "--model", str(model), "--out", str(tmp_path / "run"))
    _one_line_error(res, "s.tif", "'blue', 'green'", "'b02', 'b03'")


def test_predict_writes_georeferenced_cogs(tmp_path: Path) -> None:
    scene = _scene(tmp_path / "s.tif", 160)
    model = _bundle(tmp_path / "model")
    rc = main(["-q", "predict", str(scene), "--model", str(model), "--out", str(tmp_path / "run"),
               "--tile-size", "64", "--halo", "16", "--flips"])
    assert rc == 0
    from rio_cogeo.cogeo import cog_validate

    for name in ("classes.tif", "confidence.tif"):
        out = tmp_path / "run" / name
        ok, errors, _ = cog_validate(str(out))
        assert ok, errors
        with rasterio.open(out) as o, rasterio.open(scene) as s:
            assert o.crs == s.crs and o.transform == s.transform and o.shape == s.shape
            assert o.nodata == 255
            data = o.read(1)
            assert (data[:40, :40] == 255).all()  # the nodata corner of the scene
            assert (data[60:, 60:] != 255).all()


@pytest.mark.parametrize("argv", [["tile"], ["predict", "x.tif"], ["bogus"]])
def test_usage_errors_exit_2(argv: list[str]) -> None:
    assert run_cli(*argv).returncode == 2


def test_vectorize_writes_geoparquet_beside_the_geopackage(tmp_path: Path) -> None:
    import geopandas as gpd

    arr = np.zeros((40, 40), dtype=np.uint8)
    arr[5:15, 5:15] = 1
    arr[20:35, 22:30] = 1
    profile = dict(driver="GTiff", width=40, height=40, count=1, dtype="uint8", crs="EPSG:32633", nodata=255,
                   transform=rasterio.Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 6000000.0))
    with rasterio.open(tmp_path / "classes.tif", "w", **profile) as ds:
        ds.write(arr, 1)
    out = tmp_path / "a" / "polygons.gpkg"
    assert main(["-q", "vectorize", str(tmp_path / "classes.tif"), str(out), "--no-shapefile"]) == 0
    pq = gpd.read_parquet(out.with_suffix(".parquet"))
    assert not out.with_suffix(".shp").exists()
    water = pq[pq["class_id"] == 1]
    assert len(water) == 2 and sorted(water.area) == [100 * 100.0, 120 * 100.0]
    assert pq.crs.to_epsg() == 32633
    out_b = tmp_path / "b" / "polygons.gpkg"
    assert main(["-q", "vectorize", str(tmp_path / "classes.tif"), str(out_b), "--no-parquet"]) == 0
    assert out_b.exists() and out_b.with_suffix(".shp").exists() and not out_b.with_suffix(".parquet").exists()
