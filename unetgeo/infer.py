"""Stage ``predict``: tiles.zarr -> probs.zarr, seam-free and out-of-core, with test-time fusion.

Every output chunk is predicted once, from its window grown by a halo (``halo_px``), reflect-padded
at scene edges and up to the encoder stride, then cropped back to the chunk: neighbouring chunks
see the same context at their shared border, so no seams appear. Only a few windows are in memory
at any time; a small pool of decode threads reads and normalises the next windows, in order,
while the model computes.

Test-time fusion batches all variants of a window batch: for each scale, the (bilinearly resized,
antialiased when shrinking) windows and their flips / D4 symmetries go through the network in one
forward pass per distinct shape; softmax probabilities are mapped back, resized to the window,
and averaged (optionally weighted per scale).
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from unetgeo.config import InferenceSpec
from unetgeo.errors import InputError
from unetgeo.grid import Grid, HaloWindow, Window, align_up, halo_window, iter_tile_windows, n_tiles
from unetgeo.io.store import ChunkedStoreWriter, check_same_grid, open_store, read_window
from unetgeo.io.uri import sibling
from unetgeo.progress import progress_bar

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PredictResult:
    """What :func:`predict_tiles` wrote."""

    probs_uri: str
    n_chunks: int
    n_written: int
    seconds: float
    megapixels: float
    device: str
    batch_size: int = 0  # windows per forward batch asked for (CUDA auto_batch may raise it; logged)
    workers: int = 1  # processes that shared the chunks


def resolve_device(device: str = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else is passed to ``torch.device``."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {device}: no CUDA device is available here; use --device cpu or auto")
    return dev


def _autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for ``precision`` (``auto``: bf16/fp16 on CUDA, none on CPU)."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return None


# --------------------------------------------------------------------------------------------
# test-time fusion (pure tensor code)
# --------------------------------------------------------------------------------------------
def _variants(flips: bool, d4: bool) -> list[tuple[int, bool]]:
    """Symmetries as ``(k rot90, hflip)``: identity; +h/v flips; or all eight of D4."""
    if d4:
        return [(k, f) for k in range(4) for f in (False, True)]
    if flips:
        return [(0, False), (0, True), (2, True)]  # identity, horizontal flip, vertical flip
    return [(0, False)]


def _apply(x: torch.Tensor, k: int, hflip: bool) -> torch.Tensor:
    if hflip:
        x = torch.flip(x, dims=(-1,))
    return torch.rot90(x, k, dims=(-2, -1)) if k else x


def _undo(x: torch.Tensor, k: int, hflip: bool) -> torch.Tensor:
    if k:
        x = torch.rot90(x, -k, dims=(-2, -1))
    return torch.flip(x, dims=(-1,)) if hflip else x


def fuse_predict(
    model: torch.nn.Module,
    x: torch.Tensor,
    *,
    scales: Sequence[float] = (1.0,),
    flips: bool = False,
    d4: bool = False,
    scale_weights: Sequence[float] | None = None,
    stride: int = 32,
    max_batch: int | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Fused softmax probabilities of ``model`` over scales and symmetries.

    Args:
        model: network mapping ``(N, C, h, w)`` to logits ``(N, K, h, w)``; ``h, w`` multiples of ``stride``.
        x: normalised input ``(B, C, H, W)`` float32, ``H, W`` multiples of ``stride``.
        scales: resize factors; each scaled size is rounded up to the stride.
        flips: add horizontal and vertical flips; ``d4``: all eight square symmetries instead.
        scale_weights: weight of each scale (normalised); equal when ``None``.
        max_batch: split a forward pass into micro-batches of at most this many images.
        autocast_dtype: run the network under autocast with this dtype (e.g. ``torch.bfloat16``).

    Returns:
        ``(B, K, H, W)`` float32 probabilities that sum to 1 over ``K``.

    All variants of one shape go through the network together: a batch of B windows with S scales
    and V symmetries takes S forward passes (2S for non-square windows under D4), not S*V*B.
    """
    B, _, H, W = x.shape
    w = np.ones(len(scales)) if scale_weights is None else np.asarray(scale_weights, dtype=float)
    w = w / w.sum()
    out: torch.Tensor | None = None
    variants = _variants(flips, d4)
    for s, ws in zip(scales, w, strict=True):
        hs, wsz = (H, W) if s == 1 else (align_up(round(H * s), stride), align_up(round(W * s), stride))
        xs = x if (hs, wsz) == (H, W) else F.interpolate(
            x, size=(hs, wsz), mode="bilinear", align_corners=False, antialias=(hs < H or wsz < W)
        )
        groups: dict[tuple[int, int], list[tuple[int, bool]]] = {}
        for k, f in variants:
            shape = (wsz, hs) if k % 2 else (hs, wsz)
            groups.setdefault(shape, []).append((k, f))
        for _shape, vs in groups.items():
            batch = torch.cat([_apply(xs, k, f) for k, f in vs], dim=0)
            probs = _forward(model, batch, max_batch, autocast_dtype).softmax(dim=1)
            for i, (k, f) in enumerate(vs):
                p = _undo(probs[i * B : (i + 1) * B], k, f)
                if p.shape[-2:] != (H, W):
                    p = F.interpolate(
                        p, size=(H, W), mode="bilinear", align_corners=False, antialias=(p.shape[-2] > H or p.shape[-1] > W)
                    )
                contrib = p * float(ws / len(variants))
                out = contrib if out is None else out + contrib
    assert out is not None
    return out


