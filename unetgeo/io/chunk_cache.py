"""LRU cache of decoded chunks of a chunked ``(..., y, x)`` array (a Zarr array) that assembles
windows from them, so random chip reads decode each chunk once while it is hot."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np

from unetgeo.grid import Window

CACHE_BYTES = 512 << 20
"""Default decoded-chunk budget of one cache (bytes)."""


class ChunkCache:
    """Windows of ``arr[..., y, x]`` read through an LRU cache of ``chunk_px`` × ``chunk_px`` chunks.

    Attributes:
        arr: the array (anything with ``shape``, ``dtype``, ``ndim`` and numpy slicing).
        T: chunk side (px); chunk ``(cy, cx)`` covers rows ``cy*T..`` and columns ``cx*T..``.
        H, W: array height and width (px).
        chunk_bytes: bytes of one decoded full chunk.
        max_chunks: chunks kept (at least 4); the least recently used one is evicted first.
    """

    def __init__(self, arr: Any, chunk_px: int, max_bytes: int = CACHE_BYTES):
        self.arr = arr
        self.T = int(chunk_px)
        self.H, self.W = int(arr.shape[-2]), int(arr.shape[-1])
        lead = int(np.prod(arr.shape[:-2])) if arr.ndim > 2 else 1
        self.chunk_bytes = lead * self.T * self.T * np.dtype(arr.dtype).itemsize
        self.max_chunks = 4
        self.set_max_bytes(max_bytes)
        self._cache: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()

    def set_max_bytes(self, max_bytes: float) -> None:
        """Bound the cache to ``max_bytes`` of decoded chunks (never fewer than 4 chunks)."""
        self.max_chunks = max(4, int(max_bytes // max(self.chunk_bytes, 1)))

    def __len__(self) -> int:
        return len(self._cache)

    def _chunk(self, cy: int, cx: int) -> np.ndarray:
        key = (cy, cx)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        y0, x0 = cy * self.T, cx * self.T
        lead = (slice(None),) * (self.arr.ndim - 2)
        data = np.asarray(self.arr[(*lead, slice(y0, min(y0 + self.T, self.H)), slice(x0, min(x0 + self.T, self.W)))])
        self._cache[key] = data
        if len(self._cache) > self.max_chunks:
            self._cache.popitem(last=False)
        return data

    def read(self, win: Window) -> np.ndarray:
        """``arr[..., win]`` (array dtype, shape ``(..., win.height, win.width)``) for a window inside the array."""
        r0, c0, r1, c1 = win.row_off, win.col_off, win.row_off + win.height, win.col_off + win.width
        out = None
        for cy in range(r0 // self.T, (r1 - 1) // self.T + 1):
            for cx in range(c0 // self.T, (c1 - 1) // self.T + 1):
                ch = self._chunk(cy, cx)
                ys, xs = cy * self.T, cx * self.T
                a0, a1 = max(r0, ys), min(r1, ys + ch.shape[-2])
                b0, b1 = max(c0, xs), min(c1, xs + ch.shape[-1])
                if out is None:
                    out = np.empty((*ch.shape[:-2], win.height, win.width), dtype=ch.dtype)
                out[..., a0 - r0 : a1 - r0, b0 - c0 : b1 - c0] = ch[..., a0 - ys : a1 - ys, b0 - xs : b1 - xs]
        assert out is not None
        return out
