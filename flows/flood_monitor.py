"""Flow ``flood-monitor``: new scenes of an inbox against a fixed reference, for schedules.

Each run takes the complete, not yet processed scenes of ``inbox`` (:func:`unetgeo.monitor.pending_scenes`),
runs each through the scene pipeline into ``out_root/<scene id>/``, appends one row per scene to
``out_root/history.csv`` (also a table artifact, keyed per site) and sends an alert through a
Prefect notification block when the flooded area crosses the thresholds. A bad scene is a
``failed`` row and never stops the others.
"""

from __future__ import annotations

import re

from prefect import flow, get_run_logger

from flows.scene_to_polygons import library_logs, publish_artifacts
from flows.tasks import prefect_runner, stage_task


def site_key(out_root: str) -> str:
    """Artifact key of a site (lowercase letters, digits and dashes, as Prefect requires)."""
    return "flood-monitor-" + (re.sub(r"[^a-z0-9]+", "-", str(out_root).lower()).strip("-")[-40:] or "site")


def send_alert(block_name: str | None, message: str) -> bool:
    """Notify through the Prefect notification block ``block_name`` (e.g. a webhook); False on failure."""
    if not block_name:
        return False
    from prefect.blocks.core import Block

    try:
        Block.load(block_name).notify(message, subject="unetgeo flood alert")
        return True
    except Exception as e:  # noqa: BLE001 - an alert that cannot go out must not fail the monitor
        get_run_logger().warning("alert through block %r failed: %s", block_name, e)
        return False


@flow(name="flood-monitor", persist_result=False)
def flood_monitor(inbox: str, reference: str, model: str, out_root: str, config: str | None = None,
                  pattern: str = "*.tif", max_scenes: int = 4, stable_s: float = 30.0, device: str | None = None,
                  dask_address: str | None = None, alert_block: str | None = None,
                  alert_flooded_km2: float | None = None, alert_growth_km2: float | None = None,
                  stac_search: dict | None = None) -> dict:
    """Process the new scenes of ``inbox``, up to ``max_scenes`` of them at once (each a task; with
    ``dask_address`` their chunks share the cluster); returns ``{"rows": [history rows], "pending": n left}``."""
    from unetgeo import monitor

    with library_logs():
        todo = monitor.pending_scenes(inbox, out_root, pattern, stable_s=stable_s, stac_search=stac_search)
        get_run_logger().info("%d new complete scene(s) in %s", len(todo), inbox)
        opts = {"device": device, "dask_address": dask_address, "model": model, "out_root": out_root,
                "config": config, "runner": prefect_runner}
        ref = monitor.reference_classes(reference, **opts) if todo else reference
        process = stage_task("process-scene", monitor.process_scene)
        futures = [process.with_options(task_run_name=f"scene-{s.scene_id}").submit(
            s, reference=ref, reference_source=reference, **opts) for s in todo[:max_scenes]]
        rows = [monitor.append_history(out_root, f.result()) for f in futures]  # in inbox order, one writer
        for reason in filter(None, (monitor.alert_reason(r, flooded_over_km2=alert_flooded_km2,
                                                         growth_over_km2=alert_growth_km2) for r in rows)):
            send_alert(alert_block, reason)
        publish_artifacts({}, key=site_key(out_root), title=f"flood-monitor {out_root}",
                          markdown=monitor.history_markdown(monitor.read_history(out_root), f"flood-monitor {out_root}"))
        return {"rows": rows, "pending": max(0, len(todo) - max_scenes)}
