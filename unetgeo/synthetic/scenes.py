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
    product: str = "l2a",
    cloud_fraction: float = 0.0,
    thin_cloud_fraction: float = 0.0,
    sensor: str = "s2",
    calibrated: bool = True,
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
        product: ``"l2a"`` (surface reflectance) or ``"l1c"`` (top of atmosphere: haze, path
            radiance); each seed also draws its own illumination, sensor gain and surface mix
            (:mod:`unetgeo.synthetic.spectra`).
        cloud_fraction: share of the scene under thick cloud (labelled ``cloud``), with shadows
            displaced by the sun geometry; ``thin_cloud_fraction``: share under thin cloud
            (ground visible, not labelled cloud).
        sensor: ``"s2"`` (optical, 5 bands) or ``"s1"`` (Sentinel-1 VV/VH backscatter in dB,
            float32, NaN nodata; see :mod:`unetgeo.synthetic.sar`; clouds do not apply).
        calibrated: False renders every surface at its median with no atmosphere (tests).

    Returns:
        :class:`SyntheticScene` with the written URIs and grid.

    Raises:
        InputError: bad size, dtype, labels kind, block size or CRS/resolution.
    """
    height, width = _check_args(image_uri, size_px, labels, dtype, block_px)
    if sensor not in ("s2", "s1"):
        raise InputError(f"synthetic scene {image_uri}: sensor={sensor!r} is unknown; use 's2' or 's1'")
    if sensor == "s1":
        dtype, cloud_fraction, thin_cloud_fraction = "float32", 0.0, 0.0
    crs_wkt, res, (ox, oy) = _resolve_crs(crs, res_m, origin_xy)
    grid = Grid(crs_wkt=crs_wkt, transform=(res, 0.0, ox, 0.0, -res, oy), height=height, width=width)
    labels_uri = labels_uri or _default_labels_uri(str(image_uri))
    try:
        lay = scene_layout(seed, height, width, footprint, product=product, cloud_fraction=cloud_fraction,
                           thin_cloud_fraction=thin_cloud_fraction, res_m=res if res > 1e-3 else 10.0,
                           calibrated=calibrated)
    except ValueError as e:
        raise InputError(f"synthetic scene {image_uri}: {e}") from e
    t0 = time.perf_counter()
    _write_blocks(image_uri, labels_uri, grid, lay, seed=seed, flood_level=flood_level, labels=labels,
                  block_px=block_px, dtype=dtype, progress=progress, sensor=sensor)
    log.info("synthetic scene %s (%dx%d, seed %d, flood %.2f m) written in %.1f s",
             image_uri, height, width, seed, flood_level, time.perf_counter() - t0)
    names = L.SAR_BAND_NAMES if sensor == "s1" else L.BAND_NAMES
    return SyntheticScene(str(image_uri), str(labels_uri), grid, names, int(seed), float(flood_level))


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
                  labels: str, block_px: int, dtype: str, progress: bool, sensor: str = "s2") -> None:
    """Render the scene block by block into the image and label GeoTIFFs (published on success)."""
    from tqdm.auto import tqdm

    from unetgeo.io.scene import RasterWriter
    from unetgeo.synthetic.sar import render_sar_window

    height, width = grid.height, grid.width
    cloudy = lay.clouds is not None and lay.clouds.fraction > 0
    classes = L.FLOOD_CLASSES if labels == "flood" else L.LANDUSE_CLASSES + (("cloud",) if cloudy else ())
    tags = {"unetgeo_synthetic_seed": str(seed), "flood_level_m": repr(float(flood_level))}
    if sensor == "s1":
        names, scale = L.SAR_BAND_NAMES, "1"
        tags.update(sensor="s1", units="dB")
    else:
        names, scale = L.BAND_NAMES, "0.0001" if dtype != "float32" else "1"
        tags.update(product=lay.radiometry.product if lay.radiometry else "l2a")
    colors = dict(L._LABEL_COLORS[labels])
    if labels == "landuse" and cloudy:
        colors[len(classes) - 1] = (255, 255, 255, 255)
    with (
        RasterWriter(image_uri, grid, len(names), dtype, L.NODATA_BY_DTYPE[dtype], block_px=block_px,
                     band_names=names, tags={**tags, "scale_factor": scale}) as img,
        RasterWriter(labels_uri, grid, 1, "uint8", L.LABEL_NODATA, block_px=block_px, band_names=(labels,),
                     colormap=colors, tags={**tags, "class_names": json.dumps(list(classes))}) as lab,
    ):
        for win in tqdm(iter_tile_windows(height, width, block_px), total=n_tiles(height, width, block_px),
                        disable=not progress, desc="synthetic", unit="block"):
            if sensor == "s1":
                data, landuse = render_sar_window(lay, win, flood_level)
            else:
                dn, landuse = render_window(lay, win, flood_level)
                data = _convert(dn, landuse != L.LABEL_NODATA, dtype)
            img.write(win, data)
            lab.write(win, _label_values(landuse, labels, len(classes)))


def _label_values(landuse: np.ndarray, labels: str, n_classes: int) -> np.ndarray:
    """Label raster values of a rendered window: flood (0 background, 1 water, 2 cloud) or land use
    (ids of :data:`LANDUSE_CLASSES`, cloud last); 255 outside the footprint."""
    cloud = landuse == L.CLOUD_CODE
    if labels == "flood":
        out = (landuse == 0).astype(np.uint8)
        out[cloud] = 2
    else:
        out = landuse.copy()
        out[cloud] = n_classes - 1
    out[landuse == L.LABEL_NODATA] = L.LABEL_NODATA
    return out


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


def make_flood_pair(out_dir: str, size_px: int = 1024, seed: int = 0, *, res_m: float = 10.0,
                    post_cloud_fraction: float = 0.0, with_train: bool = True) -> dict[str, SyntheticScene]:
    """Write a pre/post flood pair and a training scene with flood labels.

    ``pre`` (``flood_level`` 0) and ``post`` (:data:`POST_FLOOD_LEVEL_M`) share grid and seed, so
    post water is a superset of pre water; ``train`` has seed ``seed + 1000``, lies east of them
    and is moderately flooded (:data:`TRAIN_FLOOD_LEVEL_M`). ``post_cloud_fraction`` puts clouds
    (and their shadows) over the post-flood scene only; its labels have them as class 2 (cloud).
    ``with_train=False`` leaves the training scene out (the demo trains on :func:`make_training_set`).

    Returns:
        ``{"pre", "post", "train"}`` -> :class:`SyntheticScene`; files ``out_dir/{key}.tif`` and
        ``out_dir/{key}_labels.tif``.
    """
    from unetgeo.io.uri import join

    out = {}
    origin = (500000.0, 5400000.0)
    for key, level, s, orig, clouds in (
        ("pre", 0.0, seed, origin, 0.0),
        ("post", L.POST_FLOOD_LEVEL_M, seed, origin, post_cloud_fraction),
        ("train", L.TRAIN_FLOOD_LEVEL_M, seed + 1000, (origin[0] + (size_px + 256) * res_m, origin[1]), 0.0),
    ):
        if key == "train" and not with_train:
            continue
        out[key] = make_scene(join(out_dir, f"{key}.tif"), join(out_dir, f"{key}_labels.tif"), size_px=size_px,
                              res_m=res_m, origin_xy=orig, seed=s, flood_level=level, labels="flood",
                              cloud_fraction=clouds)
    return out


TRAINING_VARIANTS: tuple[dict, ...] = (
    {"product": "l2a", "flood_level": 1.3, "cloud_fraction": 0.0, "thin_cloud_fraction": 0.0},
    {"product": "l1c", "flood_level": 1.6, "cloud_fraction": 0.15, "thin_cloud_fraction": 0.3},
    {"product": "l2a", "flood_level": 0.9, "cloud_fraction": 0.25, "thin_cloud_fraction": 0.0},
    {"product": "l1c", "flood_level": 0.5, "cloud_fraction": 0.0, "thin_cloud_fraction": 0.5},
    {"product": "l2a", "flood_level": 1.9, "cloud_fraction": 0.1, "thin_cloud_fraction": 0.2},
    {"product": "l1c", "flood_level": 1.1, "cloud_fraction": 0.3, "thin_cloud_fraction": 0.0},
    {"product": "l2a", "flood_level": 1.5, "cloud_fraction": 0.2, "thin_cloud_fraction": 0.1},
    {"product": "l1c", "flood_level": 0.7, "cloud_fraction": 0.2, "thin_cloud_fraction": 0.2},
)
"""Processing level, flood level and cloud cover of the scenes of :func:`make_training_set`, in turn."""


def make_training_set(out_dir: str, n: int = 8, size_px: int = 768, seed: int = 1000, *,
                      res_m: float = 10.0) -> list[SyntheticScene]:
    """Write ``n`` varied flood training scenes: L2A and L1C, flooded and not, clear and cloudy.

    Scene ``i`` has seed ``seed + i`` (so its own radiometry, illumination, surface mix, water type
    and hills) and the ``i``-th entry of :data:`TRAINING_VARIANTS` (cyclically); the scenes lie side by
    side east of the demo pair. Files ``out_dir/train_{i}.tif`` and ``out_dir/train_{i}_labels.tif``
    (flood labels: 0 background, 1 water, 2 cloud).
    """
    from unetgeo.io.uri import join

    out = []
    for i in range(n):
        v = TRAINING_VARIANTS[i % len(TRAINING_VARIANTS)]
        orig = (500000.0 + (i + 2) * (size_px + 256) * res_m, 5400000.0)
        out.append(make_scene(join(out_dir, f"train_{i}.tif"), join(out_dir, f"train_{i}_labels.tif"), size_px=size_px,
                              res_m=res_m, origin_xy=orig, seed=seed + i, labels="flood", **v))
    return out
