"""Exact merge of polygon pieces across block borders (pixel-edge polygons, integer coordinates).

:class:`BorderMerge` keeps the pieces of objects that touch an internal block border, the pairs
of pieces that face each other across a border with the same class, and the piece ids on the
border to the next block row. After each block row, the groups of pieces (connected components
of the pairs graph, ``scipy.sparse.csgraph``) with no piece on that border are complete: their
pieces are dissolved per class in one GEOS coverage union (shared borders densified to unit
vertices), and each group's pixel count, confidence sum / count / max are summed. Every merged
polygon's area is checked against its pixel count; a group that fails the check is dissolved
alone by cancelling shared unit edges (:func:`dissolve_pixel_polygons`), then GEOS unions.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import shapely
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from unetgeo.grid import Window

log = logging.getLogger(__name__)


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

    def finish_row(self) -> PolygonBatch:
        """End a block row: the objects that can no longer grow, merged (pixel coordinates)."""
        self.carry_ids, self.carry_cls = self._next_ids, self._next_cls
        n = len(self.pending)
        if not n:
            return PolygonBatch.empty()
        pairs = np.concatenate(self.pairs) if self.pairs else np.zeros((0, 2), dtype=np.int64)
        pi = np.searchsorted(self.gids, pairs)
        graph = coo_matrix((np.ones(len(pi), dtype=np.int8), (pi[:, 0], pi[:, 1])), shape=(n, n))
        _, comp = connected_components(graph, directed=False)
        open_ids = np.unique(self.carry_ids[self.carry_ids >= 0])
        done = ~np.isin(comp, np.unique(comp[np.searchsorted(self.gids, open_ids)]))
        if not done.any():
            return PolygonBatch.empty()
        out = _merge_groups(self.pending.take(done), comp[done], self.steps)
        self.n_merged += int((np.bincount(comp[done]) > 1).sum())
        keep = ~done
        self.pending, self.gids = self.pending.take(keep), self.gids[keep]
        kept_pairs = keep[pi].all(axis=1) if len(pi) else np.zeros(0, dtype=bool)
        self.pairs = [pairs[kept_pairs]] if kept_pairs.any() else []
        return out

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


def _merge_groups(p: PolygonBatch, comp: np.ndarray, steps: tuple[int, int]) -> PolygonBatch:
    """One polygon per group (``comp`` = group label of each piece) of complete pieces."""
    uniq, group = np.unique(comp, return_inverse=True)
    ng = len(uniq)
    cls, count, csum, cn, cmax = _group_stats(p, group, ng)
    size = np.bincount(group, minlength=ng)
    geoms = np.empty(ng, dtype=object)
    single = size[group] == 1
    geoms[group[single]] = p.geom[single]
    multi = ~single
    for c in np.unique(p.class_id[multi]):
        sel = multi & (p.class_id == c)
        _union_class(p.geom[sel], group[sel], count, geoms, steps)
    return PolygonBatch(cls, geoms, count, csum, cn, cmax)


def _union_class(pieces: np.ndarray, group: np.ndarray, count: np.ndarray, out: np.ndarray,
                 steps: tuple[int, int]) -> None:
    """Dissolve the pieces of several groups at once (one GEOS coverage union per group, in C); fill ``out``.

    Groups are bucketed by piece count into ``(groups, pieces)`` arrays padded with None, and
    ``coverage_union_all(axis=1)`` unions each row. Each result's area must equal its group's
    pixel count and be one polygon, else that group is dissolved alone.
    """
    dense = densify_on_borders(pieces, steps)
    order = np.argsort(group, kind="stable")
    groups, start, size = np.unique(group[order], return_index=True, return_counts=True)
    rank = np.arange(len(order)) - np.repeat(start, size)
    bucket = np.ceil(np.log2(size)).astype(np.int64)
    ok = np.zeros(len(groups), dtype=bool)
    for bk in np.unique(bucket):
        gi = np.flatnonzero(bucket == bk)
        table = np.full((len(gi), int(size[gi].max())), None, dtype=object)
        row = np.repeat(np.arange(len(gi)), size[gi])
        in_bucket = np.isin(group[order], groups[gi])  # pieces of these groups, group by group
        table[row, rank[in_bucket]] = dense[order[in_bucket]]
        try:
            merged = drop_collinear(shapely.coverage_union_all(table, axis=1))
        except shapely.errors.GEOSException as e:
            log.debug("coverage union failed (%s); dissolving group by group", e)
            continue
        good = (shapely.get_type_id(merged) == 3) & (shapely.area(merged) == count[groups[gi]])
        out[groups[gi[good]]] = merged[good]
        ok[gi[good]] = True
    for g in groups[~ok]:
        merged = union_pixel_polygons(list(pieces[group == g]))
        if len(merged) != 1:
            log.warning("a merged object split into %d parts; keeping the largest outline", len(merged))
            merged = merged[np.argsort(shapely.area(merged))[::-1]]
        out[g] = merged[0]


def _ring_coords(geoms: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(xy (m, 2), ring of each vertex (m,), polygon of each ring (r,))``; closing vertices dropped."""
    rings, poly_of = shapely.get_rings(geoms, return_index=True)
    xy, ring_of = shapely.get_coordinates(rings, return_index=True)
    last = np.r_[ring_of[1:] != ring_of[:-1], True]
    return xy[~last], ring_of[~last], poly_of


