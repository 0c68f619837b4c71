"""Helpers of :mod:`unetgeo.merge`, :mod:`unetgeo.dissolve` and :mod:`unetgeo.runs`: connected components and ring arithmetic in numpy, giving freed heap memory back."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

_LIBC: list = []
#: glibc ``mallopt`` parameters
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: Where glibc's dynamic thresholds end up once a 32 MiB block has been freed (64-bit): what
#: :func:`bounded_heap` leaves behind.
_DYNAMIC_MAX = (32 << 20, 64 << 20)


@contextmanager
def bounded_heap(mmap_bytes: int = 4 << 20, trim_bytes: int = 128 << 10) -> Iterator[bool]:
    """Within the block, glibc gives every allocation of ``mmap_bytes`` or more its own mapping
    (returned to the system when freed) and gives back free heap top above ``trim_bytes``
    (glibc's initial value).

    By default glibc raises both thresholds to the size of the largest block freed so far (up to
    32 and 64 MiB), so after a scene-spanning outline's arrays are freed, every array below that
    size comes from the heap, and freed heap pages stay resident: the resident size then grows
    with the largest object, i.e. with the scene. Yields whether the thresholds were set (not
    where ``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_`` or ``MALLOC_TOP_PAD_`` are set in the
    environment, nor without glibc). glibc cannot go back to its dynamic thresholds, so on exit
    they are fixed where dynamic ones end up in a long run (:data:`_DYNAMIC_MAX`).
    """
    mallopt = None
    if not any(f"MALLOC_{k}_" in os.environ for k in ("MMAP_THRESHOLD", "TRIM_THRESHOLD", "TOP_PAD")):
        try:
            import ctypes

            mallopt = ctypes.CDLL("libc.so.6").mallopt
        except (OSError, AttributeError):
            mallopt = None
    if mallopt is None:
        yield False
        return
    mallopt(_M_MMAP_THRESHOLD, int(mmap_bytes))
    mallopt(_M_TRIM_THRESHOLD, int(trim_bytes))
    try:
        yield True
    finally:
        mallopt(_M_MMAP_THRESHOLD, _DYNAMIC_MAX[0])
        mallopt(_M_TRIM_THRESHOLD, _DYNAMIC_MAX[1])


def release_freed_memory() -> None:
    """Give the heap's free pages back to the system (glibc ``malloc_trim``; a no-op elsewhere).

    The dissolve's large temporaries are freed into the heaps of several threads' arenas, which
    glibc keeps; without this the resident size climbs with every block row.
    """
    if not _LIBC:
        try:
            import ctypes

            _LIBC.append(ctypes.CDLL("libc.so.6").malloc_trim)
        except (OSError, AttributeError):
            _LIBC.append(None)
    if _LIBC[0] is not None:
        _LIBC[0](0)


def components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Connected components of the undirected graph on ``0..n-1`` with edges ``(a[i], b[i])``: labels ``0..k-1``.

    Label propagation to the smallest id with pointer jumping (a few numpy passes; no scipy.sparse,
    whose import alone costs more than the graphs here).
    """
    lab = np.arange(n)
    a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    while True:
        la, lb = lab[a], lab[b]
        diff = la != lb
        if not diff.any():
            break
        la, lb = la[diff], lb[diff]
        lo, hi = np.minimum(la, lb), np.maximum(la, lb)
        np.minimum.at(lab, hi, lo)  # hook each root to the smaller one
        while True:  # flatten the trees
            nl = lab[lab]
            if np.array_equal(nl, lab):
                break
            lab = nl
        a, b = a[diff], b[diff]
    return np.unique(lab, return_inverse=True)[1].ravel()


def next_in_ring(ring_of: np.ndarray) -> np.ndarray:
    """Index of the next vertex of the same (cyclic) ring; ``ring_of`` sorted."""
    nxt = np.arange(1, len(ring_of) + 1, dtype=np.int32 if len(ring_of) < 2**31 - 1 else np.int64)
    ends = np.flatnonzero(np.r_[ring_of[1:] != ring_of[:-1], True])
    nxt[ends] = np.r_[0, ends[:-1] + 1]
    return nxt


def ring_area2(xy: np.ndarray, ring_of: np.ndarray, n_rings: int) -> np.ndarray:
    """Twice the signed area of every ring (shoelace; positive = counter-clockwise in ``(x, y)``)."""
    nx = next_in_ring(ring_of)
    w = np.multiply(xy[:, 0], xy[nx, 1], dtype=np.int64)
    w -= np.multiply(xy[nx, 0], xy[:, 1], dtype=np.int64)
    return np.bincount(ring_of, weights=w, minlength=n_rings)


def list_rank(succ: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cycles of the permutation ``succ``: ``(cycle id, position in cycle)`` of every element.

    Cycle ids are dense and ordered by each cycle's smallest element, which is position 0.
    Pointer jumping: ``log2`` of the longest cycle rounds for the smallest element of each cycle
    (the minimum over a window that doubles each round), as many again for the distances.
    """
    n = len(succ)
    if not n:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    idx = np.arange(n)
    lab, ptr = idx, np.asarray(succ, dtype=np.int64)
    while True:  # equal along every jump: each window holds its cycle's smallest element
        lab = np.minimum(lab, lab[ptr])
        if np.array_equal(lab, lab[ptr]):
            break
        ptr = ptr[ptr]
    last = succ == lab  # the element before the head ends the chain
    dist = np.where(last, 0, 1)
    ptr = np.where(last, idx, succ)
    while not last[ptr].all():
        dist, ptr = dist + dist[ptr], ptr[ptr]
    cyc = np.unique(lab, return_inverse=True)[1].ravel()
    size = np.bincount(cyc)
    return cyc, size[cyc] - 1 - dist


def not_collinear(xy: np.ndarray, ring: np.ndarray) -> np.ndarray:
    """Bool per vertex (``ring`` sorted): not on the straight line through its ring neighbours."""
    nxt = next_in_ring(ring)
    prv = np.empty_like(nxt)
    prv[nxt] = np.arange(len(nxt))
    a, b = np.sign(xy - xy[prv]).astype(np.int8), np.sign(xy[nxt] - xy).astype(np.int8)
    return a[:, 0] * b[:, 1] != a[:, 1] * b[:, 0]  # the signs decide it: every edge is axis-parallel


__all__ = ["bounded_heap", "components", "list_rank", "next_in_ring", "not_collinear", "release_freed_memory", "ring_area2"]
