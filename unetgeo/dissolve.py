"""Exact dissolve of the pieces of pixel objects held as compact int32 rings, in numpy (no GEOS overlay).

:class:`Rings` holds polygons as int32 vertices (8 bytes a vertex, against GEOS's 16 plus a
geometry per ring): the pieces of the objects still open at a block-row border live in it until
the objects are complete. :func:`dissolve_rings` then merges the pieces of many objects at once:

0. The passes below run on the *border skeleton* of the pieces (:class:`_Skeleton`): the vertices
   on block-border lines, those where an object touches itself, and their neighbours. Every
   other stretch of a ring is left out, one edge standing for it, and put back as the output is
   written: a scene-spanning object's 1.7 M vertices make a skeleton of a few hundred thousand.
1. Edges on block-border lines (multiples of ``steps``) get a vertex at every integer point; the
   unit edges whose reverse belongs to a piece of the same object are shared borders and cancel.
2. The surviving edges form *runs*, stretches of a source ring between cancelled edges or vertices
   where two surviving edges of one object start (pieces touching diagonally). Only the runs are
   linked and ranked (right turn at a diagonal touch, :func:`unetgeo.merge_util.list_rank`); a
   run's vertices are a slice of its source ring and are copied once, in output order.
3. Every object must come out as one shell whose area equals its pixel count; the others are
   refused for the caller's fallback. Ring areas are summed per run from prefix sums (the
   left-out stretches' terms carried on the edges that stand for them), so each object's shell
   is put first before any vertex is copied.

Memory: the output polygons, one int64 a vertex of the input while the skeleton is built, and
about 50 bytes a skeleton vertex (measured on the 32768² yardstick's largest object: 19 MiB
above its pieces, 14 of them its output, against 43 MiB when every vertex went through).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import shapely

from unetgeo.merge_util import list_rank, ring_area2


def piece_vertices(ring_len: np.ndarray, piece_rings: np.ndarray) -> np.ndarray:
    """``(n,)`` int64 vertices of each polygon, from the vertices of each ring and the rings of each polygon."""
    if not len(piece_rings):
        return np.zeros(0, dtype=np.int64)
    return np.add.reduceat(ring_len, np.cumsum(piece_rings) - piece_rings)


@dataclass
class Rings:
    """Polygons with integer vertices as compact arrays (pixel-corner ``(col, row)`` coordinates).

    Attributes:
        xy: ``(m, 2)`` int32 vertices ring by ring, no closing vertex; shells counter-clockwise
            in ``(x, y)``, holes clockwise.
        ring_len: ``(r,)`` int64 vertices of each ring.
        piece_rings: ``(n,)`` int64 rings of each polygon (its shell first).
    """

    xy: np.ndarray
    ring_len: np.ndarray
    piece_rings: np.ndarray

    def __len__(self) -> int:
        return len(self.piece_rings)

    @property
    def n_vertices(self) -> int:
        return len(self.xy)

    def piece_vertices(self) -> np.ndarray:
        """``(n,)`` int64 vertices of each polygon."""
        return piece_vertices(self.ring_len, self.piece_rings)

    @staticmethod
    def empty() -> Rings:
        z = np.zeros(0, dtype=np.int64)
        return Rings(np.zeros((0, 2), dtype=np.int32), z, z)

    @staticmethod
    def from_polygons(geoms: np.ndarray) -> Rings:
        """The rings of shapely polygons with integer coordinates (re-oriented where needed)."""
        if not len(geoms):
            return Rings.empty()
        rings, poly_of = shapely.get_rings(geoms, return_index=True)
        xy, ring_of = shapely.get_coordinates(rings, return_index=True)
        del rings
        ring_len = np.bincount(ring_of, minlength=len(poly_of)) - 1
        keep = np.ones(len(xy), dtype=bool)
        keep[np.cumsum(ring_len + 1) - 1] = False  # the closing vertices
        xy = np.rint(xy[keep]).astype(np.int32)
        ring_of = ring_of[keep]
        is_shell = np.r_[True, poly_of[1:] != poly_of[:-1]]
        flip = (ring_area2(xy, ring_of, len(poly_of)) > 0) != is_shell
        if flip.any():
            xy = _reversed(xy, ring_len, flip)
        return Rings(xy, ring_len.astype(np.int64), np.bincount(poly_of, minlength=len(geoms)).astype(np.int64))

    def __getitem__(self, sel: np.ndarray) -> Rings:
        return self.take(np.asarray(sel, dtype=bool))

    def take(self, sel: np.ndarray) -> Rings:
        """The polygons where ``sel`` (bool ``(n,)``) is True, in order."""
        rsel = np.repeat(sel, self.piece_rings)
        return Rings(self.xy[np.repeat(rsel, self.ring_len)], self.ring_len[rsel], self.piece_rings[sel])

    def split(self, key: np.ndarray) -> dict[int, Rings]:
        """``{k: the polygons whose key is k}`` (``key``: one int a polygon; negative: left out), each a copy."""
        order = np.argsort(key, kind="stable")
        order = order[key[order] >= 0]
        ks = key[order]
        rings = _ranges((np.cumsum(self.piece_rings) - self.piece_rings)[order], self.piece_rings[order])
        ring_len = self.ring_len[rings]
        xy = self.xy[_ranges((np.cumsum(self.ring_len) - self.ring_len)[rings], ring_len)]
        del rings
        piece_rings = self.piece_rings[order]
        uniq, first = np.unique(ks, return_index=True)
        p_cut = np.r_[first, len(ks)]
        r_cut = np.r_[0, np.cumsum(piece_rings)][p_cut]
        v_cut = np.r_[0, np.cumsum(ring_len)][r_cut]
        return {int(k): Rings(xy[v_cut[i]:v_cut[i + 1]].copy(), ring_len[r_cut[i]:r_cut[i + 1]].copy(),
                              piece_rings[p_cut[i]:p_cut[i + 1]].copy()) for i, k in enumerate(uniq)}

    @staticmethod
    def concat(parts: Sequence[Rings]) -> Rings:
        parts = [p for p in parts if len(p)]
        if len(parts) <= 1:
            return parts[0] if parts else Rings.empty()
        return Rings(np.concatenate([p.xy for p in parts]), np.concatenate([p.ring_len for p in parts]),
                     np.concatenate([p.piece_rings for p in parts]))

    def to_polygons(self) -> np.ndarray:
        """``(n,)`` shapely polygons."""
        return _polygons(self.xy, self.ring_len, self.piece_rings)


def _ranges(start: np.ndarray, length: np.ndarray) -> np.ndarray:
    """``start[i], start[i] + 1, ..., start[i] + length[i] - 1`` for every ``i``, in one int64 array."""
    return np.repeat(start - (np.cumsum(length) - length), length) + np.arange(int(length.sum()))


def _reversed(xy: np.ndarray, ring_len: np.ndarray, flip: np.ndarray) -> np.ndarray:
    """``xy`` with the rings where ``flip`` reversed."""
    start = np.cumsum(ring_len) - ring_len
    idx = np.arange(len(xy))
    f = np.repeat(flip, ring_len)
    s, n = np.repeat(start[flip], ring_len[flip]), np.repeat(ring_len[flip], ring_len[flip])
    idx[f] = 2 * s + n - 1 - idx[f]
    return xy[idx]


def _polygons(xy: np.ndarray, ring_len: np.ndarray, piece_rings: np.ndarray) -> np.ndarray:
    """Shapely polygons from integer rings, through one ragged array (no intermediate ring geometries)."""
    if not len(piece_rings):
        return np.zeros(0, dtype=object)
    r = len(ring_len)
    closing = np.zeros(len(xy) + r, dtype=bool)
    closing[np.cumsum(ring_len) + np.arange(r)] = True
    coords = np.empty((len(xy) + r, 2), dtype=np.float64)
    coords[~closing] = xy
    coords[closing] = xy[np.cumsum(ring_len) - ring_len]
    del closing
    offsets = (np.r_[0, np.cumsum(ring_len + 1)], np.r_[0, np.cumsum(piece_rings)])
    return shapely.from_ragged_array(shapely.GeometryType.POLYGON, coords, offsets)


# -- the border skeleton ---------------------------------------------------------------------------


def _on_lines(xy: np.ndarray, steps: tuple[int, int]) -> np.ndarray:
    """Bool per vertex: it lies on a block-border line (a multiple of ``steps`` in x or y)."""
    on = np.zeros(len(xy), dtype=bool)
    for a in range(0, len(xy), _CHUNK):
        p = xy[a:a + _CHUNK]
        on[a:a + _CHUNK] = (p[:, 0] % steps[1] == 0) | (p[:, 1] % steps[0] == 0)
    return on


def _edge_prefix(xy: np.ndarray, rstart: np.ndarray, ring_len: np.ndarray) -> np.ndarray:
    """``c[i]``: twice the signed area (shoelace terms) of the edges before vertex ``i`` (``(n + 1,)`` int64).

    A ring's last vertex closes to its first. Built chunk by chunk, so besides ``c`` only a
    chunk's terms are held.
    """
    n = len(xy)
    c = np.empty(n + 1, dtype=np.int64)
    c[0] = 0
    last = rstart + ring_len - 1
    for a in range(0, n, _CHUNK):
        b = min(a + _CHUNK, n)
        nxt = np.arange(a + 1, b + 1, dtype=np.int64)
        lo, hi = np.searchsorted(last, [a, b])
        nxt[last[lo:hi] - a] = rstart[lo:hi]
        p, q = xy[a:b].astype(np.int64), xy[nxt].astype(np.int64)
        w = p[:, 0] * q[:, 1]
        w -= q[:, 0] * p[:, 1]
        np.cumsum(w, out=c[a + 1:b + 1])
        c[a + 1:b + 1] += c[a]
    return c


def _cyclic_span(c: np.ndarray, rstart: np.ndarray, rend: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Sum of the prefix-summed terms ``c`` of edges ``a .. b - 1`` of rings ``[rstart, rend)``
    (``b`` may run past the ring's end, around to its start)."""
    over = b > rend
    return np.where(over, c[rend] - c[a] + c[rstart + np.maximum(b - rend, 0)] - c[rstart],
                    c[np.minimum(b, rend)] - c[a])


