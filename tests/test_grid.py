"""Grid arithmetic: tiles cover every pixel once, halos crop back exactly, stride padding."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unetgeo.errors import GridMismatchError, InputError
from unetgeo.grid import (
    Grid,
    Window,
    align_up,
    check_north_up,
    halo_window,
    n_tiles,
    same_grid,
    tile_windows,
)


@given(h=st.integers(1, 300), w=st.integers(1, 300), t=st.integers(1, 128))
@settings(max_examples=60, deadline=None)
def test_tiles_cover_each_pixel_exactly_once(h: int, w: int, t: int) -> None:
    count = np.zeros((h, w), dtype=np.int32)
    wins = tile_windows(h, w, t)
    for win in wins:
        assert 0 < win.height <= t and 0 < win.width <= t
        assert win.row_off % t == 0 and win.col_off % t == 0
        count[win.slices] += 1
    assert (count == 1).all()
    assert len(wins) == n_tiles(h, w, t)


@given(
    h=st.integers(1, 200), w=st.integers(1, 200), t=st.sampled_from([16, 32, 64]),
    halo=st.integers(0, 40), stride=st.sampled_from([8, 16, 32]),
)
@settings(max_examples=80, deadline=None)
def test_halo_window_pads_to_stride_and_crops_back(h: int, w: int, t: int, halo: int, stride: int) -> None:
    scene = np.arange(h * w, dtype=np.int64).reshape(h, w)
    for core in tile_windows(h, w, t):
        hw = halo_window(core, halo, h, w, stride)
        ph, pw = hw.padded_shape
        assert ph % stride == 0 and pw % stride == 0
        assert ph >= core.height + 2 * halo and pw >= core.width + 2 * halo
        # the read window lies inside the scene
        assert hw.read.row_off >= 0 and hw.read.col_off >= 0
        assert hw.read.row_off + hw.read.height <= h and hw.read.col_off + hw.read.width <= w
        t_, b, left, right = hw.pad
        padded = np.pad(scene[hw.read.slices], ((t_, b), (left, right)), mode="edge")
        assert padded.shape == (ph, pw)
        np.testing.assert_array_equal(padded[hw.crop], scene[core.slices])


def test_halo_is_real_context_inside_the_scene() -> None:
    core = Window(64, 64, 64, 64)
    hw = halo_window(core, 16, 256, 256, 32)
    assert hw.read == Window(48, 48, 96, 96)
    assert hw.pad == (0, 0, 0, 0)


def test_align_up() -> None:
    assert [align_up(n, 32) for n in (1, 32, 33, 64, 65)] == [32, 32, 64, 64, 96]


def test_rotated_transform_is_refused_with_the_file_name() -> None:
    with pytest.raises(InputError, match="scene.tif.*rotated"):
        check_north_up((10.0, 0.5, 0.0, 0.2, -10.0, 0.0), "scene.tif")


def test_grid_mismatch_names_both_inputs() -> None:
    g1 = Grid("EPSG:32633", (10.0, 0.0, 500000.0, 0.0, -10.0, 6e6), 100, 100)
    g2 = Grid("EPSG:32633", (10.0, 0.0, 500010.0, 0.0, -10.0, 6e6), 100, 100)
    same_grid(g1, g1, "a.tif", "b.tif")
    with pytest.raises(GridMismatchError, match="b.tif is not on the grid of a.tif: transform"):
        same_grid(g1, g2, "a.tif", "b.tif")


def test_grid_window_transform_and_attrs_round_trip() -> None:
    g = Grid("WKT", (10.0, 0.0, 500000.0, 0.0, -10.0, 6e6), 100, 130)
    assert g.window_transform(Window(5, 7, 10, 10)) == (10.0, 0.0, 500070.0, 0.0, -10.0, 6e6 - 50)
    assert Grid.from_attrs(g.to_attrs()) == g
    assert g.bounds == (500000.0, 6e6 - 1000, 501300.0, 6e6)
