"""Benchmark: `unetgeo tile` against `gdal_translate -of ZARR`, and peak memory versus scene size.

Builds 4-band uint16 DEFLATE-tiled scenes (8192² and 16384² by default), then in the same run:
- times `unetgeo tile` and `gdal_translate -of ZARR` on the 8192² scene (same chunking, both
  using all cores) and prints the ratio ours/GDAL (target <= 1.0);
- prints the peak RSS of `unetgeo tile` on both sizes (target <= 1 GiB, larger <= 1.1 x smaller).

Usage: python benchmarks/tiling.py [--sizes 8192,16384] [--work bench_out/tiling] [--repeat 1]
Needs GDAL's command-line tools (Debian: apt-get install gdal-bin) for the comparison.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, run_measured  # noqa: E402


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="8192,16384")
    ap.add_argument("--work", default="bench_out/tiling")
    ap.add_argument("--tile-px", type=int, default=512)
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    sizes = [int(s) for s in args.sizes.split(",")]
    unetgeo = str(Path(sys.executable).with_name("unetgeo"))
    print(f"machine: {machine()}")
    results = {}
    for size in sizes:
        scene = make_scene(work / f"scene_{size}.tif", size)
        out = work / f"tiles_{size}.zarr"
        for p in (out, out.with_name("valid.zarr")):
            shutil.rmtree(p, ignore_errors=True)
        shutil.rmtree(work / f"run_{size}", ignore_errors=True)
        wall, rss = run_measured([unetgeo, "-q", "tile", str(scene), str(work / f"run_{size}" / "tiles.zarr"),
                                  "--tile-size", str(args.tile_px)])
        results[size] = (wall, rss)
        print(f"unetgeo tile {size}x{size}x4 uint16: {wall:6.1f} s, peak RSS {rss:7.1f} MiB")
    gdal = shutil.which("gdal_translate")
    size = sizes[0]
    if gdal:
        gout = work / f"gdal_{size}.zarr"
        shutil.rmtree(gout, ignore_errors=True)
        wall_g, rss_g = run_measured([
            gdal, "-q", "-of", "ZARR", "-co", f"BLOCKSIZE={args.tile_px},{args.tile_px}", "-co", "COMPRESS=BLOSC",
            "-co", "BLOSC_CNAME=lz4", "--config", "GDAL_NUM_THREADS", "ALL_CPUS",
            str(work / f"scene_{size}.tif"), str(gout),
        ])
        ours = results[size][0]
        print(f"gdal_translate -of ZARR {size}x{size}x4: {wall_g:6.1f} s, peak RSS {rss_g:7.1f} MiB")
        print(f"time ratio ours/GDAL ({size}²): {ours / wall_g:.2f}   (target <= 1.0; ours also writes "
              "valid.zarr and per-band statistics)")
    else:
        print("gdal_translate not found: install GDAL's tools (apt-get install gdal-bin) for the comparison")
    if len(sizes) > 1:
        small, big = results[sizes[0]][1], results[sizes[-1]][1]
        print(f"peak RSS {sizes[-1]}² / {sizes[0]}²: {big / small:.3f}   (target <= 1.10; both <= 1024 MiB: "
              f"{'yes' if max(small, big) <= 1024 else 'NO'})")


if __name__ == "__main__":
    main()
