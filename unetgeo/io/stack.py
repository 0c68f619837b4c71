"""Band stacks: several GeoTIFFs (e.g. one per Sentinel-2 band) read as one scene.

The stack takes the grid of its finest file; coarser files are resampled onto it window by window.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import PurePosixPath

import numpy as np

from unetgeo.errors import GridMismatchError, InputError
from unetgeo.grid import Grid, Window
from unetgeo.io.crs import crs_equal, crs_name
from unetgeo.io.scene import SceneInfo, SceneReader, open_scene

_ALIGN_TOL_PX = 0.01  # extents may differ by at most this fraction of a pixel of the finest grid


def open_stack(uris: Sequence[str], band_names: Sequence[str] | None = None) -> SceneInfo:
    """Open several GeoTIFFs as one scene whose bands are the files' bands, in the given order.

    The files must share a CRS and cover the same extent; they may differ in resolution
    (Sentinel-2's 20 m bands beside its 10 m bands): the scene takes the grid of the finest
    file (smallest pixel area; the first such file), and coarser files are resampled onto it when
    read (:class:`StackReader`). Band names default to the file stems (``B02``…), with
    ``_<description or bN>`` appended for the bands of multi-band files.

    Args:
        uris: paths or fsspec URLs, one or more bands each, all of one data type.
        band_names: one name per band of the stack.

    Raises:
        SceneReadError / InputError: as :func:`open_scene`, naming the offending file; also
            different data types.
        GridMismatchError: a file with another CRS, or whose extent does not line up.
    """
    if not uris:
        raise InputError("no scene files were given; pass a GeoTIFF or a list of single-band GeoTIFFs")
    return stack_of([open_scene(u) for u in uris], band_names)


def stack_of(infos: Sequence[SceneInfo], band_names: Sequence[str] | None = None) -> SceneInfo:
    """The stack of already opened files (see :func:`open_stack`); checks and grid as there."""
    ref = min(infos, key=lambda i: (i.grid.res[0] * i.grid.res[1], infos.index(i)))
    ry, rx = ref.grid.res
    for info in infos:
        if info.dtype != infos[0].dtype:
            raise InputError(
                f"{info.uri}: data type {info.dtype} differs from {infos[0].uri}'s {infos[0].dtype}; "
                "all files of a band stack need one data type (convert with `gdal_translate -ot`)"
            )
        if not crs_equal(info.grid.crs_wkt, ref.grid.crs_wkt):
            raise GridMismatchError(
                f"{info.uri}: its CRS ({crs_name(info.grid.crs_wkt)}) differs from {ref.uri}'s "
                f"({crs_name(ref.grid.crs_wkt)}); all files of a band stack must share one CRS. "
                f"Reproject it first, e.g. `gdalwarp -t_srs <CRS of {ref.uri}> -tr {rx} {ry}`"
            )
        b, rb = info.grid.bounds, ref.grid.bounds
        off_px = max(abs(b[0] - rb[0]) / rx, abs(b[2] - rb[2]) / rx, abs(b[1] - rb[1]) / ry, abs(b[3] - rb[3]) / ry)
        if off_px > _ALIGN_TOL_PX:
            raise GridMismatchError(
                f"{info.uri}: its extent {tuple(round(v, 6) for v in b)} does not line up with {ref.uri}'s "
                f"{tuple(round(v, 6) for v in rb)} (off by {off_px:.3g} pixels of the {rx:g} grid); files of a "
                f"band stack must cover the same extent. Cut it with `gdalwarp -te {rb[0]} {rb[1]} {rb[2]} {rb[3]}`"
            )
    names: list[str] = []
    for info in infos:
        stem = PurePosixPath(str(info.uri).rstrip("/")).stem
        if info.count == 1:
            names.append(stem)
        else:
            names.extend(f"{stem}_{d if d else f'b{i + 1}'}" for i, d in enumerate(info.descriptions))
    if len(set(names)) != len(names):
        names = [f"b{i + 1}" for i in range(len(names))]
    if band_names is not None:
        if len(band_names) != len(names):
            raise InputError(
                f"{infos[0].uri} (+{len(infos) - 1} more files): the stack has {len(names)} bands but "
                f"{len(band_names)} band names were given: {list(band_names)}"
            )
        names = list(band_names)
    nodatas = {("nan" if n is not None and np.isnan(n) else n) for n in (i.nodata for i in infos)}
    nodata = infos[0].nodata if len(nodatas) == 1 else None
    kinds = {i.mask_kind for i in infos}
    return SceneInfo(
        uri=infos[0].uri,
        grid=ref.grid,
        count=sum(i.count for i in infos),
        dtype=infos[0].dtype,
        nodata=nodata,
        band_names=tuple(names),
        mask_kind=kinds.pop() if len(kinds) == 1 else "mixed",
        is_geographic=ref.is_geographic,
        driver=ref.driver,
        block_shape=ref.block_shape,
        descriptions=tuple(d for i in infos for d in i.descriptions),
        members=tuple(infos),
        scales=tuple(v for i in infos for v in i.radiometry[0]),
        offsets=tuple(v for i in infos for v in i.radiometry[1]),
    )


def select_bands(info: SceneInfo, request: Sequence[str], sensor: str | None = None) -> SceneInfo:
    """The scene restricted to (and reordered as) the requested bands; reads only those afterwards.

    Args:
        info: a single file or a stack.
        request: band names, descriptions, codes (``B02``/``B2``), canonical names or 1-based
            numbers (see :func:`unetgeo.bands.select_indexes`).
        sensor: the band table (``s2``, ``landsat8``, ``landsat7``, ``s1``); None: guessed.

    Raises:
        InputError: an item that matches no band or several (names what the scene offers).
    """
    from unetgeo.bands import select_indexes

    where = info.uri if not info.members else f"{info.uri} (+{len(info.members) - 1} more files)"
    pos = select_indexes(list(request), list(info.band_names), list(info.descriptions), sensor, where)
    owners: list[tuple[SceneInfo, int]] = []  # (member, 1-based band in it) of each stack band
    for m in info.members or (info,):
        owners.extend((m, k) for k in (m.indexes or range(1, m.count + 1)))
    parts: list[tuple[SceneInfo, list[int], list[int]]] = []  # (member, its bands, stack positions)
    for p in pos:
        m, k = owners[p]
        if parts and parts[-1][0] is m:
            parts[-1][1].append(k)
            parts[-1][2].append(p)
        else:
            parts.append((m, [k], [p]))
    picked = [_subset(m, ks, [p - _first(owners, m) for p in ps]) for m, ks, ps in parts]
    names = [info.band_names[p] for p in pos]
    if len(picked) == 1:
        return replace(picked[0], band_names=tuple(names))
    return stack_of(picked, names)


def _first(owners: list[tuple[SceneInfo, int]], member: SceneInfo) -> int:
    return next(i for i, (m, _) in enumerate(owners) if m is member)


def _subset(m: SceneInfo, file_bands: list[int], local: list[int]) -> SceneInfo:
    """One file's :class:`SceneInfo` reading only ``file_bands`` (1-based); ``local``: their positions in ``m``."""
    sc, of = m.radiometry
    return replace(m, indexes=tuple(file_bands), count=len(file_bands),
                   band_names=tuple(m.band_names[i] for i in local),
                   descriptions=tuple(m.descriptions[i] for i in local) if m.descriptions else (),
                   scales=tuple(sc[i] for i in local), offsets=tuple(of[i] for i in local))


class StackReader:
    """Windowed reader of a band stack (:func:`open_stack`) on the grid of its finest file.

    Files on that grid are read as they are; the others are read through a fractional source
    window resampled onto the window's pixels (GDAL, ``resampling``; bilinear suits
    reflectance), window by window, so the result does not depend on the window layout.
    Thread-safe and picklable like :class:`SceneReader`.
    """

    def __init__(self, info: SceneInfo, resampling: str = "bilinear"):
        from rasterio.enums import Resampling

        if resampling not in Resampling.__members__:
            raise InputError(f"resampling={resampling!r} is not a GDAL resampling; use one of "
                             f"{', '.join(m for m in Resampling.__members__ if not m.startswith('_'))}")
        self.info = info
        self.resampling = resampling
        self._readers = [SceneReader.of(m) for m in (info.members or (info,))]
        self._maps = [self._mapping(m.grid, info.grid) for m in (info.members or (info,))]

    @staticmethod
    def _mapping(g: Grid, ref: Grid) -> tuple[float, float, float, float, int, int] | None:
        """``(row0, col0, row_scale, col_scale, height, width)``: file pixel = offset + scale * scene
        pixel, and the file's size; None when the file is on the scene grid."""
        a, _, c, _, e, f = g.transform
        ra, _, rc, _, re, rf = ref.transform
        row0, col0 = (rf - f) / e, (rc - c) / a
        sy, sx = re / e, ra / a
        if (g.height, g.width) == (ref.height, ref.width) and abs(row0) < 1e-6 and abs(col0) < 1e-6 \
                and abs(sy - 1) < 1e-9 and abs(sx - 1) < 1e-9:
            return None
        return (row0, col0, sy, sx, g.height, g.width)

    def read(self, win: Window) -> tuple[np.ndarray, np.ndarray]:
        """Read ``win`` of the scene grid: ``(data (bands, h, w), valid (h, w) bool)``; valid in every file."""
        parts = []
        valid = None
        for reader, mp in zip(self._readers, self._maps, strict=True):
            if mp is None:
                d, v = reader.read(win)
            else:
                row0, col0, sy, sx, fh, fw = mp
                r0, c0 = max(0.0, row0 + sy * win.row_off), max(0.0, col0 + sx * win.col_off)
                r1 = min(float(fh), row0 + sy * (win.row_off + win.height))  # extents agree to 1 % of a
                c1 = min(float(fw), col0 + sx * (win.col_off + win.width))  # pixel: clamp the rounding
                d, v = reader.read_onto((r0, c0, r1 - r0, c1 - c0), (win.height, win.width), self.resampling)
            parts.append(d)
            valid = v if valid is None else (valid & v)
        data = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
        assert valid is not None
        return data, valid

    def read_resampled(self, out_shape: tuple[int, int], resampling: str = "nearest") -> np.ndarray:
        """Decimated read of every band of the stack onto ``out_shape`` (the files share one extent)."""
        return np.concatenate([r.read_resampled(out_shape, resampling=resampling) for r in self._readers], axis=0)

    def close_thread(self) -> None:
        """Close the calling thread's datasets (see :meth:`SceneReader.close_thread`)."""
        for r in self._readers:
            r.close_thread()

    def close(self) -> None:
        """Close every dataset."""
        for r in self._readers:
            r.close()

    def __enter__(self) -> StackReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def with_input_settings(info: SceneInfo, *, nodata: float | str | None = None, scale: Sequence[float] | None = None,
                        offset: Sequence[float] | None = None, fill: float | None = None) -> SceneInfo:
    """The scene with a given nodata (``"none"``: every finite pixel valid; a number: masked where
    every band holds it; None: the files' own), per-band ``scale``/``offset`` replacing the files'
    (one value for all bands, or one per band), and a detected ``fill`` value (undeclared nodata).

    Raises:
        InputError: a scale/offset list whose length is neither 1 nor the band count.
    """
    where = info.uri if not info.members else f"{info.uri} (+{len(info.members) - 1} more files)"
    sc, of = info.radiometry
    sc = _per_band(scale, info.count, "scale", where) or sc
    of = _per_band(offset, info.count, "offset", where) or of
    members = info.members
    if nodata is not None:
        src, value = ("none", None) if str(nodata).lower() == "none" else ("given", float(nodata))
        members = tuple(replace(m, nodata_source=src, nodata=value, mask_kind="nodata" if value is not None else "none")
                        for m in members)
        info = replace(info, nodata_source=src, nodata=value, mask_kind="nodata" if value is not None else "none")
    return replace(info, members=members, scales=tuple(sc), offsets=tuple(of), fill=fill)


def _per_band(values: Sequence[float] | None, count: int, what: str, where: str) -> tuple[float, ...] | None:
    if values is None:
        return None
    vals = tuple(float(v) for v in values)
    if len(vals) == 1:
        return vals * count
    if len(vals) != count:
        raise InputError(f"{where}: --{what} has {len(vals)} values but the scene has {count} bands; "
                         f"give one value for all bands or one per band")
    return vals
