"""Training: random chips from tiled scenes (or image/mask pair folders) -> a model bundle.

Data flow::

    scene.tif ──make_tiles──▶ WORK/<name>/tiles.zarr + valid.zarr     (chunked, streaming)
    labels (raster | vector) ─▶ WORK/<name>/labels.zarr               (uint8, 255 = ignore)
    subsampled label scan ────▶ class frequencies (class weights) + rare-class pixel pools
    chips (chip_px) ──augment──▶ U-Net ──CE + Dice──▶ AdamW, warm-up + cosine, per step
    validation blocks ────────▶ confusion matrix ─▶ best-mIoU weights ─▶ OUT/model.safetensors + model.json
                                                                        OUT/training_report.png
    every epoch ──────────────▶ OUT/checkpoint.safetensors + checkpoint.json   (no pickle)

Nothing holds a scene-sized array: chips and validation blocks are read through a small
chunk cache. The train/validation split is by spatial blocks of ``val_block_px`` (a chip never
straddles a train and a validation block), or by whole scenes when ``val_scenes`` are given.

Modules: :mod:`.data` (regions), :mod:`.prepare` (scene preparation), :mod:`.sampling` (label
scan, chips, batches), :mod:`.objective` (loss, class weights, schedule, augmentation),
:mod:`.validation`, :mod:`.state` (training state and checkpoints), :mod:`.loop`, :mod:`.plots`.
"""

from __future__ import annotations

from unetgeo.io.chunk_cache import CACHE_BYTES, ChunkCache
from unetgeo.train.data import IGNORE, ArrayRegion, Norm, Region, StoreRegion
from unetgeo.train.loop import REPORT_NAME, TrainResult, pick_device, train
from unetgeo.train.objective import class_weights_from_counts, lr_factor, make_augment, make_loss
from unetgeo.train.plots import write_training_report
from unetgeo.train.prepare import build_regions, combine_stats, pair_regions, prepare_scene
from unetgeo.train.sampling import (
    MAX_POINTS_PER_CLASS,
    SCAN_TARGET_PX,
    ChipSampler,
    LabelScan,
    make_batch,
    read_chip,
    scan_labels,
)
from unetgeo.train.state import TrainState, model_signature, restore_checkpoint, save_checkpoint
from unetgeo.train.validation import MAX_VAL_BLOCKS, val_windows, validate

__all__ = [
    "CACHE_BYTES",
    "IGNORE",
    "MAX_POINTS_PER_CLASS",
    "MAX_VAL_BLOCKS",
    "REPORT_NAME",
    "SCAN_TARGET_PX",
    "ArrayRegion",
    "ChipSampler",
    "ChunkCache",
    "LabelScan",
    "Norm",
    "Region",
    "StoreRegion",
    "TrainResult",
    "TrainState",
    "build_regions",
    "class_weights_from_counts",
    "combine_stats",
    "lr_factor",
    "make_augment",
    "make_batch",
    "make_loss",
    "model_signature",
    "pair_regions",
    "pick_device",
    "prepare_scene",
    "read_chip",
    "restore_checkpoint",
    "save_checkpoint",
    "scan_labels",
    "train",
    "val_windows",
    "validate",
    "write_training_report",
]
