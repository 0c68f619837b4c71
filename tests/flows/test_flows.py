"""The Prefect flows run the real stages end to end on a tiny synthetic flood pair.

Runs use Prefect's ephemeral API (a temporary local server with a throw-away DB, started once
per session, ~5-15 s) exactly as ``unetgeo run`` does; each flow run then takes ~1-3 s.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio

pytestmark = pytest.mark.usefixtures("prefect_db")

RUN_OUTPUTS = ("tiles.zarr", "valid.zarr", "probs.zarr", "classes.tif", "confidence.tif", "polygons.gpkg",
               "polygons.shp", "summary.json", "quicklook.png")
FLOOD_OUTPUTS = ("flood.tif", "flood.gpkg")


# -- helpers ---------------------------------------------------------------------------------------


def _read(uri: str | Path) -> tuple[np.ndarray, dict]:
    with rasterio.open(uri) as ds:
        return ds.read(1), {"crs": ds.crs, "transform": ds.transform, "shape": (ds.height, ds.width),
                            "nodata": ds.nodata, "dtype": ds.dtypes[0]}


def _post(path: str, body: dict) -> list[dict]:
    """POST a filter to the Prefect API (the ephemeral server of this session). Raw JSON: the
    3.8.8 clients' read_artifacts/read_logs send explicit nulls that the server refuses."""
    import anyio
    from prefect.client.orchestration import get_client

    async def call():
        async with get_client() as client:
            r = await client._client.post(path, json=body)
            r.raise_for_status()
            return r.json()

    return anyio.run(call)


def _get(path: str) -> dict:
    import anyio
    from prefect.client.orchestration import get_client

    async def call():
        async with get_client() as client:
            r = await client._client.get(path)
            r.raise_for_status()
            return r.json()

    return anyio.run(call)


def _artifacts(flow_run_id) -> list[dict]:
    return _post("/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [str(flow_run_id)]}}})


def _logs(flow_run_id) -> list[dict]:
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)  # logs are sent in batches
    return _post("/logs/filter", {"logs": {"flow_run_id": {"any_": [str(flow_run_id)]}}, "limit": 200})


def _task_runs(flow_run_id) -> list[dict]:
    return _post("/task_runs/filter", {"flow_runs": {"id": {"any_": [str(flow_run_id)]}}})


def _water_mask(labels_uri: str, out: Path) -> Path:
    """A single-band water mask without class names (1 water, 0 not, 255 unknown)."""
    with rasterio.open(labels_uri) as src:
        profile = {**src.profile, "nodata": 255}
        data = src.read(1)
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(data, 1)  # labels: 0 background, 1 water, 255 outside -> already a mask
    return out


# -- the API itself --------------------------------------------------------------------------------


def test_api_accepts_the_explicit_nulls_prefect_clients_send() -> None:
    """Prefect 3.8.8's clients send ``"limit": null`` etc. in filter bodies; FastAPI >= 0.151 answers
    422 to those (``prefect deploy``, workers and artifact reads break): fastapi must be < 0.151."""
    import anyio
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import WorkPoolFilter

    from flows.cli_entry import prefect_runtime

    async def calls():
        async with get_client() as client:
            await client.read_artifacts()  # body {"limit": null, "offset": null, "sort": null, ...}
            await client.read_work_pools(work_pool_filter=WorkPoolFilter())

    with prefect_runtime():
        anyio.run(calls)


# -- retry policy ----------------------------------------------------------------------------------


def test_retry_condition_retries_io_errors_only() -> None:
    from flows.tasks import is_transient
    from unetgeo.errors import (
        BandMismatchError,
        ConfigError,
        GridMismatchError,
        InputError,
        SceneReadError,
        StoreError,
    )

    assert is_transient(OSError("connection reset"))
    assert is_transient(SceneReadError("s3://b/x.tif: timed out"))
    assert is_transient(StoreError("tiles.zarr: incomplete"))
    for exc in (ValueError("x"), GridMismatchError("g"), BandMismatchError("b"), ConfigError("c"),
                InputError("i"), RuntimeError("r"), FileNotFoundError("f"), PermissionError("p"), None):
        assert not is_transient(exc), exc
    try:
        try:
            raise FileNotFoundError("scene.tif")
        except FileNotFoundError as e:
            raise SceneReadError("scene.tif: cannot be read") from e
    except SceneReadError as wrapped:
        assert not is_transient(wrapped)  # a missing local file does not come back on a retry