def _forward(
    model: torch.nn.Module, x: torch.Tensor, max_batch: int | None, autocast_dtype: torch.dtype | None
) -> torch.Tensor:
    parts = [x] if not max_batch or x.shape[0] <= max_batch else list(torch.split(x, max_batch))
    outs = []
    for p in parts:
        if autocast_dtype is not None:
            with torch.autocast(device_type=x.device.type, dtype=autocast_dtype):
                outs.append(model(p).float())
        else:
            outs.append(model(p).float())
    return outs[0] if len(outs) == 1 else torch.cat(outs)


# --------------------------------------------------------------------------------------------
# window reading (decode threads, order preserved)
# --------------------------------------------------------------------------------------------
@dataclass
class _Item:
    hw: HaloWindow
    x: np.ndarray  # (C, Hp, Wp) float32 normalised, padded
    valid_core: np.ndarray  # (h, w) bool


def _pad(a: np.ndarray, pad: tuple[int, int, int, int]) -> np.ndarray:
    top, bottom, left, right = pad
    if not any(pad):
        return a
    widths = [(0, 0)] * (a.ndim - 2) + [(top, bottom), (left, right)]
    mode = "reflect" if min(a.shape[-2:]) > 1 else "edge"
    return np.pad(a, widths, mode=mode)


def _read_item(tiles, valid, hw: HaloWindow, meta) -> _Item:
    from unetgeo.model import normalise

    ok = read_window(valid, hw.read).astype(bool)
    x = _pad(normalise(read_window(tiles, hw.read), meta, ok), hw.pad)
    okp = _pad(ok, hw.pad)
    return _Item(hw=hw, x=np.ascontiguousarray(x), valid_core=okp[hw.crop])


def read_threads(device_type: str) -> int:
    """Decode threads for :func:`_prefetch`: 2 on a CPU (the model wants the cores), up to 8 on a GPU."""
    import os

    return 2 if device_type != "cuda" else max(2, min(8, (os.cpu_count() or 2) - 1))


