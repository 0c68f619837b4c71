"""Deterministic synthetic Sentinel-2-like (and Sentinel-1) scenes with known labels (demo, tests, benchmarks).

A scene is 5 bands (``blue, green, red, nir, swir``; reflectance x 10000 as uint16 by default)
on a georeferenced grid, plus a uint8 label raster on the same grid. Its content is plausible
land cover with known classes: a meandering river, lakes, agricultural fields (Voronoi cells of a
hashed jittered lattice), forest, a town with a rotated street grid, villages, main roads, and a
nodata region outside a slanted footprint edge as in real Sentinel-2 tiles. A smooth "height
above river" field (metres) makes floods: water = river | lakes | (height < ``flood_level``).

Every pixel is a pure function of ``(seed, scene size, global pixel (row, col), flood_level)``:
noise comes from hashed lattices (no global arrays, no random state), so any window can be
rendered on its own and a scene of any size is written block by block with memory bounded by
the block size. Feature sizes are in pixels, tuned for 10 m pixels (fields ~300-500 m, river
~100-200 m wide); the resolution only sets the georeferencing.

Example:
    >>> scene = make_scene("/tmp/s.tif", size_px=512, seed=3, labels="landuse")  # doctest: +SKIP
    >>> pair = make_flood_pair("/tmp/flood", size_px=1024)  # pre/post/train scenes  # doctest: +SKIP
"""

from unetgeo.synthetic.layout import (
    BAND_NAMES,
    FLOOD_CLASSES,
    LABEL_NODATA,
    LANDUSE_CLASSES,
    NODATA_BY_DTYPE,
    POST_FLOOD_LEVEL_M,
    PRODUCTS,
    SAR_BAND_NAMES,
    TRAIN_FLOOD_LEVEL_M,
    SceneLayout,
    Town,
    scene_layout,
)
from unetgeo.synthetic.render import render_window
from unetgeo.synthetic.scenes import (
    TRAINING_VARIANTS,
    SyntheticScene,
    make_flood_pair,
    make_scene,
    make_training_set,
)

__all__ = [
    "BAND_NAMES",
    "FLOOD_CLASSES",
    "LABEL_NODATA",
    "LANDUSE_CLASSES",
    "NODATA_BY_DTYPE",
    "POST_FLOOD_LEVEL_M",
    "PRODUCTS",
    "SAR_BAND_NAMES",
    "TRAIN_FLOOD_LEVEL_M",
    "SceneLayout",
    "SyntheticScene",
    "Town",
    "make_flood_pair",
    "make_scene",
    "make_training_set",
    "TRAINING_VARIANTS",
    "render_window",
    "scene_layout",
]
