"""Calibrated synthetic spectra, L1C / L2A radiometry and clouds of the generator (issue 11)."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest

from unetgeo.grid import Window
from unetgeo.synthetic import layout as L
from unetgeo.synthetic import spectra as SP
from unetgeo.synthetic.render import render_window, surface

ALL_FIELDS = tuple(float(v) for v in np.linspace(1 / 8, 1.0, 8))  # every field kind, equally


def _pure_land(lay: L.SceneLayout, win: Window) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(dn, kind, pure)``: the rendering, the surface kinds and the land pixels with no water."""
    dn, landuse = render_window(lay, win, 0.0)
    cv, f_water, _, _ = surface(lay, win, 0.0)
    return dn, cv.kind, (f_water == 0) & (landuse != L.LABEL_NODATA)


def test_every_kind_has_an_ordered_range_and_a_source() -> None:
    assert np.all(SP.P10 <= SP.MEDIAN) and np.all(SP.MEDIAN <= SP.P90)
    assert all(s.source for s in SP.SURFACES)
    assert len(SP.KIND) == len(SP.SURFACES)


def test_rendered_land_medians_fall_inside_the_cited_ranges() -> None:
    """With no atmosphere (median surfaces), each land kind's median lies in its [p10, p90] per band."""
    lay = L.scene_layout(11, 768, 768, footprint=False, calibrated=False)
    lay = dataclasses.replace(lay, field_cdf=ALL_FIELDS, conifer_share=0.5)
    dn, kind, pure = _pure_land(lay, Window(0, 0, 768, 768))
    seen = []
    for k, s in enumerate(SP.SURFACES):
        m = pure & (kind == k)
        if s.landuse == 0 or np.count_nonzero(m) < 200:
            continue
        med = np.median(dn[:, m], axis=1)
        assert np.all(med >= SP.P10[k]) and np.all(med <= SP.P90[k]), (s.name, med, SP.P10[k], SP.P90[k])
        seen.append(s.name)
    for name in ("crop", "pasture", "forest_broadleaf", "forest_conifer", "soil", "sand", "burnt", "snow", "shrub"):
        assert name in seen, f"{name} does not appear: seen {seen}"


def test_water_medians_fall_inside_the_water_ranges() -> None:
    win = Window(0, 0, 768, 768)
    for dark, lo_kind, hi_kind in ((0.0, "water_clear", "water_turbid"), (1.0, "water_dark", "water_dark")):
        lay = dataclasses.replace(L.scene_layout(5, 768, 768, footprint=False, calibrated=False), dark_water=dark)
        dn, landuse = render_window(lay, win, 0.0)
        _, f_water, _, _ = surface(lay, win, 0.0)
        m = f_water >= 0.999
        assert np.count_nonzero(m) > 500
        med = np.median(dn[:, m], axis=1)
        lo, hi = SP.P10[SP.KIND[lo_kind]], SP.P90[SP.KIND[hi_kind]]
        assert np.all(med >= np.minimum(lo, SP.P10[SP.KIND["water_shallow"]])), (med, lo)
        assert np.all(med <= np.maximum(hi, SP.P90[SP.KIND["water_shallow"]])), (med, hi)
        # water: low NIR and SWIR against vegetation; MNDWI clearly positive
        assert med[4] < 300 and (med[1] - med[4]) / (med[1] + med[4]) > 0.3


def test_l1c_adds_the_path_term_most_in_the_blue() -> None:
    win = Window(0, 0, 384, 384)
    l2a, lu = render_window(L.scene_layout(7, 384, 384, footprint=False, product="l2a"), win, 0.0)
    l1c, _ = render_window(L.scene_layout(7, 384, 384, footprint=False, product="l1c"), win, 0.0)
    water = lu == 0
    d = np.median(l1c[:, water].astype(float), axis=1) - np.median(l2a[:, water].astype(float), axis=1)
    assert d[0] > 250  # haze brightens dark water in the blue by 0.025+ reflectance
    assert d[0] > d[1] > d[3] and d[0] > d[4]  # Rayleigh + aerosol fall with wavelength