def _prefetch(
    tiles, valid, windows: Iterator[HaloWindow], meta, depth: int, n_threads: int = 2
) -> Iterator[_Item]:
    """Yield :class:`_Item` s in window order, read and normalised by ``n_threads`` threads.

    A feeder thread keeps up to ``depth`` reads in flight on a thread pool (zarr decode and the
    numpy normalisation release the GIL, so they run in parallel) and hands finished items on in
    submission order through a queue of ``depth``: at most ``2 * depth`` items are in memory.
    ``n_threads=0`` reads serially in the calling thread (the reference the parallel path matches).
    """
    if n_threads <= 0:
        for hw in windows:
            yield _read_item(tiles, valid, hw, meta)
        return
    q: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def feeder() -> None:
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor

        try:
            with ThreadPoolExecutor(n_threads, thread_name_prefix="unetgeo-read") as pool:
                pending: deque = deque()
                for hw in windows:
                    if stop.is_set():
                        return
                    pending.append(pool.submit(_read_item, tiles, valid, hw, meta))
                    if len(pending) >= max(depth, n_threads):
                        q.put(pending.popleft().result())
                while pending and not stop.is_set():
                    q.put(pending.popleft().result())
            q.put(None)
        except BaseException as e:  # hand the error to the consumer
            q.put(e)

    th = threading.Thread(target=feeder, name="unetgeo-prefetch", daemon=True)
    th.start()
    try:
        while True:
            item = q.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while th.is_alive():
            try:
                q.get_nowait()
            except queue.Empty:
                th.join(0.05)


def _batches(items: Iterator[_Item], batch_size: int) -> Iterator[list[_Item]]:
    """Group consecutive items of the same padded shape into batches of at most ``batch_size``."""
    cur: list[_Item] = []
    for it in items:
        if cur and (len(cur) == batch_size or cur[0].x.shape != it.x.shape):
            yield cur
            cur = []
        cur.append(it)
    if cur:
        yield cur


# --------------------------------------------------------------------------------------------
# the stage
# --------------------------------------------------------------------------------------------
def predict_tiles(
    tiles_uri: str,
    model_dir: str,
    out_uri: str,
    *,
    valid_uri: str | None = None,
    inference: InferenceSpec | None = None,
    progress: bool = False,
    dask_address: str | None = None,
) -> PredictResult:
    """Predict class probabilities for every chunk of ``tiles_uri`` into ``out_uri``.

    Args:
        tiles_uri: ``tiles.zarr`` written by :func:`unetgeo.tiling.make_tiles`.
        model_dir: model bundle (``model.safetensors`` + ``model.json``).
        out_uri: ``probs.zarr`` to write: ``(class, y, x)`` float16, chunk-aligned with the tiles.
        valid_uri: valid mask store (default: ``valid.zarr`` beside ``tiles_uri``).
        inference: halo, scales, flips, batch size, device, workers (defaults of :class:`InferenceSpec`).
        progress: show a progress bar.
        dask_address: scheduler of a running Dask cluster whose workers share the chunks
            (with ``inference.workers``); by default several workers run on a local cluster.

    With one worker (the default on a CPU or a single GPU) the chunks are predicted in this
    process. With ``workers > 1`` (default: one per CUDA device) the chunks are dealt out to that
    many Dask worker processes, worker ``i`` on ``cuda:i`` (or the CPU), all writing the same
    resumable store; this process publishes it when every chunk is done.

    Raises:
        BandMismatchError: the scene's bands differ from the model's (both lists named).
        GridMismatchError: tiles and valid mask are not on one grid.
    """
    spec = inference or InferenceSpec()
    t0 = time.perf_counter()
    valid_uri = valid_uri or sibling(tiles_uri, "valid.zarr")
    tiles = open_store(tiles_uri)
    valid = open_store(valid_uri)
    check_same_grid(tiles, valid, tiles_uri, valid_uri)
    device = resolve_device(spec.device)
    out = _probs_writer(tiles, tiles_uri, model_dir, out_uri, spec, device)
    grid, tile_px = Grid.from_attrs(dict(tiles.attrs)), int(tiles.chunks[-1])
    total = n_tiles(grid.height, grid.width, tile_px)
    todo = [w for w in iter_tile_windows(grid.height, grid.width, tile_px) if not out.is_done(w)]
    try:
        if not todo:
            out.publish({})
            return PredictResult(out_uri, total, 0, time.perf_counter() - t0, 0.0, str(device), spec.batch_size,
                                 _n_workers(spec, device))
        n_workers = _n_workers(spec, device)
        if n_workers <= 1 and not dask_address:
            mpx = predict_windows(tiles_uri, valid_uri, model_dir, out, todo, spec, str(device), progress=progress)
            where = str(device)
        else:  # a cluster given: its workers predict (all of them unless --workers says how many)
            mpx, where, n_workers = _predict_on_workers(tiles_uri, valid_uri, model_dir, out, todo, spec, device,
                                                        spec.workers if dask_address else n_workers, dask_address,
                                                        progress)
        out.publish({})
    finally:  # after an error: a later run resumes probs.zarr.tmp (a no-op once published)
        out.release()
    seconds = time.perf_counter() - t0
    log.info(
        "predict: %s -> %s: %d chunks on %s, scales %s, flips %s, d4 %s, %.2f Mpx in %.1f s",
        tiles_uri, out_uri, len(todo), where, list(spec.scales), spec.flips, spec.d4, mpx, seconds,
    )
    return PredictResult(out_uri, total, len(todo), seconds, mpx, where, spec.batch_size, n_workers)


