"""The Prefect flows run the real stages end to end on a tiny synthetic flood pair.

Runs use Prefect's own ephemeral API (a temporary local server with a throw-away DB, started
once per session, ~5-15 s); each flow run then takes ~1-3 s.
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
               "polygons.parquet", "polygons.shp", "summary.json", "quicklook.png")
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
    """Prefect's clients send ``"limit": null`` etc. in filter bodies; FastAPI >= 0.151 answers
    422 to those (``prefect deploy``, workers and artifact reads break): fastapi must be < 0.151."""
    import anyio
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import WorkPoolFilter

    async def calls():
        async with get_client() as client:
            await client.read_artifacts()  # body {"limit": null, "offset": null, "sort": null, ...}
            await client.read_work_pools(work_pool_filter=WorkPoolFilter())

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

    assert run("io") == "ok"
    assert calls == ["io", "io"]
    calls.clear()
    with pytest.raises(ValueError, match="bad input"):
        run("value")
    assert calls == ["value"]


def test_stage_tasks_do_not_hash_or_persist_inputs() -> None:
    from prefect.cache_policies import NONE

    from flows import tasks
    from unetgeo.stitch import stitch
    from unetgeo.tiling import make_tiles

    stage_tasks = [tasks.stage_task("tile", make_tiles), tasks.stage_task("stitch", stitch, "stitch-reference")]
    assert [t.name for t in stage_tasks] == ["tile", "stitch"]
    for t in stage_tasks:
        assert isinstance(t.cache_policy, type(NONE)), t.name
        assert t.persist_result is False, t.name
        assert t.retry_condition_fn is tasks.retry_on_io_error, t.name
        assert t.retries >= 1, t.name


# -- scene-to-polygons -----------------------------------------------------------------------------


def test_scene_flow_with_reference_scene(tmp_path: Path, pair: dict, tiny_model: Path, tiny_config: Path) -> None:
    """All stages, the reference scene classified too, flood = water now and not water before."""
    from flows.scene_to_polygons import SUMMARY_ARTIFACT_KEY, scene_to_polygons
    from unetgeo.flood import flood_pixels

    out = tmp_path / "run"
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
                                                  tiny_config: Path) -> None:
    """A single-band mask reference is used as it is; the flow parameters override the config."""
    from flows.scene_to_polygons import scene_to_polygons
    from unetgeo.io.store import open_store

    mask = _water_mask(pair["pre"].labels_uri, tmp_path / "pre_water.tif")
    out = tmp_path / "run"
    summary = scene_to_polygons(scene=pair["post"].image_uri, model=str(tiny_model), out=str(out),
                                reference=str(mask), config=str(tiny_config), scales=[1.0, 0.5], flips=True,
                                device="cpu", halo_px=8, batch_size=2)
    assert not (out / "reference").exists()  # nothing to predict for a mask
    attrs = dict(open_store(str(out / "probs.zarr")).attrs)
    assert attrs["scales"] == [1.0, 0.5] and attrs["flips"] is True and attrs["halo_px"] == 8
    assert summary["run"]["effective"]["batch_size"] == 2
    classes, _ = _read(out / "classes.tif")
    water_before, _ = _read(mask)
    flood, _ = _read(out / "flood.tif")
    valid = (classes != 255) & (water_before != 255)
    want = np.where(valid, ((classes == 1) & (water_before == 0)).astype(np.uint8), 255)
    np.testing.assert_array_equal(flood, want)
    assert "reference" not in summary["timings_s"] and summary["timings_s"]["flood"] > 0


def test_flow_and_cli_give_identical_outputs(tmp_path: Path, pair: dict, tiny_model: Path, tiny_config: Path) -> None:
    """One sequence, two runners: byte-identical classes.tif and equal polygons."""
    from flows.scene_to_polygons import scene_to_polygons
    from unetgeo.cli import main

    args = {"scene": pair["post"].image_uri, "model": str(tiny_model), "reference": pair["pre"].image_uri}
    scene_to_polygons(out=str(tmp_path / "flow"), config=str(tiny_config), **args)
    assert main(["-q", "run", args["scene"], "--model", args["model"], "--reference", args["reference"],
                 "--config", str(tiny_config), "--out", str(tmp_path / "cli")]) == 0
    for name in ("classes.tif", "confidence.tif"):
        assert (tmp_path / "flow" / name).read_bytes() == (tmp_path / "cli" / name).read_bytes(), name
    flood_flow, meta_flow = _read(tmp_path / "flow" / "flood.tif")  # its tags name the run's own reference
    flood_cli, meta_cli = _read(tmp_path / "cli" / "flood.tif")
    np.testing.assert_array_equal(flood_flow, flood_cli)
    assert meta_flow == meta_cli
    for gpkg in ("polygons.gpkg", "flood.gpkg"):
        layers = sorted(str(x) for x in pyogrio.list_layers(tmp_path / "flow" / gpkg)[:, 0])
        for layer in layers:
            a = pyogrio.read_dataframe(tmp_path / "flow" / gpkg, layer=layer).drop(columns=["created"], errors="ignore")
            b = pyogrio.read_dataframe(tmp_path / "cli" / gpkg, layer=layer).drop(columns=["created"], errors="ignore")
            assert len(a) == len(b) and a.geometry.geom_equals(b.geometry).all(), (gpkg, layer)
            np.testing.assert_allclose(a["area_m2"], b["area_m2"])


@pytest.mark.parametrize("case", ["bands", "grid", "missing"])
def test_bad_inputs_fail_the_flow_before_any_task(tmp_path: Path, pair: dict, tiny_model: Path, case: str) -> None:
    """Validation runs in the flow before any task: a value error is never retried, nothing is written."""
    from flows.scene_to_polygons import scene_to_polygons
    from unetgeo.errors import BandMismatchError, GridMismatchError, SceneReadError

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
    state = scene_to_polygons(scene=scene, model=str(tiny_model), out=str(out), reference=reference,
                              return_state=True)
    assert state.is_failed()
    with pytest.raises(err):
        state.result()
    assert _task_runs(state.state_details.flow_run_id) == []
    assert not out.exists()


def test_artifact_errors_do_not_fail_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    import prefect.artifacts
    from prefect import flow

    from flows.scene_to_polygons import publish_artifacts

    def boom(**kwargs):
        raise ConnectionError("API unreachable")

    monkeypatch.setattr(prefect.artifacts, "create_markdown_artifact", boom)

    @flow
    def publish() -> bool:
        return publish_artifacts({"a": 1})

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

    from flows.train_model import train_model
    from unetgeo.model import load_bundle

    torch.set_num_threads(1)
    cfg = tmp_path / "train.yaml"
    scenes = f"scenes: [{{image: '{pair['train'].image_uri}', labels: '{pair['train'].labels_uri}'}}], "
    cfg.write_text(tiny_config.read_text().replace("training: {", "training: {" + scenes, 1))
    result = train_model(config=str(cfg), out=str(tmp_path / "model"), work_dir=str(tmp_path / "work"))
    assert result["model_dir"] == str(tmp_path / "model")
    assert result["epochs_run"] == 1
    model, meta = load_bundle(result["model_dir"])
    assert list(meta.in_bands) == ["blue", "green", "red", "nir", "swir"]
    assert list(meta.class_names) == ["background", "water", "cloud"]  # the embedded flood classes


def test_flood_monitor_processes_new_scenes_once(tmp_path: Path, pair: dict, tiny_model: Path,
                                                 tiny_config: Path) -> None:
    import csv

    from flows.flood_monitor import flood_monitor
    from unetgeo.monitor import pending_scenes, scene_id

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    scene = inbox / "s2_20261121.tif"
    scene.symlink_to(pair["post"].image_uri)
    (inbox / "notes.txt").write_text("not a scene")
    (inbox / "broken.tif").write_bytes(b"II*\x00 this is not a GeoTIFF")
    mask = _water_mask(pair["pre"].labels_uri, tmp_path / "pre_water.tif")
    out_root = tmp_path / "monitor"
    assert [s.uri for s in pending_scenes(str(inbox), str(out_root), stable_s=0)] == [str(inbox / "broken.tif"),
                                                                                      str(scene)]
    kw = {"inbox": str(inbox), "reference": str(mask), "model": str(tiny_model), "out_root": str(out_root),
          "config": str(tiny_config), "stable_s": 0}
    first = flood_monitor(**kw)
    second = flood_monitor(**kw)
    rows = list(csv.DictReader((out_root / "history.csv").open()))
    assert [(r["scene_id"], r["status"]) for r in rows] == [(scene_id(str(inbox / "broken.tif")), "failed"),
                                                            (scene_id(str(scene)), "ok")]
    assert "broken.tif" in rows[0]["message"] and float(rows[1]["flooded_km2"]) >= 0.0
    assert len(first["rows"]) == 2 and (out_root / scene_id(str(scene)) / "flood.gpkg").exists()
    summary = json.loads((out_root / scene_id(str(scene)) / "summary.json").read_text())
    assert summary["run"]["reference_source"] == str(mask)
    assert second == {"rows": [], "pending": 0}
    assert pending_scenes(str(inbox), str(out_root), stable_s=0) == []


# -- deployments -----------------------------------------------------------------------------------


def test_python_deploy_creates_the_three_deployments() -> None:
    """flows/deploy.py: same deployments as prefect.yaml, working directory = the repository."""
    from flows.deploy import REPO, deploy_all, ensure_work_pool

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
        assert d["job_variables"]["env"] == {"PREFECT_LOGGING_EXTRA_LOGGERS": "unetgeo", "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30"}
        assert (REPO / d["entrypoint"].split(":")[0]).is_file()
    sched = deps["flood-monitor/default"]["schedules"]
    assert len(sched) == 1 and sched[0]["schedule"]["cron"] == "0 * * * *" and sched[0]["active"] is False
    assert set(deps["scene-to-polygons/default"]["parameter_openapi_schema"]["required"]) == {"scene", "model", "out"}