@dataclass
class _Carry:
    """How :func:`_densified` made its vertices: input vertex ``i`` became ``repeat[i]`` vertices
    (None: one each), of which those at ``inserted`` are new points on a border edge."""

    repeat: np.ndarray | None
    inserted: np.ndarray

    def __call__(self, a: np.ndarray, fill: object) -> np.ndarray:
        """Per-vertex values ``a`` on the new vertices (``fill`` on the inserted ones)."""
        if self.repeat is None:
            return a
        out = np.repeat(a, self.repeat)
        out[self.inserted] = fill
        return out


@dataclass
class _Skeleton:
    """The rings cut down to what a dissolve can change: the vertices on block-border lines, those
    where the object touches itself, and their neighbours (every ring keeps at least one vertex).

    Pieces of one object share edges only on block-border lines, so only edges there cancel, and
    runs can be joined only there and where the object touches itself at a point (where the
    right turn may close a hole); a stretch of other vertices is copied as it is. Each kept vertex's outgoing edge stands for the left-out stretch after it,
    whose shoelace terms beyond the straight edge are ``corr``. Such a stand-in edge joins two
    vertices off the lines, so it is never taken for a border edge.

    Attributes:
        xy: ``(k, 2)`` int32 kept vertices; ring_len: ``(r,)`` kept vertices per ring.
        orig: ``(k,)`` int64 index of each in the input vertices.
        gap: ``(k,)`` int64 input vertices left out after each.
        corr: ``(k,)`` int64 twice the signed area between the left-out stretch and the stand-in edge.
        line: ``(k,)`` bool on a block-border line or a touch point (only these may be where two runs meet).
    """

    xy: np.ndarray
    ring_len: np.ndarray
    orig: np.ndarray
    gap: np.ndarray
    corr: np.ndarray
    line: np.ndarray


