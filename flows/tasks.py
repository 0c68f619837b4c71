"""Prefect task options and the stage runner: each library stage becomes one task.

:func:`prefect_runner` is the runner that :func:`unetgeo.pipeline.run_scene` calls for every
stage: it wraps the stage function in a Prefect task named after the stage. Tasks receive URIs
and small settings objects and return small result records, never arrays. Caching is off
(``cache_policy=NONE``) so Prefect never hashes inputs, results are not persisted, and a failed
task is retried only for I/O errors (:func:`retry_on_io_error`): an object-store hiccup is
retried, a bad input is not. Stages skip work whose output is complete, so a retry resumes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from prefect import task
from prefect.cache_policies import NONE

T = TypeVar("T")

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


def stage_task(stage: str, fn: Callable[..., T], label: str | None = None) -> Any:
    """``fn`` as a Prefect task named ``stage`` (task run name ``label``) with the :data:`STAGE` options."""
    return task(fn, name=stage, task_run_name=label or stage, **STAGE)


def prefect_runner(stage: str, label: str, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """The :class:`unetgeo.pipeline.Runner` of the flows: run the stage as a Prefect task."""
    return stage_task(stage, fn, label)(*args, **kwargs)
