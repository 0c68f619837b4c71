"""Owner files: which writer may use a store's ``*.tmp`` folder, or publish it, right now.

An owner file ``URI.<purpose>.lock.tmp`` is created atomically (``O_CREAT | O_EXCL`` locally, a
conditional put on object stores; :func:`unetgeo.io.uri.create_exclusive`) and holds JSON
``{"pid", "host", "token", "created"}``. It is *stale* when its writer can no longer be running:
its host is this host and its process is gone, or it is this very process and the writer that
made it was released or garbage-collected. A stale owner file is broken (renamed aside, then
checked: locally a live one moved by a racing breaker is put back) and created afresh.

Owner files on other hosts are never judged stale (their processes cannot be seen from here);
on object stores breaking a stale one is remove-then-create, which two breakers racing in the same
instant could both win — the publish step still never replaces a finished store (see
:mod:`unetgeo.io.store`).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import threading
import time
import weakref
from typing import Any

from unetgeo.io import uri as U

log = logging.getLogger(__name__)

_HELD: set[str] = set()  # tokens of the owner files this process holds now
_HELD_LOCK = threading.Lock()


def pid_alive(pid: int) -> bool:
    """True if process ``pid`` exists on this host (``kill(pid, 0)``; another user's process counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


class OwnerFile:
    """One claim on a store: :meth:`acquire` (non-blocking) / :meth:`wait` / :meth:`release`.

    Args:
        uri: the owner file (path or fsspec URL), e.g. ``RUN/tiles.zarr.lock.tmp``.
    """

    def __init__(self, uri: str):
        self.uri = str(uri)
        self.token = f"{os.getpid()}-{secrets.token_hex(8)}"
        self.held = False

    def _doc(self) -> bytes:
        return json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "token": self.token,
                           "created": time.time()}).encode()

    def holder(self) -> dict[str, Any] | None:
        """The owner file's content (``pid``, ``host``, ``token``, ``created``), or None if there is none."""
        blob = U.read_bytes(self.uri)
        if blob is None:
            return None
        try:
            doc = json.loads(blob)
        except ValueError:
            return {}  # torn or foreign: judged by is_stale like a dead writer's
        return doc if isinstance(doc, dict) else {}

    @staticmethod
    def is_stale(doc: dict[str, Any]) -> bool:
        """True if the writer named by ``doc`` cannot be running any more (see the module docs)."""
        if not doc.get("pid") or not doc.get("host"):
            return True
        if doc["host"] != socket.gethostname():
            return False
        pid = int(doc["pid"])
        if pid == os.getpid():
            with _HELD_LOCK:
                return str(doc.get("token")) not in _HELD
        return not pid_alive(pid)

    def acquire(self) -> bool:
        """Take the claim if it is free or stale; False when a live writer holds it."""
        if self.held:
            return True
        for _ in range(8):
            if U.create_exclusive(self.uri, self._doc()):
                with _HELD_LOCK:
                    _HELD.add(self.token)
                weakref.finalize(self, _HELD.discard, self.token)  # a dropped, unreleased claim goes stale
                self.held = True
                return True
            doc = self.holder()
            if doc is None:
                continue  # released in the meantime
            if not self.is_stale(doc):
                return False
            log.info("%s: taking over from a writer that is gone (%s)", self.uri, doc)
            self._break(doc)
        return False

    def _break(self, stale: dict[str, Any]) -> None:
        """Remove the stale owner file ``stale`` (locally: restore a live one moved by mistake)."""
        if U.is_url(self.uri):
            U.remove(self.uri)
            return
        aside = U.tmp_name(self.uri)
        try:
            os.rename(U.local_path(self.uri), U.local_path(aside))
        except FileNotFoundError:
            return
        moved = json.loads(U.read_bytes(aside) or b"{}") if U.exists(aside) else {}
        if moved.get("token") != stale.get("token"):  # a racing breaker's fresh claim: put it back
            try:
                os.link(U.local_path(aside), U.local_path(self.uri))
            except FileExistsError:
                pass
        U.remove(aside)

    def wait(self, timeout_s: float = 600.0, poll_s: float = 0.05) -> bool:
        """:meth:`acquire`, retried until ``timeout_s``; False if a live writer still holds it then."""
        deadline = time.monotonic() + timeout_s
        while not self.acquire():
            if time.monotonic() > deadline:
                return False
            time.sleep(poll_s)
        return True

    def release(self) -> None:
        """Give the claim up (removes the owner file if it is still ours)."""
        if not self.held:
            return
        self.held = False
        with _HELD_LOCK:
            _HELD.discard(self.token)
        doc = self.holder()
        if doc is not None and doc.get("token") == self.token:
            U.remove(self.uri)

    def __getstate__(self) -> dict[str, Any]:  # a pickled copy (Dask worker) holds nothing
        return {"uri": self.uri, "token": self.token, "held": False}
