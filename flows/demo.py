"""``make demo``: :func:`unetgeo.demo.prepare_demo`, then the scene through the flow ``scene-to-polygons``.

    python -m flows.demo [--out demo] [--size 1024] [--seed 0]

The flow runs in this process against Prefect's own ephemeral API (a temporary local server
that Prefect starts, and stops at exit) unless ``PREFECT_API_URL`` names a server, where the
run is then recorded like any other. ``unetgeo demo`` is the same job without Prefect.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

import flows  # noqa: F401 - PREFECT_LOGGING_EXTRA_LOGGERS before Prefect is imported

# A busy 2-core machine needs more than Prefect's default 20 s to start the ephemeral server.
EPHEMERAL_SETTINGS = {"server.ephemeral.startup_timeout_seconds": 120, "server.analytics_enabled": False}


def main(argv: list[str] | None = None) -> int:
    """Run the demo; exit code 0, or 2 with one line on bad input."""
    from prefect.settings import temporary_settings

    from unetgeo.cli import setup_logging
    from unetgeo.demo import DEMO_INFERENCE, demo_table, prepare_demo
    from unetgeo.errors import UnetgeoError

    ap = argparse.ArgumentParser(prog="python -m flows.demo", description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="demo")
    ap.add_argument("--size", type=int, default=1024, dest="size_px")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    setup_logging(verbose=False, quiet=False)
    logging.getLogger("prefect").setLevel(logging.WARNING)
    t0 = time.perf_counter()
    try:
        data = prepare_demo(a.out, size_px=a.size_px, seed=a.seed)
        with temporary_settings(updates=EPHEMERAL_SETTINGS):
            from flows.scene_to_polygons import scene_to_polygons

            summary = scene_to_polygons(scene=data.post, model=data.model_dir, out=data.out, reference=data.pre,
                                        truth=data.truth, **DEMO_INFERENCE)
    except UnetgeoError as e:
        print(f"make demo: error: {e.one_line()}", file=sys.stderr)
        return 2
    print(demo_table(data, summary, time.perf_counter() - t0))
    print("(run through the Prefect flow scene-to-polygons; see it with `prefect flow-run ls`)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
