"""Benchmark: unetgeo.vectorize (streamed blocks, merged) against whole-raster GDAL polygonize.

The peer is what most tools do: read the whole class raster, ``rasterio.features.shapes`` (GDAL
Polygonize) over it at once, write the GeoPackage with pyogrio. Both run in their own process;
the script prints seconds, peak RSS and the ratios, and checks that both found the same number
of polygons per class.

    .venv/bin/python benchmarks/vectorize.py --size-px 4096 --block-px 1024
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np


def make_classes(path: str, size_px: int, n_classes: int, seed: int) -> None:
    """Smooth random class blobs (uint8, nodata 255 in a corner), tiled COG-like GeoTIFF."""
    import rasterio
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.normal(size=(size_px // 4, size_px // 4)), 3)
    field = ndimage.zoom(field, 4, order=1)[:size_px, :size_px]
    edges = np.quantile(field, np.linspace(0, 1, n_classes + 1)[1:-1])
    cls = np.digitize(field, edges).astype(np.uint8)
    cls[: size_px // 10, : size_px // 10] = 255
    prof = dict(driver="GTiff", width=size_px, height=size_px, count=1, dtype="uint8", crs="EPSG:32633",
                transform=rasterio.Affine(10, 0, 500000, 0, -10, 6000000), nodata=255, tiled=True,
                blockxsize=512, blockysize=512, compress="deflate")
    with rasterio.open(path, "w", **prof) as ds:
        ds.write(cls, 1)


def run_ours(classes: str, out: str, block_px: int) -> dict:
    from unetgeo.vectorize import vectorize

    t = time.perf_counter()
    res = vectorize(classes, out, shapefile=False, block_px=block_px)
    return {"seconds": time.perf_counter() - t, "counts": {k: v for k, v in res.counts.items()}}


def run_peer(classes: str, out: str) -> dict:
    import pyogrio
    import rasterio
    import shapely
    from rasterio.features import shapes

    t = time.perf_counter()
    with rasterio.open(classes) as ds:
        arr = ds.read(1)
        tr = ds.transform
        crs = ds.crs.to_wkt()
    geoms, vals = [], []
    for g, v in shapes(arr, mask=arr != 255, connectivity=4, transform=tr):
        geoms.append(shapely.geometry.shape(g))
        vals.append(int(v))
    vals_a = np.array(vals, dtype=np.int32)
    counts = {}
    for c in np.unique(vals_a):
        sel = vals_a == c
        g = np.array(geoms, dtype=object)[sel]
        pyogrio.write_dataframe(
            __import__("geopandas").GeoDataFrame({"class_id": vals_a[sel], "area_m2": shapely.area(g)}, geometry=g, crs=crs),
            out, layer=f"class_{c}", driver="GPKG",
        )
        counts[f"class_{c}"] = int(sel.sum())
    return {"seconds": time.perf_counter() - t, "counts": counts}


def _child(which: str, classes: str, out: str, block_px: int) -> None:
    import resource

    res = run_ours(classes, out, block_px) if which == "ours" else run_peer(classes, out)
    res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(res))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-px", type=int, default=2048)
    ap.add_argument("--block-px", type=int, default=1024)
    ap.add_argument("--classes", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--child", nargs=3, metavar=("WHICH", "CLASSES", "OUT"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        _child(a.child[0], a.child[1], a.child[2], a.block_px)
        return
    with tempfile.TemporaryDirectory() as d:
        classes = os.path.join(d, "classes.tif")
        make_classes(classes, a.size_px, a.classes, a.seed)
        results = {}
        for which in ("peer", "ours"):
            out = os.path.join(d, f"{which}.gpkg")
            p = subprocess.run([sys.executable, __file__, "--block-px", str(a.block_px), "--child", which, classes, out],
                               check=True, capture_output=True, text=True)
            results[which] = json.loads(p.stdout.strip().splitlines()[-1])
    ours, peer = results["ours"], results["peer"]
    n_ours, n_peer = sum(ours["counts"].values()), sum(peer["counts"].values())
    print(f"scene {a.size_px}x{a.size_px} px, {a.classes} classes, block {a.block_px} px")
    print(f"polygons: unetgeo {n_ours}, whole-raster GDAL {n_peer} ({'same' if n_ours == n_peer else 'DIFFERENT'})")
    print(f"seconds : unetgeo {ours['seconds']:.2f}, peer {peer['seconds']:.2f}, ratio {ours['seconds'] / peer['seconds']:.2f}")
    print(f"peak RSS: unetgeo {ours['peak_rss_mb']:.0f} MB, peer {peer['peak_rss_mb']:.0f} MB, "
          f"ratio {ours['peak_rss_mb'] / peer['peak_rss_mb']:.2f}")


if __name__ == "__main__":
    main()
