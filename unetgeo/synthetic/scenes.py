"""Writing synthetic scenes: :func:`make_scene` (image + labels GeoTIFFs) and :func:`make_flood_pair`."""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass

import numpy as np

from unetgeo.errors import InputError
from unetgeo.grid import Grid, iter_tile_windows, n_tiles
from unetgeo.synthetic import layout as L
from unetgeo.synthetic.layout import SceneLayout, scene_layout
from unetgeo.synthetic.render import render_window

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SyntheticScene:
    """What :func:`make_scene` wrote.

    Attributes:
        image_uri: the 5-band GeoTIFF (band descriptions = ``band_names``).
        labels_uri: the uint8 label GeoTIFF on the same grid (nodata 255).
        grid: the pixel grid of both.
        band_names: ``("blue", "green", "red", "nir", "swir")``.
        seed: the seed.
        flood_level: water level in metres above the river that was used.
    """

    image_uri: str
    labels_uri: str
    grid: Grid
    band_names: tuple[str, ...]
    seed: int
    flood_level: float


def _default_labels_uri(image_uri: str) -> str:
    root, ext = os.path.splitext(image_uri)
    return f"{root}_labels{ext or '.tif'}"


def _resolve_crs(crs: str, res_m: float, origin_xy: tuple[float, float]) -> tuple[str, float, tuple[float, float]]:
    """WKT, resolution and origin; geographic CRSs get degree defaults when left at the metre defaults."""
    from rasterio.crs import CRS
    from rasterio.errors import CRSError

    try:
        crs_obj = CRS.from_user_input(crs)
    except CRSError as e:
        raise InputError(f"synthetic scene: crs={crs!r} is not a CRS ({e}); use e.g. 'EPSG:32633'") from e
    if not res_m > 0:
        raise InputError(f"synthetic scene: res_m={res_m} must be > 0 (pixel size in CRS units)")
    if crs_obj.is_geographic:
        if tuple(origin_xy) == (500000.0, 5400000.0) and res_m == 10.0:
            res_m, origin_xy = 1e-4, (15.0, 48.75)
        if res_m > 1.0 or not (-180 <= origin_xy[0] <= 180 and -90 <= origin_xy[1] <= 90):
            raise InputError(
                f"synthetic scene: crs={crs!r} is geographic, so res_m={res_m} and origin_xy={tuple(origin_xy)} "
                "are in degrees; use e.g. res_m=0.0001, origin_xy=(15.0, 48.75)"
            )
    return crs_obj.to_wkt(), float(res_m), (float(origin_xy[0]), float(origin_xy[1]))


def make_scene(
    image_uri: str,
    labels_uri: str | None = None,
    *,
    size_px: int | tuple[int, int] = 512,
    res_m: float = 10.0,
    crs: str = "EPSG:32633",
    origin_xy: tuple[float, float] = (500000.0, 5400000.0),
    seed: int = 0,
    flood_level: float = 0.0,
    labels: str = "flood",
    footprint: bool = True,
    block_px: int = 512,
    dtype: str = "uint16",
    progress: bool = False,
) -> SyntheticScene:
    """Write a synthetic Sentinel-2-like scene and its labels, block by block.

    Args:
        image_uri: output GeoTIFF path or URL (5 bands, tiled, deflate).
        labels_uri: output label GeoTIFF; default ``<image stem>_labels.tif`` next to the image.
        size_px: ``n`` (square) or ``(height, width)`` in pixels.
        res_m: pixel size in CRS units: metres for a projected CRS, **degrees** for a geographic
            one (with ``crs="EPSG:4326"`` and the metre defaults left unchanged, 0.0001 deg and
            origin (15.0, 48.75) are used).
        crs: any CRS rasterio understands (``"EPSG:32633"``, WKT, PROJ string).
        origin_xy: ``(x, y)`` of the top-left corner in CRS units.
        seed: content seed; same seed and size give byte-identical files.
        flood_level: water level in metres above the river: 0 = normal, ~2 = a clear flood.
        labels: ``"flood"`` (0 background, 1 water) or ``"landuse"`` (0 water, 1 vegetation,
            2 bare soil, 3 built-up); 255 outside the footprint in both.
        footprint: cut one corner off as no data (as at a Sentinel-2 swath edge).
        block_px: rendering block and GeoTIFF tile size (memory ~ 100 bytes x block_px²).
        dtype: ``"uint16"`` (reflectance x 10000, nodata 0), ``"int16"`` (x 10000, nodata -9999)
            or ``"float32"`` (reflectance 0-1, nodata NaN).
        progress: show a progress bar.

    Returns:
        :class:`SyntheticScene` with the written URIs and grid.

    Raises:
        InputError: bad size, dtype, labels kind, block size or CRS/resolution.
    """
    height, width = _check_args(image_uri, size_px, labels, dtype, block_px)
    crs_wkt, res, (ox, oy) = _resolve_crs(crs, res_m, origin_xy)
    grid = Grid(crs_wkt=crs_wkt, transform=(res, 0.0, ox, 0.0, -res, oy), height=height, width=width)
    labels_uri = labels_uri or _default_labels_uri(str(image_uri))
    t0 = time.perf_counter()
    _write_blocks(image_uri, labels_uri, grid, scene_layout(seed, height, width, footprint), seed=seed,
                  flood_level=flood_level, labels=labels, block_px=block_px, dtype=dtype, progress=progress)
    log.info("synthetic scene %s (%dx%d, seed %d, flood %.2f m) written in %.1f s",
             image_uri, height, width, seed, flood_level, time.perf_counter() - t0)
    return SyntheticScene(str(image_uri), str(labels_uri), grid, L.BAND_NAMES, int(seed), float(flood_level))


