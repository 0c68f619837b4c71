"""Prediction on a real Dask cluster: a loopback `dask scheduler` and two `dask worker` processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    """``tcp://127.0.0.1:PORT`` of a scheduler with two single-threaded worker processes."""
    from distributed import Client

    port = _free_port()
    addr = f"tcp://127.0.0.1:{port}"
    logs = tmp_path_factory.mktemp("dask")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmds = [[sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", str(port),
             "--no-dashboard"]]
    cmds += [[sys.executable, "-m", "distributed.cli.dask_worker", addr, "--nthreads", "1", "--no-dashboard",
              "--name", f"w{i}", "--host", "127.0.0.1"] for i in range(2)]
    procs = []
    try:
        for i, cmd in enumerate(cmds):
            procs.append(subprocess.Popen(cmd, env=env, stdout=open(logs / f"{i}.log", "w"),  # noqa: SIM115
                                          stderr=subprocess.STDOUT, start_new_session=True))
            if i == 0:
                time.sleep(2.0)
        with Client(addr, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
        yield addr
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
                p.wait(timeout=20)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(p.pid, signal.SIGKILL)


def test_predict_chunks_run_on_the_cluster_workers(cluster: str, tmp_path: Path, pair: dict,
                                                   tiny_model: Path) -> None:
    from distributed import Client, get_task_stream

    from unetgeo.config import InferenceSpec
    from unetgeo.infer import predict_tiles
    from unetgeo.io.store import open_store
    from unetgeo.tiling import make_tiles

    tr = make_tiles(pair["post"].image_uri, str(tmp_path / "tiles.zarr"), tile_px=32)
    spec = InferenceSpec(halo_px=16, device="cpu")
    local = predict_tiles(tr.tiles_uri, str(tiny_model), str(tmp_path / "local.zarr"), inference=spec)
    with Client(cluster) as client, get_task_stream(client) as ts:
        remote = predict_tiles(tr.tiles_uri, str(tiny_model), str(tmp_path / "remote.zarr"), inference=spec,
                               dask_address=cluster)
        workers = {w: info["name"] for w, info in client.scheduler_info()["workers"].items()}
    ran = [workers[t["worker"]] for t in ts.data if t["key"].startswith("predict_windows")]
    assert sorted(ran) == ["w0", "w1"], ran  # both worker processes predicted a share of the chunks
    assert remote.workers == 2 and "2 Dask workers" in remote.device
    np.testing.assert_array_equal(open_store(remote.probs_uri)[:], open_store(local.probs_uri)[:])
