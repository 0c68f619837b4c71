"""Spill file of the border merge: arrays round-trip (threads too), space is reused, the file never
outlives its run, and vectorize writes the same polygons whether the open pieces spill or not."""

from __future__ import annotations

import os
import queue
import threading

import numpy as np
import pyogrio
import pytest
import shapely
from scipy import ndimage
from test_vectorize import write_raster

import unetgeo.merge as merge
import unetgeo.vectorize as vec
from unetgeo.io.spill import SpillFile
from unetgeo.vectorize import vectorize

needs_proc = pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd to see open files")


def _open_files_in(directory) -> list[str]:
    """``/proc/self/fd`` entries of this process's open files in ``directory`` (deleted ones too)."""
    root = os.path.realpath(directory) + os.sep
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith(root):
                out.append(f"/proc/self/fd/{fd}")
        except OSError:  # closed meanwhile (the listing's own fd)
            pass
    return out


@needs_proc
def test_round_trip_reuse_and_close(tmp_path):
    rng = np.random.default_rng(0)
    arrays = [rng.integers(-2**31, 2**31 - 1, (1000, 2)).astype(np.int32), rng.normal(size=77),
              rng.integers(0, 255, (3, 4, 5)).astype(np.uint8), np.zeros((0, 2), np.int32),
              rng.integers(0, 2, 33).astype(bool), np.arange(12, dtype=np.int64).reshape(3, 4)[:, ::2]]
    spill = SpillFile(str(tmp_path))
    handles = [spill.put(a) for a in arrays]
    assert os.listdir(tmp_path) == []  # no name: nothing to leave behind if the process dies
    (fd,) = _open_files_in(tmp_path)
    assert os.stat(fd).st_size == sum(a.nbytes for a in arrays)
    for a, h in zip(arrays, handles, strict=True):
        b = spill.get(h)
        assert b.dtype == a.dtype and b.shape == a.shape and np.array_equal(a, b)
        b[...] = 0  # a copy of its own, writable
    assert np.array_equal(spill.get(handles[0]), arrays[0])

    first = handles[0]
    spill.free(first)  # the first 8000 bytes are a gap now; a smaller array goes there
    small = spill.put(np.arange(500, dtype=np.int64))
    assert small.offset == first.offset
    assert np.array_equal(spill.get(small), np.arange(500))
    peak = spill.peak_bytes
    for h in [small, *handles[1:]]:
        spill.free(h)
    assert os.stat(fd).st_size == 0  # all freed: the file is cut back to nothing
    again = spill.put(arrays[0])
    assert again.offset == 0 and spill.peak_bytes == peak
    spill.free(again)
    with pytest.raises(ValueError, match="freed twice"):
        spill.free(again)
    with pytest.raises(TypeError):
        spill.put(np.array([None], dtype=object))
    spill.close()
    assert spill.closed and _open_files_in(tmp_path) == [] and os.listdir(tmp_path) == []
    spill.close()  # idempotent


@needs_proc
def test_context_manager_closes_on_error(tmp_path):
    with pytest.raises(RuntimeError), SpillFile(str(tmp_path)) as spill:
        spill.put(np.ones(10))
        assert len(_open_files_in(tmp_path)) == 1
        raise RuntimeError("boom")
    assert spill.closed and _open_files_in(tmp_path) == []


@needs_proc
def test_gaps_are_reused_and_joined(tmp_path):
    """Random puts and frees against a model: contents intact, the file no larger than needed at the end."""
    rng = np.random.default_rng(3)
    live: dict[int, tuple] = {}
    most = written = 0  # the most bytes live at once, all bytes put
    with SpillFile(str(tmp_path)) as spill:
        for i in range(600):
            if live and rng.random() < 0.45:
                k = list(live)[rng.integers(len(live))]
                a, h = live.pop(k)
                assert np.array_equal(spill.get(h), a)
                spill.free(h)
            else:
                a = rng.integers(0, 2**31, (int(rng.integers(0, 400)), 2)).astype(np.int32)
                live[i] = (a, spill.put(a))
                written += a.nbytes
                most = max(most, sum(b.nbytes for b, _ in live.values()))
        assert all(np.array_equal(spill.get(h), a) for a, h in live.values())
        (fd,) = _open_files_in(tmp_path)
        ends = [h.offset + h.nbytes for _, h in live.values()]
        assert os.stat(fd).st_size == max(ends, default=0)  # a freed end is cut off
        assert written > 3 * most and spill.peak_bytes < 1.25 * most  # near the live set, not all written
        a, h = next(iter(live.values()))
        spill.free(h)
        with pytest.raises(ValueError, match="freed twice"):
            spill.free(h)  # others still live: caught by the gap bookkeeping
        for _, h in list(live.values())[1:]:
            spill.free(h)
        assert os.stat(fd).st_size == 0


def test_threads_read_and_free_while_the_main_thread_puts(tmp_path):
    """As in vectorize: workers read back (and free) batches while the main thread appends more, into reused gaps."""
    n, n_readers = 400, 4
    todo: queue.Queue = queue.Queue(maxsize=8)  # the puts wait for the readers: a slow machine too
    bad: list[int] = []

    def content(i: int) -> np.ndarray:
        return (np.arange(37 + (i * 7919) % 3000, dtype=np.int64) * (i + 1)).reshape(-1, 1)

    def reader() -> None:
        while (item := todo.get()) is not None:
            i, h = item
            if not np.array_equal(spill.get(h), content(i)):
                bad.append(i)
            spill.free(h)

    with SpillFile(str(tmp_path)) as spill:
        threads = [threading.Thread(target=reader) for _ in range(n_readers)]
        for t in threads:
            t.start()
        for i in range(n):
            todo.put((i, spill.put(content(i))))
        for _ in threads:
            todo.put(None)
        for t in threads:
            t.join()
        assert bad == []
        assert spill.peak_bytes < sum(content(i).nbytes for i in range(n)) / 4  # gaps were reused


