"""A tiny random-init U-Net bundle for tests (importable as ``tinymodel`` from any test folder)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

BANDS = ["blue", "green", "red", "nir", "swir"]


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
