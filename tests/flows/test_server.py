"""The operator path against a real Prefect server: work pool, prefect.yaml deploy, worker, run.

Everything listens on 127.0.0.1 only and lives in a temporary PREFECT_HOME; the server and the
workers are killed (process groups) whatever happens. One server serves the module's tests.
They stay in the default suite: the server, the deployments and the schedules are what operators
use, so CI must start them for real.
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

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


class Server:
    """A real ``prefect server start`` on 127.0.0.1 with a throw-away PREFECT_HOME, plus workers."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.port = _free_port()
        self.api = f"http://127.0.0.1:{self.port}/api"
        home = tmp / "prefect_home"
        home.mkdir()
        self.env = {
            **os.environ, "PREFECT_HOME": str(home), "PREFECT_PROFILES_PATH": str(home / "profiles.toml"),
            "PREFECT_API_URL": self.api, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_UI_ENABLED": "false",
            "PREFECT_LOGGING_EXTRA_LOGGERS": "unetgeo", "PREFECT_CLI_PROMPT": "false", "OMP_NUM_THREADS": "1",
            "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "5",
        }
        self.procs: list[subprocess.Popen] = []
        self.logs: list = []

    def spawn(self, args: list[str], log_name: str) -> subprocess.Popen:
        log = open(self.tmp / log_name, "w")  # noqa: SIM115 - closed in stop()
        self.logs.append(log)
        proc = subprocess.Popen(PREFECT + args, cwd=self.tmp, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.procs.append(proc)
        return proc

    def start(self) -> None:
        server = self.spawn(["server", "start", "--host", "127.0.0.1", "--port", str(self.port)], "server.log")
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, (self.tmp / "server.log").read_text()[-3000:]
            try:
                if _get(f"{self.api}/health") is True:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "server did not answer /api/health in 180 s"
            time.sleep(0.5)
        _cli(["work-pool", "create", "unetgeo-process", "--type", "process"], self.env)
        _cli(["--no-prompt", "deploy", "--prefect-file", "flows/prefect.yaml", "--all"], self.env)
        _cli(["automation", "create", "--from-file", "flows/automations.yaml"], self.env)

    def wait_state(self, run_id: str, timeout_s: float = 300) -> dict:
        deadline = time.monotonic() + timeout_s
        while True:
            state = _get(f"{self.api}/flow_runs/{run_id}")["state"]
            if state["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                return state
            assert time.monotonic() < deadline, f"flow run still {state['type']} after {timeout_s} s"
            time.sleep(1.0)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            _kill(proc)
        for log in self.logs:
            log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    srv = Server(tmp_path_factory.mktemp("server"))
    try:
        srv.start()
        yield srv
    finally:
        srv.stop()


def test_deploy_and_run_scene_to_polygons_on_a_server(server: Server, tmp_path: Path, pair: dict, tiny_model: Path,
                                                      tiny_config: Path) -> None:
    api, env = server.api, server.env
    out = tmp_path / "run"
    monitor = _get(f"{api}/deployments/name/flood-monitor/default")
    assert [(s["schedule"]["cron"], s["active"]) for s in monitor["schedules"]] == [("0 * * * *", False)]
    assert _get(f"{api}/deployments/name/train-model/default")["entrypoint"] == "flows/train_model.py:train_model"
    deployment = _get(f"{api}/deployments/name/scene-to-polygons/default")
    assert deployment["pull_steps"][0]["prefect.deployments.steps.set_working_directory"]["directory"] == str(REPO)
    assert deployment["job_variables"]["env"]["PREFECT_LOGGING_EXTRA_LOGGERS"] == "unetgeo"
    assert deployment["job_variables"]["env"]["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] == "30"
    automations = _post(f"{api}/automations/filter", {})
    assert [a["name"] for a in automations] == ["unetgeo-crash-zombie-flow-runs"]

    _cli(["deployment", "run", "scene-to-polygons/default", "-p", f"scene={pair['post'].image_uri}",
          "-p", f"model={tiny_model}", "-p", f"out={out}", "-p", f"reference={pair['pre'].labels_uri}",
          "-p", f"config={tiny_config}", "-p", "flips=true", "-p", "halo_px=8"], env)
    runs = _post(f"{api}/flow_runs/filter", {"deployments": {"id": {"any_": [deployment["id"]]}}})
    assert len(runs) == 1
    run_id = runs[0]["id"]
    assert runs[0]["parameters"]["flips"] is True and runs[0]["parameters"]["scene"] == pair["post"].image_uri

    worker = server.spawn(["worker", "start", "--pool", "unetgeo-process", "--run-once", "--limit", "1"],
                          "worker-once.log")
    state = server.wait_state(run_id)
    assert state["type"] == "COMPLETED", f"{state}\n{(server.tmp / 'worker-once.log').read_text()[-5000:]}"
    worker.wait(timeout=60)  # --run-once: the worker exits after its run

    for name in ("classes.tif", "polygons.gpkg", "flood.tif", "flood.gpkg", "summary.json", "quicklook.png"):
        assert (out / name).exists(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["flooded_km2"] is not None and summary["files"]["flood"] == str(out / "flood.tif")
    assert summary["run"]["effective"]["halo_px"] == 8
    artifacts = _post(f"{api}/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [run_id]}}})
    assert [a["key"] for a in artifacts] == ["scene-to-polygons-summary"]
    logs = _post(f"{api}/logs/filter", {"logs": {"flow_run_id": {"any_": [run_id]}}, "limit": 200})
    assert any(rec["name"].startswith("unetgeo.") for rec in logs), sorted({r["name"] for r in logs})


class _Receiver(http.server.BaseHTTPRequestHandler):
    bodies: list[bytes] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        _Receiver.bodies.append(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_scheduled_flood_monitor_runs_unattended(server: Server, tmp_path: Path, pair: dict, tiny_model: Path,
                                                 tiny_config: Path) -> None:
    """The schedule creates runs by itself; good scenes are processed once, a corrupt one is recorded
    as failed, a file still being written waits, and one alert reaches a local webhook receiver."""
    import csv
    import shutil
    import threading

    api, env = server.api, server.env
    inbox, out_root = tmp_path / "inbox", tmp_path / "monitor"
    inbox.mkdir()
    shutil.copy(pair["post"].image_uri, inbox / "a_after.tif")
    shutil.copy(pair["post"].image_uri, inbox / "b_after_again.tif")  # same content: no growth, no 2nd alert
    (inbox / "c_corrupt.tif").write_bytes(b"II*\x00" + b"\x00" * 200)
    old = time.time() - 600
    for f in inbox.iterdir():
        os.utime(f, (old, old))
    growing, stop = inbox / "d_copying.tif", threading.Event()

    def keep_writing() -> None:
        with open(growing, "ab") as f:
            while not stop.is_set():
                f.write(b"\x00" * 1024)
                f.flush()
                time.sleep(0.5)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    _Receiver.bodies = []
    threads = [threading.Thread(target=keep_writing, daemon=True), threading.Thread(target=httpd.serve_forever,
                                                                                    daemon=True)]
    for t in threads:
        t.start()
    try:
        block = (f"from prefect.blocks.notifications import CustomWebhookNotificationBlock as B\n"
                 f"B(name='flood-alert', url='http://127.0.0.1:{httpd.server_address[1]}/alert', "
                 "json_data={'text': '{{body}}'}).save('flood-alert', overwrite=True)\n")
        res = subprocess.run([sys.executable, "-c", block], env=env, capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr[-2000:]
        dep = _get(f"{api}/deployments/name/flood-monitor/default")
        params = {"inbox": str(inbox), "reference": str(_mask(pair, tmp_path)), "model": str(tiny_model),
                  "out_root": str(out_root), "config": str(tiny_config), "stable_s": 20,
                  "alert_block": "custom-webhook/flood-alert", "alert_growth_km2": 0.0001}
        _patch(f"{api}/deployments/{dep['id']}", {"parameters": params})
        _cli(["deployment", "schedule", "create", "flood-monitor/default", "--interval", "20"], env)
        server.spawn(["worker", "start", "--pool", "unetgeo-process"], "worker.log")
        done = _wait_runs(api, dep["id"], n=2, timeout_s=420)
        assert [r["state"]["type"] for r in done[:2]] == ["COMPLETED", "COMPLETED"], (server.tmp / "worker.log")
    finally:
        stop.set()
        httpd.shutdown()
        _patch(f"{api}/deployments/{dep['id']}", {"paused": True})  # the next tests need the worker
    rows = list(csv.DictReader((out_root / "history.csv").open()))
    assert sorted((r["scene_id"].split("-")[0], r["status"]) for r in rows) == [
        ("a_after", "ok"), ("b_after_again", "ok"), ("c_corrupt", "failed")]
    assert all(float(r["flooded_km2"]) > 0 for r in rows if r["status"] == "ok")
    assert "c_corrupt.tif" in next(r["message"] for r in rows if r["status"] == "failed")
    assert len(_Receiver.bodies) == 1 and b"a_after" in _Receiver.bodies[0], _Receiver.bodies


def _flow_run_pids(run_id: str) -> list[int]:
    """Processes whose environment names flow run ``run_id`` (the worker's flow-run subprocess)."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if f"PREFECT__FLOW_RUN_ID={run_id}".encode() in (d / "environ").read_bytes():
                    pids.append(int(d.name))
            except OSError:
                continue
    return pids


def test_a_killed_flow_run_is_crashed_frees_its_slot_and_resumes(server: Server, tmp_path: Path, pair: dict,
                                                                  tiny_model: Path, tiny_config: Path) -> None:
    """kill -9 of the flow-run process: the run becomes Crashed, the deployment's concurrency slot is
    free again, and the rerun completes with the outputs of an uninterrupted run."""
    api, env = server.api, server.env
    out, ref = tmp_path / "run", tmp_path / "uninterrupted"
    params = ["-p", f"scene={pair['post'].image_uri}", "-p", f"model={tiny_model}", "-p", f"config={tiny_config}"]
    dep = _get(f"{api}/deployments/name/scene-to-polygons/default")
    if not any(p.poll() is None for p in server.procs[1:]):
        server.spawn(["worker", "start", "--pool", "unetgeo-process"], "worker-crash.log")
    _cli(["deployment", "run", "scene-to-polygons/default", *params, "-p", f"out={out}"], env)
    run_id = _post(f"{api}/flow_runs/filter", {"deployments": {"id": {"any_": [dep["id"]]}},
                                                "sort": "EXPECTED_START_TIME_DESC", "limit": 1})[0]["id"]
    deadline = time.monotonic() + 180
    while not (pids := _flow_run_pids(run_id)) or _get(f"{api}/flow_runs/{run_id}")["state"]["type"] != "RUNNING":
        assert time.monotonic() < deadline, "the flow run never started"
        time.sleep(0.5)
    time.sleep(3.0)  # into the stages
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    assert server.wait_state(run_id, timeout_s=150)["type"] == "CRASHED"
    limit = _get(f"{api}/deployments/{dep['id']}").get("global_concurrency_limit") or {}
    assert limit.get("active_slots", 0) == 0, limit
    _cli(["deployment", "run", "scene-to-polygons/default", *params, "-p", f"out={out}"], env)
    rerun = _post(f"{api}/flow_runs/filter", {"deployments": {"id": {"any_": [dep["id"]]}},
                                              "sort": "EXPECTED_START_TIME_DESC", "limit": 1})[0]["id"]
    assert server.wait_state(rerun)["type"] == "COMPLETED"
    res = subprocess.run([sys.executable, "-m", "unetgeo.cli", "-q", "run", pair["post"].image_uri, "--model",
                          str(tiny_model), "--config", str(tiny_config), "--out", str(ref)], capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert (out / "classes.tif").read_bytes() == (ref / "classes.tif").read_bytes()


def _mask(pair: dict, tmp: Path) -> Path:
    import rasterio

    with rasterio.open(pair["pre"].labels_uri) as src:
        profile, data = {**src.profile, "nodata": 255}, src.read(1)
    with rasterio.open(tmp / "pre_water.tif", "w", **profile) as dst:
        dst.write(data, 1)
    return tmp / "pre_water.tif"


def _patch(url: str, body: dict, attempts: int = 5) -> None:
    """PATCH ``url``; a 503 (the server's SQLite briefly busy while runs finish) is retried."""
    for i in range(attempts):
        req = urllib.request.Request(url, data=json.dumps(body).encode(), method="PATCH",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10):  # noqa: S310 - loopback only
                return
        except urllib.error.HTTPError as e:
            if e.code != 503 or i == attempts - 1:
                raise
            time.sleep(1.0 + i)


def _wait_runs(api: str, deployment_id: str, n: int, timeout_s: float) -> list[dict]:
    """The first ``n`` finished runs of a deployment, oldest first (created by its schedule)."""
    deadline = time.monotonic() + timeout_s
    while True:
        runs = _post(f"{api}/flow_runs/filter", {"deployments": {"id": {"any_": [deployment_id]}},
                                                 "sort": "EXPECTED_START_TIME_ASC"})
        finished = [r for r in runs if r["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")]
        if len(finished) >= n:
            return finished
        assert time.monotonic() < deadline, f"{len(finished)} of {n} scheduled runs finished in {timeout_s} s"
        time.sleep(2.0)
