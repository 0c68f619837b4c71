"""Vectorize: class raster to polygons (GeoPackage + Shapefile), block by block; flood difference.

Algorithm of :func:`vectorize` (memory bounded by one block plus the polygons crossing the
current block-row border, independent of the scene size):

1. The class raster is read in blocks of ``block_px`` (rounded up to its internal tiles).
2. In a block, each class is labelled into 4-connected components (``scipy.ndimage.label``);
   per component the pixel count and the confidence sum / count are accumulated with
   ``np.bincount`` (so merged means are exact). Nodata (255, or the raster's mask) is never a
   component. The component image is polygonized by GDAL (``rasterio.features.shapes``,
   4-connectivity) in *pixel* coordinates, which are exact integers.
3. A component that does not touch an internal block border is complete: it is buffered and
   written in batches. One that does is kept as a *piece*; pieces of the same class that face
   each other across a border (compared pixel by pixel on the border rows / columns) are joined
   in a union-find. After each block row, every group of pieces that can no longer grow (none of
   its pieces lies on the border to the next block row) is dissolved into one polygon by
   cancelling the unit edges its pieces share (:func:`dissolve_pixel_polygons`, linear in the
   perimeter; GEOS coverage union / ``union_all`` as fallbacks).
4. Polygons go to map coordinates (``x = c + a*col``, ``y = f + e*row``), get their area
   (pixel count x pixel area for projected CRSs in any linear unit; geodesic area on the CRS's
   ellipsoid for geographic CRSs), are filtered by ``min_area_m2``, optionally simplified
   (``simplify_m``, topology-preserving per polygon; shared borders between neighbouring polygons
   are simplified independently), and appended to the outputs.
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import shapely
from pyproj import CRS
from rasterio import Affine
from rasterio.features import shapes
from scipy import ndimage

from unetgeo.errors import InputError
from unetgeo.grid import Grid, Window, align_up, iter_tile_windows, same_grid
from unetgeo.io.cog import (
    CogWriter,
    class_raster_tags,
    hex_to_rgba,
    read_class_info,
    read_tags,
    write_class_sidecars,
)
from unetgeo.io.scene import SceneInfo, SceneReader, crs_equal, open_scene
from unetgeo.io.vector import PolygonWriter

log = logging.getLogger(__name__)

NODATA = 255
#: Attribute schema of every polygon (names <= 10 characters, so the Shapefile keeps them).
FIELDS: dict[str, object] = {
    "class_id": "int32",
    "class_name": object,
    "area_m2": "float64",
    "mean_conf": "float64",  # mean confidence in percent (0-100); null without a confidence raster
    "scene_id": object,
    "model_id": object,
}
FLOOD_CLASS_NAMES = ("dry", "flooded")
FLOOD_CLASS_COLORS = ("#f0f0f0", "#e31a1c")
M_PER_DEG = 111_320.0


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
    """

    out_uri: str
    shapefile_uri: str | None
    counts: dict[str, int]
    area_km2: dict[str, float]
    seconds: float
    n_blocks: int = 0
    n_merged: int = 0


# -- areas ----------------------------------------------------------------------------------------