def _check_args(image_uri: str, size_px: int | tuple[int, int], labels: str, dtype: str,
                block_px: int) -> tuple[int, int]:
    """``(height, width)`` px of ``size_px``, after checking the arguments of :func:`make_scene`.

    Raises:
        InputError: bad size, labels kind, dtype or block size.
    """
    if isinstance(size_px, (int, np.integer)):
        height = width = int(size_px)
    else:
        height, width = (int(v) for v in size_px)
    if height < 1 or width < 1:
        raise InputError(f"synthetic scene {image_uri}: size_px={size_px} must be positive (pixels)")
    if labels not in ("flood", "landuse"):
        raise InputError(f"synthetic scene {image_uri}: labels={labels!r} is unknown; use 'flood' or 'landuse'")
    if dtype not in L.NODATA_BY_DTYPE:
        raise InputError(f"synthetic scene {image_uri}: dtype={dtype!r} is unsupported; use one of {list(L.NODATA_BY_DTYPE)}")
    if block_px < 16 or block_px % 16:
        raise InputError(f"synthetic scene {image_uri}: block_px={block_px} must be a multiple of 16 (>= 16); use 512")
    return height, width


def _write_blocks(image_uri: str, labels_uri: str, grid: Grid, lay: SceneLayout, *, seed: int, flood_level: float,
                  labels: str, block_px: int, dtype: str, progress: bool) -> None:
    """Render the scene block by block into the image and label GeoTIFFs (published on success)."""
    from tqdm.auto import tqdm

    from unetgeo.io.scene import RasterWriter

    height, width = grid.height, grid.width
    classes = L.FLOOD_CLASSES if labels == "flood" else L.LANDUSE_CLASSES
    tags = {"unetgeo_synthetic_seed": str(seed), "flood_level_m": repr(float(flood_level))}
    with (
        RasterWriter(image_uri, grid, len(L.BAND_NAMES), dtype, L.NODATA_BY_DTYPE[dtype], block_px=block_px,
                     band_names=L.BAND_NAMES, tags={**tags, "scale_factor": "0.0001" if dtype != "float32" else "1"}) as img,
        RasterWriter(labels_uri, grid, 1, "uint8", L.LABEL_NODATA, block_px=block_px, band_names=(labels,),
                     colormap=L._LABEL_COLORS[labels], tags={**tags, "class_names": json.dumps(list(classes))}) as lab,
    ):
        for win in tqdm(iter_tile_windows(height, width, block_px), total=n_tiles(height, width, block_px),
                        disable=not progress, desc="synthetic", unit="block"):
            dn, landuse = render_window(lay, win, flood_level)
            valid = landuse != L.LABEL_NODATA
            img.write(win, _convert(dn, valid, dtype))
            if labels == "flood":
                lab_arr = np.where(valid, (landuse == 0).astype(np.uint8), np.uint8(L.LABEL_NODATA))
            else:
                lab_arr = landuse
            lab.write(win, lab_arr)


def _convert(dn: np.ndarray, valid: np.ndarray, dtype: str) -> np.ndarray:
    """uint16 DN (0 outside) -> output dtype with that dtype's nodata outside."""
    if dtype == "uint16":
        return dn
    if dtype == "int16":
        out = np.minimum(dn, 32767).astype(np.int16)
        out[:, ~valid] = -9999
        return out
    out = dn.astype(np.float32) * np.float32(1e-4)
    out[:, ~valid] = np.nan
    return out


def make_flood_pair(out_dir: str, size_px: int = 1024, seed: int = 0, *, res_m: float = 10.0) -> dict[str, SyntheticScene]:
    """Write a pre/post flood pair and a training scene with flood labels.

    ``pre`` (``flood_level`` 0) and ``post`` (:data:`POST_FLOOD_LEVEL_M`) share grid and seed, so
    post water is a superset of pre water; ``train`` has seed ``seed + 1000``, lies east of them
    and is moderately flooded (:data:`TRAIN_FLOOD_LEVEL_M`).

    Returns:
        ``{"pre", "post", "train"}`` -> :class:`SyntheticScene`; files ``out_dir/{key}.tif`` and
        ``out_dir/{key}_labels.tif``.
    """
    from unetgeo.io.uri import join

    out = {}
    origin = (500000.0, 5400000.0)
    for key, level, s, orig in (
        ("pre", 0.0, seed, origin),
        ("post", L.POST_FLOOD_LEVEL_M, seed, origin),
        ("train", L.TRAIN_FLOOD_LEVEL_M, seed + 1000, (origin[0] + (size_px + 256) * res_m, origin[1])),
    ):
        out[key] = make_scene(join(out_dir, f"{key}.tif"), join(out_dir, f"{key}_labels.tif"), size_px=size_px,
                              res_m=res_m, origin_xy=orig, seed=s, flood_level=level, labels="flood")
    return out
