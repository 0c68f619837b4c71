"""unetgeo.io.parquet: the Thrift compact codec on real pyarrow footers, and values streamed into a closed file."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from unetgeo.io import parquet as P
from unetgeo.io.vector import arrow_binary, arrow_column


def _table(values, first=0):
    n = len(values)
    b = np.arange(4 * n, dtype=np.float64).reshape(n, 4) + first
    return pa.table({
        "class_id": arrow_column(np.arange(first, first + n, dtype=np.int32)),
        "name": pa.array([f"c{first + i}" for i in range(n)]),
        "when": pa.array(np.arange(n, dtype=np.int64)).cast(pa.timestamp("ms", tz="UTC")),
        "geometry": arrow_binary(values),
        "bbox": pa.StructArray.from_arrays([arrow_column(b[:, i]) for i in range(4)], names=["xmin", "ymin", "xmax", "ymax"]),
    })


def _write(path, tables, **kw):
    opts = dict(compression="zstd", use_dictionary=["class_id", "name"], data_page_version="2.0",
                write_statistics=["class_id", "name", "bbox.xmin", "bbox.ymin", "bbox.xmax", "bbox.ymax"])
    with pq.ParquetWriter(path, tables[0].schema.with_metadata({b"geo": b"{}"}), **{**opts, **kw}) as w:
        for t in tables:
            w.write_table(t)


@pytest.mark.parametrize("kw", [{}, {"write_page_index": True}, {"data_page_version": "1.0", "use_dictionary": True},
                                {"compression": "none", "write_statistics": True}])
def test_thrift_codec_gives_back_pyarrow_footers_byte_for_byte(tmp_path, kw):
    path = tmp_path / "f.parquet"
    _write(path, [_table([b"a" * 5, b"b"] * 20), _table([b""], 40), _table([b"x" * 99] * 3, 41)], **kw)
    with open(path, "rb") as f:
        at, meta = P.read_footer(f)
        f.seek(at)
        raw = f.read()[:-8]
    assert P.encode_struct(meta) == raw
    assert P.field(meta, 3) == 44 and len(P.field(meta, 4)[1]) == 3  # num_rows, row groups


def test_values_streamed_into_rows_of_their_own_read_back_everywhere(tmp_path):
    path = tmp_path / "f.parquet"
    big = bytes(range(256)) * 3000  # pieces of 4 KiB
    other = b"wkb" * 7777
    _write(path, [_table([b"a", b"bb"]), _table([b""], 2), _table([b"c" * 9] * 3, 3), _table([b""], 6)])
    P.stream_values(str(path), "geometry", [
        (2, len(big), lambda w: [w(big[i:i + 4096]) for i in range(0, len(big), 4096)]), (6, len(other), lambda w: w(other))])
    t = pq.read_table(path)
    assert t.column("geometry").to_pylist() == [b"a", b"bb", big, b"c" * 9, b"c" * 9, b"c" * 9, other]
    assert t.column("class_id").to_pylist() == list(range(7))
    assert t.column("bbox").to_pylist()[6] == {"xmin": 6.0, "ymin": 7.0, "xmax": 8.0, "ymax": 9.0}
    assert t.schema.metadata[b"geo"] == b"{}"
    f = pq.ParquetFile(path)
    assert f.read_row_group(1).column("geometry").to_pylist() == [big]
    batches = [v for b in f.iter_batches(batch_size=2, columns=["geometry"]) for v in b.column(0).to_pylist()]
    assert batches == t.column("geometry").to_pylist()
    hit = pq.read_table(path, filters=[("class_id", ">=", 6)], columns=["geometry"])  # statistics still prune
    assert hit.column("geometry").to_pylist() == [other]
    md = f.metadata.row_group(3).column(3)
    assert (md.compression, md.num_values, md.statistics) == ("UNCOMPRESSED", 1, None)


def test_a_row_not_alone_in_its_row_group_is_refused_and_nothing_changes(tmp_path):
    path = tmp_path / "f.parquet"
    _write(path, [_table([b"a", b"bb"]), _table([b""], 2)])
    before = path.read_bytes()
    with pytest.raises(ValueError, match="row 1 is not alone"):
        P.stream_values(str(path), "geometry", [(2, 3, lambda w: w(b"xyz")), (1, 3, lambda w: w(b"xyz"))])
    with pytest.raises(ValueError, match="not a top-level binary column"):
        P.stream_values(str(path), "bbox", [(2, 3, lambda w: w(b"xyz"))])
    with pytest.raises(ValueError, match="no column"):
        P.stream_values(str(path), "nothing", [(2, 3, lambda w: w(b"xyz"))])
    assert path.read_bytes() == before


def test_a_value_shorter_than_announced_fails(tmp_path):
    path = tmp_path / "f.parquet"
    _write(path, [_table([b""])])
    with pytest.raises(OSError, match="not the announced 10 bytes"):
        P.stream_values(str(path), "geometry", [(0, 10, lambda w: w(b"short"))])
