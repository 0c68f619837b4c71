"""Vectorize: class raster to polygons (GeoPackage, optional GeoParquet and Shapefile), block by block.

Algorithm of :func:`vectorize` (memory bounded by the blocks in flight plus the pieces of the
objects crossing the current block-row border, independent of the scene height):

1. The class raster is cut into blocks of ``block_px`` (rounded up to its internal tiles). Worker
   threads (``n_threads``) each read a block and polygonize its ``class + 1`` image (0 = nodata,
   the raster's mask or a skipped class; never a polygon) in *pixel* coordinates, which are exact
   integers. A block of smooth objects (few runs of equal class per row) is traced from its row
   runs in numpy (:func:`unetgeo.runs.polygonize_runs`); a fragmented one goes to GDAL's
   polygonize, GIL released (:func:`unetgeo.io.vector.polygonize_labels`). A polygon's area is its
   pixel count. With a confidence raster, the confidence sum / count / max of every polygon are
   summed from its pixels (``np.bincount``, so merged statistics are exact).
2. The main thread takes the blocks in order. A component that touches no internal block border
   is complete; the others go to :class:`unetgeo.merge.BorderMerge`, which joins the pieces that
   face each other across a border and, after each block row, dissolves the groups that can no
   longer grow, all in one numpy edge-cancelling pass (exact: the merged area must equal the
   pixel count) that runs on the worker pool while the next row's blocks come in.
3. Complete polygons are buffered and written in batches (:class:`_Sink`): to map coordinates,
   area from the pixel count (geodesic for geographic CRSs), ``min_area_m2`` filter, holes below
   ``fill_holes_m2`` filled, optional coverage simplification that keeps shared borders, then one
   Arrow table per class to the GeoPackage (GPKG 1.2), the GeoParquet file and the Shapefile.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import shapely

from unetgeo.area import AreaModel
from unetgeo.dissolve import Rings
from unetgeo.errors import InputError
from unetgeo.grid import Grid, Window, align_up, same_grid
from unetgeo.io.cog import read_class_info, read_tags
from unetgeo.io.naming import stem
from unetgeo.io.scene import (
    GDAL_CACHE_MIB,
    STREAM_CACHE_MIB,
    SceneInfo,
    SceneReader,
    crs_equal,
    open_scene,
)
from unetgeo.io.spill import SpillFile
from unetgeo.io.vector import (
    PolygonWriter,
    arrow_column,
    arrow_repeated,
    arrow_wkb,
    polygonize_labels,
    raw_times,
)
from unetgeo.io.wkb import rings_wkb, stream_polygon_wkb
from unetgeo.merge import BlockEdges, BorderMerge, PieceBatch, PolygonBatch, release_freed_memory
from unetgeo.merge_util import bounded_heap
from unetgeo.parallel import run_on_each_thread
from unetgeo.runs import RunPolygons, polygonize_runs, run_density

log = logging.getLogger(__name__)

NODATA = 255
#: Vertices buffered before a write, whatever ``batch_size`` says (a few huge polygons are a batch too).
SINK_VERTICES = 250_000
#: A merged object with more vertices is written alone, its WKB spooled to disk in pieces (not held by GDAL).
HUGE_VERTICES = 50_000
#: Runs per pixel (sampled) above which a block goes to GDAL rather than the run tracer.
RUNS_MAX_DENSITY = 0.012
#: Attribute schema of every polygon (``geometry`` is WKB). Times are UTC.
FIELDS = pa.schema([
    ("class_id", pa.int32()),
    ("class_name", pa.string()),
    ("area_m2", pa.float64()),  # pixel area (plus filled holes), before simplification
    ("perimeter_m", pa.float64()),  # shell + holes, as written
    ("mean_conf", pa.float64()),  # mean confidence in percent (0-100); null without a confidence raster
    ("max_conf", pa.int32()),  # largest confidence in percent; null without a confidence raster
    ("scene_id", pa.string()),
    ("model_id", pa.string()),
    ("acquired", pa.timestamp("ms", tz="UTC")),  # scene acquisition time, null when unknown
    ("created", pa.timestamp("ms", tz="UTC")),  # when this file was written
])


@dataclass(frozen=True)
class VectorizeResult:
    """What :func:`vectorize` wrote.

    Attributes:
        out_uri: the GeoPackage (one layer per class).
        shapefile_uri: the Shapefile (all classes) or None.
        counts: polygons written per class name.
        area_km2: area of the written polygons per class name, km² (before simplification).
        seconds: wall time.
        n_blocks: blocks read.
        n_merged: polygons assembled from pieces in several blocks.
        parquet_uri: the GeoParquet file (all classes) or None.
    """

    out_uri: str
    shapefile_uri: str | None
    counts: dict[str, int]
    area_km2: dict[str, float]
    seconds: float
    n_blocks: int = 0
    n_merged: int = 0
    parquet_uri: str | None = None


# -- block labelling ------------------------------------------------------------------------------


def label_block(
    cls: np.ndarray, mask: np.ndarray, conf: np.ndarray | None = None, conf_valid: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """4-connected components of every class in a block.

    Args:
        cls: ``(h, w)`` integer class ids.
        mask: ``(h, w)`` bool, pixels that may form polygons.
        conf: optional ``(h, w)`` confidence (uint8 percent, 255 nodata).
        conf_valid: optional ``(h, w)`` bool validity of ``conf``.

    Returns:
        ``labels (h, w) int32`` (0 = none, components 1..n), ``comp_class (n+1,)`` class of each
        component, ``counts (n+1,)`` pixels, ``conf_sum (n+1,)`` float64, ``conf_n (n+1,)`` int64,
        ``conf_max (n+1,)`` int64 (-1 = no valid confidence).
    """
    from scipy import ndimage  # only the confidence path labels (a 0.2 s import)

    h, w = cls.shape
    labels = np.zeros((h, w), dtype=np.int32)
    present = np.flatnonzero(np.bincount(cls[mask].ravel())) if mask.any() else np.zeros(0, dtype=np.int64)
    ks = np.zeros(len(present), dtype=np.int64)
    lab = np.empty((h, w), dtype=np.int32)
    for i, c in enumerate(present):
        ks[i] = ndimage.label(mask & (cls == c), output=lab)
        labels += lab  # classes are disjoint: labels of each class, offset below
    n = int(ks.sum())
    if n:
        offset = np.zeros(int(present.max()) + 1, dtype=np.int32)
        offset[present] = np.cumsum(ks) - ks
        inside = labels > 0
        labels[inside] += offset[cls[inside]]
    comp_class = np.concatenate([[0], np.repeat(present.astype(np.int64), ks)])
    counts = np.bincount(labels.ravel(), minlength=n + 1)
    return labels, comp_class, counts, *confidence_stats(labels, n + 1, conf, conf_valid)


def confidence_stats(labels: np.ndarray, n: int, conf: np.ndarray | None, conf_valid: np.ndarray | None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per label ``0..n-1`` (0 = none): ``(conf_sum float64, conf_n int64, conf_max int64, -1 = none)``.

    Args:
        labels: ``(h, w)`` or flat integer labels; conf: the same shape (uint8 percent, 255 nodata) or None.
    """
    conf_max = np.full(n, -1, dtype=np.int64)
    if conf is None:
        return np.zeros(n), np.zeros(n, dtype=np.int64), conf_max
    flat = labels.ravel()
    ok = (flat > 0) & (conf.ravel() != NODATA)
    if conf_valid is not None:
        ok &= conf_valid.ravel()
    lab_ok, val_ok = flat[ok], conf.ravel()[ok]
    conf_sum = np.bincount(lab_ok, weights=val_ok.astype(np.float64), minlength=n)
    conf_n = np.bincount(lab_ok, minlength=n)
    np.maximum.at(conf_max, lab_ok, val_ok.astype(np.int64))
    return conf_sum, conf_n, conf_max