def test_stage_tasks_retry_oserror_and_never_valueerror() -> None:
    """The real task engine with the stage options: OSError is retried, ValueError is not."""
    from prefect import flow, task

    from flows.cli_entry import prefect_runtime
    from flows.tasks import STAGE

    calls: list[str] = []

    @task(**{**STAGE, "retry_delay_seconds": 0})
    def flaky(kind: str) -> str:
        calls.append(kind)
        if len(calls) == 1:
            raise OSError("transient") if kind == "io" else ValueError("bad input")
        return "ok"

    @flow
    def run(kind: str) -> str:
        return flaky(kind)

    with prefect_runtime():
        assert run("io") == "ok"
        assert calls == ["io", "io"]
        calls.clear()
        with pytest.raises(ValueError, match="bad input"):
            run("value")
        assert calls == ["value"]


def test_stage_tasks_do_not_hash_or_persist_inputs() -> None:
    from prefect.cache_policies import NONE

    from flows import tasks

    stage_tasks = [tasks.inspect_inputs, tasks.tile, tasks.predict, tasks.stitch, tasks.vectorize,
                   tasks.flood_raster, tasks.flood_polygons, tasks.report, tasks.train]
    for t in stage_tasks:
        assert isinstance(t.cache_policy, type(NONE)), t.name
        assert t.persist_result is False, t.name
        assert t.retry_condition_fn is tasks.retry_on_io_error, t.name
        assert t.retries >= 1, t.name


# -- scene-to-polygons -----------------------------------------------------------------------------


def test_scene_flow_with_reference_scene(tmp_path: Path, pair: dict, tiny_model: Path, tiny_config: Path) -> None:
    """All stages, the reference scene classified too, flood = water now and not water before."""
    from flows.cli_entry import prefect_runtime
    from flows.scene_to_polygons import SUMMARY_ARTIFACT_KEY, scene_to_polygons
    from unetgeo.vectorize import flood_pixels

    out = tmp_path / "run"
    with prefect_runtime():
        state = scene_to_polygons(scene=pair["post"].image_uri, model=str(tiny_model), out=str(out),
                                  reference=pair["pre"].image_uri, truth=pair["post"].labels_uri,
                                  config=str(tiny_config), return_state=True)
        assert state.is_completed(), state.message
        summary = state.result()
        run_id = state.state_details.flow_run_id
        artifacts = _artifacts(run_id)
        logs = _logs(run_id)
        task_names = sorted(t["name"] for t in _task_runs(run_id))

    for name in RUN_OUTPUTS + FLOOD_OUTPUTS + ("reference/classes.tif", "reference/tiles.zarr"):
        assert (out / name).exists(), name
    assert summary == json.loads((out / "summary.json").read_text())
    timings = summary["timings_s"]
    assert {"tile", "predict", "stitch", "vectorize", "reference", "flood"} <= set(timings)
    assert all(v > 0 for v in timings.values()), timings

    # classes.tif keeps the scene's grid; flood.tif is exactly water-now-and-not-before
    classes, cmeta = _read(out / "classes.tif")
    with rasterio.open(pair["post"].image_uri) as ds:
        assert (cmeta["crs"], cmeta["transform"], cmeta["shape"]) == (ds.crs, ds.transform, (ds.height, ds.width))
    assert (cmeta["dtype"], cmeta["nodata"]) == ("uint8", 255)
    before, _ = _read(out / "reference" / "classes.tif")
    flood, fmeta = _read(out / "flood.tif")
    assert fmeta["transform"] == cmeta["transform"]
    want = flood_pixels(classes, classes != 255, before, before != 255, water_class_id=1)
    np.testing.assert_array_equal(flood, want)
    n_flooded = int((flood == 1).sum())
    assert 0 < n_flooded < flood.size

    # flood.gpkg holds the flooded polygons only, covering exactly the flooded pixels (10 m pixels)
    assert [str(x) for x in pyogrio.list_layers(out / "flood.gpkg")[:, 0]] == ["flooded"]
    gdf = pyogrio.read_dataframe(out / "flood.gpkg", layer="flooded")
    assert gdf["area_m2"].sum() == pytest.approx(n_flooded * 100.0, rel=1e-6)
    assert set(pyogrio.list_layers(out / "polygons.gpkg")[:, 0]) <= {"background", "water"}

    # Prefect records: tasks of both scenes, the summary artifact, the library's own log records
    assert "tile-reference" in task_names and "predict-reference" in task_names and "report" in task_names
    md = [a for a in artifacts if a["key"] == SUMMARY_ARTIFACT_KEY]
    assert len(md) == 1 and md[0]["type"] == "markdown"
    assert "| timings_s.predict |" in md[0]["data"]
    assert any(rec["name"].startswith("unetgeo.") for rec in logs), sorted({r["name"] for r in logs})


