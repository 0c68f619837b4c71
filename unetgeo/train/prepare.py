"""Scene preparation: tile training scenes, bring labels onto their grids, pool band statistics.

Scenes go through the same tiling stage as inference (``WORK/<scene>/tiles.zarr`` + ``valid.zarr``)
and their labels into ``WORK/<scene>/labels.zarr`` (uint8, 255 = ignore), so nothing holds a
scene-sized array; image/mask pair folders (small images) are read whole.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Sequence

import numpy as np

from unetgeo.config import Config, SceneLabels
from unetgeo.errors import ConfigError, InputError
from unetgeo.grid import Grid
from unetgeo.io import uri as U
from unetgeo.io.chunk_cache import CACHE_BYTES
from unetgeo.io.naming import unique_stems
from unetgeo.train.data import ArrayRegion, Norm, Region, StoreRegion
from unetgeo.train.split import balance_split

log = logging.getLogger(__name__)


def prepare_scene(sl: SceneLabels, name: str, config: Config, work_dir: str, progress: bool) -> tuple[StoreRegion, dict]:
    """Tile one scene and bring its labels onto its grid: ``(region, tiles stats attribute)``."""
    from unetgeo import tiling
    from unetgeo.io import labels as L
    from unetgeo.io.store import open_store

    T = config.tiling.tile_px
    sdir = U.join(work_dir, name)
    tr = tiling.make_tiles(sl.image, U.join(sdir, "tiles.zarr"), tile_px=T, band_names=list(config.bands), progress=progress)
    tiles = open_store(tr.tiles_uri)
    valid = open_store(tr.valid_uri)
    names = [str(b) for b in tiles.attrs.get("band_names", [])]
    if names and names != list(config.bands):
        raise InputError(f"{sl.image}: tiled bands {names} differ from the config's bands {list(config.bands)}")
    grid = Grid.from_attrs(dict(tiles.attrs))
    n_classes = len(config.classes)
    key_src = json.dumps(
        {
            "labels": L.file_key(sl.labels),
            "grid": grid.to_attrs(),
            "tile_px": T,
            "n_classes": n_classes,
            "class_attribute": sl.class_attribute,
            "class_map": sl.class_map,
            "ignore_values": list(sl.ignore_values),
        },
        sort_keys=True,
    )
    run_key = hashlib.sha256(key_src.encode()).hexdigest()[:16]
    lab_uri = U.join(sdir, "labels.zarr")
    if L.is_vector_file(sl.labels):
        if sl.ignore_values:
            raise ConfigError(
                f"{sl.labels}: ignore_values={list(sl.ignore_values)} applies to raster labels only; "
                "for vector labels map those attribute values to 255 in class_map"
            )
        L.write_vector_label_store(
            sl.labels,
            grid,
            lab_uri,
            tile_px=T,
            n_classes=n_classes,
            class_attribute=sl.class_attribute,
            class_map=sl.class_map,
            class_names=config.class_names,
            run_key=run_key,
            image_uri=sl.image,
            min_classes=2,
        )
    else:
        L.write_raster_label_store(
            sl.labels, grid, lab_uri, tile_px=T, n_classes=n_classes, class_map=sl.class_map, run_key=run_key,
            image_uri=sl.image, ignore_values=sl.ignore_values,
        )
    labels = open_store(lab_uri)
    stats = dict(tiles.attrs.get("stats") or {})
    return StoreRegion(name, tiles, valid, labels, T), stats


def combine_stats(stats: Sequence[dict], weights: Sequence[float], bands: Sequence[str], where: str) -> Norm:
    """Pool per-scene band mean/std (weighted by pixel count) into one :class:`Norm`."""
    mean, std = [], []
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    for b in bands:
        try:
            m = np.array([float(s[b]["mean"]) for s in stats])
            sd = np.array([float(s[b]["std"]) for s in stats])
        except (KeyError, TypeError) as e:
            raise InputError(f"{where}: tiles.zarr has no stats for band {b!r}; re-tile the scene") from e
        mu = float((w * m).sum())
        var = float((w * (sd**2 + m**2)).sum() - mu**2)
        mean.append(mu)
        std.append(max(math.sqrt(max(var, 0.0)), 1e-6))
    return Norm(tuple(mean), tuple(std))


def pair_regions(config: Config, rng: np.random.Generator) -> tuple[list[Region], Norm]:
    """Regions from image / RGB-mask pair folders; norm = mean/std of the training images."""
    from unetgeo.io.labels import find_pairs, read_pair
    from unetgeo.io.naming import pair_names

    pc = config.training.pairs
    assert pc is not None
    class_rgb = [c.rgb for c in config.classes]
    if not any(class_rgb):
        raise ConfigError("training.pairs needs the mask colour of each class: give classes[].rgb, e.g. rgb: [226, 169, 41]")
    train_pairs = find_pairs(pc.root, pc.train_globs, pc.mask_from_image, pc.mask_suffix)
    val_pairs = find_pairs(pc.root, pc.val_globs, pc.mask_from_image, pc.mask_suffix) if pc.val_globs else []
    n_bands = len(config.bands)
    regions: list[Region] = []
    s1 = np.zeros(n_bands)
    s2 = np.zeros(n_bands)
    n = 0
    names = pair_names([i for i, _ in train_pairs + val_pairs])
    for k, (img_path, mask_path) in enumerate(train_pairs + val_pairs):
        img, lab = read_pair(img_path, mask_path, class_rgb, pc.ignore_rgb, n_bands)
        reg = ArrayRegion(names[k], img, lab)
        is_val = k >= len(train_pairs)
        if val_pairs:
            reg.set_split(config.training.val_block_px, 0.0, rng, all_val=is_val)
        else:
            reg.set_split(config.training.val_block_px, config.training.val_fraction, rng)
        if not is_val:
            x = img.reshape(n_bands, -1).astype(np.float64)
            s1 += x.sum(axis=1)
            s2 += (x * x).sum(axis=1)
            n += x.shape[1]
        regions.append(reg)
    mean = s1 / max(n, 1)
    std = np.sqrt(np.maximum(s2 / max(n, 1) - mean**2, 1e-12))
    log.info("%d training and %d validation image/mask pairs from %s", len(train_pairs), len(val_pairs), pc.root)
    return regions, Norm(tuple(float(v) for v in mean), tuple(float(max(v, 1e-6)) for v in std))


def build_regions(config: Config, work_dir: str, rng: np.random.Generator, progress: bool) -> tuple[list[Region], Norm]:
    """All training and validation regions of the config, their split set, and the shared :class:`Norm`.

    Scenes are tiled into ``work_dir/<scene>/`` (reused across runs); pair folders are read whole
    (they are small images). The split is by blocks of ``training.val_block_px``, or whole scenes /
    folders when ``val_scenes`` / ``pairs.val_globs`` are given. A block split is balanced so
    that every labelled class has training and validation pixels (:func:`balance_split`).

    Raises:
        ConfigError: neither ``training.scenes`` nor ``training.pairs`` is given.
        LabelError: a labelled class cannot get both training and validation blocks.
    """
    tcfg = config.training
    regions: list[Region] = []
    stats: list[dict] = []
    weights: list[float] = []
    if tcfg.scenes:
        all_scenes = list(tcfg.scenes) + list(tcfg.val_scenes)
        names = unique_stems([s.image for s in all_scenes])
        for i, (sl, name) in enumerate(zip(all_scenes, names, strict=True)):
            is_val = i >= len(tcfg.scenes)
            reg, st = prepare_scene(sl, name, config, work_dir, progress)
            if tcfg.val_scenes:
                reg.set_split(tcfg.val_block_px, 0.0, rng, all_val=is_val)
            else:
                reg.set_split(tcfg.val_block_px, tcfg.val_fraction, rng)
            if not is_val:
                stats.append(st)
                weights.append(reg.height * reg.width)
            regions.append(reg)
        norm = combine_stats(stats, weights, config.bands, tcfg.scenes[0].image)
        for r in regions:  # one memory budget for all scenes' chunk caches
            r.set_cache_bytes(CACHE_BYTES // len(regions))
    elif tcfg.pairs is not None:
        regions, norm = pair_regions(config, rng)
    else:
        raise ConfigError("training: give training.scenes (image + labels) or training.pairs (image/mask folders)")
    held_out = tcfg.val_scenes if tcfg.scenes else tcfg.pairs.val_globs  # type: ignore[union-attr]
    if tcfg.val_fraction > 0 and not held_out:
        balance_split(regions, config.class_names, rng)
    norm = Norm(norm.mean, norm.std, tuple(config.bands), tuple(config.model.indices))
    for r in regions:
        r.norm = norm
    return regions, norm
