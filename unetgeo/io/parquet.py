"""Large binary values streamed into a Parquet file that pyarrow has written (footer surgery).

pyarrow needs a value whole in memory and copies it once more into its page buffer, so writing
a scene-spanning outline (tens of MB of WKB) costs twice its size. Here its row is written by
pyarrow with an empty value; once pyarrow has closed the file, :func:`stream_values` appends the
real value as a new column chunk (one uncompressed PLAIN data page, written in pieces) after the
last row group, in place of the old footer, and points that row group's column metadata at it.
Readers follow the offsets in the footer; the few bytes of the empty value stay unreferenced.

The footer is Thrift's compact protocol. :func:`decode_struct` and :func:`encode_struct` are a
schema-less codec, exact both ways: a struct is a list of ``(field id, type, value)``, a list is
``(element type, [values])``; doubles stay as their 8 raw bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

#: Thrift compact types
STOP, TRUE, FALSE, BYTE, I16, I32, I64, DOUBLE, BINARY, LIST, SET, MAP, STRUCT = range(13)
#: Parquet enums used here
BYTE_ARRAY, PLAIN, RLE, UNCOMPRESSED, DATA_PAGE, OPTIONAL, REQUIRED = 6, 0, 3, 0, 0, 1, 0
MAGIC = b"PAR1"

Struct = list  # [(field id, type, value)]


class _Reader:
    def __init__(self, buf: bytes):
        self.buf, self.at = buf, 0

    def byte(self) -> int:
        v = self.buf[self.at]
        self.at += 1
        return v

    def varint(self) -> int:
        out = shift = 0
        while True:
            v = self.byte()
            out |= (v & 0x7F) << shift
            shift += 7
            if not v & 0x80:
                return out

    def zigzag(self) -> int:
        v = self.varint()
        return (v >> 1) ^ -(v & 1)

    def raw(self, n: int) -> bytes:
        v = bytes(self.buf[self.at:self.at + n])
        if len(v) != n:
            raise ValueError("Thrift data cut short")
        self.at += n
        return v

    def value(self, t: int, in_list: bool = False) -> Any:
        if t in (TRUE, FALSE):
            return self.byte() if in_list else t == TRUE
        if t == BYTE:
            return self.byte()
        if t in (I16, I32, I64):
            return self.zigzag()
        if t == DOUBLE:
            return self.raw(8)
        if t == BINARY:
            return self.raw(self.varint())
        if t in (LIST, SET):
            head = self.byte()
            n, et = head >> 4, head & 0x0F
            if n == 15:
                n = self.varint()
            return et, [self.value(et, True) for _ in range(n)]
        if t == MAP:
            n = self.varint()
            kv = self.byte() if n else 0
            return kv >> 4, kv & 0x0F, [(self.value(kv >> 4, True), self.value(kv & 0x0F, True)) for _ in range(n)]
        if t == STRUCT:
            return self.struct()
        raise ValueError(f"unknown Thrift compact type {t}")

    def struct(self) -> Struct:
        out, last = [], 0
        while True:
            head = self.byte()
            if head == STOP:
                return out
            t, delta = head & 0x0F, head >> 4
            fid = last + delta if delta else self.zigzag()
            last = fid
            out.append((fid, t, self.value(t)))


def _varint(v: int) -> bytes:
    out = bytearray()
    while True:
        if v < 0x80:
            out.append(v)
            return bytes(out)
        out.append((v & 0x7F) | 0x80)
        v >>= 7


def _zigzag(v: int) -> bytes:
    return _varint((v << 1) ^ (v >> 63))


def _value(t: int, v: Any, in_list: bool = False) -> bytes:
    if t in (TRUE, FALSE):
        return bytes([v]) if in_list else b""
    if t == BYTE:
        return bytes([v])
    if t in (I16, I32, I64):
        return _zigzag(v)
    if t == DOUBLE:
        return bytes(v)
    if t == BINARY:
        return _varint(len(v)) + bytes(v)
    if t in (LIST, SET):
        et, items = v
        head = bytes([len(items) << 4 | et]) if len(items) < 15 else bytes([0xF0 | et]) + _varint(len(items))
        return head + b"".join(_value(et, x, True) for x in items)
    if t == MAP:
        kt, vt, items = v
        if not items:
            return b"\0"
        return _varint(len(items)) + bytes([kt << 4 | vt]) + b"".join(
            _value(kt, k, True) + _value(vt, x, True) for k, x in items)
    if t == STRUCT:
        return encode_struct(v)
    raise ValueError(f"unknown Thrift compact type {t}")


def decode_struct(buf: bytes) -> Struct:
    """A Thrift compact struct (the whole of ``buf``)."""
    r = _Reader(buf)
    out = r.struct()
    if r.at != len(buf):
        raise ValueError(f"{len(buf) - r.at} bytes after the Thrift struct")
    return out


def encode_struct(fields: Struct) -> bytes:
    """The Thrift compact bytes of a struct (fields in ascending id order)."""
    out, last = bytearray(), 0
    for fid, t, v in fields:
        ft = (TRUE if v else FALSE) if t in (TRUE, FALSE) else t
        delta = fid - last
        out += bytes([delta << 4 | ft]) if 0 < delta <= 15 else bytes([ft]) + _zigzag(fid)
        out += _value(t, v)
        last = fid
    out.append(STOP)
    return bytes(out)


def field(s: Struct, fid: int, default: Any = None) -> Any:
    """The value of field ``fid`` of ``s`` (``default`` when absent)."""
    return next((v for f, _, v in s if f == fid), default)


def put(s: Struct, fid: int, t: int, v: Any) -> None:
    """Set field ``fid`` of ``s`` in place (ids kept in ascending order)."""
    drop(s, fid)
    s.append((fid, t, v))
    s.sort(key=lambda x: x[0])


def drop(s: Struct, *fids: int) -> None:
    """Remove fields ``fids`` of ``s`` in place."""
    s[:] = [x for x in s if x[0] not in fids]


def read_footer(f: Any) -> tuple[int, Struct]:
    """``(offset of the footer, FileMetaData)`` of the Parquet file open in ``f``."""
    f.seek(0, 2)
    size = f.tell()
    f.seek(size - 8)
    tail = f.read(8)
    n = int.from_bytes(tail[:4], "little")
    if tail[4:] != MAGIC or n + 12 > size:
        raise ValueError("not a Parquet file (no PAR1 footer)")
    f.seek(size - 8 - n)
    return size - 8 - n, decode_struct(f.read(n))


def _leaf(schema: list[Struct], name: str) -> tuple[int, int]:
    """``(leaf column index, max definition level)`` of the top-level binary column ``name``."""
    leaves, i = 0, 1  # schema[0] is the root
    for _ in range(field(schema[0], 5, 0)):
        el = schema[i]
        if field(el, 4) == name.encode():
            if field(el, 5) is not None or field(el, 1) != BYTE_ARRAY or field(el, 3) not in (OPTIONAL, REQUIRED):
                raise ValueError(f"column {name} is not a top-level binary column")
            return leaves, 1 if field(el, 3) == OPTIONAL else 0
        n_leaves, todo = 0, 1  # skip this top-level field's subtree
        while todo:
            kids = field(schema[i], 5)
            todo += (kids or 0) - 1
            n_leaves += kids is None
            i += 1
        leaves += n_leaves
    raise ValueError(f"no column {name}")


def stream_values(path: str, column: str, values: Sequence[tuple[int, int, Callable[[Callable[[Any], Any]], None]]]
                  ) -> None:
    """Give rows of a closed Parquet file their real value in the binary ``column``, streamed.

    Args:
        path: the Parquet file; each row named here must have a row group of its own (the row was
            written alone), and its value in ``column`` is replaced.
        column: a top-level binary column (optional or required).
        values: ``(row index in the file, value length, copy)``, where ``copy(write)`` writes
            the value's bytes through ``write`` in pieces.

    Raises:
        ValueError: the file is not laid out as described (nothing is changed then).
    """
    with open(path, "r+b") as f:
        at, meta = read_footer(f)
        leaf, max_def = _leaf(field(meta, 2)[1], column)
        groups = field(meta, 4)[1]
        first = [0]
        for g in groups:
            first.append(first[-1] + field(g, 3))
        plan = []
        for row, length, copy in values:
            k = first.index(row) if row in first[:-1] else -1
            if k < 0 or field(groups[k], 3) != 1:
                raise ValueError(f"{path}: row {row} is not alone in a row group")
            if length > (1 << 31) - 64:
                raise ValueError(f"{path}: a value of {length} bytes does not fit one Parquet page")
            plan.append((groups[k], length, copy))
        levels = b"\2\0\0\0\2\1" if max_def else b""  # v1 page: one RLE run of level 1, 4-byte length first
        f.seek(at)
        for g, length, copy in plan:
            page = len(levels) + 4 + length
            header = encode_struct([(1, I32, DATA_PAGE), (2, I32, page), (3, I32, page), (5, STRUCT, [
                (1, I32, 1), (2, I32, PLAIN), (3, I32, RLE), (4, I32, RLE)])])
            f.write(header + levels + length.to_bytes(4, "little"))
            copy(f.write)
            size = len(header) + page
            if f.tell() != at + size:
                raise OSError(f"{path}: a streamed value is not the announced {length} bytes")
            chunk = field(g, 1)[1][leaf]
            md = field(chunk, 3)
            grow_u, grow_c = size - field(md, 6), size - field(md, 7)
            for fid, t, v in ((2, LIST, (I32, [PLAIN, RLE])), (4, I32, UNCOMPRESSED), (5, I64, 1), (6, I64, size),
                              (7, I64, size), (9, I64, at)):
                put(md, fid, t, v)
            drop(md, 10, 11, 12, 13, 14, 15, 16, 17)  # no dictionary, statistics or indexes for the new chunk
            put(chunk, 2, I64, at)
            drop(chunk, 4, 5, 6, 7)
            put(g, 2, I64, field(g, 2) + grow_u)
            if field(g, 6) is not None:
                put(g, 6, I64, field(g, 6) + grow_c)
            at += size
        footer = encode_struct(meta)
        f.write(footer + len(footer).to_bytes(4, "little") + MAGIC)
        f.truncate()


__all__ = ["decode_struct", "encode_struct", "read_footer", "stream_values"]
