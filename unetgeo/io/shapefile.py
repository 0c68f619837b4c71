"""Huge polygons streamed into a Shapefile that GDAL has closed (the ``.shp`` records of the last rows rewritten).

GDAL's Shapefile writer turns a polygon's WKB into an OGR geometry and then a record, so a
scene-spanning outline would be held three times. The rows of such polygons are written last, by
GDAL, with their envelope rectangle as a placeholder (the attributes, the ``.dbf``, the header's
bounding box and the index are then GDAL's). :func:`stream_polygons` then cuts those placeholder
records off the end of the ``.shp`` and appends the real ones, read from the WKB in the spool a
piece at a time, and updates their ``.shx`` entries and the ``.shp`` file length. Rings are
oriented as the format (and GDAL) wants: shells clockwise, holes counter-clockwise.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

#: Points read or written at once.
PIECE_POINTS = 1 << 16
_POLYGON = 5


def _wkb_rings(spool: Any, off: int, length: int, what: str) -> list[tuple[int, int]]:
    """``(file offset of the first point, points)`` of each ring of the 2-D little-endian WKB polygon at ``off``."""
    spool.seek(off)
    head = spool.read(9)
    if len(head) != 9 or head[0] != 1 or struct.unpack("<I", head[1:5])[0] != 3:
        raise ValueError(f"{what}: not a little-endian 2-D WKB polygon")
    rings, pos = [], off + 9
    for _ in range(struct.unpack("<I", head[5:9])[0]):
        spool.seek(pos)
        (n,) = struct.unpack("<I", spool.read(4))
        rings.append((pos + 4, n))
        pos += 4 + 16 * n
    if pos != off + length:
        raise ValueError(f"{what}: the WKB is not {length} bytes long")
    return rings


def _points(spool: Any, at: int, n: int, reverse: bool) -> Any:
    """The ``(k, 2)`` float64 point pieces of a ring, last piece first (and each piece reversed) when ``reverse``."""
    starts = list(range(0, n, PIECE_POINTS))
    for s in reversed(starts) if reverse else starts:
        k = min(PIECE_POINTS, n - s)
        spool.seek(at + 16 * s)
        xy = np.frombuffer(spool.read(16 * k), dtype="<f8").reshape(k, 2)
        yield xy[::-1] if reverse else xy


def _clockwise(spool: Any, at: int, n: int) -> bool:
    """Whether a closed ring is clockwise (negative shoelace area, y up)."""
    area, prev = 0.0, None
    for xy in _points(spool, at, n, False):
        if prev is not None:
            xy = np.concatenate([prev, xy])
        area += float(np.dot(xy[:-1, 0], xy[1:, 1]) - np.dot(xy[1:, 0], xy[:-1, 1]))
        prev = xy[-1:]
    return area < 0


def _record(spool: Any, off: int, length: int, bounds: Sequence[float], number: int, out: Any, what: str) -> int:
    """Write the ``.shp`` record ``number`` of the WKB polygon at ``off``; returns its content length in bytes."""
    rings = _wkb_rings(spool, off, length, what)
    counts = [n for _, n in rings]
    parts = np.r_[0, np.cumsum(counts[:-1], dtype=np.int64)].astype("<i4") if rings else np.zeros(0, "<i4")
    content = 4 + 32 + 8 + 4 * len(rings) + 16 * sum(counts)
    out.write(struct.pack(">ii", number, content // 2) + struct.pack("<i4d2i", _POLYGON, *bounds, len(rings), sum(counts))
              + parts.tobytes())
    for i, (at, n) in enumerate(rings):
        reverse = _clockwise(spool, at, n) != (i == 0)  # shells clockwise, holes counter-clockwise
        for xy in _points(spool, at, n, reverse):
            out.write(np.ascontiguousarray(xy).tobytes())
    return content


def stream_polygons(shp: str, polygons: Sequence[tuple[Sequence[float], int, int]], spool: Any) -> None:
    """Replace the placeholder records of the last ``len(polygons)`` rows of ``shp`` by the polygons themselves.

    Args:
        shp: the ``.shp`` file (its ``.shx`` beside it), closed by GDAL.
        polygons: per row, in row order: ``(bounds xmin, ymin, xmax, ymax, WKB offset in spool, WKB length)``;
            each row's record must be the rectangle of its bounds.
        spool: the binary file holding the WKB.

    Raises:
        RuntimeError: the last records are not those placeholders (nothing is changed then).
    """
    shx = os.path.splitext(shp)[0] + ".shx"
    k = len(polygons)
    with open(shp, "r+b") as fp, open(shx, "r+b") as fx:
        fx.seek(0, os.SEEK_END)
        n = (fx.tell() - 100) // 8
        fx.seek(100 + 8 * (n - k))
        index = [struct.unpack(">ii", fx.read(8)) for _ in range(k)]
        fp.seek(0, os.SEEK_END)
        end = fp.tell()
        for i, ((bounds, _, _), (at, _)) in enumerate(zip(polygons, index, strict=True)):
            fp.seek(2 * at)
            head = fp.read(8 + 4 + 32 + 8)
            number, _ = struct.unpack(">ii", head[:8])
            kind, *box, n_parts, n_points = struct.unpack("<i4d2i", head[8:])
            if (number != n - k + i + 1 or kind != _POLYGON or (n_parts, n_points) != (1, 5)
                    or box != [float(b) for b in bounds]):
                raise RuntimeError(f"{shp}: record {n - k + i + 1} is not the placeholder written for it")
        if k and 2 * index[-1][0] + 8 + 2 * index[-1][1] != end:
            raise RuntimeError(f"{shp}: the placeholder records are not the last ones")
        if not k:
            return
        fp.seek(2 * index[0][0])
        fp.truncate()
        entries = []
        for i, (bounds, off, length) in enumerate(polygons):
            at = fp.tell()
            content = _record(spool, off, length, bounds, n - k + i + 1, fp, f"{shp}: record {n - k + i + 1}")
            entries.append((at // 2, content // 2))
        size = fp.tell()
        if size >= 1 << 32:
            raise OSError(f"{shp}: over 4 GiB, more than a Shapefile can hold")
        fp.seek(24)
        fp.write(struct.pack(">i", size // 2))
        fx.seek(100 + 8 * (n - k))
        fx.write(b"".join(struct.pack(">ii", a, c) for a, c in entries))
