"""Flow ``train-model``: train a segmentation model from a YAML config into a model bundle."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import task_run

from flows.scene_to_polygons import library_logs, publish_artifacts
from flows.tasks import STAGE, stage_task

TRAIN_ARTIFACT_KEY = "train-model-metrics"


def train_from_config(config: str, out_dir: str, work_dir: str | None = None, resume: bool = False) -> dict:
    """:func:`unetgeo.pipeline.train_from_config`; a Prefect retry resumes from the failed attempt's checkpoint."""
    from unetgeo.pipeline import train_from_config as run

    return run(config, out_dir, work_dir=work_dir, resume=resume or (task_run.run_count or 1) > 1)


@flow(name="train-model", persist_result=False)
def train_model(config: str, out: str, work_dir: str | None = None, resume: bool = False) -> dict:
    """Train with :func:`unetgeo.train.train` and write the bundle to ``out``.

    Args:
        config: YAML path or name in ``configs/`` (its ``training`` section names the data).
        out: model directory (``model.safetensors``, ``model.json``, ``training_report.png``).
        work_dir: where tiled training scenes are cached (default ``<out>/work``).
        resume: continue from the checkpoint in ``out`` (a retry after an I/O error always does).

    Returns:
        ``{model_dir, metrics, epochs_run, seconds, best_epoch, report_uri}``.
    """
    logger = get_run_logger()
    with library_logs():
        train = stage_task("train", train_from_config).with_options(retries=1, retry_delay_seconds=10)
        result = train(config, out, work_dir=work_dir, resume=resume)
        logger.info("model %s: mIoU %s after %s epochs", result["model_dir"],
                    (result.get("metrics") or {}).get("miou"), result.get("epochs_run"))
        publish_artifacts(_metrics_row(result), key=TRAIN_ARTIFACT_KEY, title="train-model")
        return result


def _metrics_row(result: dict[str, Any]) -> dict[str, Any]:
    m = result.get("metrics") or {}
    keep = {k: m[k] for k in ("miou", "accuracy", "iou", "f1") if k in m}
    return {"model_dir": result["model_dir"], **keep, "epochs_run": result.get("epochs_run"),
            "best_epoch": result.get("best_epoch"), "seconds": result.get("seconds")}


__all__ = ["STAGE", "train_model"]
