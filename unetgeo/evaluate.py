"""Segmentation metrics from a streaming confusion matrix.

The matrix is accumulated window by window (``update``), so scoring a 100k x 100k class raster
never holds more than one window. Rows are the truth, columns the prediction:
``cm[t, p]`` counts pixels of true class ``t`` predicted as ``p``. Pixels whose truth is the
ignore index (255, nodata) or outside ``[0, n_classes)`` are skipped; predictions outside
``[0, n_classes)`` (e.g. 255 where the prediction has nodata) are counted in ``n_unpredicted``
and left out of the matrix.

Per class ``c`` with ``TP = cm[c, c]``, ``FP = sum(cm[:, c]) - TP``, ``FN = sum(cm[c, :]) - TP``:
``IoU = TP / (TP + FP + FN)``, ``precision = TP / (TP + FP)``, ``recall = TP / (TP + FN)``,
``F1 = 2 TP / (2 TP + FP + FN)``; a class with an empty denominator scores NaN (absent from
truth and prediction) and is left out of the mean IoU.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from unetgeo.errors import InputError

log = logging.getLogger(__name__)


def _div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(num.shape, np.nan, dtype=np.float64)
    ok = den > 0
    out[ok] = num[ok] / den[ok]
    return out


def _clean(v: float) -> float | None:
    """JSON-safe float: NaN becomes None."""
    return None if (v is None or (isinstance(v, float) and math.isnan(v))) else float(v)


class ConfusionMatrix:
    """Streaming ``(n_classes, n_classes)`` int64 confusion matrix (rows truth, columns prediction).

    Args:
        n_classes: number of classes (ids ``0 .. n_classes-1``).
        ignore_index: truth value that is skipped (nodata); 255 by default.
    """

    def __init__(self, n_classes: int, ignore_index: int = 255):
        if n_classes < 1:
            raise InputError(f"n_classes={n_classes} must be >= 1")
        self.n_classes = int(n_classes)
        self.ignore_index = int(ignore_index)
        self.matrix = np.zeros((self.n_classes, self.n_classes), dtype=np.int64)
        self.n_unpredicted = 0

    def update(self, pred: np.ndarray, truth: np.ndarray, valid: np.ndarray | None = None) -> ConfusionMatrix:
        """Add one window.

        Args:
            pred: predicted class ids, any int dtype, any shape.
            truth: true class ids, same shape; ``ignore_index`` pixels are skipped.
            valid: optional bool mask of the same shape; False pixels are skipped.

        Returns:
            ``self`` (for chaining).
        """
        pred = np.asarray(pred)
        truth = np.asarray(truth)
        if pred.shape != truth.shape:
            raise InputError(f"prediction shape {pred.shape} differs from truth shape {truth.shape}")
        t = truth.ravel().astype(np.int64)
        p = pred.ravel().astype(np.int64)
        keep = (t != self.ignore_index) & (t >= 0) & (t < self.n_classes)
        if valid is not None:
            keep &= np.asarray(valid, dtype=bool).ravel()
        in_range = (p >= 0) & (p < self.n_classes)
        self.n_unpredicted += int(np.count_nonzero(keep & ~in_range))
        keep &= in_range
        idx = t[keep] * self.n_classes + p[keep]
        self.matrix += np.bincount(idx, minlength=self.n_classes**2).reshape(self.n_classes, self.n_classes)
        return self

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """Add another matrix of the same size (e.g. from another worker)."""
        if other.n_classes != self.n_classes:
            raise InputError(f"cannot merge a {other.n_classes}-class matrix into a {self.n_classes}-class one")
        self.matrix += other.matrix
        self.n_unpredicted += other.n_unpredicted
        return self

    # -- per-class scores --------------------------------------------------------------------
    @property
    def tp(self) -> np.ndarray:
        return np.diag(self.matrix).astype(np.float64)

    @property
    def fp(self) -> np.ndarray:
        return self.matrix.sum(axis=0) - self.tp

    @property
    def fn(self) -> np.ndarray:
        return self.matrix.sum(axis=1) - self.tp

    def iou(self) -> np.ndarray:
        """Per-class IoU, float64 ``(n_classes,)``, NaN where the class is absent everywhere."""
        return _div(self.tp, self.tp + self.fp + self.fn)

    def f1(self) -> np.ndarray:
        """Per-class F1 (Dice), float64 ``(n_classes,)``."""
        return _div(2 * self.tp, 2 * self.tp + self.fp + self.fn)

    def precision(self) -> np.ndarray:
        """Per-class precision ``TP / (TP + FP)``, NaN when the class was never predicted."""
        return _div(self.tp, self.tp + self.fp)

    def recall(self) -> np.ndarray:
        """Per-class recall ``TP / (TP + FN)``, NaN when the class is absent from the truth."""
        return _div(self.tp, self.tp + self.fn)

    def accuracy(self) -> float:
        """Pixel accuracy over counted pixels (NaN if none)."""
        total = self.matrix.sum()
        return float(self.tp.sum() / total) if total else float("nan")

    def miou(self) -> float:
        """Mean IoU over classes present in truth or prediction (NaN if none)."""
        v = self.iou()
        v = v[~np.isnan(v)]
        return float(v.mean()) if v.size else float("nan")

    @property
    def n_pixels(self) -> int:
        """Pixels counted in the matrix."""
        return int(self.matrix.sum())

    def as_dict(self, class_names: Sequence[str] | None = None) -> dict:
        """JSON-able summary (NaN written as null).

        Returns:
            ``{"miou", "pixel_accuracy", "n_pixels", "n_unpredicted", "per_class": {name: {iou, f1,
            precision, recall, support}}, "confusion_matrix": [[...]] (rows truth), "class_names"}``
            plus the shortcuts ``"iou": {name: IoU}``, ``"f1": {name: F1}`` and ``"accuracy"``
            (= ``pixel_accuracy``).
        """
        names = list(class_names) if class_names is not None else [str(i) for i in range(self.n_classes)]
        if len(names) != self.n_classes:
            raise InputError(f"{len(names)} class names given for a {self.n_classes}-class matrix: {names}")
        iou, f1, pr, rc = self.iou(), self.f1(), self.precision(), self.recall()
        support = self.matrix.sum(axis=1)
        return {
            "miou": _clean(self.miou()),
            "pixel_accuracy": _clean(self.accuracy()),
            "accuracy": _clean(self.accuracy()),
            "iou": {n: _clean(float(iou[i])) for i, n in enumerate(names)},
            "f1": {n: _clean(float(f1[i])) for i, n in enumerate(names)},
            "n_pixels": self.n_pixels,
            "n_unpredicted": int(self.n_unpredicted),
            "per_class": {
                n: {
                    "iou": _clean(float(iou[i])),
                    "f1": _clean(float(f1[i])),
                    "precision": _clean(float(pr[i])),
                    "recall": _clean(float(rc[i])),
                    "support": int(support[i]),
                }
                for i, n in enumerate(names)
            },
            "confusion_matrix": self.matrix.tolist(),
            "class_names": names,
        }


def score_rasters(
    pred_uri: str,
    truth_uri: str,
    n_classes: int,
    *,
    class_names: Sequence[str] | None = None,
    window_px: int = 1024,
    ignore_index: int = 255,
) -> dict:
    """Score a class raster against a truth raster on the same grid, window by window.

    Args:
        pred_uri: predicted class ids (e.g. ``classes.tif``, uint8, nodata 255).
        truth_uri: true class ids on the same grid; its nodata / ``ignore_index`` pixels are skipped.
        n_classes: number of classes.
        class_names: names for the per-class entries (``"0".."n-1"`` when omitted).
        window_px: side of the windows read at a time.

    Returns:
        :meth:`ConfusionMatrix.as_dict` of the whole raster.

    Raises:
        GridMismatchError: the rasters are not on the same grid.
        SceneReadError: a raster cannot be read.
    """
    from unetgeo.grid import iter_tile_windows, same_grid
    from unetgeo.io.scene import SceneReader, crs_equal, open_scene

    pi = open_scene(pred_uri, need_crs=False)
    ti = open_scene(truth_uri, need_crs=False)
    same_grid(ti.grid, pi.grid, truth_uri, pred_uri, crs_equal=crs_equal)
    cm = ConfusionMatrix(n_classes, ignore_index=ignore_index)
    with SceneReader(pred_uri) as pr, SceneReader(truth_uri) as tr:
        for win in iter_tile_windows(ti.grid.height, ti.grid.width, window_px):
            p, p_valid = pr.read(win, bands=[1])
            t, t_valid = tr.read(win, bands=[1])
            pred = np.where(p_valid, p[0], 255)
            cm.update(pred, t[0], valid=t_valid)
    log.info("scored %s against %s: mIoU %.4f over %d px", pred_uri, truth_uri, cm.miou(), cm.n_pixels)
    return cm.as_dict(class_names)


def _score_stores(probs_uri: str, labels_uri: str, valid_uri: str, cm: ConfusionMatrix) -> None:
    """Accumulate argmax(probs) against labels over valid pixels, chunk by chunk."""
    from unetgeo.grid import iter_tile_windows
    from unetgeo.io.store import check_same_grid, open_store, read_window

    probs, labels, valid = open_store(probs_uri), open_store(labels_uri), open_store(valid_uri)
    check_same_grid(probs, labels, probs_uri, labels_uri)
    t = int(probs.chunks[-1])
    for win in iter_tile_windows(probs.shape[-2], probs.shape[-1], t):
        pred = read_window(probs, win).argmax(axis=0).astype(np.uint8)
        cm.update(pred, read_window(labels, win), read_window(valid, win).astype(bool))


def evaluate_model(
    model_dir: str,
    *,
    scene: str | None = None,
    labels: str | None = None,
    images: str | None = None,
    masks: str | None = None,
    inference=None,
    tile_px: int | None = None,
    work_dir: str | None = None,
    class_attribute: str | None = None,
    class_map: dict[str, int] | None = None,
    ignore_values: Sequence[float] = (),
    progress: bool = False,
) -> dict:
    """Score a model on labelled data through the full inference path (tiles, halo, fusion).

    Either ``scene`` + ``labels`` (a label raster on the scene grid, or a vector file rasterised
    onto it), or ``images`` + ``masks`` (folders of image / RGB-coded mask pairs matched by file
    stem; mask colours from the model's classes, ``rgb``). Every image goes through
    :func:`unetgeo.tiling.make_tiles` (pairs: written to a pixel-grid store) and
    :func:`unetgeo.infer.predict_tiles` exactly as ``unetgeo predict`` runs them.

    Args:
        inference: an :class:`unetgeo.config.InferenceSpec` (default: the embedded defaults).
        tile_px: chunk side of the tiles; default the embedded config's ``tiling.tile_px``, the
            tile size ``unetgeo predict`` uses for the same model and config.
        class_attribute: vector labels: the attribute holding the class (name or id, or a key of
            ``class_map``).
        class_map: vector labels: attribute value -> class id (``"__other__"``: class of uncovered
            pixels); raster labels: raster value (e.g. ``"-1"``) -> class id; 255 = ignored.
        ignore_values: raster labels: values meaning "not labelled" (e.g. ``-1``); not scored.

    Returns:
        :meth:`ConfusionMatrix.as_dict` plus ``images`` (how many were scored).

    Raises:
        LabelError: the labels cannot be read or aligned; InputError for a wrong combination.
    """
    import tempfile

    from unetgeo.config import Config
    from unetgeo.errors import InputError
    from unetgeo.io.bundle import read_meta
    from unetgeo.io.uri import remove
    from unetgeo.model import ModelMeta

    meta = ModelMeta.from_dict(read_meta(model_dir), where=f"{model_dir}/model.json")
    tile_px = int(tile_px or Config().tiling.tile_px)
    cm = ConfusionMatrix(meta.n_classes)
    tmp = None
    if work_dir is None:
        tmp = tempfile.mkdtemp(prefix="unetgeo-eval-")
        work_dir = tmp
    try:
        if scene and labels:
            spec = _LabelSpec(labels, class_attribute, class_map, tuple(float(v) for v in ignore_values))
            _evaluate_scene(meta, model_dir, scene, spec, work_dir, inference, cm, progress, tile_px)
            n = 1
        elif images and masks:
            n = _evaluate_pairs(meta, model_dir, images, masks, work_dir, inference, cm, progress, tile_px)
        else:
            raise InputError("evaluate needs --scene with --labels, or --images with --masks")
    finally:
        if tmp is not None:
            remove(tmp)
    out = cm.as_dict(meta.class_names)
    out["images"] = n
    out["model_id"] = meta.model_id
    return out


def parse_class_map(text: str) -> dict[str, int]:
    """A class map from a JSON object or the path of a JSON file: ``{"forest": 1, "__other__": 0}``.

    Raises:
        InputError: unreadable file, not a JSON object, or a value that is not a whole class id.
    """
    import json

    from unetgeo.io.files import read_text

    src = text.strip()
    where = "--class-map"
    if not src.startswith("{"):
        where = src
        try:
            src = read_text(src)
        except OSError as e:
            raise InputError(f"--class-map {text!r}: neither a JSON object nor a readable file ({e}); "
                             "give e.g. '{\"forest\": 1}' or a .json file") from None
    try:
        obj = json.loads(src)
    except ValueError as e:
        raise InputError(f"{where}: not valid JSON ({e}); give an object such as {{\"forest\": 1}}") from None
    if not isinstance(obj, dict) or not all(isinstance(v, int) and not isinstance(v, bool) for v in obj.values()):
        raise InputError(f"{where}: {obj!r} is not an object of class ids; give e.g. {{\"forest\": 1, \"__other__\": 0}}")
    return {str(k): int(v) for k, v in obj.items()}


@dataclass(frozen=True)
class _LabelSpec:
    """The labels of a scene and how their values become class ids (see :func:`evaluate_model`)."""

    uri: str
    class_attribute: str | None = None
    class_map: dict[str, int] | None = None
    ignore_values: tuple[float, ...] = ()


def _evaluate_scene(meta, model_dir: str, scene: str, labels: _LabelSpec, work_dir: str, inference,
                    cm: ConfusionMatrix, progress: bool, tile_px: int) -> None:
    """Tile ``scene``, write its labels as a store on the tile grid, predict and score."""
    import hashlib

    from unetgeo.errors import LabelError
    from unetgeo.infer import predict_tiles
    from unetgeo.io.labels import is_vector_file, write_raster_label_store, write_vector_label_store
    from unetgeo.io.uri import join
    from unetgeo.tiling import make_tiles

    vector = is_vector_file(labels.uri)
    if vector and labels.ignore_values:
        raise LabelError(f"{labels.uri}: ignore_values={list(labels.ignore_values)} applies to raster labels only; "
                         "for vector labels map those attribute values to 255 in the class map")
    if not vector and labels.class_attribute:
        raise LabelError(f"{labels.uri}: class_attribute={labels.class_attribute!r} applies to vector labels only; "
                         "drop it for a label raster")
    tr = make_tiles(scene, join(work_dir, "tiles.zarr"), tile_px=tile_px, progress=progress)
    key = hashlib.sha256(f"{labels}|{tr.tiles_uri}".encode()).hexdigest()[:16]
    lab_uri = join(work_dir, "labels.zarr")
    if vector:
        write_vector_label_store(labels.uri, tr.grid, lab_uri, tile_px=tile_px, n_classes=meta.n_classes,
                                 class_attribute=labels.class_attribute, class_map=labels.class_map,
                                 class_names=meta.class_names, run_key=key, image_uri=scene)
    else:
        write_raster_label_store(labels.uri, tr.grid, lab_uri, tile_px=tile_px, n_classes=meta.n_classes,
                                 class_map=labels.class_map, run_key=key, image_uri=scene,
                                 ignore_values=labels.ignore_values)
    pr = predict_tiles(tr.tiles_uri, model_dir, join(work_dir, "probs.zarr"), valid_uri=tr.valid_uri,
                       inference=inference, progress=progress)
    _score_stores(pr.probs_uri, lab_uri, tr.valid_uri, cm)


def _evaluate_pairs(meta, model_dir, images, masks, work_dir, inference, cm, progress, tile_px) -> int:
    from unetgeo.errors import LabelError
    from unetgeo.grid import Grid, iter_tile_windows
    from unetgeo.infer import predict_tiles
    from unetgeo.io.files import list_files, mtime_ns
    from unetgeo.io.labels import read_pair
    from unetgeo.io.naming import stem
    from unetgeo.io.store import ChunkedStoreWriter
    from unetgeo.io.uri import join, remove

    classes = meta.raw.get("classes", [])
    mask_by_stem = {stem(p): p for p in list_files(masks)}
    imgs = list_files(images)
    if not imgs:
        raise LabelError(f"{images}: no image files found (give --images a folder of images)")
    class_rgb = [tuple(c["rgb"]) if c.get("rgb") else None for c in classes]
    if not any(class_rgb):
        raise LabelError(f"{model_dir}/model.json: classes carry no mask colours (rgb), so RGB masks cannot be decoded")
    pairs_cfg = (meta.raw.get("training") or {}).get("training", {}).get("pairs") or {}
    ignore_rgb = [tuple(c) for c in pairs_cfg.get("ignore_rgb", [])]
    n = 0
    for img in imgs:
        mask = mask_by_stem.get(stem(img))
        if mask is None:
            raise LabelError(f"{img}: no mask with the same name in {masks}")
        arr, lab = read_pair(str(img), str(mask), class_rgb, ignore_rgb, len(meta.in_bands))
        h, w = lab.shape
        grid = Grid(crs_wkt="", transform=(1.0, 0.0, 0.0, 0.0, -1.0, float(h)), height=h, width=w)
        t = tile_px
        run = join(work_dir, f"pair_{n}")
        stores = {}
        for name, data, dtype, fill in (("tiles", arr, arr.dtype, 0), ("valid", np.ones((h, w), bool), bool, False),
                                        ("labels", lab, np.uint8, 255)):
            attrs = {**grid.to_attrs(), "band_names": list(meta.in_bands), "source": {"uri": str(img)}}
            wr = ChunkedStoreWriter(join(run, f"{name}.zarr"), shape=data.shape, chunk_px=t, dtype=dtype,
                                    fill_value=fill, attrs=attrs, run_key=f"{img}:{mtime_ns(img)}")
            for win in iter_tile_windows(h, w, t):
                wr.write(win, data[(..., *win.slices)])
            stores[name] = wr.publish({})
        pr = predict_tiles(stores["tiles"], model_dir, join(run, "probs.zarr"), valid_uri=stores["valid"],
                           inference=inference, progress=False)
        _score_stores(pr.probs_uri, stores["labels"], stores["valid"], cm)
        remove(run)
        n += 1
        if progress:
            log.info("scored %s: running mIoU %.3f", img, cm.miou())
    return n
