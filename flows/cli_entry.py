"""What ``unetgeo run`` and ``unetgeo demo`` call: the flows, run in this process.

With ``PREFECT_API_URL`` set, runs are recorded by that server like any other. Without it, a
local, temporary Prefect API is used, as in Prefect's ephemeral mode: a server subprocess on
127.0.0.1 (database in ``PREFECT_HOME``) that lives as long as this process. It is started here
rather than by Prefect so that its start-up (several seconds) overlaps the import of the stage
modules (torch, rasterio, …), and so that this process never imports the server code itself.
Telemetry is off and flow-run heartbeats (useful only to a long-lived server) are skipped.
Prefect's own messages ("Beginning flow run…", "Finished in state…", failure tracebacks) are
hidden unless ``verbose`` (``unetgeo -v``); the library's logs go wherever the caller's logging
sends them (``unetgeo`` logger), and a failed stage re-raises its own exception.
"""

from __future__ import annotations

import atexit
import importlib
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import flows  # noqa: F401 - sets PREFECT_LOGGING_EXTRA_LOGGERS before Prefect is imported

STARTUP_TIMEOUT_S = 120.0  # a busy 2-core machine needs far more than Prefect's default 20 s
LOCAL_API_SETTINGS = {"server.analytics_enabled": False, "flows.heartbeat_frequency": None}
STAGE_MODULES = ("unetgeo.tiling", "unetgeo.infer", "unetgeo.stitch", "unetgeo.vectorize", "unetgeo.report")
log = logging.getLogger(__name__)


def _import_all(names: tuple[str, ...]) -> None:
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError:  # a missing stage fails later, inside its task, with a clear error
            pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalApi:
    """One Prefect API server subprocess per process (the command Prefect's ephemeral mode runs)."""

    _lock = threading.Lock()
    proc: subprocess.Popen | None = None
    url: str | None = None
    _ready = False

    @classmethod
    def start(cls, settings_env: dict[str, str]) -> None:
        """Launch the server (no-op if running); returns at once, see :meth:`wait`."""
        import prefect

        with cls._lock:
            if cls.proc is not None and cls.proc.poll() is None:
                return
            port = _free_port()
            cmd = [sys.executable, "-m", "uvicorn", "--app-dir", str(Path(prefect.__file__).resolve().parent.parent),
                   "--factory", "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(port),
                   "--log-level", "error", "--lifespan", "on"]
            env = {**os.environ, **settings_env, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1",
                   "PREFECT__SERVER_FINAL": "1"}
            env.pop("PREFECT_API_URL", None)
            cls.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL)
            cls.url, cls._ready = f"http://127.0.0.1:{port}/api", False
            if not getattr(cls, "_atexit", False):
                atexit.register(cls.stop)
                cls._atexit = True

    @classmethod
    def wait(cls, timeout_s: float = STARTUP_TIMEOUT_S) -> str:
        """Block until ``/health`` answers; returns the API URL.

        Raises:
            RuntimeError: the server exited or did not answer within ``timeout_s``.
        """
        if cls._ready and cls.proc is not None and cls.proc.poll() is None:
            return cls.url  # type: ignore[return-value]
        deadline = time.monotonic() + timeout_s
        while True:
            if cls.proc is None or cls.proc.poll() is not None:
                code = None if cls.proc is None else cls.proc.returncode
                raise RuntimeError(f"the local Prefect API server exited (code {code}) while starting; "
                                   "run with PREFECT_API_URL set to a server, or see its output above")
            try:
                with urllib.request.urlopen(f"{cls.url}/health", timeout=2) as r:  # noqa: S310 - loopback
                    if json.loads(r.read().decode()) is True:
                        cls._ready = True
                        return cls.url  # type: ignore[return-value]
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the local Prefect API server at {cls.url} did not answer in {timeout_s:.0f} s")
            time.sleep(0.1)

    @classmethod
    def stop(cls) -> None:
        """Terminate the server (at exit)."""
        with cls._lock:
            proc, cls.proc, cls._ready = cls.proc, None, False
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _verbose_default() -> bool:
    """``unetgeo -v`` sets the ``unetgeo`` logger to DEBUG: then Prefect may talk too."""
    return logging.getLogger("unetgeo").getEffectiveLevel() <= logging.DEBUG


@contextmanager
def prefect_runtime(verbose: bool | None = None, warm: tuple[str, ...] = STAGE_MODULES) -> Iterator[None]:
    """Settings for an in-process flow run (see the module docstring); restored on exit.

    Args:
        verbose: show Prefect's own messages (default: when the ``unetgeo`` logger is at DEBUG).
            Otherwise only Prefect's warnings and errors are shown, and with the local API not
            even those: a failure surfaces as the stage's exception (one line in the CLI), not as
            Prefect's "task run failed" traceback.
        warm: modules imported while the local API server starts.
    """
    import prefect.main  # noqa: F401 - configures Prefect's logging now, not later over our levels
    from prefect.settings import get_current_settings, temporary_settings

    if verbose is None:
        verbose = _verbose_default()
    local_api = not get_current_settings().api.url
    prefect_logger = logging.getLogger("prefect")
    old_level = prefect_logger.level
    if not verbose:
        prefect_logger.setLevel(logging.CRITICAL if local_api else logging.WARNING)
    try:
        if not local_api:
            _import_all(warm)
            yield
            return
        with temporary_settings(updates=LOCAL_API_SETTINGS) as settings:
            LocalApi.start(settings.to_environment_variables(exclude_unset=True))
            _import_all(warm)
            url = LocalApi.wait()
            with temporary_settings(updates={"api.url": url}):
                yield
    finally:
        prefect_logger.setLevel(old_level)


def prestart() -> None:
    """Start the local API server now, in the background, if no ``PREFECT_API_URL`` is set.

    For callers that do other work before their first flow run (``unetgeo demo`` generates data
    and trains first): the server's start-up then costs nothing. Never raises.
    """
    try:
        from prefect.settings import get_current_settings, temporary_settings

        if get_current_settings().api.url:
            return
        with temporary_settings(updates=LOCAL_API_SETTINGS) as settings:
            LocalApi.start(settings.to_environment_variables(exclude_unset=True))
    except Exception as e:  # noqa: BLE001 - the first flow run starts it (and reports problems)
        log.debug("could not prestart the local Prefect API: %s", e)


def run_scene_flow(*, verbose: bool | None = None, **kwargs: Any) -> dict:
    """Run flow ``scene-to-polygons`` with ``kwargs`` as its parameters; returns the summary.

    A failed run re-raises the stage's exception (``UnetgeoError`` subclasses included), so the
    CLI's exit codes are those of the stages.
    """
    from flows.scene_to_polygons import check_local_inputs

    check_local_inputs(**{k: kwargs.get(k) for k in ("scene", "model", "reference", "truth")})  # before start-up
    with prefect_runtime(verbose):
        from flows.scene_to_polygons import scene_to_polygons

        return scene_to_polygons(**kwargs)


def run_train_flow(*, verbose: bool | None = None, **kwargs: Any) -> dict:
    """Run flow ``train-model`` with ``kwargs`` (``config``, ``out``, …); returns its result dict."""
    with prefect_runtime(verbose, warm=("unetgeo.train",)):
        from flows.train_model import train_model

        return train_model(**kwargs)


__all__ = ["LocalApi", "prefect_runtime", "prestart", "run_scene_flow", "run_train_flow"]
