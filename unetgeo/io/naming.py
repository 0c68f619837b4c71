"""Short, unique names for input files (used as work-folder names and in logs).

Name juggling of paths and URLs lives here, beside the other file access in ``io/``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import PurePosixPath


def stem(uri: str) -> str:
    """File name without folder and last extension: ``s3://b/x/scene.tif -> 'scene'`` (``'scene'`` if empty)."""
    return PurePosixPath(str(uri).rstrip("/").split("/")[-1]).stem or "scene"


def unique_names(names: Sequence[str]) -> list[str]:
    """Make names unique in order: the second ``'a'`` becomes ``'a_2'``, the third ``'a_3'``."""
    out: list[str] = []
    for base in names:
        name, k = base, 2
        while name in out:
            name, k = f"{base}_{k}", k + 1
        out.append(name)
    return out


def unique_stems(uris: Sequence[str]) -> list[str]:
    """:func:`stem` of each URI, made unique with :func:`unique_names`."""
    return unique_names([stem(u) for u in uris])


def pair_names(image_uris: Sequence[str]) -> list[str]:
    """Unique names of pair-folder images: ``<grandparent folder>_<stem>`` (``tile_1/images/a.jpg -> 'tile_1_a'``)."""
    raw = []
    for u in image_uris:
        p = PurePosixPath(str(u).replace("\\", "/"))
        raw.append(f"{p.parent.parent.name}_{p.stem}")
    return unique_names(raw)