def test_radiometry_is_drawn_per_scene() -> None:
    rads = [L.scene_layout(s, 64, 64, product="l1c").radiometry for s in range(20)]
    paths = np.array([r.path for r in rads])
    assert paths[:, 0].std() > 100 and len({r.illum for r in rads}) == 20
    assert np.all(paths[:, 0] > paths[:, 4])


@pytest.mark.parametrize("fraction", [0.1, 0.3])
def test_clouds_cover_the_requested_fraction(fraction: float) -> None:
    n = 768
    lay = L.scene_layout(21, n, n, footprint=False, cloud_fraction=fraction)
    _, landuse = render_window(lay, Window(0, 0, n, n), 0.0)
    got = np.count_nonzero(landuse == L.CLOUD_CODE) / landuse.size
    assert abs(got - fraction) < 0.05, got


def test_cloud_shadows_darken_the_ground_at_the_sun_geometry_offset() -> None:
    n = 768
    win = Window(0, 0, n, n)
    cloudy = L.scene_layout(4, n, n, footprint=False, cloud_fraction=0.12)
    clear = L.scene_layout(4, n, n, footprint=False)
    a, lu = render_window(cloudy, win, 0.0)
    b, _ = render_window(clear, win, 0.0)
    ratio = a[3].astype(float) / b[3].astype(float)  # NIR with / without clouds
    cloud = lu == L.CLOUD_CODE
    shadow = (ratio < 0.6) & ~cloud
    assert shadow.mean() > 0.03  # thick clouds cast shadows of a similar size
    assert np.median(ratio[shadow]) < 0.5  # the diffuse sky light only
    # the shadow is the cloud displaced by cloud height * tan(sun zenith), away from the sun
    f = np.fft.fft2(cloud.astype(float))
    g = np.fft.fft2(shadow.astype(float))
    corr = np.fft.ifft2(np.conj(f) * g).real
    dy, dx = np.unravel_index(int(np.argmax(corr)), corr.shape)
    dy, dx = (dy + n // 2) % n - n // 2, (dx + n // 2) % n - n // 2
    cl = cloudy.clouds
    assert cl is not None and abs(dy - cl.shadow_dy) <= 3 and abs(dx - cl.shadow_dx) <= 3, (dy, dx, cl)


def test_thin_clouds_brighten_but_keep_the_ground_label() -> None:
    n = 512
    win = Window(0, 0, n, n)
    thin = L.scene_layout(9, n, n, footprint=False, thin_cloud_fraction=0.6)
    a, lu_thin = render_window(thin, win, 0.0)
    b, lu = render_window(L.scene_layout(9, n, n, footprint=False), win, 0.0)
    assert np.array_equal(lu_thin, lu)  # no pixel is labelled cloud
    assert np.mean(a[0].astype(float) - b[0]) > 100  # but the blue is brighter


def test_cloud_labels_are_class_2_in_flood_scenes(tmp_path) -> None:
    import rasterio

    from unetgeo.synthetic import make_scene

    sc = make_scene(str(tmp_path / "c.tif"), size_px=256, seed=2, cloud_fraction=0.25, footprint=False)
    with rasterio.open(sc.labels_uri) as ds:
        lab = ds.read(1)
        assert ds.tags()["class_names"] == '["background", "water", "cloud"]'
    assert set(np.unique(lab)) <= {0, 1, 2} and 0.15 < np.mean(lab == 2) < 0.35
    with rasterio.open(sc.image_uri) as ds:
        assert ds.tags()["product"] == "l2a"


# -- the spectra against the real scenes -----------------------------------------------------------
@pytest.mark.realdata
def test_real_class_medians_lie_in_the_generator_ranges(shared_data: Path, tmp_path: Path) -> None:
    """Each labelled real class's median lies in the range of its kind (eo-box L1C: with the path term)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    import real_water as rw

    rows = rw.spectra_check(shared_data / "optical", tmp_path)
    assert len(rows) == len(rw.SPECTRA_CHECKS)
    for r in rows:
        med, lo, hi = np.array(r["median"]), np.array(r["lo"]), np.array(r["hi"])
        assert np.all(med >= lo) and np.all(med <= hi), r
        assert r["inside"]