# -- vectorize ------------------------------------------------------------------------------------


def _scene(h: int = 176, w: int = 176, span: int = 116) -> np.ndarray:
    """Smooth classes (objects across many 16-px blocks) plus a frame and a snake over the top ``span`` rows.

    The frame and the snake stay open through the block rows they cover (their pieces are cut
    out of each row's batch and spill again); below them, whole batches finish and are read back
    by the row dissolves on the worker threads.
    """
    a = ndimage.median_filter(np.random.default_rng(11).integers(0, 3, (h, w)).astype(np.uint8), 5)
    a[:span, :3] = a[:span, -3:] = a[:3, :] = a[span - 3:span, :] = 3
    for r in range(8, span - 32, 24):
        a[r:r + 2, 6:w - 6] = 4  # snake: rows joined at alternate ends
        a[r:r + 26, (6 if r // 24 % 2 else w - 8):][:, :2] = 4
    a[40:44, 50:60] = 255
    return a


def _rows(uri: str) -> list[tuple]:
    """Every polygon as (layer, normalized WKB, the attributes but the creation time), sorted."""
    out = []
    for layer in pyogrio.list_layers(uri)[:, 0]:
        meta, _, geoms, fields = pyogrio.raw.read(uri, layer=layer)
        cols = [f.tolist() for n, f in zip(meta["fields"], fields, strict=True) if n != "created"]
        wkb = shapely.to_wkb(shapely.normalize(shapely.from_wkb(geoms)))
        out += [(layer, g, *attrs) for g, *attrs in zip(wkb, *cols, strict=True)]
    return sorted(out, key=repr)


class _Recorder(SpillFile):
    """A :class:`SpillFile` that keeps count of what is put and read, and of every instance made."""

    made: list[_Recorder] = []

    def __init__(self, directory: str | None = None):
        super().__init__(directory)
        self.puts = self.gets = 0
        self.readers: set[str] = set()  # names of the threads that read back
        self.directory = directory
        _Recorder.made.append(self)

    def put(self, a):
        self.puts += 1
        return super().put(a)

    def get(self, handle):
        self.gets += 1
        self.readers.add(threading.current_thread().name)
        return super().get(handle)


@pytest.fixture
def recorder(monkeypatch):
    _Recorder.made = []
    monkeypatch.setattr(vec, "SpillFile", _Recorder)
    return _Recorder


@needs_proc
@pytest.mark.parametrize("runs", ["yes", "no"], ids=["runs", "gdal"])
def test_vectorize_output_is_the_same_with_every_piece_spilled(tmp_path, monkeypatch, recorder, runs):
    monkeypatch.setenv("UNETGEO_RUNS", runs)
    a = _scene()
    conf = np.random.default_rng(1).integers(30, 100, a.shape).astype(np.uint8)
    cu, fu = write_raster(tmp_path / "c.tif", a), write_raster(tmp_path / "f.tif", conf)
    kw = dict(confidence_uri=fu, shapefile=False, block_px=16, n_threads=3)

    monkeypatch.setattr(merge, "SPILL_VERTICES", 10**12)  # nothing spills
    (tmp_path / "ref").mkdir()
    ref = vectorize(cu, str(tmp_path / "ref" / "p.gpkg"), **kw)
    assert recorder.made[-1].puts == 0

    monkeypatch.setattr(merge, "SPILL_VERTICES", 0)  # every open batch spills
    out_dir = tmp_path / "out"
    got = vectorize(cu, str(out_dir / "p.gpkg"), **kw)
    spill = recorder.made[-1]
    assert spill.directory == str(out_dir)  # next to the files being built, not in the system temp dir
    assert spill.puts > 20 and spill.gets == spill.puts  # every spilled batch read back exactly once
    assert len(spill.readers) > 1  # by the row dissolves on the workers too, while the main thread puts
    assert spill.closed and _open_files_in(out_dir) == [] and sorted(os.listdir(out_dir)) == ["p.gpkg"]
    assert got.n_merged == ref.n_merged > 10 and got.counts == ref.counts
    assert _rows(got.out_uri) == _rows(ref.out_uri)


def test_small_scenes_do_not_spill(tmp_path, recorder):
    cu = write_raster(tmp_path / "c.tif", _scene())
    vectorize(cu, str(tmp_path / "p.gpkg"), shapefile=False, block_px=16)
    assert recorder.made[-1].puts == 0 and recorder.made[-1].closed  # batches below SPILL_VERTICES stay in memory


@needs_proc
def test_spill_file_is_gone_after_an_error(tmp_path, monkeypatch, recorder):
    monkeypatch.setattr(merge, "SPILL_VERTICES", 0)
    real = merge._dissolve_chunk
    calls = []

    def fail_later(*args):
        calls.append(1)
        if len(calls) == 4:  # some rows done, others still open (in the spill)
            raise RuntimeError("dissolve failed")
        return real(*args)

    monkeypatch.setattr(merge, "_dissolve_chunk", fail_later)
    cu = write_raster(tmp_path / "c.tif", _scene())
    out_dir = tmp_path / "out"
    with pytest.raises(RuntimeError, match="dissolve failed"):
        vectorize(cu, str(out_dir / "p.gpkg"), shapefile=False, block_px=16, n_threads=2)
    spill = recorder.made[-1]
    assert spill.puts > spill.gets > 0  # it failed with pieces still in the spill
    assert spill.closed and _open_files_in(out_dir) == [] and os.listdir(out_dir) == []
