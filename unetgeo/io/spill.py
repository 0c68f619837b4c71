"""Temporary spill file for numpy arrays that must wait, unused, for a while.

:class:`unetgeo.merge.BorderMerge` keeps the pieces of the objects still open at a block-row
border; a scene-spanning object's pieces wait until the last row, so their vertices grow with the
scene. They are written here between rows and read back only when a batch is cut or dissolved,
so the resident memory stays set by the blocks in flight, not by the scene size.

The file is a :func:`tempfile.TemporaryFile`: on POSIX it has no name from the start (unlinked
at once, or never linked with ``O_TMPFILE``), elsewhere it is deleted when closed; either way
nothing is left behind once it is closed or the process dies. Reads use ``os.preadv`` (POSIX)
straight into the result array, without the file position, so worker threads can read while
the main thread appends.

Disk use: the space of freed arrays is reused (best fit) and the file shrinks when its end is
freed, so it stays near the largest set of live arrays (plus the gaps too small to reuse) rather
than all that was ever written: for vectorize, the open pieces' vertices at 8 bytes each, some
tens of MB for a 32768² scene, where the total written over the run is several times that.
"""

from __future__ import annotations

import bisect
import os
import tempfile
import threading
from dataclasses import dataclass
from types import TracebackType

import numpy as np


@dataclass(frozen=True)
class SpillHandle:
    """Where an array lies in a :class:`SpillFile`: byte ``offset``, ``dtype`` and ``shape``."""

    offset: int
    dtype: np.dtype
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


class SpillFile:
    """A temporary file that arrays are appended to (:meth:`put`) and read back from (:meth:`get`).

    ``get`` and ``free`` may run on any thread while another thread puts.

    Args:
        directory: where the file lives (None: the system temp directory). Prefer a disk with
            room next to the outputs: a temp directory on tmpfs would hold the spill in memory.
    """

    def __init__(self, directory: str | None = None):
        self._file = tempfile.TemporaryFile(prefix="unetgeo-spill-", dir=directory, buffering=0)
        self._fd = self._file.fileno()
        self._lock = threading.Lock()  # guards the end of the file, the free extents and the live count
        self._end = 0
        self._free: list[tuple[int, int]] = []  # (offset, bytes) of the gaps, sorted, never touching
        self._live = 0
        #: The largest the file has been, bytes (for the log).
        self.peak_bytes = 0

    @property
    def closed(self) -> bool:
        return self._file.closed

    def put(self, a: np.ndarray) -> SpillHandle:
        """Write ``a`` (any fixed-size dtype, any shape) into a gap or at the end; its handle, live until :meth:`free`."""
        a = np.ascontiguousarray(a)
        if a.dtype.hasobject:
            raise TypeError("object arrays cannot be spilled")
        buf = memoryview(a.reshape(-1).view(np.uint8))
        with self._lock:
            offset = self._allocate(len(buf))
            done = 0
            while done < len(buf):  # pwrite may write less than asked
                done += os.pwrite(self._fd, buf[done:], offset + done)
            self._live += 1
        return SpillHandle(offset, a.dtype, a.shape)

    def _allocate(self, size: int) -> int:
        """Offset of ``size`` bytes for a new array: the smallest gap that holds it, else the end."""
        fits = [i for i, (_, n) in enumerate(self._free) if n >= size > 0]
        if not fits:
            offset = self._end
            self._end += size
            self.peak_bytes = max(self.peak_bytes, self._end)
            return offset
        i = min(fits, key=lambda j: self._free[j][1])
        offset, n = self._free[i]
        if n == size:
            del self._free[i]
        else:
            self._free[i] = (offset + size, n - size)
        return offset

    def get(self, handle: SpillHandle) -> np.ndarray:
        """A new (writable) array with the contents put under ``handle``."""
        out = np.empty(handle.shape, dtype=handle.dtype)
        buf = memoryview(out.reshape(-1).view(np.uint8))
        done = 0
        while done < len(buf):  # preadv may read less than asked
            n = os.preadv(self._fd, [buf[done:]], handle.offset + done)
            if n == 0:
                raise OSError(f"spill file ends before the array at {handle.offset} ({handle.nbytes} bytes)")
            done += n
        return out

    def free(self, handle: SpillHandle) -> None:
        """Give back the place of ``handle`` (no longer read) for later arrays; a freed end is cut off the file."""
        with self._lock:
            if self._live <= 0:
                raise ValueError("free of a spill handle with none live (freed twice?)")
            if handle.nbytes:
                self._release(handle.offset, handle.nbytes)
            self._live -= 1

    def _release(self, offset: int, size: int) -> None:
        """Add ``size`` bytes at ``offset`` to the gaps, joined to the gaps beside them, or cut off the file at its end."""
        i = bisect.bisect(self._free, (offset, size))
        nxt = self._free[i][0] if i < len(self._free) else self._end
        if offset + size > nxt or (i > 0 and sum(self._free[i - 1]) > offset):
            raise ValueError(f"free of {size} bytes at {offset}, not all in use (freed twice?)")
        if i < len(self._free) and offset + size == self._free[i][0]:  # joins the next gap
            size += self._free.pop(i)[1]
        if i > 0 and sum(self._free[i - 1]) == offset:  # joins the previous gap (its offset + bytes)
            offset, prev = self._free.pop(i - 1)
            size += prev
            i -= 1
        if offset + size == self._end:
            self._end = offset
            os.ftruncate(self._fd, offset)
        else:
            self._free.insert(i, (offset, size))

    def close(self) -> None:
        """Close (and so delete) the file; idempotent."""
        self._file.close()

    def __enter__(self) -> SpillFile:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


__all__ = ["SpillFile", "SpillHandle"]
