"""Benchmark: `predict` pipeline against the raw model forward pass; cost of fusion; memory.

In one run, on one device:
1. throughput ratio = pipeline / raw forward. The pipeline (`predict_tiles`: Zarr reads, normalise,
   reflect-pad, prefetch thread, forward, softmax, crop, float16 Zarr writes) predicts a scene;
   the raw forward runs the same model on the same number of batches of the same window shape
   (tile + 2·halo, padded to the stride), random input, nothing else, with the pipeline's batch
   policy (on CUDA the batch fitted to free memory, `fit_batch_size`). Target >= 0.8.
   Also printed: output megapixels per second, and the halo's share of the work.
2. fusion cost = time with scales {0.75, 1, 1.25} + flips / time with one scale, against the
   cost implied by the variants' pixel counts (sum over scales of 3·s²) = 9.375.
3. (--memory) peak RSS of `unetgeo predict` on a small and a large scene, each in a fresh
   process, with a small model so the large scene finishes on a CPU. Target: large <= 1.10 x small.

Usage: python benchmarks/inference.py [--device auto|cpu|cuda] [--size 2048] [--tile-px 512]
       [--batch-size 4] [--memory 4096,16384] [--work bench_out/inference]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import rasterio
import torch
from rasterio.transform import from_origin
from rasterio.windows import Window

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, run_measured  # noqa: E402

from unetgeo.config import InferenceSpec, ModelSpec  # noqa: E402
from unetgeo.grid import align_up  # noqa: E402
from unetgeo.infer import _autocast_dtype, fit_batch_size, predict_tiles, resolve_device  # noqa: E402
from unetgeo.model import build_model, load_bundle, save_bundle  # noqa: E402
from unetgeo.tiling import make_tiles  # noqa: E402

BANDS = ["blue", "green", "red", "nir", "swir"]


def make_scene(path: Path, size: int, seed: int = 0) -> Path:
    """A ``size``² five-band uint16 tiled GeoTIFF (DEFLATE, 512² blocks, nodata 0), written strip by strip.

    Smooth fields (sines of different periods per band) plus sensor noise and a nodata corner:
    realistic enough for decode / normalise / write costs, and fast (a 10980² scene in seconds).
    """
    if path.exists():
        return path
    tmp = path.with_suffix(".tmp.tif")
    rng = np.random.default_rng(seed)
    with rasterio.open(tmp, "w", driver="GTiff", height=size, width=size, count=5, dtype="uint16", nodata=0,
                       crs="EPSG:32633", transform=from_origin(500000, 5400000, 10, 10), tiled=True,
                       blockxsize=512, blockysize=512, compress="deflate", num_threads="all_cpus",
                       BIGTIFF="IF_SAFER") as ds:
        for r in range(0, size, 512):
            h = min(512, size - r)
            yy, xx = np.mgrid[r : r + h, 0:size].astype(np.float32)
            base = 1500 + 900 * np.sin(xx / 97.0) * np.cos(yy / 131.0)
            data = np.stack([base * (0.6 + 0.2 * b) for b in range(5)])
            data += rng.integers(-40, 40, size=data.shape, dtype=np.int16)
            data[:, (yy + xx) < size / 8] = 0  # nodata corner
            ds.write(data.clip(0, 65535).astype(np.uint16), window=Window(0, r, size, h))
        for i, b in enumerate(BANDS, 1):
            ds.set_band_description(i, b)
    tmp.rename(path)
    return path


def make_model(model_dir: Path, spec: ModelSpec) -> Path:
    if (model_dir / "model.json").exists():
        return model_dir
    torch.manual_seed(0)
    model = build_model(spec, 5, 2)
    save_bundle(str(model_dir), model, {
        "arch": spec.arch, "encoder": spec.encoder, "encoder_depth": spec.encoder_depth,
        "decoder_channels": list(spec.decoder_channels) if spec.decoder_channels else None,
        "in_bands": BANDS, "norm": {"mean": [1500.0] * 5, "std": [600.0] * 5},
        "classes": [{"name": "background", "color": "#d9d9d9"}, {"name": "water", "color": "#1f78b4"}],
        "tile_px": 512, "metrics": {}, "training": {}, "name": "bench",
    })
    return model_dir


def raw_forward_seconds(model_dir: Path, device: torch.device, n_windows: int, window_px: int,
                        spec: InferenceSpec) -> tuple[float, int]:
    """Time the bare network on ``n_windows`` random windows under the pipeline's batch policy.

    The batch size is what :func:`predict_windows` uses: ``fit_batch_size`` (on CUDA with
    ``auto_batch``, the windows that fit 60 % of free memory; else ``spec.batch_size``), in
    full batches plus the remainder. Returns ``(seconds after one warm-up batch, batch size)``.
    """
    model, meta = load_bundle(str(model_dir), device=str(device))
    model.eval()
    ac = _autocast_dtype(spec.precision, device)
    cl = device.type == "cuda" if spec.channels_last is None else spec.channels_last
    if cl:
        model = model.to(memory_format=torch.channels_last)
    batch = fit_batch_size(model, 5, (window_px, window_px), device, spec, meta.stride, ac)
    sizes = [batch] * (n_windows // batch) + ([n_windows % batch] if n_windows % batch else [])
    xs = {n: torch.randn(n, 5, window_px, window_px, device=device) for n in set(sizes)}
    if cl:
        xs = {n: x.contiguous(memory_format=torch.channels_last) for n, x in xs.items()}

    def step(x: torch.Tensor) -> None:
        with torch.autocast(device_type=device.type, dtype=ac, enabled=ac is not None):
            model(x).float().softmax(1).cpu()  # the pipeline also brings the probabilities back

    with torch.inference_mode():
        step(xs[sizes[0]])
        sync(device)
        t0 = time.perf_counter()
        for n in sizes:
            step(xs[n])
        sync(device)
        return time.perf_counter() - t0, batch


def sync(device: torch.device) -> None:
    """Wait for queued CUDA work (no-op on a CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_predict(tiles_uri: str, model_dir: Path, out: Path, spec: InferenceSpec) -> float:
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    predict_tiles(tiles_uri, str(model_dir), str(out), inference=spec)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--size", type=int, default=2048, help="scene side for the throughput runs")
    ap.add_argument("--tile-px", type=int, default=512)
    ap.add_argument("--halo-px", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--encoder", default="resnet18")
    ap.add_argument("--memory", default="", help="sizes for the memory test, e.g. 4096,16384 (empty: skip)")
    ap.add_argument("--work", default="bench_out/inference")
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    ap.add_argument("--no-fusion", action="store_true", help="skip the fusion cost (and the memory test)")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    device = resolve_device(args.device)
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"machine: {machine()}; device: {dev_name}; torch {torch.__version__}")
    figures: dict = {"machine": machine(), "device": dev_name}

    spec = ModelSpec(encoder=args.encoder)
    model_dir = make_model(work / f"model_{args.encoder}", spec)
    scene = make_scene(work / f"scene_{args.size}.tif", args.size)
    shutil.rmtree(work / "run", ignore_errors=True)
    tr = make_tiles(str(scene), str(work / "run" / "tiles.zarr"), tile_px=args.tile_px)
    n_chunks = tr.n_chunks
    window_px = align_up(args.tile_px + 2 * args.halo_px, 2 ** spec.encoder_depth)
    base = InferenceSpec(halo_px=args.halo_px, batch_size=args.batch_size, device=str(device))

    # 1. pipeline vs raw forward (warm-up run first so both see warm caches / cudnn autotune)
    timed_predict(tr.tiles_uri, model_dir, work / "run" / "warm.zarr", base)
    t_pipe = timed_predict(tr.tiles_uri, model_dir, work / "run" / "probs.zarr", base)
    t_raw, batch = raw_forward_seconds(model_dir, device, n_chunks, window_px, base)
    mpx = args.size**2 / 1e6
    ratio = t_raw / t_pipe
    halo_share = 1 - args.tile_px**2 / window_px**2
    print(f"scene {args.size}² ({n_chunks} chunks of {args.tile_px}², windows {window_px}² with halo {args.halo_px}), "
          f"batch {batch} ({'fitted to GPU memory' if batch != args.batch_size else 'asked'}) on both sides")
    print(f"pipeline: {t_pipe:7.2f} s = {mpx / t_pipe:7.2f} output Mpx/s")
    print(f"raw forward, same windows and batches: {t_raw:7.2f} s")
    print(f"throughput ratio pipeline / raw forward: {ratio:.2f}   (target >= 0.8; the halo is {halo_share:.0%} "
          "of each window's pixels and is counted in both)")
    figures.update(size=args.size, tile_px=args.tile_px, halo_px=args.halo_px, batch=batch,
                   pipeline_s=t_pipe, raw_forward_s=t_raw, ratio=ratio, output_mpx_per_s=mpx / t_pipe)

    # 2. cost of fusion
    if args.no_fusion:
        finish(args, figures)
        return
    fused = base.model_copy(update={"scales": (0.75, 1.0, 1.25), "flips": True})
    t_fused = timed_predict(tr.tiles_uri, model_dir, work / "run" / "fused.zarr", fused)
    implied = sum(3 * s * s for s in (0.75, 1.0, 1.25))
    print(f"fusion scales 0.75,1,1.25 + flips: {t_fused:7.2f} s = {t_fused / t_pipe:.2f} x single scale "
          f"(pixel counts imply {implied:.3f} x; target <= that)")
    figures.update(fused_s=t_fused, fusion_cost=t_fused / t_pipe, fusion_implied=implied)

    # 3. peak memory against scene size (fresh processes, small model)
    if args.memory:
        small_spec = ModelSpec(encoder="resnet18", encoder_depth=3, decoder_channels=(32, 16, 8))
        small_model = make_model(work / "model_small", small_spec)
        unetgeo = str(Path(sys.executable).with_name("unetgeo"))
        rss = {}
        for size in [int(s) for s in args.memory.split(",")]:
            sc = make_scene(work / f"scene_{size}.tif", size)
            out = work / f"mem_{size}"
            shutil.rmtree(out, ignore_errors=True)
            wall, peak = run_measured([unetgeo, "-q", "predict", str(sc), "--model", str(small_model), "--out", str(out),
                                       "--device", str(device)])
            rss[size] = peak
            print(f"unetgeo predict {size}² (tile+predict+stitch, small model): {wall:7.1f} s, peak RSS {peak:7.1f} MiB")
        sizes = sorted(rss)
        print(f"peak RSS {sizes[-1]}² / {sizes[0]}²: {rss[sizes[-1]] / rss[sizes[0]]:.3f}   (target <= 1.10)")
        figures["peak_rss_mib"] = rss
    finish(args, figures)


def finish(args: argparse.Namespace, figures: dict) -> None:
    """Write ``figures`` to ``--json`` when asked."""
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
