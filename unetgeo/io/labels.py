"""Training labels: label rasters, vector labels and RGB-coded mask images.

Every kind of label ends as class ids ``uint8`` with ``255`` = ignore (nodata, unlabeled).
Georeferenced labels (a raster on the scene grid, or a vector file rasterised onto it) are
written chunk by chunk into a ``labels.zarr`` store with the scene grid and chunking, so
training reads label chips exactly like image chips. Nothing here holds a scene-sized array.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from unetgeo.errors import LabelError
from unetgeo.grid import Grid, Window, iter_tile_windows, same_grid
from unetgeo.io import uri as U

log = logging.getLogger(__name__)

IGNORE = 255


def file_key(uri: str) -> str:
    """Cheap identity of a file for run keys: ``uri|size|mtime`` (no content read)."""
    try:
        fs, path = U.fs_for(uri)
        info = fs.info(path)
        return f"{uri}|{info.get('size')}|{info.get('mtime', info.get('LastModified', info.get('created')))}"
    except (FileNotFoundError, OSError):
        return f"{uri}|missing"


ValueMap = tuple[np.ndarray, np.ndarray]
"""Raw label value -> class id: ``(sorted int64 values, uint8 class ids)``; unmapped values are 255."""


def _lut_from_class_map(class_map: Mapping[str, int] | None, n_classes: int, uri: str) -> ValueMap | None:
    """The :data:`ValueMap` of a raster ``class_map`` (keys: any whole raster values, e.g. ``"-1"``), or None."""
    if not class_map:
        return None
    table: dict[int, int] = {}
    for k, v in class_map.items():
        try:
            f = float(k)
        except ValueError as e:
            raise LabelError(f"{uri}: class_map key {k!r} is not a raster value; use whole numbers such as '0' or '-1'") from e
        if not f.is_integer():
            raise LabelError(f"{uri}: class_map key {k!r} is not a whole raster value; use whole numbers such as '0' or '-1'")
        if not (0 <= int(v) < n_classes or int(v) == IGNORE):
            raise LabelError(f"{uri}: class_map maps {k!r} to {v}, not a class id 0..{n_classes - 1} (or 255 = ignore)")
        table[int(f)] = int(v)
    keys = np.array(sorted(table), dtype=np.int64)
    return keys, np.array([table[k] for k in keys.tolist()], dtype=np.uint8)


def _apply_value_map(v: np.ndarray, vmap: ValueMap) -> np.ndarray:
    keys, ids = vmap
    idx = np.clip(np.searchsorted(keys, v), 0, len(keys) - 1)
    return np.where(keys[idx] == v, ids[idx], IGNORE).astype(np.uint8)


def map_label_values(
    values: np.ndarray,
    valid: np.ndarray,
    n_classes: int,
    lut: ValueMap | None,
    uri: str,
    win: Window | None = None,
    ignore_values: Sequence[float] = (),
) -> np.ndarray:
    """Turn raw label values into class ids ``uint8`` (255 = ignore).

    Args:
        values: ``(h, w)`` raw label values (any numeric dtype).
        valid: ``(h, w)`` bool; False pixels become 255.
        n_classes: number of classes; without ``lut`` values must be ``0..n_classes-1`` or 255.
        lut: optional value map from :func:`_lut_from_class_map`; values it lacks become 255.
        ignore_values: raw values meaning "not labelled" (e.g. ``-1``); they become 255.

    Raises:
        LabelError: a value that is not a class id (names the file, the values, the fix).
    """
    v = np.asarray(values)
    ok = np.asarray(valid, dtype=bool)
    if len(ignore_values):
        ok &= ~np.isin(v, np.asarray(ignore_values, dtype=np.float64))
    if v.dtype.kind == "f":
        ok &= np.isfinite(v)
        v = np.where(ok, v, IGNORE)
        frac = ok & (v != np.round(v))
        if frac.any():
            raise LabelError(f"{uri}: label values must be whole class ids, found {np.unique(v[frac])[:5].tolist()}")
    v = v.astype(np.int64)
    if lut is not None:
        out = _apply_value_map(v, lut)
    else:
        bad = ok & ~(((v >= 0) & (v < n_classes)) | (v == IGNORE))
        if bad.any():
            where = f" in window {win}" if win is not None else ""
            raise LabelError(
                f"{uri}: label values {np.unique(v[bad])[:8].tolist()}{where} are not class ids 0..{n_classes - 1} "
                "(255 = ignore); add a class_map to the scene's labels entry, e.g. {'255': 1, '0': 0}, "
                "or list the values that mean 'not labelled' in ignore_values, e.g. [-1]"
            )
        out = v.astype(np.uint8)
    out = np.where(ok, out, IGNORE).astype(np.uint8)
    return out


def is_vector_file(uri: str) -> bool:
    """True for vector label files (GeoJSON, Shapefile, GeoPackage, FlatGeobuf, GeoParquet)."""
    s = str(uri).lower()
    return s.endswith((".geojson", ".json", ".shp", ".gpkg", ".fgb", ".parquet", ".geoparquet", ".zip"))


def _label_store(out_uri: str, grid: Grid, tile_px: int, source_uri: str, run_key: str) -> Any:
    """The resumable ``labels.zarr`` writer: ``(y, x)`` uint8 on ``grid``, 255 = ignore."""
    from unetgeo.io.store import ChunkedStoreWriter

    return ChunkedStoreWriter(
        out_uri,
        shape=(grid.height, grid.width),
        chunk_px=tile_px,
        dtype="uint8",
        fill_value=IGNORE,
        attrs={**grid.to_attrs(), "nodata": IGNORE, "source": {"uri": source_uri}},
        run_key=run_key,
    )


def write_raster_label_store(
    labels_uri: str,
    grid: Grid,
    out_uri: str,
    *,
    tile_px: int,
    n_classes: int,
    class_map: Mapping[str, int] | None = None,
    run_key: str,
    image_uri: str = "the image",
    ignore_values: Sequence[float] = (),
) -> str:
    """Copy a label raster on the scene grid into ``out_uri`` (Zarr, uint8, 255 = ignore), chunk by chunk.

    Args:
        labels_uri: label GeoTIFF (band 1 holds class ids, or raw values mapped by ``class_map``).
        grid: the scene grid the labels must share.
        out_uri: ``labels.zarr`` to write (resumable, published atomically).
        tile_px: chunk side (the scene's ``tiles.zarr`` chunking).
        n_classes: number of classes.
        class_map: optional ``{raster value (str, e.g. "-1"): class id}``; unmapped values become 255.
        ignore_values: raw label values meaning "not labelled" (e.g. ``-1``); they become 255.
        run_key: identity of the inputs (a published store with the same key is reused).

    Raises:
        GridMismatchError: the label raster is not on the scene grid.
        LabelError: a label value is not a class id.
    """
    from unetgeo.io.scene import SceneReader, crs_equal, open_scene

    info = open_scene(labels_uri, need_crs=False)
    same_grid(grid, info.grid, image_uri, labels_uri, crs_equal=crs_equal)
    lut = _lut_from_class_map(class_map, n_classes, labels_uri)
    w = _label_store(out_uri, grid, tile_px, labels_uri, run_key)
    if w.already_complete:
        return out_uri
    with SceneReader(labels_uri) as r:
        for win in iter_tile_windows(grid.height, grid.width, tile_px):
            if w.is_done(win):
                continue
            data, valid = r.read(win, bands=[1])
            w.write(win, map_label_values(data[0], valid, n_classes, lut, labels_uri, win, ignore_values))
    return w.publish()


# ----------------------------------------------------------------------------------------------
# Vector labels
# ----------------------------------------------------------------------------------------------

OTHER_KEY = "__other__"
"""``class_map`` key giving the class of pixels no feature covers (default: 255, ignored)."""


def _read_vector(uri: str) -> tuple[Any, str | None]:
    """``(GeoDataFrame, declared CRS as WKT or None)`` of the first layer of a vector file."""
    import pyogrio

    try:
        if U.is_url(uri):
            with U.open_file(uri, "rb") as f:
                gdf = pyogrio.read_dataframe(f.read())
        else:
            gdf = pyogrio.read_dataframe(str(U.local_path(uri)))
    except Exception as e:  # noqa: BLE001 - pyogrio/GDAL raise several types
        if not U.exists(uri):
            raise LabelError(f"{uri}: vector label file not found") from e
        raise LabelError(f"{uri}: cannot be read as a vector file ({type(e).__name__}: {' '.join(str(e).split())})") from e
    crs = gdf.crs.to_wkt() if gdf.crs is not None else None
    return gdf, crs


def _crs_name(wkt: str | None) -> str:
    from unetgeo.io.crs import crs_name

    return crs_name(wkt) if wkt else "no CRS"


def check_vector_crs(uri: str, gdf: Any, declared_wkt: str | None, grid: Grid, image_uri: str = "the scene") -> Any:
    """Reproject vector labels onto the scene CRS, refusing a CRS that cannot be right.

    Refused (``LabelError`` naming the file, the declared CRS, the coordinate range and the fix):
    a geographic declared CRS with coordinates outside ``[-180, 180] x [-90, 90]`` (typically
    projected metres in a file that claims EPSG:4326), and labels whose reprojected bounds do
    not intersect the scene. A file without a CRS is taken to be in the scene CRS when its
    bounds intersect the scene (with a warning), and refused otherwise.

    Returns:
        The GeoDataFrame in the scene CRS.
    """
    from pyproj import CRS

    left, bottom, right, top = grid.bounds
    xmin, ymin, xmax, ymax = (float(v) for v in gdf.total_bounds)
    rng = f"x {xmin:.6g}..{xmax:.6g}, y {ymin:.6g}..{ymax:.6g}"
    scene_crs = CRS.from_user_input(grid.crs_wkt) if grid.crs_wkt else None
    scene_name = _crs_name(grid.crs_wkt)
    if declared_wkt is None:
        if not (xmax < left or xmin > right or ymax < bottom or ymin > top):
            log.warning("%s has no CRS; its coordinates fall on the scene, so the scene CRS (%s) is assumed", uri, scene_name)
            return gdf.set_crs(grid.crs_wkt, allow_override=True) if grid.crs_wkt else gdf
        raise LabelError(
            f"{uri}: declares no CRS and its coordinates ({rng}) are not on the scene ({scene_name}, "
            f"x {left:.6g}..{right:.6g}, y {bottom:.6g}..{top:.6g}); assign the right CRS, e.g. "
            f"`ogr2ogr -a_srs EPSG:XXXX fixed.gpkg {uri}`"
        )
    declared = CRS.from_user_input(declared_wkt)
    dname = _crs_name(declared_wkt)
    if declared.is_geographic and (xmin < -180 or xmax > 180 or ymin < -90 or ymax > 90):
        raise LabelError(
            f"{uri}: declares {dname} (degrees) but its coordinates ({rng}) are outside "
            "[-180, 180] x [-90, 90], so they are projected units (metres?) in a mislabelled file; "
            f"assign the CRS they really are in, e.g. the scene's ({scene_name}; `gdalsrsinfo -o wkt {image_uri}` "
            f"prints it): `ogr2ogr -a_srs <CRS> fixed.gpkg {uri}`"
        )
    out = gdf
    if scene_crs is not None and not declared.equals(scene_crs, ignore_axis_order=True):
        out = gdf.to_crs(scene_crs)
    bx0, by0, bx1, by1 = (float(v) for v in out.total_bounds)
    if not np.all(np.isfinite([bx0, by0, bx1, by1])) or bx1 < left or bx0 > right or by1 < bottom or by0 > top:
        raise LabelError(
            f"{uri}: declares {dname}, coordinates {rng}; reprojected to the scene CRS ({scene_name}) they "
            f"span x {bx0:.6g}..{bx1:.6g}, y {by0:.6g}..{by1:.6g} and miss the scene (x {left:.6g}..{right:.6g}, "
            f"y {bottom:.6g}..{top:.6g}); the file's CRS is wrong or it belongs to another scene; assign the right "
            f"CRS with `ogr2ogr -a_srs <CRS> fixed.gpkg {uri}`"
        )
    return out


def feature_class_ids(
    uri: str,
    gdf: Any,
    class_attribute: str | None,
    class_map: Mapping[str, int] | None,
    class_names: Sequence[str],
) -> np.ndarray:
    """Class id (uint8; 255 = ignore) of every feature.

    The value of ``class_attribute`` is looked up in ``class_map`` (keys compared as strings);
    without a ``class_map`` it must be a class name or a class id.

    Raises:
        LabelError: no/unknown attribute, or values that are not mapped (names them and the fix).
    """
    n = len(class_names)
    cols = [c for c in gdf.columns if c != gdf.geometry.name]
    if class_attribute is None:
        raise LabelError(
            f"{uri}: give class_attribute (the attribute holding each feature's class) for vector labels; "
            f"the file has {cols}"
        )
    if class_attribute not in gdf.columns:
        raise LabelError(f"{uri}: has no attribute {class_attribute!r}; its attributes are {cols}")
    values = ["" if v is None else (str(int(v)) if isinstance(v, float) and float(v).is_integer() else str(v)) for v in gdf[class_attribute]]
    if class_map:
        table = {str(k): int(v) for k, v in class_map.items() if k != OTHER_KEY}
    else:
        table = {name: i for i, name in enumerate(class_names)}
        table.update({str(i): i for i in range(n)})
    for k, v in table.items():
        if not (0 <= v < n or v == IGNORE):
            raise LabelError(f"{uri}: class_map maps {k!r} to {v}, not a class id 0..{n - 1} (or 255 = ignore)")
    missing = sorted({v for v in values if v not in table})
    if missing:
        raise LabelError(
            f"{uri}: {class_attribute} values {missing[:10]} are not in the class_map "
            f"({sorted(table)[:10]}); map them to a class id, or to 255 to ignore them"
        )
    return np.array([table[v] for v in values], dtype=np.uint8)


def _check_labelled_classes(uri: str, ids: np.ndarray, other: int, class_names: Sequence[str], min_classes: int) -> None:
    """Refuse vector labels whose features and ``__other__`` rule label fewer than ``min_classes`` classes."""
    labelled = {int(i) for i in np.unique(ids) if i != IGNORE} | ({other} if other != IGNORE else set())
    if len(labelled) >= min_classes:
        return
    got = [class_names[i] for i in sorted(labelled)] or "none"
    raise LabelError(
        f"{uri}: its features label only the classes {got} and pixels outside them are ignored, so a model "
        f"would see only {len(labelled)} class(es); add \"{OTHER_KEY}: 0\" to the scene's class_map (the "
        f"background rule: pixels no feature covers become {class_names[0]!r}), or add features of other classes"
    )


def write_vector_label_store(
    vector_uri: str,
    grid: Grid,
    out_uri: str,
    *,
    tile_px: int,
    n_classes: int,
    class_attribute: str | None,
    class_map: Mapping[str, int] | None,
    class_names: Sequence[str],
    run_key: str,
    image_uri: str = "the image",
    min_classes: int = 1,
) -> str:
    """Rasterise vector labels onto the scene grid into ``out_uri`` (Zarr uint8), window by window.

    Each window burns the features whose bounding boxes meet it (an STRtree query) with
    ``rasterio.features.rasterize`` (pixel centres inside a polygon; later features win where
    they overlap). Pixels no feature covers are 255 (ignored) unless ``class_map`` has
    ``"__other__": <class id>``.

    ``min_classes=2`` (training) refuses labels that give every labelled pixel one class (a
    single class of features and no ``__other__``): a model would never see another class.

    Raises:
        LabelError: a CRS that cannot be right for the scene, a missing class attribute,
            class values without a mapping, or fewer than ``min_classes`` labelled classes.
    """
    from rasterio import Affine
    from rasterio.features import rasterize
    from shapely import STRtree, box


    gdf, declared = _read_vector(vector_uri)
    if len(gdf) == 0:
        raise LabelError(f"{vector_uri}: holds no features; nothing to learn from")
    gdf = check_vector_crs(vector_uri, gdf, declared, grid, image_uri)
    ids = feature_class_ids(vector_uri, gdf, class_attribute, class_map, class_names)
    other = int(class_map[OTHER_KEY]) if class_map and OTHER_KEY in class_map else IGNORE
    geoms = np.asarray(gdf.geometry.values)
    keep = np.array([g is not None and not g.is_empty for g in geoms], dtype=bool)
    geoms, ids = geoms[keep], ids[keep]
    _check_labelled_classes(vector_uri, ids, other, class_names, min_classes)
    tree = STRtree(geoms)
    w = _label_store(out_uri, grid, tile_px, vector_uri, run_key)
    if w.already_complete:
        return out_uri
    for win in iter_tile_windows(grid.height, grid.width, tile_px):
        if w.is_done(win):
            continue
        a, b, c, d, e, f = grid.window_transform(win)
        x0, x1 = sorted((c, c + a * win.width))
        y0, y1 = sorted((f, f + e * win.height))
        hit = np.sort(tree.query(box(x0, y0, x1, y1)))  # file order: later features win
        if hit.size:
            out = rasterize(
                zip(geoms[hit], ids[hit].tolist(), strict=True),
                out_shape=(win.height, win.width),
                transform=Affine(a, b, c, d, e, f),
                fill=other,
                dtype="uint8",
                all_touched=False,
            )
        else:
            out = np.full((win.height, win.width), other, dtype=np.uint8)
        w.write(win, out)
    log.info("rasterised %d features of %s onto the grid of %s", len(geoms), vector_uri, image_uri)
    return w.publish()


# ----------------------------------------------------------------------------------------------
# Image / RGB-mask pair folders (not georeferenced)
# ----------------------------------------------------------------------------------------------


def _pack_rgb(rgb: np.ndarray) -> np.ndarray:
    a = rgb.astype(np.int64)
    return (a[..., 0] << 16) | (a[..., 1] << 8) | a[..., 2]


def decode_rgb_mask(
    rgb: np.ndarray,
    class_rgb: Sequence[tuple[int, int, int] | None],
    ignore_rgb: Sequence[tuple[int, int, int]] = (),
    uri: str = "mask",
) -> np.ndarray:
    """RGB-coded mask ``(h, w, 3)`` uint8 -> class ids ``(h, w)`` uint8 (255 = ignore).

    Args:
        class_rgb: colour of class ``i`` at index ``i`` (``None``: the class has no colour).
        ignore_rgb: colours that mean "no label" (255).

    Raises:
        LabelError: colours that are neither a class nor ignored (names up to 5 with their share).
    """
    if rgb.ndim != 3 or rgb.shape[-1] < 3:
        raise LabelError(f"{uri}: an RGB-coded mask needs 3 colour channels, got shape {rgb.shape}")
    keys, vals = [], []
    for i, c in enumerate(class_rgb):
        if c is not None:
            keys.append((int(c[0]) << 16) | (int(c[1]) << 8) | int(c[2]))
            vals.append(i)
    for c in ignore_rgb:
        keys.append((int(c[0]) << 16) | (int(c[1]) << 8) | int(c[2]))
        vals.append(IGNORE)
    if len(set(keys)) != len(keys):
        raise LabelError(f"{uri}: the same colour is given to two classes (or a class and ignore_rgb)")
    order = np.argsort(keys)
    k_sorted = np.asarray(keys, dtype=np.int64)[order]
    v_sorted = np.asarray(vals, dtype=np.uint8)[order]
    packed = _pack_rgb(rgb[..., :3])
    pos = np.clip(np.searchsorted(k_sorted, packed), 0, len(k_sorted) - 1)
    known = k_sorted[pos] == packed
    if not known.all():
        u, cnt = np.unique(packed[~known], return_counts=True)
        top = np.argsort(-cnt)[:5]
        shown = [f"({(int(u[i]) >> 16) & 255}, {(int(u[i]) >> 8) & 255}, {int(u[i]) & 255}) {cnt[i] / packed.size:.2%}" for i in top]
        raise LabelError(
            f"{uri}: {len(u)} mask colour(s) match no class: {', '.join(shown)}; add them to a class's rgb or "
            "to training.pairs.ignore_rgb"
        )
    return v_sorted[pos]


def find_pairs(root: str, globs: Sequence[str], mask_from_image: tuple[str, str], mask_suffix: str) -> list[tuple[str, str]]:
    """``[(image path, mask path)]`` for images matching ``globs`` under ``root`` (sorted).

    The mask path is the image path with ``mask_from_image[0]`` replaced by ``mask_from_image[1]``
    and the extension replaced by ``mask_suffix``.

    Raises:
        LabelError: no image matches, or an image has no mask.
    """
    import glob
    import os

    base = str(U.local_path(root))
    if not os.path.isdir(base):
        raise LabelError(f"{root}: pair folder root not found")
    out: list[tuple[str, str]] = []
    for g in globs:
        for img in sorted(glob.glob(os.path.join(base, g))):
            rel = os.path.relpath(img, base)
            old, new = mask_from_image
            if old not in rel:
                raise LabelError(f"{img}: does not contain {old!r}, so its mask cannot be found; set pairs.mask_from_image")
            mask = os.path.join(base, os.path.splitext(rel.replace(old, new, 1))[0] + mask_suffix)
            if not os.path.exists(mask):
                raise LabelError(f"{img}: its mask {mask} is missing; every image needs a mask (pairs.mask_from_image, mask_suffix)")
            out.append((img, mask))
    if globs and not out:
        raise LabelError(f"{root}: no image matches {list(globs)}; check training.pairs.root and the globs")
    return out


def read_pair(
    image_uri: str,
    mask_uri: str,
    class_rgb: Sequence[tuple[int, int, int] | None],
    ignore_rgb: Sequence[tuple[int, int, int]] = (),
    n_bands: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Read one image / RGB-mask pair: ``(image (bands, h, w) uint8, labels (h, w) uint8)``.

    Raises:
        LabelError: sizes differ, unknown mask colours, or the band count differs from ``n_bands``.
    """
    from PIL import Image

    try:
        with U.open_file(image_uri, "rb") as f:
            im = Image.open(f)
            im.load()
        with U.open_file(mask_uri, "rb") as f:
            mk = Image.open(f)
            mk.load()
    except OSError as e:
        raise LabelError(f"{image_uri} / {mask_uri}: cannot be read as images ({e})") from e
    if im.size != mk.size:
        raise LabelError(f"{mask_uri}: mask is {mk.size[0]}x{mk.size[1]} px but its image {image_uri} is {im.size[0]}x{im.size[1]}")
    img = np.asarray(im.convert("RGB") if im.mode in ("P", "RGBA", "CMYK", "YCbCr") else im)
    img = img[None] if img.ndim == 2 else img.transpose(2, 0, 1)
    if n_bands is not None and img.shape[0] != n_bands:
        raise LabelError(f"{image_uri}: has {img.shape[0]} bands but the config names {n_bands} bands")
    labels = decode_rgb_mask(np.asarray(mk.convert("RGB")), class_rgb, ignore_rgb, mask_uri)
    return np.ascontiguousarray(img), labels
