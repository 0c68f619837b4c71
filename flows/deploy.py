"""Create the unetgeo deployments with Prefect's Python API (same result as ``flows/prefect.yaml``).

    python -m flows.deploy [--pool unetgeo-process] [--repo DIR] [--create-pool]

Each flow is loaded ``from_source`` the repository folder, so every flow run's pull step sets
its working directory to that folder (as the prefect.yaml pull step does). Needs
``PREFECT_API_URL`` (a running server) and, unless ``--create-pool``, an existing work pool.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import flows  # noqa: F401 - sets PREFECT_LOGGING_EXTRA_LOGGERS before Prefect is imported

REPO = Path(__file__).resolve().parent.parent
WORK_POOL = "unetgeo-process"
JOB_ENV = {"PREFECT_LOGGING_EXTRA_LOGGERS": "unetgeo", "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30"}
FLOOD_MONITOR_EXAMPLE = {
    "inbox": "/data/inbox",
    "reference": "/data/reference/before.tif",
    "model": "models/flood",
    "out_root": "runs/flood-monitor",
}

# (entrypoint relative to the repo, deployment name, tags, extra to_deployment kwargs)
DEPLOYMENTS: list[tuple[str, str, list[str], dict[str, Any]]] = [
    ("flows/scene_to_polygons.py:scene_to_polygons", "default", ["unetgeo", "inference"], {"concurrency_limit": 2}),
    ("flows/train_model.py:train_model", "default", ["unetgeo", "training"], {"concurrency_limit": 1}),
    ("flows/flood_monitor.py:flood_monitor", "default", ["unetgeo", "flood", "scheduled"],
     {"concurrency_limit": 1, "parameters": FLOOD_MONITOR_EXAMPLE}),
]
# Hourly, created inactive: `prefect deployment schedule resume 'flood-monitor/default' <ID>`.
FLOOD_MONITOR_CRON = "0 * * * *"


def ensure_work_pool(name: str = WORK_POOL) -> None:
    """Create the process work pool ``name`` if it does not exist."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(name=name, type="process"))
        except ObjectAlreadyExists:
            pass


def deploy_all(work_pool: str = WORK_POOL, repo: str | Path = REPO, *, only: list[str] | None = None) -> list[Any]:
    """Create or update the deployments; returns their ids.

    Args:
        work_pool: a ``process`` work pool.
        repo: the repository folder the flows are loaded from (their working directory).
        only: flow names to deploy (default: all three).
    """
    from prefect import deploy
    from prefect.flows import Flow
    from prefect.schedules import Cron

    deployments = []
    for entrypoint, name, tags, extra in DEPLOYMENTS:
        fl = Flow.from_source(source=str(Path(repo).resolve()), entrypoint=entrypoint)
        if only and fl.name not in only:
            continue
        if fl.name == "flood-monitor":
            extra = {**extra, "schedules": [Cron(FLOOD_MONITOR_CRON, timezone="UTC", active=False)]}
        deployments.append(fl.to_deployment(name=name, tags=tags, job_variables={"env": JOB_ENV}, **extra))
    return deploy(*deployments, work_pool_name=work_pool, build=False, push=False, print_next_steps_message=False,
                  ignore_warnings=True)


def main(argv: list[str] | None = None) -> int:
    """``python -m flows.deploy``."""
    ap = argparse.ArgumentParser(prog="python -m flows.deploy", description=__doc__.split("\n")[0])
    ap.add_argument("--pool", default=WORK_POOL, help=f"process work pool (default {WORK_POOL})")
    ap.add_argument("--repo", default=str(REPO), help="repository folder the flows run in (default: this one)")
    ap.add_argument("--create-pool", action="store_true", help="create the work pool if missing")
    ap.add_argument("--only", action="append", help="flow name to deploy (repeatable; default all)")
    a = ap.parse_args(argv)
    if a.create_pool:
        ensure_work_pool(a.pool)
    ids = deploy_all(a.pool, a.repo, only=a.only)
    print(f"{len(ids)} deployment(s) in work pool {a.pool!r}; start a worker with: prefect worker start --pool {a.pool}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
