"""Benchmark: `unetgeo tile` against `gdal_translate -of ZARR`, and peak memory versus scene size.

Builds 4-band uint16 DEFLATE-tiled scenes (8192² and 16384² by default; kept in --work for
later runs), then in the same run:
- times `unetgeo tile` and `gdal_translate -of ZARR` on the first size, both pinned to the same
  --cores CPUs, same 512² chunks and Blosc-LZ4, alternating the two --repeat times so that a
  varying load from other jobs hits both alike; prints median wall and CPU seconds and the
  ratio ours/GDAL of the medians (target <= 1.0). Ours also writes valid.zarr, per-band
  statistics and the sha256 of the scene; GDAL writes the data only;
- prints the peak RSS of `unetgeo tile` on every size (target <= 1 GiB, largest <= 1.1 x smallest).

Usage: python benchmarks/tiling.py [--sizes 8192,16384] [--repeat 3] [--cores 2] [--json out.json]
Needs GDAL's command-line tools (Debian: apt-get install gdal-bin) for the comparison.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import sys
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Measured, load_average, machine, run_measured_full  # noqa: E402


def make_scene(path: Path, size: int, bands: int = 4, block: int = 512) -> Path:
    """A reflectance-like uint16 scene, written block by block (smooth fields + noise + a nodata corner)."""
    if path.exists():
        return path
    tmp = path.with_suffix(".tmp.tif")
    with rasterio.open(tmp, "w", driver="GTiff", height=size, width=size, count=bands, dtype="uint16", nodata=0,
                       crs="EPSG:32633", transform=from_origin(500000, 5400000, 10, 10), tiled=True,
                       blockxsize=512, blockysize=512, compress="deflate", predictor=2, BIGTIFF="IF_SAFER",
                       num_threads="ALL_CPUS") as ds:
        for r in range(0, size, block):
            yy, xx = np.mgrid[r : r + block, 0:size].astype(np.float32)
            base = 1500 + 900 * np.sin(xx / 97.0) * np.cos(yy / 131.0)
            rng = np.random.default_rng(r)
            arr = np.empty((bands, block, size), np.uint16)
            for b in range(bands):
                arr[b] = np.clip(base * (0.6 + 0.3 * b) + rng.normal(0, 80, base.shape), 1, 60000)
            arr[:, (xx + yy) < size // 8] = 0  # slanted nodata corner
            ds.write(arr, window=Window(0, r, size, block))
    tmp.rename(path)
    return path


def _fmt(m: Measured) -> str:
    return f"{m.wall_s:6.2f} s wall, {m.cpu_s:6.2f} s CPU, peak RSS {m.rss_mib:6.0f} MiB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="8192,16384", help="scene sides in pixels; the first one is timed against GDAL")
    ap.add_argument("--work", default="bench_out/tiling")
    ap.add_argument("--tile-px", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=3, help="alternating ours/GDAL runs on the first size")
    ap.add_argument("--cores", type=int, default=2, help="pin both tools to this many CPUs (0: no pinning)")
    ap.add_argument("--nice", type=int, default=0,
                    help="niceness of both tools, e.g. -10 (root) to measure them, not other jobs' load")
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    sizes = [int(s) for s in args.sizes.split(",")]
    avail = sorted(os.sched_getaffinity(0))
    cpus = avail[: args.cores] if args.cores else None
    unetgeo = str(Path(sys.executable).with_name("unetgeo"))
    gdal = shutil.which("gdal_translate")
    print(f"machine: {machine()}")
    print(f"pinned to CPUs {cpus if cpus else 'all'}, niceness {args.nice:+d}; load average before: {load_average()}")
    scenes = {size: make_scene(work / f"scene_{size}.tif", size) for size in sizes}

    def ours(size: int) -> Measured:
        run = work / f"run_{size}"
        shutil.rmtree(run, ignore_errors=True)
        m = run_measured_full([unetgeo, "-q", "tile", str(scenes[size]), str(run / "tiles.zarr"),
                               "--tile-size", str(args.tile_px)], cpus=cpus, nice=args.nice)
        shutil.rmtree(run, ignore_errors=True)
        return m

    def theirs(size: int) -> Measured:
        out = work / f"gdal_{size}.zarr"
        shutil.rmtree(out, ignore_errors=True)
        m = run_measured_full([
            gdal, "-q", "-of", "ZARR", "-co", f"BLOCKSIZE={args.tile_px},{args.tile_px}", "-co", "COMPRESS=BLOSC",
            "-co", "BLOSC_CNAME=lz4", "--config", "GDAL_NUM_THREADS", "ALL_CPUS", str(scenes[size]), str(out),
        ], cpus=cpus, nice=args.nice)
        shutil.rmtree(out, ignore_errors=True)
        return m

    size0 = sizes[0]
    runs: dict[str, list[Measured]] = {"unetgeo": [], "gdal": []}
    for i in range(args.repeat):
        runs["unetgeo"].append(ours(size0))
        print(f"[{i + 1}/{args.repeat}] unetgeo tile            {size0}²x4: {_fmt(runs['unetgeo'][-1])}")
        if gdal:
            runs["gdal"].append(theirs(size0))
            print(f"[{i + 1}/{args.repeat}] gdal_translate -of ZARR {size0}²x4: {_fmt(runs['gdal'][-1])}")
    result: dict = {"machine": machine(), "cpus": cpus, "nice": args.nice, "date": dt.date.today().isoformat(),
                    "repeat": args.repeat,
                    "tile_px": args.tile_px, "sizes": {}}

    def med(ms: list[Measured], attr: str) -> float:
        return statistics.median(getattr(m, attr) for m in ms)

    result["sizes"][size0] = {"wall_s": med(runs["unetgeo"], "wall_s"), "cpu_s": med(runs["unetgeo"], "cpu_s"),
                              "rss_mib": max(m.rss_mib for m in runs["unetgeo"])}
    if gdal:
        g = {"wall_s": med(runs["gdal"], "wall_s"), "cpu_s": med(runs["gdal"], "cpu_s"),
             "rss_mib": max(m.rss_mib for m in runs["gdal"])}
        o = result["sizes"][size0]
        result["gdal"] = g
        result["ratio_wall"] = o["wall_s"] / g["wall_s"]
        result["ratio_cpu"] = o["cpu_s"] / g["cpu_s"]
        print(f"median of {args.repeat}, {size0}²x4 uint16: unetgeo {o['wall_s']:.2f} s ({o['cpu_s']:.2f} s CPU), "
              f"GDAL {g['wall_s']:.2f} s ({g['cpu_s']:.2f} s CPU)")
        print(f"time ratio ours/GDAL ({size0}²): {result['ratio_wall']:.2f}   (target <= 1.0);  "
              f"CPU-time ratio {result['ratio_cpu']:.2f}")
    else:
        print("gdal_translate not found: install GDAL's tools (apt-get install gdal-bin) for the comparison")
    for size in sizes[1:]:
        m = ours(size)
        result["sizes"][size] = {"wall_s": m.wall_s, "cpu_s": m.cpu_s, "rss_mib": m.rss_mib}
        print(f"unetgeo tile            {size}²x4: {_fmt(m)}")
    for size in sizes:
        print(f"peak RSS unetgeo tile {size}²: {result['sizes'][size]['rss_mib']:7.1f} MiB")
    if len(sizes) > 1:
        small, big = result["sizes"][sizes[0]]["rss_mib"], result["sizes"][sizes[-1]]["rss_mib"]
        result["rss_ratio"] = big / small
        print(f"peak RSS {sizes[-1]}² / {sizes[0]}²: {big / small:.3f}   (target <= 1.10; all <= 1024 MiB: "
              f"{'yes' if max(v['rss_mib'] for v in result['sizes'].values()) <= 1024 else 'NO'})")
    result["load_average_after"] = load_average()
    print(f"load average after: {result['load_average_after']}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
