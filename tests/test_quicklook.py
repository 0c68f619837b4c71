"""quicklook.png: the scene rendering chosen from the band names, legend counts, scale bar, date."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from pyproj import CRS

import unetgeo.quicklook as ql
import unetgeo.report as report
from unetgeo.io.cog import class_raster_tags, hex_to_rgba
from unetgeo.quicklook import acquisition_date, choose_rendering, scale_bar_m, stretch_rgba
from unetgeo.report import write_report
from unetgeo.vectorize import vectorize

WKT = CRS.from_epsg(32633).to_wkt()
T = rasterio.Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 6000000.0)
H, W = 120, 160
NAMES, COLORS = ["background", "water"], ["#d9d9d9", "#1f78b4"]


@pytest.mark.parametrize(("names", "bands", "title"), [
    (["red", "green", "blue"], (0, 1, 2), "true colour"),
    (["B02", "B03", "B04", "B08", "B11"], (2, 1, 0), "true colour"),
    (["SR_B2", "SR_B3", "SR_B4", "SR_B5"], (2, 1, 0), "true colour"),
    (["B03", "B04", "B08"], (2, 1, 0), "false colour (nir, red, green)"),
    (["nir", "swir", "red"], (1, 0, 2), "false colour (swir, nir, red)"),
    (["b1", "b2", "b3"], (0,), "grey (b1)"),  # unnamed: not assumed to be R-G-B
    (["VV", "VH"], (0,), "grey (VV)"),
    (["vh"], (0,), "grey (VH)"),
    (["pan"], (0,), "grey (pan)"),
])
def test_rendering_per_band_set(names, bands, title):
    r = choose_rendering(names)
    assert (r.bands, r.title) == (bands, title)
    assert r.sar == title.startswith("grey (V")


def test_stretch_grey_and_db():
    data = np.array([[[0.01, 0.1], [1.0, np.nan]]], np.float32)  # linear backscatter, one NaN
    rgba = stretch_rgba(data, np.ones((2, 2), bool), to_db=True)
    assert rgba[1, 1, 3] == 0 and (rgba[..., 0] == rgba[..., 2]).all()
    # in dB the three valid values are evenly spaced (-20, -10, 0 dB)
    g = rgba[..., 0].ravel()[:3]
    assert g[1] - g[0] == pytest.approx(g[2] - g[1], abs=0.02)


def test_acquisition_date_and_scale_bar():
    assert acquisition_date({"TIFFTAG_DATETIME": "2024:05:03 10:21:07"}) == "2024-05-03 10:21"
    assert acquisition_date({"ACQUIRED": "2023-07-01"}) == "2023-07-01"
    assert acquisition_date({"datetime": "yesterday", "x": "2020-01-01"}) is None
    assert scale_bar_m(1600.0) == (200.0, "200 m")
    assert scale_bar_m(123_000.0) == (20_000.0, "20 km")


def _write(path, data, descriptions=None, tags=None, dtype="uint16", nodata=0):
    with rasterio.open(path, "w", driver="GTiff", width=W, height=H, count=data.shape[0], dtype=dtype, crs=WKT,
                       transform=T, nodata=nodata) as ds:
        ds.write(data.astype(dtype))
        if descriptions:
            ds.descriptions = tuple(descriptions)
        if tags:
            ds.update_tags(**tags)
    return str(path)


def _run(tmp_path, scene_bands: np.ndarray, descriptions, tags=None, dtype="uint16", nodata=0):
    """A class raster (a lake and 1-px specks of water), its polygons and a scene with the given bands."""
    yy, xx = np.mgrid[:H, :W]
    cls = ((yy - 60) ** 2 + (xx - 80) ** 2 < 35**2).astype(np.uint8)
    cls[5:115:10, 5] = 1  # 11 one-pixel ponds, smaller than a quicklook pixel once decimated
    run = tmp_path / "run"
    run.mkdir()
    with rasterio.open(run / "classes.tif", "w", driver="GTiff", width=W, height=H, count=1, dtype="uint8",
                       crs=WKT, transform=T, nodata=255) as ds:
        ds.write(cls, 1)
        ds.write_colormap(1, {i: hex_to_rgba(c) for i, c in enumerate(COLORS)})
        ds.update_tags(**class_raster_tags(NAMES, COLORS))
    vec = vectorize(str(run / "classes.tif"), str(run / "polygons.gpkg"), block_px=64, shapefile=False)
    scene = _write(tmp_path / "scene.tif", scene_bands, descriptions, tags, dtype, nodata)
    return scene, run, vec


def _capture(monkeypatch) -> list:
    figs: list = []
    real = ql.save_figure

    def keep(fig, uri, **kw):
        figs.append(fig)
        return real(fig, uri, **kw)

    monkeypatch.setattr(ql, "save_figure", keep)
    return figs


def _bands(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(100, 4000, (n, H, W))


def test_legend_counts_equal_summary_polygon_counts(tmp_path, monkeypatch):
    figs = _capture(monkeypatch)
    monkeypatch.setattr(report, "QUICKLOOK_PX", 40)  # 4x decimation: one quicklook pixel is 1600 m²
    scene, run, vec = _run(tmp_path, _bands(3), ["red", "green", "blue"])
    s = write_report(str(run), scene_uri=scene, model_dir=None, config=None, timings={},
                     classes_uri=str(run / "classes.tif"), polygons_uri=vec.out_uri)
    assert s["polygon_counts"]["water"] == 12  # the lake and 11 ponds
    ax = figs[0].axes[2]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == [f"{n} ({s['polygon_counts'][n]})" for n in NAMES]
    drawn_water_rings = len(ax.collections[1].get_segments())
    assert drawn_water_rings < s["polygon_counts"]["water"]  # the ponds are not drawn, yet counted
    assert (run / "quicklook.png").stat().st_size > 10_000


@pytest.mark.parametrize(("descriptions", "n_bands", "panel"), [
    (["red", "green", "blue"], 3, "scene: true colour"),
    (None, 3, "scene: grey (b1)"),
    (["green", "red", "nir"], 3, "scene: false colour (nir, red, green)"),
])
def test_report_scene_panel_title_and_scale_bar(tmp_path, monkeypatch, descriptions, n_bands, panel):
    figs = _capture(monkeypatch)
    scene, run, vec = _run(tmp_path, _bands(n_bands), descriptions,
                           tags={"TIFFTAG_DATETIME": "2024:05:03 10:21:07"})
    s = write_report(str(run), scene_uri=scene, model_dir=None, config=None, timings={},
                     classes_uri=str(run / "classes.tif"), polygons_uri=vec.out_uri)
    ax = figs[0].axes[0]
    assert ax.get_title() == panel
    assert s["acquired"] == "2024-05-03 10:21"
    assert "acquired 2024-05-03 10:21" in figs[0].get_suptitle()
    assert "200 m" in [t.get_text() for t in ax.texts]  # 1600 m wide: a 200 m bar
    img = ax.images[0].get_array()
    assert (np.ptp(img[..., :3], axis=-1) == 0).all() == panel.startswith("scene: grey")


def test_sar_scene_in_grey_db_and_date_from_extra(tmp_path, monkeypatch):
    figs = _capture(monkeypatch)
    vv = np.random.default_rng(1).gamma(2.0, 0.05, (1, H, W))
    scene, run, vec = _run(tmp_path, vv, ["VV"], dtype="float32", nodata=None)
    s = write_report(str(run), scene_uri=scene, model_dir=None, config=None, timings={},
                     classes_uri=str(run / "classes.tif"), polygons_uri=vec.out_uri,
                     extra={"acquired": "2021-02-03T05:06:07Z"})
    assert figs[0].axes[0].get_title() == "scene: grey (VV)"
    assert s["acquired"] == "2021-02-03T05:06:07Z"  # extra keys win in summary.json
    assert "acquired 2021-02-03 05:06" in figs[0].get_suptitle()
