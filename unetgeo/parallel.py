"""Where chunk tasks run: local threads by default, an existing Dask cluster when an address is given.

Without an address the tasks run on a pool of local threads, as Dask's own threaded scheduler
does (it uses the same ``concurrent.futures`` pool); ``distributed`` is not even imported, so a
run starts in milliseconds rather than the seconds a ``LocalCluster`` takes. With an address
(``tcp://host:8786``) the tasks go to that scheduler's workers, which may be other processes
or machines; the task arguments are then pickled, so they must be light (URIs, writers that
reopen their store lazily). Inside a running ``distributed`` client (e.g. a Prefect Dask task
runner) that client is used.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from unetgeo.errors import UnetgeoError

log = logging.getLogger(__name__)


class ClusterError(UnetgeoError, OSError):
    """The Dask scheduler given by address cannot be reached."""


@dataclass
class Executor:
    """A place to run tasks: ``submit(fn, *args, **kwargs) -> future`` plus its thread count.

    ``kind`` is ``"threads"`` (local pool) or ``"dask"`` (a ``distributed.Client``).
    """

    kind: str
    n_threads: int
    _pool: Any

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Start ``fn(*args, **kwargs)``; returns a future with ``.result()``."""
        if self.kind == "dask":
            return self._pool.submit(fn, *args, pure=False, **kwargs)
        return self._pool.submit(fn, *args, **kwargs)

    def wait_any(self, futures: set[Any]) -> tuple[set[Any], set[Any]]:
        """Block until at least one of ``futures`` is done: ``(done, not_done)``."""
        if self.kind == "dask":
            from distributed import wait

            res = wait(list(futures), return_when="FIRST_COMPLETED")
            return set(res.done), set(res.not_done)
        done, not_done = futures_wait(futures, return_when=FIRST_COMPLETED)
        return set(done), set(not_done)

    def on_each_thread(self, fn: Callable[[], None], timeout_s: float = 60.0) -> None:
        """Run ``fn()`` once in every thread of a local pool (no-op for a Dask cluster); see
        :func:`run_on_each_thread`."""
        if self.kind == "threads":
            run_on_each_thread(self._pool, self.n_threads, fn, timeout_s)


def run_on_each_thread(pool: Any, n_threads: int, fn: Callable[[], None], timeout_s: float = 60.0) -> None:
    """Run ``fn()`` once in every thread of the ``n_threads``-thread ``pool`` (a ThreadPoolExecutor).

    For per-thread resources such as open datasets, which must be closed by their thread.
    A barrier holds each call until all threads have one, so no thread runs two.
    """
    barrier = threading.Barrier(n_threads)

    def task() -> None:
        try:
            fn()
        finally:
            barrier.wait(timeout_s)

    for f in [pool.submit(task) for _ in range(n_threads)]:
        f.result()


def local_threads() -> int:
    """Threads of the local pool: ``UNETGEO_THREADS`` if set, else the CPUs this process may use."""
    env = os.environ.get("UNETGEO_THREADS")
    if env:
        return max(1, int(env))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@contextmanager
def executor(
    address: str | None = None, *, n_threads: int | None = None, connect_timeout_s: float = 20.0
) -> Iterator[Executor]:
    """Yield an :class:`Executor`.

    Args:
        address: scheduler address (``tcp://host:8786``) of an existing Dask cluster; ``None``
            reuses the active ``distributed`` client if there is one, else runs a local pool of
            ``n_threads`` threads (default :func:`local_threads`), shut down on exit.
        connect_timeout_s: how long to try reaching ``address``.

    Raises:
        ClusterError: nothing answers at ``address``.
    """
    if address:
        from distributed import Client

        try:
            client = Client(address, timeout=connect_timeout_s)
        except (OSError, TimeoutError) as e:
            raise ClusterError(
                f"{address}: no Dask scheduler answers there ({type(e).__name__}); start one "
                "(`dask scheduler` + `dask worker ADDRESS`) or leave out the address to use local threads"
            ) from e
        try:
            n = sum(client.nthreads().values()) or 1
            log.debug("running on the Dask cluster at %s (%d worker threads)", address, n)
            yield Executor("dask", n, client)
        finally:
            client.close()
        return
    if "distributed" in sys.modules:  # a client can only be active if distributed was imported
        from distributed import default_client

        try:
            client = default_client()
        except ValueError:
            client = None
        if client is not None:
            yield Executor("dask", sum(client.nthreads().values()) or 1, client)
            return
    n = n_threads or local_threads()
    pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="unetgeo")
    try:
        yield Executor("threads", n, pool)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def map_bounded(
    ex: Executor,
    fn: Callable[..., Any],
    items: Iterable[Any],
    *,
    max_in_flight: int,
    on_result: Callable[[Any, Any], None],
    **kwargs: Any,
) -> int:
    """Run ``fn(item, **kwargs)`` for each item on ``ex``, at most ``max_in_flight`` at once.

    ``on_result(item, result)`` is called in the calling thread, in completion order, so memory
    stays bounded however many items there are. Returns the number of items processed. The
    first task exception cancels the tasks not yet started and is re-raised.
    """
    it = iter(items)
    pending: dict[Any, Any] = {}
    done_count = 0

    def fill() -> None:
        while len(pending) < max_in_flight:
            item = next(it, _END)
            if item is _END:
                return
            pending[ex.submit(fn, item, **kwargs)] = item

    try:
        fill()
        while pending:
            done, _ = ex.wait_any(set(pending))
            for fut in done:
                item = pending.pop(fut)
                res = fut.result()
                if ex.kind == "dask":
                    fut.release()
                on_result(item, res)
                done_count += 1
            fill()
    except BaseException:
        for f in pending:
            f.cancel()
        raise
    return done_count


_END = object()

