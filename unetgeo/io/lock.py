"""One run at a time per run folder: a lock file created exclusively, naming its holder.

``RUN/.unetgeo.lock`` holds ``{"pid", "host", "started", "command"}``. It is created with
``O_CREAT | O_EXCL`` locally (``mode="xb"`` on object stores that support conditional writes,
else written after an existence check), so of two runs started together exactly one gets it.
A lock whose process is gone (same host, pid not alive) is stale and taken over; any other
lock makes the second run stop with :class:`RunLockedError` (exit 2) naming the holder.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import socket
import sys
from types import TracebackType

from unetgeo.errors import InputError
from unetgeo.io import uri as U
from unetgeo.io.owner import pid_alive

log = logging.getLogger(__name__)

LOCK_NAME = ".unetgeo.lock"


class RunLockedError(InputError):
    """Another live run holds the run folder."""


def _holder_record() -> bytes:
    return json.dumps({
        "pid": os.getpid(), "host": socket.gethostname(),
        "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv[:3]),
    }).encode()


def _is_stale(holder: dict) -> bool:
    """A holder on this host whose process no longer exists (killed runs leave such locks)."""
    try:
        return holder.get("host") == socket.gethostname() and not pid_alive(int(holder["pid"]))
    except (KeyError, TypeError, ValueError):
        return True  # unreadable record: a writer died while creating it


class RunLock:
    """``with RunLock(run_dir):`` holds ``run_dir/.unetgeo.lock`` for the block (re-entrant per process).

    Raises:
        RunLockedError: another live run holds it (the message names pid, host and start time).
    """

    _held: dict[str, int] = {}

    def __init__(self, run_dir: str):
        self.run_dir = str(run_dir).rstrip("/")
        self.uri = U.join(self.run_dir, LOCK_NAME)

    def __enter__(self) -> RunLock:
        if self._held.get(self.uri):
            self._held[self.uri] += 1
            return self
        U.makedirs(self.run_dir)
        for _ in range(3):
            if self._create():
                self._held[self.uri] = 1
                return self
            holder = self._read()
            if holder is not None and not _is_stale(holder):
                raise RunLockedError(
                    f"{self.run_dir}: another unetgeo run is writing this folder (pid {holder.get('pid')} on "
                    f"{holder.get('host')}, since {holder.get('started')}); wait for it, or use another --out "
                    f"(delete {self.uri} only if no such run exists)")
            log.warning("%s: taking over a stale lock of a run that no longer exists: %s", self.uri, holder)
            U.remove(self.uri)
        raise RunLockedError(f"{self.uri}: could not take the run-folder lock; another run keeps taking it")

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._held[self.uri] -= 1
        if self._held[self.uri] == 0:
            del self._held[self.uri]
            U.remove(self.uri)

    def _create(self) -> bool:
        blob = _holder_record()
        if not U.is_url(self.uri):
            try:
                fd = os.open(U.local_path(self.uri), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as f:
                f.write(blob)
            return True
        fs, path = U.fs_for(self.uri)
        try:
            with fs.open(path, "xb") as f:
                f.write(blob)
            return True
        except FileExistsError:
            return False
        except (ValueError, NotImplementedError):  # no conditional writes: check, then write
            if fs.exists(path):
                return False
            with fs.open(path, "wb") as f:
                f.write(blob)
            return True

    def _read(self) -> dict | None:
        try:
            with U.open_file(self.uri, "rb") as f:
                return json.loads(f.read().decode() or "{}")
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}


__all__ = ["LOCK_NAME", "RunLock", "RunLockedError"]
