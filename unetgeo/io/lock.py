"""One run at a time per run folder: ``RUN/.unetgeo.lock``, an :class:`~unetgeo.io.owner.OwnerFile`.

The lock file is created exclusively (``O_CREAT | O_EXCL`` locally, a conditional put on object
stores) and names its holder (pid, host, token). Of two runs started together exactly one gets
it; a lock whose process is gone (same host, pid not alive) is stale and taken over; any other
lock makes the second run stop with :class:`RunLockedError` (exit 2) naming the holder.
"""

from __future__ import annotations

import datetime as _dt
from types import TracebackType

from unetgeo.errors import InputError
from unetgeo.io import uri as U
from unetgeo.io.owner import OwnerFile

LOCK_NAME = ".unetgeo.lock"


class RunLockedError(InputError):
    """Another live run holds the run folder."""


class RunLock:
    """``with RunLock(run_dir):`` holds ``run_dir/.unetgeo.lock`` for the block.

    Raises:
        RunLockedError: another live run holds it (the message names pid, host and start time).
    """

    def __init__(self, run_dir: str):
        self.run_dir = str(run_dir).rstrip("/")
        self.owner = OwnerFile(U.join(self.run_dir, LOCK_NAME))

    def __enter__(self) -> RunLock:
        U.makedirs(self.run_dir)
        if not self.owner.acquire():
            h = self.owner.holder() or {}
            since = h.get("created") or h.get("started")
            if isinstance(since, (int, float)):
                since = _dt.datetime.fromtimestamp(since, _dt.timezone.utc).isoformat(timespec="seconds")
            raise RunLockedError(
                f"{self.run_dir}: another unetgeo run is writing this folder (pid {h.get('pid')} on {h.get('host')}, "
                f"since {since}); wait for it, or use another --out (delete {self.owner.uri} only if no such run exists)")
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.owner.release()


__all__ = ["LOCK_NAME", "RunLock", "RunLockedError"]
