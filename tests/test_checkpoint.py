"""Checkpoints without pickle: safetensors + JSON, refused when corrupted, resumed exactly."""

from __future__ import annotations

import json
import logging
import os
import pickle

import numpy as np
import pytest
import torch

from unetgeo.config import ModelSpec, load_config
from unetgeo.errors import InputError
from unetgeo.io import checkpoint as C
from unetgeo.model import build_model, bundle_meta, check_bundle, load_bundle, save_bundle
from unetgeo.synthetic import make_scene
from unetgeo.train import TrainState, restore_checkpoint, save_checkpoint, train
from unetgeo.train import loop as train_loop

SMALL = {"encoder": "resnet18", "encoder_depth": 3, "decoder_channels": [16, 8, 4]}


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    d = tmp_path_factory.mktemp("scene")
    sc = make_scene(str(d / "s.tif"), str(d / "l.tif"), size_px=128, seed=4, flood_level=2.0)
    return sc, str(d / "work")


def _config(sc, **training):
    tr = {"scenes": [{"image": sc.image_uri, "labels": sc.labels_uri}], "chip_px": 64, "batch_size": 2, "epochs": 1,
          "steps_per_epoch": 1, "val_block_px": 64, "val_fraction": 0.25, "warmup_steps": 1, "num_threads": 1, **training}
    return load_config(None, bands=list(sc.band_names), tiling={"tile_px": 64}, model=SMALL, training=tr)


