"""Two `unetgeo run`s into one folder, and runs killed with SIGKILL: never a wrong result, no orphans."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyogrio
import pytest


def _cmd(scene: str, model: Path, config: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "unetgeo.cli", "-q", "run", scene, "--model", str(model), "--out", str(out),
            "--config", str(config), "--device", "cpu"]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "UNETGEO_THREADS": "1"}


def _same_outputs(a: Path, b: Path) -> None:
    assert (a / "classes.tif").read_bytes() == (b / "classes.tif").read_bytes()
    assert (a / "confidence.tif").read_bytes() == (b / "confidence.tif").read_bytes()
    for layer in [str(x) for x in pyogrio.list_layers(a / "polygons.gpkg")[:, 0]]:
        pa = pyogrio.read_dataframe(a / "polygons.gpkg", layer=layer)
        pb = pyogrio.read_dataframe(b / "polygons.gpkg", layer=layer)
        assert len(pa) == len(pb) and pa.geometry.geom_equals(pb.geometry).all(), layer
        np.testing.assert_allclose(pa["area_m2"], pb["area_m2"])


@pytest.fixture(scope="module")
def single_run(tmp_path_factory: pytest.TempPathFactory, pair: dict, tiny_model: Path, tiny_config: Path) -> Path:
    out = tmp_path_factory.mktemp("single") / "run"
    res = subprocess.run(_cmd(pair["post"].image_uri, tiny_model, tiny_config, out), env=_env(),
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    return out


@pytest.mark.parametrize("delay_s", [0, 5, 10])
def test_two_runs_into_one_folder(delay_s: float, tmp_path: Path, pair: dict, tiny_model: Path, tiny_config: Path,
                                  single_run: Path) -> None:
    """Either both finish with the single run's outputs, or the second is refused naming the holder."""
    out = tmp_path / "run"
    cmd = _cmd(pair["post"].image_uri, tiny_model, tiny_config, out)
    first = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(delay_s)
    second = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    results = [(p.wait(timeout=300), p.communicate()[1]) for p in (first, second)]
    codes = [c for c, _ in results]
    assert set(codes) <= {0, 2} and 0 in codes, results
    for code, err in results:
        if code == 2:
            assert "another unetgeo run is writing this folder" in err and len(err.strip().splitlines()) == 1, err
    _same_outputs(single_run, out)
    assert not (out / ".unetgeo.lock").exists()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow  # ~1-2 min: a run killed at several points, then resumed each time
@pytest.mark.parametrize("kill_after_s", [2.0, 4.0, 6.0, 8.0])
def test_killed_run_leaves_no_process_and_resumes_to_the_same_result(
        kill_after_s: float, tmp_path: Path, pair: dict, tiny_model: Path, tiny_config: Path, single_run: Path) -> None:
    out = tmp_path / "run"
    cmd = _cmd(pair["post"].image_uri, tiny_model, tiny_config, out)
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # its own process group: children are findable
    time.sleep(kill_after_s)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    deadline = time.monotonic() + 10
    while _group_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _group_alive(proc.pid), "a child process of the killed run is still alive"
    res = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr  # the dead run's lock is stale: taken over
    _same_outputs(single_run, out)
