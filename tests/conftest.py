"""Shared fixtures: real data location, tiny synthetic scenes, markers."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
BANDS = ["blue", "green", "red", "nir", "swir"]
SIZE_PX = 128
SHARED_DATA = Path(os.environ.get("UNETGEO_SHARED_DATA", ROOT.parent / "shared" / "data"))


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "unetgeo")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import torch

    skip_gpu = pytest.mark.skip(reason="no CUDA device on this machine")
    skip_data = pytest.mark.skip(reason=f"real data folder {SHARED_DATA} is absent")
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)
        if "realdata" in item.keywords and not SHARED_DATA.is_dir():
            item.add_marker(skip_data)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real imagery folder ``../shared/data`` (tests using it carry the realdata marker)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent")
    return SHARED_DATA


@pytest.fixture(scope="session")
def pair(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """``make_flood_pair`` at 128 px: ``pre``, ``post`` and ``train`` scenes with flood labels."""
    from unetgeo.synthetic import make_flood_pair

    return make_flood_pair(str(tmp_path_factory.mktemp("pair")), size_px=SIZE_PX, seed=3)


def write_tiny_model(model_dir: Path, calibrate_scene: str | None = None, seed: int = 0) -> Path:
    """A random-init depth-3 U-Net bundle (~0.7 M parameters). With ``calibrate_scene`` its head
    bias is shifted so that about half of that scene goes to each class (a random head alone
    predicts one class everywhere, which would make every polygon test trivial)."""
    import rasterio
    import torch

    from unetgeo.config import ModelSpec
    from unetgeo.model import build_model, save_bundle

    spec = ModelSpec(arch="Unet", encoder="resnet18", encoder_depth=3, decoder_channels=(16, 8, 8))
    torch.manual_seed(seed)
    model = build_model(spec, len(BANDS), 2).eval()
    mean, std = 1000.0, 500.0
    if calibrate_scene is not None:
        with rasterio.open(calibrate_scene) as ds:
            x = (ds.read(window=((0, 64), (0, 64))).astype(np.float32) - mean) / std
        with torch.inference_mode():
            logits = model(torch.from_numpy(x)[None])[0]
        head = model.segmentation_head[0]
        with torch.no_grad():
            head.bias[1] += float(torch.median(logits[0] - logits[1]))
    meta = {
        "arch": spec.arch, "encoder": spec.encoder, "encoder_depth": spec.encoder_depth,
        "decoder_channels": list(spec.decoder_channels), "in_bands": BANDS,
        "norm": {"mean": [mean] * len(BANDS), "std": [std] * len(BANDS)},
        "classes": [{"name": "background", "color": "#d9d9d9"}, {"name": "water", "color": "#1f78b4"}],
        "tile_px": 64, "metrics": {}, "training": {}, "name": "tiny",
    }
    save_bundle(str(model_dir), model, meta)
    return model_dir


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory, pair: dict) -> Path:
    """The tiny model bundle, calibrated on the post-flood scene."""
    import torch

    torch.set_num_threads(1)
    return write_tiny_model(tmp_path_factory.mktemp("model") / "tiny", pair["post"].image_uri)


@pytest.fixture(scope="session")
def tiny_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A config for tiny runs: 64 px tiles, a 16 px halo, CPU, 2 s of training at most."""
    p = tmp_path_factory.mktemp("config") / "tiny.yaml"
    p.write_text(
        "name: tiny\n"
        "model: {arch: Unet, encoder: resnet18, encoder_depth: 3, decoder_channels: [16, 8, 8]}\n"
        "tiling: {tile_px: 64}\n"
        "inference: {halo_px: 16, device: cpu, batch_size: 4}\n"
        "training: {chip_px: 64, batch_size: 2, epochs: 1, steps_per_epoch: 2, warmup_steps: 0,\n"
        "           val_block_px: 64, device: cpu, num_threads: 1}\n"
    )
    return p
