"""Polygon output (GeoPackage, Shapefile) written in appended batches, and polygon reading.

:class:`PolygonWriter` appends batches of polygons to one GeoPackage layer per class and,
optionally, to one Shapefile holding all classes. Files are built under ``*.tmp`` names
(``out.gpkg.tmp``; the shapefile set in ``.out.shp.tmp/``) and renamed on :meth:`close`;
for fsspec URLs they are built in a local temp folder and uploaded.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import pyogrio
import pyogrio.raw

from unetgeo.errors import InputError
from unetgeo.io import uri as U
from unetgeo.io.uri import PublishOnExit

log = logging.getLogger(__name__)

SHP_EXTS = (".shp", ".shx", ".dbf", ".prj", ".cpg")


class PolygonWriter(PublishOnExit):
    """Append polygons to a GeoPackage (one layer per class) and optionally a Shapefile.

    Args:
        uri: final ``.gpkg`` path or URL.
        crs_wkt: CRS of the coordinates (WKT).
        fields: ``{name: numpy dtype}`` of the attributes, in order (names <= 10 characters if a
            Shapefile is written).
        shapefile_uri: final ``.shp`` path or URL, or None for no Shapefile.
    """

    def __init__(self, uri: str, crs_wkt: str, fields: Mapping[str, Any], *, shapefile_uri: str | None = None):
        self.uri = str(uri)
        self.crs_wkt = crs_wkt
        self.fields = {k: np.dtype(v) for k, v in fields.items()}
        self.shapefile_uri = shapefile_uri
        if shapefile_uri and any(len(k) > 10 for k in self.fields):
            raise ValueError(f"shapefile attribute names must be <= 10 characters: {list(self.fields)}")
        self._remote = U.is_url(self.uri)
        if self._remote:
            self._tmpdir: str | None = tempfile.mkdtemp(prefix="unetgeo-vec-")
            base_dir = self._tmpdir
        else:
            self._tmpdir = None
            base_dir = str(U.local_path(self.uri).parent)
            os.makedirs(base_dir, exist_ok=True)
        self.gpkg_tmp = os.path.join(base_dir, os.path.basename(self.uri) + ".tmp")
        U.remove(self.gpkg_tmp)
        self.shp_dir: str | None = None
        self.shp_tmp: str | None = None
        if shapefile_uri:
            shp_name = os.path.basename(str(shapefile_uri))
            self.shp_dir = os.path.join(base_dir, "." + shp_name + ".tmp")
            U.remove(self.shp_dir)
            os.makedirs(self.shp_dir)
            self.shp_tmp = os.path.join(self.shp_dir, shp_name)
        self._layers: set[str] = set()
        self._shp_started = False
        self.closed = False

    def _columns(self, attrs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        missing = set(self.fields) - set(attrs)
        if missing:
            raise ValueError(f"attributes missing: {sorted(missing)}")
        cols = []
        for k, dt in self.fields.items():
            a = np.asarray(attrs[k])
            cols.append(a.astype(object) if dt.kind in "OUS" else a.astype(dt))
        return cols

    def write(self, layer: str, geoms_wkb: Sequence[bytes] | np.ndarray, attrs: Mapping[str, np.ndarray]) -> None:
        """Append polygons (WKB) with their attributes to ``layer`` (and to the Shapefile).

        Args:
            layer: GeoPackage layer name (the class name).
            geoms_wkb: ``(n,)`` WKB polygons.
            attrs: ``{field: (n,) array}`` for every field given at construction.
        """
        geoms = np.asarray(geoms_wkb, dtype=object)
        cols = self._columns(attrs)
        names = list(self.fields)
        with warnings.catch_warnings():
            # GDAL warns about the .tmp extension of the GeoPackage being built
            warnings.filterwarnings("ignore", message=".*extension.*", category=RuntimeWarning)
            pyogrio.raw.write(
                self.gpkg_tmp, geoms, cols, names, layer=layer, driver="GPKG", geometry_type="Polygon",
                crs=self.crs_wkt, append=layer in self._layers, promote_to_multi=False,
            )
            self._layers.add(layer)
            if self.shp_tmp and (len(geoms) or not self._shp_started):
                pyogrio.raw.write(
                    self.shp_tmp, geoms, cols, names, driver="ESRI Shapefile", geometry_type="Polygon",
                    crs=self.crs_wkt, encoding="UTF-8", append=self._shp_started, promote_to_multi=False,
                )
                self._shp_started = True

    def ensure_layer(self, layer: str) -> None:
        """Create ``layer`` empty if nothing was written to it (every class gets a layer)."""
        if layer not in self._layers:
            empty = {k: np.array([], dtype=object if dt.kind in "OUS" else dt) for k, dt in self.fields.items()}
            self.write(layer, np.array([], dtype=object), empty)

    def close(self) -> tuple[str, str | None]:
        """Publish the GeoPackage (and Shapefile set); returns their URIs."""
        if self.closed:
            return self.uri, self.shapefile_uri
        self.closed = True
        if not self._layers:
            raise ValueError("no layer was written; call ensure_layer for at least one class")
        try:
            self._publish(self.gpkg_tmp, self.uri)
            if self.shp_tmp and self.shapefile_uri:
                stem_tmp = self.shp_tmp[:-4]
                stem_dst = str(self.shapefile_uri)[:-4]
                for ext in SHP_EXTS:
                    if os.path.exists(stem_tmp + ext):
                        self._publish(stem_tmp + ext, stem_dst + ext)
                shutil.rmtree(self.shp_dir, ignore_errors=True)  # type: ignore[arg-type]
        except BaseException:
            self._cleanup()
            raise
        self._cleanup()
        return self.uri, self.shapefile_uri

    def _publish(self, local: str, dst: str) -> None:
        if self._remote:
            fs, path = U.fs_for(dst)
            fs.put_file(local, path)
        else:
            os.replace(local, U.local_path(dst))

    def abort(self) -> None:
        """Delete every partial file."""
        self.closed = True
        self._cleanup()

    def _cleanup(self) -> None:
        U.remove(self.gpkg_tmp)
        for suffix in ("-journal", "-wal", "-shm"):
            U.remove(self.gpkg_tmp + suffix)
        if self.shp_dir:
            shutil.rmtree(self.shp_dir, ignore_errors=True)
        if self._tmpdir:
            shutil.rmtree(self._tmpdir, ignore_errors=True)


@contextmanager
def _local(uri: str):
    """A local path for ``uri`` (URLs are downloaded to a temp file for the block)."""
    if not U.is_url(uri):
        p = U.local_path(uri)
        if not p.exists():
            raise InputError(f"{uri}: vector file not found; run vectorize first")
        yield str(p)
        return
    d = tempfile.mkdtemp(prefix="unetgeo-vec-")
    try:
        fs, path = U.fs_for(uri)
        local = os.path.join(d, os.path.basename(path))
        fs.get_file(path, local)
        yield local
    finally:
        shutil.rmtree(d, ignore_errors=True)


def list_layers(uri: str) -> list[str]:
    """Layer names of a vector file."""
    with _local(uri) as p:
        return [str(x) for x in pyogrio.list_layers(p)[:, 0]]


def layer_stats(uri: str) -> dict[str, dict[str, float]]:
    """``{layer: {"count": n, "area_m2": sum of area_m2}}`` of every layer, without reading geometries."""
    out: dict[str, dict[str, float]] = {}
    with _local(uri) as p:
        for layer in pyogrio.list_layers(p)[:, 0]:
            info = pyogrio.read_info(p, layer=layer)
            area = 0.0
            if "area_m2" in list(info["fields"]) and info["features"]:
                df = pyogrio.read_dataframe(
                    p, sql=f'SELECT SUM(area_m2) AS a FROM "{layer}"', read_geometry=False
                )
                area = float(df["a"].iloc[0] or 0.0)
            out[str(layer)] = {"count": int(info["features"]), "area_m2": area}
    return out


def read_polygons(
    uri: str,
    layer: str | None = None,
    *,
    columns: Sequence[str] | None = None,
    where: str | None = None,
    bbox: tuple[float, float, float, float] | None = None,
    max_features: int | None = None,
) -> Any:
    """Read polygons as a GeoDataFrame, filtered in GDAL (``where`` SQL, ``bbox``, ``max_features``)."""
    with _local(uri) as p:
        return pyogrio.read_dataframe(
            p, layer=layer, columns=columns, where=where, bbox=bbox, max_features=max_features
        )