def test_scene_flow_with_water_mask_and_overrides(tmp_path: Path, pair: dict, tiny_model: Path,
                                                  tiny_config: Path, capfd: pytest.CaptureFixture) -> None:
    """A single-band mask reference is used as it is; scales/flips/device override the config;
    the CLI entry point keeps Prefect's chatter off the console."""
    from flows.cli_entry import run_scene_flow
    from unetgeo.io.store import open_store

    mask = _water_mask(pair["pre"].labels_uri, tmp_path / "pre_water.tif")
    out = tmp_path / "run"
    capfd.readouterr()
    summary = run_scene_flow(scene=pair["post"].image_uri, model=str(tiny_model), out=str(out),
                             reference=str(mask), config=str(tiny_config), scales=[1.0, 0.5], flips=True,
                             device="cpu")
    console = capfd.readouterr()
    assert "Beginning flow run" not in console.err + console.out
    assert "Finished in state" not in console.err + console.out

    assert not (out / "reference").exists()  # nothing to predict for a mask
    attrs = dict(open_store(str(out / "probs.zarr")).attrs)
    assert attrs["scales"] == [1.0, 0.5] and attrs["flips"] is True
    classes, _ = _read(out / "classes.tif")
    water_before, _ = _read(mask)
    flood, _ = _read(out / "flood.tif")
    valid = (classes != 255) & (water_before != 255)
    want = np.where(valid, ((classes == 1) & (water_before == 0)).astype(np.uint8), 255)
    np.testing.assert_array_equal(flood, want)
    assert "reference" not in summary["timings_s"] and summary["timings_s"]["flood"] > 0


