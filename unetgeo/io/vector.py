"""Polygon output (GeoPackage, Shapefile, GeoParquet) written in appended batches, polygon reading, polygonize.

:class:`PolygonWriter` appends batches of polygons to one GeoPackage layer per class and,
optionally, to one Shapefile holding all classes. Files are built under ``*.tmp`` names
(``out.gpkg.tmp``; the shapefile set in ``.out.shp.tmp/``) and renamed on :meth:`close`;
for fsspec URLs they are built in a local temp folder and uploaded.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import warnings
from collections.abc import Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import shapely

from unetgeo.errors import InputError
from unetgeo.io import uri as U
from unetgeo.io.uri import PublishOnExit

log = logging.getLogger(__name__)

SHP_EXTS = (".shp", ".shx", ".dbf", ".prj", ".cpg")


class PolygonWriter(PublishOnExit):
    """Append polygons to a GeoPackage (one layer per class), optionally a Shapefile and a GeoParquet file.

    The GeoPackage is written as GPKG 1.2 (``application_id`` "GPKG", ``user_version`` 10200),
    which GDAL >= 2.2 reads without a warning. Batches go through pyogrio's Arrow path
    (``write_arrow``); the GeoParquet file (GeoParquet 1.1, WKB, with a ``bbox`` covering column,
    all classes) is written by pyarrow row group by row group.

    Args:
        uri: final ``.gpkg`` path or URL.
        crs_wkt: CRS of the coordinates (WKT).
        schema: Arrow schema of the attributes, in order (without the geometry).
        shapefile_uri: final ``.shp`` path or URL, or None for no Shapefile.
        parquet_uri: final ``.parquet`` path or URL, or None for no GeoParquet file.
    """

    def __init__(self, uri: str, crs_wkt: str, schema: Any, *, shapefile_uri: str | None = None,
                 parquet_uri: str | None = None):
        self.uri = str(uri)
        self.crs_wkt = crs_wkt
        self.schema = schema
        self.shapefile_uri = shapefile_uri
        self.parquet_uri = parquet_uri
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
        self.pq_tmp = os.path.join(base_dir, os.path.basename(str(parquet_uri)) + ".tmp") if parquet_uri else None
        self._pq: Any = None
        self._gpkg = _ArrowOgr.create(self.gpkg_tmp, crs_wkt)
        self._shp = _ArrowOgr.create(self.shp_tmp, crs_wkt, "shp") if self.shp_tmp and self._gpkg is not None else None
        self._layers: set[str] = set()
        self._rows: dict[str, int] = {}  # rows written to each GeoPackage layer: the next row's fid - 1
        self._spool: Any = None  # nameless file of spooled WKB (see spool)
        self._swaps: list[tuple[str, int, bytes, tuple[int, int]]] = []
        self._deferred: list[tuple[str, Any, tuple[int, int], np.ndarray]] = []
        self._pq_rows = 0  # rows written to the GeoParquet file
        self._streamed: list[tuple[int, int, int]] = []  # (GeoParquet row, WKB length, spool offset)
        self._shp_streamed: list[tuple[list[float], int, int]] = []  # (bounds, spool offset, WKB length)
        self._shp_started = False
        self.closed = False

    def write(self, layer: str, table: Any, bounds: np.ndarray | None = None) -> None:
        """Append polygons to ``layer`` (and to the Shapefile and GeoParquet file).

        Args:
            layer: GeoPackage layer name (the class name).
            table: ``pyarrow.Table`` with the schema's columns and a ``geometry`` column (WKB polygons).
                A timestamp column may come as int64 (the time unit since the epoch, see
                :func:`raw_times`): GDAL's C API takes it as the schema's timestamp, the other
                writers get it cast.
            bounds: ``(n, 4)`` xmin, ymin, xmax, ymax of the geometries, when the caller has them
                (the GeoParquet ``bbox`` column); otherwise they are read from the WKB through GEOS,
                which for a scene-spanning polygon means another copy of it.
        """
        if self._gpkg is not None:
            self._gpkg.write(layer, table, self.schema)
        self._write_others(layer, table, bounds)

    def _write_others(self, layer: str, table: Any, bounds: np.ndarray | None) -> None:
        """The Shapefile, the GeoParquet file, and the GeoPackage where GDAL's C API is not used."""
        self._write_shapefile(table)
        if self._gpkg is None or (self.pq_tmp and table.num_rows):
            typed = _typed(table, self.schema)
            if self._gpkg is None:
                self._write_pyogrio(layer, typed)
            if self.pq_tmp and table.num_rows:
                self._write_parquet(typed, bounds)
        self._layers.add(layer)
        self._rows[layer] = self._rows.get(layer, 0) + table.num_rows

    def spool(self, encode: Any) -> tuple[tuple[int, int], Any]:
        """Run ``encode(write)``, which writes one polygon's WKB in pieces, into the writer's spool file.

        Returns ``((offset, length) of the WKB, what encode returned)`` for :meth:`write_spooled`.
        """
        if self._spool is None:
            self._spool = tempfile.TemporaryFile(dir=os.path.dirname(self.gpkg_tmp), prefix=".unetgeo-wkb-")
        f = self._spool
        f.seek(0, os.SEEK_END)
        start = f.tell()
        out = encode(f.write)
        return (start, f.tell() - start), out

    def write_spooled(self, layer: str, table: Any, handle: tuple[int, int], bounds: np.ndarray) -> None:
        """Append one polygon whose WKB lies in the spool (:meth:`spool`); ``table``: its one row, no geometry.

        The GeoPackage gets the polygon's envelope rectangle through GDAL (so its R-tree, extent and
        header envelope are the polygon's), and the real WKB is copied over it from the spool, a few
        MB at a time, once GDAL has closed the file (:func:`_swap_blobs`): a scene-spanning outline is
        never held by GDAL (as WKB, OGR geometry and blob). The GeoParquet file and the Shapefile
        get their rows on :meth:`close` (:meth:`_write_deferred`), the WKB streamed in as well.
        """

        bounds = np.asarray(bounds, dtype=np.float64).reshape(4)
        if self._gpkg is not None:
            placeholder = _envelope_wkb(bounds)
            self._gpkg.write(layer, table.append_column("geometry", arrow_binary([placeholder])), self.schema)
            self._rows[layer] = fid = self._rows.get(layer, 0) + 1
            self._swaps.append((layer, fid, placeholder, handle))
        if self._gpkg is None or self.shp_tmp or self.pq_tmp:  # written on close, when little else is held
            self._deferred.append((layer, table, handle, bounds))
        if self._gpkg is not None:
            self._layers.add(layer)  # (pyogrio creates its layers on their first write)

    def _write_deferred(self) -> None:
        """The spooled polygons' rows of the GeoParquet file and Shapefile (and pyogrio's GeoPackage), one by one.

        The GeoParquet row is written with an empty WKB, its own row group, and the Shapefile row
        with the polygon's envelope rectangle, the last records of the file; :meth:`close` streams
        the real WKB into both once they are closed (:func:`unetgeo.io.parquet.stream_values`,
        :func:`unetgeo.io.shapefile.stream_polygons`), so the outline is never held (pyarrow would
        hold it and a copy, GDAL an OGR geometry and a record). pyogrio's GeoPackage takes it whole.
        """
        import mmap

        while self._deferred:
            layer, table, (off, length), bounds = self._deferred.pop(0)
            if self._gpkg is None:  # pyogrio's GeoPackage takes the WKB whole
                # read into pages of its own, given back to the system as soon as it is written
                with mmap.mmap(-1, max(length, 1)) as wkb:
                    self._spool.seek(off)
                    if self._spool.readinto(wkb) != length:
                        raise OSError(f"{self.gpkg_tmp}: the spooled WKB of a polygon of layer {layer} is cut short")
                    view = memoryview(wkb)[:length]
                    full = table.append_column("geometry", arrow_binary([view]))  # no copy of the value
                    self._write_pyogrio(layer, _typed(full, self.schema))
                    del full, view
            if self.shp_tmp:  # its envelope rectangle now, the polygon streamed into the .shp on close
                self._shp_streamed.append((bounds.tolist(), off, length))
                self._write_shapefile(table.append_column("geometry", arrow_binary([_envelope_wkb(bounds)])))
            if self.pq_tmp:
                self._streamed.append((self._pq_rows, length, off))
                self._write_parquet(_typed(table.append_column("geometry", arrow_binary([b""])), self.schema),
                                    bounds.reshape(1, 4))
            self._layers.add(layer)
            if self._gpkg is None:
                self._rows[layer] = self._rows.get(layer, 0) + 1

    def _stream_parquet_values(self) -> None:
        """Put the spooled WKB of the GeoParquet rows written empty by :meth:`_write_deferred` into the closed file."""
        from unetgeo.io.parquet import stream_values

        def copier(off: int, length: int) -> Any:
            return lambda write: _copy_spool(self._spool, off, length, write, self.pq_tmp)

        stream_values(self.pq_tmp, "geometry", [(row, length, copier(off, length)) for row, length, off in self._streamed])
        log.debug("%d outlines streamed into %s", len(self._streamed), self.pq_tmp)

    def _write_pyogrio(self, layer: str, table: Any) -> None:
        """The GeoPackage when GDAL's C API is not usable here."""
        import pyogrio.raw

        with warnings.catch_warnings():
            # GDAL warns about the .tmp extension of the files being built
            warnings.filterwarnings("ignore", message=".*extension.*", category=RuntimeWarning)
            pyogrio.raw.write_arrow(
                table, self.gpkg_tmp, layer=layer, driver="GPKG", geometry_name="geometry",
                geometry_type="Polygon", crs=self.crs_wkt, append=layer in self._layers,
                dataset_options={"VERSION": "1.2"} if not self._layers else None,
            )

    def _write_shapefile(self, table: Any) -> None:
        """Append ``table`` (int64 or timestamp times) to the Shapefile, all classes in one layer
        (created by the first call, rows or not); through GDAL's C API, else pyogrio."""
        if not self.shp_tmp or not (table.num_rows or not self._shp_started):
            return
        shp = _shapefile_table(table, self.schema)
        if self._shp is not None:
            self._shp.write(os.path.splitext(os.path.basename(self.shp_tmp))[0], shp, shp.schema)
        else:
            import pyogrio.raw

            pyogrio.raw.write_arrow(
                shp, self.shp_tmp, driver="ESRI Shapefile", geometry_name="geometry", geometry_type="Polygon",
                crs=self.crs_wkt, encoding="UTF-8", append=self._shp_started,
            )
        self._shp_started = True

    def _write_parquet(self, table: Any, bounds: np.ndarray | None = None) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        b = (np.asarray(bounds, dtype=np.float64).reshape(-1, 4) if bounds is not None else
             shapely.bounds(shapely.from_wkb(_binary_values(table.column("geometry")))).reshape(-1, 4))
        bbox = pa.StructArray.from_arrays([arrow_column(b[:, i]) for i in range(4)], names=["xmin", "ymin", "xmax", "ymax"])
        table = table.append_column("bbox", bbox)
        if self._pq is None:
            schema = table.schema.with_metadata({b"geo": json.dumps(_geo_metadata(self.crs_wkt)).encode()})
            # no min/max statistics of the WKB column: pyarrow builds them from whole values, about
            # 7 copies of a scene-spanning outline (+190 MiB for a 27 MB one); the bbox columns'
            # statistics are what readers filter on
            stats = [f.name for f in schema if f.name not in ("geometry", "bbox")] + [f"bbox.{k}" for k in bbox.type.names]
            # no dictionary for the WKB (every outline is unique: a dictionary only copies it) and
            # data pages v2, whose values are compressed straight from the Arrow buffer (one copy
            # fewer than v1 pages in a hand test with pyarrow 26). Outlines over HUGE_VERTICES do
            # not pass through pyarrow at all (see _stream_parquet_values)
            dictionary = [c for c in stats if c != "bbox" and not c.startswith("bbox.")]
            self._pq = pq.ParquetWriter(self.pq_tmp, schema, compression="zstd", write_statistics=stats,
                                        use_dictionary=dictionary, data_page_version="2.0")
        self._pq.write_table(table.replace_schema_metadata(self._pq.schema.metadata))
        self._pq_rows += table.num_rows

    def ensure_layer(self, layer: str) -> None:
        """Create ``layer`` empty if nothing was written to it (every class gets a layer)."""
        if layer not in self._layers:
            self.write(layer, self._empty_table())

    def _empty_table(self) -> Any:
        import pyarrow as pa

        return pa.table({**{f.name: pa.nulls(0, _raw_type(f.type)) for f in self.schema},
                         "geometry": pa.nulls(0, pa.binary())})

    def close(self) -> tuple[str, str | None, str | None]:
        """Publish the GeoPackage (and Shapefile set, GeoParquet file); returns their URIs."""
        if self.closed:
            return self.uri, self.shapefile_uri, self.parquet_uri
        self.closed = True
        if not self._layers:
            raise ValueError("no layer was written; call ensure_layer for at least one class")
        try:
            self._write_deferred()
            if self._gpkg is not None:
                self._gpkg.close()  # builds the spatial indexes
                if self._swaps:
                    _swap_blobs(self.gpkg_tmp, self._swaps, self._spool)
                    log.debug("%d spooled polygons put into %s", len(self._swaps), self.gpkg_tmp)
            if self.pq_tmp:
                if self._pq is None:  # no polygon at all: an empty file with the full schema
                    self._write_parquet(self._empty_table())
                self._pq.close()
                if self._streamed:
                    self._stream_parquet_values()
            if self._shp is not None:
                self._shp.close()
            if self._shp_streamed:
                from unetgeo.io.shapefile import stream_polygons

                stream_polygons(self.shp_tmp, self._shp_streamed, self._spool)  # type: ignore[arg-type]
                log.debug("%d outlines streamed into %s", len(self._shp_streamed), self.shp_tmp)
            # every file is complete before the first is published: a failure above publishes nothing
            if self.pq_tmp:
                self._publish(self.pq_tmp, str(self.parquet_uri))
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
        return self.uri, self.shapefile_uri, self.parquet_uri

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
        for ogr in (self._gpkg, self._shp):
            if ogr is not None:
                ogr.close()
        if self._spool is not None:
            self._spool.close()
            self._spool = None
        if self._pq is not None:
            try:
                self._pq.close()
            except Exception:  # noqa: BLE001  (already closed, or the write failed)
                pass
            self._pq = None
        U.remove(self.gpkg_tmp)
        for suffix in ("-journal", "-wal", "-shm"):
            U.remove(self.gpkg_tmp + suffix)
        if self.pq_tmp:
            U.remove(self.pq_tmp)
        if self.shp_dir:
            shutil.rmtree(self.shp_dir, ignore_errors=True)
        if self._tmpdir:
            shutil.rmtree(self._tmpdir, ignore_errors=True)


