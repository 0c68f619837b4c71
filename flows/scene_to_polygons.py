"""Flow ``scene-to-polygons``: one scene to class rasters, polygons, flood polygons and a report.

Outputs in ``out`` (deterministic names, so a rerun resumes and skips complete stages)::

    tiles.zarr valid.zarr probs.zarr     intermediate chunked stores
    classes.tif confidence.tif           COGs (uint8, nodata 255)
    polygons.gpkg polygons.shp           one layer per class
    reference/…                          the reference scene's stores and classes.tif (scene references)
    flood.tif flood.gpkg flood.shp       water now that was not water in the reference
    summary.json quicklook.png           the report (also a Prefect markdown artifact)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

from prefect import flow, get_run_logger

from flows import tasks

LIBRARY_LOGGER = "unetgeo"
NOISY_LOGGERS = ("distributed", "tornado")
SUMMARY_ARTIFACT_KEY = "scene-to-polygons-summary"


def _stem(uri: str) -> str:
    name = str(uri).rstrip("/").rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[0] if "." in name else name


def _run_name() -> str:
    """Flow run name: ``<scene stem>-<UTC time>`` (readable in the UI)."""
    from prefect.runtime import flow_run

    scene = (flow_run.parameters or {}).get("scene") or "scene"
    return f"{_stem(scene)}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"


@contextmanager
def library_logs() -> Iterator[None]:
    """Let the library's log records reach this flow run's logs (and so the Prefect UI).

    ``PREFECT_LOGGING_EXTRA_LOGGERS=unetgeo`` attaches Prefect's API handler to the ``unetgeo``
    logger at ``import prefect``; if that did not happen (the variable was set too late), the
    handler is attached here for the duration of the run. An unset logger level is raised to
    INFO (Prefect's root level is WARNING) and restored afterwards; Dask's INFO chatter is muted.
    """
    from prefect.logging.handlers import APILogHandler

    lib = logging.getLogger(LIBRARY_LOGGER)
    # Dask's local cluster logs its start and stop at INFO, and Prefect's console handler on the
    # root logger would print them all: keep them at WARNING during the run. (Importing
    # distributed first: its import sets these levels.)
    with suppress(ImportError):
        import distributed  # noqa: F401
    noisy = {name: logging.getLogger(name).level for name in NOISY_LOGGERS}
    for name, level in noisy.items():
        if level < logging.WARNING:
            logging.getLogger(name).setLevel(logging.WARNING)
    added = None
    if not any(isinstance(h, APILogHandler) for h in lib.handlers):
        added = APILogHandler()
        lib.addHandler(added)
    old_level = lib.level
    if old_level == logging.NOTSET:
        lib.setLevel(logging.INFO)
    try:
        yield
    finally:
        lib.setLevel(old_level)
        if added is not None:
            lib.removeHandler(added)
        for name, level in noisy.items():
            logging.getLogger(name).setLevel(level)


ARTIFACT_SKIP = frozenset({"config.dump", "accuracy", "outputs"})  # long; they stay in summary.json


def summary_markdown(summary: dict[str, Any], title: str = "scene-to-polygons",
                     skip: frozenset[str] = ARTIFACT_SKIP) -> str:
    """A markdown table of a run summary: one row per leaf value (nested keys joined by ``.``),
    without the subtrees named in ``skip``; long lists are shown by their length."""

    def leaves(d: Any, key: str = "") -> Iterator[tuple[str, Any]]:
        if key in skip:
            return
        if isinstance(d, dict) and d:
            for k, v in d.items():
                yield from leaves(v, f"{key}.{k}" if key else str(k))
        elif isinstance(d, (list, tuple)) and (len(d) > 8 or any(isinstance(v, (dict, list)) for v in d)):
            yield key, f"[{len(d)} items]"
        else:
            yield key, d

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v).replace("|", "\\|").replace("\n", " ")

    rows = [f"| {k} | {fmt(v)} |" for k, v in leaves(summary)]
    return "\n".join([f"### {title}", "", "| key | value |", "|---|---|", *rows, ""])


def publish_artifacts(summary: dict[str, Any], *, key: str = SUMMARY_ARTIFACT_KEY, title: str = "scene-to-polygons") -> bool:
    """Create the summary markdown artifact; never fails the run (returns False on any error)."""
    try:
        from prefect.artifacts import create_markdown_artifact

        create_markdown_artifact(markdown=summary_markdown(summary, title), key=key,
                                 description=f"{title}: areas, counts, scores and stage timings")
        return True
    except Exception as e:  # noqa: BLE001 - no API, a server error: the outputs are on disk anyway
        logging.getLogger(__name__).warning("could not create the Prefect artifact %r: %s", key, e)
        return False


def _timed(timings: dict[str, float], name: str, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)``, adding its wall time in seconds to ``timings[name]``."""
    t0 = time.perf_counter()
    try:
        return fn(*args, **kwargs)
    finally:
        timings[name] = round(timings.get(name, 0.0) + time.perf_counter() - t0, 3)


def check_local_inputs(**inputs: str | None) -> None:
    """Refuse local input paths that do not exist (URLs are left to the stages, which retry).

    Raises:
        SceneReadError: naming the input and the path. Raised outside any task: a retry cannot
            make a missing local file appear.
    """
    from unetgeo.errors import SceneReadError
    from unetgeo.io.uri import exists, is_url

    for name, uri in inputs.items():
        if uri and not is_url(uri) and not exists(uri):
            raise SceneReadError(f"{name} {uri}: no such file or folder; check the path")


def flood_plan(cfg: Any, inputs: dict[str, Any], *, reference: str, model: str) -> tuple[int, str]:
    """``(water class id, reference kind)`` of a flood run, checked before any work is done.

    Args:
        cfg: the run's :class:`unetgeo.config.Config`.
        inputs: :func:`flows.tasks.describe_inputs` of the run.

    Raises:
        ConfigError: the config's water class is not a class of the model.
        InputError: a class-raster reference has its water class at another id.
    """
    from unetgeo.config import FloodSpec
    from unetgeo.errors import ConfigError, InputError

    water = (cfg.flood or FloodSpec()).water_class
    names = list(inputs["class_names"])
    if water not in names:
        raise ConfigError(f"flood.water_class={water!r} is not a class of model {model} ({names}); "
                          "set flood.water_class in the config to the model's water class")
    water_id, kind = names.index(water), inputs["reference_kind"]
    ref_names = inputs.get("reference_class_names") or []
    if kind == "classes" and (water not in ref_names or ref_names.index(water) != water_id):
        raise InputError(f"{reference}: reference classes {ref_names} do not have {water!r} at id {water_id} as "
                         f"model {model} has ({names}); give a reference classified with the same classes, "
                         "a water mask without class names, or the reference scene")
    return water_id, kind


def inference_overrides(scales: list[float] | None, flips: bool | None, device: str | None) -> dict[str, Any]:
    """The ``inference`` fields the flow parameters override (None = keep the config's value)."""
    over: dict[str, Any] = {}
    if scales:
        over["scales"] = tuple(float(s) for s in scales)
        over["scale_weights"] = None  # weights belong to the config's scales
    if flips is not None:
        over["flips"] = bool(flips)
    if device:
        over["device"] = device
    return over


@flow(name="scene-to-polygons", flow_run_name=_run_name, persist_result=False)
def scene_to_polygons(
    scene: str,
    model: str,
    out: str,
    reference: str | None = None,
    truth: str | None = None,
    config: str | None = None,
    dask_address: str | None = None,
    scales: list[float] | None = None,
    flips: bool | None = None,
    device: str | None = None,
) -> dict:
    """Scene to class rasters, polygons and (with ``reference``) flood polygons; returns the summary.

    Args:
        scene: multi-band GeoTIFF (path or URL) with the model's bands.
        model: model bundle folder (``model.safetensors`` + ``model.json``).
        out: run folder for every output (created).
        reference: the "before" picture for flood mapping: a multi-band scene on the same grid
            (predicted too, into ``out/reference``), a single-band water mask (nonzero = water),
            or a unetgeo class raster such as an earlier run's ``classes.tif``.
        truth: optional label raster on the same grid; the report scores the classes against it.
        config: YAML path or name in ``configs/`` (None: embedded defaults); gives tile size,
            inference, vectorize and flood settings.
        dask_address: scheduler address of a Dask cluster for tiling (default: local threads).
        scales, flips, device: override ``config.inference``.

    Returns:
        The summary written to ``out/summary.json`` (areas, counts, scores, stage timings in s).
    """
    from unetgeo.config import FloodSpec, load_config
    from unetgeo.io.uri import join, makedirs

    logger = get_run_logger()
    with library_logs():
        cfg = load_config(config)
        over = inference_overrides(scales, flips, device)
        if over:
            cfg = load_config(config, inference={**cfg.inference.model_dump(), **over})
        cfg_dict = cfg.model_dump(mode="json")
        inference = cfg_dict["inference"]
        timings: dict[str, float] = {}
        check_local_inputs(scene=scene, model=model, reference=reference, truth=truth)
        makedirs(out)

        inputs = _timed(timings, "inspect", tasks.inspect_inputs, scene, model, reference)
        water_id, kind = flood_plan(cfg, inputs, reference=reference, model=model) if reference else (None, None)
        logger.info("scene %s, model %s (%s), reference: %s", scene, model, inputs["model_id"], kind or "none")

        def classify(scene_uri: str, run_dir: str, label: str) -> dict:
            """tile -> predict -> stitch of one scene into run_dir; stitch's dict plus the store URIs."""
            ref = label != "scene"
            key = (lambda stage: "reference") if ref else (lambda stage: stage)
            suffix = f"-{label}" if ref else ""
            t = _timed(timings, key("tile"), tasks.tile.with_options(task_run_name=f"tile{suffix}"),
                       scene_uri, join(run_dir, "tiles.zarr"), tile_px=cfg.tiling.tile_px,
                       config_hash=cfg.config_hash(), dask_address=dask_address)
            logger.info("%s tiled: %d chunks (%d written) in %.1f s", label, t["n_chunks"], t["n_written"], t["seconds"])
            p = _timed(timings, key("predict"), tasks.predict.with_options(task_run_name=f"predict{suffix}"),
                       t["tiles_uri"], model, join(run_dir, "probs.zarr"), valid_uri=t["valid_uri"], inference=inference)
            logger.info("%s predicted: %.2f Mpx on %s in %.1f s", label, p["megapixels"], p["device"], p["seconds"])
            s = _timed(timings, key("stitch"), tasks.stitch.with_options(task_run_name=f"stitch{suffix}"),
                       p["probs_uri"], t["valid_uri"], run_dir)
            logger.info("%s stitched: %s in %.1f s", label, s["classes_uri"], s["seconds"])
            return {**s, "tiles_uri": t["tiles_uri"], "valid_uri": t["valid_uri"], "probs_uri": p["probs_uri"]}

        now = classify(scene, out, "scene")
        polys = _timed(timings, "vectorize", tasks.vectorize, now["classes_uri"], join(out, "polygons.gpkg"),
                       confidence_uri=now["confidence_uri"], class_names=now["class_names"],
                       min_area_m2=cfg.vectorize.min_area_m2, simplify_m=cfg.vectorize.simplify_m,
                       shapefile=cfg.vectorize.shapefile)
        logger.info("polygons %s: %s", polys["out_uri"], polys["counts"])

        flood_uri = flood_polys_uri = None
        if reference:
            flood_cfg = cfg.flood or FloodSpec()
            ref_uri = reference
            if kind == "scene":
                ref_uri = classify(reference, join(out, "reference"), "reference")["classes_uri"]
            flood_uri = _timed(timings, "flood", tasks.flood_raster, now["classes_uri"], ref_uri, join(out, "flood.tif"),
                               water_class_id=water_id, reference_is_mask=(kind == "mask"))
            fp = _timed(timings, "flood", tasks.flood_polygons, flood_uri, join(out, "flood.gpkg"),
                        min_area_m2=flood_cfg.min_area_m2, simplify_m=cfg.vectorize.simplify_m,
                        shapefile=cfg.vectorize.shapefile)
            flood_polys_uri = fp["out_uri"]
            logger.info("flood polygons %s: %s (%.4f km²)", flood_polys_uri, fp["counts"], sum(fp["area_km2"].values()))

        summary = tasks.report(out, scene_uri=scene, model_dir=model, config=cfg_dict,
                               timings=dict(timings), classes_uri=now["classes_uri"], polygons_uri=polys["out_uri"],
                               flood_uri=flood_uri, flood_polygons_uri=flood_polys_uri, truth_uri=truth,
                               reference_uri=reference)
        publish_artifacts(summary)
        logger.info("run complete: %s (timings %s)", out, timings)
        return summary

