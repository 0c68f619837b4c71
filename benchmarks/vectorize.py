"""Benchmark: `unetgeo vectorize` against whole-raster rasterio `shapes` + geopandas and gdal_polygonize.py.

Both yardstick masks come from /work/shared/bench/make_scene.py (``SIZE DIR --fine-mask``): a
blobby and a fragmented 4-class uint8 mask. Every tool runs in its own process; wall time, CPU
seconds and peak RSS of that process (wait4) are printed with the ratios ours / peer (each run's
ours against the peer measured right after it). A second part checks that our peak RSS does not
grow with the scene (``--big-size`` blobby mask, written without its scene, against ``--size``).

    .venv/bin/python benchmarks/vectorize.py --dir /tmp/vb --size 8192 [--repeat 3] [--big-size 32768]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
from _common import Measured, load_average, machine, run_measured_full  # noqa: E402

PEER = "/work/shared/bench/polygonize_py.py"
MAKE = "/work/shared/bench/make_scene.py"
#: ``python -c OURS MASK OUT.gpkg PARQUET SHAPEFILE``: the GeoPackage, the GeoParquet file beside it when
#: PARQUET is 1, the Shapefile when SHAPEFILE is 1 (``unetgeo vectorize --no-shapefile`` writes the first two,
#: plain ``unetgeo vectorize`` all three; the peers write a GeoPackage only)
OURS = ("from unetgeo.vectorize import vectorize; import sys; "
        "vectorize(sys.argv[1], sys.argv[2], shapefile=sys.argv[4] == '1', parquet=sys.argv[3] == '1')")


def ours(mask: str, out: str, parquet: bool, shapefile: bool = False) -> Measured:
    return run_measured_full([sys.executable, "-c", OURS, mask, out, "1" if parquet else "0", "1" if shapefile else "0"])


def ensure_masks(d: str, size: int) -> tuple[str, str]:
    """``(blobby, fragmented)`` mask paths, made with the shared generator when missing."""
    blob, fine = os.path.join(d, f"mask_{size}.tif"), os.path.join(d, f"mask_fine_{size}.tif")
    if not (os.path.exists(blob) and os.path.exists(fine)):
        subprocess.run([sys.executable, MAKE, str(size), d, "--fine-mask"], check=True)
        scene = os.path.join(d, f"scene_{size}.tif")
        if os.path.exists(scene):
            os.remove(scene)  # only the masks are needed
    return blob, fine


def ensure_blobby_mask(d: str, size: int) -> str:
    """The blobby mask of the shared generator (same seed, same pixels) without its 4-band scene.

    ``make_scene.py`` draws the class field first, so its mask does not depend on the scene's
    random textures; writing only the mask makes a 32768² one in minutes instead of an hour.
    """
    path = os.path.join(d, f"mask_{size}.tif")
    if os.path.exists(path):
        return path
    import importlib.util

    import numpy as np
    import rasterio

    spec = importlib.util.spec_from_file_location("make_scene", MAKE)
    ms = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ms)
    grids = ms.make_grids(np.random.default_rng(42), size, ms.CLASS_OCTAVES)
    sample = np.concatenate([ms.value_noise(grids, r, 8, size).ravel() for r in range(0, size, max(size // 64, 8))])
    thresholds = np.quantile(sample, [0.25, 0.5, 0.75]).astype(np.float32)
    profile = dict(driver="GTiff", width=size, height=size, count=1, dtype="uint8", crs="EPSG:32633",
                   transform=rasterio.transform.from_origin(500000.0, 5000000.0, 10.0, 10.0), tiled=True,
                   blockxsize=512, blockysize=512, compress="deflate", predictor=2, BIGTIFF="IF_SAFER")
    with rasterio.open(path + ".tmp", "w", **profile) as dst:
        for row0 in range(0, size, ms.STRIP):
            n = min(ms.STRIP, size - row0)
            cls = np.digitize(ms.value_noise(grids, row0, n, size), thresholds).astype(np.uint8)
            dst.write(cls[None], window=rasterio.windows.Window(0, row0, size, n))
    os.replace(path + ".tmp", path)
    return path


def measure(mask: str, out_dir: str) -> dict[str, Measured | None]:
    """``{tool: Measured or None}`` for one mask (ours first, then the peers)."""
    res: dict[str, Measured | None] = {}
    res["unetgeo"] = ours(mask, os.path.join(out_dir, "ours.gpkg"), False)
    res["unetgeo +GeoParquet"] = ours(mask, os.path.join(out_dir, "ourspq.gpkg"), True)
    res["rasterio shapes"] = run_measured_full([sys.executable, PEER, mask, os.path.join(out_dir, "peer.gpkg")])
    gp = shutil.which("gdal_polygonize.py")
    res["gdal_polygonize.py"] = (run_measured_full([gp, mask, "-f", "GPKG", os.path.join(out_dir, "gdal.gpkg")])
                                 if gp else None)
    return res


def report(kind: str, runs: list[dict[str, Measured | None]]) -> None:
    """One line per tool and run, then the median of the per-run ratios ours / peer (same run)."""
    for i, r in enumerate(runs):
        ours = r["unetgeo"]
        for tool, m in r.items():
            if m is None:
                print(f"{kind:10s} {tool:20s} not on PATH")
                continue
            ratio = "" if tool.startswith("unetgeo") else (f"  unetgeo/peer wall {ours.wall_s / m.wall_s:.2f}, "
                                                  f"CPU {ours.cpu_s / m.cpu_s:.2f}, RSS {ours.rss_mib / m.rss_mib:.2f}")
            print(f"{kind:10s} {tool:20s} run {i + 1}: {m.wall_s:6.2f} s wall {m.cpu_s:6.2f} s CPU "
                  f"{m.rss_mib:5.0f} MiB{ratio}")
    for variant in ("unetgeo", "unetgeo +GeoParquet"):
        peer = [(r[variant], r["rasterio shapes"]) for r in runs]
        wall = statistics.median(o.wall_s / p.wall_s for o, p in peer)
        cpu = statistics.median(o.cpu_s / p.cpu_s for o, p in peer)
        print(f"{kind:10s} median {variant}/rasterio-shapes over {len(runs)} run(s): wall {wall:.2f}, CPU {cpu:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default=None, help="folder holding / receiving the masks")
    ap.add_argument("--size", type=int, default=8192)
    ap.add_argument("--repeat", type=int, default=1, help="runs per mask, ours and the peers alternating")
    ap.add_argument("--big-size", type=int, default=0, help="also measure our peak RSS on a mask this big")
    ap.add_argument("--speed-repeat", type=int, default=None,
                    help="runs per mask of the speed comparison (default: --repeat; 0: memory only; "
                         "gdal_polygonize.py takes about 150 s a run on the fragmented mask)")
    ap.add_argument("--shapefile", action="store_true",
                    help="the memory comparison also with the Shapefile (plain `unetgeo vectorize`; it takes each "
                         "outline whole through GDAL)")
    a = ap.parse_args()
    d = a.dir or tempfile.mkdtemp(prefix="unetgeo-bench-")
    print(f"machine: {machine()}; nproc {os.cpu_count()}; load {load_average()}")
    with tempfile.TemporaryDirectory() as out:
        for kind, mask in zip(("blobby", "fragmented"), ensure_masks(d, a.size), strict=True):
            n = a.repeat if a.speed_repeat is None else a.speed_repeat
            if n:
                report(kind, [measure(mask, out) for _ in range(n)])
        if a.big_size:
            masks = ensure_masks(d, a.size)[0], ensure_blobby_mask(d, a.big_size)
            variants = [(False, False, "GeoPackage"), (True, False, "GeoPackage + GeoParquet")]
            if a.shapefile:
                variants.append((True, True, "GeoPackage + GeoParquet + Shapefile"))
            for parquet, shp, what in variants:
                ratios = []
                for i in range(a.repeat):  # the big mask's peak varies run to run with the threads' timing
                    small, big = (ours(m, os.path.join(out, f"{n}.gpkg"), parquet, shp)
                                  for m, n in zip(masks, ("s", "b"), strict=True))
                    ratios.append(big.rss_mib / small.rss_mib)
                    print(f"peak RSS ours ({what}), blobby, run {i + 1}: {a.size}² {small.rss_mib:.0f} MiB "
                          f"({small.wall_s:.1f} s), {a.big_size}² {big.rss_mib:.0f} MiB ({big.wall_s:.1f} s), "
                          f"ratio {ratios[-1]:.2f}; load {load_average()}")
                print(f"peak RSS ours ({what}): median ratio {a.big_size}² / {a.size}² over {a.repeat} run(s) "
                      f"{statistics.median(ratios):.2f}, highest {max(ratios):.2f}")


if __name__ == "__main__":
    main()
