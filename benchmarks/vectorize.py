"""Benchmark: `unetgeo vectorize` against whole-raster rasterio `shapes` + geopandas and gdal_polygonize.py.

Both yardstick masks come from /work/shared/bench/make_scene.py (``SIZE DIR --fine-mask``): a
blobby and a fragmented 4-class uint8 mask. Every tool runs in its own process; wall time and
peak RSS of that process (wait4) are printed with the ratios ours / peer. A second part checks
that our peak RSS does not grow with the scene (``--big-size`` mask against the ``--size`` one).

    .venv/bin/python benchmarks/vectorize.py --dir /tmp/vb --size 8192 [--big-size 16384]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
from _common import load_average, machine, run_measured  # noqa: E402

PEER = "/work/shared/bench/polygonize_py.py"
MAKE = "/work/shared/bench/make_scene.py"
OURS = "from unetgeo.vectorize import vectorize; import sys; vectorize(sys.argv[1], sys.argv[2], shapefile=False)"


def ensure_masks(d: str, size: int) -> tuple[str, str]:
    """``(blobby, fragmented)`` mask paths, made with the shared generator when missing."""
    blob, fine = os.path.join(d, f"mask_{size}.tif"), os.path.join(d, f"mask_fine_{size}.tif")
    if not (os.path.exists(blob) and os.path.exists(fine)):
        subprocess.run([sys.executable, MAKE, str(size), d, "--fine-mask"], check=True)
        scene = os.path.join(d, f"scene_{size}.tif")
        if os.path.exists(scene):
            os.remove(scene)  # only the masks are needed
    return blob, fine


def measure(mask: str, out_dir: str) -> dict[str, tuple[float, float] | None]:
    """``{tool: (wall s, peak RSS MiB) or None}`` for one mask."""
    res: dict[str, tuple[float, float] | None] = {}
    res["unetgeo"] = run_measured([sys.executable, "-c", OURS, mask, os.path.join(out_dir, "ours.gpkg")])
    res["rasterio shapes"] = run_measured([sys.executable, PEER, mask, os.path.join(out_dir, "peer.gpkg")])
    gp = shutil.which("gdal_polygonize.py")
    res["gdal_polygonize.py"] = (run_measured([gp, mask, "-f", "GPKG", os.path.join(out_dir, "gdal.gpkg")])
                                 if gp else None)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default=None, help="folder holding / receiving the masks")
    ap.add_argument("--size", type=int, default=8192)
    ap.add_argument("--big-size", type=int, default=0, help="also measure our peak RSS on a mask this big")
    a = ap.parse_args()
    d = a.dir or tempfile.mkdtemp(prefix="unetgeo-bench-")
    print(f"machine: {machine()}; load {load_average()}")
    with tempfile.TemporaryDirectory() as out:
        for kind, mask in zip(("blobby", "fragmented"), ensure_masks(d, a.size), strict=True):
            r = measure(mask, out)
            ours = r["unetgeo"]
            for tool, m in r.items():
                if m is None:
                    print(f"{kind:10s} {tool:20s} not on PATH")
                    continue
                ratio = "" if tool == "unetgeo" else f"  ours/peer time {ours[0] / m[0]:.2f}, RSS {ours[1] / m[1]:.2f}"
                print(f"{kind:10s} {tool:20s} {m[0]:7.2f} s {m[1]:7.0f} MiB{ratio}")
        if a.big_size:
            small = r["unetgeo"][1]
            big_mask = ensure_masks(d, a.big_size)[0]
            _, big = run_measured([sys.executable, "-c", OURS, big_mask, os.path.join(out, "big.gpkg")])
            print(f"peak RSS ours, blobby: {a.size}² {small:.0f} MiB, {a.big_size}² {big:.0f} MiB, ratio {big / small:.2f}")


if __name__ == "__main__":
    main()
