"""The device check: per-stage times of a Sentinel-2-sized scene, TTA cost, tiles/s, training steps/s.

Each step writes ``OUT/<step>.json`` and prints one line per figure, with a ratio against a peer
measured in the same run:
- ``scene``: a 10980² five-band uint16 tiled GeoTIFF (``--small``: 1100²) through tile -> predict
  -> stitch, seconds and Mpx/s per stage; GPU busy fraction during predict (nvidia-smi samples).
- ``tta``: scales 0.75/1/1.25 + flips against one scale on a 4096² scene (pixel counts imply 9.375 x).
- ``tiles``: 512² tiles/s, one scale, the default U-Net (ResNet-18, depth 5) in bf16, against fp32.
- ``train``: optimizer steps/s of the default training setup (``_make_run``: AdamW, CE + Dice,
  channels-last, bf16 autocast on CUDA) on random 512² chips, against the forward pass alone.
- ``pytest``: ``pytest -m gpu`` (tests/gpu and the gpu tests of tests/test_infer.py).

Usage: python benchmarks/gpu/device_check.py --step scene|tta|tiles|train|pytest|env
       [--device cuda] [--small] [--out DIR] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import torch

BENCH = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(BENCH))
from _common import machine  # noqa: E402
from inference import BANDS, make_model, make_scene, raw_forward_seconds, sync, timed_predict  # noqa: E402

from unetgeo.config import Config, InferenceSpec, ModelSpec  # noqa: E402
from unetgeo.infer import resolve_device  # noqa: E402


class BusySampler:
    """Mean GPU utilisation (share of time a kernel ran, nvidia-smi every 100 ms) while in the block."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.samples, self.proc = device, [], None
        self.reader: threading.Thread | None = None

    def __enter__(self) -> BusySampler:
        if self.device.type == "cuda" and shutil.which("nvidia-smi"):
            idx = self.device.index if self.device.index is not None else torch.cuda.current_device()
            self.proc = subprocess.Popen(["nvidia-smi", "-i", str(idx), "--query-gpu=utilization.gpu",
                                          "--format=csv,noheader,nounits", "-lms", "100"],
                                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            self.reader = threading.Thread(target=self._read, daemon=True)
            self.reader.start()
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.strip().isdigit():
                self.samples.append(int(line))

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait()

    def fraction(self) -> float | str:
        """Mean busy share 0..1, or ``"n/a"`` (CPU, or no nvidia-smi)."""
        return sum(self.samples) / len(self.samples) / 100 if self.samples else "n/a"


def _model(args: argparse.Namespace) -> Path:
    """The default U-Net (ResNet-18, depth 5) bundle; with ``--small`` a depth-3 one (CPU dry run)."""
    if args.small:
        return make_model(Path(args.work) / "model_small", ModelSpec(encoder_depth=3, decoder_channels=(32, 16, 8)))
    return make_model(Path(args.work) / "model_resnet18", ModelSpec())


def _timed(fn: Callable[[], object]) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def step_scene(args: argparse.Namespace, device: torch.device) -> dict:
    """tile -> predict -> stitch on a Sentinel-2-sized scene, each stage timed, GPU busy share in predict."""
    from unetgeo.stitch import stitch
    from unetgeo.tiling import make_tiles

    size = 1100 if args.small else 10980
    work = Path(args.work)
    model_dir = _model(args)
    t_gen, scene = _timed(lambda: make_scene(work / f"scene_{size}.tif", size))
    run = work / f"run_{size}"
    shutil.rmtree(run, ignore_errors=True)
    t_tile, tr = _timed(lambda: make_tiles(str(scene), str(run / "tiles.zarr"), tile_px=512))
    spec = InferenceSpec(device=str(device))
    with BusySampler(device) as busy:
        t_pred = timed_predict(tr.tiles_uri, model_dir, run / "probs.zarr", spec)
    t_stitch, _ = _timed(lambda: stitch(str(run / "probs.zarr"), tr.valid_uri, str(run / "out")))
    mpx = size * size / 1e6
    fig = {"size": size, "chunks": tr.n_chunks, "generate_s": t_gen, "tile_s": t_tile, "predict_s": t_pred,
           "stitch_s": t_stitch, "total_s": t_tile + t_pred + t_stitch, "gpu_busy_predict": busy.fraction(),
           "busy_samples": len(busy.samples)}
    for stage in ("tile", "predict", "stitch", "total"):
        fig[f"{stage}_mpx_per_s"] = mpx / fig[f"{stage}_s"]
        print(f"{stage:8s} {fig[f'{stage}_s']:8.2f} s  {mpx / fig[f'{stage}_s']:8.2f} Mpx/s  "
              f"{fig[f'{stage}_s'] / fig['total_s']:5.0%} of tile+predict+stitch")
    print(f"scene {size}² x 5 uint16, {tr.n_chunks} chunks of 512² (generated in {t_gen:.1f} s); "
          f"GPU busy during predict: {busy.fraction()}")
    return fig


def step_tta(args: argparse.Namespace, device: torch.device) -> dict:
    """Fused predict (scales 0.75/1/1.25 + flips) against single scale on the same tiles."""
    from unetgeo.tiling import make_tiles

    size = 512 if args.small else 4096
    work = Path(args.work)
    model_dir = _model(args)
    run = work / f"tta_{size}"
    shutil.rmtree(run, ignore_errors=True)
    tr = make_tiles(str(make_scene(work / f"scene_{size}.tif", size)), str(run / "tiles.zarr"), tile_px=512)
    single = InferenceSpec(device=str(device))
    fused = single.model_copy(update={"scales": (0.75, 1.0, 1.25), "flips": True})
    timed_predict(tr.tiles_uri, model_dir, run / "warm.zarr", single)  # cudnn autotune, caches
    t1 = timed_predict(tr.tiles_uri, model_dir, run / "single.zarr", single)
    with BusySampler(device) as busy:
        tf = timed_predict(tr.tiles_uri, model_dir, run / "fused.zarr", fused)
    implied = sum(3 * s * s for s in fused.scales)
    print(f"TTA {size}²: single {t1:.2f} s, fused {tf:.2f} s = {tf / t1:.2f} x single (pixel counts imply "
          f"{implied:.3f} x); GPU busy while fused: {busy.fraction()}")
    return {"size": size, "single_s": t1, "fused_s": tf, "cost": tf / t1, "implied": implied,
            "gpu_busy_fused": busy.fraction()}


def step_tiles(args: argparse.Namespace, device: torch.device) -> dict:
    """512² tiles/s of the bare default U-Net, one scale, bf16 against fp32 (same batch policy)."""
    n, px = (4, 128) if args.small else (512, 512)
    model_dir = _model(args)
    fig: dict = {"tiles": n, "tile_px": px}
    for precision in ("bf16", "fp32"):
        spec = InferenceSpec(device=str(device), precision=precision)
        t, batch = raw_forward_seconds(model_dir, device, n, px, spec)
        fig[f"{precision}_tiles_per_s"], fig[f"{precision}_batch"] = n / t, batch
        print(f"{precision}: {n / t:8.1f} tiles/s of {px}² (batch {batch})")
    fig["bf16_over_fp32"] = fig["bf16_tiles_per_s"] / fig["fp32_tiles_per_s"]
    print(f"bf16 / fp32 speed: {fig['bf16_over_fp32']:.2f} x")
    return fig


def step_train(args: argparse.Namespace, device: torch.device) -> dict:
    """Steps/s of the default training setup on random 512² chips, against its forward pass alone."""
    from unetgeo.train.loop import _Clock, _make_run
    from unetgeo.train.validation import autocast

    cfg = Config()
    bs, chip, k = cfg.training.batch_size, 512, len(cfg.classes)
    if args.small:
        cfg = cfg.model_copy(update={"model": ModelSpec(encoder_depth=3, decoder_channels=(32, 16, 8))})
        bs, chip = 2, 128
    run = _make_run(cfg, str(Path(args.work) / "train"), SimpleNamespace(n_bands=len(BANDS), class_weights=None),
                    str(device), _Clock(None))
    x = torch.randn(bs, len(BANDS), chip, chip, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, k, (bs, chip, chip), device=device)

    def train_step() -> None:
        run.opt.zero_grad(set_to_none=True)
        with autocast(str(device)):
            logits = run.model(x)
        run.loss_fn(logits.float(), y).backward()
        run.opt.step()
        run.sched.step()

    def forward() -> None:
        with torch.no_grad(), autocast(str(device)):
            run.model(x)

    n = 2 if args.small else 30
    secs = {}
    for name, fn in (("train", train_step), ("forward", forward)):
        fn()
        sync(device)
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        sync(device)
        secs[name] = (time.perf_counter() - t0) / n
    print(f"train: {1 / secs['train']:.2f} steps/s (batch {bs} of {chip}², {bs / secs['train']:.1f} chips/s); "
          f"a step costs {secs['train'] / secs['forward']:.2f} x the forward pass alone")
    return {"batch": bs, "chip_px": chip, "steps_per_s": 1 / secs["train"], "chips_per_s": bs / secs["train"],
            "step_over_forward": secs["train"] / secs["forward"], "encoder_depth": cfg.model.encoder_depth}


def step_pytest(args: argparse.Namespace, device: torch.device) -> dict:
    """``pytest -m gpu`` on tests/gpu and tests/test_infer.py; rc and the summary line."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu", "tests/gpu",
           "tests/test_infer.py"]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=BENCH.parent)
    tail = (p.stdout + p.stderr).strip().splitlines()[-15:]
    print("\n".join(tail))
    return {"rc": p.returncode, "tail": tail}


def step_env(args: argparse.Namespace, device: torch.device) -> dict:
    """Versions and the device."""
    import numpy
    import rasterio
    import segmentation_models_pytorch as smp
    import zarr

    fig = {"machine": machine(), "python": platform.python_version(), "torch": torch.__version__,
           "cuda": torch.version.cuda, "device": torch.cuda.get_device_name(device) if device.type == "cuda"
           else f"CPU ({torch.get_num_threads()} threads)", "numpy": numpy.__version__,
           "rasterio": rasterio.__version__, "gdal": rasterio.__gdal_version__, "zarr": zarr.__version__,
           "smp": smp.__version__}
    print(json.dumps(fig))
    return fig


STEPS = {"scene": step_scene, "tta": step_tta, "tiles": step_tiles, "train": step_train, "pytest": step_pytest,
         "env": step_env}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--step", choices=sorted(STEPS), required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--small", action="store_true", help="tiny sizes: a CPU dry run of every step")
    ap.add_argument("--out", default="bench_out/device", help="folder for <step>.json")
    ap.add_argument("--work", default="/tmp/unetgeo_device", help="scratch folder (scenes, stores)")
    args = ap.parse_args()
    device = resolve_device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(max(1, torch.get_num_threads()))
    Path(args.out).mkdir(parents=True, exist_ok=True)
    Path(args.work).mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    fig = STEPS[args.step](args, device)
    fig.update(step=args.step, device=str(device), small=args.small, step_s=time.perf_counter() - t0)
    Path(args.out, f"{args.step}.json").write_text(json.dumps(fig, indent=1, default=str))
    return int(fig.get("rc", 0))


if __name__ == "__main__":
    sys.exit(main())
