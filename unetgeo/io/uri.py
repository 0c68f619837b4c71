"""URI helpers: local paths and fsspec URLs behave alike (open, exists, remove, rename)."""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import threading
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    import fsspec


def is_url(uri: str | os.PathLike) -> bool:
    """True for ``scheme://…`` URIs other than ``file://``."""
    s = str(uri)
    return "://" in s and not s.startswith("file://")


def local_path(uri: str | os.PathLike) -> Path:
    """The local path of a non-URL URI (``file://`` stripped)."""
    s = str(uri)
    return Path(s[7:] if s.startswith("file://") else s)


def fs_for(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """``(filesystem, path within it)`` for any URI (fsspec is imported only when a URL needs it)."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(str(uri))
    return fs, path


def open_file(uri: str, mode: str = "rb") -> IO[Any]:
    """Open a path or URL as a Python file object (also rasterio's ``opener``)."""
    if not is_url(uri):
        return open(local_path(uri), mode)  # noqa: SIM115
    fs, path = fs_for(uri)
    if mode == "rb" and "memory" in fs.protocol:
        # fsspec's memory filesystem hands every reader the same file object (one shared seek
        # position), which breaks concurrent block reads; object stores give each open its own.
        import io

        return io.BytesIO(fs.cat_file(path))
    return fs.open(path, mode)


def exists(uri: str) -> bool:
    """True if the file or folder exists."""
    if not is_url(uri):
        return local_path(uri).exists()
    fs, path = fs_for(uri)
    return fs.exists(path)


def remove(uri: str) -> None:
    """Remove a file or folder tree if it exists."""
    if not is_url(uri):
        p = local_path(uri)
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()
        return
    fs, path = fs_for(uri)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def rename(src: str, dst: str) -> None:
    """Publish ``src`` as ``dst``: atomic ``os.replace`` locally, copy-then-delete on object stores.

    Object stores have no rename, so every object is copied (concurrently); the root metadata
    files (``zarr.json``, ``.zarray``, ``.zattrs``, ``.zgroup``) are copied last, so a reader
    that opens ``dst`` only finds it once all of its chunks are there.
    """
    if not is_url(src):
        d = local_path(dst)
        if d.is_dir():
            shutil.rmtree(d)
        os.replace(local_path(src), d)
        return
    fs, s = fs_for(src)
    _, d = fs_for(dst)
    s, d = s.rstrip("/"), d.rstrip("/")
    if fs.exists(d):
        fs.rm(d, recursive=True)
    if not fs.isdir(s):
        fs.copy(s, d)
        fs.rm(s)
        return
    files = [f for f in fs.find(s) if f.rstrip("/") != s]
    last = [f for f in files if f.rsplit("/", 1)[-1] in _ROOT_METADATA and f.rsplit("/", 1)[0] == s]
    first = [f for f in files if f not in last]
    for group in (first, last):
        if group:
            fs.copy(group, [d + f[len(s):] for f in group])
    fs.rm(s, recursive=True)


_ROOT_METADATA = ("zarr.json", ".zarray", ".zattrs", ".zgroup", ".zmetadata")


def fingerprint(uri: str) -> dict[str, Any]:
    """Cheap identity of a file without reading it: size plus mtime (local) or ETag (object store).

    Raises:
        FileNotFoundError: nothing at ``uri``.
    """
    if not is_url(uri):
        st = local_path(uri).stat()
        return {"size": int(st.st_size), "mtime_ns": int(st.st_mtime_ns)}
    fs, path = fs_for(uri)
    info = fs.info(path)
    out: dict[str, Any] = {"size": int(info.get("size") or 0)}
    for k in ("ETag", "etag", "md5Hash", "LastModified", "last_modified", "mtime", "updated"):
        if info.get(k) is not None:
            out[k] = str(info[k])
            break
    return out


def makedirs(uri: str) -> None:
    """Create a folder (no-op on object stores, which have no folders)."""
    if not is_url(uri):
        local_path(uri).mkdir(parents=True, exist_ok=True)


def sibling(uri: str, name: str) -> str:
    """The URI ``name`` in the folder of ``uri``: ``sibling("RUN/tiles.zarr", "valid.zarr") == "RUN/valid.zarr"``."""
    s = str(uri).rstrip("/")
    return (s.rsplit("/", 1)[0] + "/" + name) if "/" in s else name


def create_exclusive(uri: str, data: bytes) -> bool:
    """Create the small file ``uri`` holding ``data`` only if nothing is there; True if this call made it.

    Locally ``O_CREAT | O_EXCL`` (atomic, also across processes); on object stores a conditional
    put (``If-None-Match: *`` on S3, exclusive mode on ``memory://``), else exists-then-put.
    """
    if not is_url(uri):
        p = local_path(uri)
        p.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        return True
    fs, path = fs_for(uri)
    try:
        fs.pipe_file(path, data, mode="create")
    except FileExistsError:
        return False
    except OSError as e:  # S3 answers a failed precondition with 412 (an OSError subclass in s3fs)
        if "412" in str(e) or "PreconditionFailed" in str(e):
            return False
        raise
    return True


def read_bytes(uri: str) -> bytes | None:
    """The bytes of a small file, or None when there is none."""
    try:
        with open_file(uri, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def join(base: str, *parts: str) -> str:
    """Join URI parts with ``/`` (works for paths and URLs)."""
    out = str(base).rstrip("/")
    for p in parts:
        out += "/" + p.strip("/")
    return out


def sha256_of(uri: str, *, stop: threading.Event | None = None, block_bytes: int = 4 << 20) -> str | None:
    """Streaming sha256 of a file (path or URL), hex; None if ``stop`` was set before the end.

    Reads into one reused buffer (memory stays flat whatever the file size); the hashing
    releases the GIL, so it runs beside other threads' work.
    """
    h = hashlib.sha256()
    buf = bytearray(block_bytes)
    view = memoryview(buf)
    with open_file(uri, "rb") as f:
        readinto = getattr(f, "readinto", None)
        while True:
            if stop is not None and stop.is_set():
                return None
            if readinto is not None:
                n = readinto(view)
                if not n:
                    break
                h.update(view[:n])
            else:
                chunk = f.read(block_bytes)
                if not chunk:
                    break
                h.update(chunk)
    return h.hexdigest()


def tmp_name(uri: str) -> str:
    """A ``*.tmp`` name beside ``uri`` that no other writer uses: ``URI.<pid>-<random>.tmp``.

    Unique per call, so two writers of the same output never share (or delete) a temporary
    file; ``*.tmp`` is what :func:`list` style readers and ``.gitignore`` skip.
    """
    return f"{str(uri).rstrip('/')}.{os.getpid()}-{secrets.token_hex(4)}.tmp"


def write_atomic(uri: str, data: bytes | str) -> str:
    """Write a small file atomically: to :func:`tmp_name` first, then renamed onto ``uri``.

    A reader never sees a partial file; an interrupted write leaves only a ``*.tmp``. The
    parent folder is created for local paths; on object stores the file is one PUT (atomic
    there). ``str`` data is written as UTF-8.

    Returns:
        ``uri``.
    """
    uri = str(uri)
    blob = data.encode() if isinstance(data, str) else bytes(data)
    if is_url(uri):  # one PUT: object stores show the old or the new object, never a part
        fs, path = fs_for(uri)
        fs.pipe_file(path, blob)
        return uri
    local_path(uri).parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(uri)
    try:
        with open_file(tmp, "wb") as f:
            f.write(blob)
        rename(tmp, uri)
    except BaseException:
        remove(tmp)
        raise
    return uri


class PublishOnExit:
    """Context-manager protocol of the ``*.tmp``-then-rename writers.

    Leaving the ``with`` block normally calls ``close()`` (which publishes the output); leaving it
    with an exception calls ``abort()`` (which deletes the partial output).
    """

    def close(self) -> Any:  # pragma: no cover - subclasses implement it
        raise NotImplementedError

    def abort(self) -> None:  # pragma: no cover - subclasses implement it
        raise NotImplementedError

    def __enter__(self) -> Any:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
