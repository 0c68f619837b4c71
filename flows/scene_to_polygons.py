"""Flow ``scene-to-polygons``: :func:`unetgeo.pipeline.run_scene` with each stage as a Prefect task.

The flow adds only what Prefect offers: a readable run name, the library's logs in the run's
logs, and a markdown artifact of the summary. Validation, the stage order, resuming and the
outputs are the library's (``unetgeo run`` runs the very same sequence without Prefect).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

from prefect import flow, get_run_logger

from flows.tasks import prefect_runner

LIBRARY_LOGGER = "unetgeo"
NOISY_LOGGERS = ("distributed", "tornado")
SUMMARY_ARTIFACT_KEY = "scene-to-polygons-summary"
ARTIFACT_SKIP = frozenset({"config.dump", "accuracy", "outputs"})  # long; they stay in summary.json


def stem(uri: str) -> str:
    """The file name of ``uri`` without its extension."""
    name = str(uri).rstrip("/").rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[0] if "." in name else name


def _run_name() -> str:
    """Flow run name: ``<scene stem>-<UTC time>`` (readable in the UI)."""
    from prefect.runtime import flow_run

    scene = (flow_run.parameters or {}).get("scene") or "scene"
    return f"{stem(scene)}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"


@contextmanager
def library_logs() -> Iterator[None]:
    """Let the library's log records reach this flow run's logs (and so the Prefect UI).

    ``PREFECT_LOGGING_EXTRA_LOGGERS=unetgeo`` attaches Prefect's API handler to the ``unetgeo``
    logger at ``import prefect``; if that did not happen, the handler is attached here for the
    run. An unset logger level is raised to INFO and restored; Dask's INFO chatter is muted.
    """
    from prefect.logging.handlers import APILogHandler

    lib = logging.getLogger(LIBRARY_LOGGER)
    with suppress(ImportError):
        import distributed  # noqa: F401 - its import sets these levels; override them after
    noisy = {name: logging.getLogger(name).level for name in NOISY_LOGGERS}
    for name in noisy:
        logging.getLogger(name).setLevel(max(logging.WARNING, noisy[name]))
    added = None if any(isinstance(h, APILogHandler) for h in lib.handlers) else APILogHandler()
    if added is not None:
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
        return f"{v:.4g}" if isinstance(v, float) else str(v).replace("|", "\\|").replace("\n", " ")

    rows = [f"| {k} | {fmt(v)} |" for k, v in leaves(summary)]
    return "\n".join([f"### {title}", "", "| key | value |", "|---|---|", *rows, ""])


def publish_artifacts(summary: dict[str, Any], *, key: str = SUMMARY_ARTIFACT_KEY, title: str = "scene-to-polygons",
                      markdown: str | None = None) -> bool:
    """Create the summary markdown artifact; never fails the run (returns False on any error)."""
    try:
        from prefect.artifacts import create_markdown_artifact

        create_markdown_artifact(markdown=markdown or summary_markdown(summary, title), key=key,
                                 description=f"{title}: areas, counts, scores and stage timings")
        return True
    except Exception as e:  # noqa: BLE001 - no API, a server error: the outputs are on disk anyway
        logging.getLogger(__name__).warning("could not create the Prefect artifact %r: %s", key, e)
        return False


@flow(name="scene-to-polygons", flow_run_name=_run_name, persist_result=False)
def scene_to_polygons(
    scene: str, model: str, out: str, reference: str | None = None, truth: str | None = None,
    config: str | None = None, dask_address: str | None = None, scales: list[float] | None = None,
    flips: bool | None = None, d4: bool | None = None, halo_px: int | None = None, tile_px: int | None = None,
    batch_size: int | None = None, workers: int | None = None, device: str | None = None,
) -> dict:
    """Scene to class rasters, polygons and (with ``reference``) flood polygons; returns the summary.

    Args:
        scene: multi-band GeoTIFF (path or URL) with the model's bands.
        model: model bundle folder (``model.safetensors`` + ``model.json``).
        out: run folder for every output (created after the inputs are validated).
        reference: the "before" picture for flood mapping: a scene on the same grid (predicted
            too, into ``out/reference``), a single-band water mask (nonzero = water), or a class
            raster such as an earlier run's ``classes.tif``.
        truth: optional label raster on the same grid; the report scores the classes against it.
        config: YAML path or name in ``configs/`` (None: embedded defaults).
        dask_address: scheduler of a Dask cluster for the tiling and prediction chunks.
        scales, flips, d4, halo_px, tile_px, batch_size, workers, device: override the config,
            exactly like the options of ``unetgeo run``.

    Returns:
        The summary written to ``out/summary.json`` (areas, counts, scores, options, timings in s).
    """
    from unetgeo.pipeline import make_run, run_scene

    with library_logs():
        run = make_run(scene, model, out, reference=reference, truth=truth, config=config, dask_address=dask_address,
                       scales=scales, flips=flips, d4=d4, halo_px=halo_px, tile_px=tile_px, batch_size=batch_size,
                       workers=workers, device=device)
        summary = run_scene(run, runner=prefect_runner)
        publish_artifacts(summary)
        get_run_logger().info("run complete: %s (timings %s)", out, summary.get("timings_s"))
        return summary