class AreaModel:
    """Areas in m² on a grid: pixel counts (projected CRS) or geodesic areas (geographic CRS)."""

    def __init__(self, grid: Grid):
        crs = CRS.from_user_input(grid.crs_wkt)
        self.geographic = bool(crs.is_geographic)
        self.geod = crs.get_geod() if self.geographic else None
        unit = 1.0
        if not self.geographic and crs.axis_info:
            unit = float(crs.axis_info[0].unit_conversion_factor or 1.0)
        self.unit_m = unit
        a, _, _, _, e, _ = grid.transform
        self.pixel_m2 = abs(a * e) * unit * unit
        self.grid = grid

    def polygon_areas_m2(self, counts: np.ndarray, map_geoms: np.ndarray) -> np.ndarray:
        """Areas of polygons of ``counts`` pixels each (``map_geoms`` used for geographic CRSs)."""
        if not self.geographic:
            return np.asarray(counts, dtype=np.float64) * self.pixel_m2
        return np.array([abs(self.geod.geometry_area_perimeter(g)[0]) for g in map_geoms], dtype=np.float64)

    def row_pixel_areas_m2(self, row_off: int, height: int) -> np.ndarray:
        """Area in m² of one pixel in each of rows ``row_off .. row_off+height``, float64 ``(height,)``."""
        if not self.geographic:
            return np.full(height, self.pixel_m2)
        a, _, c, _, e, f = self.grid.transform
        out = np.empty(height)
        for i in range(height):
            y0 = f + e * (row_off + i)
            y1 = y0 + e
            area, _ = self.geod.polygon_area_perimeter([c, c + a, c + a, c], [y0, y0, y1, y1])
            out[i] = abs(area)
        return out

    def tolerance(self, metres: float) -> float:
        """``metres`` in CRS units (degrees at the equator for geographic CRSs)."""
        return metres / M_PER_DEG if self.geographic else metres / self.unit_m


# -- block labelling ------------------------------------------------------------------------------


