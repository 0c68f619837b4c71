"""Exact merge of polygon pieces across block borders (pixel-edge polygons, integer coordinates).

:class:`BorderMerge` keeps the pieces of objects that touch an internal block border, the pairs
of pieces that face each other across a border with the same class, and the piece ids on the
border to the next block row. After each block row, the groups of pieces (connected components
of the pairs graph, :func:`unetgeo.merge_util.components`) with no piece on that border are complete. Open
pieces are held as compact int32 rings (:class:`PieceBatch`, :class:`unetgeo.dissolve.Rings`).
All the complete groups are dissolved at once, chunk by chunk (:data:`CHUNK_VERTICES`), by
:func:`unetgeo.dissolve.dissolve_rings`, in numpy, without GEOS overlays: shared unit edges on
block-border lines cancel and the surviving stretches of ring are relinked (right turn where
pieces of one object touch diagonally). Each group's pixel count, confidence sum / count / max are
summed. Every merged polygon's area is checked against its pixel count; a group that fails the
check is dissolved alone by GEOS (:func:`union_pixel_polygons`).

A scene-spanning object's pieces stay open until the last block row, so the open vertices grow
with the scene. With a :class:`unetgeo.io.spill.SpillFile`, the vertices of every open batch of
at least :data:`SPILL_VERTICES` wait on disk between rows (:class:`SpilledRings`; the ring and
piece lengths and the statistics stay in memory) and are read back only when the batch is cut
or dissolved, one batch at a time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, fields, replace

import numpy as np
import shapely

from unetgeo.dissolve import Rings, dissolve_rings, dissolve_to_rings, piece_vertices
from unetgeo.grid import Window
from unetgeo.io.spill import SpillFile, SpillHandle
from unetgeo.merge_util import components, release_freed_memory

log = logging.getLogger(__name__)

#: Vertices dissolved at once (groups are batched up to this; a larger group goes alone).
CHUNK_VERTICES = 250_000
#: Open batches of at least this many vertices wait in the spill file between rows (smaller ones
#: cost more in calls than they hold, and small scenes then do no I/O at all).
SPILL_VERTICES = 10_000
#: Open pieces are kept in batches of about this many vertices (a row's blocks joined up to it).
PENDING_VERTICES = 65_536

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
        """Rows ``idx`` (int indices or bool mask), a batch of the same kind."""
        return type(self)(*(getattr(self, f.name)[idx] for f in fields(self)))

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
        cat = Rings.concat if isinstance(batches[0].geom, Rings) else np.concatenate
        return type(batches[0])(*((cat if f.name == "geom" else np.concatenate)([getattr(b, f.name) for b in batches])
                                  for f in fields(PolygonBatch)))


@dataclass
class SpilledRings:
    """:class:`unetgeo.dissolve.Rings` whose vertices wait in a spill file; the ring and piece
    lengths (one int a ring / piece) stay here, so chunks can be planned without a read.

    Attributes:
        spill: the file holding the vertices.
        handle: where ``xy`` lies in it.
        ring_len, piece_rings: as in :class:`unetgeo.dissolve.Rings`.
    """

    spill: SpillFile
    handle: SpillHandle
    ring_len: np.ndarray
    piece_rings: np.ndarray

    @staticmethod
    def of(rings: Rings, spill: SpillFile) -> SpilledRings:
        """``rings`` with their vertices written to ``spill`` (the caller lets go of ``rings``)."""
        return SpilledRings(spill, spill.put(rings.xy), rings.ring_len, rings.piece_rings)

    def __len__(self) -> int:
        return len(self.piece_rings)

    @property
    def n_vertices(self) -> int:
        return self.handle.shape[0]

    def piece_vertices(self) -> np.ndarray:
        """``(n,)`` int64 vertices of each polygon, as :meth:`Rings.piece_vertices` (from the lengths: no read)."""
        return piece_vertices(self.ring_len, self.piece_rings)

    def load(self) -> Rings:
        """The rings, read back; once: their place in the spill file is freed."""
        xy = self.spill.get(self.handle)
        self.spill.free(self.handle)
        return Rings(xy, self.ring_len, self.piece_rings)


@dataclass
class PieceBatch(PolygonBatch):
    """Pieces of objects open at a block border: a :class:`PolygonBatch` whose ``geom`` is
    :class:`unetgeo.dissolve.Rings` (8 bytes a vertex), since open pieces wait for the rows below
    (a scene-spanning object's pieces wait to the last row), or :class:`SpilledRings` while they
    wait on disk (:func:`_in_memory` brings them back). ``take`` takes a bool mask here, and
    rings in memory.
    """

    geom: Rings | SpilledRings

    @staticmethod
    def of(batch: PolygonBatch) -> PieceBatch:
        """``batch`` with its outlines as rings."""
        return PieceBatch(batch.class_id, Rings.from_polygons(batch.geom), batch.count, batch.conf_sum,
                          batch.conf_n, batch.conf_max)


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

    Memory: the pieces of the objects still open plus two border rows of ids, ``O(width)``; with a
    ``spill``, the open pieces' vertices (all but those of small batches) wait on disk between
    rows, and only their ring lengths and statistics stay in memory.

    Args:
        width: raster width in pixels.
        steps: block size ``(rows, cols)``; block borders lie on multiples of it.
        spill: where the open batches of at least :data:`SPILL_VERTICES` vertices wait (None:
            in memory). It must stay open until the last row's dissolve is done.
    """

    def __init__(self, width: int, steps: tuple[int, int], spill: SpillFile | None = None):
        self.width = width
        self.steps = steps
        self.spill = spill
        self.pending: list[PieceBatch] = []  # open pieces, batches of a row's blocks (never concatenated again)
        self.gids = np.zeros(0, dtype=np.int64)  # global id of each pending piece, ascending
        self._added: list[PieceBatch] = []  # this row's pieces, joined to pending at its end
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

    def add_block(self, win: Window, pieces: PieceBatch, edges: BlockEdges, height: int) -> None:
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
            self._added.append(pieces)

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

    def close_row(self) -> _RowDissolve | None:
        """End a block row; the dissolve of the objects it finished, to run on any thread (None: nothing finished).

        The bookkeeping is done here, so the next row's blocks can be added while the returned
        callable ``dissolve(emit, pool=None)`` runs elsewhere; it holds only the finished pieces
        and hands the merged polygons (pixel coordinates) to ``emit`` chunk by chunk, so that no
        more than one chunk of merged outlines is built at a time.
        """
        self.carry_ids, self.carry_cls = self._next_ids, self._next_cls
        if self._added:
            n_new = sum(len(b) for b in self._added)
            self.gids = np.concatenate([self.gids, np.arange(self.next_gid - n_new, self.next_gid)])
            self.pending.extend(_runs_of_blocks(self._added))  # one copy of this row's pieces only
            self._added = []
        n = sum(len(b) for b in self.pending)
        if not n:
            return None
        pairs = np.concatenate(self.pairs) if self.pairs else np.zeros((0, 2), dtype=np.int64)
        pi = np.searchsorted(self.gids, pairs)
        comp = components(n, pi[:, 0], pi[:, 1])
        open_ids = np.unique(self.carry_ids[self.carry_ids >= 0])
        done = ~np.isin(comp, np.unique(comp[np.searchsorted(self.gids, open_ids)]))
        if not done.any():
            self.pending = [self._park(b) for b in self.pending]
            return None
        keep = ~done
        finished, self.pending = _split_batches(self.pending, done, self._park)
        self.gids = self.gids[keep]
        kept_pairs = keep[pi].all(axis=1) if len(pi) else np.zeros(0, dtype=bool)
        self.pairs = [pairs[kept_pairs]] if kept_pairs.any() else []
        del pairs, pi
        self.n_merged += int((np.bincount(comp[done]) > 1).sum())
        return _RowDissolve(finished, comp[done], self.steps, self.spill)

    def _park(self, batch: PieceBatch) -> PieceBatch:
        """``batch`` as it waits for the next row: its vertices in the spill if it has one and the batch is large."""
        if self.spill is None or not isinstance(batch.geom, Rings) or batch.geom.n_vertices < SPILL_VERTICES:
            return batch
        return replace(batch, geom=SpilledRings.of(batch.geom, self.spill))

    def close(self) -> None:
        """Check that nothing is left open (the last block row has no border below it)."""
        n = sum(len(b) for b in self.pending)
        if n or self._added:
            raise RuntimeError(f"{n} polygon pieces left unmerged after the last block row")


def _runs_of_blocks(blocks: list[PieceBatch]) -> list[PieceBatch]:
    """A row's block batches joined left to right into batches of about :data:`PENDING_VERTICES` (the
    last may be smaller), so that a batch read back and split at a row's end holds a bounded part
    of the row, whatever the scene's width."""
    out: list[PieceBatch] = []
    run: list[PieceBatch] = []
    n = 0
    for b in blocks:
        run.append(b)
        n += b.geom.n_vertices
        if n >= PENDING_VERTICES:
            out.append(PieceBatch.concat(run))
            run, n = [], 0
    if run:
        out.append(PieceBatch.concat(run))
    return out


def _each_batch(batches: list[PieceBatch], per_piece: np.ndarray) -> Iterator[tuple[PieceBatch, np.ndarray]]:
    """``(batch, its part of per_piece)`` for each of ``batches`` in order, emptying the list as it goes
    (so each batch can be freed once the caller is done with it)."""
    off = 0
    batches.reverse()
    while batches:
        b = batches.pop()
        yield b, per_piece[off:off + len(b)]
        off += len(b)
        del b


def _in_memory(batch: PieceBatch) -> PieceBatch:
    """``batch`` with its rings in memory (read back from the spill file if they wait there, freeing their place)."""
    return replace(batch, geom=batch.geom.load()) if isinstance(batch.geom, SpilledRings) else batch


def _split_batches(batches: list[PieceBatch], sel: np.ndarray, park: Callable[[PieceBatch], PieceBatch]
                   ) -> tuple[list[PieceBatch], list[PieceBatch]]:
    """``(pieces where sel, park(the others))`` of ``batches`` (emptied here), batch by batch.

    A batch wholly on one side moves without a copy (a spilled one without a read); a split batch
    is read back if spilled and let go once both of its parts are taken, and its second part is
    parked at once, so no more than one batch is held twice and the parts that stay open never
    pile up in memory.
    """
    yes: list[PieceBatch] = []
    no: list[PieceBatch] = []
    for b, m in _each_batch(batches, sel):
        if m.all():
            yes.append(b)
        elif not m.any():
            no.append(park(b))
        else:
            b = _in_memory(b)
            yes.append(b.take(m))
            no.append(park(b.take(~m)))
    return yes, no


def _group_stats(batches: Sequence[PieceBatch], group: np.ndarray, n_groups: int) -> tuple[np.ndarray, ...]:
    """Per group: class, count, conf_sum, conf_n, conf_max (summed / maxed over its pieces, in ``batches``)."""

    def col(name: str) -> np.ndarray:
        return np.concatenate([getattr(b, name) for b in batches])

    cls = np.zeros(n_groups, dtype=np.int64)
    cls[group] = col("class_id")
    count = np.bincount(group, weights=col("count"), minlength=n_groups).astype(np.int64)
    csum = np.bincount(group, weights=col("conf_sum"), minlength=n_groups)
    cn = np.bincount(group, weights=col("conf_n"), minlength=n_groups).astype(np.int64)
    cmax = np.full(n_groups, -1, dtype=np.int64)
    np.maximum.at(cmax, group, col("conf_max"))
    return cls, count, csum, cn, cmax


class _RowDissolve:
    """The dissolve of the objects a block row finished: ``dissolve(emit, pool=None)``, once.

    It lets go of its pieces when called, so that :func:`_merge_groups` can free them batch by batch.
    """

    def __init__(self, pieces: list[PieceBatch], comp: np.ndarray, steps: tuple[int, int],
                 spill: SpillFile | None = None):
        self._pieces: list[PieceBatch] | None = pieces
        self._comp, self._steps, self._spill = comp, steps, spill

    def __call__(self, emit: Callable[[PolygonBatch], None], pool: Executor | None = None) -> None:
        pieces, self._pieces = self._pieces, None
        if pieces is None:
            raise RuntimeError("a block row's dissolve ran twice")
        _merge_groups(pieces, self._comp, self._steps, emit, pool, self._spill)


def _chunk_rings(held: list[PieceBatch], key: np.ndarray, spill: SpillFile | None = None
                 ) -> dict[int, list[Rings | SpilledRings]]:
    """The rings of the pieces of ``held`` (emptied here) by ``key`` (one int a piece, -1: dropped), batch by batch.

    With a ``spill``, each batch's parts of at least :data:`SPILL_VERTICES` go back to it at once,
    so that the chunks are sorted out through the file and only the chunk being dissolved is
    read back (the last row's dissolve takes every open piece of the scene).
    """
    out: dict[int, list[Rings | SpilledRings]] = {}
    for b, k in _each_batch(held, key):
        for v, rings in _in_memory(b).geom.split(k).items():
            parked = spill is not None and rings.n_vertices >= SPILL_VERTICES
            out.setdefault(v, []).append(SpilledRings.of(rings, spill) if parked else rings)
    return out


def _loaded(parts: list[Rings | SpilledRings]) -> Rings:
    """One :class:`Rings` of ``parts`` (emptied here), the spilled ones read back one at a time."""
    parts.reverse()
    loaded = []
    while parts:
        r = parts.pop()
        loaded.append(r.load() if isinstance(r, SpilledRings) else r)
    return Rings.concat(loaded)


def _merge_groups(held: list[PieceBatch], comp: np.ndarray, steps: tuple[int, int],
                  emit: Callable[[PieceBatch], None], pool: Executor | None = None,
                  spill: SpillFile | None = None) -> None:
    """One polygon per group (``comp`` = group label of each piece) of complete pieces, to ``emit``.

    ``held`` is a list of batches of pieces (in ``comp``'s order), emptied here so the pieces can
    be freed. The groups of one piece go first, then the others chunk by chunk
    (:data:`CHUNK_VERTICES`), smallest groups first. The batches are cut into one set of rings
    per chunk a batch at a time (a spilled batch read back just before it is cut), each batch
    let go once cut; with a ``spill`` the cut parts wait in it, so only the chunk being dissolved
    is in memory; and each chunk is let go once it is dissolved, so the largest object (dissolved
    last) shares the memory with as few other pieces as possible. With a ``pool`` and no more
    than two chunks' vertices in all, the groups are split in two halves of about equal vertex
    count, dissolved side by side (the temporaries stay within one chunk's).
    """
    uniq, group = np.unique(comp, return_inverse=True)
    ng = len(uniq)
    stats = _group_stats(held, group, ng)
    size = np.bincount(group, minlength=ng)
    single = size[group] == 1
    multi = ~single
    pv = np.concatenate([b.geom.piece_vertices() for b in held])
    nv = np.bincount(group[multi], weights=pv[multi], minlength=ng)
    del pv
    chunk = np.zeros(ng, dtype=np.int64)
    many = np.flatnonzero(size > 1)
    many = many[np.argsort(nv[many], kind="stable")]  # smallest first
    chunk[many] = np.cumsum(nv[many]) // CHUNK_VERTICES  # bounds the temporaries of one dissolve
    halves = pool is not None and len(many) > 1 and nv.sum() <= 2 * CHUNK_VERTICES
    if halves:
        cum = np.cumsum(nv[many])  # two halves by vertices; the largest group ends the second
        chunk[many] = cum > cum[-1] / 2
    key = np.where(single, 0, chunk[group] + 1)  # 0: the single pieces, c + 1: chunk c
    rings = _chunk_rings(held, key, spill)
    if 0 in rings:
        g1 = group[single]
        emit(PieceBatch(*(a[g1] for a in stats[:1]), _loaded(rings.pop(0)), *(a[g1] for a in stats[1:])))
    parts = [(group[key == k], k) for k in sorted(rings, reverse=True)]  # popped from the end: smallest first

    def chunk_job(g: np.ndarray, k: int) -> list:
        return [(g, _loaded(rings.pop(k)))]

    if halves:
        futures = []
        while parts:
            futures.append(pool.submit(_dissolve_chunk, chunk_job(*parts.pop()), size, stats, steps))
        for f in futures:
            emit(f.result())
        return
    while parts:
        emit(_dissolve_chunk(chunk_job(*parts.pop()), size, stats, steps))
        release_freed_memory()


def _dissolve_chunk(held: list[tuple[np.ndarray, Rings]], size: np.ndarray, stats: tuple[np.ndarray, ...],
                    steps: tuple[int, int]) -> PieceBatch:
    """The merged objects (as rings) of the groups of one chunk's pieces, GEOS fallback per refused group; frees the pieces.

    Args:
        held: a list of ``(group of each piece, their rings)``, emptied here.
    """
    group, p = held.pop()
    gids, local = np.unique(group, return_inverse=True)
    merged, ok = dissolve_to_rings(p, local, stats[1][gids], steps)
    fallback = []
    for i in np.flatnonzero(~ok):
        log.debug("batched edge dissolve refused a group of %d pieces; dissolving it alone", size[gids[i]])
        parts = union_pixel_polygons(list(p.take(local == i).to_polygons()))
        if len(parts) != 1:
            log.warning("a merged object split into %d parts; keeping the largest outline", len(parts))
            parts = parts[np.argsort(shapely.area(parts))[::-1]]
        fallback.append(parts[0])
    del p
    order = np.r_[gids[ok], gids[~ok]]
    rings = Rings.concat([merged, Rings.from_polygons(np.array(fallback, dtype=object))])
    return PieceBatch(stats[0][order], rings, *(a[order] for a in stats[1:]))


def dissolve_groups(pieces: np.ndarray, group: np.ndarray, count: np.ndarray, steps: tuple[int, int]
                    ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`unetgeo.dissolve.dissolve_rings` of shapely pieces (``(n,)`` pixel-edge polygons).

    Returns:
        ``(polygons (k,), ok (k,) bool)``: ok where the group came out as one polygon whose area
        equals its pixel count (the others are None, for the caller's fallback).
    """
    return dissolve_rings(Rings.from_polygons(pieces), group, count, steps)


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
