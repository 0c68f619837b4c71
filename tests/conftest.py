"""Shared fixtures: real data location, tiny synthetic scenes, markers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
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
