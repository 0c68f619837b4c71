"""The operator path against a real Prefect server: work pool, prefect.yaml deploy, worker, run.

Everything listens on 127.0.0.1 only and lives in a temporary PREFECT_HOME; the server and the
worker are killed (process groups) whatever happens. 45-62 s on a busy 2-core machine (server
start 10-13 s, worker + flow-run subprocess + run 24-27 s). It stays in the default suite: the
server and the deployments are what operators use, so CI must start them for real.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PREFECT = [sys.executable, "-m", "prefect"]



def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str, timeout: float = 5.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - loopback only
        return json.loads(r.read().decode())


def _post(url: str, body: dict, timeout: float = 10.0):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310 - loopback only
        return json.loads(r.read().decode())


def _kill(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)


def _cli(args: list[str], env: dict, timeout: float = 180) -> str:
    res = subprocess.run(PREFECT + args, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, f"prefect {' '.join(args)} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res.stdout


def test_deploy_and_run_scene_to_polygons_on_a_server(tmp_path: Path, pair: dict, tiny_model: Path,
                                                      tiny_config: Path) -> None:
    t_start = time.perf_counter()
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    home = tmp_path / "prefect_home"
    home.mkdir()
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_PROFILES_PATH": str(home / "profiles.toml"),
        "PREFECT_API_URL": api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_LOGGING_EXTRA_LOGGERS": "unetgeo",
        "PREFECT_CLI_PROMPT": "false",
        "OMP_NUM_THREADS": "1",
    }
    out = tmp_path / "run"
    server = worker = None
    server_log = open(tmp_path / "server.log", "w")  # noqa: SIM115 - closed in finally
    worker_log_path = tmp_path / "worker.log"
    worker_log = open(worker_log_path, "w")  # noqa: SIM115
    try:
        server = subprocess.Popen(PREFECT + ["server", "start", "--host", "127.0.0.1", "--port", str(port)],
                                  cwd=tmp_path, env=env, stdout=server_log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            try:
                if _get(f"{api}/health") is True:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "server did not answer /api/health in 180 s"
            time.sleep(0.5)
        t_server = time.perf_counter() - t_start

        _cli(["work-pool", "create", "unetgeo-process", "--type", "process"], env)
        _cli(["--no-prompt", "deploy", "--prefect-file", "flows/prefect.yaml", "--all"], env)
        monitor = _get(f"{api}/deployments/name/flood-monitor/default")
        assert [(s["schedule"]["cron"], s["active"]) for s in monitor["schedules"]] == [("0 * * * *", False)]
        assert _get(f"{api}/deployments/name/train-model/default")["entrypoint"] == "flows/train_model.py:train_model"
        deployment = _get(f"{api}/deployments/name/scene-to-polygons/default")
        assert deployment["pull_steps"][0]["prefect.deployments.steps.set_working_directory"]["directory"] == str(REPO)
        assert deployment["job_variables"]["env"]["PREFECT_LOGGING_EXTRA_LOGGERS"] == "unetgeo"

        _cli(["deployment", "run", "scene-to-polygons/default", "-p", f"scene={pair['post'].image_uri}",
              "-p", f"model={tiny_model}", "-p", f"out={out}", "-p", f"reference={pair['pre'].labels_uri}",
              "-p", f"config={tiny_config}", "-p", "flips=true"], env)
        runs = _post(f"{api}/flow_runs/filter", {"deployments": {"id": {"any_": [deployment["id"]]}}})
        assert len(runs) == 1
        run_id = runs[0]["id"]
        assert runs[0]["parameters"]["flips"] is True and runs[0]["parameters"]["scene"] == pair["post"].image_uri

        t_worker = time.perf_counter()
        worker = subprocess.Popen(PREFECT + ["worker", "start", "--pool", "unetgeo-process", "--run-once",
                                             "--limit", "1"],
                                  cwd=tmp_path, env=env, stdout=worker_log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
        deadline = time.monotonic() + 300
        while True:
            state = _get(f"{api}/flow_runs/{run_id}")["state"]
            if state["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                break
            assert time.monotonic() < deadline, f"flow run still {state['type']} after 300 s"
            time.sleep(1.0)
        worker_log.flush()
        assert state["type"] == "COMPLETED", f"{state}\n{worker_log_path.read_text()[-5000:]}"
        worker.wait(timeout=60)  # --run-once: the worker exits after its run
        t_run = time.perf_counter() - t_worker

        for name in ("classes.tif", "polygons.gpkg", "flood.tif", "flood.gpkg", "summary.json", "quicklook.png"):
            assert (out / name).exists(), name
        summary = json.loads((out / "summary.json").read_text())
        assert summary["flooded_km2"] is not None and summary["files"]["flood"] == str(out / "flood.tif")
        artifacts = _post(f"{api}/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [run_id]}}})
        assert [a["key"] for a in artifacts] == ["scene-to-polygons-summary"]
        logs = _post(f"{api}/logs/filter", {"logs": {"flow_run_id": {"any_": [run_id]}}, "limit": 200})
        assert any(rec["name"].startswith("unetgeo.") for rec in logs), sorted({r["name"] for r in logs})
        print(f"server up in {t_server:.1f} s; worker + flow run {t_run:.1f} s; "
              f"total {time.perf_counter() - t_start:.1f} s")
    finally:
        _kill(worker)
        _kill(server)
        server_log.close()
        worker_log.close()
