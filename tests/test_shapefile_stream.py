"""unetgeo.io.shapefile: placeholder records at the end of a Shapefile replaced by polygons streamed from WKB."""

from __future__ import annotations

import tempfile

import numpy as np
import pyarrow as pa
import pyogrio.raw
import pytest
import shapely

from unetgeo.io import shapefile as S


def _write(path, geoms):
    wkb = [shapely.to_wkb(g, byte_order=1) for g in geoms]
    table = pa.table({"id": pa.array(np.arange(len(geoms), dtype=np.int32)), "geometry": pa.array(wkb, pa.binary())})
    pyogrio.raw.write_arrow(table, str(path), driver="ESRI Shapefile", geometry_name="geometry",
                            geometry_type="Polygon", crs="EPSG:32633")


def _polygons():
    t = np.linspace(0, 2 * np.pi, 400, endpoint=False)
    shell = np.c_[500000 + 1000 * np.cos(t) * (1 + 0.1 * np.sin(7 * t)), 5e6 + 1000 * np.sin(t)]
    hole = [(499900, 4999900), (499900, 5000100), (500100, 5000100), (500100, 4999900)]  # clockwise: reversed
    return [shapely.Polygon(shell, [hole]), shapely.Polygon(shell[::-1] + [3000, 0])]  # counter-clockwise shell


@pytest.mark.parametrize("piece", [7, 1 << 16])
def test_streamed_records_are_those_gdal_writes(tmp_path, monkeypatch, piece):
    """The .shp and .shx come out byte for byte as GDAL writes the real polygons (rings reoriented the same way)."""
    monkeypatch.setattr(S, "PIECE_POINTS", piece)
    small = shapely.box(0, 0, 10, 10)
    big = _polygons()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    _write(tmp_path / "a" / "p.shp", [small, *big])
    _write(tmp_path / "b" / "p.shp", [small, *(shapely.box(*g.bounds) for g in big)])
    with tempfile.TemporaryFile() as spool:
        items = []
        for g in big:
            w = shapely.to_wkb(g, byte_order=1)
            items.append((g.bounds, spool.tell(), len(w)))
            spool.write(w)
        S.stream_polygons(str(tmp_path / "b" / "p.shp"), items, spool)
    for ext in (".shp", ".shx"):
        assert (tmp_path / "a" / f"p{ext}").read_bytes() == (tmp_path / "b" / f"p{ext}").read_bytes()
    back = pyogrio.read_dataframe(tmp_path / "b" / "p.shp").geometry
    assert all(shapely.equals(a, b) for a, b in zip(back, [small, *big], strict=True))


def test_records_that_are_not_the_placeholders_are_refused_and_nothing_changes(tmp_path):
    big = _polygons()
    _write(tmp_path / "p.shp", [shapely.box(*big[0].bounds), shapely.box(0, 0, 1, 1)])
    before = [(tmp_path / f"p{e}").read_bytes() for e in (".shp", ".shx")]
    with tempfile.TemporaryFile() as spool:
        w = shapely.to_wkb(big[0], byte_order=1)
        spool.write(w)
        with pytest.raises(RuntimeError, match="record 2 is not the placeholder"):
            S.stream_polygons(str(tmp_path / "p.shp"), [(big[0].bounds, 0, len(w))], spool)
    assert [(tmp_path / f"p{e}").read_bytes() for e in (".shp", ".shx")] == before