#: GeoPackage binary header: envelope bytes by the flags' envelope indicator (bits 1-3).
_GPKG_ENVELOPE = {0: 0, 1: 32, 2: 48, 3: 48, 4: 64}
#: Bytes of spooled WKB read at once when it is copied into an output.
SPOOL_PIECE = 4 << 20
_UPDATE_TRIGGER = re.compile(r"\b(AFTER|BEFORE|INSTEAD\s+OF)\s+UPDATE\b", re.IGNORECASE)


def _envelope_wkb(bounds: np.ndarray) -> bytes:
    """WKB of the rectangle ``bounds`` (xmin, ymin, xmax, ymax): the placeholder of a spooled polygon."""
    return shapely.to_wkb(shapely.box(*np.asarray(bounds, dtype=np.float64).tolist(), ccw=True), byte_order=1)


def _copy_spool(spool: Any, off: int, length: int, write: Any, what: str, piece: int = SPOOL_PIECE) -> None:
    """Copy ``length`` bytes of ``spool`` from ``off`` through ``write``, ``piece`` bytes at a time."""
    spool.seek(off)
    left = length
    while left:
        data = spool.read(min(piece, left))
        if not data:
            raise OSError(f"{what}: the spooled WKB is cut short")
        write(data)
        left -= len(data)


