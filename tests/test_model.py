"""Networks, model bundles (safetensors + model.json), band checks, normalisation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from unetgeo.config import ClassSpec, ModelSpec
from unetgeo.errors import BandMismatchError, ConfigError, ModelBundleError
from unetgeo.model import (
    ModelMeta,
    build_model,
    bundle_meta,
    check_bands,
    check_bundle,
    load_bundle,
    normalise,
    save_bundle,
)

SMALL = ModelSpec(arch="Unet", encoder="resnet18", encoder_depth=3, decoder_channels=(32, 16, 8))
BANDS = ["blue", "green", "red", "nir", "swir"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _meta(**over) -> dict:
    classes = [ClassSpec(name="background", color="#d9d9d9"), ClassSpec(name="water", color="#1f78b4")]
    meta = bundle_meta(SMALL, BANDS, classes, mean=[100.0, 200, 300, 400, 500], std=[10.0, 20, 30, 40, 50],
                       tile_px=256, name="t", metrics={"miou": 0.5})
    meta.update(over)
    return meta


def test_build_model_shapes_and_shallow_encoder_is_pruned():
    torch.manual_seed(0)
    m = build_model(SMALL, 5, 3).eval()
    with torch.no_grad():
        y = m(torch.randn(2, 5, 64, 96))
    assert y.shape == (2, 3, 64, 96)
    # depth 3 runs layer1 and layer2 only: layer3/layer4 hold no parameters
    names = [k for k, _ in m.named_parameters()]
    assert not any(k.startswith(("encoder.layer3", "encoder.layer4")) for k in names)
    assert any(k.startswith("encoder.layer2") for k in names)
    assert m.encoder.conv1.in_channels == 5


def test_build_model_bad_spec_is_config_error():
    with pytest.raises(ConfigError, match="decoder_channels"):
        build_model(ModelSpec(encoder_depth=4, decoder_channels=(32, 16, 8)), 5, 2)
    with pytest.raises(ConfigError, match="nosuch"):
        build_model(ModelSpec(arch="nosuch"), 5, 2)


def test_bundle_round_trip_predicts_identically(tmp_path):
    torch.manual_seed(1)
    m = build_model(SMALL, 5, 2).eval()
    with torch.no_grad():  # make BatchNorm running stats non-trivial
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.1, 0.1)
                mod.running_var.uniform_(0.5, 1.5)
    save_bundle(str(tmp_path / "mdl"), m, _meta())
    assert sorted(p.name for p in (tmp_path / "mdl").iterdir()) == ["model.json", "model.safetensors"]
    m2, meta = load_bundle(str(tmp_path / "mdl"))
    x = torch.randn(1, 5, 64, 64)
    with torch.no_grad():
        np.testing.assert_array_equal(m(x).numpy(), m2(x).numpy())
    assert not m2.training
    assert meta.in_bands == tuple(BANDS)
    assert meta.class_names == ("background", "water")
    assert meta.class_colors == ("#d9d9d9", "#1f78b4")
    assert meta.stride == 8 and meta.tile_px == 256
    assert meta.mean[2] == 300.0 and meta.std[4] == 50.0
    assert meta.model_id.startswith("t-") and len(meta.model_id) == 2 + 12
    raw = json.loads((tmp_path / "mdl" / "model.json").read_text())
    assert raw["model_id"] == meta.model_id and raw["stride"] == 8 and "unetgeo_version" in raw


def test_bundle_errors_name_directory_and_file(tmp_path):
    d = tmp_path / "mdl"
    with pytest.raises(ModelBundleError, match="model directory not found"):
        load_bundle(str(d))
    m = build_model(SMALL, 5, 2)
    save_bundle(str(d), m, _meta())
    (d / "model.safetensors").unlink()
    with pytest.raises(ModelBundleError, match=r"mdl: model.safetensors is missing"):
        load_bundle(str(d))
    save_bundle(str(d), m, _meta())
    (d / "model.json").unlink()
    with pytest.raises(ModelBundleError, match=r"mdl: model.json is missing"):
        load_bundle(str(d))
    save_bundle(str(d), m, _meta())
    (d / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelBundleError, match="not a readable safetensors"):
        load_bundle(str(d))
    # weights of a 5-band model under a meta claiming 4 bands
    save_bundle(str(d), m, _meta())
    meta = json.loads((d / "model.json").read_text())
    meta["in_bands"] = BANDS[:4]
    meta["norm"] = {"mean": [0.0] * 4, "std": [1.0] * 4}
    (d / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelBundleError, match="weights do not fit"):
        load_bundle(str(d))
    del meta["norm"]
    (d / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelBundleError, match=r"lacks \['norm'\]"):
        load_bundle(str(d))


def test_check_bands_names_both_lists():
    meta = ModelMeta.from_dict({**_meta(), "model_id": "flood-abc"})
    check_bands(meta, BANDS, "s.tif")
    check_bands(meta, [b.upper() for b in BANDS], "s.tif")
    check_bands(meta, ["b1", "b2", "b3", "b4", "b5"], "s.tif")  # undescribed bands, right count
    with pytest.raises(BandMismatchError) as e:
        check_bands(meta, ["red", "green", "blue"], "scene.tif")
    msg = str(e.value)
    assert "scene.tif" in msg and "['red', 'green', 'blue']" in msg and str(BANDS) in msg and "flood-abc" in msg
    with pytest.raises(BandMismatchError, match="another order"):
        check_bands(meta, list(reversed(BANDS)), "scene.tif")


def test_normalise_values_and_nodata():
    meta = ModelMeta.from_dict(_meta())
    x = np.stack([np.full((2, 3), v, dtype=np.uint16) for v in (110, 180, 300, 480, 500)])
    valid = np.ones((2, 3), dtype=bool)
    valid[0, 0] = False
    out = normalise(x, meta, valid)
    assert out.dtype == np.float32 and out.shape == (5, 2, 3)
    np.testing.assert_allclose(out[:, 1, 1], [1.0, -1.0, 0.0, 2.0, 0.0])
    assert (out[:, 0, 0] == 0).all()
    xf = x.astype(np.float32)
    xf[1, 1, 2] = np.nan
    assert normalise(xf, meta)[1, 1, 2] == 0.0
    with pytest.raises(BandMismatchError):
        normalise(x[:3], meta)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_local_encoder_weights_are_loaded_and_adapted(tmp_path, suffix):
    torch.manual_seed(2)
    src = build_model(SMALL, 3, 2)  # a 3-band "pretrained" encoder
    sd = {k: v.clone() for k, v in src.encoder.state_dict().items()}
    sd["fc.weight"] = torch.zeros(10, 512)  # a classifier head is ignored
    path = tmp_path / f"enc{suffix}"
    if suffix == ".pth":
        torch.save(sd, path)
    else:
        from safetensors.torch import save_file

        save_file(sd, str(path))
    spec = SMALL.model_copy(update={"encoder_weights": str(path)})
    m = build_model(spec, 5, 2)
    torch.testing.assert_close(m.encoder.layer1[0].conv1.weight, sd["layer1.0.conv1.weight"])
    w = m.encoder.conv1.weight  # 3 -> 5 bands: channels cycled, scaled by 3/5
    torch.testing.assert_close(w[:, 3], sd["conv1.weight"][:, 0] * 0.6)
    with pytest.raises(ConfigError, match="file not found"):
        build_model(SMALL.model_copy(update={"encoder_weights": str(tmp_path / "none.pth")}), 5, 2)


def test_bundle_meta_is_what_model_json_holds(tmp_path):
    meta = bundle_meta(SMALL, BANDS, ["land", {"name": "water", "color": "#1f78b4", "rgb": (0, 0, 255)}],
                       mean=[1.0] * 5, std=[2.0] * 5, tile_px=128, name="x", summary={"steps": 3})
    assert meta["stride"] == 8 and meta["decoder_channels"] == [32, 16, 8] and meta["training_summary"] == {"steps": 3}
    assert meta["classes"] == [{"name": "land", "color": "#808080"}, {"name": "water", "color": "#1f78b4", "rgb": [0, 0, 255]}]
    save_bundle(str(tmp_path / "m"), build_model(SMALL, 5, 2), meta)
    raw = json.loads((tmp_path / "m" / "model.json").read_text())
    assert {k: raw[k] for k in meta} == meta and raw["model_id"].startswith("x-")
    with pytest.raises(ModelBundleError, match=r"model.json of 'x'.*norm has 4 means"):
        bundle_meta(SMALL, BANDS, ["a", "b"], mean=[1.0] * 4, std=[1.0] * 4, tile_px=128, name="x")


def _one_line_error(d) -> str:
    with pytest.raises(ModelBundleError) as e:
        check_bundle(str(d))
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_check_bundle_validates_without_reading_the_weights(tmp_path, monkeypatch):
    d = tmp_path / "mdl"
    m = build_model(SMALL, 5, 2)
    save_bundle(str(d), m, _meta())

    def no_read(*a, **k):
        raise AssertionError("weights read")

    monkeypatch.setattr("unetgeo.io.bundle.read_weights", no_read)
    meta = check_bundle(str(d))
    assert meta.in_bands == tuple(BANDS) and meta.n_classes == 2 and meta.stride == 8
    # missing weights
    blob = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").unlink()
    assert "mdl: model.safetensors is missing" in _one_line_error(d)
    # truncated weights (an interrupted copy)
    (d / "model.safetensors").write_bytes(blob[: len(blob) // 2])
    msg = _one_line_error(d)
    assert "model.safetensors" in msg and "truncated" in msg
    (d / "model.safetensors").write_bytes(b"not a safetensors file at all")
    assert "not a safetensors file" in _one_line_error(d)
    # weights of another architecture under this model.json
    other = ModelSpec(arch="Unet", encoder="resnet18", encoder_depth=4, decoder_channels=(32, 16, 8, 4))
    save_bundle(str(tmp_path / "other"), build_model(other, 5, 2), _meta(encoder_depth=4, decoder_channels=[32, 16, 8, 4]))
    (d / "model.safetensors").write_bytes((tmp_path / "other" / "model.safetensors").read_bytes())
    msg = _one_line_error(d)
    assert "model.safetensors: weights do not fit Unet/resnet18 depth 3" in msg and "unexpected" in msg
    # the same architecture for 4 bands: every name fits, one shape does not
    save_bundle(str(tmp_path / "four"), build_model(SMALL, 4, 2), _meta())
    (d / "model.safetensors").write_bytes((tmp_path / "four" / "model.safetensors").read_bytes())
    assert "encoder.conv1.weight [64, 4, 7, 7] (want [64, 5, 7, 7])" in _one_line_error(d)


def test_check_bundle_refuses_an_inconsistent_model_json(tmp_path):
    d = tmp_path / "mdl"
    save_bundle(str(d), build_model(SMALL, 5, 2), _meta())
    raw = json.loads((d / "model.json").read_text())
    (d / "model.json").write_text(json.dumps({**raw, "stride": 32, "in_bands": ["b", "b", "r", "n", "s"]}))
    msg = _one_line_error(d)
    assert "mdl/model.json: inconsistent" in msg and "stride=32" in msg and "['b']" in msg
    (d / "model.json").write_text("{not json")
    assert "model.json: not valid JSON" in _one_line_error(d)
