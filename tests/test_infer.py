"""Stage predict: seam-free tiled prediction, fusion, nodata, georeferencing, the GPU path on CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin

from unetgeo.config import InferenceSpec, ModelSpec
from unetgeo.errors import BandMismatchError
from unetgeo.infer import (
    PredictResult,
    _apply,
    _undo,
    _variants,
    fuse_predict,
    predict_array,
    predict_tiles,
)
from unetgeo.io.store import open_store
from unetgeo.model import build_model, load_bundle, normalise, save_bundle
from unetgeo.tiling import TileResult, make_tiles

BANDS = ["blue", "green", "red", "nir", "swir"]
TINY = ModelSpec(arch="Unet", encoder="resnet18", encoder_depth=3, decoder_channels=(32, 16, 8))


def _bundle(model_dir: Path, spec: ModelSpec = TINY, seed: int = 0, bands=BANDS, calibrate: Path | None = None) -> Path:
    """A fixed random-init model; with ``calibrate`` (a scene), its head bias is shifted so that
    about half the scene goes to each class (a random head alone predicts one class everywhere)."""
    torch.manual_seed(seed)
    model = build_model(spec, len(bands), 2)
    if calibrate is not None:
        with rasterio.open(calibrate) as ds:
            x = (ds.read(window=((0, 256), (0, 256))).astype(np.float32) - 1000.0) / 500.0
        model.eval()
        with torch.inference_mode():
            logits = model(torch.from_numpy(x)[None])[0]
        diff = float(torch.median(logits[0] - logits[1]))
        head = model.segmentation_head[0]
        with torch.no_grad():
            head.bias[1] += diff
    meta = {
        "arch": spec.arch, "encoder": spec.encoder, "encoder_depth": spec.encoder_depth,
        "decoder_channels": list(spec.decoder_channels) if spec.decoder_channels else None,
        "in_bands": list(bands), "norm": {"mean": [1000.0] * len(bands), "std": [500.0] * len(bands)},
        "classes": [{"name": "background", "color": "#d9d9d9"}, {"name": "water", "color": "#1f78b4"}],
        "tile_px": 256, "metrics": {}, "training": {}, "name": "test",
    }
    save_bundle(str(model_dir), model, meta)
    return model_dir


def _scene(path: Path, size: int, seed: int = 0, nodata_corner: bool = True) -> Path:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    base = 1000 + 600 * np.sin(xx / 23.0) * np.cos(yy / 31.0)
    data = np.stack([base + 150 * b + rng.normal(0, 60, (size, size)) for b in range(5)]).clip(1, 60000).astype(np.uint16)
    if nodata_corner:
        data[:, : size // 4, : size // 4] = 0
    with rasterio.open(path, "w", driver="GTiff", height=size, width=size, count=5, dtype="uint16", nodata=0,
                       crs="EPSG:32633", transform=from_origin(500000, 5400000, 10, 10), tiled=True,
                       blockxsize=256, blockysize=256) as ds:
        ds.write(data)
        for i, b in enumerate(BANDS, 1):
            ds.set_band_description(i, b)
    return path


class Pointwise(torch.nn.Module):
    """A 1x1 conv: equivariant to flips and rotations, so fused symmetries equal one pass."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(5, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def test_symmetries_are_undone_exactly() -> None:
    x = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).reshape(2, 3, 4, 6)
    for k, f in _variants(flips=False, d4=True):
        assert torch.equal(_undo(_apply(x, k, f), k, f), x)
    assert len(_variants(True, False)) == 3 and len(_variants(False, True)) == 8


