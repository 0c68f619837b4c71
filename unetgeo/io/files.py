"""Small-file and folder access for the rest of the library: text reads, listings, output checks.

Stages and the configuration never call ``open()`` or list folders themselves; they call these
helpers, which accept local paths and fsspec URLs alike.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from unetgeo.errors import InputError
from unetgeo.io import uri as U


def read_text(uri: str | os.PathLike) -> str:
    """The whole of a (small) text file, UTF-8.

    Raises:
        FileNotFoundError / OSError: as the filesystem raises them.
    """
    with U.open_file(str(uri), "rb") as f:
        return f.read().decode("utf-8")


def is_file(uri: str | os.PathLike) -> bool:
    """True when ``uri`` is an existing regular file (or object)."""
    if not U.is_url(uri):
        return U.local_path(uri).is_file()
    fs, path = U.fs_for(str(uri))
    return bool(fs.isfile(path))


def list_files(uri: str | os.PathLike) -> list[str]:
    """The files directly inside a folder (or URL prefix), sorted by name; [] when it is absent."""
    if not U.is_url(uri):
        p = U.local_path(uri)
        return sorted(str(c) for c in p.iterdir() if c.is_file()) if p.is_dir() else []
    fs, path = U.fs_for(str(uri))
    if not fs.isdir(path):
        return []
    proto = str(uri).split("://", 1)[0] + "://"
    return sorted(proto + f["name"] for f in fs.ls(path, detail=True) if f.get("type") == "file")


def mtime_ns(uri: str | os.PathLike) -> int:
    """Modification time of a local file in ns (0 for URLs, whose ETag serves instead)."""
    return 0 if U.is_url(uri) else int(U.local_path(uri).stat().st_mtime_ns)


def check_output_dir(uri: str, option: str = "--out") -> None:
    """Refuse an output folder that cannot be created or written, before any work starts.

    Nothing is created. For a local path: ``uri`` is an existing folder we may write in, or its
    nearest existing ancestor is a folder we may write in. URLs are checked by the first write.

    Raises:
        InputError: ``uri`` is a regular file, lies under a file, or is not writable (names it).
    """
    if U.is_url(uri):
        return
    p = Path(U.local_path(uri)).absolute()
    if p.exists() and not p.is_dir():
        raise InputError(f"{uri}: {option} is a file, not a folder; give a folder path (it is created if missing)")
    probe = p
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise InputError(f"{uri}: {option} lies under {probe}, which is a file; give a folder path")
    if not os.access(probe, os.W_OK | os.X_OK) or _immutable(probe):
        raise InputError(f"{uri}: {option} cannot be written ({probe} is read-only for this user); "
                         "choose another folder or fix its permissions")


def _immutable(path: Path) -> bool:
    """True when creating an entry in ``path`` fails (read-only mounts, ``chattr +i`` as root)."""
    probe = path / f".unetgeo-write-test-{os.getpid()}"
    try:
        fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except OSError as e:
        return e.errno in (errno.EACCES, errno.EPERM, errno.EROFS)
    os.close(fd)
    os.unlink(probe)
    return False


__all__ = ["check_output_dir", "is_file", "list_files", "mtime_ns", "read_text"]