def _swap_blobs(path: str, swaps: Sequence[tuple[str, int, bytes, tuple[int, int]]], spool: Any,
                piece: int = SPOOL_PIECE) -> None:
    """Put the spooled WKB of each ``(table, fid, placeholder WKB, (offset, length))`` into the GeoPackage.

    In one transaction: the table is rebuilt with its geometry column last (:func:`_geometry_last`;
    SQLite builds a row whose zeroed blob is not its last value in memory, twice the blob's size),
    the table's UPDATE triggers (GDAL's R-tree triggers, which call
    SpatiaLite-style functions plain sqlite3 lacks) are dropped, each row's blob is replaced by a
    zeroed blob of the new size, its GeoPackage header (kept from the placeholder: the same
    envelope) and WKB written into it in pieces, and the triggers created again. The envelope
    does not change, so the R-tree stays right. A row whose blob is not its placeholder is an error.
    """
    import sqlite3

    con = sqlite3.connect(path, isolation_level=None)
    try:
        con.execute("PRAGMA legacy_alter_table = ON")  # a rename that leaves the other tables' triggers unparsed
        con.execute("BEGIN IMMEDIATE")
        for table in dict.fromkeys(t for t, *_ in swaps):
            geom = con.execute("SELECT column_name FROM gpkg_geometry_columns WHERE table_name = ?", (table,)).fetchone()[0]
            if not _geometry_last(con, table, geom):
                log.info("%s: layer %s is not laid out as expected; its large blobs are swapped in memory", path, table)
            triggers = [sql for (sql,) in con.execute(
                "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = ?", (table,))
                if sql and _UPDATE_TRIGGER.search(sql)]
            names = [n for (n, sql) in con.execute(
                "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = ?", (table,))
                if sql and _UPDATE_TRIGGER.search(sql)]
            for n in names:
                con.execute(f'DROP TRIGGER "{n}"')
            for t, fid, placeholder, (off, length) in swaps:
                if t != table:
                    continue
                row = con.execute(f'SELECT "{geom}" FROM "{table}" WHERE rowid = ?', (fid,)).fetchone()
                old = bytes(row[0]) if row and row[0] is not None else b""
                head = 8 + _GPKG_ENVELOPE.get((old[3] >> 1) & 7, -1) if len(old) > 8 and old[:2] == b"GP" else -1
                if head < 8 or old[head:] != placeholder:
                    raise RuntimeError(f"{path}: row {fid} of layer {table} is not the placeholder written for it")
                con.execute(f'UPDATE "{table}" SET "{geom}" = zeroblob(?) WHERE rowid = ?', (head + length, fid))
                with con.blobopen(table, geom, fid) as blob:
                    blob.write(old[:head])
                    _copy_spool(spool, off, length, blob.write, f"{path}: row {fid} of layer {table}", piece)
            for sql in triggers:
                con.execute(sql)
        con.execute("COMMIT")
    except BaseException:
        if con.in_transaction:
            con.execute("ROLLBACK")
        raise
    finally:
        con.close()


