"""Exact merge of polygon pieces across block borders (pixel-edge polygons, integer coordinates).

:class:`BorderMerge` keeps the pieces of objects that touch an internal block border, the pairs
of pieces that face each other across a border with the same class, and the piece ids on the
border to the next block row. After each block row, the groups of pieces (connected components
of the pairs graph, :func:`unetgeo.merge_util.components`) with no piece on that border are complete. All of
them are dissolved at once by :func:`dissolve_groups`, in numpy, without GEOS overlays: ring
edges on block-border lines are split into unit edges, every unit edge whose reverse belongs to
the same group is cancelled (a shared border), and the surviving stretches are relinked into
rings (right turn where pieces of one object touch diagonally); holes need no point-in-polygon
test because a group has exactly one shell. Each group's pixel count, confidence sum / count /
max are summed. Every merged polygon's area is checked against its pixel count; a group that
fails the check is dissolved alone by GEOS (:func:`union_pixel_polygons`).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, fields

import numpy as np
import shapely

from unetgeo.grid import Window
from unetgeo.merge_util import (
    assemble_polygons,
    components,
    list_rank,
    next_in_ring,
    not_collinear,
    release_freed_memory,
    ring_area2,
)

log = logging.getLogger(__name__)

#: Vertices dissolved at once (groups are batched up to this; a larger group goes alone).
CHUNK_VERTICES = 1_000_000

@dataclass
class PolygonBatch:
    """Polygons in pixel coordinates with their pixel statistics, column by column (all ``(n,)``).

    Attributes:
        class_id: int64 class of each polygon.
        geom: shapely polygons, ``(col, row)`` pixel-corner coordinates of the whole raster.
        count: int64 pixels.
        conf_sum: float64 sum of the valid confidence values.
        conf_n: int64 number of valid confidence values.
        conf_max: int64 largest confidence value, -1 when none.
    """

    class_id: np.ndarray
    geom: np.ndarray
    count: np.ndarray
    conf_sum: np.ndarray
    conf_n: np.ndarray
    conf_max: np.ndarray

    def __len__(self) -> int:
        return len(self.class_id)

    def take(self, idx: np.ndarray) -> PolygonBatch:
        """Rows ``idx`` (int indices or bool mask)."""
        return PolygonBatch(*(getattr(self, f.name)[idx] for f in fields(self)))

    @staticmethod
    def empty() -> PolygonBatch:
        """A batch of no polygons."""
        i = np.zeros(0, dtype=np.int64)
        return PolygonBatch(i, np.zeros(0, dtype=object), i, np.zeros(0), i, i)

    @staticmethod
    def concat(batches: Sequence[PolygonBatch]) -> PolygonBatch:
        """One batch of all rows of ``batches``, in order."""
        batches = [b for b in batches if len(b)]
        if not batches:
            return PolygonBatch.empty()
        if len(batches) == 1:
            return batches[0]
        return PolygonBatch(*(np.concatenate([getattr(b, f.name) for b in batches]) for f in fields(PolygonBatch)))


@dataclass
class BlockEdges:
    """Piece index (into the block's pieces, -1 none) and class of the pixels on a block's four sides."""

    top: np.ndarray
    top_cls: np.ndarray
    bottom: np.ndarray
    bottom_cls: np.ndarray
    left: np.ndarray
    left_cls: np.ndarray
    right: np.ndarray
    right_cls: np.ndarray


class BorderMerge:
    """Border-merge state of a raster read in block rows (left to right, top to bottom).

    Memory: the pieces of the objects still open plus two border rows of ids, ``O(width)``.

    Args:
        width: raster width in pixels.
        steps: block size ``(rows, cols)``; block borders lie on multiples of it.
    """

    def __init__(self, width: int, steps: tuple[int, int]):
        self.width = width
        self.steps = steps
        self.pending = PolygonBatch.empty()
        self.gids = np.zeros(0, dtype=np.int64)  # global id of each pending piece, ascending
        self.pairs: list[np.ndarray] = []  # (k, 2) gid pairs joined across borders
        self.next_gid = 0
        self.n_merged = 0
        self.carry_ids = np.full(width, -1, dtype=np.int64)
        self.carry_cls = np.zeros(width, dtype=np.int64)
        self._next_ids = self.carry_ids.copy()
        self._next_cls = self.carry_cls.copy()
        self._right: tuple[np.ndarray, np.ndarray] | None = None

    def start_row(self) -> None:
        """Begin a block row."""
        self._next_ids = np.full(self.width, -1, dtype=np.int64)
        self._next_cls = np.zeros(self.width, dtype=np.int64)
        self._right = None

    def add_block(self, win: Window, pieces: PolygonBatch, edges: BlockEdges, height: int) -> None:
        """Record the border-touching ``pieces`` of block ``win`` and join them to their neighbours.

        Args:
            win: the block's window; blocks of a row come left to right.
            pieces: the block's components that touch an internal block border.
            edges: piece indices / classes on the block's sides.
            height: raster height in pixels.
        """
        base = self.next_gid
        self.next_gid += len(pieces)
        if len(pieces):
            self.pending = PolygonBatch.concat([self.pending, pieces])
            self.gids = np.concatenate([self.gids, base + np.arange(len(pieces))])

        def g(ids: np.ndarray) -> np.ndarray:
            return np.where(ids >= 0, ids + base, -1)

        cols = slice(win.col_off, win.col_off + win.width)
        if win.row_off > 0:
            self._join(g(edges.top), edges.top_cls, self.carry_ids[cols], self.carry_cls[cols])
        if win.col_off > 0 and self._right is not None:
            self._join(g(edges.left), edges.left_cls, *self._right)
        if win.row_off + win.height < height:
            self._next_ids[cols] = g(edges.bottom)
            self._next_cls[cols] = edges.bottom_cls
        self._right = (g(edges.right), edges.right_cls)

    def _join(self, ids_a: np.ndarray, cls_a: np.ndarray, ids_b: np.ndarray, cls_b: np.ndarray) -> None:
        m = (ids_a >= 0) & (ids_b >= 0) & (cls_a == cls_b)
        if m.any():
            self.pairs.append(np.unique(np.stack([ids_a[m], ids_b[m]], axis=1), axis=0))

    def close_row(self) -> Callable[[Callable[[PolygonBatch], None]], None] | None:
        """End a block row; the dissolve of the objects it finished, to run on any thread (None: nothing finished).

        The bookkeeping is done here, so the next row's blocks can be added while the returned
        callable ``dissolve(emit, pool=None)`` runs elsewhere; it holds only the finished pieces
        and hands the merged polygons (pixel coordinates) to ``emit`` chunk by chunk, so that no
        more than one chunk of merged outlines is built at a time.
        """
        self.carry_ids, self.carry_cls = self._next_ids, self._next_cls
        n = len(self.pending)
        if not n:
            return None
        pairs = np.concatenate(self.pairs) if self.pairs else np.zeros((0, 2), dtype=np.int64)
        pi = np.searchsorted(self.gids, pairs)
        comp = components(n, pi[:, 0], pi[:, 1])
        open_ids = np.unique(self.carry_ids[self.carry_ids >= 0])
        done = ~np.isin(comp, np.unique(comp[np.searchsorted(self.gids, open_ids)]))
        if not done.any():
            return None
        finished = self.pending.take(done)
        keep = ~done
        self.pending, self.gids = self.pending.take(keep), self.gids[keep]
        kept_pairs = keep[pi].all(axis=1) if len(pi) else np.zeros(0, dtype=bool)
        self.pairs = [pairs[kept_pairs]] if kept_pairs.any() else []
        del pairs, pi
        self.n_merged += int((np.bincount(comp[done]) > 1).sum())
        return functools.partial(_merge_groups, finished, comp[done], self.steps)

    def close(self) -> None:
        """Check that nothing is left open (the last block row has no border below it)."""
        if len(self.pending):
            raise RuntimeError(f"{len(self.pending)} polygon pieces left unmerged after the last block row")


def _group_stats(p: PolygonBatch, group: np.ndarray, n_groups: int) -> tuple[np.ndarray, ...]:
    """Per group: class, count, conf_sum, conf_n, conf_max (summed / maxed over its pieces)."""
    cls = np.zeros(n_groups, dtype=np.int64)
    cls[group] = p.class_id
    count = np.bincount(group, weights=p.count, minlength=n_groups).astype(np.int64)
    csum = np.bincount(group, weights=p.conf_sum, minlength=n_groups)
    cn = np.bincount(group, weights=p.conf_n, minlength=n_groups).astype(np.int64)
    cmax = np.full(n_groups, -1, dtype=np.int64)
    np.maximum.at(cmax, group, p.conf_max)
    return cls, count, csum, cn, cmax


def _merge_groups(p: PolygonBatch, comp: np.ndarray, steps: tuple[int, int],
                  emit: Callable[[PolygonBatch], None], pool: Executor | None = None) -> None:
    """One polygon per group (``comp`` = group label of each piece) of complete pieces, to ``emit``.

    The groups of one piece go first, then the others chunk by chunk (:data:`CHUNK_VERTICES`),
    smallest groups first; each chunk's pieces are let go once it is dissolved, so the largest
    object (dissolved last) shares the memory with as few other pieces as possible. With a
    ``pool`` and no more than one chunk's vertices in all, the groups are split in two halves of
    about equal vertex count, dissolved side by side (the temporaries stay within one chunk's).
    """
    uniq, group = np.unique(comp, return_inverse=True)
    ng = len(uniq)
    stats = _group_stats(p, group, ng)
    size = np.bincount(group, minlength=ng)
    single = size[group] == 1
    if single.any():
        g1 = group[single]
        emit(PolygonBatch(*(a[g1] for a in stats[:1]), p.geom[single], *(a[g1] for a in stats[1:])))
        p.geom[single] = None
    multi = ~single
    nv = np.bincount(group[multi], weights=shapely.get_num_coordinates(p.geom[multi]), minlength=ng)
    chunk = np.zeros(ng, dtype=np.int64)
    many = np.flatnonzero(size > 1)
    many = many[np.argsort(nv[many], kind="stable")]  # smallest first
    chunk[many] = np.cumsum(nv[many]) // CHUNK_VERTICES  # bounds the temporaries of one dissolve
    if pool is not None and len(many) > 1 and nv.sum() <= CHUNK_VERTICES:
        cum = np.cumsum(nv[many])  # two halves by vertices; the largest group ends the second
        chunk[many] = cum > cum[-1] / 2
        futures = [pool.submit(_dissolve_chunk, p, group, multi & (chunk[group] == ch), size, stats, steps)
                   for ch in np.unique(chunk[many])]
        for f in futures:
            emit(f.result())
        return
    for ch in np.unique(chunk[group[multi]]):
        emit(_dissolve_chunk(p, group, multi & (chunk[group] == ch), size, stats, steps))


def _dissolve_chunk(p: PolygonBatch, group: np.ndarray, sel: np.ndarray, size: np.ndarray,
                    stats: tuple[np.ndarray, ...], steps: tuple[int, int]) -> PolygonBatch:
    """The merged polygons of the groups of the pieces ``sel`` (GEOS fallback per refused group); releases those pieces."""
    gids, local = np.unique(group[sel], return_inverse=True)
    merged, ok = dissolve_groups(p.geom[sel], local, stats[1][gids], steps)
    for i in np.flatnonzero(~ok):
        g = gids[i]
        log.debug("batched edge dissolve refused a group of %d pieces; dissolving it alone", size[g])
        parts = union_pixel_polygons(list(p.geom[group == g]))
        if len(parts) != 1:
            log.warning("a merged object split into %d parts; keeping the largest outline", len(parts))
            parts = parts[np.argsort(shapely.area(parts))[::-1]]
        merged[i] = parts[0]
    p.geom[sel] = None
    return PolygonBatch(stats[0][gids], merged, *(a[gids] for a in stats[1:]))


# -- batched exact dissolve: cancel shared unit edges, relink the rest --------------------------


def _ring_coords(geoms: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(xy (m, 2) int32, ring of each vertex (m,) int32, polygon of each ring (r,))``; closing vertices dropped.

    int32 (pixel coordinates and indices of a raster < 2**31 wide) halves the dissolve's memory.
    """
    rings, poly_of = shapely.get_rings(geoms, return_index=True)
    xy, ring_of = shapely.get_coordinates(rings, return_index=True)
    del rings
    keep = np.r_[ring_of[1:] == ring_of[:-1], False]
    ring_of = ring_of[keep].astype(np.int32)
    xy = np.rint(xy, out=xy).astype(np.int32)[keep]
    return xy, ring_of, poly_of




def _oriented(xy: np.ndarray, ring_of: np.ndarray, poly_of: np.ndarray) -> np.ndarray:
    """``xy`` with every shell counter-clockwise and every hole clockwise (rings reversed in place)."""
    is_shell = np.r_[True, poly_of[1:] != poly_of[:-1]]
    flip = (ring_area2(xy, ring_of, len(poly_of)) > 0) != is_shell
    if not flip.any():
        return xy
    start = np.r_[0, np.flatnonzero(ring_of[1:] != ring_of[:-1]) + 1]
    length = np.diff(np.r_[start, len(ring_of)])
    idx = np.arange(len(ring_of), dtype=ring_of.dtype)
    s = start[ring_of].astype(ring_of.dtype)
    return xy[np.where(flip[ring_of], 2 * s + length[ring_of] - 1 - idx, idx)]


def _densified(xy: np.ndarray, ring_of: np.ndarray, steps: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Rings with a vertex at every integer point of their edges on block-border lines (the only shared ones)."""
    d = xy[next_in_ring(ring_of)] - xy
    on = ((d[:, 0] == 0) & (xy[:, 0] % steps[1] == 0)) | ((d[:, 1] == 0) & (xy[:, 1] % steps[0] == 0))
    n = np.where(on, np.abs(d).sum(axis=1), 1).astype(xy.dtype)
    sign = np.sign(d).astype(np.int8)
    del d, on
    seg = np.repeat(np.arange(len(xy), dtype=ring_of.dtype), n)
    k = np.arange(seg.size, dtype=xy.dtype)
    k -= np.repeat(np.cumsum(n, dtype=np.int64).astype(xy.dtype) - n, n)
    out = xy[seg]
    out += sign[seg] * k[:, None]
    return out, ring_of[seg]


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


def _vertex_keys(ga: np.ndarray, a: np.ndarray, gb: np.ndarray, b: np.ndarray,
                 extra: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Comparable keys of ``(group, vertex[, code])`` for the groups ``ga``, ``gb`` and vertices ``a``, ``b`` (``(k, 2)``)."""
    xy = np.concatenate([a, b])
    xy = xy - xy.min(axis=0) if len(xy) else xy
    cols = [np.concatenate([ga, gb]), xy[:, 0], xy[:, 1]]
    if extra is not None:
        cols.append(np.concatenate(extra))
    key = _pack(*cols)
    return key[: len(a)], key[len(a):]


def _links(S: np.ndarray, E: np.ndarray, g: np.ndarray, ends: np.ndarray, starts: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray]:
    """For each run-end edge, the run-start edge at its end vertex (right turn where two start there).

    Returns:
        ``(link (k,) edge index or -1, bad (k,) bool)``.
    """
    ks, ke = _vertex_keys(g[starts], S[starts], g[ends], E[ends])
    order = np.argsort(ks, kind="stable")
    lo = np.searchsorted(ks[order], ke, "left")
    n = np.searchsorted(ks[order], ke, "right") - lo
    link = np.full(len(ends), -1, dtype=np.int64)
    one = n == 1
    link[one] = starts[order[lo[one]]]
    two = np.flatnonzero(n == 2)
    if len(two):
        din = np.sign(E[ends[two]] - S[ends[two]])
        a, b = starts[order[lo[two]]], starts[order[lo[two] + 1]]
        da, db = np.sign(E[a] - S[a]), np.sign(E[b] - S[b])
        ra = din[:, 0] * da[:, 1] - din[:, 1] * da[:, 0] < 0
        rb = din[:, 0] * db[:, 1] - din[:, 1] * db[:, 0] < 0
        link[two[ra & ~rb]] = a[ra & ~rb]
        link[two[rb & ~ra]] = b[rb & ~ra]
    return link, link < 0


def _cancel_shared(S: np.ndarray, E: np.ndarray, g: np.ndarray, steps: tuple[int, int]) -> np.ndarray:
    """Bool per edge: a unit edge on a block-border line whose reverse is an edge of the same group."""
    d = E - S
    cand = np.flatnonzero(((d[:, 0] == 0) & (S[:, 0] % steps[1] == 0)) | ((d[:, 1] == 0) & (S[:, 1] % steps[0] == 0)))
    code = np.select([d[cand, 0] == 1, d[cand, 1] == 1, d[cand, 0] == -1], [0, 1, 2], 3)
    k_self, k_twin = _vertex_keys(g[cand], S[cand], g[cand], E[cand], (code, (code + 2) % 4))
    cancel = np.zeros(len(S), dtype=bool)
    cancel[cand[np.isin(k_twin, k_self)]] = True
    return cancel



def _relinked_rings(S: np.ndarray, E: np.ndarray, g: np.ndarray, ring_of: np.ndarray, cancel: np.ndarray,
                    steps: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rings of the surviving edges: ``(vertex xy, ring of each vertex, group of each ring, bad groups' edges)``.

    Stretches of surviving edges (runs) keep their order; a run ending where its next edge was
    cancelled, or at a vertex where two surviving edges start (pixels touching diagonally), is
    joined to the run starting at its end vertex (the right turn at such a vertex).
    """
    nxt = next_in_ring(ring_of)
    prv = np.empty_like(nxt)
    prv[nxt] = np.arange(len(nxt))
    surv = np.flatnonzero(~cancel)
    key = _vertex_keys(g[surv], S[surv], g[:0], S[:0])[0]
    ko = np.argsort(key)
    key = key[ko]
    same = key[1:] == key[:-1]
    del key
    pinch = np.zeros(len(S), dtype=bool)
    if same.any():  # pieces of one object touching diagonally (anywhere, also inside a block)
        pinch[surv[ko[np.r_[same, False] | np.r_[False, same]]]] = True
    del ko, same
    surv = ~cancel
    run_start = surv & (cancel[prv] | pinch)
    run_end = surv & (cancel[nxt] | run_start[nxt])
    ends, starts = np.flatnonzero(run_end), np.flatnonzero(run_start)
    link, bad = _links(S, E, g, ends, starts)
    broken = np.zeros(ring_of.max() + 1 if len(ring_of) else 0, dtype=bool)
    broken[ring_of[starts]] = True
    # runs, in ring order from each broken ring's first run start
    first = np.full(len(broken), len(S), dtype=np.int64)
    np.minimum.at(first, ring_of[starts], starts)
    rstart = np.flatnonzero(np.r_[True, ring_of[1:] != ring_of[:-1]])
    rlen = np.diff(np.r_[rstart, len(ring_of)])
    idx = np.flatnonzero(surv & broken[ring_of]).astype(ring_of.dtype)
    r = ring_of[idx]
    rot = (idx - first[r].astype(idx.dtype)) % rlen[r].astype(idx.dtype)
    idx = idx[np.lexsort((rot, r))]
    del r, rot
    run_of = np.cumsum(run_start[idx], dtype=idx.dtype) - 1
    run_id = np.full(len(S), -1, dtype=idx.dtype)
    run_id[idx] = run_of
    n_runs = len(starts)
    succ = np.arange(n_runs)
    badg = np.unique(g[ends[bad]])
    ok_end = ~bad & ~np.isin(g[ends], badg)
    succ[run_id[ends[ok_end]]] = run_id[link[ok_end]]
    if len(np.unique(succ)) != n_runs:  # two runs joined to one: refuse those groups
        dup = np.flatnonzero(np.bincount(succ, minlength=n_runs) > 1)
        badg = np.union1d(badg, g[starts[np.isin(run_id[starts], dup)]])
        succ = np.where(np.isin(g[starts[np.argsort(run_id[starts])]], badg), np.arange(n_runs), succ)
    cyc, pos = list_rank(succ)
    run_of_cycle = cyc[run_of]
    order = np.lexsort((pos[run_of], run_of_cycle))  # stable: ring order within a run
    whole = np.flatnonzero(surv & ~broken[ring_of])
    n_cyc = cyc.max() + 1 if n_runs else 0
    xy = np.concatenate([S[idx[order]], S[whole]])
    _, wr = np.unique(ring_of[whole], return_inverse=True)
    ring = np.concatenate([run_of_cycle[order], n_cyc + wr.ravel()])
    grp = np.concatenate([g[idx[order]], g[whole]])
    return xy, ring, grp, badg


def dissolve_groups(pieces: np.ndarray, group: np.ndarray, count: np.ndarray, steps: tuple[int, int]
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Union of the pieces of many pixel objects at once, exactly, in numpy (no GEOS overlay).

    Args:
        pieces: ``(n,)`` pixel-edge polygons (integer ``(col, row)`` coordinates) from blocks whose
            borders lie on multiples of ``steps`` (rows, cols); pieces of a group share edges only there.
        group: ``(n,)`` group of each piece, ``0..k-1`` (one 4-connected object per group).
        count: ``(k,)`` pixels of each group.

    Returns:
        ``(polygons (k,), ok (k,) bool)``: ok where the group came out as one polygon whose area
        equals its pixel count (the others are None, for the caller's fallback).
    """
    k = len(count)
    xy, ring_of, poly_of = _ring_coords(pieces)
    xy = _oriented(xy, ring_of, poly_of)
    xy, ring_of = _densified(xy, ring_of, steps)
    S, E = xy, xy[next_in_ring(ring_of)]
    g = group.astype(np.int32)[poly_of[ring_of]]
    del xy
    cancel = _cancel_shared(S, E, g, steps)
    xy, ring, grp, badg = _relinked_rings(S, E, g, ring_of, cancel, steps)
    del S, E, g, ring_of, cancel
    order = np.argsort(ring, kind="stable")
    xy, ring, grp = xy[order], ring[order], grp[order]
    del order
    keep = not_collinear(xy, ring)
    xy, ring, grp = xy[keep], ring[keep], grp[keep]
    del keep
    ring = np.cumsum(np.r_[False, ring[1:] != ring[:-1]], dtype=np.int64)  # sorted: renumber densely
    n_r = int(ring.max()) + 1 if len(ring) else 0
    ring_grp = np.zeros(n_r, dtype=np.int64)
    ring_grp[ring] = grp
    nv = np.bincount(ring, minlength=n_r)
    a2 = ring_area2(xy, ring, n_r)
    shell = a2 > 0
    ok = (np.bincount(ring_grp[shell], minlength=k) == 1) & (np.bincount(ring_grp, weights=a2, minlength=k) == 2 * count)
    ok[badg] = False
    ok &= np.bincount(ring_grp[nv < 3], minlength=k) == 0
    return assemble_polygons(xy, ring, ring_grp, shell, ok), ok


# -- exact dissolve of one object's pieces (fallback) -----------------------------------------


def _ring_unit_vertices(xy: np.ndarray) -> np.ndarray:
    """A closed ring of axis-parallel integer edges with a vertex at every integer point on it.

    Exact (integer arithmetic in float64), so rings of neighbouring pieces share every vertex
    along the edges they have in common, as GEOS's coverage union requires.
    """
    d = np.diff(xy, axis=0)
    lengths = np.abs(d).sum(axis=1).astype(np.int64)
    ok = lengths > 0
    d, lengths, start = d[ok], lengths[ok], xy[:-1][ok]
    seg = np.repeat(np.arange(len(lengths)), lengths)
    k = np.arange(seg.size) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    pts = start[seg] + np.sign(d)[seg] * k[:, None]
    return np.vstack([pts, pts[:1]])


def _ring_drop_collinear(xy: np.ndarray) -> np.ndarray:
    """A closed ring without vertices whose neighbours are collinear with them (or repeated)."""
    p = xy[:-1]
    prev, nxt = np.roll(p, 1, axis=0), np.roll(p, -1, axis=0)
    cross = (p[:, 0] - prev[:, 0]) * (nxt[:, 1] - p[:, 1]) - (p[:, 1] - prev[:, 1]) * (nxt[:, 0] - p[:, 0])
    q = p[cross != 0]
    return np.vstack([q, q[:1]])


def _map_rings(poly: shapely.Polygon, fn) -> shapely.Polygon:
    return shapely.Polygon(fn(np.asarray(poly.exterior.coords)), [fn(np.asarray(r.coords)) for r in poly.interiors])


def dissolve_pixel_polygons(geoms: Sequence[shapely.Polygon]) -> shapely.Polygon | None:
    """Union of the pieces of one 4-connected pixel object, cut anywhere: :func:`dissolve_groups`
    with every grid line a possible seam.

    Returns:
        The union, or None when the pieces do not form one polygon that way (the caller falls
        back to GEOS).
    """
    pieces = np.array(list(geoms), dtype=object)
    if not len(pieces):
        return None
    count = np.array([round(float(shapely.area(pieces).sum()))], dtype=np.int64)
    out, ok = dissolve_groups(pieces, np.zeros(len(pieces), dtype=np.int64), count, (1, 1))
    return out[0] if ok[0] else None


def union_pixel_polygons(geoms: Sequence[shapely.Polygon]) -> np.ndarray:
    """Union of non-overlapping pixel-edge polygons (integer coordinates) into polygons.

    First :func:`dissolve_pixel_polygons` (linear, exact); if the pieces do not form one polygon
    that way, GEOS's coverage union on rings with a vertex at every integer point, then
    ``shapely.union_all``. The pieces come from GDAL's polygonize of disjoint pixel sets, so they
    are valid and never overlap.

    Returns:
        ``(k,)`` polygons (normally one).
    """
    merged1 = dissolve_pixel_polygons(geoms)
    if merged1 is not None:
        return np.array([merged1], dtype=object)
    log.debug("edge dissolve did not give one polygon; using the coverage union")
    try:
        dense = np.array([_map_rings(g, _ring_unit_vertices) for g in geoms], dtype=object)
        parts = shapely.get_parts(shapely.coverage_union_all(dense))
        if len(parts):
            return np.array([_map_rings(p, _ring_drop_collinear) for p in parts], dtype=object)
    except shapely.errors.GEOSException as e:
        log.debug("coverage union refused the pieces (%s); using union_all", e)
    merged = shapely.simplify(shapely.union_all(list(geoms)), 0.0, preserve_topology=True)
    return shapely.get_parts(merged)


__all__ = ["BlockEdges", "BorderMerge", "PolygonBatch", "components", "dissolve_groups", "dissolve_pixel_polygons",
           "release_freed_memory", "union_pixel_polygons"]