def _repeated(xy: np.ndarray, rstart: np.ndarray, g_ring: np.ndarray | None,
              skip: np.ndarray | None = None) -> np.ndarray:
    """Bool per vertex: another vertex of the same object (``g_ring``: object of each ring, None: one
    object) is at the same point (where a piece touches itself or another piece diagonally);
    never where ``skip``.

    One key per vertex (int32 where ``(object, x, y)`` fits, as for one object up to 46k² pixels,
    the skipped vertices given keys of their own below zero), one sorted copy of it for the
    repeated keys, then the lookup chunk by chunk: the temporaries of a scene-spanning object
    stay two key arrays.
    """
    if not len(xy):
        return np.zeros(0, dtype=bool)
    lo = xy.min(axis=0).astype(np.int64)
    span = xy.max(axis=0).astype(np.int64) - lo + 1
    n_skip = int(skip.sum()) if skip is not None else 0
    n_keys = (int(g_ring.max()) + 1 if g_ring is not None else 1) * int(span[0]) * int(span[1]) + n_skip + 1
    if n_keys >= 2**62:
        g = np.zeros(len(xy), np.int64) if g_ring is None else np.repeat(g_ring, np.diff(np.r_[rstart, len(xy)]))
        key = _pack(g, xy[:, 0].astype(np.int64) - lo[0], xy[:, 1].astype(np.int64) - lo[1])
    else:
        kt = np.int32 if n_keys < 2**31 else np.int64
        key = np.empty(len(xy), dtype=kt)
        for a in range(0, len(xy), _CHUNK):
            p = xy[a:a + _CHUNK]
            k = np.zeros(len(p), dtype=kt)
            if g_ring is not None:
                k += g_ring[np.searchsorted(rstart, np.arange(a, a + len(p)), "right") - 1].astype(kt)
            k *= kt(span[0])
            k += p[:, 0] - kt(lo[0])
            k *= kt(span[1])
            k += p[:, 1] - kt(lo[1])
            key[a:a + _CHUNK] = k
    if n_skip:
        c = np.flatnonzero(skip)
        key[c] = -1 - np.arange(len(c), dtype=key.dtype)
        del c
    ks = np.sort(key)
    dup = np.unique(ks[1:][ks[1:] == ks[:-1]])
    del ks
    return _in_sorted(dup, key)


