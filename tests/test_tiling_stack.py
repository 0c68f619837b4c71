"""Stage tile on band stacks: single-band files (Sentinel-2 style, 10 m + 20 m) onto the finest grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from scipy.ndimage import binary_dilation, map_coordinates

from unetgeo.errors import GridMismatchError, InputError
from unetgeo.io.store import open_store
from unetgeo.tiling import make_tiles, scene_info, scene_sources

X0, Y0 = 600000.0, 5300000.0  # top-left corner shared by every file (UTM 33N, metres)
H10, W10 = 96, 120  # the 10 m grid


def write_band(path: Path, data: np.ndarray, res_m: float, *, nodata=None, crs="EPSG:32633", x0=X0, y0=Y0,
               transform=None) -> Path:
    """One-band (or ``(b, h, w)``) GeoTIFF with its top-left corner at ``(x0, y0)``."""
    arr = data if data.ndim == 3 else data[None]
    with rasterio.open(path, "w", driver="GTiff", height=arr.shape[1], width=arr.shape[2], count=arr.shape[0],
                       dtype=arr.dtype.name, nodata=nodata, crs=crs,
                       transform=transform or from_origin(x0, y0, res_m, res_m)) as ds:
        ds.write(arr)
    return path


def bilinear_reference(coarse: np.ndarray, ratio: int, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling by pixel centres, written independently of GDAL (edges clamped)."""
    yy = (np.arange(shape[0]) + 0.5) / ratio - 0.5
    xx = (np.arange(shape[1]) + 0.5) / ratio - 0.5
    gy, gx = np.meshgrid(yy, xx, indexing="ij")
    return map_coordinates(coarse.astype(np.float64), [gy, gx], order=1, mode="nearest")


