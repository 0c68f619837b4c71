"""WKB of polygons held as integer pixel rings, written straight into one buffer (no GEOS geometries).

A scene-spanning object can have millions of vertices. Through GEOS its outline would be held
three times on the way out (pixel polygon, map polygon, and GEOS's growing WKB buffer, about
twice the WKB's size); here the map coordinates are computed a chunk of vertices at a time and
stored directly at their place in the WKB, so the only per-vertex memory is the output itself.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from unetgeo.io.vector import arrow_binary

#: Vertices converted at once (temporaries of about 80 B a vertex: 2.5 MB; 1 << 18 cost +15 MiB at the
#: 32768² yardstick's scene-spanning outline, for no measurable speed on the fragmented mask).
CHUNK = 1 << 15


def _put_u32(buf: np.ndarray, at: np.ndarray, values: np.ndarray) -> None:
    """Little-endian uint32 ``values`` at byte offsets ``at`` of ``buf`` (any alignment)."""
    v = np.asarray(values, dtype=np.uint32)
    for i in range(4):
        buf[at + i] = (v >> np.uint32(8 * i)) & np.uint32(0xFF)


def rings_wkb(xy: np.ndarray, ring_len: np.ndarray, piece_rings: np.ndarray,
              transform: tuple[float, ...]) -> tuple[Any, np.ndarray, np.ndarray]:
    """Arrow WKB of polygons given as rings in pixel coordinates, their planar perimeters and bounds.

    Args:
        xy: ``(m, 2)`` integer ``(col, row)`` vertices ring by ring, no closing vertex.
        ring_len: ``(r,)`` vertices of each ring; piece_rings: ``(n,)`` rings of each polygon, shell first.
        transform: affine ``(a, b, c, d, e, f)``: ``x = a*col + b*row + c``, ``y = d*col + e*row + f``.

    Returns:
        ``(pyarrow binary array (n,), perimeter (n,) float64 in map units, bounds (n, 4)
        xmin, ymin, xmax, ymax)``; the coordinates are the same doubles as
        :meth:`unetgeo.area.AreaModel.to_map` gives, so the bounds are GEOS's of that WKB.
    """
    import pyarrow as pa

    a, b, c, d, e, f = (float(t) for t in transform[:6])
    n, r = len(piece_rings), len(ring_len)
    npts = np.asarray(ring_len, dtype=np.int64) + 1  # with the closing vertex
    first_ring = np.cumsum(piece_rings) - piece_rings
    ring_bytes = 4 + 16 * npts
    poly_bytes = 9 + (np.add.reduceat(ring_bytes, first_ring) if r else np.zeros(n, dtype=np.int64))
    poly_off = np.r_[0, np.cumsum(poly_bytes)].astype(np.int64)
    buf = np.zeros(int(poly_off[-1]), dtype=np.uint8)
    perimeter = np.zeros(n)
    bounds = np.empty((n, 4))
    bounds[:, :2], bounds[:, 2:] = np.inf, -np.inf
    if not n:
        return arrow_binary([]), perimeter, bounds
    buf[poly_off[:-1]] = 1  # little endian
    _put_u32(buf, poly_off[:-1] + 1, np.full(n, 3))  # Polygon
    _put_u32(buf, poly_off[:-1] + 5, piece_rings)
    ring_poly = np.repeat(np.arange(n), piece_rings)
    before = np.cumsum(ring_bytes) - ring_bytes
    ring_off = poly_off[ring_poly] + 9 + before - before[first_ring][ring_poly]
    _put_u32(buf, ring_off, npts)
    coord_off = ring_off + 4  # byte offset of each ring's first x
    rstart = np.cumsum(ring_len) - ring_len
    entry_end = np.cumsum(npts)  # closed-ring entries (vertices and closing vertices), ring by ring
    total = int(entry_end[-1]) if r else 0
    views = {}
    for lo in range(0, total, CHUNK):
        hi = min(total, lo + CHUNK + 1)  # one entry of overlap for the edge lengths
        ent = np.arange(lo, hi)
        ring = np.searchsorted(entry_end, ent, "right")
        k = ent - (entry_end[ring] - npts[ring])
        src = rstart[ring] + np.where(k < npts[ring] - 1, k, 0)
        col, row = xy[src, 0].astype(np.float64), xy[src, 1].astype(np.float64)
        x, y = a * col + b * row + c, d * col + e * row + f
        seg = ring[1:] == ring[:-1]  # consecutive entries of one ring: an edge
        np.add.at(perimeter, ring_poly[ring[:-1][seg]], np.hypot(np.diff(x)[seg], np.diff(y)[seg]))
        _bounds_at(bounds, ring_poly[ring], x, y)
        keep = slice(0, min(CHUNK, hi - lo))
        dst = coord_off[ring[keep]] + 16 * k[keep]
        for q in np.unique(dst % 8).tolist():
            view = views.get(q)
            if view is None:
                view = views[q] = np.ndarray(((len(buf) - q) // 8,), dtype="<f8", buffer=buf, offset=q)
            m = dst % 8 == q
            at = (dst[m] - q) // 8
            view[at] = x[keep][m]
            view[at + 1] = y[keep][m]
    kind, dt = (pa.binary(), np.int32) if len(buf) < 2**31 else (pa.large_binary(), np.int64)
    arr = pa.Array.from_buffers(kind, n, [None, pa.py_buffer(poly_off.astype(dt)), pa.py_buffer(buf)])
    return arr, perimeter, bounds


def stream_polygon_wkb(write: Any, xy: np.ndarray, ring_len: np.ndarray,
                       transform: tuple[float, ...]) -> tuple[int, float, np.ndarray]:
    """Write the WKB of one polygon (rings in pixel coordinates, shell first) through ``write`` in pieces.

    The bytes are those :func:`rings_wkb` gives for the polygon, produced :data:`CHUNK` vertices
    at a time: rings are encoded in runs of whole rings, a ring longer than a chunk in slices.

    Returns:
        ``(bytes written, perimeter in map units, bounds (4,) xmin, ymin, xmax, ymax)``.
    """
    a, b, c, d, e, f = (float(t) for t in transform[:6])
    ring_len = np.asarray(ring_len, dtype=np.int64)
    write(np.array([1], dtype=np.uint8).tobytes() + np.array([3, len(ring_len)], dtype="<u4").tobytes())
    n, perimeter = 9, 0.0
    bounds = np.array([np.inf, np.inf, -np.inf, -np.inf])
    rstart = np.cumsum(ring_len) - ring_len
    i = 0
    while i < len(ring_len):
        if ring_len[i] >= CHUNK:  # one long ring, slice by slice (the closing vertex after the last)
            k, s0 = int(ring_len[i]), int(rstart[i])
            write(np.array([k + 1], dtype="<u4").tobytes())
            n += 4
            for lo in range(0, k + 1, CHUNK):
                src = np.arange(lo, min(k + 1, lo + CHUNK + 1)) % k + s0  # one vertex of overlap
                col, row = xy[src, 0].astype(np.float64), xy[src, 1].astype(np.float64)
                x, y = a * col + b * row + c, d * col + e * row + f
                perimeter += float(np.hypot(np.diff(x), np.diff(y)).sum())
                bounds = np.r_[np.minimum(bounds[:2], [x.min(), y.min()]), np.maximum(bounds[2:], [x.max(), y.max()])]
                m = min(CHUNK, k + 1 - lo)
                out = np.empty((m, 2), dtype="<f8")
                out[:, 0], out[:, 1] = x[:m], y[:m]
                write(out.tobytes())
                n += out.nbytes
            i += 1
            continue
        j = i + 1  # a run of whole rings of at most CHUNK vertices
        total = int(ring_len[i])
        while j < len(ring_len) and ring_len[j] < CHUNK and total + ring_len[j] <= CHUNK:
            total += int(ring_len[j])
            j += 1
        s0, s1 = int(rstart[i]), int(rstart[j - 1] + ring_len[j - 1])
        arr, per, bnd = rings_wkb(xy[s0:s1], ring_len[i:j], np.array([j - i]), transform)
        body = memoryview(arr.buffers()[2]).cast("B")[9:]
        write(body)
        n += len(body)
        perimeter += float(per[0])
        bounds = np.r_[np.minimum(bounds[:2], bnd[0, :2]), np.maximum(bounds[2:], bnd[0, 2:])]
        i = j
    return n, perimeter, bounds


def _bounds_at(bounds: np.ndarray, poly: np.ndarray, x: np.ndarray, y: np.ndarray) -> None:
    """Widen ``bounds`` (n, 4) of polygons ``poly`` (nondecreasing, one a vertex) to take in ``(x, y)``."""
    starts = np.flatnonzero(np.r_[True, poly[1:] != poly[:-1]])
    p = poly[starts]
    for i, (v, fn) in enumerate(((x, np.minimum), (y, np.minimum), (x, np.maximum), (y, np.maximum))):
        bounds[p, i] = fn(bounds[p, i], fn.reduceat(v, starts))


__all__ = ["rings_wkb", "stream_polygon_wkb"]
