"""Dask cluster handling: a local threaded cluster by default, any scheduler when an address is given."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger(__name__)


@contextmanager
def dask_client(address: str | None = None, *, n_threads: int | None = None) -> Iterator[Any]:
    """Yield a ``distributed.Client``.

    Args:
        address: scheduler address (``tcp://host:8786``) of an existing cluster; ``None`` reuses the
            current client if one is active, else starts a local in-process cluster of threads
            (one worker, ``n_threads`` threads, default: all cores) that is closed on exit.
    """
    from distributed import Client, LocalCluster, default_client

    if address:
        client = Client(address)
        try:
            yield client
        finally:
            client.close()
        return
    try:
        yield default_client()
        return
    except ValueError:
        pass
    n = n_threads or os.cpu_count() or 1
    cluster = LocalCluster(
        n_workers=1, threads_per_worker=n, processes=False, dashboard_address=None, silence_logs=logging.ERROR
    )
    client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


def map_bounded(
    client: Any,
    fn: Callable[..., Any],
    items: Iterable[Any],
    *,
    max_in_flight: int,
    on_result: Callable[[Any], None],
    **kwargs: Any,
) -> int:
    """Submit ``fn(item, **kwargs)`` for each item, at most ``max_in_flight`` at once.

    Results are handed to ``on_result`` in completion order (in the calling thread), so memory
    stays bounded however many items there are. Returns the number of items processed.
    Any task exception cancels the rest and is re-raised.
    """
    from distributed import as_completed

    it = iter(items)
    done = 0
    seq = as_completed()
    for item in it:
        fut = client.submit(fn, item, pure=False, **kwargs)
        seq.add(fut)
        if seq.count() >= max_in_flight:
            break
    try:
        for fut in seq:
            res = fut.result()
            fut.release()
            on_result(res)
            done += 1
            nxt = next(it, None)
            if nxt is not None:
                seq.add(client.submit(fn, nxt, pure=False, **kwargs))
    except BaseException:
        for f in list(seq.futures):
            f.cancel()
        raise
    return done