def _skeleton(xy: np.ndarray, ring_len: np.ndarray, steps: tuple[int, int], g_ring: np.ndarray | None) -> _Skeleton:
    """The border skeleton of rings (:class:`_Skeleton`; ``g_ring``: object of each ring, None: one object)."""
    start = np.cumsum(ring_len) - ring_len
    on = _on_lines(xy, steps)
    on |= _repeated(xy, start, g_ring)
    keep = on | _prev_rows(on, start, ring_len)
    keep |= _next_rows(on, start, ring_len)
    nk = np.add.reduceat(keep, start, dtype=np.int64) if len(start) else np.zeros(0, dtype=np.int64)
    solo = nk == 0  # a ring off every line (a hole inside a block): one vertex stands for it
    keep[start[solo]] = True
    nk[solo] = 1
    kept = np.flatnonzero(keep)
    del keep
    line = on[kept]
    del on
    sk_start = np.cumsum(nk) - nk
    ring = np.repeat(np.arange(len(nk)), nk)
    nxt = np.empty_like(kept)
    nxt[:-1] = kept[1:]
    if len(nk):
        nxt[sk_start + nk - 1] = kept[sk_start] + ring_len  # the ring's first kept vertex, a lap on
    gap = nxt - kept - 1
    corr = np.zeros(len(kept), dtype=np.int64)
    g = np.flatnonzero(gap)
    if len(g):
        c = _edge_prefix(xy, start, ring_len)
        rs, re = start[ring[g]], start[ring[g]] + ring_len[ring[g]]
        a2 = _cyclic_span(c, rs, re, kept[g], nxt[g])
        del c
        p = xy[kept[g]].astype(np.int64)
        q = xy[np.where(nxt[g] >= re, nxt[g] - ring_len[ring[g]], nxt[g])].astype(np.int64)
        corr[g] = a2 - (p[:, 0] * q[:, 1] - q[:, 0] * p[:, 1])
    return _Skeleton(xy[kept], nk, kept, gap, corr, line)


def _expand(sxy: np.ndarray, orig: np.ndarray, gap: np.ndarray,
            xy: np.ndarray, in_start: np.ndarray, in_len: np.ndarray) -> np.ndarray:
    """The vertices of output rings given in skeleton vertices (``sxy``, their input index ``orig``
    and ``gap``), with the left-out stretches of the input rings (``xy``, ``in_start``, ``in_len``) put back."""
    total = len(sxy) + int(gap.sum())
    if total == len(sxy):
        return sxy
    out = np.empty((total, 2), dtype=np.int32)
    pos = np.arange(len(sxy), dtype=np.int64)
    pos += np.cumsum(gap) - gap
    out[pos] = sxy
    g = np.flatnonzero(gap)
    src, n, dst = orig[g] + 1, gap[g], pos[g] + 1
    ring = np.searchsorted(in_start, orig[g], "right") - 1
    rend = in_start[ring] + in_len[ring]
    first = np.minimum(n, rend - src)  # up to the ring's end, then on from its start
    seg_src = np.r_[src, in_start[ring]]
    seg_dst = np.r_[dst, dst + first]
    seg_len = np.r_[first, n - first]
    del g, src, n, dst, ring, rend, first, pos
    big = seg_len > _CHUNK // 16
    for a, b, k in zip(seg_src[big].tolist(), seg_dst[big].tolist(), seg_len[big].tolist(), strict=True):
        out[b:b + k] = xy[a:a + k]
    small = np.flatnonzero(~big & (seg_len > 0))
    cut = np.searchsorted(np.cumsum(seg_len[small]), np.arange(_CHUNK, int(seg_len[small].sum()) + _CHUNK, _CHUNK))
    for part in np.split(small, np.unique(cut[:-1] + 1)):
        out[_ranges(seg_dst[part], seg_len[part])] = xy[_ranges(seg_src[part], seg_len[part])]
    return out


# -- per-vertex passes ----------------------------------------------------------------------------


def _next_rows(a: np.ndarray, start: np.ndarray, length: np.ndarray) -> np.ndarray:
    """``a`` shifted one step forward within each cyclic ring (the value at the next vertex)."""
    out = np.roll(a, -1, axis=0)
    if len(start):
        out[start + length - 1] = a[start]
    return out


def _prev_rows(a: np.ndarray, start: np.ndarray, length: np.ndarray) -> np.ndarray:
    """``a`` shifted one step back within each cyclic ring (the value at the previous vertex)."""
    out = np.roll(a, 1, axis=0)
    if len(start):
        out[start] = a[start + length - 1]
    return out