def _probs_writer(tiles, tiles_uri: str, model_dir: str, out_uri: str, spec: InferenceSpec,
                  device: torch.device) -> ChunkedStoreWriter:
    """The ``probs.zarr`` writer ``(class, y, x)``, chunk-aligned with ``tiles``, keyed by tiles + model + settings.

    Raises:
        BandMismatchError: the scene's bands differ from the model's.
    """
    from unetgeo.io.bundle import read_meta
    from unetgeo.model import ModelMeta, check_bands

    attrs = dict(tiles.attrs)
    grid = Grid.from_attrs(attrs)
    meta = ModelMeta.from_dict(read_meta(model_dir), where=f"{model_dir}/model.json")
    check_bands(meta, list(attrs["band_names"]), tiles_uri, attrs.get("sensor"))  # as validate_run checks them
    settings = {
        "halo_px": spec.halo_px, "scales": list(spec.scales), "flips": spec.flips, "d4": spec.d4,
        "scale_weights": None if spec.scale_weights is None else list(spec.scale_weights),
        "dtype": spec.probs_dtype, "precision": str(_autocast_dtype(spec.precision, device)),
    }
    run_key = hashlib.sha256(
        json.dumps({"tiles": attrs.get("run_key"), "model": meta.model_id, **settings}, sort_keys=True).encode()
    ).hexdigest()[:16]
    return ChunkedStoreWriter(
        out_uri,
        shape=(meta.n_classes, grid.height, grid.width),
        chunk_px=int(tiles.chunks[-1]),
        dtype=spec.probs_dtype,
        fill_value=0,
        attrs={
            **grid.to_attrs(),
            "class_names": list(meta.class_names),
            "class_colors": list(meta.class_colors),
            "model_id": meta.model_id,
            "model_dir": str(model_dir),
            "tiles": str(tiles_uri),
            "source": attrs.get("source"),
            "probs_scale": 1.0 if spec.probs_dtype == "float16" else 1 / 255,
            **settings,
        },
        run_key=run_key,
    )


def _n_workers(spec: InferenceSpec, device: torch.device) -> int:
    """``spec.workers``, else one per CUDA device when several are visible and none was named."""
    if spec.workers is not None:
        return spec.workers
    if device.type == "cuda" and device.index is None:
        return max(1, torch.cuda.device_count())
    return 1


