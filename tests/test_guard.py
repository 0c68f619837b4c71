"""The input guard: a scene in other units than the model's training data warns, and fails with strict."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from tinymodel import BANDS, write_tiny_model

from unetgeo.errors import InputError
from unetgeo.guard import check_input


def _reflectance_scene(path: Path, factor: float = 1e-4) -> Path:
    rng = np.random.default_rng(2)
    data = (rng.normal(1000, 400, (len(BANDS), 96, 96)).clip(1, None) * factor).astype(np.float32)
    with rasterio.open(path, "w", driver="GTiff", height=96, width=96, count=len(BANDS), dtype="float32",
                       crs="EPSG:32633", transform=from_origin(600000, 5300000, 10, 10)) as ds:
        ds.write(data)
        for i, b in enumerate(BANDS):
            ds.set_band_description(i + 1, b)
    return path


def test_check_input_names_band_values_and_cause() -> None:
    stats = {"blue": {"mean": 0.1, "std": 0.04, "p2": 0.03, "p98": 0.2}, "green": {"mean": 1010, "std": 480}}
    rep = check_input(stats, [1000.0, 1000.0], [500.0, 500.0], ["blue", "green"], where="s.tif")
    assert not rep["ok"] and rep["off_bands"] == ["blue"]
    assert "blue" in rep["warnings"][0] and "1000" in rep["warnings"][0] and "0.1" in rep["warnings"][0]
    assert "--scale 10000" in rep["warnings"][0]
    rep = check_input({"b": {"mean": 2000.0, "std": 500}}, [1000.0], [300.0], ["b"])
    assert "offset" in rep["warnings"][0]


@pytest.mark.slow
def test_reflectance_scene_warns_and_strict_stops_before_prediction(tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    from unetgeo.pipeline import make_run, predict_scene

    src = _reflectance_scene(tmp_path / "refl.tif")
    model = write_tiny_model(tmp_path / "model")  # trained on mean 1000, std 500 (x10000 integers)
    with pytest.raises(InputError, match=r"blue.*--scale 10000.*--strict"):
        predict_scene(make_run(str(src), str(model), str(tmp_path / "strict"), tile_px=64, halo_px=16, strict=True))
    assert (tmp_path / "strict" / "tiles.zarr").exists() and not (tmp_path / "strict" / "probs.zarr").exists()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="unetgeo"):
        r = predict_scene(make_run(str(src), str(model), str(tmp_path / "warn"), tile_px=64, halo_px=16))
    assert sorted(r["input_check"]["off_bands"]) == sorted(BANDS)
    assert sum("input check" in m for m in caplog.messages) == len(BANDS)
    ok = predict_scene(make_run(str(src), str(model), str(tmp_path / "scaled"), tile_px=64, halo_px=16,
                                scale=(10000.0,), strict=True))
    assert ok["input_check"]["ok"]


def test_cli_parses_the_input_options(tmp_path: Path) -> None:
    from unetgeo.cli import build_parser

    a = build_parser().parse_args(["predict", "s.tif", "--model", "m", "--out", "o", "--strict", "--bands",
                                   "B2,B3", "--nodata", "none", "--scale", "0.0001"])
    assert a.strict and a.bands == "B2,B3" and a.nodata == "none" and a.scale == (0.0001,)


def test_linear_sentinel1_backscatter_given_to_a_db_model_is_named() -> None:
    from unetgeo.guard import check_input

    stats = {"vv": {"mean": 0.05, "std": 0.08}, "vh": {"mean": 0.012, "std": 0.01}}  # sigma0 in linear power
    r = check_input(stats, [-11.0, -18.0], [4.0, 4.0], ["vv", "vh"])
    assert not r["ok"] and r["off_bands"] == ["vv", "vh"]
    assert all("10 * log10" in w for w in r["warnings"])
