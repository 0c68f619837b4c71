"""Prefect tasks: each is a one-to-three-line wrapper of one unetgeo stage.

Tasks take and return URIs and small JSON-able dicts, never arrays: Prefect keeps task inputs
and results in memory. Caching is off (``cache_policy=NONE``) so Prefect never hashes inputs,
results are not persisted, and a failed task is retried only for I/O errors
(:func:`retry_on_io_error`): an object store hiccup is retried, a bad input is not.
Stages skip work whose output is already complete, so a retry or a rerun resumes.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from prefect import task
from prefect.cache_policies import NONE

# Deterministic local failures: retrying cannot help.
_NOT_TRANSIENT = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


def exception_of(state: Any) -> BaseException | None:
    """The exception a Failed task state holds (None if it holds none)."""
    data = getattr(state, "data", None)
    if isinstance(data, BaseException):
        return data
    try:
        res = state.result(raise_on_failure=False)
    except Exception:  # noqa: BLE001 - an unreadable result is "no exception known"
        return None
    return res if isinstance(res, BaseException) else None


def is_transient(exc: BaseException | None) -> bool:
    """True for I/O errors worth retrying: ``OSError`` (``SceneReadError``, ``StoreError``,
    network and object-store errors), but not ``ValueError`` (bad input, grid or band mismatch,
    bad config) and not a local file that is missing or forbidden (also as the cause)."""
    if not isinstance(exc, OSError) or isinstance(exc, ValueError):
        return False
    seen = 0
    e: BaseException | None = exc
    while e is not None and seen < 8:
        if isinstance(e, _NOT_TRANSIENT):
            return False
        e, seen = e.__cause__, seen + 1
    return True


def retry_on_io_error(task: Any, task_run: Any, state: Any) -> bool:
    """``retry_condition_fn`` of every task: retry I/O errors only (see :func:`is_transient`)."""
    return is_transient(exception_of(state))


# Options shared by the stage tasks. retry_delay_seconds is short: stages resume their own work.
STAGE = {
    "cache_policy": NONE,
    "persist_result": False,
    "retries": 2,
    "retry_delay_seconds": [2, 10],
    "retry_condition_fn": retry_on_io_error,
}


def small(result: Any, *fields: str) -> dict[str, Any]:
    """The named fields of a stage's result dataclass as a plain dict (URIs, counts, seconds)."""
    return {f: getattr(result, f) for f in fields} if fields else dataclasses.asdict(result)


def class_names_tag(value: str | None) -> list[str] | None:
    """Class names from a raster's ``class_names`` tag: a JSON list (unetgeo class rasters) or
    comma-separated names (label rasters); None when absent or empty."""
    import json

    if not value or not value.strip():
        return None
    try:
        names = json.loads(value)
    except ValueError:
        names = [n.strip() for n in value.split(",")]
    return [str(n) for n in names] if isinstance(names, list) and names else None


def describe_inputs(scene: str, model: str, reference: str | None = None) -> dict[str, Any]:
    """Read the model meta and the scene (and reference) headers; refuse mismatches early.

    Returns:
        ``{model_id, class_names, in_bands, reference_kind, reference_class_names}``;
        ``reference_kind`` is None (no reference), ``"scene"`` (multi-band: it is predicted too),
        ``"classes"`` (single band with class names, e.g. an earlier run's ``classes.tif`` or a
        label raster) or ``"mask"`` (single band without class names: nonzero = water).

    Raises:
        ModelBundleError, SceneReadError, InputError, BandMismatchError, GridMismatchError.
    """
    from unetgeo.grid import same_grid
    from unetgeo.io.bundle import read_meta
    from unetgeo.io.cog import read_tags
    from unetgeo.io.scene import crs_equal, open_scene
    from unetgeo.model import ModelMeta, check_bands

    meta = ModelMeta.from_dict(read_meta(model), where=f"{model}/model.json")
    info = open_scene(scene)
    check_bands(meta, list(info.band_names), scene)
    kind, ref_names = None, None
    if reference:
        ref = open_scene(reference)
        same_grid(info.grid, ref.grid, scene, reference, crs_equal=crs_equal)
        if ref.count > 1:
            check_bands(meta, list(ref.band_names), reference)
            kind = "scene"
        else:
            ref_names = class_names_tag(read_tags(reference).get("class_names"))
            kind = "classes" if ref_names else "mask"
    return {"model_id": meta.model_id, "class_names": list(meta.class_names), "in_bands": list(meta.in_bands),
            "reference_kind": kind, "reference_class_names": ref_names}


@task(name="inspect-inputs", task_run_name="inspect-inputs", **STAGE)
def inspect_inputs(scene: str, model: str, reference: str | None = None) -> dict[str, Any]:
    """:func:`describe_inputs`: check the inputs before anything is written."""
    return describe_inputs(scene, model, reference)