def _predict_on_workers(
    tiles_uri: str, valid_uri: str, model_dir: str, out: ChunkedStoreWriter, todo: list[Window],
    spec: InferenceSpec, device: torch.device, n_workers: int | None, dask_address: str | None, progress: bool,
) -> tuple[float, str, int]:
    """Deal the windows out to ``n_workers`` Dask worker processes (one device each); with
    ``dask_address`` and ``n_workers=None``, to every worker of that cluster.

    Returns:
        ``(megapixels, where, workers used)``.
    """
    import os

    from distributed import Client, LocalCluster, as_completed

    cluster = None
    if dask_address:
        client = Client(dask_address)
    else:
        cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                               dashboard_address=None, silence_logs=logging.ERROR)
        client = Client(cluster)
    try:
        workers = sorted(client.scheduler_info()["workers"])
        n_workers = n_workers or len(workers)
        if device.type == "cuda":
            devices = [f"cuda:{i % max(1, torch.cuda.device_count())}" for i in range(n_workers)]
        else:
            devices = ["cpu"] * n_workers
        threads = max(1, (os.cpu_count() or 1) // n_workers) if device.type == "cpu" and not dask_address else None
        shards = [todo[i::n_workers] for i in range(n_workers)]
        bar = progress_bar(progress, len(todo), f"predict ({n_workers} workers)")
        futs = {
            client.submit(predict_windows, tiles_uri, valid_uri, model_dir, out, shard, spec, dev,
                          torch_threads=threads, workers=[workers[i % len(workers)]], pure=False): len(shard)
            for i, (shard, dev) in enumerate(zip(shards, devices, strict=True)) if shard
        }
        mpx = 0.0
        try:
            for fut in as_completed(list(futs)):
                mpx += fut.result()
                bar.update(futs[fut])
        finally:
            bar.close()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return mpx, f"{n_workers} Dask workers ({', '.join(sorted(set(devices)))})", n_workers


def fit_batch_size(
    model: torch.nn.Module,
    in_channels: int,
    window_shape: tuple[int, int],
    device: torch.device,
    spec: InferenceSpec,
    stride: int,
    autocast_dtype: torch.dtype | None,
    *,
    mem_fraction: float = 0.6,
    limit: int = 256,
) -> int:
    """Windows per batch that fit in ``mem_fraction`` of the free GPU memory (CUDA only).

    Measures the peak memory of one window's fused forward pass (all scales and symmetries of
    ``spec``) and divides the free memory by it (at least 1, at most ``limit``). On a CPU, or with
    ``spec.auto_batch`` off, ``spec.batch_size`` is returned: larger batches are not faster on a CPU.
    """
    if device.type != "cuda" or not spec.auto_batch:
        return spec.batch_size
    torch.cuda.empty_cache()
    free, _total = torch.cuda.mem_get_info(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    x = torch.zeros(1, in_channels, *window_shape, device=device)
    with torch.inference_mode():
        fuse_predict(model, x, scales=spec.scales, flips=spec.flips, d4=spec.d4, stride=stride,
                     autocast_dtype=autocast_dtype)
    per_window = max(1, torch.cuda.max_memory_allocated(device) - base)
    del x
    torch.cuda.empty_cache()
    fitted = int(free * mem_fraction // per_window)
    batch = max(1, min(limit, fitted))
    log.info("batch size %d fits %.0f %% of %.1f GiB free (%.0f MiB per window of %s)", batch,
             mem_fraction * 100, free / 2**30, per_window / 2**20, window_shape)
    return batch


def _to_device(batch: list[_Item], pinned: torch.Tensor | None, batch_size: int,
               dev: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack ``batch`` straight into the reused page-locked buffer and start its copy to ``dev``.

    Returns ``(pinned buffer, device tensor (B, C, Hp, Wp) float32)``; the buffer is (re)allocated
    for ``batch_size`` windows when the window shape changes. Refilling it is safe: the previous
    batch's ``probs.cpu()`` waited for the stream, so its host-to-device copy had finished.
    """
    shape = batch[0].x.shape
    if pinned is None or tuple(pinned.shape[1:]) != shape or pinned.shape[0] < len(batch):
        pinned = torch.empty((max(batch_size, len(batch)), *shape), dtype=torch.float32).pin_memory()
    host = pinned[: len(batch)]
    np.stack([it.x for it in batch], out=host.numpy())
    return pinned, host.to(dev, non_blocking=True)


def predict_windows(
    tiles_uri: str,
    valid_uri: str,
    model_dir: str,
    out: ChunkedStoreWriter,
    windows: Sequence[Window],
    spec: InferenceSpec,
    device: str,
    *,
    progress: bool = False,
    torch_threads: int | None = None,
) -> float:
    """Predict ``windows`` (chunk cores) into ``out`` on ``device``; returns megapixels written.

    Loads the model itself, so it can run in any process (a Dask worker per GPU). Decode threads
    (:func:`read_threads`) read and normalise the next windows while the model computes.
    """
    from unetgeo.model import load_bundle

    if torch_threads:
        torch.set_num_threads(torch_threads)
    dev = torch.device(device)
    tiles, valid = open_store(tiles_uri), open_store(valid_uri)
    grid = Grid.from_attrs(dict(tiles.attrs))
    model, meta = load_bundle(model_dir, device=device)
    model.eval()
    cuda = dev.type == "cuda"
    autocast_dtype = _autocast_dtype(spec.precision, dev)
    channels_last = cuda if spec.channels_last is None else spec.channels_last
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    halos = (halo_window(w, spec.halo_px, grid.height, grid.width, meta.stride) for w in windows)
    full = halo_window(Window(0, 0, min(grid.height, int(tiles.chunks[-2])), min(grid.width, int(tiles.chunks[-1]))),
                       spec.halo_px, grid.height, grid.width, meta.stride).padded_shape
    batch_size = fit_batch_size(model, len(meta.in_bands), full, dev, spec, meta.stride, autocast_dtype)
    bar = progress_bar(progress, len(windows), "predict")
    mpx = 0.0
    pinned: torch.Tensor | None = None  # one reused page-locked host buffer for GPU transfers
    # On a GPU all same-shape variants of a batch go through one pass; on a CPU, passes larger than
    # the window batch run slower per pixel (measured: 12 images of 640² cost 1.19x four passes
    # of 4), so the concatenated variants are fed in micro-batches of batch_size there.
    n_var = len(_variants(spec.flips, spec.d4))
    max_batch = spec.max_forward_batch or (batch_size * n_var if cuda else batch_size)
    items = _prefetch(tiles, valid, halos, meta, depth=batch_size, n_threads=read_threads(dev.type))
    with torch.inference_mode():
        for batch in _batches(items, batch_size):
            if cuda:
                pinned, xb = _to_device(batch, pinned, batch_size, dev)
            else:
                xb = torch.from_numpy(np.stack([it.x for it in batch]))
            if channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            probs = fuse_predict(
                model, xb, scales=spec.scales, flips=spec.flips, d4=spec.d4, scale_weights=spec.scale_weights,
                stride=meta.stride, max_batch=max_batch, autocast_dtype=autocast_dtype,
            )
            probs_np = probs.cpu().numpy()
            for it, p in zip(batch, probs_np, strict=True):
                core = p[(slice(None), *it.hw.crop)]
                core = np.where(it.valid_core[None], core, 0.0)
                if spec.probs_dtype == "uint8":
                    core = np.round(core * 255)
                out.write(it.hw.core, core.astype(spec.probs_dtype))
                mpx += it.hw.core.height * it.hw.core.width / 1e6
            bar.update(len(batch))
    bar.close()
    return mpx


def predict_array(
    model: torch.nn.Module,
    x: np.ndarray,
    *,
    stride: int = 32,
    edge_pad_px: int = 0,
    scales: Sequence[float] = (1.0,),
    flips: bool = False,
) -> np.ndarray:
    """Whole-image prediction of a small normalised array ``(C, H, W)`` -> probs ``(K, H, W)``.

    Reference path for tests and the seam evaluation, not for scenes: the image is
    reflect-padded by ``edge_pad_px`` on every side (the edge policy of tiled prediction with
    ``halo_px = edge_pad_px``), then to the stride, predicted in one pass and cropped.
    """
    H, W = x.shape[-2:]
    e = edge_pad_px
    pad = (e, align_up(H + 2 * e, stride) - H - e, e, align_up(W + 2 * e, stride) - W - e)
    xp = torch.from_numpy(np.ascontiguousarray(_pad(x.astype(np.float32), pad)))[None]
    with torch.inference_mode():
        p = fuse_predict(model, xp, scales=scales, flips=flips, stride=stride)
    return p[0, :, e : e + H, e : e + W].numpy()