@pytest.mark.parametrize("case", ["bands", "grid", "missing"])
def test_bad_inputs_fail_before_anything_is_written(tmp_path: Path, pair: dict, tiny_model: Path, case: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Value errors are never retried, and a missing local file fails before any task runs."""
    from flows import tasks
    from flows.cli_entry import run_scene_flow
    from unetgeo.errors import BandMismatchError, GridMismatchError, SceneReadError

    calls: list[str] = []
    real = tasks.describe_inputs
    monkeypatch.setattr(tasks, "describe_inputs", lambda *a, **k: calls.append("inspect") or real(*a, **k))

    scene, reference = pair["post"].image_uri, None
    if case == "bands":  # a 3-band scene for a 5-band model
        scene = str(tmp_path / "rgb.tif")
        with rasterio.open(pair["post"].image_uri) as src:
            profile = {**src.profile, "count": 3}
            data = src.read([1, 2, 3])
        with rasterio.open(scene, "w", **profile) as dst:
            dst.write(data)
        err = BandMismatchError
    elif case == "grid":  # the training scene lies east of the pair: another grid
        reference, err = pair["train"].image_uri, GridMismatchError
    else:
        reference, err = str(tmp_path / "no_such_reference.tif"), SceneReadError
    out = tmp_path / "run"
    with pytest.raises(err, match="no_such_reference.tif: no such file" if case == "missing" else None):
        run_scene_flow(scene=scene, model=str(tiny_model), out=str(out), reference=reference)
    if case == "missing":
        assert calls == [] and not out.exists()
    else:
        assert calls == ["inspect"]  # tried once: a ValueError is not retried
        assert list(out.iterdir()) == []  # the run folder is created, nothing is written into it


def test_reference_kinds_and_flood_plan(tmp_path: Path, pair: dict, tiny_model: Path) -> None:
    """A scene, a label raster with class names and a bare mask are told apart; a water class that
    the model or the reference lacks (or holds at another id) is refused before any work."""
    from flows.scene_to_polygons import flood_plan
    from flows.tasks import class_names_tag, describe_inputs
    from unetgeo.config import load_config
    from unetgeo.errors import ConfigError, InputError

    scene, model = pair["post"].image_uri, str(tiny_model)
    assert describe_inputs(scene, model)["reference_kind"] is None
    as_scene = describe_inputs(scene, model, pair["pre"].image_uri)
    as_labels = describe_inputs(scene, model, pair["pre"].labels_uri)  # tag "background,water"
    as_mask = describe_inputs(scene, model, str(_water_mask(pair["pre"].labels_uri, tmp_path / "m.tif")))
    assert [d["reference_kind"] for d in (as_scene, as_labels, as_mask)] == ["scene", "classes", "mask"]
    assert as_labels["reference_class_names"] == ["background", "water"]
    assert as_scene["class_names"] == ["background", "water"]

    cfg = load_config(None)
    assert flood_plan(cfg, as_labels, reference="pre_labels.tif", model=model) == (1, "classes")
    assert flood_plan(cfg, as_mask, reference="m.tif", model=model) == (1, "mask")
    swapped = {**as_labels, "reference_class_names": ["water", "background"]}
    with pytest.raises(InputError, match="do not have 'water' at id 1"):
        flood_plan(cfg, swapped, reference="landuse.tif", model=model)
    lake = load_config(None, flood={"water_class": "lake"},
                       classes=[{"name": "land", "color": "#00ff00"}, {"name": "lake", "color": "#0000ff"}])
    with pytest.raises(ConfigError, match="flood.water_class='lake' is not a class of model"):
        flood_plan(lake, as_scene, reference="pre.tif", model=model)
    assert class_names_tag('["a", "b"]') == ["a", "b"] and class_names_tag("a, b") == ["a", "b"]
    assert class_names_tag("") is None and class_names_tag(None) is None


def test_artifact_errors_do_not_fail_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    import prefect.artifacts
    from prefect import flow

    from flows.cli_entry import prefect_runtime
    from flows.scene_to_polygons import publish_artifacts

    def boom(**kwargs):
        raise ConnectionError("API unreachable")

    monkeypatch.setattr(prefect.artifacts, "create_markdown_artifact", boom)

    @flow
    def publish() -> bool:
        return publish_artifacts({"a": 1})

    with prefect_runtime():
        assert publish() is False


def test_summary_markdown_flattens_nested_values() -> None:
    from flows.scene_to_polygons import summary_markdown

    md = summary_markdown({"area_km2": {"water": 1.23456}, "note": "a|b", "ids": list(range(20)), "n": 3,
                           "config": {"name": "flood", "dump": {"x": 1}}, "outputs": [{"name": "a"}]})
    lines = md.splitlines()
    assert lines[2:4] == ["| key | value |", "|---|---|"]
    assert lines[4:] == ["| area_km2.water | 1.235 |", "| note | a\\|b |", "| ids | [20 items] |", "| n | 3 |",
                         "| config.name | flood |"]


# -- train-model and flood-monitor -----------------------------------------------------------------


def test_train_flow_writes_a_bundle(tmp_path: Path, pair: dict, tiny_config: Path) -> None:
    import torch

    from flows.cli_entry import run_train_flow
    from unetgeo.model import load_bundle

    torch.set_num_threads(1)
    cfg = tmp_path / "train.yaml"
    scenes = f"scenes: [{{image: '{pair['train'].image_uri}', labels: '{pair['train'].labels_uri}'}}], "
    cfg.write_text(tiny_config.read_text().replace("training: {", "training: {" + scenes, 1))
    result = run_train_flow(config=str(cfg), out=str(tmp_path / "model"), work_dir=str(tmp_path / "work"))
    assert result["model_dir"] == str(tmp_path / "model")
    assert result["epochs_run"] == 1
    model, meta = load_bundle(result["model_dir"])
    assert list(meta.in_bands) == ["blue", "green", "red", "nir", "swir"]
    assert list(meta.class_names) == ["background", "water"]


def test_flood_monitor_processes_new_scenes_once(tmp_path: Path, pair: dict, tiny_model: Path,
                                                 tiny_config: Path) -> None:
    from flows.cli_entry import prefect_runtime
    from flows.flood_monitor import flood_monitor, pending_scenes

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "s2_20261121.tif").symlink_to(pair["post"].image_uri)
    (inbox / "notes.txt").write_text("not a scene")
    mask = _water_mask(pair["pre"].labels_uri, tmp_path / "pre_water.tif")
    out_root = tmp_path / "monitor"
    assert pending_scenes(str(inbox), str(out_root)) == [str(inbox / "s2_20261121.tif")]
    with prefect_runtime():
        first = flood_monitor(inbox=str(inbox), reference=str(mask), model=str(tiny_model), out_root=str(out_root),
                              config=str(tiny_config))
        second = flood_monitor(inbox=str(inbox), reference=str(mask), model=str(tiny_model), out_root=str(out_root),
                               config=str(tiny_config))
    assert list(first["processed"]) == [str(inbox / "s2_20261121.tif")]
    assert first["processed"][str(inbox / "s2_20261121.tif")] >= 0
    assert (out_root / "s2_20261121" / "flood.gpkg").exists()
    assert second == {"processed": {}, "pending": 0}
    assert pending_scenes(str(inbox), str(out_root)) == []


# -- deployments -----------------------------------------------------------------------------------


def test_python_deploy_creates_the_three_deployments() -> None:
    """flows/deploy.py: same deployments as prefect.yaml, working directory = the repository."""
    from flows.cli_entry import prefect_runtime
    from flows.deploy import REPO, deploy_all, ensure_work_pool

    with prefect_runtime():
        ensure_work_pool("unetgeo-test-pool")
        ensure_work_pool("unetgeo-test-pool")  # idempotent
        ids = deploy_all("unetgeo-test-pool")
        deps = {}
        for i in ids:
            d = _get(f"/deployments/{i}")
            deps[_get(f"/flows/{d['flow_id']}")["name"] + "/" + d["name"]] = d
    assert sorted(deps) == ["flood-monitor/default", "scene-to-polygons/default", "train-model/default"]
    for d in deps.values():
        assert d["work_pool_name"] == "unetgeo-test-pool"
        assert d["pull_steps"] == [{"prefect.deployments.steps.set_working_directory": {"directory": str(REPO)}}]
        assert d["job_variables"]["env"]["PREFECT_LOGGING_EXTRA_LOGGERS"] == "unetgeo"
        assert (REPO / d["entrypoint"].split(":")[0]).is_file()
    sched = deps["flood-monitor/default"]["schedules"]
    assert len(sched) == 1 and sched[0]["schedule"]["cron"] == "0 * * * *" and sched[0]["active"] is False
    assert set(deps["scene-to-polygons/default"]["parameter_openapi_schema"]["required"]) == {"scene", "model", "out"}


# -- the local API of `unetgeo run` ----------------------------------------------------------------


@pytest.mark.slow  # ~20 s: a fresh process and a fresh database (migrations)
def test_local_api_is_quiet_and_stops_with_the_process(tmp_path: Path) -> None:
    """A fresh process without PREFECT_API_URL: the flow runs against a local server subprocess,
    Prefect prints nothing, and the server is gone once the process has exited."""
    import os
    import subprocess
    import sys

    code = (
        "from flows.cli_entry import LocalApi, prefect_runtime, prestart\n"
        "from prefect import flow, task\n"
        "@task\n"
        "def add(x: int) -> int:\n"
        "    return x + 1\n"
        "@flow\n"
        "def f(x: int) -> int:\n"
        "    return add(x)\n"
        "prestart()\n"
        "with prefect_runtime(warm=()):\n"
        "    assert f(1) == 2 and f(2) == 3\n"
        "print('PID', LocalApi.proc.pid, LocalApi.url)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["PREFECT_HOME"] = str(tmp_path / "home")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    pid_line = [line for line in res.stdout.splitlines() if line.startswith("PID ")]
    assert len(pid_line) == 1 and pid_line[0].split()[2].startswith("http://127.0.0.1:")
    assert res.stderr.strip() == "", res.stderr[-2000:]  # no "Beginning flow run", no server banner
    assert (tmp_path / "home" / "prefect.db").exists()  # the runs were recorded in PREFECT_HOME
    pid = int(pid_line[0].split()[1])
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # the server subprocess was stopped at exit (and reaped)