_QUOTED = re.compile(r'^"((?:[^"]|"")*)"')
_TABLE_CONSTRAINT = ("CONSTRAINT", "PRIMARY", "UNIQUE", "CHECK", "FOREIGN")


def _top_level(body: str) -> list[str]:
    """The comma-separated items of a column list (commas inside parentheses or quotes kept)."""
    items, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(body):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'`[":
            quote = "]" if ch == "[" else ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            items.append(body[start:i].strip())
            start = i + 1
    return [*items, body[start:].strip()]


def _geometry_last(con: Any, table: str, geom: str) -> bool:
    """Rebuild GeoPackage ``table`` (open transaction on ``con``) with column ``geom`` last.

    The rows (fids kept), triggers, indexes and AUTOINCREMENT sequence stay as they were; only the
    column order changes. Returns False, changing nothing, where the table's SQL is not a plain
    list of quoted column definitions (as GDAL writes it).
    """
    (sql,) = con.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone()
    cols = _top_level(sql[sql.index("(") + 1: sql.rindex(")")])
    names = [m.group(1).replace('""', '"') if (m := _QUOTED.match(c)) else None for c in cols]
    if None in names or names.count(geom) != 1 or any(c.split()[0].upper() in _TABLE_CONSTRAINT for c in cols):
        return False
    at = names.index(geom)
    if at == len(cols) - 1:
        return True
    order = [*range(at), *range(at + 1, len(cols)), at]
    tmp = f"{table}__unetgeo_rebuild"
    q = ", ".join(_quote(names[i]) for i in order)
    saved = [s for (s,) in con.execute(
        "SELECT sql FROM sqlite_master WHERE tbl_name = ? AND type IN ('trigger', 'index') AND sql IS NOT NULL", (table,))]
    con.execute(f"CREATE TABLE {_quote(tmp)} ({', '.join(cols[i] for i in order)})")
    con.execute(f"INSERT INTO {_quote(tmp)} ({q}) SELECT {q} FROM {_quote(table)}")
    con.execute(f"DROP TABLE {_quote(table)}")
    con.execute(f"ALTER TABLE {_quote(tmp)} RENAME TO {_quote(table)}")
    for s in saved:
        con.execute(s)
    return True


def _quote(name: str) -> str:
    """An SQL identifier in double quotes."""
    return '"' + name.replace('"', '""') + '"'


#: Shapefile field names are <= 10 characters.
SHP_RENAME = {"perimeter_m": "perim_m"}


def _shapefile_table(table: Any, schema: Any) -> Any:
    """``table`` as a Shapefile takes it: short names, times as ISO 8601 text (the columns that
    ``schema`` declares as timestamps, int64 or timestamp in ``table``)."""
    import pyarrow as pa

    times = {f.name: f.type.unit for f in schema if pa.types.is_timestamp(f.type)}
    cols, names = [], []
    for f, col in zip(table.schema, table.columns, strict=True):
        unit = times.get(f.name, f.type.unit if pa.types.is_timestamp(f.type) else None)
        cols.append(pa.chunked_array([_iso_times(c, unit) for c in col.chunks], pa.string()) if unit else col)
        names.append(SHP_RENAME.get(f.name, f.name))
    return pa.table(cols, names=names)