def label_block(
    cls: np.ndarray, mask: np.ndarray, conf: np.ndarray | None = None, conf_valid: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """4-connected components of every class in a block.

    Args:
        cls: ``(h, w)`` integer class ids.
        mask: ``(h, w)`` bool, pixels that may form polygons.
        conf: optional ``(h, w)`` confidence (uint8 percent, 255 nodata).
        conf_valid: optional ``(h, w)`` bool validity of ``conf``.

    Returns:
        ``labels (h, w) int32`` (0 = none, components 1..n), ``comp_class (n+1,)`` class of each
        component, ``counts (n+1,)`` pixels, ``conf_sum (n+1,)`` float64, ``conf_n (n+1,)`` int64.
    """
    h, w = cls.shape
    labels = np.zeros((h, w), dtype=np.int32)
    comp_class = [np.zeros(1, dtype=np.int64)]
    n = 0
    if mask.any():
        ids = np.unique(cls[mask])
        for c in ids:
            lab, k = ndimage.label(mask & (cls == c))
            if k:
                m = lab > 0
                labels[m] = lab[m] + n
                comp_class.append(np.full(k, int(c), dtype=np.int64))
                n += k
    flat = labels.ravel()
    counts = np.bincount(flat, minlength=n + 1)
    if conf is not None:
        ok = (labels > 0) & (conf != NODATA)
        if conf_valid is not None:
            ok &= conf_valid
        okf = ok.ravel()
        conf_sum = np.bincount(flat[okf], weights=conf.ravel()[okf].astype(np.float64), minlength=n + 1)
        conf_n = np.bincount(flat[okf], minlength=n + 1)
    else:
        conf_sum = np.zeros(n + 1)
        conf_n = np.zeros(n + 1, dtype=np.int64)
    return labels, np.concatenate(comp_class), counts, conf_sum, conf_n


def polygonize_labels(labels: np.ndarray, row_off: int = 0, col_off: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Polygons of the components of a label image, in pixel coordinates of the whole raster.

    Args:
        labels: ``(h, w)`` int32 component ids, 0 = background.
        row_off: row of ``labels[0, 0]`` in the raster.
        col_off: column of ``labels[0, 0]`` in the raster.

    Returns:
        ``(polygons (n,) shapely, ids (n,) int64)``; coordinates are ``(col, row)`` pixel corners
        (exact integers), one polygon per 4-connected component.
    """
    tr = Affine(1.0, 0.0, float(col_off), 0.0, 1.0, float(row_off))
    coords: list = []
    lengths: list[int] = []
    ring_poly: list[int] = []
    vals: list[int] = []
    for geom, val in shapes(labels, mask=labels > 0, connectivity=4, transform=tr):
        pi = len(vals)
        vals.append(int(val))
        for ring in geom["coordinates"]:
            coords.extend(ring)
            lengths.append(len(ring))
            ring_poly.append(pi)
    if not vals:
        return np.array([], dtype=object), np.array([], dtype=np.int64)
    xy = np.asarray(coords, dtype=np.float64)
    rings = shapely.linearrings(xy, indices=np.repeat(np.arange(len(lengths)), lengths))
    polys = shapely.polygons(rings, indices=np.asarray(ring_poly))
    return polys, np.asarray(vals, dtype=np.int64)


@dataclass
class _Piece:
    class_id: int
    geom: shapely.Geometry  # pixel coordinates
    count: int
    conf_sum: float
    conf_n: int


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[int, int] = {}

    def add(self, x: int) -> None:
        self.parent[x] = x

    def find(self, x: int) -> int:
        p = self.parent
        root = x
        while p[root] != root:
            root = p[root]
        while p[x] != root:
            p[x], x = root, p[x]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


class _Sink:
    """Buffers finished polygons per class and writes them in batches."""

    def __init__(
        self,
        writer: PolygonWriter,
        grid: Grid,
        area: AreaModel,
        names: dict[int, str],
        *,
        min_area_m2: float,
        simplify_m: float,
        scene_id: str,
        model_id: str,
        batch: int,
    ):
        self.writer = writer
        self.area = area
        self.names = names
        self.min_area_m2 = min_area_m2
        self.simplify_tol = area.tolerance(simplify_m) if simplify_m > 0 else 0.0
        self.scene_id = scene_id
        self.model_id = model_id
        self.batch = batch
        a, _, c, _, e, f = grid.transform
        self._scale = np.array([a, e])
        self._offset = np.array([c, f])
        self.buf: dict[int, list[tuple[shapely.Geometry, int, float, int]]] = defaultdict(list)
        self.n_buffered = 0
        self.counts: dict[int, int] = defaultdict(int)
        self.area_m2: dict[int, float] = defaultdict(float)

    def name(self, class_id: int) -> str:
        return self.names.get(class_id, f"class_{class_id}")

    def add(self, class_id: int, geom: shapely.Geometry, count: int, conf_sum: float, conf_n: int) -> None:
        self.buf[class_id].append((geom, count, conf_sum, conf_n))
        self.n_buffered += 1
        if self.n_buffered >= self.batch:
            self.flush()

    def flush(self) -> None:
        for cid, items in self.buf.items():
            if not items:
                continue
            geoms = np.array([it[0] for it in items], dtype=object)
            counts = np.array([it[1] for it in items], dtype=np.int64)
            csum = np.array([it[2] for it in items], dtype=np.float64)
            cn = np.array([it[3] for it in items], dtype=np.int64)
            mg = shapely.transform(geoms, lambda xy: xy * self._scale + self._offset)
            area = self.area.polygon_areas_m2(counts, mg)
            keep = area >= self.min_area_m2
            if not keep.any():
                continue
            mg, area, csum, cn = mg[keep], area[keep], csum[keep], cn[keep]
            if self.simplify_tol > 0:
                mg = shapely.simplify(mg, self.simplify_tol, preserve_topology=True)
            with np.errstate(invalid="ignore", divide="ignore"):
                mean_conf = np.where(cn > 0, csum / np.maximum(cn, 1), np.nan)
            n = len(mg)
            self.writer.write(
                self.name(cid),
                shapely.to_wkb(mg),
                {
                    "class_id": np.full(n, cid, dtype=np.int32),
                    "class_name": np.full(n, self.name(cid), dtype=object),
                    "area_m2": area,
                    "mean_conf": mean_conf,
                    "scene_id": np.full(n, self.scene_id, dtype=object),
                    "model_id": np.full(n, self.model_id, dtype=object),
                },
            )
            self.counts[cid] += n
            self.area_m2[cid] += float(area.sum())
        self.buf.clear()
        self.n_buffered = 0


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
    if runs:
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
                right = [k for k in cands if d_in[0] * (runs[k][1, 1] - runs[k][0, 1]) - d_in[1] * (runs[k][1, 0] - runs[k][0, 0]) < 0]
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
    shells, holes = [], []
    for r in closed:
        r = _ring_drop_collinear(r)
        if len(r) < 4:
            return None
        (shells if _signed_area2(r) > 0 else holes).append(r)
    if len(shells) != 1:
        return None
    return shapely.Polygon(shells[0].astype(np.float64), [h.astype(np.float64) for h in holes])


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


def _merge(pieces: list[_Piece]) -> list[tuple[shapely.Geometry, int, float, int]]:
    """Union pieces of one object into polygon(s), summing their pixel and confidence stats."""
    if len(pieces) == 1:
        p = pieces[0]
        return [(p.geom, p.count, p.conf_sum, p.conf_n)]
    parts = union_pixel_polygons([p.geom for p in pieces])
    if len(parts) == 1:
        return [(parts[0], sum(p.count for p in pieces), sum(p.conf_sum for p in pieces), sum(p.conf_n for p in pieces))]
    # Not expected for 4-connected pieces joined along borders; assign each piece to its part.
    log.warning("a merged object split into %d parts; assigning pieces by location", len(parts))
    tree = shapely.STRtree(parts)
    stats = [[0, 0.0, 0] for _ in parts]
    for p in pieces:
        hit = tree.query(shapely.point_on_surface(p.geom), predicate="within")
        i = int(hit[0]) if len(hit) else 0
        stats[i][0] += p.count
        stats[i][1] += p.conf_sum
        stats[i][2] += p.conf_n
    return [(g, s[0], s[1], s[2]) for g, s in zip(parts, stats, strict=True)]


def _block_steps(info: SceneInfo, block_px: int) -> tuple[int, int]:
    """Block size ``(rows, cols)``: ``block_px`` rounded up to the raster's internal tiles."""
    by, bx = info.block_shape
    if by == bx and bx < info.grid.width:
        step = align_up(block_px, bx)
        return step, step
    return block_px, block_px


def _blocks(height: int, width: int, step_y: int, step_x: int) -> Iterator[tuple[int, list[Window]]]:
    for r in range(0, height, step_y):
        yield r, [Window(r, c, min(step_y, height - r), min(step_x, width - c)) for c in range(0, width, step_x)]


def _resolve_names(classes_uri: str, class_names: Sequence[str] | None) -> dict[int, str]:
    if class_names is None:
        class_names, _ = read_class_info(classes_uri)
    return {i: str(n) for i, n in enumerate(class_names or [])}


def _shapefile_uri(out_uri: str) -> str:
    base = out_uri[: -len(".gpkg")] if out_uri.lower().endswith(".gpkg") else out_uri
    return base + ".shp"


def vectorize(
    classes_uri: str,
    out_uri: str,
    *,
    confidence_uri: str | None = None,
    class_names: Sequence[str] | None = None,
    min_area_m2: float = 0.0,
    simplify_m: float = 0.0,
    shapefile: bool = True,
    scene_id: str | None = None,
    model_id: str | None = None,
    progress: bool = False,
    keep_classes: Sequence[int] | None = None,
    block_px: int = 1024,
    batch_size: int = 20_000,
) -> VectorizeResult:
    """Polygons of every class of a class raster, merged across blocks, streamed to disk.

    Args:
        classes_uri: class raster (integer ids; nodata 255 / the raster's mask is never a polygon).
        out_uri: output GeoPackage (one layer per class, named by class name).
        confidence_uri: optional confidence raster (uint8 percent, 255 nodata) on the same grid;
            gives ``mean_conf``.
        class_names: class names by id (default: the raster's ``class_names`` tag, else ``class_<id>``).
        min_area_m2: drop polygons smaller than this, m².
        simplify_m: simplification tolerance, metres (0 = exact pixel outlines).
        shapefile: also write ``<out stem>.shp`` (single layer, all classes).
        scene_id: stored on every polygon (default: the raster's ``scene_id`` tag, else its stem).
        model_id: stored on every polygon (default: the raster's ``model_id`` tag).
        progress: show a progress bar.
        keep_classes: only these class ids become polygons (others are skipped, not merged).
        block_px: block side in pixels (rounded up to the internal tile size).
        batch_size: polygons buffered before an append to the outputs.

    Returns:
        :class:`VectorizeResult`.

    Raises:
        SceneReadError: a raster cannot be read.
        InputError: the class raster is not integer-valued or has no CRS.
        GridMismatchError: the confidence raster is on another grid.
    """
    t0 = time.perf_counter()
    info = open_scene(classes_uri)
    grid = info.grid
    if np.dtype(info.dtype).kind not in "ui":
        raise InputError(f"{classes_uri}: class rasters hold integer class ids, not {info.dtype}; pass classes.tif from stitch")
    if min_area_m2 < 0 or simplify_m < 0:
        raise InputError(f"min_area_m2={min_area_m2} and simplify_m={simplify_m} must be >= 0")
    conf_info = None
    if confidence_uri is not None:
        conf_info = open_scene(confidence_uri)
        same_grid(grid, conf_info.grid, classes_uri, confidence_uri, crs_equal=crs_equal)
    names = _resolve_names(classes_uri, class_names)
    tags = read_tags(classes_uri)
    scene_id = scene_id if scene_id is not None else tags.get("scene_id") or _stem(classes_uri)
    model_id = model_id if model_id is not None else tags.get("model_id", "")
    keep = None if keep_classes is None else np.array(sorted({int(k) for k in keep_classes}), dtype=np.int64)
    layer_ids = list(keep) if keep is not None else sorted(names)

    area = AreaModel(grid)
    shp_uri = _shapefile_uri(out_uri) if shapefile else None
    step_y, step_x = _block_steps(info, block_px)
    H, W = grid.height, grid.width
    n_blocks = math.ceil(H / step_y) * math.ceil(W / step_x)
    uf = _UnionFind()
    pending: dict[int, _Piece] = {}
    next_gid = 0
    n_merged = 0
    carry_ids = np.full(W, -1, dtype=np.int64)  # piece id on the last row of the previous block row
    carry_cls = np.zeros(W, dtype=np.int64)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_blocks, desc="vectorize", unit="block")

    writer = PolygonWriter(out_uri, grid.crs_wkt, FIELDS, shapefile_uri=shp_uri)
    sink = _Sink(writer, grid, area, names, min_area_m2=min_area_m2, simplify_m=simplify_m,
                 scene_id=str(scene_id), model_id=str(model_id or ""), batch=batch_size)
    try:
        with SceneReader(classes_uri) as cr, (SceneReader(confidence_uri) if confidence_uri else _Null()) as fr:
            for _row_off, wins in _blocks(H, W, step_y, step_x):
                next_carry_ids = np.full(W, -1, dtype=np.int64)
                next_carry_cls = np.zeros(W, dtype=np.int64)
                right_ids = right_cls = None
                for win in wins:
                    data, valid = cr.read(win, bands=[1])
                    cls = data[0]
                    mask = valid & (cls >= 0) if cls.dtype.kind == "i" else valid.copy()
                    if info.dtype == "uint8":
                        mask &= cls != NODATA
                    if keep is not None:
                        mask &= np.isin(cls, keep)
                    conf = conf_valid = None
                    if confidence_uri:
                        cd, conf_valid = fr.read(win, bands=[1])
                        conf = cd[0]
                    labels, comp_class, counts, csum, cn = label_block(cls, mask, conf, conf_valid)
                    n = len(counts) - 1
                    top = win.row_off > 0
                    bottom = win.row_off + win.height < H
                    left = win.col_off > 0
                    right = win.col_off + win.width < W
                    touch = np.zeros(n + 1, dtype=bool)
                    if top:
                        touch[labels[0]] = True
                    if bottom:
                        touch[labels[-1]] = True
                    if left:
                        touch[labels[:, 0]] = True
                    if right:
                        touch[labels[:, -1]] = True
                    touch[0] = False
                    gid_of = np.full(n + 1, -1, dtype=np.int64)
                    if n:
                        polys, vals = polygonize_labels(labels, win.row_off, win.col_off)
                        for poly, k in zip(polys, vals.tolist(), strict=True):
                            if touch[k]:
                                gid = next_gid
                                next_gid += 1
                                uf.add(gid)
                                pending[gid] = _Piece(int(comp_class[k]), poly, int(counts[k]), float(csum[k]), int(cn[k]))
                                gid_of[k] = gid
                            else:
                                sink.add(int(comp_class[k]), poly, int(counts[k]), float(csum[k]), int(cn[k]))
                    cols = slice(win.col_off, win.col_off + win.width)
                    if top:
                        _join(uf, gid_of[labels[0]], cls[0], carry_ids[cols], carry_cls[cols])
                    if left and right_ids is not None:
                        _join(uf, gid_of[labels[:, 0]], cls[:, 0], right_ids, right_cls)
                    if bottom:
                        next_carry_ids[cols] = gid_of[labels[-1]]
                        next_carry_cls[cols] = cls[-1]
                    right_ids, right_cls = gid_of[labels[:, -1]], cls[:, -1]
                    if bar is not None:
                        bar.update(1)
                carry_ids, carry_cls = next_carry_ids, next_carry_cls
                # groups with no piece on the next border are complete
                open_roots = {uf.find(int(g)) for g in np.unique(carry_ids[carry_ids >= 0])}
                groups: dict[int, list[int]] = defaultdict(list)
                for gid in pending:
                    r = uf.find(gid)
                    if r not in open_roots:
                        groups[r].append(gid)
                for gids in groups.values():
                    pieces = [pending.pop(g) for g in gids]
                    for g in gids:
                        del uf.parent[g]
                    if len(pieces) > 1:
                        n_merged += 1
                    cid = pieces[0].class_id
                    for geom, cnt, s, c in _merge(pieces):
                        sink.add(cid, geom, cnt, s, c)
            if pending:  # cannot happen: the last block row has no border below it
                raise RuntimeError(f"{len(pending)} polygon pieces left unmerged after the last block row")
        sink.flush()
        for cid in layer_ids:
            writer.ensure_layer(sink.name(int(cid)))
        if not layer_ids and not sink.counts:
            writer.ensure_layer("polygons")
        out_uri, shp_uri = writer.close()
    except BaseException:
        writer.abort()
        raise
    finally:
        if bar is not None:
            bar.close()
    all_ids = sorted(set(layer_ids) | set(sink.counts))
    counts_by_name = {sink.name(int(c)): int(sink.counts.get(c, 0)) for c in all_ids}
    km2_by_name = {sink.name(int(c)): float(sink.area_m2.get(c, 0.0)) / 1e6 for c in all_ids}
    seconds = time.perf_counter() - t0
    log.info("vectorized %s -> %s: %s polygons in %.1f s (%d merged across blocks)",
             classes_uri, out_uri, counts_by_name, seconds, n_merged)
    return VectorizeResult(out_uri, shp_uri, counts_by_name, km2_by_name, seconds, n_blocks, n_merged)


def _join(uf: _UnionFind, ids_a: np.ndarray, cls_a: np.ndarray, ids_b: np.ndarray, cls_b: np.ndarray) -> None:
    """Union pieces that face each other across a border with the same class."""
    m = (ids_a >= 0) & (ids_b >= 0) & (cls_a == cls_b)
    if not m.any():
        return
    pairs = np.unique(np.stack([ids_a[m], ids_b[m]], axis=1), axis=0)
    for a, b in pairs:
        uf.union(int(a), int(b))


class _Null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _stem(uri: str) -> str:
    name = str(uri).rstrip("/").rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[0]


# -- flood ----------------------------------------------------------------------------------------


def flood_pixels(
    now: np.ndarray,
    now_valid: np.ndarray,
    before: np.ndarray,
    before_valid: np.ndarray,
    water_class_id: int,
    reference_is_mask: bool = False,
) -> np.ndarray:
    """Flood map of one window.

    Args:
        now: ``(h, w)`` class ids of the current scene (255 nodata).
        now_valid: ``(h, w)`` bool validity of ``now``.
        before: ``(h, w)`` reference: class ids (255 nodata), or a water mask (nonzero = water).
        before_valid: ``(h, w)`` bool validity of ``before``.
        water_class_id: the water class id.
        reference_is_mask: ``before`` is a water mask rather than class ids.

    Returns:
        ``(h, w)`` uint8: 1 water now and not water before, 0 otherwise, 255 where either is invalid.
    """
    valid = now_valid & before_valid & (now != NODATA)
    if reference_is_mask:
        water_before = before != 0
    else:
        valid &= before != NODATA
        water_before = before == water_class_id
    flooded = (now == water_class_id) & ~water_before
    return np.where(valid, flooded.astype(np.uint8), np.uint8(NODATA)).astype(np.uint8)


def flood_raster(
    classes_uri: str,
    reference_uri: str,
    out_uri: str,
    *,
    water_class_id: int,
    reference_is_mask: bool = False,
    block_px: int = 1024,
) -> str:
    """Flood difference raster (COG uint8: 1 flooded, 0 not flooded, 255 nodata), block by block.

    Args:
        classes_uri: class raster of the current scene.
        reference_uri: class raster of the reference (dry) scene, or a water mask
            (``reference_is_mask=True``: nonzero = water, its nodata / mask = unknown), same grid.
        out_uri: output COG (``flood.tif``); ``flood.qml`` and ``flood.tif.aux.xml`` sidecars too.
        water_class_id: id of the water class in ``classes_uri`` (and in the reference classes).
        reference_is_mask: see ``reference_uri``.
        block_px: window side in pixels.

    Returns:
        ``out_uri``.

    Raises:
        GridMismatchError: the reference is not on the grid of the class raster.
        InputError: ``water_class_id`` is not a valid class id.
    """
    t0 = time.perf_counter()
    if not 0 <= int(water_class_id) < NODATA:
        raise InputError(f"water_class_id={water_class_id} must be a class id in 0..254")
    ci = open_scene(classes_uri)
    ri = open_scene(reference_uri)
    same_grid(ci.grid, ri.grid, classes_uri, reference_uri, crs_equal=crs_equal)
    grid = ci.grid
    tags = read_tags(classes_uri)
    cmap = {i: hex_to_rgba(c) for i, c in enumerate(FLOOD_CLASS_COLORS)}
    cmap[NODATA] = (0, 0, 0, 0)
    extra = {"water_class_id": int(water_class_id), "reference_uri": reference_uri,
             "scene_id": tags.get("scene_id"), "model_id": tags.get("model_id")}
    with SceneReader(classes_uri) as cr, SceneReader(reference_uri) as rr, CogWriter(
        out_uri, grid, 1, "uint8", NODATA, resampling="mode", band_names=["flooded"], colormap=cmap,
        tags=class_raster_tags(FLOOD_CLASS_NAMES, FLOOD_CLASS_COLORS, **extra),
    ) as w:
        for win in iter_tile_windows(grid.height, grid.width, block_px):
            now, now_valid = cr.read(win, bands=[1])
            before, before_valid = rr.read(win, bands=[1])
            w.write(win, flood_pixels(now[0], now_valid, before[0], before_valid, int(water_class_id), reference_is_mask))
    write_class_sidecars(out_uri, FLOOD_CLASS_NAMES, FLOOD_CLASS_COLORS)
    log.info("flood raster %s (reference %s) in %.1f s", out_uri, reference_uri, time.perf_counter() - t0)
    return out_uri


def flood_polygons(flood_uri: str, out_uri: str, **kwargs) -> VectorizeResult:
    """Polygons of the flooded pixels of :func:`flood_raster`'s output (layer ``flooded``).

    ``kwargs`` go to :func:`vectorize` (``min_area_m2``, ``simplify_m``, ``shapefile``, …).
    """
    return vectorize(flood_uri, out_uri, class_names=list(FLOOD_CLASS_NAMES), keep_classes=[1], **kwargs)


__all__ = [
    "AreaModel",
    "FIELDS",
    "VectorizeResult",
    "flood_pixels",
    "flood_polygons",
    "flood_raster",
    "label_block",
    "vectorize",
]
