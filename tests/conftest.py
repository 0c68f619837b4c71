"""Shared fixtures: real data location, tiny synthetic scenes, markers."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from tinymodel import BANDS, write_tiny_model  # noqa: F401 - re-exported for the fixtures

ROOT = Path(__file__).resolve().parent.parent
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


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Run the test with one torch thread (the machine's cores are shared), then restore the count.

    Use it module-wide with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``.
    """
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


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