def _densified(xy: np.ndarray, ring_len: np.ndarray, steps: tuple[int, int]
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, _Carry]:
    """A vertex at every integer point of the edges on block-border lines (the only shared ones).

    Returns:
        ``(xy, ring_len, border_edges, direction, carry)``: the new rings, the index and direction
        code (0 +x, 1 +y, 2 -x, 3 -y) of every (unit) edge on a block-border line, and how to
        carry per-vertex values over to the new vertices.
    """
    start = np.cumsum(ring_len) - ring_len
    d = _next_rows(xy, start, ring_len)
    d -= xy
    on = ((d[:, 0] == 0) & (xy[:, 0] % steps[1] == 0)) | ((d[:, 1] == 0) & (xy[:, 1] % steps[0] == 0))
    j = np.flatnonzero(on)
    del on
    dj = d[j]
    del d
    lj = np.abs(dj).sum(axis=1).astype(np.int64)
    sgn = np.sign(dj).astype(np.int32)
    code = np.select([sgn[:, 0] == 1, sgn[:, 1] == 1, sgn[:, 0] == -1], [0, 1, 2], 3).astype(np.int8)
    n = np.ones(len(xy), dtype=np.int64)
    n[j] = lj
    base = np.cumsum(n)
    base -= n
    split = bool((lj > 1).any())
    out = np.repeat(xy, n, axis=0) if split else xy
    ring_len = np.add.reduceat(n, start) if len(start) else ring_len
    n_rep = n if split else None
    del n
    extra = lj - 1
    rep = np.repeat(np.arange(len(j)), extra)
    t = np.arange(len(rep)) - np.repeat(np.cumsum(extra) - extra, extra) + 1
    inserted = base[j][rep] + t
    out[inserted] += sgn[rep] * t[:, None].astype(np.int32)
    edges = _ranges(base[j], lj)
    return out, ring_len, edges, np.repeat(code, lj), _Carry(n_rep, inserted)


def _pack(*cols: np.ndarray) -> np.ndarray:
    """One int64 per row of non-negative integer columns, equal exactly where the rows are equal."""
    key = np.zeros(len(cols[0]), dtype=np.int64)
    span = 1
    for c in cols:
        m = int(c.max()) + 1 if len(c) else 1
        if span * m >= 2**62:  # renumber the rows seen so far densely
            key = np.unique(key, return_inverse=True)[1].astype(np.int64).ravel()
            span = int(key.max()) + 1
        key, span = key * m + c, span * m
    return key