def _iso_times(col: Any, unit: str) -> Any:
    """``YYYY-MM-DDTHH:MM:SSZ`` strings of an int64 or timestamp Arrow array in ``unit`` since the
    epoch (UTC), nulls kept; built from buffers (no compute kernels: +8 MiB, nor pandas)."""
    from datetime import UTC, datetime

    import pyarrow as pa

    n, bufs = len(col), col.buffers()
    vals = (np.frombuffer(bufs[1], dtype=np.int64)[col.offset:col.offset + n] if n and bufs[1] is not None
            else np.zeros(n, dtype=np.int64))
    valid = (np.unpackbits(np.frombuffer(bufs[0], dtype=np.uint8), bitorder="little")[col.offset:col.offset + n]
             .astype(bool) if col.null_count and bufs[0] is not None else np.full(n, col.null_count == 0))
    uniq, inv = np.unique(vals[valid], return_inverse=True)
    per_s = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}[unit]
    text = np.array([datetime.fromtimestamp(v // per_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ") for v in uniq.tolist()],
                    dtype="S20")
    offsets = np.r_[0, np.cumsum(np.where(valid, 20, 0))].astype(np.int32)
    bitmap = None if valid.all() else pa.py_buffer(np.packbits(valid, bitorder="little"))
    return pa.Array.from_buffers(pa.string(), n, [bitmap, pa.py_buffer(offsets), pa.py_buffer(text[inv].tobytes())],
                                 null_count=int(n - valid.sum()))


def _raw_type(t: Any) -> Any:
    """int64 for a timestamp type (see :func:`raw_times`), else ``t``."""
    import pyarrow as pa

    return pa.int64() if pa.types.is_timestamp(t) else t


def arrow_column(values: np.ndarray, valid: np.ndarray | None = None) -> Any:
    """An Arrow array over a numeric numpy array (zero copy), null where ``valid`` is False.

    ``pa.array`` imports pandas (half a second) the first time it is called, whatever it is
    given; ``Array.from_buffers`` does not, so a GeoPackage-only run never loads pandas.
    """
    import pyarrow as pa

    values = np.ascontiguousarray(values)
    bitmap, nulls = None, 0
    if valid is not None and not valid.all():
        bitmap, nulls = pa.py_buffer(np.packbits(valid, bitorder="little")), int(len(valid) - valid.sum())
    return pa.Array.from_buffers(pa.from_numpy_dtype(values.dtype), len(values), [bitmap, pa.py_buffer(values)],
                                 null_count=nulls)


def _int32_values(col: Any) -> np.ndarray:
    """The values of a null-free int32 Arrow column as numpy, without ``to_numpy`` (which imports pandas)."""
    parts = [np.frombuffer(c.buffers()[1], dtype=np.int32)[c.offset:c.offset + len(c)] for c in col.chunks]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)


def _binary_values(col: Any) -> np.ndarray:
    """A binary Arrow column as a numpy object array of bytes (``to_pylist``: no pandas, as for ints)."""
    out = np.empty(len(col), dtype=object)
    out[:] = [v for c in col.chunks for v in c.to_pylist()]
    return out


def arrow_binary(values: Sequence[Any]) -> Any:
    """An Arrow binary array (large binary from 2 GiB) of bytes-like ``values``; a single value is not copied.

    Built from buffers: ``pa.array`` would import pandas and copy the value.
    """
    views = [memoryview(v).cast("B") for v in values]
    offsets = np.r_[0, np.cumsum([len(v) for v in views], dtype=np.int64)]
    return _binary_array(offsets, views[0] if len(views) == 1 else b"".join(views))


def _binary_array(offsets: np.ndarray, data: Any) -> Any:
    """An Arrow binary array (large binary from 2 GiB) of the values ``data[offsets[i]:offsets[i + 1]]``."""
    import pyarrow as pa

    kind, dt = (pa.binary(), np.int32) if offsets[-1] < 2**31 else (pa.large_binary(), np.int64)
    return pa.Array.from_buffers(kind, len(offsets) - 1, [None, pa.py_buffer(offsets.astype(dt)), pa.py_buffer(data)])


def arrow_repeated(text: str, n: int) -> Any:
    """An Arrow string array of ``n`` copies of ``text``."""
    import pyarrow as pa

    b = text.encode()
    offsets = np.arange(n + 1, dtype=np.int64) * len(b)
    kind, dt = (pa.string(), np.int32) if offsets[-1] < 2**31 else (pa.large_string(), np.int64)
    return pa.Array.from_buffers(kind, n, [None, pa.py_buffer(offsets.astype(dt)), pa.py_buffer(b * n)])


def arrow_wkb(geoms: np.ndarray) -> Any:
    """An Arrow binary array of the WKB of 2-D polygons (lengths from ring and vertex counts, no per-row Python)."""
    data = b"".join(shapely.to_wkb(geoms).tolist())
    lengths = 9 + 4 * (shapely.get_num_interior_rings(geoms) + 1) + 16 * shapely.get_num_coordinates(geoms)
    offsets = np.r_[0, np.cumsum(lengths, dtype=np.int64)]
    if offsets[-1] != len(data):
        raise ValueError("arrow_wkb takes 2-D polygons only")
    return _binary_array(offsets, data)


def raw_times(n: int, value: Any, unit_s: float = 1e-3) -> Any:
    """A column of ``n`` copies of an aware datetime (or nulls for None) as int64 time units since the epoch.

    pyarrow imports pandas the first time it wraps a timestamp array; :class:`PolygonWriter`
    takes timestamp columns as int64 so that a GeoPackage-only run never does.
    """
    import pyarrow as pa

    if value is None:
        return pa.nulls(n, pa.int64())
    return arrow_column(np.full(n, round(value.timestamp() / unit_s), dtype=np.int64))


def _typed(table: Any, schema: Any) -> Any:
    """``table`` with its int64 time columns cast to the schema's timestamp types."""
    import pyarrow as pa

    cols = {f.name: f.type for f in schema}
    for i, f in enumerate(table.schema):
        want = cols.get(f.name, f.type)
        if want.equals(f.type):
            continue
        col = table.column(i)
        if pa.types.is_timestamp(want) and pa.types.is_int64(f.type):  # the same buffers, read as times:
            col = pa.chunked_array([c.view(want) for c in col.chunks], want)  # no compute kernels (+8 MiB)
        else:
            col = col.cast(want)
        table = table.set_column(i, pa.field(f.name, want), col)
    return table


def _geo_metadata(crs_wkt: str) -> dict[str, Any]:
    """GeoParquet 1.1 ``geo`` metadata: WKB polygons, PROJJSON CRS, ``bbox`` covering column.

    The PROJJSON comes from the PROJ that rasterio loaded; pyproj would load another (+11 MiB).
    """
    from rasterio.crs import CRS

    return {"version": "1.1.0", "primary_column": "geometry", "columns": {"geometry": {
        "encoding": "WKB", "geometry_types": ["Polygon"], "crs": CRS.from_wkt(crs_wkt).to_dict(projjson=True),
        "covering": {"bbox": {k: ["bbox", k] for k in ("xmin", "ymin", "xmax", "ymax")}}}}}


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
    import pyogrio

    with _local(uri) as p:
        return [str(x) for x in pyogrio.list_layers(p)[:, 0]]


def layer_stats(uri: str) -> dict[str, dict[str, float]]:
    """``{layer: {"count": n, "area_m2": sum of area_m2}}`` of every layer, without reading geometries."""
    import pyogrio

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
    import pyogrio

    with _local(uri) as p:
        return pyogrio.read_dataframe(
            p, layer=layer, columns=columns, where=where, bbox=bbox, max_features=max_features
        )


# -- polygonize through GDAL's C API -------------------------------------------------------------

_GDT_INT32 = 5
_WKB_POLYGON = 3
_OFT_INTEGER = 0
_OFT_REAL = 2


class _GdalPolygonizer:
    """``GDALPolygonize`` called through ctypes on the libgdal that rasterio loaded.

    rasterio's ``features.shapes`` holds the GIL during ``GDALPolygonize`` and then builds a
    GeoJSON dict per polygon; ctypes releases the GIL for every C call, and the polygons come back
    as one WKB column through OGR's Arrow stream, so blocks polygonize in parallel threads.
    """

    def __init__(self, path: str):
        lib = ctypes.CDLL(path)
        vp, ci, cp = ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p
        sigs = {
            "GDALAllRegister": ([], None), "GDALGetDriverByName": ([cp], vp),
            "GDALCreate": ([vp, cp, ci, ci, ci, ci, vp], vp), "GDALGetRasterBand": ([vp, ci], vp),
            "GDALRasterIO": ([vp, ci, ci, ci, ci, ci, vp, ci, ci, ci, ci, ci], ci),
            "GDALSetGeoTransform": ([vp, ctypes.POINTER(ctypes.c_double)], ci),
            "GDALDatasetCreateLayer": ([vp, cp, vp, ci, vp], vp), "OGR_Fld_Create": ([cp, ci], vp),
            "OGR_L_CreateField": ([vp, vp, ci], ci), "OGR_Fld_Destroy": ([vp], None),
            "GDALPolygonize": ([vp, vp, vp, ci, vp, vp, vp], ci),
            "OGR_L_GetArrowStream": ([vp, vp, ctypes.POINTER(cp)], ctypes.c_bool),
            "GDALClose": ([vp], ci), "CPLGetLastErrorMsg": ([], cp),
        }
        for name, (args, res) in sigs.items():
            fn = getattr(lib, name)
            fn.argtypes, fn.restype = args, res
        self.lib = lib
        lib.GDALAllRegister()
        self.mem = lib.GDALGetDriverByName(b"MEM")
        self.vec = lib.GDALGetDriverByName(b"Memory") or self.mem
        if not self.mem or not self.vec:
            raise OSError(f"{path}: GDAL has no MEM / Memory driver")

    def _error(self, what: str) -> OSError:
        msg = (self.lib.CPLGetLastErrorMsg() or b"").decode(errors="replace")
        return OSError(f"GDAL {what} failed: {msg}")

    def polygonize(self, labels: np.ndarray, row_off: int, col_off: int) -> tuple[np.ndarray, np.ndarray]:
        """See :func:`polygonize_labels`."""
        import pyarrow as pa

        lib = self.lib
        lab = np.ascontiguousarray(labels, dtype=np.int32)
        h, w = lab.shape
        rds = lib.GDALCreate(self.mem, b"", w, h, 1, _GDT_INT32, None)
        vds = lib.GDALCreate(self.vec, b"", 0, 0, 0, 0, None)
        try:
            if not rds or not vds:
                raise self._error("MEM dataset creation")
            gt = (ctypes.c_double * 6)(float(col_off), 1.0, 0.0, float(row_off), 0.0, 1.0)
            lib.GDALSetGeoTransform(rds, gt)
            band = lib.GDALGetRasterBand(rds, 1)
            if lib.GDALRasterIO(band, 1, 0, 0, w, h, lab.ctypes.data, w, h, _GDT_INT32, 0, 0):
                raise self._error("RasterIO")
            layer = lib.GDALDatasetCreateLayer(vds, b"p", None, _WKB_POLYGON, None)
            fld = lib.OGR_Fld_Create(b"v", _OFT_INTEGER)
            lib.OGR_L_CreateField(layer, fld, 1)
            lib.OGR_Fld_Destroy(fld)
            # the label band is its own mask: 0 = no polygon (GDAL reads it as Byte, saturating)
            if lib.GDALPolygonize(band, band, layer, 0, None, None, None):
                raise self._error("Polygonize")
            stream = (ctypes.c_void_p * 5)()
            opts = (ctypes.c_char_p * 3)(b"INCLUDE_FID=NO", b"GEOMETRY_ENCODING=WKB", None)
            if not lib.OGR_L_GetArrowStream(layer, ctypes.addressof(stream), opts):
                raise self._error("GetArrowStream")
            table = pa.RecordBatchReader._import_from_c(ctypes.addressof(stream)).read_all()
        finally:
            if vds:
                lib.GDALClose(vds)
            if rds:
                lib.GDALClose(rds)
        ids = _int32_values(table.column("v")).astype(np.int64)
        geom_col = [n for n in table.column_names if n != "v"][0]
        return shapely.from_wkb(_binary_values(table.column(geom_col))), ids


class _ArrowSchema(ctypes.Structure):
    _fields_ = [("format", ctypes.c_char_p), ("name", ctypes.c_char_p), ("metadata", ctypes.c_char_p),
                ("flags", ctypes.c_int64), ("n_children", ctypes.c_int64), ("children", ctypes.c_void_p),
                ("dictionary", ctypes.c_void_p), ("release", ctypes.CFUNCTYPE(None, ctypes.c_void_p)),
                ("private_data", ctypes.c_void_p)]


class _ArrowArray(ctypes.Structure):
    _fields_ = [("length", ctypes.c_int64), ("null_count", ctypes.c_int64), ("offset", ctypes.c_int64),
                ("n_buffers", ctypes.c_int64), ("n_children", ctypes.c_int64), ("buffers", ctypes.c_void_p),
                ("children", ctypes.c_void_p), ("dictionary", ctypes.c_void_p),
                ("release", ctypes.CFUNCTYPE(None, ctypes.c_void_p)), ("private_data", ctypes.c_void_p)]


def _release(s: ctypes.Structure) -> None:
    if s.release:
        s.release(ctypes.addressof(s))


def _strings(*items: str) -> Any:
    """A NULL-terminated ``char **`` of ``items``."""
    return (ctypes.c_char_p * (len(items) + 1))(*[i.encode() for i in items], None)


class _ArrowOgr:
    """A GeoPackage (GPKG 1.2) or Shapefile kept open while batches are appended through ``OGR_L_WriteArrowBatch``.

    GeoPackage: one transaction per batch; the spatial index of every layer is built once, on
    :meth:`close` (pyogrio reopens the file for each append, and its appends update the R-tree row
    by row). Uses the libgdal rasterio loaded (see :class:`_GdalPolygonizer`), so pyogrio's Python
    package (which imports pandas and geopandas, +70 MiB) is not loaded; None from :meth:`create`
    where that is not usable, or with ``UNETGEO_GPKG_WRITER=pyogrio`` (both files through pyogrio).
    """

    SIGS = {
        "GDALCreate": ([ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                        ctypes.c_void_p], ctypes.c_void_p),
        "OSRNewSpatialReference": ([ctypes.c_char_p], ctypes.c_void_p), "OSRRelease": ([ctypes.c_void_p], None),
        "OGR_L_CreateFieldFromArrowSchema": ([ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p], ctypes.c_bool),
        "OGR_L_WriteArrowBatch": ([ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p],
                                  ctypes.c_bool),
        "GDALDatasetStartTransaction": ([ctypes.c_void_p, ctypes.c_int], ctypes.c_int),
        "GDALDatasetCommitTransaction": ([ctypes.c_void_p], ctypes.c_int),
        "CPLPushErrorHandler": ([ctypes.c_void_p], None), "CPLPopErrorHandler": ([], None),
        "OGR_Fld_SetWidth": ([ctypes.c_void_p, ctypes.c_int], None),
        "OGR_Fld_SetPrecision": ([ctypes.c_void_p, ctypes.c_int], None),
    }
    #: driver, dataset creation options, layer creation options, a transaction per batch, width of
    #: float64 fields (0: GDAL's choice)
    KINDS = {"gpkg": (b"GPKG", ("VERSION=1.2",), (), True, 0),
             "shp": (b"ESRI Shapefile", (), ("ENCODING=UTF-8",), False, 24)}

    def __init__(self, poly: _GdalPolygonizer, path: str, crs_wkt: str, kind: str = "gpkg"):
        lib = self.lib = poly.lib
        for name, (args, res) in self.SIGS.items():
            fn = getattr(lib, name)
            fn.argtypes, fn.restype = args, res
        self.poly = poly
        driver, ds_opts, self._layer_opts, self._transactions, self._real_width = self.KINDS[kind]
        self.what = driver.decode()
        drv = lib.GDALGetDriverByName(driver)
        if not drv:
            raise OSError(f"GDAL has no {self.what} driver")
        lib.CPLPushErrorHandler(ctypes.cast(lib.CPLQuietErrorHandler, ctypes.c_void_p))  # the .tmp extension
        try:
            self.ds = lib.GDALCreate(drv, path.encode(), 0, 0, 0, 0, _strings(*ds_opts))
        finally:
            lib.CPLPopErrorHandler()
        if not self.ds:
            raise poly._error(f"{self.what} creation of {path}")
        self.srs = lib.OSRNewSpatialReference(crs_wkt.encode())
        self.layers: dict[str, int] = {}
        self._time_formats: dict[str, bytes] | None = None

    @classmethod
    def create(cls, path: str, crs_wkt: str, kind: str = "gpkg") -> _ArrowOgr | None:
        if os.environ.get("UNETGEO_GPKG_WRITER", "ctypes") != "ctypes":
            return None
        poly = _polygonizer()
        if poly is None:
            return None
        try:
            return cls(poly, path, crs_wkt, kind)
        except (OSError, AttributeError) as e:
            log.info("%s through pyogrio (%s)", kind, e)
            return None

    def _real_field(self, layer: int, name: str) -> None:
        """A Real field of :attr:`_real_width` digits (6 decimals): GDAL's default for a Shapefile, 24
        with 15 decimals, leaves 8 digits before the point, and GDAL warns on stderr for every area
        over 10^8 m² (writing it with fewer decimals)."""
        lib = self.lib
        fld = lib.OGR_Fld_Create(name.encode(), _OFT_REAL)
        try:
            lib.OGR_Fld_SetWidth(fld, self._real_width)
            lib.OGR_Fld_SetPrecision(fld, 6)
            if lib.OGR_L_CreateField(layer, fld, 1):
                raise self.poly._error(f"field {name} creation")
        finally:
            lib.OGR_Fld_Destroy(fld)

    def _layer(self, name: str, schema: Any) -> int:
        if name not in self.layers:
            lib = self.lib
            layer = lib.GDALDatasetCreateLayer(self.ds, name.encode(), self.srs, _WKB_POLYGON,
                                               _strings(*self._layer_opts))
            if not layer:
                raise self.poly._error(f"layer {name} creation")
            for f in schema:
                if f.name == "geometry":
                    continue
                if self._real_width and str(f.type) == "double":
                    self._real_field(layer, f.name)
                    continue
                c = _ArrowSchema()
                f._export_to_c(ctypes.addressof(c))
                try:
                    if not lib.OGR_L_CreateFieldFromArrowSchema(layer, ctypes.addressof(c), None):
                        raise self.poly._error(f"field {f.name} creation")
                finally:
                    _release(c)
            self.layers[name] = layer
        return self.layers[name]

    def write(self, name: str, table: Any, schema: Any) -> None:
        """Append ``table`` (Arrow, WKB ``geometry`` column) to layer ``name`` (created on first use).

        Columns that ``schema`` declares as timestamps may be int64 in ``table``: their exported
        format is set to the timestamp's (same 64-bit layout) for GDAL, and restored before release.
        """
        lib = self.lib
        layer = self._layer(name, schema)
        if self._time_formats is None:
            self._time_formats = self._formats(schema)
        formats = self._time_formats
        opts = _strings("GEOMETRY_NAME=geometry")
        if self._transactions and lib.GDALDatasetStartTransaction(self.ds, 0):
            raise self.poly._error("StartTransaction")
        for batch in table.combine_chunks().to_batches():
            sch, arr = _ArrowSchema(), _ArrowArray()
            batch._export_to_c(ctypes.addressof(arr), ctypes.addressof(sch))
            children = ctypes.cast(sch.children, ctypes.POINTER(ctypes.POINTER(_ArrowSchema)))
            patched = []
            try:
                for i in range(sch.n_children):
                    child = children[i].contents
                    want = formats.get((child.name or b"").decode())
                    if want is not None and child.format == b"l":
                        patched.append((child, child.format))
                        child.format = want
                if not lib.OGR_L_WriteArrowBatch(layer, ctypes.addressof(sch), ctypes.addressof(arr), opts):
                    raise self.poly._error(f"write to layer {name}")
            finally:
                for child, old in patched:
                    child.format = old
                _release(arr)
                _release(sch)
        if self._transactions and lib.GDALDatasetCommitTransaction(self.ds):
            raise self.poly._error("CommitTransaction")

    @staticmethod
    def _formats(schema: Any) -> dict[str, bytes]:
        """Arrow C format string of every timestamp field of ``schema``."""
        import pyarrow as pa

        out = {}
        for f in schema:
            if pa.types.is_timestamp(f.type):
                c = _ArrowSchema()
                f.type._export_to_c(ctypes.addressof(c))
                try:
                    out[f.name] = bytes(c.format)
                finally:
                    _release(c)
        return out

    def close(self) -> None:
        """Close the file (builds the spatial indexes); idempotent."""
        if self.ds:
            ds, self.ds = self.ds, None
            self.lib.OSRRelease(self.srs)
            if self.lib.GDALClose(ds):
                raise self.poly._error(f"{self.what} close")



_POLYGONIZER: list[_GdalPolygonizer | None] = []
_POLYGONIZER_LOCK = threading.Lock()


def _loaded_libgdal() -> str | None:
    """Path of the libgdal rasterio loaded into this process (Linux), or None."""
    import rasterio._base  # noqa: F401  (loads libgdal)

    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "libgdal" in line and "/" in line}
    except OSError:
        return None
    rio_dir = os.path.dirname(os.path.dirname(rasterio._base.__file__))
    ranked = sorted(paths, key=lambda p: (not p.startswith(os.path.join(rio_dir, "rasterio")), "pyogrio" in p))
    return ranked[0] if ranked else None