class _Payload:
    """Unpickling this runs ``touch <marker>`` (what a crafted checkpoint.pt can do)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_planted_pickle_checkpoint_is_never_unpickled(tmp_path, scene, caplog, monkeypatch):
    sc, work = scene
    cfg = _config(sc)
    out = tmp_path / "model"
    spec = ModelSpec(**SMALL)
    meta = bundle_meta(spec, sc.band_names, cfg.classes, mean=[1.0] * 5, std=[1.0] * 5, tile_px=64, name="old")
    save_bundle(str(out), build_model(spec, 5, len(cfg.classes)), meta)
    check_bundle(str(out))  # a valid model folder ...
    marker = tmp_path / "MARKER"
    blob = pickle.dumps({"model": _Payload(str(marker)), "epoch": 1})
    (out / "checkpoint.pt").write_bytes(blob)  # ... with a crafted old-style checkpoint beside it

    def no_torch_load(*a, **k):
        raise AssertionError("torch.load called")

    monkeypatch.setattr(torch, "load", no_torch_load)
    with caplog.at_level(logging.WARNING, logger="unetgeo"):
        res = train(cfg, str(out), work_dir=work, resume=True)
    assert not marker.exists()
    assert any("checkpoint.pt" in r.getMessage() and "never unpickled" in r.getMessage() for r in caplog.records)
    assert res.epochs_run == 1  # trained from scratch, new checkpoint files written
    assert (out / "checkpoint.json").is_file() and (out / "checkpoint.safetensors").is_file()
    assert (out / "checkpoint.pt").read_bytes() == blob  # left alone, for the user to delete
    pickle.loads(blob)  # the payload is live: unpickling it does create the marker
    assert marker.exists()


def _corrupt_json_garbage(d):
    (d / "checkpoint.json").write_text('{"format": "unetgeo-checkpoint/1", "state": {')


def _corrupt_json_format(d):
    (d / "checkpoint.json").write_text(json.dumps({"format": "something-else", "state": {}}))


def _corrupt_json_keys(d):
    doc = json.loads((d / "checkpoint.json").read_text())
    del doc["state"]["optimizer"]
    (d / "checkpoint.json").write_text(json.dumps(doc))


def _truncate_tensors(d):
    p = d / "checkpoint.safetensors"
    p.write_bytes(p.read_bytes()[:1000])


def _flip_tensor_byte(d):
    p = d / "checkpoint.safetensors"
    b = bytearray(p.read_bytes())
    b[-5] ^= 0xFF
    p.write_bytes(bytes(b))


def _drop_tensors(d):
    (d / "checkpoint.safetensors").unlink()


@pytest.mark.parametrize(
    ("corrupt", "file", "why"),
    [
        (_corrupt_json_garbage, "checkpoint.json", "not valid JSON"),
        (_corrupt_json_format, "checkpoint.json", "not a unetgeo-checkpoint/1"),
        (_corrupt_json_keys, "checkpoint.json", "does not fit"),
        (_truncate_tensors, "checkpoint.safetensors", "sha256 differs"),
        (_flip_tensor_byte, "checkpoint.safetensors", "sha256 differs"),
        (_drop_tensors, "checkpoint.safetensors", "missing"),
    ],
)
def test_corrupted_checkpoint_is_refused_with_one_line_naming_the_file(tmp_path, scene, corrupt, file, why):
    sc, work = scene
    cfg = _config(sc, epochs=2)
    out = tmp_path / "model"
    train(cfg.model_copy(update={"training": cfg.training.model_copy(update={"epochs": 1})}), str(out), work_dir=work)
    corrupt(out)
    with pytest.raises(InputError) as e:
        train(cfg, str(out), work_dir=work, resume=True)
    msg = str(e.value)
    assert "\n" not in msg and str(out / file) in msg and why in msg, msg
    assert "to start over" in msg


def test_optimizer_scheduler_and_rng_round_trip(tmp_path, scene):
    sc, _ = scene
    cfg = _config(sc)
    torch.manual_seed(0)

    def make():
        m = build_model(cfg.model, 5, 2)
        o = torch.optim.AdamW(m.parameters(), lr=1e-3, weight_decay=1e-4)
        s = torch.optim.lr_scheduler.LambdaLR(o, lambda k: 0.5 ** k)
        return m, o, s

    m, o, s = make()
    for _ in range(2):
        o.zero_grad()
        m(torch.randn(1, 5, 32, 32)).square().mean().backward()
        o.step()
        s.step()
    st = TrainState(epoch=3, global_step=7, history=[{"epoch": 1, "train_loss": 0.5}], step_losses=[1.0, float("nan")],
                    best_miou=0.4, best_epoch=2, best_state={k: v.clone() for k, v in m.state_dict().items()})
    np.random.seed(5)
    save_checkpoint(str(tmp_path), st, m, o, s, cfg)
    expect = (torch.rand(3), np.random.random(), __import__("random").random())
    m2, o2, s2 = make()
    torch.manual_seed(99)
    got = restore_checkpoint(str(tmp_path), m2, o2, s2, cfg)
    assert (torch.rand(3).tolist(), np.random.random(), __import__("random").random()) == (expect[0].tolist(), *expect[1:])
    assert (got.epoch, got.global_step, got.best_epoch, got.best_miou) == (3, 7, 2, 0.4)
    assert got.step_losses[0] == 1.0 and np.isnan(got.step_losses[1])  # NaN stored as JSON null
    a, b = o.state_dict(), o2.state_dict()
    assert a["param_groups"] == b["param_groups"] and isinstance(b["param_groups"][0]["betas"], tuple)
    assert a["state"].keys() == b["state"].keys() and len(a["state"]) > 10
    for pid in a["state"]:
        for key, v in a["state"][pid].items():
            torch.testing.assert_close(b["state"][pid][key], v, rtol=0, atol=0)
    assert s2.state_dict() == s.state_dict()
    for k, v in m.state_dict().items():
        torch.testing.assert_close(m2.state_dict()[k], v, rtol=0, atol=0)
        torch.testing.assert_close(got.best_state[k], v, rtol=0, atol=0)
    tensors, _ = C.read_checkpoint(str(tmp_path))
    assert tensors["rng/torch"].dtype == torch.uint8 and any(k.startswith("optimizer/") for k in tensors)


def test_resume_after_interruption_continues_from_the_saved_step(tmp_path, scene, monkeypatch):
    sc, work = scene
    cfg = _config(sc, epochs=3, steps_per_epoch=2)
    full = train(cfg, str(tmp_path / "full"), work_dir=work)
    full_sd = load_bundle(str(tmp_path / "full"))[0].state_dict()
    out = str(tmp_path / "model")
    real_validate = train_loop.validate
    calls = {"n": 0}

    def crash_on_second(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("killed during epoch 2")
        return real_validate(*a, **k)

    monkeypatch.setattr(train_loop, "validate", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, out, work_dir=work)
    monkeypatch.setattr(train_loop, "validate", real_validate)
    saved_t, saved = C.read_checkpoint(out)
    assert (saved["epoch"], saved["global_step"], len(saved["step_losses"])) == (1, 2, 2)

    restored = {}
    real_restore = train_loop.restore_checkpoint

    def spy(model_dir, model, opt, sched, config):
        st = real_restore(model_dir, model, opt, sched, config)
        restored["opt"] = {k: {kk: vv.clone() for kk, vv in v.items()} for k, v in opt.state_dict()["state"].items()}
        restored["step"] = st.global_step
        return st

    monkeypatch.setattr(train_loop, "restore_checkpoint", spy)
    batches = {"n": 0}
    real_batch = train_loop.make_batch

    def count(*a, **k):
        batches["n"] += 1
        return real_batch(*a, **k)

    monkeypatch.setattr(train_loop, "make_batch", count)
    res = train(cfg, out, work_dir=work, resume=True)
    assert restored["step"] == 2 and batches["n"] == 2 * 2  # only epochs 2 and 3 ran, 2 steps each
    opt_saved = {k: v for k, v in saved_t.items() if k.startswith("optimizer/")}
    assert len(opt_saved) == sum(len(v) for v in restored["opt"].values()) > 0
    for name, v in opt_saved.items():
        _, pid, key = name.split("/")
        torch.testing.assert_close(restored["opt"][int(pid)][key].cpu(), v, rtol=0, atol=0)
    _, final = C.read_checkpoint(out)
    assert final["global_step"] == 6 and final["epoch"] == 3 and res.epochs_run == 3
    assert final["step_losses"][:2] == saved["step_losses"]
    assert [h["epoch"] for h in res.history] == [1, 2, 3]
    # the resumed run ends where the uninterrupted one did
    assert [h["train_loss"] for h in res.history] == pytest.approx([h["train_loss"] for h in full.history])
    sd = load_bundle(out)[0].state_dict()
    for k in full_sd:
        torch.testing.assert_close(sd[k], full_sd[k])