def _keys(ga: np.ndarray, a: np.ndarray, gb: np.ndarray, b: np.ndarray,
          extra: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Comparable keys of ``(group, vertex[, code])`` for two sets of vertices (``(k, 2)``)."""
    xy = np.concatenate([a, b]).astype(np.int64)
    xy -= xy.min(axis=0) if len(xy) else 0
    cols = [np.concatenate([ga, gb]).astype(np.int64), xy[:, 0], xy[:, 1]]
    if extra is not None:
        cols.append(np.concatenate(extra))
    key = _pack(*cols)
    return key[: len(a)], key[len(a):]


def _cancelled(xy: np.ndarray, g_of: np.ndarray, edges: np.ndarray, code: np.ndarray) -> np.ndarray:
    """Bool per vertex: its (unit, border-line) edge's reverse is an edge of the same object.

    Each edge gets one int64 key of ``(group, start, direction)``, its reverse one of ``(group,
    end, opposite direction)``; the reverses are looked up in the sorted keys chunk by chunk.
    """
    unit = np.array([[1, 0], [0, 1], [-1, 0], [0, -1]], dtype=np.int32)
    cancel = np.zeros(len(xy), dtype=bool)
    if not len(edges):
        return cancel
    s = xy[edges]
    g = g_of(edges)
    lo = s.min(axis=0).astype(np.int64) - 1
    span = s.max(axis=0).astype(np.int64) - lo + 2
    if (int(g.max()) + 1) * int(span[0]) * int(span[1]) * 4 >= 2**62:
        k_self, k_twin = _keys(g, s, g, s + unit[code], (code, (code + 2) % 4))
        k_self.sort()
    else:
        def key(grp: np.ndarray, p: np.ndarray, direction: np.ndarray) -> np.ndarray:
            k = grp * span[0]
            k += p[:, 0]
            k -= lo[0]
            k *= span[1]
            k += p[:, 1]
            k -= lo[1]
            k *= 4
            k += direction
            return k

        k_self = key(g, s, code)
        k_self.sort()
        s += unit[code]
        k_twin = key(g, s, (code + 2) % 4)
    del s, g
    cancel[edges[_in_sorted(k_self, k_twin)]] = True
    return cancel


#: vertices per step of the chunked passes over a scene-spanning object
_CHUNK = 1 << 16


def _in_sorted(sorted_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Bool per key: it is in ``sorted_keys`` (``np.isin`` chunk by chunk: no sorted copy of ``keys``)."""
    out = np.zeros(len(keys), dtype=bool)
    if not len(sorted_keys):
        return out
    for a in range(0, len(keys), _CHUNK):
        k = keys[a:a + _CHUNK]
        pos = np.searchsorted(sorted_keys, k)
        np.minimum(pos, len(sorted_keys) - 1, out=pos)
        out[a:a + _CHUNK] = sorted_keys[pos] == k
    return out


# -- runs -----------------------------------------------------------------------------------------


@dataclass
class _Runs:
    """Stretches of surviving edges, one per run start (sorted by vertex index)."""

    start: np.ndarray  # first vertex
    length: np.ndarray  # vertices (the run may wrap around the end of its ring)
    ring: np.ndarray  # source ring
    group: np.ndarray


def _runs(cancel: np.ndarray, pinch: np.ndarray, rstart: np.ndarray, ring_len: np.ndarray,
          g_ring: np.ndarray) -> _Runs:
    surv = ~cancel
    run_start = surv & (_prev_rows(cancel, rstart, ring_len) | pinch)
    run_end = surv & (_next_rows(cancel, rstart, ring_len) | _next_rows(run_start, rstart, ring_len))
    starts, ends = np.flatnonzero(run_start), np.flatnonzero(run_end)
    del run_start, run_end, surv
    ring = np.searchsorted(rstart, starts, "right") - 1
    rend = rstart[ring] + ring_len[ring] - 1
    j = np.searchsorted(ends, starts)
    jc = np.minimum(j, max(len(ends) - 1, 0))
    same = (j < len(ends)) & (ends[jc] <= rend) if len(ends) else np.zeros(len(starts), dtype=bool)
    e = np.where(same, ends[jc] if len(ends) else 0, 0)
    wrap = ~same
    if wrap.any():  # the run goes on past the end of its ring to the ring's first run end
        e[wrap] = ends[np.searchsorted(ends, rstart[ring[wrap]])]
    length = np.where(e >= starts, e - starts + 1, e + ring_len[ring] - starts + 1)
    return _Runs(starts, length, ring, g_ring[ring])


def _links(xy: np.ndarray, rstart: np.ndarray, ring_len: np.ndarray, runs: _Runs) -> tuple[np.ndarray, np.ndarray]:
    """For each run, the run starting where it ends (right turn where two start there).

    Returns:
        ``(link (k,) run index or -1, bad (k,) bool)``.
    """
    s, r = runs.start, runs.ring
    last = s + runs.length - 1
    last = np.where(last >= rstart[r] + ring_len[r], last - ring_len[r], last)
    after = np.where(last == rstart[r] + ring_len[r] - 1, rstart[r], last + 1)  # the vertex the run ends on
    s_next = np.where(s == rstart[r] + ring_len[r] - 1, rstart[r], s + 1)
    p_start, p_end = xy[s], xy[after]
    d_start = np.sign(xy[s_next].astype(np.int64) - p_start)
    d_end = np.sign(p_end.astype(np.int64) - xy[last])
    ks, ke = _keys(runs.group, p_start, runs.group, p_end)
    order = np.argsort(ks, kind="stable")
    lo = np.searchsorted(ks[order], ke, "left")
    n = np.searchsorted(ks[order], ke, "right") - lo
    link = np.full(len(s), -1, dtype=np.int64)
    one = n == 1
    link[one] = order[lo[one]]
    two = np.flatnonzero(n == 2)
    if len(two):
        din = d_end[two]
        a, b = order[lo[two]], order[lo[two] + 1]
        da, db = d_start[a], d_start[b]
        ra = din[:, 0] * da[:, 1] - din[:, 1] * da[:, 0] < 0
        rb = din[:, 0] * db[:, 1] - din[:, 1] * db[:, 0] < 0
        link[two[ra & ~rb]] = a[ra & ~rb]
        link[two[rb & ~ra]] = b[rb & ~ra]
    return link, link < 0


def _run_area2(xy: np.ndarray, rstart: np.ndarray, ring_len: np.ndarray, runs: _Runs, corr: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """Twice the signed area contributed by each run's edges, and by each whole ring (shoelace prefix
    sums; ``corr``: what each vertex's outgoing edge stands for beyond itself, see :class:`_Skeleton`)."""
    c = _edge_prefix(xy, rstart, ring_len)
    c[1:] += np.cumsum(corr)
    rend = rstart + ring_len
    s, r = runs.start, runs.ring
    run = _cyclic_span(c, rstart[r], rend[r], s, s + runs.length)
    return run, c[rend] - c[rstart]


# -- the dissolve ---------------------------------------------------------------------------------


def dissolve_rings(pieces: Rings, group: np.ndarray, count: np.ndarray, steps: tuple[int, int]
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Union of the pieces of many pixel objects at once, exactly (module docstring).

    Args:
        pieces: pixel-edge polygons (integer ``(col, row)`` coordinates) from blocks whose borders
            lie on multiples of ``steps`` (rows, cols); pieces of an object share edges only there.
        group: ``(n,)`` object of each piece, ``0..k-1`` (one 4-connected object per group).
        count: ``(k,)`` pixels of each object.

    Returns:
        ``(polygons (k,), ok (k,) bool)``: ok where the object came out as one polygon whose area
        equals its pixel count (the others are None, for the caller's fallback).
    """
    merged, ok = dissolve_to_rings(pieces, group, count, steps)
    out = np.full(len(count), None, dtype=object)
    out[ok] = merged.to_polygons()
    return out, ok


def dissolve_to_rings(pieces: Rings, group: np.ndarray, count: np.ndarray, steps: tuple[int, int]
                      ) -> tuple[Rings, np.ndarray]:
    """:func:`dissolve_rings` with the merged objects as rings: ``(Rings of the ok objects in order, ok)``.

    The passes run on the border skeleton of the pieces (:class:`_Skeleton`); the stretches off
    the block-border lines are put back once, as the output is written.
    """
    k = len(count)
    g_ring = np.repeat(np.asarray(group, dtype=np.int64), pieces.piece_rings)
    one = k == 1 or len(np.unique(g_ring)) == 1
    sk = _skeleton(pieces.xy, pieces.ring_len, steps, None if one else g_ring)
    xy, ring_len, edges, code, carry = _densified(sk.xy, sk.ring_len, steps)
    orig, gap, corr, line = carry(sk.orig, -1), carry(sk.gap, 0), carry(sk.corr, 0), carry(sk.line, True)
    del sk
    rstart = np.cumsum(ring_len) - ring_len

    def g_of(v: np.ndarray) -> np.ndarray:
        return g_ring[np.searchsorted(rstart, v, "right") - 1]

    cancel = _cancelled(xy, g_of, edges, code)
    del edges, code
    # two surviving edges of one object start at the vertex (pieces touching diagonally): never where
    # a cancelled edge starts, nor off the block-border lines and touch points (there no other piece is)
    pinch = _repeated(xy, rstart, None if one else g_ring, cancel | ~line)
    del line
    runs = _runs(cancel, pinch, rstart, ring_len, g_ring)
    del pinch
    whole = np.flatnonzero(np.add.reduceat(cancel, rstart) == 0) if len(rstart) else np.zeros(0, dtype=np.int64)
    whole = whole[~np.isin(whole, runs.ring)]
    del cancel
    succ, badg = _successors(xy, rstart, ring_len, runs)
    cyc, pos = list_rank(succ)
    a2_run, a2_ring = _run_area2(xy, rstart, ring_len, runs, corr)
    del corr
    # output rings: the cycles of runs, then the rings no run broke
    n_cyc = int(cyc.max()) + 1 if len(cyc) else 0
    ring_grp = np.zeros(n_cyc + len(whole), dtype=np.int64)
    ring_grp[cyc] = runs.group
    ring_grp[n_cyc:] = g_ring[whole]
    a2 = np.zeros(len(ring_grp), dtype=np.int64)
    np.add.at(a2, cyc, a2_run)
    a2[n_cyc:] = a2_ring[whole]
    shell = a2 > 0
    ok = (np.bincount(ring_grp[shell], minlength=k) == 1) & (np.bincount(ring_grp, weights=a2, minlength=k) == 2 * count)
    ok[badg] = False
    # segments (source start, length) in output order: each ok object's shell, then its holes
    rorder = np.lexsort((~shell, ring_grp))
    rorder = rorder[ok[ring_grp[rorder]]]
    rank = np.full(len(ring_grp), -1, dtype=np.int64)
    rank[rorder] = np.arange(len(rorder))
    seg_ring = np.r_[rank[cyc], rank[n_cyc:]]
    seg_pos = np.r_[pos, np.zeros(len(whole), dtype=np.int64)]
    seg_src = np.r_[runs.start, rstart[whole]]
    seg_len = np.r_[runs.length, ring_len[whole]]
    seg_srcring = np.r_[runs.ring, whole]
    use = seg_ring >= 0
    so = np.lexsort((seg_pos[use], seg_ring[use]))
    seg_ring, seg_src, seg_len, seg_srcring = (a[use][so] for a in (seg_ring, seg_src, seg_len, seg_srcring))
    (oxy, orig, gap), oring_len = _gather((xy, orig, gap), rstart, ring_len, seg_src, seg_len, seg_srcring,
                                          seg_ring, len(rorder))
    del xy
    keep = _collinear_kept(oxy, oring_len, steps)
    if keep is not None:
        oxy, orig, gap = oxy[keep], orig[keep], gap[keep]
        oring_len = oring_len - np.bincount(np.repeat(np.arange(len(oring_len)), oring_len)[~keep],
                                            minlength=len(oring_len))
    ogrp = ring_grp[rorder]
    full_len = oring_len + np.bincount(np.repeat(np.arange(len(oring_len)), oring_len), weights=gap,
                                       minlength=len(oring_len)).astype(np.int64)
    short = np.unique(ogrp[full_len < 3])
    if len(short):
        ok[short] = False
        keep_ring = ~np.isin(ogrp, short)
        sel = np.repeat(keep_ring, oring_len)
        oxy, orig, gap = oxy[sel], orig[sel], gap[sel]
        oring_len, ogrp = oring_len[keep_ring], ogrp[keep_ring]
        full_len = full_len[keep_ring]
    oxy = _expand(oxy, orig, gap, pieces.xy, np.cumsum(pieces.ring_len) - pieces.ring_len, pieces.ring_len)
    n_rings = np.bincount(ogrp, minlength=k)[ok] if len(ogrp) else np.zeros(int(ok.sum()), dtype=np.int64)
    return Rings(oxy, full_len, n_rings.astype(np.int64)), ok


def _successors(xy: np.ndarray, rstart: np.ndarray, ring_len: np.ndarray, runs: _Runs) -> tuple[np.ndarray, np.ndarray]:
    """The next run of every run (itself for the runs of refused objects), and the refused objects."""
    n_runs = len(runs.start)
    link, bad = _links(xy, rstart, ring_len, runs)
    succ = np.arange(n_runs)
    badg = np.unique(runs.group[bad])
    good = ~bad & ~np.isin(runs.group, badg)
    succ[good] = link[good]
    if len(np.unique(succ)) != n_runs:  # two runs joined to one: refuse those objects
        dup = np.flatnonzero(np.bincount(succ, minlength=n_runs) > 1)
        badg = np.union1d(badg, runs.group[dup])
        badg = np.union1d(badg, runs.group[np.isin(succ, dup)])
        succ = np.where(np.isin(runs.group, badg), np.arange(n_runs), succ)
    return succ, badg


def _gather(cols: tuple[np.ndarray, ...], rstart: np.ndarray, ring_len: np.ndarray, src: np.ndarray,
            length: np.ndarray, srcring: np.ndarray, oring: np.ndarray, n_out: int
            ) -> tuple[list[np.ndarray], np.ndarray]:
    """The per-vertex ``cols`` of the segments, in order (a segment wrapping past its ring's end is
    split in two), and the vertices of each output ring."""
    rend = rstart[srcring] + ring_len[srcring]
    first = np.minimum(length, rend - src)
    rest = length - first
    src2 = np.stack([src, rstart[srcring]], axis=1).ravel()
    len2 = np.stack([first, rest], axis=1).ravel()
    idx = np.arange(int(len2.sum()), dtype=np.int64)
    idx -= np.repeat(np.cumsum(len2) - len2 - src2, len2)
    out = [c[idx] for c in cols]
    del idx
    return out, np.bincount(oring, weights=length, minlength=n_out).astype(np.int64)


def _collinear_kept(xy: np.ndarray, ring_len: np.ndarray, steps: tuple[int, int]) -> np.ndarray | None:
    """Bool per vertex: not on a straight line through its neighbours (None: all are kept).

    Only vertices on block-border lines can be such (the unit vertices added there and the joins
    of pieces); the pieces' own vertices are corners, and a border vertex's neighbours are its
    own in the skeleton too (a stand-in edge never touches a line).
    """
    cand = np.flatnonzero(_on_lines(xy, steps))
    if not len(cand):
        return None
    start = np.cumsum(ring_len) - ring_len
    r = np.searchsorted(start, cand, "right") - 1
    prv = np.where(cand == start[r], start[r] + ring_len[r] - 1, cand - 1)
    nxt = np.where(cand == start[r] + ring_len[r] - 1, start[r], cand + 1)
    p = xy[cand].astype(np.int64)
    a, b = np.sign(p - xy[prv]), np.sign(xy[nxt] - p)
    coll = a[:, 0] * b[:, 1] == a[:, 1] * b[:, 0]
    if not coll.any():
        return None
    keep = np.ones(len(xy), dtype=bool)
    keep[cand[coll]] = False
    return keep


__all__ = ["Rings", "dissolve_rings", "dissolve_to_rings", "piece_vertices"]