def _polygonizer() -> _GdalPolygonizer | None:
    with _POLYGONIZER_LOCK:
        if not _POLYGONIZER:
            inst = None
            if os.environ.get("UNETGEO_POLYGONIZE", "ctypes") == "ctypes":
                path = _loaded_libgdal()
                try:
                    inst = _GdalPolygonizer(path) if path else None
                except (OSError, AttributeError) as e:  # AttributeError: a symbol is missing (GDAL < 3.6)
                    log.info("GDAL C API not usable (%s); polygonizing through rasterio.features.shapes", e)
            _POLYGONIZER.append(inst)
        return _POLYGONIZER[0]


def _polygonize_rasterio(labels: np.ndarray, row_off: int, col_off: int) -> tuple[np.ndarray, np.ndarray]:
    from rasterio import Affine
    from rasterio.features import shapes

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


def polygonize_labels(labels: np.ndarray, row_off: int = 0, col_off: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Polygons of the components of a label image (GDAL polygonize, 4-connectivity).

    Args:
        labels: ``(h, w)`` int32 component ids, 0 = background.
        row_off: row of ``labels[0, 0]`` in the raster.
        col_off: column of ``labels[0, 0]`` in the raster.

    Returns:
        ``(polygons (n,) shapely, ids (n,) int64)``; coordinates are ``(col, row)`` pixel corners
        of the whole raster (exact integers), one polygon per 4-connected component. Releases the
        GIL while GDAL works (C API through ctypes; ``rasterio.features.shapes`` as fallback, or
        with ``UNETGEO_POLYGONIZE=rasterio``).
    """
    if not (labels > 0).any():
        return np.array([], dtype=object), np.array([], dtype=np.int64)
    p = _polygonizer()
    if p is None:
        return _polygonize_rasterio(labels, row_off, col_off)
    return p.polygonize(labels, row_off, col_off)
