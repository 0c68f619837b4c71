"""The numpy run tracer (unetgeo.runs) against GDAL's polygonize, and the ring helpers it uses."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import ndimage

from unetgeo.io.vector import polygonize_labels
from unetgeo.merge_util import list_rank
from unetgeo.runs import polygonize_runs, run_density
from unetgeo.vectorize import RUNS_MAX_DENSITY, _use_runs


def _normalized(polys):
    return sorted(shapely.to_wkb(shapely.normalize(np.asarray(polys, dtype=object))))


def _assert_same_as_gdal(coded, row_off=0, col_off=0):
    rp = polygonize_runs(coded, row_off, col_off)
    assert rp is not None, "the run tracer refused a block"
    gp, gv = polygonize_labels(coded.astype(np.int32), row_off, col_off)
    assert len(rp.polygons) == len(gp)
    assert _normalized(rp.polygons) == _normalized(gp)  # the same outlines, vertex for vertex
    assert sorted(rp.values.tolist()) == sorted(gv.tolist())
    assert shapely.is_valid(rp.polygons).all()
    np.testing.assert_array_equal(np.rint(shapely.area(rp.polygons)).astype(np.int64), rp.counts)
    for poly, v in zip(rp.polygons, rp.values, strict=True):  # each polygon lies on pixels of its value
        x, y = shapely.get_coordinates(shapely.point_on_surface(poly))[0]
        assert coded[int(y) - row_off, int(x) - col_off] == v
    return rp


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    arr=st.integers(1, 24).flatmap(
        lambda h: st.integers(1, 24).flatmap(lambda w: arrays(np.uint8, (h, w), elements=st.integers(0, 3)))),
    smooth=st.booleans(),
    off=st.tuples(st.integers(0, 5000), st.integers(0, 5000)),
)
def test_runs_equal_gdal_polygonize(arr, smooth, off):
    """Noise (many diagonal touches, holes in holes) and blobs: GDAL's polygons exactly."""
    if smooth:
        arr = ndimage.median_filter(arr, size=3, mode="nearest")
    _assert_same_as_gdal(arr, *off)


def test_diagonal_touch_inside_one_object_is_a_hole_touching_the_shell():
    """4-connectivity: a hole meeting the shell at one corner stays a hole (valid OGC polygon)."""
    a = np.array([[1, 1, 2],
                  [1, 3, 1],
                  [1, 1, 1]], np.uint8)
    rp = _assert_same_as_gdal(a)
    ring = rp.polygons[list(rp.values).index(1)]
    assert len(ring.interiors) == 1 and ring.area == 7
    # two pixels of one value touching only at a corner are two polygons
    b = np.array([[1, 0], [0, 1]], np.uint8)
    assert len(_assert_same_as_gdal(b).polygons) == 2


def test_real_like_blobs_and_offsets():
    rng = np.random.default_rng(3)
    a = ndimage.zoom(rng.integers(0, 4, (12, 12)), 16, order=0).astype(np.uint8)
    a = ndimage.median_filter(a, size=9)
    a[50:60, :] = 0  # a masked stripe cuts objects in two
    _assert_same_as_gdal(a, 1024, 2048)


def test_border_pixel_lookups_match_the_pixel_map():
    a = ndimage.median_filter(np.random.default_rng(1).integers(0, 3, (37, 53)).astype(np.uint8), 3)
    rp = polygonize_runs(a)
    h, w = a.shape
    full = rp.pixel_polygons(h * w).reshape(h, w)
    assert ((full >= 0) == (a > 0)).all()
    np.testing.assert_array_equal(rp.values[full[a > 0]], a[a > 0])
    for r in (0, 17, h - 1):
        np.testing.assert_array_equal(rp.row_pixels(r), full[r])
    np.testing.assert_array_equal(rp.col_pixels(True, h), full[:, 0])
    np.testing.assert_array_equal(rp.col_pixels(False, h), full[:, -1])


def test_empty_and_single_pixel_images():
    assert len(polygonize_runs(np.zeros((5, 7), np.uint8)).polygons) == 0
    rp = _assert_same_as_gdal(np.array([[4]], np.int32))
    assert rp.counts.tolist() == [1]


def test_auto_choice_follows_run_density(monkeypatch):
    smooth = np.zeros((256, 256), np.uint8)
    smooth[:, 100:] = 2
    noise = np.random.default_rng(0).integers(0, 4, (256, 256)).astype(np.uint8)
    assert run_density(smooth) <= RUNS_MAX_DENSITY < run_density(noise)
    monkeypatch.setenv("UNETGEO_RUNS", "auto")
    assert _use_runs(smooth) and not _use_runs(noise)
    monkeypatch.setenv("UNETGEO_RUNS", "no")
    assert not _use_runs(smooth)
    monkeypatch.setenv("UNETGEO_RUNS", "yes")
    assert _use_runs(noise)


@pytest.mark.parametrize("lengths", [[1], [3, 1, 2], [50, 7, 1, 1, 200], list(range(1, 60))])
def test_list_rank_walks_each_cycle_from_its_smallest_element(lengths):
    rng = np.random.default_rng(len(lengths))
    n = sum(lengths)
    perm = rng.permutation(n)
    succ = np.empty(n, dtype=np.int64)
    start = 0
    for k in lengths:
        cyc = perm[start:start + k]
        succ[cyc] = np.roll(cyc, -1)
        start += k
    cid, pos = list_rank(succ)
    heads = {}
    for i in range(n):  # reference: walk each cycle from its smallest element
        if i in heads:
            continue
        j, walk = i, []
        while j not in walk:
            walk.append(j)
            j = int(succ[j])
        h = min(walk)
        k = walk.index(h)
        for p, e in enumerate(walk[k:] + walk[:k]):
            heads[e] = (h, p)
    order = sorted({h for h, _ in heads.values()})
    assert [order[c] for c in cid] == [heads[i][0] for i in range(n)]
    assert pos.tolist() == [heads[i][1] for i in range(n)]