@task(name="tile", task_run_name="tile", **STAGE)
def tile(scene: str, out_uri: str, *, tile_px: int, config_hash: str = "", dask_address: str | None = None) -> dict:
    """``unetgeo.tiling.make_tiles`` -> ``{tiles_uri, valid_uri, n_chunks, n_written, seconds}``."""
    from unetgeo.tiling import make_tiles

    r = make_tiles(scene, out_uri, tile_px=tile_px, config_hash=config_hash, dask_address=dask_address)
    return small(r, "tiles_uri", "valid_uri", "n_chunks", "n_written", "seconds")


@task(name="predict", task_run_name="predict", **STAGE)
def predict(tiles_uri: str, model: str, out_uri: str, *, valid_uri: str, inference: dict) -> dict:
    """``unetgeo.infer.predict_tiles`` -> ``{probs_uri, n_chunks, seconds, megapixels, device}``."""
    from unetgeo.config import InferenceSpec
    from unetgeo.infer import predict_tiles

    r = predict_tiles(tiles_uri, model, out_uri, valid_uri=valid_uri, inference=InferenceSpec.model_validate(inference))
    return small(r, "probs_uri", "n_chunks", "seconds", "megapixels", "device")


@task(name="stitch", task_run_name="stitch", **STAGE)
def stitch(probs_uri: str, valid_uri: str, out_dir: str) -> dict:
    """``unetgeo.stitch.stitch`` -> ``{classes_uri, confidence_uri, class_names, seconds}``."""
    from unetgeo.stitch import stitch as run

    return small(run(probs_uri, valid_uri, out_dir), "classes_uri", "confidence_uri", "class_names", "seconds")


@task(name="vectorize", task_run_name="vectorize", **STAGE)
def vectorize(classes_uri: str, out_uri: str, *, confidence_uri: str | None, class_names: list[str],
              min_area_m2: float = 0.0, simplify_m: float = 0.0, shapefile: bool = True) -> dict:
    """``unetgeo.vectorize.vectorize`` -> ``{out_uri, shapefile_uri, counts, area_km2, seconds}``."""
    from unetgeo.vectorize import vectorize as run

    r = run(classes_uri, out_uri, confidence_uri=confidence_uri, class_names=class_names,
            min_area_m2=min_area_m2, simplify_m=simplify_m, shapefile=shapefile)
    return small(r, "out_uri", "shapefile_uri", "counts", "area_km2", "seconds")


@task(name="flood-raster", task_run_name="flood-raster", **STAGE)
def flood_raster(classes_uri: str, reference_uri: str, out_uri: str, *, water_class_id: int,
                 reference_is_mask: bool) -> str:
    """``unetgeo.vectorize.flood_raster`` -> the flood raster URI (1 flooded, 0 not, 255 nodata)."""
    from unetgeo.vectorize import flood_raster as run

    return run(classes_uri, reference_uri, out_uri, water_class_id=water_class_id, reference_is_mask=reference_is_mask)


@task(name="flood-polygons", task_run_name="flood-polygons", **STAGE)
def flood_polygons(flood_uri: str, out_uri: str, *, min_area_m2: float = 0.0, simplify_m: float = 0.0,
                   shapefile: bool = True) -> dict:
    """``unetgeo.vectorize.flood_polygons`` (flooded pixels only) -> ``{out_uri, counts, area_km2, …}``."""
    from unetgeo.vectorize import flood_polygons as run

    r = run(flood_uri, out_uri, min_area_m2=min_area_m2, simplify_m=simplify_m, shapefile=shapefile)
    return small(r, "out_uri", "shapefile_uri", "counts", "area_km2", "seconds")


@task(name="report", task_run_name="report", **STAGE)
def report(run_dir: str, *, scene_uri: str, model_dir: str, config: dict, timings: dict[str, float],
           classes_uri: str, polygons_uri: str, flood_uri: str | None = None, flood_polygons_uri: str | None = None,
           truth_uri: str | None = None, reference_uri: str | None = None) -> dict:
    """``unetgeo.report.write_report`` (summary.json, quicklook.png) -> the summary dict."""
    from unetgeo.config import Config
    from unetgeo.report import write_report

    return write_report(run_dir, scene_uri=scene_uri, model_dir=model_dir, config=Config.model_validate(config),
                        timings=timings, classes_uri=classes_uri, polygons_uri=polygons_uri, flood_uri=flood_uri,
                        flood_polygons_uri=flood_polygons_uri, truth_uri=truth_uri, reference_uri=reference_uri)


@task(name="train", task_run_name="train", cache_policy=NONE, persist_result=False, retries=1, retry_delay_seconds=10,
      retry_condition_fn=retry_on_io_error)
def train(config: str, out_dir: str, *, work_dir: str | None = None, resume: bool = False) -> dict:
    """``unetgeo.train.train``; a retry resumes from the checkpoint of the failed attempt."""
    from prefect.runtime import task_run

    from unetgeo.config import load_config
    from unetgeo.train import train as run

    r = run(load_config(config), out_dir, work_dir=work_dir, resume=resume or task_run.run_count > 1)
    return small(r, "model_dir", "metrics", "epochs_run", "seconds", "best_epoch", "report_uri")