@pytest.fixture()
def s2_files(tmp_path: Path) -> dict:
    """B02/B03/B04/B08 at 10 m and B11 at 20 m (uint16, nodata 0), with nodata in B02 and B11."""
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:H10, 0:W10]
    bands10 = {}
    for i, name in enumerate(("B02", "B03", "B04", "B08")):
        a = (800 + 300 * i + 200 * np.sin(xx / 9.0 + i) * np.cos(yy / 7.0) + rng.normal(0, 20, (H10, W10)))
        bands10[name] = np.clip(a, 1, 60000).astype(np.uint16)
    bands10["B02"][90:, :10] = 0  # nodata in one 10 m band only
    ys, xs = np.mgrid[0 : H10 // 2, 0 : W10 // 2]
    b11 = np.clip(1500 + 400 * np.sin(xs / 5.0) * np.cos(ys / 4.0) + rng.normal(0, 30, ys.shape), 1, 60000).astype(np.uint16)
    b11[:6, 40:] = 0  # a nodata corner in the 20 m band
    paths = [write_band(tmp_path / f"{n}.tif", a, 10, nodata=0) for n, a in bands10.items()]
    paths.append(write_band(tmp_path / "B11.tif", b11, 20, nodata=0))
    return {"paths": [str(p) for p in paths], "bands10": bands10, "b11": b11, "dir": tmp_path}


@pytest.mark.parametrize("tile_px", [25, 64])
def test_stack_is_tiled_on_the_finest_grid_with_bilinear_20m_band(s2_files: dict, tmp_path: Path, tile_px: int) -> None:
    r = make_tiles(s2_files["paths"], str(tmp_path / "run" / "tiles.zarr"), tile_px=tile_px)
    tiles, valid = open_store(r.tiles_uri), open_store(r.valid_uri)
    assert r.band_names == ("B02", "B03", "B04", "B08", "B11")  # file stems, in the given order
    assert tiles.shape == (5, H10, W10) and tiles.chunks == (5, tile_px, tile_px) and str(tiles.dtype) == "uint16"
    attrs = dict(tiles.attrs)
    assert tuple(attrs["transform"]) == (10.0, 0.0, X0, 0.0, -10.0, Y0)
    assert rasterio.CRS.from_wkt(attrs["crs"]).to_epsg() == 32633
    for i, name in enumerate(("B02", "B03", "B04", "B08")):
        np.testing.assert_array_equal(tiles[i], s2_files["bands10"][name])  # 10 m bands untouched
    # B11: bilinear onto the 10 m grid, equal to an independent bilinear wherever its support is valid
    b11_valid = s2_files["b11"] != 0
    support_ok = ~binary_dilation(~b11_valid, np.ones((3, 3), bool))
    ok10 = np.kron(support_ok, np.ones((2, 2), bool))
    ref = bilinear_reference(s2_files["b11"], 2, (H10, W10))
    got = tiles[4].astype(np.float64)
    assert np.abs(got - ref)[ok10].max() <= 1.0
    # valid = valid in every file: B02's nodata corner and B11's (nearest) nodata corner are invalid
    expect_valid = (s2_files["bands10"]["B02"] != 0) & np.kron(b11_valid, np.ones((2, 2), bool))
    np.testing.assert_array_equal(valid[:], expect_valid)
    assert r.stats["B11"]["valid_pixels"] == int(expect_valid.sum())
    assert r.stats["B11"]["mean"] == pytest.approx(got[expect_valid].mean(), rel=1e-9)
    src = attrs["source"]
    assert src["uri"] == s2_files["paths"][0] and len(src["sha256"]) == 64
    assert [f["uri"] for f in src["files"]] == s2_files["paths"] and all(len(f["sha256"]) == 64 for f in src["files"])
    assert attrs["resampling"] == "bilinear"


def test_resampled_band_does_not_depend_on_the_chunk_layout(s2_files: dict, tmp_path: Path) -> None:
    """Each window reads its own fractional source window; the mosaic equals a one-window read."""
    whole = make_tiles(s2_files["paths"], str(tmp_path / "a" / "tiles.zarr"), tile_px=128)  # one chunk
    small = make_tiles(s2_files["paths"], str(tmp_path / "b" / "tiles.zarr"), tile_px=13)  # odd: 6.5 px at 20 m
    np.testing.assert_array_equal(open_store(small.tiles_uri)[:], open_store(whole.tiles_uri)[:])
    np.testing.assert_array_equal(open_store(small.valid_uri)[:], open_store(whole.valid_uri)[:])
    assert small.stats == whole.stats


def test_stack_in_a_given_band_order_from_a_list_file_or_a_comma_string(s2_files: dict, tmp_path: Path) -> None:
    d = s2_files["dir"]
    (d / "bands.txt").write_text("# nir, red, swir\nB08.tif\n\nB04.tif\n" + str(d / "B11.tif") + "\n")
    assert scene_sources(str(d / "bands.txt")) == [str(d / "B08.tif"), str(d / "B04.tif"), str(d / "B11.tif")]
    info = scene_info(str(d / "bands.txt"))  # what `unetgeo predict` needs to check bands before tiling
    assert info.band_names == ("B08", "B04", "B11") and info.count == 3 and (info.grid.height, info.grid.width) == (H10, W10)
    r1 = make_tiles(str(d / "bands.txt"), str(tmp_path / "l" / "tiles.zarr"), tile_px=32)
    r2 = make_tiles(f"{d / 'B08.tif'},{d / 'B04.tif'},{d / 'B11.tif'}", str(tmp_path / "c" / "tiles.zarr"), tile_px=32,
                    band_names=["nir", "red", "swir16"])
    assert r1.band_names == ("B08", "B04", "B11") and r2.band_names == ("nir", "red", "swir16")
    a, b = open_store(r1.tiles_uri), open_store(r2.tiles_uri)
    np.testing.assert_array_equal(a[0], s2_files["bands10"]["B08"])
    np.testing.assert_array_equal(a[1], s2_files["bands10"]["B04"])
    np.testing.assert_array_equal(a[:], b[:])
    assert dict(b.attrs)["band_names"] == ["nir", "red", "swir16"]
    # the grid is the finest file's wherever it stands in the list
    coarse_first = make_tiles([str(d / "B11.tif"), str(d / "B02.tif")], str(tmp_path / "f" / "tiles.zarr"), tile_px=32)
    cf = open_store(coarse_first.tiles_uri)
    assert cf.shape == (2, H10, W10) and tuple(dict(cf.attrs)["transform"]) == (10.0, 0.0, X0, 0.0, -10.0, Y0)
    np.testing.assert_array_equal(cf[0], a[2])  # B11 resampled as before
    np.testing.assert_array_equal(cf[1], s2_files["bands10"]["B02"])
    with pytest.raises(InputError, match="resampling='bicubic' is not a GDAL resampling"):
        make_tiles(s2_files["paths"], str(tmp_path / "r" / "tiles.zarr"), resampling="bicubic")
    # a one-file list is a plain scene
    single = make_tiles([s2_files["paths"][0]], str(tmp_path / "s" / "tiles.zarr"), tile_px=32)
    assert single.band_names == ("b1",) and "files" not in dict(open_store(single.tiles_uri).attrs)["source"]


def test_stack_with_a_30m_band_and_float_nan(tmp_path: Path) -> None:
    """A non-power-of-two ratio (Landsat-like 30 m thermal beside 10 m) and NaN nodata."""
    rng = np.random.default_rng(3)
    fine = rng.normal(0.2, 0.05, (H10, W10)).astype(np.float32)
    coarse = rng.normal(300.0, 5.0, (H10 // 3, W10 // 3)).astype(np.float32)
    coarse[-2:, :] = np.nan
    a = write_band(tmp_path / "red.tif", fine, 10, nodata=float("nan"))
    b = write_band(tmp_path / "thermal.tif", coarse, 30, nodata=float("nan"))
    r = make_tiles([str(a), str(b)], str(tmp_path / "tiles.zarr"), tile_px=20)
    tiles, valid = open_store(r.tiles_uri), open_store(r.valid_uri)
    np.testing.assert_array_equal(tiles[0], fine)
    expect_valid = np.kron(np.isfinite(coarse), np.ones((3, 3), bool))
    np.testing.assert_array_equal(valid[:], expect_valid)
    support_ok = np.kron(~binary_dilation(~np.isfinite(coarse), np.ones((3, 3), bool)), np.ones((3, 3), bool))
    ref = bilinear_reference(np.nan_to_num(coarse), 3, (H10, W10))
    assert np.abs(tiles[1].astype(np.float64) - ref)[support_ok].max() < 1e-3
    assert np.isfinite(r.stats["thermal"]["mean"]) and r.stats["thermal"]["valid_pixels"] == int(expect_valid.sum())


def test_stack_errors_name_the_file(s2_files: dict, tmp_path: Path) -> None:
    d = s2_files["dir"]
    ten = s2_files["paths"][:2]
    other_crs = write_band(d / "B05.tif", s2_files["b11"], 20, crs="EPSG:32634")
    with pytest.raises(GridMismatchError, match=r"B05\.tif: its CRS \(EPSG:32634\) differs .*EPSG:32633"):
        make_tiles([*ten, str(other_crs)], str(tmp_path / "t.zarr"))
    shifted = write_band(d / "B06.tif", s2_files["b11"], 20, x0=X0 + 10.0)  # half a 20 m pixel east
    with pytest.raises(GridMismatchError, match=r"B06\.tif: its extent .* does not line up"):
        make_tiles([*ten, str(shifted)], str(tmp_path / "t.zarr"))
    smaller = write_band(d / "B07.tif", s2_files["b11"][:-1], 20)  # one 20 m row short
    with pytest.raises(GridMismatchError, match=r"B07\.tif: its extent"):
        make_tiles([*ten, str(smaller)], str(tmp_path / "t.zarr"))
    as_float = write_band(d / "B8A.tif", s2_files["b11"].astype(np.float32), 20)
    with pytest.raises(InputError, match=r"B8A\.tif: data type float32 differs"):
        make_tiles([*ten, str(as_float)], str(tmp_path / "t.zarr"))
    rotated = write_band(d / "B12.tif", s2_files["b11"], 20, transform=rasterio.Affine(20, 1, X0, 1, -20, Y0))
    with pytest.raises(InputError, match=r"B12\.tif: the geotransform is rotated"):
        make_tiles([*ten, str(rotated)], str(tmp_path / "t.zarr"))
    with pytest.raises(InputError, match="5 bands but 2 band names"):
        make_tiles(s2_files["paths"], str(tmp_path / "t.zarr"), band_names=["a", "b"])
    assert not (tmp_path / "t.zarr").exists() and not (tmp_path / "t.zarr.tmp").exists()


def test_cli_tiles_a_stack_given_as_a_comma_list_or_list_file(s2_files: dict, tmp_path: Path, capsys) -> None:
    from unetgeo.cli import main

    d = s2_files["dir"]
    out = tmp_path / "cli" / "tiles.zarr"
    assert main(["-q", "tile", ",".join(s2_files["paths"]), str(out), "--tile-size", "48"]) == 0
    assert open_store(str(out)).shape == (5, H10, W10)
    (d / "bad.txt").write_text("B02.tif\nB05_utm34.tif\n")
    write_band(d / "B05_utm34.tif", s2_files["b11"], 20, crs="EPSG:32634")
    assert main(["-q", "tile", str(d / "bad.txt"), str(tmp_path / "bad" / "tiles.zarr")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "B05_utm34.tif: its CRS (EPSG:32634) differs" in err[0]
