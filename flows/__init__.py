"""Thin Prefect flows wrapping the unetgeo stages (the ``unetgeo`` library never imports Prefect).

Flows (each task is a one-to-three-line wrapper of one library stage; tasks pass URIs and
small dicts, never arrays; I/O errors (``OSError``) are retried, bad input (``ValueError``) never):

- ``scene-to-polygons`` (:mod:`flows.scene_to_polygons`): tile -> predict -> stitch -> vectorize
  [-> reference scene/mask -> flood raster -> flood polygons] -> report + Prefect artifacts.
- ``train-model`` (:mod:`flows.train_model`): :func:`unetgeo.train.train` on a YAML config.
- ``flood-monitor`` (:mod:`flows.flood_monitor`): the newest unprocessed scene of an inbox
  folder against a fixed reference, for scheduled runs.

``unetgeo run`` and ``unetgeo demo`` call :mod:`flows.cli_entry`, which runs the flow in-process
against Prefect's ephemeral API when ``PREFECT_API_URL`` is unset (no server to start).

Operator guide (run from the repository root, in the environment where unetgeo is installed)::

    # 1. a Prefect server (UI and API on http://127.0.0.1:4200; --host 0.0.0.0 to serve others)
    prefect server start
    export PREFECT_API_URL=http://127.0.0.1:4200/api          # in every shell below

    # 2. a process work pool and a worker that runs the flows as local subprocesses
    prefect work-pool create unetgeo-process --type process
    PREFECT_LOGGING_EXTRA_LOGGERS=unetgeo prefect worker start --pool unetgeo-process

    # 3. the deployments scene-to-polygons/default, train-model/default, flood-monitor/default
    prefect --no-prompt deploy --prefect-file flows/prefect.yaml --all
    #    or, equivalently, with the Python API (no prefect.yaml involved):
    python -m flows.deploy                      # --pool NAME, --repo DIR: see its --help

    # 4. runs (parameters are JSON, a bare path is taken as a string)
    prefect deployment run 'scene-to-polygons/default' \\
        -p scene=/data/s2_2026-11-21.tif -p model=models/flood -p out=runs/2026-11-21 \\
        [-p reference=/data/s2_2026-10-01.tif] [-p truth=labels.tif] [-p 'scales=[1.0,1.5]'] \\
        [-p flips=true] [-p device=cuda] [-p config=configs/flood.yaml] --watch
    prefect deployment run 'train-model/default' -p config=configs/flood.yaml -p out=models/flood

    # 5. scheduled flood monitoring: set its parameters (inbox, reference, model, out_root) in
    #    flows/prefect.yaml, redeploy, then switch its schedule on (deployed paused):
    prefect deployment schedule ls 'flood-monitor/default'
    prefect deployment schedule resume 'flood-monitor/default' <SCHEDULE_ID>

Relative paths in parameters are resolved against the working directory of the flow run, which
the deployments' pull step sets to the repository root. Library log records (logger
``unetgeo``) reach the Prefect UI through ``PREFECT_LOGGING_EXTRA_LOGGERS=unetgeo``, which this
package sets by default (the deployments' job variables set it for flow-run processes too).
"""

from __future__ import annotations

import os

# Must be in the environment before Prefect configures logging (at ``import prefect``).
os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "unetgeo")