def _rebuild(xy: np.ndarray, ring_of: np.ndarray, poly_of: np.ndarray) -> np.ndarray:
    return shapely.polygons(shapely.linearrings(xy, indices=ring_of), indices=poly_of)


def _next_in_ring(ring_of: np.ndarray) -> np.ndarray:
    """Index of the next vertex of the same (cyclic) ring."""
    nxt = np.arange(1, len(ring_of) + 1)
    ends = np.flatnonzero(np.r_[ring_of[1:] != ring_of[:-1], True])
    starts = np.r_[0, ends[:-1] + 1]
    nxt[ends] = starts
    return nxt


def densify_on_borders(geoms: np.ndarray, steps: tuple[int, int]) -> np.ndarray:
    """Polygons with a vertex at every integer point of their edges on block borders (vectorised).

    Edges on the lines ``row = k * steps[0]`` or ``col = k * steps[1]`` are the only ones two
    pieces can share; GEOS's coverage union needs the same vertices on both sides.
    """
    xy, ring_of, poly_of = _ring_coords(geoms)
    d = xy[_next_in_ring(ring_of)] - xy
    on = ((d[:, 0] == 0) & (xy[:, 0] % steps[1] == 0)) | ((d[:, 1] == 0) & (xy[:, 1] % steps[0] == 0))
    n = np.where(on, np.abs(d).sum(axis=1), 1).astype(np.int64)
    seg = np.repeat(np.arange(len(xy)), n)
    k = np.arange(seg.size) - np.repeat(np.cumsum(n) - n, n)
    return _rebuild(xy[seg] + np.sign(d[seg]) * k[:, None], ring_of[seg], poly_of)


def drop_collinear(geoms: np.ndarray) -> np.ndarray:
    """Polygons without the vertices that lie on the straight line through their neighbours (vectorised)."""
    xy, ring_of, poly_of = _ring_coords(geoms)
    nxt = _next_in_ring(ring_of)
    prv = np.empty_like(nxt)
    prv[nxt] = np.arange(len(nxt))
    a, b = xy - xy[prv], xy[nxt] - xy
    keep = a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0] != 0
    return _rebuild(xy[keep], ring_of[keep], poly_of)


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


def _signed_area2(xy: np.ndarray) -> float:
    """Twice the signed area of a closed ring (positive: counter-clockwise, y up)."""
    x, y = xy[:-1, 0], xy[:-1, 1]
    x1, y1 = xy[1:, 0], xy[1:, 1]
    return float((x * y1 - x1 * y).sum())


def dissolve_pixel_polygons(geoms: Sequence[shapely.Polygon]) -> shapely.Polygon | None:
    """Union of pieces of one 4-connected pixel object by cancelling their shared unit edges.

    Linear in the total perimeter: every ring is oriented (shells counter-clockwise, holes
    clockwise), split into unit edges, and each edge whose reverse also occurs (a border shared by
    two pieces) is removed with its twin. The surviving stretches of the original rings are chained
    end to start into the rings of the union; where two stretches start at the same vertex (object
    pixels touching only diagonally) the right turn is taken, so the two non-object corners at
    that vertex end up in different rings that touch at the vertex (shell and hole, or two holes),
    the valid OGC form that GDAL's polygonize also produces. Collinear vertices are dropped.

    Returns:
        The union, or None when the pieces do not form one polygon this way (the caller falls
        back to GEOS).
    """
    closed, runs = _surviving_runs(geoms)
    if runs:
        chained = _chain_runs(runs)
        if chained is None:
            return None
        closed.extend(chained)
    shells, holes = [], []
    for r in closed:
        r = _ring_drop_collinear(r)
        if len(r) < 4:
            return None
        (shells if _signed_area2(r) > 0 else holes).append(r)
    if len(shells) != 1:
        return None
    return shapely.Polygon(shells[0].astype(np.float64), [h.astype(np.float64) for h in holes])