@dataclass(frozen=True)
class _Job:
    """What every block worker needs (read-only)."""

    cr: SceneReader
    fr: SceneReader | None
    dtype: str
    keep: np.ndarray | None
    height: int
    width: int

    def close_thread(self) -> None:
        """Close the datasets the calling thread opened."""
        self.cr.close_thread()
        if self.fr is not None:
            self.fr.close_thread()


def _block(job: _Job, win: Window) -> tuple[Window, PolygonBatch, PieceBatch, BlockEdges]:
    """Read, label and polygonize one block: ``(win, complete polygons, border pieces, edges)``."""
    in_place = job.fr is None and job.dtype == "uint8"  # the usual case: no copy of the block
    data, valid = job.cr.read(win, bands=[1], own_nodata=NODATA if in_place else None)
    cls = data[0]
    sides = _side_classes(cls)
    conf = job.fr.read(win, bands=[1]) if job.fr is not None else None
    if in_place:
        coded, mask = _coded_in_place(cls, valid, job.keep), None
        del data, cls, valid
    else:
        mask = valid & (cls >= 0) if cls.dtype.kind == "i" else valid.copy()
        if job.dtype == "uint8":
            mask &= cls != NODATA
        if job.keep is not None:
            mask &= np.isin(cls, job.keep)
        coded = _coded(cls, mask)
    rp = polygonize_runs(coded, win.row_off, win.col_off) if _use_runs(coded) else None
    if rp is not None:
        return _block_from_runs(job, win, sides, rp, conf)
    if conf is None:
        return _block_by_class_gdal(job, win, sides, coded)
    cd, conf_valid = conf
    labels, comp_class, counts, csum, cn, cmax = label_block(cls, mask, cd[0], conf_valid)
    touch = np.zeros(len(counts), dtype=bool)
    if win.row_off > 0:
        touch[labels[0]] = True
    if win.row_off + win.height < job.height:
        touch[labels[-1]] = True
    if win.col_off > 0:
        touch[labels[:, 0]] = True
    if win.col_off + win.width < job.width:
        touch[labels[:, -1]] = True
    touch[0] = False
    polys, ids = polygonize_labels(labels, win.row_off, win.col_off)
    allp = PolygonBatch(comp_class[ids], polys, counts[ids], csum[ids], cn[ids], cmax[ids])
    is_piece = touch[ids]
    piece_of = np.full(len(counts), -1, dtype=np.int64)
    piece_of[ids[is_piece]] = np.arange(int(is_piece.sum()))
    edges = BlockEdges(piece_of[labels[0]], sides[0], piece_of[labels[-1]], sides[1],
                       piece_of[labels[:, 0]], sides[2], piece_of[labels[:, -1]], sides[3])
    return win, allp.take(~is_piece), PieceBatch.of(allp.take(is_piece)), edges