def test_fused_identical_variants_equal_the_single_pass() -> None:
    torch.manual_seed(1)
    x = torch.randn(3, 5, 64, 96)
    model = Pointwise().eval()
    with torch.inference_mode():
        single = fuse_predict(model, x)
        assert torch.allclose(single.sum(1), torch.ones(3, 64, 96), atol=1e-5)
        torch.testing.assert_close(fuse_predict(model, x, scales=(1.0, 1.0)), single)
        torch.testing.assert_close(fuse_predict(model, x, flips=True), single, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(fuse_predict(model, x, d4=True), single, atol=1e-6, rtol=1e-5)


def test_batched_fusion_equals_one_pass_per_variant() -> None:
    """All variants in one forward pass give what separate passes, averaged, give."""
    torch.manual_seed(2)
    model = build_model(TINY, 5, 2).eval()
    x = torch.randn(2, 5, 64, 96)
    scales = (0.75, 1.0, 1.5)
    calls: list[tuple[int, ...]] = []
    hook = model.register_forward_pre_hook(lambda m, a: calls.append(tuple(a[0].shape)))
    with torch.inference_mode():
        fused = fuse_predict(model, x, scales=scales, flips=True, stride=8)
    hook.remove()
    assert len(calls) == len(scales)  # one forward pass per scale, all flips batched
    assert all(c[0] == 2 * 3 for c in calls)
    expected = torch.zeros_like(fused)
    with torch.inference_mode():
        for s in scales:
            for k, f in _variants(True, False):
                one = fuse_predict(model, _apply(x, k, f), scales=(s,), stride=8)
                expected += _undo(one, k, f) / (len(scales) * 3)
    torch.testing.assert_close(fused, expected, atol=1e-4, rtol=1e-4)


def test_predict_keeps_grid_masks_nodata_and_sums_to_one(tmp_path: Path) -> None:
    scene = _scene(tmp_path / "s.tif", 200)
    model_dir = _bundle(tmp_path / "model")
    tr = make_tiles(str(scene), str(tmp_path / "run" / "tiles.zarr"), tile_px=64)
    pr = predict_tiles(tr.tiles_uri, str(model_dir), str(tmp_path / "run" / "probs.zarr"),
                       inference=InferenceSpec(halo_px=16, batch_size=3))
    probs = open_store(pr.probs_uri)
    tiles = open_store(tr.tiles_uri)
    valid = open_store(tr.valid_uri)[:]
    for k in ("crs", "transform", "height", "width"):
        assert probs.attrs[k] == tiles.attrs[k]
    assert probs.shape == (2, 200, 200) and probs.chunks == (2, 64, 64) and probs.dtype == np.float16
    p = probs[:].astype(np.float32)
    assert (p[:, ~valid] == 0).all()  # nodata never gets a class probability
    np.testing.assert_allclose(p[:, valid].sum(0), 1.0, atol=2e-3)
    assert probs.attrs["class_names"] == ["background", "water"]
    assert pr.n_written == 16 and pr.megapixels == pytest.approx(0.04)


def test_tiled_prediction_has_no_seams(tmp_path: Path) -> None:
    """1024² scene, tile 256, halo 64: tiled argmax equals whole-image argmax almost everywhere."""
    torch.set_num_threads(max(1, torch.get_num_threads()))
    size = 1024
    scene = _scene(tmp_path / "s.tif", size, nodata_corner=False)
    # a depth-3 encoder: its receptive field fits in the 64 px halo (deeper models need a larger halo)
    spec = ModelSpec(arch="Unet", encoder="resnet18", encoder_depth=3, decoder_channels=(64, 32, 16))
    model_dir = _bundle(tmp_path / "model", spec, seed=3, calibrate=scene)
    tr = make_tiles(str(scene), str(tmp_path / "run" / "tiles.zarr"), tile_px=256)
    pr = predict_tiles(tr.tiles_uri, str(model_dir), str(tmp_path / "run" / "probs.zarr"),
                       inference=InferenceSpec(halo_px=64, batch_size=4))
    tiled = open_store(pr.probs_uri)[:].astype(np.float32).argmax(0)
    model, meta = load_bundle(str(model_dir))
    with rasterio.open(scene) as ds:
        x = normalise(ds.read(), meta)
    # same edge policy (reflect by the halo) and the same float16 storage as the tiled path
    whole = predict_array(model, x, stride=meta.stride, edge_pad_px=64).astype(np.float16).astype(np.float32).argmax(0)
    differ = float((tiled != whole).mean())
    assert 0.05 < float(whole.mean()) < 0.95, "the test model must predict both classes"
    assert differ <= 1e-4, f"{differ:.4%} of pixels differ between tiled and whole-image prediction"


def test_band_mismatch_is_refused_naming_both_lists(tmp_path: Path) -> None:
    scene = _scene(tmp_path / "s.tif", 64)
    model_dir = _bundle(tmp_path / "model", bands=["b02", "b03", "b04", "b08", "b12"])  # b12 = swir2, not swir
    tr = make_tiles(str(scene), str(tmp_path / "tiles.zarr"), tile_px=64)
    with pytest.raises(BandMismatchError, match=r"\['blue', 'green', 'red', 'nir', 'swir'\].*\['b02', 'b03'"):
        predict_tiles(tr.tiles_uri, str(model_dir), str(tmp_path / "probs.zarr"))
    assert not (tmp_path / "probs.zarr").exists()


def _predict_each(
    tmp_path: Path, size: int, tile_px: int, **specs: InferenceSpec
) -> tuple[TileResult, list[PredictResult], list[np.ndarray]]:
    """Tile one ``_scene`` of ``size`` px and predict it once per ``name=InferenceSpec`` (into ``name.zarr``).

    Args:
        tmp_path: the test's folder.
        size: scene side in pixels.
        tile_px: chunk side of the tiles.
        **specs: the inference settings to compare, by name.

    Returns:
        ``(tile result, prediction results, float32 probabilities)``, the last two in ``specs`` order.
    """
    scene = _scene(tmp_path / "s.tif", size)
    model_dir = _bundle(tmp_path / "model")
    tr = make_tiles(str(scene), str(tmp_path / "tiles.zarr"), tile_px=tile_px)
    results = [predict_tiles(tr.tiles_uri, str(model_dir), str(tmp_path / f"{name}.zarr"), inference=spec)
               for name, spec in specs.items()]
    return tr, results, [open_store(r.probs_uri)[:].astype(np.float32) for r in results]


def test_gpu_path_runs_on_cpu(tmp_path: Path) -> None:
    """bf16 autocast + channels_last (the CUDA settings) on CPU agree with the fp32 path."""
    tr, _, (a, b) = _predict_each(tmp_path, 128, 64, fp32=InferenceSpec(halo_px=16),
                                  bf16=InferenceSpec(halo_px=16, precision="bf16", channels_last=True))
    valid = open_store(tr.valid_uri)[:]
    assert (a.argmax(0) == b.argmax(0))[valid].mean() > 0.97
    assert np.abs(a - b)[:, valid].mean() < 0.02


@pytest.mark.gpu
def test_cuda_prediction_matches_cpu(tmp_path: Path) -> None:
    _, _, (a, b) = _predict_each(tmp_path, 256, 128, cpu=InferenceSpec(device="cpu"), gpu=InferenceSpec(device="cuda"))
    assert (a.argmax(0) == b.argmax(0)).mean() > 0.98


def test_workers_share_chunks_and_match_one_process(tmp_path: Path) -> None:
    """The multi-GPU path (one Dask worker process per device), run with two CPU workers."""
    _, (_, two), (one_probs, two_probs) = _predict_each(
        tmp_path, 192, 64, one=InferenceSpec(halo_px=16), two=InferenceSpec(halo_px=16, workers=2)
    )
    assert two.n_written == 9 and "2 Dask workers" in two.device
    np.testing.assert_allclose(two_probs, one_probs, atol=2e-3)


@pytest.mark.gpu
def test_auto_batch_fits_gpu_memory_and_changes_nothing(tmp_path: Path) -> None:
    from unetgeo.infer import fit_batch_size

    scene = _scene(tmp_path / "s.tif", 256)
    model_dir = _bundle(tmp_path / "model")
    model, meta = load_bundle(str(model_dir), device="cuda")
    spec = InferenceSpec(device="cuda", batch_size=2)
    assert fit_batch_size(model, 5, (192, 192), torch.device("cuda"), spec, meta.stride, None) >= 1
    assert fit_batch_size(model, 5, (192, 192), torch.device("cpu"), spec, meta.stride, None) == 2
    tr = make_tiles(str(scene), str(tmp_path / "tiles.zarr"), tile_px=64)
    a = predict_tiles(tr.tiles_uri, str(model_dir), str(tmp_path / "a.zarr"), inference=spec)
    b = predict_tiles(tr.tiles_uri, str(model_dir), str(tmp_path / "b.zarr"),
                      inference=spec.model_copy(update={"auto_batch": False}))
    assert (open_store(a.probs_uri)[:].argmax(0) == open_store(b.probs_uri)[:].argmax(0)).mean() > 0.99


@pytest.mark.parametrize("n_threads,depth", [(3, 2), (4, 1), (2, 8)])
def test_parallel_reader_yields_the_serial_items_in_order(tmp_path: Path, n_threads: int, depth: int) -> None:
    """Decode threads (any count, any queue depth) give the serial reader's items, in window order."""
    from unetgeo.grid import Grid, halo_window, iter_tile_windows
    from unetgeo.infer import _prefetch

    scene = _scene(tmp_path / "s.tif", 160)
    meta = load_bundle(str(_bundle(tmp_path / "model")))[1]
    tr = make_tiles(str(scene), str(tmp_path / "tiles.zarr"), tile_px=64)
    tiles, valid = open_store(tr.tiles_uri), open_store(tr.valid_uri)
    grid = Grid.from_attrs(dict(tiles.attrs))
    halos = [halo_window(w, 16, grid.height, grid.width, meta.stride) for w in iter_tile_windows(160, 160, 64)]
    serial = list(_prefetch(tiles, valid, iter(halos), meta, depth=depth, n_threads=0))
    parallel = list(_prefetch(tiles, valid, iter(halos), meta, depth=depth, n_threads=n_threads))
    assert [it.hw for it in parallel] == halos == [it.hw for it in serial]
    for a, b in zip(serial, parallel, strict=True):
        np.testing.assert_array_equal(a.x, b.x)
        np.testing.assert_array_equal(a.valid_core, b.valid_core)


def test_parallel_reader_stops_early_and_raises_read_errors(tmp_path: Path) -> None:
    """Leaving the loop early ends the feeder; an error in a read reaches the consumer."""
    from unetgeo.grid import Window, halo_window
    from unetgeo.infer import _prefetch

    scene = _scene(tmp_path / "s.tif", 128)
    tr = make_tiles(str(scene), str(tmp_path / "tiles.zarr"), tile_px=64)
    tiles, valid = open_store(tr.tiles_uri), open_store(tr.valid_uri)
    meta = load_bundle(str(_bundle(tmp_path / "model")))[1]
    halos = [halo_window(Window(r, c, 64, 64), 16, 128, 128, meta.stride) for r in (0, 64) for c in (0, 64)]
    gen = _prefetch(tiles, valid, iter(halos * 4), meta, depth=2, n_threads=3)
    assert next(gen).hw == halos[0]
    gen.close()  # must not hang

    def bad() -> object:
        yield halos[0]
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        list(_prefetch(tiles, valid, bad(), meta, depth=2, n_threads=2))
