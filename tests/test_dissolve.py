"""Compact rings of open pieces (unetgeo.dissolve.Rings) and the run-linking dissolve."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
import shapely.affinity
import shapely.geometry

from unetgeo.dissolve import Rings, dissolve_rings


def _square_with_hole(x0: int, y0: int, clockwise_shell: bool = False) -> shapely.Polygon:
    shell = [(x0, y0), (x0 + 6, y0), (x0 + 6, y0 + 6), (x0, y0 + 6)]
    hole = [(x0 + 2, y0 + 2), (x0 + 2, y0 + 4), (x0 + 4, y0 + 4), (x0 + 4, y0 + 2)]
    return shapely.Polygon(shell[::-1] if clockwise_shell else shell, [hole])


def test_rings_round_trip_orientation_take_and_concat():
    polys = np.array([_square_with_hole(0, 0), shapely.box(10, 0, 13, 2), _square_with_hole(20, 5, True)], dtype=object)
    r = Rings.from_polygons(polys)
    assert r.xy.dtype == np.int32 and r.n_vertices == 20
    assert list(r.piece_rings) == [2, 1, 2] and list(r.piece_vertices()) == [8, 4, 8]
    back = r.to_polygons()
    assert shapely.equals(back, polys).all()
    assert all(shapely.is_ccw(p.exterior) and all(not shapely.is_ccw(h) for h in p.interiors) for p in back)
    sel = np.array([True, False, True])
    assert shapely.equals(r.take(sel).to_polygons(), polys[sel]).all()
    both = Rings.concat([r.take(sel), r.take(~sel)])
    assert shapely.equals(both.to_polygons(), polys[[0, 2, 1]]).all()
    assert len(Rings.concat([])) == 0 and len(Rings.empty().to_polygons()) == 0


def test_dissolve_rings_joins_pieces_cut_by_block_lines_and_refuses_a_wrong_count():
    # one 8 x 5 object cut by the block lines x = 4 and y = 3 into four pieces, and a lone 2 x 2 object
    pieces = np.array([shapely.box(0, 0, 4, 3), shapely.box(4, 0, 8, 3), shapely.box(0, 3, 4, 5), shapely.box(4, 3, 8, 5),
                       shapely.box(20, 20, 22, 22)], dtype=object)
    group = np.array([0, 0, 0, 0, 1])
    out, ok = dissolve_rings(Rings.from_polygons(pieces), group, np.array([40, 4]), (3, 4))
    assert ok.all()
    assert out[0].equals(shapely.box(0, 0, 8, 5)) and len(out[0].exterior.coords) == 5  # no vertex left on the seams
    assert out[1].equals(shapely.box(20, 20, 22, 22))
    out, ok = dissolve_rings(Rings.from_polygons(pieces), group, np.array([41, 4]), (3, 4))
    assert list(ok) == [False, True] and out[0] is None


def test_rings_wkb_is_geos_wkb_of_the_map_polygons(monkeypatch):
    """The WKB written straight from rings is byte for byte GEOS's of the same polygons in map coordinates."""
    import unetgeo.io.wkb as wkb
    from unetgeo.area import AreaModel
    from unetgeo.grid import Grid

    polys = np.array([_square_with_hole(0, 0), shapely.box(10, 0, 13, 2), _square_with_hole(20, 5, True)], dtype=object)
    r = Rings.from_polygons(polys)
    transform = (10.0, 0.0, 500000.0, 0.0, -10.0, 5000000.0)
    grid = Grid(height=40, width=40, transform=transform, crs_wkt="EPSG:32633")
    want = AreaModel(grid).to_map(r.to_polygons())
    for chunk in (1 << 18, 3, 1):  # chunk borders inside rings, on closing vertices, between polygons
        monkeypatch.setattr(wkb, "CHUNK", chunk)
        arr, perimeter, bounds = wkb.rings_wkb(r.xy, r.ring_len, r.piece_rings, transform)
        assert [a.as_py() for a in arr] == list(shapely.to_wkb(want))
        np.testing.assert_allclose(perimeter, shapely.length(want), rtol=1e-12)
        assert np.array_equal(bounds, shapely.bounds(want))
    arr, perimeter, bounds = wkb.rings_wkb(*(a[:0] for a in (r.xy, r.ring_len, r.piece_rings)), transform)
    assert len(arr) == 0 and len(perimeter) == 0 and bounds.shape == (0, 4)