def _surviving_runs(geoms: Sequence[shapely.Polygon]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Unit edges of the oriented rings minus the shared ones: whole rings left and open runs."""
    from shapely.geometry.polygon import orient

    rings: list[np.ndarray] = []
    for g in geoms:
        g = orient(g, 1.0)
        for r in (g.exterior, *g.interiors):
            rings.append(_ring_unit_vertices(np.rint(np.asarray(r.coords)).astype(np.int64)))
    lens = np.array([len(r) - 1 for r in rings])
    offsets = np.concatenate([[0], np.cumsum(lens)])
    S = np.concatenate([r[:-1] for r in rings])
    E = np.concatenate([r[1:] for r in rings])
    D = E - S
    code = np.select([D[:, 0] == 1, D[:, 1] == 1, D[:, 0] == -1], [0, 1, 2], 3)
    lo = S.min(axis=0)
    span_y = int(S[:, 1].max() - lo[1]) + 2

    def key(P: np.ndarray, c: np.ndarray) -> np.ndarray:
        return ((P[:, 0] - lo[0]) * span_y + (P[:, 1] - lo[1])) * 4 + c

    cancel = np.isin(key(E, (code + 2) % 4), key(S, code))
    # vertices where two surviving edges start (object pixels touching diagonally): runs break there
    vkey = (S[:, 0] - lo[0]) * span_y + (S[:, 1] - lo[1])
    surv_keys = vkey[~cancel]
    uniq, cnt = np.unique(surv_keys, return_counts=True)
    pinch = np.zeros(len(S), dtype=bool)
    pinch[~cancel] = np.isin(surv_keys, uniq[cnt > 1])
    closed: list[np.ndarray] = []
    runs: list[np.ndarray] = []
    for i, r in enumerate(rings):
        c = cancel[offsets[i] : offsets[i + 1]]
        if c.all():
            continue
        brk = ~c & (np.roll(c, 1) | pinch[offsets[i] : offsets[i + 1]])
        if not brk.any():
            closed.append(r)
            continue
        n = len(c)
        s0 = int(np.flatnonzero(brk)[0])
        cc, bb = np.roll(c, -s0), np.roll(brk, -s0)
        verts = np.roll(r[:-1], -s0, axis=0)
        run_starts = np.flatnonzero(bb)
        run_ends = np.flatnonzero(~cc & (np.roll(cc, -1) | np.roll(bb, -1)))
        for a, b in zip(run_starts, run_ends, strict=True):
            runs.append(np.vstack([verts[a : b + 1], verts[(b + 1) % n][None]]))
    return closed, runs


def _chain_runs(runs: list[np.ndarray]) -> list[np.ndarray] | None:
    """Chain open runs end to start into closed rings (right turn at pinches); None if ambiguous."""
    closed: list[np.ndarray] = []
    by_start: dict[tuple[int, int], list[int]] = defaultdict(list)
    for j, v in enumerate(runs):
        by_start[(int(v[0, 0]), int(v[0, 1]))].append(j)
    nxt = np.full(len(runs), -1)
    for j, v in enumerate(runs):
        cands = by_start.get((int(v[-1, 0]), int(v[-1, 1])), [])
        if len(cands) == 1:
            nxt[j] = cands[0]
        elif len(cands) > 1:
            d_in = v[-1] - v[-2]
            right = [k for k in cands
                     if d_in[0] * (runs[k][1, 1] - runs[k][0, 1]) - d_in[1] * (runs[k][1, 0] - runs[k][0, 0]) < 0]
            if len(right) != 1:
                return None
            nxt[j] = right[0]
    if (nxt < 0).any() or len(set(nxt.tolist())) != len(runs):
        return None
    seen = np.zeros(len(runs), dtype=bool)
    for j in range(len(runs)):
        if seen[j]:
            continue
        parts = []
        k = j
        while not seen[k]:
            seen[k] = True
            parts.append(runs[k][:-1])
            k = int(nxt[k])
        if k != j:
            return None
        ring = np.vstack(parts)
        closed.append(np.vstack([ring, ring[:1]]))
    return closed


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


__all__ = ["BlockEdges", "BorderMerge", "PolygonBatch", "densify_on_borders", "dissolve_pixel_polygons", "drop_collinear",
           "union_pixel_polygons"]
