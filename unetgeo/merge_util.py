"""Helpers of :mod:`unetgeo.merge`: connected components in numpy, giving freed heap memory back."""

from __future__ import annotations

import numpy as np

_LIBC: list = []


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


__all__ = ["components", "release_freed_memory"]