def _line_pieces(coded: np.ndarray, centres: np.ndarray, tree: shapely.STRtree) -> np.ndarray:
    """Index (into the tree's polygons) of the polygon holding each pixel of a line (-1: none).

    Args:
        coded: ``(k,)`` class + 1 of the line's pixels, 0 = no polygon.
        centres: ``(k, 2)`` their pixel-centre ``(col, row)`` coordinates.
        tree: the block's border-touching polygons (each run of equal values lies in one).
    """
    change = np.r_[True, coded[1:] != coded[:-1]]
    run = np.cumsum(change) - 1
    starts = np.flatnonzero(change)
    ask = starts[coded[starts] > 0]
    run_piece = np.full(len(starts), -1, dtype=np.int64)
    if len(ask):
        src, dst = tree.query(shapely.points(centres[ask]), predicate="within")
        run_piece[run[ask[src]]] = dst
    return run_piece[run]


def _side_classes(cls: np.ndarray) -> tuple[np.ndarray, ...]:
    """Classes (int64) of a block's top, bottom, left and right pixels (only these are widened)."""
    return tuple(np.asarray(a, dtype=np.int64) for a in (cls[0], cls[-1], cls[:, 0], cls[:, -1]))


def _coded_in_place(cls: np.ndarray, valid: np.ndarray | None, keep: np.ndarray | None) -> np.ndarray:
    """:func:`_coded` of a uint8 class block, written over ``cls``: its nodata 255 wraps to 0 (no
    temporaries of the block's size but the ``keep`` test); ``valid`` None: every other pixel is valid."""
    kept = np.isin(cls, keep) if keep is not None else None
    np.add(cls, np.uint8(1), out=cls)
    if valid is not None:
        np.multiply(cls, valid, out=cls)
    if kept is not None:
        np.multiply(cls, kept, out=cls)
    return cls


