"""URI helpers: local paths and fsspec URLs behave alike (open, exists, remove, rename)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import IO, Any

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
    """``(filesystem, path within it)`` for any URI."""
    fs, path = fsspec.core.url_to_fs(str(uri))
    return fs, path


def open_file(uri: str, mode: str = "rb") -> IO[Any]:
    """Open a path or URL as a Python file object (also rasterio's ``opener``)."""
    if not is_url(uri):
        return open(local_path(uri), mode)  # noqa: SIM115
    fs, path = fs_for(uri)
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
    """Publish ``src`` as ``dst``: atomic ``os.replace`` locally, copy-then-delete on object stores."""
    if not is_url(src):
        d = local_path(dst)
        if d.is_dir():
            shutil.rmtree(d)
        os.replace(local_path(src), d)
        return
    fs, s = fs_for(src)
    _, d = fs_for(dst)
    if fs.exists(d):
        fs.rm(d, recursive=True)
    fs.mv(s, d, recursive=True)


def makedirs(uri: str) -> None:
    """Create a folder (no-op on object stores, which have no folders)."""
    if not is_url(uri):
        local_path(uri).mkdir(parents=True, exist_ok=True)


def join(base: str, *parts: str) -> str:
    """Join URI parts with ``/`` (works for paths and URLs)."""
    out = str(base).rstrip("/")
    for p in parts:
        out += "/" + p.strip("/")
    return out
