"""Thin Prefect flows wrapping the unetgeo stages (the ``unetgeo`` library never imports Prefect).

Flows (each stage of :func:`unetgeo.pipeline.run_scene` becomes a task through
:func:`flows.tasks.prefect_runner`; tasks pass URIs and small records, never arrays; I/O errors
(``OSError``) are retried, bad input (``ValueError``) never):

- ``scene-to-polygons`` (:mod:`flows.scene_to_polygons`): the scene pipeline + a summary artifact.
- ``train-model`` (:mod:`flows.train_model`): :func:`unetgeo.pipeline.train_from_config`.
- ``flood-monitor`` (:mod:`flows.flood_monitor`): new scenes of an inbox against a fixed
  reference, one history row per scene, alerts through a notification block; for schedules.

``unetgeo run`` needs none of this (it runs the same pipeline without Prefect); ``make demo``
(:mod:`flows.demo`) runs the scene flow in Prefect's own ephemeral mode.

Operator guide (from the repository root, in the environment where unetgeo is installed)::

    prefect server start --host 127.0.0.1 --port 4200 &
    export PREFECT_API_URL=http://127.0.0.1:4200/api          # in every shell below
    prefect work-pool create unetgeo-process --type process
    prefect --no-prompt deploy --prefect-file flows/prefect.yaml --all   # or: python -m flows.deploy
    PREFECT_LOGGING_EXTRA_LOGGERS=unetgeo prefect worker start --pool unetgeo-process &
    prefect deployment run 'scene-to-polygons/default' \\
        -p scene=/data/s2_2026-11-21.tif -p model=models/flood -p out=runs/2026-11-21 \\
        [-p reference=/data/s2_2026-10-01.tif] [-p truth=labels.tif] [-p 'scales=[1.0,1.5]'] \\
        [-p flips=true] [-p halo_px=64] [-p device=cuda] [-p config=configs/flood.yaml] --watch
    prefect deployment run 'train-model/default' -p config=configs/flood.yaml -p out=models/flood
    prefect deployment schedule create 'flood-monitor/default' --interval 3600   # scheduled monitoring

Relative paths in parameters are resolved against the working directory of the flow run, which
the deployments' pull step sets to the repository root. Library log records (logger
``unetgeo``) reach the Prefect UI through ``PREFECT_LOGGING_EXTRA_LOGGERS=unetgeo``, which this
package sets by default (the deployments' job variables set it for flow-run processes too).
"""

from __future__ import annotations

import os

# Must be in the environment before Prefect configures logging (at ``import prefect``).
os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "unetgeo")
