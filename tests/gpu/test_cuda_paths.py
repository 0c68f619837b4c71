"""CUDA paths of predict: parallel decode into the pinned buffer, bf16, auto batch, TTA; skipped without CUDA."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from unetgeo.config import InferenceSpec
from unetgeo.infer import _Item, _to_device, predict_tiles, read_threads
from unetgeo.io.store import open_store
from unetgeo.tiling import make_tiles

pytestmark = pytest.mark.gpu


def _tiles(tmp_path: Path, size: int = 256) -> tuple[str, str, Path]:
    from test_infer import _bundle, _scene

    scene = _scene(tmp_path / "s.tif", size)
    tr = make_tiles(str(scene), str(tmp_path / "tiles.zarr"), tile_px=64)
    return tr.tiles_uri, tr.valid_uri, _bundle(tmp_path / "model")


def test_pinned_buffer_is_reused_and_copies_exactly() -> None:
    dev = torch.device("cuda")
    items = [_Item(hw=None, x=np.random.default_rng(i).normal(size=(5, 96, 96)).astype(np.float32),  # type: ignore[arg-type]
                   valid_core=np.ones((64, 64), bool)) for i in range(3)]
    pinned, xb = _to_device(items, None, 4, dev)
    assert pinned.is_pinned() and pinned.shape[0] == 4
    torch.testing.assert_close(xb.cpu(), torch.from_numpy(np.stack([it.x for it in items])))
    again, xb2 = _to_device(items[:2], pinned, 4, dev)
    assert again.data_ptr() == pinned.data_ptr()
    torch.testing.assert_close(xb2.cpu(), torch.from_numpy(np.stack([it.x for it in items[:2]])))
    assert read_threads("cuda") >= 2


@pytest.mark.parametrize("update", [{}, {"scales": (0.75, 1.0, 1.25), "flips": True}])
def test_cuda_bf16_matches_cpu_fp32(tmp_path: Path, update: dict) -> None:
    """Decode threads + pinned buffer + bf16 + fitted batch on CUDA agree with the CPU fp32 path."""
    tiles_uri, valid_uri, model_dir = _tiles(tmp_path)
    cpu = predict_tiles(tiles_uri, str(model_dir), str(tmp_path / "cpu.zarr"),
                        inference=InferenceSpec(device="cpu", precision="fp32", halo_px=16, **update))
    gpu = predict_tiles(tiles_uri, str(model_dir), str(tmp_path / "gpu.zarr"),
                        inference=InferenceSpec(device="cuda", precision="bf16", halo_px=16, **update))
    a = open_store(cpu.probs_uri)[:].astype(np.float32)
    b = open_store(gpu.probs_uri)[:].astype(np.float32)
    valid = open_store(valid_uri)[:]
    assert (a.argmax(0) == b.argmax(0))[valid].mean() > 0.97
    assert np.abs(a - b)[:, valid].mean() < 0.02
    assert (b[:, ~valid] == 0).all()
