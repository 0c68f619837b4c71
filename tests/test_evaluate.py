"""Metrics from a streaming confusion matrix; scoring class rasters window by window."""

from __future__ import annotations

import math

import numpy as np
import pytest
import rasterio
from rasterio import Affine

from unetgeo.errors import GridMismatchError
from unetgeo.evaluate import ConfusionMatrix, score_rasters


def _known() -> tuple[np.ndarray, np.ndarray]:
    # truth/pred pairs giving cm = [[5, 1, 0], [2, 3, 1], [0, 0, 4]] (rows truth)
    pairs = [(0, 0)] * 5 + [(0, 1)] + [(1, 0)] * 2 + [(1, 1)] * 3 + [(1, 2)] + [(2, 2)] * 4
    truth = np.array([t for t, _ in pairs], dtype=np.uint8)
    pred = np.array([p for _, p in pairs], dtype=np.uint8)
    return pred, truth


def test_known_confusion_matrix_scores():
    pred, truth = _known()
    cm = ConfusionMatrix(3).update(pred, truth)
    assert cm.matrix.tolist() == [[5, 1, 0], [2, 3, 1], [0, 0, 4]]
    # class 0: TP 5 FP 2 FN 1; class 1: TP 3 FP 1 FN 3; class 2: TP 4 FP 1 FN 0
    np.testing.assert_allclose(cm.iou(), [5 / 8, 3 / 7, 4 / 5])
    np.testing.assert_allclose(cm.precision(), [5 / 7, 3 / 4, 4 / 5])
    np.testing.assert_allclose(cm.recall(), [5 / 6, 3 / 6, 4 / 4])
    np.testing.assert_allclose(cm.f1(), [10 / 13, 6 / 10, 8 / 9])
    assert cm.accuracy() == pytest.approx(12 / 16)
    assert cm.miou() == pytest.approx((5 / 8 + 3 / 7 + 4 / 5) / 3)


def test_streaming_equals_one_shot_and_ignore_is_skipped():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 4, size=(64, 64)).astype(np.uint8)
    pred = rng.integers(0, 4, size=(64, 64)).astype(np.uint8)
    truth[:8] = 255  # nodata rows
    one = ConfusionMatrix(4).update(pred, truth)
    parts = ConfusionMatrix(4)
    for r in range(0, 64, 16):
        parts.update(pred[r : r + 16], truth[r : r + 16])
    np.testing.assert_array_equal(one.matrix, parts.matrix)
    assert one.n_pixels == 56 * 64
    # a prediction of 255 where truth is valid is counted as unpredicted, not in the matrix
    pred2 = pred.copy()
    pred2[10, :5] = 255
    cm2 = ConfusionMatrix(4).update(pred2, truth)
    assert cm2.n_unpredicted == 5 and cm2.n_pixels == one.n_pixels - 5


def test_absent_class_is_nan_and_left_out_of_miou():
    cm = ConfusionMatrix(3).update(np.array([0, 0, 1]), np.array([0, 0, 1]))
    iou = cm.iou()
    assert iou[0] == 1.0 and iou[1] == 1.0 and math.isnan(iou[2])
    assert cm.miou() == 1.0
    d = cm.as_dict(["a", "b", "c"])
    assert d["per_class"]["c"]["iou"] is None  # JSON-safe
    assert d["iou"] == {"a": 1.0, "b": 1.0, "c": None} and d["accuracy"] == d["pixel_accuracy"] == 1.0
    assert d["per_class"]["a"]["support"] == 2
    assert d["confusion_matrix"] == [[2, 0, 0], [0, 1, 0], [0, 0, 0]]
    with pytest.raises(ValueError, match="2 class names"):
        cm.as_dict(["a", "b"])


def _write(path, arr, transform, nodata=255, crs="EPSG:32633"):
    with rasterio.open(
        path, "w", driver="GTiff", width=arr.shape[1], height=arr.shape[0], count=1, dtype="uint8",
        crs=crs, transform=transform, nodata=nodata,
    ) as ds:
        ds.write(arr, 1)


def test_score_rasters_windowed(tmp_path):
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 2, size=(100, 130)).astype(np.uint8)
    pred = truth.copy()
    pred[:20, :30] = 1 - pred[:20, :30]  # 600 wrong pixels
    truth[90:, :] = 255  # nodata
    t = Affine(10, 0, 500000, 0, -10, 5400000)
    _write(tmp_path / "pred.tif", pred, t)
    _write(tmp_path / "truth.tif", truth, t)
    d = score_rasters(str(tmp_path / "pred.tif"), str(tmp_path / "truth.tif"), 2, class_names=["bg", "water"], window_px=32)
    expect = ConfusionMatrix(2).update(pred, truth)
    assert d["confusion_matrix"] == expect.matrix.tolist()
    assert d["n_pixels"] == 90 * 130
    assert d["pixel_accuracy"] == pytest.approx(1 - 600 / (90 * 130))
    _write(tmp_path / "shifted.tif", truth, Affine(10, 0, 500010, 0, -10, 5400000))
    with pytest.raises(GridMismatchError, match="shifted.tif"):
        score_rasters(str(tmp_path / "pred.tif"), str(tmp_path / "shifted.tif"), 2)