def test_rings_split_by_key_keeps_each_polygon_whole():
    polys = np.array([shapely.box(0, 0, 2, 3), shapely.box(5, 5, 9, 9).difference(shapely.box(6, 6, 7, 7)),
                      shapely.box(10, 0, 11, 1), shapely.box(20, 20, 23, 21)], dtype=object)
    rings = Rings.from_polygons(polys)
    parts = rings.split(np.array([2, 0, -1, 2]))
    assert sorted(parts) == [0, 2]
    assert shapely.equals(parts[0].to_polygons(), polys[[1]]).all()
    assert shapely.equals(parts[2].to_polygons(), polys[[0, 3]]).all()
    assert parts[0].ring_len.tolist() == [4, 4] and parts[2].n_vertices == 8
    assert rings.split(np.full(4, -1)) == {}


def _block_pieces(labels: np.ndarray, steps: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every block's polygons (rasterio, pixel coordinates), each piece's object, each object's pixels."""
    from rasterio.features import shapes
    from scipy import ndimage

    objects = np.zeros(labels.shape, dtype=np.int32)
    n = 0
    for c in np.unique(labels):
        lab, k = ndimage.label(labels == c)  # 4-connected
        objects[lab > 0] = lab[lab > 0] + n
        n += k
    pieces, group = [], []
    for r0 in range(0, labels.shape[0], steps[0]):
        for c0 in range(0, labels.shape[1], steps[1]):
            block = objects[r0:r0 + steps[0], c0:c0 + steps[1]]
            for geom, v in shapes(block, connectivity=4):
                pieces.append(shapely.affinity.translate(shapely.geometry.shape(geom), c0, r0))
                group.append(int(v) - 1)
    return np.array(pieces, dtype=object), np.array(group), np.bincount(objects.ravel() - 1, minlength=n)


@pytest.mark.parametrize("offset", [0, 35 * 2**15, 35 * 2**23], ids=["int32-keys", "int64-keys", "packed-keys"])
def test_dissolve_equals_the_union_of_the_pieces_for_every_key_width(offset, monkeypatch):
    """Far-apart coordinates widen the vertex keys (int32, int64, packed); chunks of 3 vertices cut every ring."""
    import unetgeo.dissolve as D

    monkeypatch.setattr(D, "_CHUNK", 3)
    rng = np.random.default_rng(5)
    labels = (rng.random((40, 42)) < 0.45).astype(np.uint8) + (rng.random((40, 42)) < 0.2)
    steps = (5, 7)
    pieces, group, count = _block_pieces(labels, steps)
    pieces = np.array([shapely.affinity.translate(p, offset * (g % 2), offset * (g % 3 == 0)) for p, g in
                       zip(pieces, group, strict=True)], dtype=object)  # objects spread far apart
    out, ok = dissolve_rings(Rings.from_polygons(pieces), group, count, steps)
    assert len(count) > 64 and ok.mean() > 0.95
    for g in np.flatnonzero(ok):
        union = shapely.union_all(pieces[group == g])
        assert out[g].area == count[g] and out[g].equals(union), g


@pytest.mark.parametrize("chunk", [1 << 16, 3], ids=["one-chunk", "chunks-of-3"])
def test_dissolve_on_the_border_skeleton_gives_valid_unions_with_every_hole(chunk, monkeypatch):
    """Blocks much larger than the objects' detail: most vertices lie off the block lines and are
    left out of the passes (holes inside a block entirely); the outlines put back must give the
    union of the pieces, valid (holes closed where the object touches itself diagonally), with
    as many holes."""
    from scipy import ndimage

    import unetgeo.dissolve as D

    monkeypatch.setattr(D, "_CHUNK", chunk)
    rng = np.random.default_rng(11)
    field = ndimage.uniform_filter(rng.random((96, 100)), 5)
    labels = np.digitize(field, np.quantile(field, [0.3, 0.65])).astype(np.uint8)
    labels[rng.random(labels.shape) < 0.04] = 3  # specks: holes, diagonal touches
    steps = (32, 40)
    pieces, group, count = _block_pieces(labels, steps)
    rings = Rings.from_polygons(pieces)
    sk = D._skeleton(rings.xy, rings.ring_len, steps, np.repeat(group, rings.piece_rings))
    assert len(sk.xy) < 0.6 * rings.n_vertices and (sk.gap > 0).any()  # the passes see a fraction of the vertices
    out, ok = dissolve_rings(rings, group, count, steps)
    multi = np.flatnonzero(np.bincount(group) > 1)
    assert len(multi) > 10 and ok[multi].all()
    for g in multi:
        union = shapely.union_all(pieces[group == g])
        assert out[g].area == count[g] and out[g].equals(union), g
        assert out[g].is_valid, (g, shapely.is_valid_reason(out[g]))
        assert len(out[g].interiors) == len(union.interiors), g
