"""Compact rings of open pieces (unetgeo.dissolve.Rings) and the run-linking dissolve."""

from __future__ import annotations

import numpy as np
import shapely

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
