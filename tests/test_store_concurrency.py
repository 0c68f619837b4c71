"""Two writers of one store (two runs into one folder): never a corrupt, partial or replaced store."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import threading
from pathlib import Path

import numpy as np
import pytest

from unetgeo.errors import StoreError
from unetgeo.grid import iter_tile_windows
from unetgeo.io.owner import OwnerFile
from unetgeo.io.store import ChunkedStoreWriter, open_store

SHAPE = (2, 96, 80)
T = 32


def _data(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 1000, SHAPE, dtype=np.uint16)


def _writer(uri: str, run_key: str) -> ChunkedStoreWriter:
    return ChunkedStoreWriter(uri, shape=SHAPE, chunk_px=T, dtype="uint16", fill_value=0,
                              attrs={"who": run_key}, run_key=run_key)


def _write_all(w: ChunkedStoreWriter, data: np.ndarray, barrier: threading.Barrier | None = None) -> None:
    for i, win in enumerate(iter_tile_windows(SHAPE[1], SHAPE[2], T)):
        if barrier is not None and i == 2:
            barrier.wait(10)  # both writers are part-way before either goes on
        if not w.is_done(win):
            w.write(win, data[:, win.row_off:win.row_off + win.height, win.col_off:win.col_off + win.width])


def test_two_threads_interleaved_give_one_complete_correct_store(tmp_path: Path) -> None:
    uri = str(tmp_path / "s.zarr")
    data = _data(1)
    a, b = _writer(uri, "k1"), _writer(uri, "k1")
    assert not a.private and b.private, "the second writer must not share the first one's .tmp"
    assert a.tmp == uri + ".tmp" and b.tmp != a.tmp
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def run(w: ChunkedStoreWriter) -> None:
        try:
            _write_all(w, data, barrier)
            w.publish({"done_by": w.tmp})
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(w,)) for w in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    arr = open_store(uri)
    np.testing.assert_array_equal(arr[:], data)
    assert arr.attrs["run_key"] == "k1" and arr.attrs["complete"] is True
    leftovers = sorted(p.name for p in tmp_path.iterdir())
    assert leftovers == ["s.zarr"], leftovers  # no tmp folder, no owner file left behind


def test_a_finished_store_is_never_replaced_by_a_partial_or_foreign_one(tmp_path: Path) -> None:
    uri = str(tmp_path / "s.zarr")
    first, late = _writer(uri, "k1"), _writer(uri, "k2")  # both start while nothing is published
    _write_all(first, _data(1))
    first.publish()
    # the late writer (other inputs) only wrote part of its chunks, then publishes: refused, names both keys
    win = next(iter(iter_tile_windows(SHAPE[1], SHAPE[2], T)))
    late.write(win, np.full((2, T, T), 7, np.uint16))
    with pytest.raises(StoreError, match=r"s\.zarr: another run published it .*run key k1.*run key k2"):
        late.publish()
    late.release()
    np.testing.assert_array_equal(open_store(uri)[:], _data(1))
    assert open_store(uri).attrs["run_key"] == "k1"
    # a writer started after the publish with other inputs replaces it (a rerun with new inputs)
    rerun = _writer(uri, "k2")
    _write_all(rerun, _data(2))
    rerun.publish()
    np.testing.assert_array_equal(open_store(uri)[:], _data(2))


def test_same_run_key_finished_elsewhere_is_adopted(tmp_path: Path) -> None:
    uri = str(tmp_path / "s.zarr")
    a, b = _writer(uri, "k1"), _writer(uri, "k1")
    _write_all(a, _data(1))
    a.publish()
    before = (tmp_path / "s.zarr" / "zarr.json").stat().st_mtime_ns
    _write_all(b, _data(1))
    assert b.publish() == uri and b.already_complete
    assert (tmp_path / "s.zarr" / "zarr.json").stat().st_mtime_ns == before, "the finished store was rewritten"
    assert not Path(b.tmp).exists()


def test_a_released_or_dead_owner_is_taken_over_and_resumed(tmp_path: Path) -> None:
    uri = str(tmp_path / "s.zarr")
    a = _writer(uri, "k1")
    wins = list(iter_tile_windows(SHAPE[1], SHAPE[2], T))
    data = _data(3)
    for win in wins[:3]:
        a.write(win, data[:, win.row_off:win.row_off + win.height, win.col_off:win.col_off + win.width])
    a.release()  # the run failed: its .tmp stays for the next one
    b = _writer(uri, "k1")
    assert not b.private and b.resumed and b.resumed_chunks == 3
    b.release()
    # a claim left by a process that is gone (same host) is stale
    owner = Path(uri + ".lock.tmp")
    doc = {"pid": 2**22 + 12345, "host": os.uname().nodename, "token": "dead", "created": 0}
    owner.write_text(json.dumps(doc))
    assert OwnerFile.is_stale(doc)
    c = _writer(uri, "k1")
    assert not c.private and c.resumed_chunks == 3
    assert json.loads(owner.read_text())["pid"] == os.getpid()
    _write_all(c, data)
    c.publish()
    np.testing.assert_array_equal(open_store(uri)[:], data)


def test_a_claim_of_another_host_is_respected(tmp_path: Path) -> None:
    uri = str(tmp_path / "s.zarr")
    Path(uri + ".lock.tmp").write_text(json.dumps({"pid": 1, "host": "elsewhere", "token": "x", "created": 0}))
    w = _writer(uri, "k1")
    assert w.private
    _write_all(w, _data(4))
    w.publish()
    np.testing.assert_array_equal(open_store(uri)[:], _data(4))


def _process_writer(uri: str, seed: int, start: mp.Event) -> None:  # type: ignore[valid-type]
    w = _writer(uri, "k1")
    start.wait(30)
    _write_all(w, _data(seed))
    w.publish()


def test_two_processes_of_the_same_run_give_one_complete_store(tmp_path: Path) -> None:
    uri = str(tmp_path / "s.zarr")
    ctx = mp.get_context("spawn")
    start = ctx.Event()
    procs = [ctx.Process(target=_process_writer, args=(uri, 5, start)) for _ in range(2)]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    np.testing.assert_array_equal(open_store(uri)[:], _data(5))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.zarr"]


def test_memory_url_writers_do_not_share_a_tmp(tmp_path: Path) -> None:
    uri = f"memory://conc-{os.getpid()}/s.zarr"
    a, b = _writer(uri, "k1"), _writer(uri, "k1")
    assert not a.private and b.private
    for w in (b, a):
        _write_all(w, _data(6))
        w.publish()
    np.testing.assert_array_equal(open_store(uri)[:], _data(6))
