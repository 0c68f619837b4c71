"""A table of bad inputs across every command: exit 2, one line naming the file or option, no traceback,
and nothing left behind that was not there before."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from unetgeo.cli import main

BANDS = ["blue", "green", "red", "nir", "swir"]


def _tif(path: Path, *, bands: int = 5, size: int = 64, crs: str | None = "EPSG:32633", x0: float = 500000.0,
         dtype: str = "uint16", value: int = 500) -> Path:
    profile = {"driver": "GTiff", "height": size, "width": size, "count": bands, "dtype": dtype,
               "transform": from_origin(x0, 5000000.0, 10.0, 10.0)}
    if crs:
        profile["crs"] = crs
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(np.full((bands, size, size), value, dtype))
        for i in range(1, bands + 1):
            ds.set_band_description(i, (BANDS + [f"x{j}" for j in range(20)])[i - 1])
    return path


class Ctx:
    """What a case may use: a folder, a good scene, a good model, the tiny config."""

    def __init__(self, tmp: Path, pair: dict, model: Path, config: Path):
        self.tmp, self.pair, self.model, self.config = tmp, pair, model, config
        self.scene = pair["post"].image_uri
        self.labels = pair["post"].labels_uri

    def model_copy(self, name: str = "model") -> Path:
        dst = self.tmp / name
        shutil.copytree(self.model, dst)
        return dst

    def file(self, name: str, content: bytes | str) -> Path:
        p = self.tmp / name
        p.write_bytes(content.encode() if isinstance(content, str) else content)
        return p


def _truncated(c: Ctx) -> str:
    blob = Path(c.scene).read_bytes()
    return str(c.file("truncated.tif", blob[: len(blob) // 3]))


def _bad_json_model(c: Ctx) -> str:
    m = c.model_copy("badjson")
    (m / "model.json").write_text("{ not json")
    return str(m)


def _no_weights_model(c: Ctx) -> str:
    m = c.model_copy("noweights")
    (m / "model.safetensors").unlink()
    return str(m)


def _short_weights_model(c: Ctx) -> str:
    m = c.model_copy("shortweights")
    blob = (m / "model.safetensors").read_bytes()
    (m / "model.safetensors").write_bytes(blob[: len(blob) // 2])
    return str(m)


def _wrong_arch_model(c: Ctx) -> str:
    m = c.model_copy("wrongarch")
    meta = json.loads((m / "model.json").read_text())
    meta["decoder_channels"] = [32, 16, 8]
    (m / "model.json").write_text(json.dumps(meta))
    return str(m)


def _shifted(c: Ctx, src: str, name: str, dx: int = 3, crs: bool = True) -> str:
    with rasterio.open(src) as ds:
        data, t, prof = ds.read(), ds.transform, ds.profile
    prof.update(transform=from_origin(t.c + dx * t.a, t.f, t.a, -t.e), crs=prof["crs"] if crs else None)
    with rasterio.open(c.tmp / name, "w", **prof) as out:
        out.write(data)
    return str(c.tmp / name)


def _run(c: Ctx, *extra: str, scene: str | None = None, model: str | None = None) -> list[str]:
    return ["run", scene or c.scene, "--model", model or str(c.model), "--out", str(c.tmp / "run"), *extra]


def _predict(c: Ctx, *extra: str, scene: str | None = None, model: str | None = None) -> list[str]:
    return ["predict", scene or c.scene, "--model", model or str(c.model), "--out", str(c.tmp / "pred"), *extra]


def _train_cfg(c: Ctx, body: str) -> str:
    return str(c.file("train.yaml", body))


# (id, argv builder, the text that the one stderr line must contain)
CASES: list[tuple[str, Callable[[Ctx], list[str]], str]] = [
    # -- tile
    ("tile: missing scene", lambda c: ["tile", str(c.tmp / "nope.tif"), str(c.tmp / "t.zarr")], "nope.tif"),
    ("tile: text file", lambda c: ["tile", str(c.file("notes.tif", "hello")), str(c.tmp / "t.zarr")], "notes.tif"),
    ("tile: no CRS", lambda c: ["tile", str(_tif(c.tmp / "nocrs.tif", crs=None)), str(c.tmp / "t.zarr")], "nocrs.tif"),
    ("tile: truncated", lambda c: ["tile", _truncated(c), str(c.tmp / "t.zarr")], "truncated.tif"),
    ("tile: tile size 0", lambda c: ["tile", c.scene, str(c.tmp / "t.zarr"), "--tile-size", "0"], "tile_px=0"),
    ("tile: out is a file", lambda c: ["tile", c.scene, str(c.file("t.zarr", "x"))], "t.zarr"),
    ("tile: scene is a folder", lambda c: ["tile", str(c.tmp), str(c.tmp / "t.zarr")], "cannot be read"),
    ("tile: unknown option", lambda c: ["tile", c.scene, str(c.tmp / "t.zarr"), "--tiles", "5"], "--tiles"),
    # -- predict
    ("predict: missing model", lambda c: _predict(c, model=str(c.tmp / "nomodel")), "nomodel"),
    ("predict: model.json not JSON", lambda c: _predict(c, model=_bad_json_model(c)), "badjson"),
    ("predict: no weights", lambda c: _predict(c, model=_no_weights_model(c)), "noweights"),
    ("predict: truncated weights", lambda c: _predict(c, model=_short_weights_model(c)), "shortweights"),
    ("predict: weights of another net", lambda c: _predict(c, model=_wrong_arch_model(c)), "wrongarch"),
    ("predict: band mismatch", lambda c: _predict(c, scene=str(_tif(c.tmp / "three.tif", bands=3))), "three.tif"),
    ("predict: negative halo", lambda c: _predict(c, "--halo", "-10"), "halo_px=-10"),
    ("predict: batch size 0", lambda c: _predict(c, "--batch-size", "0"), "batch_size=0"),
    ("predict: workers 0", lambda c: _predict(c, "--workers", "0"), "workers=0"),
    ("predict: halo over tile", lambda c: _predict(c, "--halo", "1000", "--tile-size", "64"), "halo_px=1000"),
    ("predict: out is a file", lambda c: ["predict", c.scene, "--model", str(c.model), "--out",
                                          str(c.file("out.txt", "x"))], "out.txt"),
    ("predict: scales not numbers", lambda c: _predict(c, "--scales", "a,b"), "--scales"),
    ("predict: zero scale", lambda c: _predict(c, "--scales", "0,1"), "--scales"),
    ("predict: config missing", lambda c: _predict(c, "--config", str(c.tmp / "none.yaml")), "none.yaml"),
    ("predict: config not YAML", lambda c: _predict(c, "--config", str(c.file("bad.yaml", "a: [1, 2"))), "bad.yaml"),
    ("predict: config unknown key", lambda c: _predict(c, "--config", str(c.file("typo.yaml", "tilling: {}\n"))),
     "tilling"),
    ("predict: one-pixel scene", lambda c: _predict(c, scene=str(_tif(c.tmp / "px.tif", size=1))), "px.tif"),
    ("predict: unknown device", lambda c: _predict(c, "--device", "quantum"), "quantum"),
    ("predict: no model option", lambda c: ["predict", c.scene, "--out", str(c.tmp / "p")], "--model"),
    # -- run
    ("run: truth on another grid", lambda c: _run(c, "--truth", _shifted(c, c.labels, "tshift.tif")), "tshift.tif"),
    ("run: truth without CRS", lambda c: _run(c, "--truth", _shifted(c, c.labels, "tbare.tif", 0, False)), "tbare.tif"),
    ("run: truth missing", lambda c: _run(c, "--truth", str(c.tmp / "notruth.tif")), "notruth.tif"),
    ("run: reference on another grid", lambda c: _run(c, "--reference", _shifted(c, c.pair["pre"].image_uri,
                                                                                 "rshift.tif", 7)), "rshift.tif"),
    ("run: reference missing", lambda c: _run(c, "--reference", str(c.tmp / "noref.tif")), "noref.tif"),
    ("run: reference bands", lambda c: _run(c, "--reference", str(_tif(c.tmp / "ref3.tif", bands=3, size=128,
                                                                       x0=600000.0))), "ref3.tif"),
    ("run: out under a file", lambda c: ["run", c.scene, "--model", str(c.model), "--out",
                                         str(c.file("plain", "x") / "sub")], "plain"),
    ("run: bad config value", lambda c: _run(c, "--config", str(c.file("neg.yaml", "inference: {batch_size: -1}\n"))),
     "batch_size"),
    ("run: halo over config tile", lambda c: _run(c, "--config", str(c.config), "--halo", "100"), "halo_px=100"),
    # -- vectorize
    ("vectorize: missing raster", lambda c: ["vectorize", str(c.tmp / "noclasses.tif"), str(c.tmp / "p.gpkg")],
     "noclasses.tif"),
    ("vectorize: not a raster", lambda c: ["vectorize", str(c.file("junk.tif", "junk")), str(c.tmp / "p.gpkg")],
     "junk.tif"),
    ("vectorize: negative min area", lambda c: ["vectorize", c.labels, str(c.tmp / "p.gpkg"), "--min-area-m2", "-5"],
     "min_area_m2=-5"),
    # -- evaluate
    ("evaluate: nothing to score", lambda c: ["evaluate", "--model", str(c.model)], "--scene"),
    ("evaluate: labels missing", lambda c: ["evaluate", "--model", str(c.model), "--scene", c.scene, "--labels",
                                            str(c.tmp / "nolabels.tif")], "nolabels.tif"),
    ("evaluate: labels on another grid", lambda c: ["evaluate", "--model", str(c.model), "--scene", c.scene,
                                                    "--labels", str(_tif(c.tmp / "far.tif", bands=1, dtype="uint8",
                                                                         value=1, x0=900000.0))], "far.tif"),
    ("evaluate: empty image folder", lambda c: ["evaluate", "--model", str(c.model), "--images",
                                                str(_mkdir(c.tmp / "imgs")), "--masks", str(_mkdir(c.tmp / "msk"))],
     "imgs"),
    # -- train
    ("train: config missing", lambda c: ["train", "--config", str(c.tmp / "absent.yaml")], "absent.yaml"),
    ("train: no training data", lambda c: ["train", "--config", _train_cfg(c, "name: t\n"), "--out",
                                           str(c.tmp / "m")], "train.yaml"),
    ("train: labels file missing", lambda c: ["train", "--config", _train_cfg(
        c, f"training: {{scenes: [{{image: '{c.scene}', labels: '{c.tmp / 'nolab.tif'}'}}]}}\n"), "--out",
        str(c.tmp / "m")], "nolab.tif"),
    ("train: unknown key", lambda c: ["train", "--config", _train_cfg(c, "training: {epoks: 3}\n")], "epoks"),
]


def _mkdir(p: Path) -> Path:
    p.mkdir(exist_ok=True)
    return p


def _listing(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize("case", [c[0] for c in CASES])
def test_bad_input_is_refused_cleanly(case: str, tmp_path: Path, pair: dict, tiny_model: Path, tiny_config: Path,
                                      capsys: pytest.CaptureFixture) -> None:
    _, build, named = next(c for c in CASES if c[0] == case)
    ctx = Ctx(tmp_path, pair, tiny_model, tiny_config)
    argv = build(ctx)
    before = _listing(tmp_path)
    try:
        code = main(["-q", *argv])
    except SystemExit as e:  # argparse's usage errors
        code = e.code
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, f"{case}: exit {code}\n{err}"
    assert len(lines) == 1, f"{case}: {len(lines)} lines on stderr:\n{err}"
    assert "Traceback" not in err and "internal error" not in err, err
    assert named in lines[0], f"{case}: {named!r} not in {lines[0]!r}"
    assert _listing(tmp_path) == before, f"{case}: left behind {sorted(_listing(tmp_path) - before)}"


def test_the_table_is_large_enough() -> None:
    assert len(CASES) >= 40
    assert {c[0].split(":")[0] for c in CASES} == {
        "tile", "predict", "run", "vectorize", "evaluate", "train"}