def _coded(cls: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Class + 1 where ``mask``, else 0 (uint8 stays uint8: its 255 is nodata, never in ``mask``)."""
    coded = cls + np.uint8(1) if cls.dtype == np.uint8 else cls.astype(np.int32) + 1
    if not mask.all():
        coded[~mask] = 0
    return coded


def _use_runs(coded: np.ndarray) -> bool:
    """Trace this block from its row runs (else GDAL): ``UNETGEO_RUNS`` = auto (default), yes or no.

    Auto takes the runs where they are sparse (smooth objects), GDAL where the block is so
    fragmented that GDAL's per-pixel scan costs less than the per-run numpy passes.
    """
    how = os.environ.get("UNETGEO_RUNS", "auto")
    if how in ("yes", "no"):
        return how == "yes"
    return run_density(coded) <= RUNS_MAX_DENSITY


def _block_from_runs(job: _Job, win: Window, cs: tuple[np.ndarray, ...], rp: RunPolygons,
                     conf: tuple[np.ndarray, np.ndarray] | None) -> tuple[Window, PolygonBatch, PieceBatch, BlockEdges]:
    """:func:`_block` from the run tracer's polygons (:func:`unetgeo.runs.polygonize_runs` of ``class + 1``);
    ``cs``: the classes on the block's four sides (:func:`_side_classes`).

    The tracer says which polygon holds every border pixel, and its pixel counts are the areas;
    with a confidence raster ``conf`` (``(data, valid)``), the per-polygon statistics come from
    its pixel map of polygon ids.
    """
    h, n = win.height, len(rp.rings)
    r0, c0, r1, c1 = win.row_off, win.col_off, win.row_off + win.height, win.col_off + win.width
    lines = (rp.row_pixels(0), rp.row_pixels(h - 1), rp.col_pixels(True, h), rp.col_pixels(False, h))
    inner = (r0 > 0, r1 < job.height, c0 > 0, c1 < job.width)
    touch = np.zeros(n + 1, dtype=bool)  # the extra last slot takes the -1 (no polygon) pixels
    for line, on in zip(lines, inner, strict=True):
        if on:
            touch[line] = True
    touch = touch[:n]
    piece_of = np.full(n + 1, -1, dtype=np.int64)
    piece_of[:n][touch] = np.arange(int(touch.sum()))
    sides = [piece_of[line] if on else np.full(len(line), -1, dtype=np.int64)
             for line, on in zip(lines, inner, strict=True)]
    if conf is None:
        stats = (np.zeros(n), np.zeros(n, dtype=np.int64), np.full(n, -1, dtype=np.int64))
    else:
        ids = rp.pixel_polygons(h * win.width) + 1  # 0 = no polygon
        stats = tuple(a[1:] for a in confidence_stats(ids, n + 1, conf[0][0], conf[1]))
    cols = (rp.counts, *stats)
    whole = PolygonBatch(rp.values[~touch] - 1, rp.rings.take(~touch).to_polygons(), *(a[~touch] for a in cols))
    pieces = PieceBatch(rp.values[touch] - 1, rp.rings.take(touch), *(a[touch] for a in cols))
    edges = BlockEdges(sides[0], cs[0], sides[1], cs[1], sides[2], cs[2], sides[3], cs[3])
    return win, whole, pieces, edges


def _block_by_class_gdal(job: _Job, win: Window, cs: tuple[np.ndarray, ...], coded: np.ndarray
                         ) -> tuple[Window, PolygonBatch, PieceBatch, BlockEdges]:
    """:func:`_block` without a confidence raster, through GDAL polygonize of ``coded`` (no ``ndimage.label``);
    ``cs``: the classes on the block's four sides (:func:`_side_classes`).

    A polygon's pixel count is its area (exact), it touches a block border where its bounds do,
    and the piece on each border pixel is found by a point-in-polygon query of one pixel per run
    of equal class.
    """
    polys, vals = polygonize_labels(coded, win.row_off, win.col_off)
    n = len(polys)
    r0, c0, r1, c1 = win.row_off, win.col_off, win.row_off + win.height, win.col_off + win.width
    x0, y0, x1, y1 = shapely.bounds(polys).T if n else np.zeros((4, 0))
    touch = ((r0 > 0) & (y0 == r0)) | ((r1 < job.height) & (y1 == r1)) | ((c0 > 0) & (x0 == c0)) | (
        (c1 < job.width) & (x1 == c1))
    i64 = np.zeros(n, dtype=np.int64)
    allp = PolygonBatch(vals - 1, polys, np.rint(shapely.area(polys)).astype(np.int64), np.zeros(n), i64,
                        np.full(n, -1, dtype=np.int64))
    tree = shapely.STRtree(polys[touch])
    xs, ys = np.arange(c0, c1) + 0.5, np.arange(r0, r1) + 0.5
    sides = []
    for line, x, y, inner in ((coded[0], xs, r0 + 0.5, r0 > 0), (coded[-1], xs, r1 - 0.5, r1 < job.height),
                              (coded[:, 0], c0 + 0.5, ys, c0 > 0), (coded[:, -1], c1 - 0.5, ys, c1 < job.width)):
        centres = np.column_stack(np.broadcast_arrays(x, y))
        sides.append(_line_pieces(line, centres, tree) if inner else np.full(len(line), -1, dtype=np.int64))
    edges = BlockEdges(sides[0], cs[0], sides[1], cs[1], sides[2], cs[2], sides[3], cs[3])
    return win, allp.take(~touch), PieceBatch.of(allp.take(touch)), edges


# -- output ---------------------------------------------------------------------------------------


def fill_holes(pixel_geoms: np.ndarray, max_hole_px: float) -> np.ndarray:
    """Polygons without the holes smaller than ``max_hole_px`` pixels (pixel coordinates, vectorised)."""
    if max_hole_px <= 0 or not len(pixel_geoms) or not (shapely.get_num_interior_rings(pixel_geoms) > 0).any():
        return pixel_geoms
    rings, idx = shapely.get_rings(pixel_geoms, return_index=True)
    first = np.r_[True, idx[1:] != idx[:-1]]
    keep = first | (shapely.area(shapely.polygons(rings)) >= max_hole_px)
    return shapely.polygons(rings[keep], indices=idx[keep])


class _Sink:
    """Buffers finished polygons (pixel coordinates) and writes them per class in batches."""

    def __init__(self, writer: PolygonWriter, area: AreaModel, names: dict[int, str], *, min_area_m2: float,
                 simplify_m: float, fill_holes_m2: float, meta: dict[str, Any], batch: int):
        self.writer = writer
        self.area = area
        self.names = names
        self.min_area_m2 = min_area_m2
        self.simplify_tol = area.tolerance(simplify_m) if simplify_m > 0 else 0.0
        self.fill_holes_px = fill_holes_m2 / area.pixel_m2 if fill_holes_m2 > 0 else 0.0
        self.meta = meta
        self.batch = batch
        self.buf: list[PolygonBatch] = []
        self.n_buffered = 0
        self.n_vertices = 0
        self.counts: dict[int, int] = {}
        self.area_m2: dict[int, float] = {}

    def name(self, class_id: int) -> str:
        """Layer / class name of ``class_id``."""
        return self.names.get(int(class_id), f"class_{class_id}")

    def add(self, polys: PolygonBatch) -> None:
        """Buffer ``polys`` (taken over: their outlines are let go when written); write when ``batch``
        polygons or :data:`SINK_VERTICES` vertices are buffered.

        Merged objects come as :class:`unetgeo.merge.PieceBatch` (int32 rings): without hole
        filling, simplification or a geographic CRS they are encoded straight from the rings
        (:func:`unetgeo.io.wkb.rings_wkb`), never as GEOS geometries.
        """
        if len(polys):
            self.buf.append(polys)
            self.n_buffered += len(polys)
            g = polys.geom
            self.n_vertices += (g.n_vertices + len(g.ring_len) if isinstance(g, Rings)
                                else int(shapely.get_num_coordinates(g).sum()))
            if self.n_buffered >= self.batch or self.n_vertices >= SINK_VERTICES:
                self.flush()

    def flush(self) -> None:
        """Write every buffered polygon."""
        buf, self.buf, self.n_buffered, self.n_vertices = self.buf, [], 0, 0
        direct = not (self.fill_holes_px > 0 or self.simplify_tol > 0 or self.area.geographic)
        rings = [b for b in buf if isinstance(b.geom, Rings)]
        geos = [b for b in buf if not isinstance(b.geom, Rings)]
        del buf
        if not direct:  # these need GEOS geometries
            geos += [PolygonBatch(b.class_id, b.geom.to_polygons(), b.count, b.conf_sum, b.conf_n, b.conf_max)
                     for b in rings]
            rings = []
        self._flush_geos(geos)
        if rings:
            self._flush_rings(rings)

    def _flush_geos(self, buf: list[PolygonBatch]) -> None:
        """Write shapely polygons (pixel coordinates).

        Each outline is held once at a time where it can be: the pixel outlines are let go once
        in map coordinates, and the map outlines of each table once it is encoded; a polygon of
        more than a tenth of :data:`SINK_VERTICES` vertices goes in a table of its own, whose WKB
        is not copied again.
        """
        p = PolygonBatch.concat(buf)
        if not len(p):
            return
        geoms = p.geom
        if self.fill_holes_px > 0:
            geoms = fill_holes(geoms, self.fill_holes_px)
        mg = self.area.to_map(geoms)
        count = shapely.area(geoms) if self.fill_holes_px > 0 else p.count
        del geoms
        for b in [p, *buf]:
            b.geom[:] = None
        del buf
        area = self.area.polygon_areas_m2(count, mg)
        keep = area >= self.min_area_m2
        if not keep.all():
            p, mg, area = p.take(keep), mg[keep], area[keep]
        if not len(p):
            return
        if self.simplify_tol > 0:  # shared borders stay shared; edges to other batches stay exact
            mg = shapely.coverage_simplify(mg, self.simplify_tol, simplify_boundary=False)
        cols = {"area_m2": area, "perimeter_m": self.area.perimeters_m(mg), **_confidence(p)}
        big = shapely.get_num_coordinates(mg) > SINK_VERTICES // 10
        order = np.lexsort((np.where(big, np.arange(len(mg)), -1), p.class_id))
        table_of = np.r_[True, (p.class_id[order][1:] != p.class_id[order][:-1]) | big[order][1:]]
        for sel in np.split(order, np.flatnonzero(table_of)[1:]):
            wkb, bounds = arrow_wkb(mg[sel]), shapely.bounds(mg[sel])
            mg[sel] = None  # encoded: only the WKB is held while GDAL writes it
            self._write(int(p.class_id[sel[0]]), {k: v[sel] for k, v in cols.items()}, wkb, bounds)

    def _flush_rings(self, buf: list[PolygonBatch]) -> None:
        """Write merged objects held as rings (projected CRS, nothing to fill or simplify).

        The rings are split by class and the batches' own rings let go first, so that while GDAL
        writes a class only its WKB and the rings of the classes still to come are held.
        """
        p = PolygonBatch.concat(buf)
        area = self.area.polygon_areas_m2(p.count, None)
        keep = area >= self.min_area_m2
        cids = np.unique(p.class_id[keep]).tolist()
        one = len(cids) == 1 and keep.all()
        parts = [(cid, q, q.geom) for cid in cids for q in [p if one else p.take(keep & (p.class_id == cid))]]
        for b in [p, *buf, *(q for _, q, _ in parts)]:
            b.geom = Rings.empty()
        del p, buf
        parts.reverse()
        while parts:
            cid, q, r = parts.pop()
            cols = {"area_m2": self.area.polygon_areas_m2(q.count, None), **_confidence(q)}
            huge = r.piece_vertices() > HUGE_VERTICES
            if huge.any():
                self._write_huge(cid, cols, r, huge)
                r, cols = r.take(~huge), {k: v[~huge] for k, v in cols.items()}
                if not len(r):
                    continue
            wkb, perimeter, bounds = rings_wkb(r.xy, r.ring_len, r.piece_rings, self.area.grid.transform)
            del r
            self._write(cid, {**cols, "perimeter_m": perimeter * self.area.unit_m}, wkb, bounds)

    def _write_huge(self, cid: int, cols: dict[str, np.ndarray], r: Rings, huge: np.ndarray) -> None:
        """Write the polygons of ``r`` where ``huge`` one by one, their WKB encoded in pieces into the writer's spool."""
        first_ring = np.cumsum(r.piece_rings) - r.piece_rings
        rstart = np.r_[0, np.cumsum(r.ring_len)]
        transform = self.area.grid.transform
        for i in np.flatnonzero(huge).tolist():
            r0, r1 = int(first_ring[i]), int(first_ring[i] + r.piece_rings[i])
            xy, ring_len = r.xy[rstart[r0]:rstart[r1]], r.ring_len[r0:r1]
            handle, (_, perimeter, bounds) = self.writer.spool(
                lambda write, xy=xy, ring_len=ring_len: stream_polygon_wkb(write, xy, ring_len, transform))
            c = {k: v[i:i + 1] for k, v in cols.items()}
            self._write(cid, {**c, "perimeter_m": np.array([perimeter * self.area.unit_m])}, None, bounds, handle)

    def _write(self, cid: int, c: dict[str, np.ndarray], wkb: Any, bounds: np.ndarray,
               spooled: tuple[int, int] | None = None) -> None:
        """Append one table of class ``cid`` (columns ``c``, WKB geometries with their ``(n, 4)`` bounds) to the outputs.

        With ``spooled`` (and ``wkb`` None), the one polygon's WKB lies in the writer's spool
        (:meth:`unetgeo.io.vector.PolygonWriter.write_spooled`).
        """
        n = len(c["area_m2"])
        has_conf = c["max_conf"] >= 0
        arrays = {
            "class_id": arrow_column(np.full(n, cid, dtype=np.int32)),
            "class_name": arrow_repeated(self.name(cid), n),
            "area_m2": arrow_column(c["area_m2"].astype(np.float64)),
            "perimeter_m": arrow_column(c["perimeter_m"].astype(np.float64)),
            "mean_conf": arrow_column(c["mean_conf"].astype(np.float64), has_conf),
            "max_conf": arrow_column(c["max_conf"].astype(np.int32), has_conf),
            "scene_id": arrow_repeated(self.meta["scene_id"], n),
            "model_id": arrow_repeated(self.meta["model_id"], n),
            "acquired": raw_times(n, self.meta["acquired"]),  # int64 ms: see PolygonWriter.write
            "created": raw_times(n, self.meta["created"]),
        }
        if spooled is not None:
            self.writer.write_spooled(self.name(cid), pa.table(arrays), spooled, bounds)
        else:
            table = pa.table({**arrays, "geometry": wkb})
            del wkb
            self.writer.write(self.name(cid), table, bounds)
        self.counts[cid] = self.counts.get(cid, 0) + n
        self.area_m2[cid] = self.area_m2.get(cid, 0.0) + float(c["area_m2"].sum())


def _confidence(p: PolygonBatch) -> dict[str, np.ndarray]:
    """``mean_conf`` (NaN without values) and ``max_conf`` columns of ``p``."""
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.where(p.conf_n > 0, p.conf_sum / np.maximum(p.conf_n, 1), np.nan)
    return {"mean_conf": mean_conf, "max_conf": p.conf_max}


# -- the stage ------------------------------------------------------------------------------------


def _block_steps(info: SceneInfo, block_px: int) -> tuple[int, int]:
    """Block size ``(rows, cols)``: ``block_px`` rounded up to the raster's internal tiles."""
    by, bx = info.block_shape
    if by == bx and bx < info.grid.width:
        step = align_up(block_px, bx)
        return step, step
    return block_px, block_px


def _read_cache_mib(infos: Sequence[SceneInfo], steps: tuple[int, int]) -> int:
    """GDAL block cache for reading ``infos`` in blocks of ``steps`` (GDAL has one cache per process):
    :data:`STREAM_CACHE_MIB` where each of every raster's own tiles lies in one block (read once),
    else :data:`GDAL_CACHE_MIB` (strips wider than a block are decoded once per block beside them
    unless the cache keeps them)."""
    def inside(info: SceneInfo) -> bool:
        (by, bx), h, w = info.block_shape, info.grid.height, info.grid.width
        return (steps[0] % by == 0 or steps[0] >= h) and (steps[1] % bx == 0 or steps[1] >= w)

    return STREAM_CACHE_MIB if all(inside(i) for i in infos) else GDAL_CACHE_MIB


def _blocks(height: int, width: int, step_y: int, step_x: int) -> Iterator[tuple[bool, Window]]:
    """``(first block of its row, window)`` row by row, left to right."""
    for r in range(0, height, step_y):
        for c in range(0, width, step_x):
            yield c == 0, Window(r, c, min(step_y, height - r), min(step_x, width - c))


def _sibling(out_uri: str, ext: str) -> str:
    base = out_uri[: -len(".gpkg")] if out_uri.lower().endswith(".gpkg") else out_uri
    return base + ext


def _acquired(value: str | datetime | None, source: str) -> datetime | None:
    """Acquisition time as an aware UTC datetime (naive times are taken as UTC)."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise InputError(f"{source}: acquired={value!r} is not an ISO 8601 time; use e.g. 2024-05-01T10:30:00Z") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _check_inputs(classes_uri: str, info: SceneInfo, min_area_m2: float, simplify_m: float,
                  fill_holes_m2: float) -> None:
    if np.dtype(info.dtype).kind not in "ui":
        raise InputError(f"{classes_uri}: class rasters hold integer class ids, not {info.dtype}; pass classes.tif from stitch")
    if min(min_area_m2, simplify_m, fill_holes_m2) < 0:
        raise InputError(f"min_area_m2={min_area_m2}, simplify_m={simplify_m} and fill_holes_m2={fill_holes_m2} "
                         "must be >= 0")


def _attributes(classes_uri: str, class_names: Sequence[str] | None, scene_id: str | None, model_id: str | None,
                acquired: str | datetime | None) -> tuple[dict[int, str], dict[str, Any]]:
    """Class names by id and the per-run attributes (arguments first, then the raster's tags)."""
    if class_names is None:
        class_names, _ = read_class_info(classes_uri)
    names = {i: str(n) for i, n in enumerate(class_names or [])}
    tags = read_tags(classes_uri)
    meta = {"scene_id": str(scene_id if scene_id is not None else tags.get("scene_id") or stem(classes_uri)),
            "model_id": str(model_id if model_id is not None else tags.get("model_id", "")),
            "acquired": _acquired(acquired if acquired is not None else tags.get("acquired"), classes_uri),
            "created": datetime.now(UTC)}
    return names, meta


def _progress_bar(grid: Grid, steps: tuple[int, int]) -> Any:
    from tqdm.auto import tqdm

    total = math.ceil(grid.height / steps[0]) * math.ceil(grid.width / steps[1])
    return tqdm(total=total, desc="vectorize", unit="block")


def _totals(sink: _Sink, layer_ids: list[int]) -> tuple[dict[str, int], dict[str, float]]:
    """Polygons and km² per class name (every layer, written or empty)."""
    all_ids = sorted(set(layer_ids) | set(sink.counts))
    counts = {sink.name(c): int(sink.counts.get(c, 0)) for c in all_ids}
    return counts, {sink.name(c): float(sink.area_m2.get(c, 0.0)) / 1e6 for c in all_ids}


def _dissolved(dissolve: Any) -> list[PolygonBatch]:
    """Run a row's dissolve (:meth:`BorderMerge.close_row`) on a worker thread: its merged batches."""
    out: list[PolygonBatch] = []
    dissolve(out.append)
    return out


def _run_blocks(job: _Job, grid: Grid, steps: tuple[int, int], sink: _Sink, merge: BorderMerge,
                n_threads: int, bar: Any) -> int:
    """Polygonize every block on ``n_threads`` threads, merging and writing in block order.

    The main thread does the bookkeeping of the border merge; the dissolve of the objects a block
    row finishes goes to the pool like a block (so it overlaps the next row's blocks), and its
    polygons are written, in row order, as soon as it is done. The last row's dissolve (all the
    objects still open) runs in the main thread and hands each chunk to the sink as it goes.
    """
    n_blocks = 0
    inflight: deque[tuple[bool, Future]] = deque()
    merges: deque[Future] = deque()

    def write_merged(wait: bool) -> None:
        while merges and (wait or merges[0].done()):
            for batch in merges.popleft().result():
                sink.add(batch)
            release_freed_memory()

    def end_row(last: bool = False) -> None:
        if last:  # the earlier rows' dissolves are written first, whatever this row holds
            write_merged(wait=True)
        dissolve = merge.close_row()
        if dissolve is None:
            return
        if last:  # every object still open, the scene-spanning ones too: straight to the sink, chunk by chunk

            def add_now(batch: PolygonBatch) -> None:  # written while the other half still dissolves
                sink.add(batch)  # coverage simplification works on what is buffered together: not then
                if not sink.simplify_tol and sink.n_vertices >= SINK_VERTICES // 10:
                    sink.flush()

            dissolve(add_now, pool=pool)
        else:
            merges.append(pool.submit(_dissolved, dissolve))

    def drain_one() -> None:
        row_start, fut = inflight.popleft()
        if row_start and n_blocks > len(inflight) + 1:
            end_row()
        if row_start:
            merge.start_row()
        win, complete, pieces, edges = fut.result()
        sink.add(complete)
        merge.add_block(win, pieces, edges, grid.height)
        write_merged(wait=len(merges) > 2)  # at most two rows' dissolves held
        if bar is not None:
            bar.update(1)

    with ThreadPoolExecutor(max_workers=n_threads, thread_name_prefix="vectorize") as pool:
        try:
            for row_start, win in _blocks(grid.height, grid.width, *steps):
                inflight.append((row_start, pool.submit(_block, job, win)))
                n_blocks += 1
                if len(inflight) > 2 * n_threads:
                    drain_one()
            while inflight:
                drain_one()
            end_row(last=True)
            if merges:  # a row's merged objects never written would be polygons silently lost
                raise RuntimeError(f"{len(merges)} block-row dissolves left unwritten")
        except BaseException:
            for f in [f for _, f in inflight] + list(merges):
                f.cancel()
            raise
        finally:  # datasets opened through fsspec must be closed by the thread that opened them
            run_on_each_thread(pool, n_threads, job.close_thread)
    merge.close()
    return n_blocks


def _write(classes_uri: str, confidence_uri: str | None, job_args: tuple, writer: PolygonWriter, sink: _Sink,
           layer_ids: Sequence[int], run: tuple) -> tuple[int, int, tuple]:
    """Polygonise every block into ``writer`` and publish it (abort on any error): ``(blocks, merged, URIs)``.

    The border merge's open pieces wait in a spill file in the folder of the files being built
    (a disk with room for the outputs; the system temp directory may be a tmpfs, i.e. memory).
    It is closed, and so deleted, before anything is published or aborted.
    """
    grid, steps, n_threads, bar, cache = run
    try:
        with (SpillFile(os.path.dirname(os.path.abspath(writer.gpkg_tmp))) as spill,
              SceneReader(classes_uri, cache_mib=cache) as cr,
              (SceneReader(confidence_uri, cache_mib=cache) if confidence_uri else _Null()) as fr):
            merge = BorderMerge(grid.width, steps, spill)
            n_blocks = _run_blocks(_Job(cr, fr, *job_args), grid, steps, sink, merge, n_threads, bar)
            log.debug("border-merge spill file: at most %.1f MB", spill.peak_bytes / 1e6)
        sink.flush()
        release_freed_memory()
        for cid in layer_ids:
            writer.ensure_layer(sink.name(cid))
        if not layer_ids and not sink.counts:
            writer.ensure_layer("polygons")
        return n_blocks, merge.n_merged, writer.close()
    except BaseException:
        writer.abort()
        raise


def vectorize(
    classes_uri: str,
    out_uri: str,
    *,
    confidence_uri: str | None = None,
    class_names: Sequence[str] | None = None,
    min_area_m2: float = 0.0,
    simplify_m: float = 0.0,
    fill_holes_m2: float = 0.0,
    shapefile: bool = True,
    parquet: bool = False,
    scene_id: str | None = None,
    model_id: str | None = None,
    acquired: str | datetime | None = None,
    progress: bool = False,
    keep_classes: Sequence[int] | None = None,
    block_px: int = 2048,
    batch_size: int = 20_000,
    n_threads: int | None = None,
) -> VectorizeResult:
    """Polygons of every class of a class raster, merged across blocks, streamed to disk.

    Args:
        classes_uri: class raster (integer ids; nodata 255 / the raster's mask is never a polygon).
        out_uri: output GeoPackage (GPKG 1.2, one layer per class, named by class name).
        confidence_uri: optional confidence raster (uint8 percent, 255 nodata) on the same grid;
            gives ``mean_conf`` and ``max_conf``.
        class_names: class names by id (default: the raster's ``class_names`` tag, else ``class_<id>``).
        min_area_m2: drop polygons smaller than this, m² (after hole filling).
        simplify_m: coverage simplification tolerance, metres (0 = exact outlines; shared borders stay shared).
        fill_holes_m2: fill holes smaller than this, m² (0 = keep all holes).
        shapefile, parquet: also write ``<out stem>.shp`` (one layer, ``perim_m``, times as text) /
            ``<out stem>.parquet`` (GeoParquet 1.1 with a ``bbox`` covering column).
        scene_id: stored on every polygon (default: the raster's ``scene_id`` tag, else its stem).
        model_id: stored on every polygon (default: the raster's ``model_id`` tag).
        acquired: scene acquisition time, ISO 8601 (default: the raster's ``acquired`` tag, else null).
        progress: show a progress bar.
        keep_classes: only these class ids become polygons (others are skipped, not merged).
        block_px: block side in pixels (rounded up to the internal tile size).
        batch_size: polygons buffered before an append to the outputs.
        n_threads: block worker threads (default: the CPU count, at most 8).

    Returns:
        :class:`VectorizeResult`.

    Raises:
        SceneReadError: a raster cannot be read.
        InputError: the class raster is not integer-valued or has no CRS; a bad setting.
        GridMismatchError: the confidence raster is on another grid.
    """
    t0 = time.perf_counter()
    info = open_scene(classes_uri)
    grid = info.grid
    _check_inputs(classes_uri, info, min_area_m2, simplify_m, fill_holes_m2)
    conf_info = open_scene(confidence_uri) if confidence_uri is not None else None
    if conf_info is not None:
        same_grid(grid, conf_info.grid, classes_uri, confidence_uri, crs_equal=crs_equal)
    names, meta = _attributes(classes_uri, class_names, scene_id, model_id, acquired)
    keep = None if keep_classes is None else np.array(sorted({int(k) for k in keep_classes}), dtype=np.int64)
    layer_ids = [int(k) for k in keep] if keep is not None else sorted(names)
    steps = _block_steps(info, block_px)
    cache = _read_cache_mib([i for i in (info, conf_info) if i is not None], steps)
    n_threads = n_threads or min(8, os.cpu_count() or 1)
    shp_uri = _sibling(out_uri, ".shp") if shapefile else None
    pq_uri = _sibling(out_uri, ".parquet") if parquet else None
    bar = _progress_bar(grid, steps) if progress else None
    writer = PolygonWriter(out_uri, grid.crs_wkt, FIELDS, shapefile_uri=shp_uri, parquet_uri=pq_uri)
    sink = _Sink(writer, AreaModel(grid), names, min_area_m2=min_area_m2, simplify_m=simplify_m,
                 fill_holes_m2=fill_holes_m2, meta=meta, batch=batch_size)
    try:
        job_args = (str(info.dtype), keep, grid.height, grid.width)
        with bounded_heap():  # freed arrays of the scene-spanning objects must not leave the heap resident
            n_blocks, n_merged, (out_uri, shp_uri, pq_uri) = _write(classes_uri, confidence_uri, job_args, writer,
                                                                    sink, layer_ids, (grid, steps, n_threads, bar, cache))
    finally:
        if bar is not None:
            bar.close()
    counts, km2 = _totals(sink, layer_ids)
    seconds = time.perf_counter() - t0
    log.info("vectorized %s -> %s: %s polygons in %.1f s (%d merged across blocks)",
             classes_uri, out_uri, counts, seconds, n_merged)
    return VectorizeResult(out_uri, shp_uri, counts, km2, seconds, n_blocks, n_merged, pq_uri)


class _Null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


__all__ = ["FIELDS", "NODATA", "VectorizeResult", "fill_holes", "label_block", "vectorize"]
