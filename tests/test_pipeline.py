"""The scene pipeline: every option reaches its stage, and bad inputs fail fast with nothing written."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from unetgeo.cli import main


def _run(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, float]:
    t0 = time.perf_counter()
    code = main(["-q", *argv])
    return code, capsys.readouterr().err, time.perf_counter() - t0


def _copy_raster(src: str, dst: Path, *, bands: int | None = None, shift_px: int = 0, crs: bool = True) -> Path:
    """A copy of ``src`` with fewer bands, a grid shifted by ``shift_px`` columns, or no CRS."""
    with rasterio.open(src) as ds:
        data = ds.read()[: bands or ds.count]
        t = ds.transform
        profile = {"driver": "GTiff", "height": ds.height, "width": ds.width, "count": data.shape[0],
                   "dtype": data.dtype, "transform": from_origin(t.c + shift_px * t.a, t.f, t.a, -t.e),
                   "crs": ds.crs if crs else None}
        descs = ds.descriptions[: data.shape[0]]
    with rasterio.open(dst, "w", **profile) as out:
        out.write(data)
        for i, d in enumerate(descs, 1):
            if d:
                out.set_band_description(i, d)
    return dst


def test_every_run_option_reaches_its_stage(tmp_path: Path, pair: dict, tiny_model: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    import zarr

    out = tmp_path / "run"
    code, err, _ = _run(["run", pair["post"].image_uri, "--model", str(tiny_model), "--out", str(out),
                         "--device", "cpu", "--halo", "8", "--tile-size", "32", "--d4", "--batch-size", "3",
                         "--workers", "1", "--scales", "1,1.5", "--flips"], capsys)
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    eff = summary["run"]["effective"]
    assert (eff["halo_px"], eff["tile_px"], eff["d4"], eff["batch_size"], eff["workers"]) == (8, 32, True, 3, 1)
    assert (eff["scales"], eff["flips"], eff["device"]) == ([1.0, 1.5], True, "cpu")
    assert summary["run"]["given"]["halo_px"] == 8
    assert summary["config"]["dump"]["inference"]["halo_px"] == 8
    probs = zarr.open_array(str(out / "probs.zarr"), mode="r")
    tiles = zarr.open_array(str(out / "tiles.zarr"), mode="r")
    assert tiles.chunks[-1] == 32 and probs.chunks[-1] == 32
    attrs = dict(probs.attrs)
    assert (attrs["halo_px"], attrs["scales"], attrs["flips"], attrs["d4"]) == (8, [1.0, 1.5], True, True)
    stage = summary["run"]["stages"]["predict"]
    assert (stage["batch_size"], stage["workers"]) == (3, 1)
    assert summary["run"]["stages"]["tile"]["tile_px"] == 32


def test_defaults_are_recorded_when_no_option_is_given(tmp_path: Path, pair: dict, tiny_model: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    code, err, _ = _run(["run", pair["post"].image_uri, "--model", str(tiny_model), "--out", str(out),
                         "--device", "cpu", "--tile-size", "64", "--halo", "16"], capsys)
    assert code == 0, err
    run = json.loads((out / "summary.json").read_text())["run"]
    assert run["given"] == {"tile_px": 64, "halo_px": 16, "device": "cpu"}
    assert run["effective"]["scales"] == [1.0] and run["effective"]["flips"] is False


@pytest.mark.parametrize("case", ["band mismatch", "truth on another grid", "truth without georeferencing",
                                  "reference on another grid", "missing model", "model without weights"])
def test_bad_input_fails_fast_with_nothing_written(tmp_path: Path, pair: dict, tiny_model: Path, case: str,
                                                   capsys: pytest.CaptureFixture) -> None:
    scene, model = pair["post"].image_uri, str(tiny_model)
    extra: list[str] = []
    named = None
    if case == "band mismatch":
        scene = named = str(_copy_raster(scene, tmp_path / "three_bands.tif", bands=3))
    elif case == "truth on another grid":
        named = str(_copy_raster(pair["post"].labels_uri, tmp_path / "shifted_truth.tif", shift_px=3))
        extra = ["--truth", named]
    elif case == "truth without georeferencing":
        named = str(_copy_raster(pair["post"].labels_uri, tmp_path / "bare_truth.tif", crs=False))
        extra = ["--truth", named]
    elif case == "reference on another grid":
        named = str(_copy_raster(pair["pre"].image_uri, tmp_path / "shifted_ref.tif", shift_px=5))
        extra = ["--reference", named]
    elif case == "missing model":
        model = named = str(tmp_path / "no_such_model")
    else:
        broken = tmp_path / "broken_model"
        broken.mkdir()
        (broken / "model.json").write_text((tiny_model / "model.json").read_text())
        model = named = str(broken)
    out = tmp_path / "run"
    before = sorted(p.name for p in tmp_path.iterdir())
    code, err, seconds = _run(["run", scene, "--model", model, "--out", str(out), *extra], capsys)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert Path(named).name in lines[0], lines[0]
    assert seconds < 3.0, f"{case}: refused after {seconds:.1f} s"
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_truth_message_names_the_truth_file_not_the_output(tmp_path: Path, pair: dict, tiny_model: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    truth = _copy_raster(pair["post"].labels_uri, tmp_path / "shifted_truth.tif", shift_px=3)
    code, err, _ = _run(["run", pair["post"].image_uri, "--model", str(tiny_model), "--out", str(tmp_path / "r"),
                         "--truth", str(truth)], capsys)
    assert code == 2 and err.split(":")[2].strip().endswith("shifted_truth.tif"), err
    assert "classes.tif" not in err


@pytest.mark.parametrize("argv, named", [
    (["--halo", "-10"], "halo_px=-10"),
    (["--batch-size", "0"], "batch_size=0"),
    (["--workers", "0"], "workers=0"),
    (["--halo", "1000", "--tile-size", "64"], "halo_px=1000"),
])
def test_bad_option_values_are_refused_before_any_work(tmp_path: Path, pair: dict, tiny_model: Path,
                                                       argv: list[str], named: str,
                                                       capsys: pytest.CaptureFixture) -> None:
    code, err, _ = _run(["run", pair["post"].image_uri, "--model", str(tiny_model), "--out", str(tmp_path / "r"),
                         *argv], capsys)
    assert code == 2 and named in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "r").exists()


def test_second_run_into_a_held_folder_is_refused_naming_the_holder(tmp_path: Path, pair: dict, tiny_model: Path,
                                                                    capsys: pytest.CaptureFixture) -> None:
    import subprocess
    import sys

    from unetgeo.io.lock import LOCK_NAME, RunLock

    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        out.mkdir()
        (out / LOCK_NAME).write_text(json.dumps({"pid": holder.pid, "host": __import__("socket").gethostname(),
                                                 "started": "now"}))
        code, err, _ = _run(["run", pair["post"].image_uri, "--model", str(tiny_model), "--out", str(out)], capsys)
        assert code == 2 and f"pid {holder.pid}" in err, err
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]
    finally:
        holder.kill()
        holder.wait()
    with RunLock(str(out)):  # the holder is gone: its lock is stale and taken over
        assert json.loads((out / LOCK_NAME).read_text())["pid"] != holder.pid
    assert not (out / LOCK_NAME).exists()


def test_scene_smaller_than_one_stride_is_refused(tmp_path: Path, tiny_model: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    tiny = tmp_path / "one_pixel.tif"
    with rasterio.open(tiny, "w", driver="GTiff", height=1, width=1, count=5, dtype="uint16", crs="EPSG:32633",
                       transform=from_origin(500000, 5000000, 10, 10)) as ds:
        ds.write(np.full((5, 1, 1), 500, np.uint16))
        for i, b in enumerate(["blue", "green", "red", "nir", "swir"], 1):
            ds.set_band_description(i, b)
    code, err, _ = _run(["run", str(tiny), "--model", str(tiny_model), "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and "one_pixel.tif" in err and "stride" in err, err


def test_reference_kinds_and_water_class_are_checked_before_any_work(tmp_path: Path, pair: dict,
                                                                    tiny_model: Path) -> None:
    """A scene, a label raster with class names and a bare mask are told apart; a water class that
    the model or the reference lacks (or holds at another id) is refused."""
    from unetgeo.errors import ConfigError, InputError
    from unetgeo.pipeline import make_run, validate_run

    scene, model, out = pair["post"].image_uri, str(tiny_model), str(tmp_path / "r")
    with rasterio.open(pair["pre"].labels_uri) as src:
        profile, data = {**src.profile, "nodata": 255}, src.read(1)
    mask = tmp_path / "mask.tif"
    with rasterio.open(mask, "w", **profile) as dst:
        dst.write(data, 1)
    plans = [validate_run(make_run(scene, model, out, reference=r))
             for r in (None, pair["pre"].image_uri, pair["pre"].labels_uri, str(mask))]
    assert [p.reference_kind for p in plans] == [None, "scene", "classes", "mask"]
    assert [p.water_id for p in plans] == [None, 1, 1, 1]
    swapped = tmp_path / "swapped.tif"
    with rasterio.open(swapped, "w", **profile) as dst:
        dst.write(data, 1)
        dst.update_tags(class_names="water,background")
    with pytest.raises(InputError, match="do not have 'water' at id 1"):
        validate_run(make_run(scene, model, out, reference=str(swapped)))
    lake = tmp_path / "lake.yaml"
    lake.write_text("classes: [{name: land, color: '#00ff00'}, {name: lake, color: '#0000ff'}]\n"
                    "flood: {water_class: lake}\n")
    with pytest.raises(ConfigError, match="flood.water_class='lake' is not a class of model"):
        validate_run(make_run(scene, model, out, reference=pair["pre"].image_uri, config=str(lake)))
    assert not Path(out).exists()


@pytest.mark.parametrize("kind", ["all nodata", "all NaN"])
def test_an_empty_scene_warns_and_gives_empty_outputs(tmp_path: Path, tiny_model: Path, kind: str,
                                                      capsys: pytest.CaptureFixture) -> None:
    import pyogrio

    scene = tmp_path / "empty.tif"
    dtype, nodata, value = ("uint16", 0, 0) if kind == "all nodata" else ("float32", None, np.nan)
    with rasterio.open(scene, "w", driver="GTiff", height=96, width=96, count=5, dtype=dtype, crs="EPSG:32633",
                       transform=from_origin(500000, 5000000, 10, 10), nodata=nodata) as ds:
        ds.write(np.full((5, 96, 96), value, dtype))
        for i, b in enumerate(["blue", "green", "red", "nir", "swir"], 1):
            ds.set_band_description(i, b)
    out = tmp_path / "run"
    code = main(["run", str(scene), "--model", str(tiny_model), "--out", str(out), "--tile-size", "64",
                 "--halo", "16", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 0, err
    warned = [ln for ln in err.splitlines() if "no valid pixel" in ln]
    assert len(warned) == 1 and "empty.tif" in warned[0]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["input_check"]["empty"] is True and "no valid pixel" in summary["input_check"]["warnings"][0]
    with rasterio.open(out / "classes.tif") as ds:
        assert (ds.read(1) == 255).all()
    assert sum(len(pyogrio.read_dataframe(out / "polygons.gpkg", layer=str(la)))
               for la in pyogrio.list_layers(out / "polygons.gpkg")[:, 0]) == 0


def test_the_reference_scene_is_read_with_the_scenes_band_selection(tmp_path: Path, pair: dict,
                                                                    tiny_model: Path) -> None:
    """With --bands picking five of six bands, a six-band reference passes the same selection."""
    from unetgeo.pipeline import make_run, validate_run

    def six_bands(src: str, dst: Path) -> str:
        with rasterio.open(src) as ds:
            data, prof, names = ds.read(), ds.profile, list(ds.descriptions)
        prof.update(count=6)
        with rasterio.open(dst, "w", **prof) as out:
            out.write(np.concatenate([data[:1], data]))  # an extra band first
            for i, n in enumerate(["coastal", *names], 1):
                out.set_band_description(i, n)
        return str(dst)

    scene, ref = six_bands(pair["post"].image_uri, tmp_path / "post6.tif"), six_bands(pair["pre"].image_uri,
                                                                                      tmp_path / "pre6.tif")
    plan = validate_run(make_run(scene, str(tiny_model), str(tmp_path / "r"), reference=ref,
                                 bands="blue,green,red,nir,swir"))
    assert plan.reference_kind == "scene"


def test_bands_picked_by_number_from_an_undescribed_file_pass_predict(tmp_path: Path, pair: dict,
                                                                      tiny_model: Path) -> None:
    """Generic b1..bN names selected by number are the model's bands in order, in validation and in predict."""
    from unetgeo.pipeline import make_run, predict_scene

    with rasterio.open(pair["post"].image_uri) as ds:
        data, prof = ds.read(), ds.profile
    bare = tmp_path / "bare.tif"
    prof.update(count=6)
    with rasterio.open(bare, "w", **prof) as out:  # no band descriptions, an extra last band
        out.write(np.concatenate([data, data[:1]]))
    r = predict_scene(make_run(str(bare), str(tiny_model), str(tmp_path / "r"), bands="1,2,3,4,5", tile_px=64,
                               halo_px=16, device="cpu"))
    assert r["predict"].n_chunks == 4 and Path(r["stitch"].classes_uri).exists()
