"""The ``unetgeo`` command: one subcommand per stage, plus ``run`` (all stages) and ``demo``.

Exit codes: 0 success; 2 bad input or a usage error (one line on stderr naming the file or the
option and the problem); 1 internal error (a traceback with ``-v``). No subcommand imports
Prefect: ``run`` calls :func:`unetgeo.pipeline.run_scene` directly.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import textwrap
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from unetgeo.errors import UnetgeoError

log = logging.getLogger("unetgeo")

EPILOG = textwrap.dedent(
    """\
    Typical use:
      unetgeo demo --out demo/                         # make data, train, run a flood scene end to end
      unetgeo train --config configs/flood.yaml --out models/flood
      unetgeo run scene.tif --model models/flood --out runs/2026-11-21 --reference before.tif
      unetgeo predict scene.tif --model models/flood --out runs/x --scales 0.75,1,1.25 --flips

    Outputs of a run (open the .tif and .gpkg files in QGIS by drag and drop):
      classes.tif      class map, COG, uint8, nodata 255, colour table and class names
      confidence.tif   max class probability x 100, COG, uint8, nodata 255
      polygons.gpkg    one layer per class: class_name, area_m2, mean_conf, scene_id, model_id
      polygons.shp     the same polygons as a Shapefile (+ .prj, .cpg)
      flood.gpkg       (with --reference) water now that was not water before
      summary.json     areas, counts, IoU against truth, options used, stage timings;  quicklook.png
    Exit codes: 0 ok, 2 bad input (one line naming the file and the problem), 1 internal error.
    """
)

# Options of `run`, `predict` and `evaluate` that set the effective config (unetgeo.config.OPTIONS).
RUN_OPTIONS = ("tile_px", "halo_px", "scales", "flips", "d4", "batch_size", "device", "workers", "dask_address",
               "bands", "sensor", "nodata", "scale", "offset", "strict")


class _Parser(argparse.ArgumentParser):
    """Usage errors are one line plus a pointer to ``--help`` (exit 2), not a usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _floats(text: str) -> tuple[float, ...]:
    try:
        vals = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers, e.g. 0.75,1,1.25") from None
    if not vals or any(v <= 0 for v in vals):
        raise argparse.ArgumentTypeError(f"{text!r}: scales must be positive numbers, e.g. 0.75,1,1.25")
    return vals


def _add_inference_args(p: argparse.ArgumentParser, *, cluster: bool = True) -> None:
    g = p.add_argument_group("prediction (override the config; defaults in configs/flood.yaml)")
    g.add_argument("--config", default=None, help="YAML config path or name in configs/ (default: embedded flood defaults)")
    g.add_argument("--scales", type=_floats, default=None, metavar="S1,S2",
                   help="test-time scales, fused by averaging probabilities (default 1.0; e.g. 0.75,1,1.25)")
    g.add_argument("--flips", action="store_true", default=None, help="also average horizontal and vertical flips")
    g.add_argument("--d4", action="store_true", default=None, help="average all eight rotations/flips (D4)")
    g.add_argument("--halo", type=int, default=None, dest="halo_px", metavar="PX",
                   help="context in pixels read around each chunk and cropped away (default 64, at most the tile size)")
    g.add_argument("--tile-size", type=int, default=None, dest="tile_px", metavar="PX",
                   help="chunk side of the Zarr tiles in pixels (default 512)")
    g.add_argument("--batch-size", type=int, default=None, metavar="N", help="windows per forward pass (default 4)")
    g.add_argument("--device", default=None, help="auto (default: CUDA when present), cpu, cuda, cuda:1 …")
    g.add_argument("--workers", type=int, default=None, metavar="N",
                   help="Dask worker processes sharing the chunks (default: one per GPU, 1 on CPU)")
    _add_band_options(g)
    g.add_argument("--strict", action="store_true", default=None,
                   help="stop with exit 2 after tiling when a band's statistics are far from the model's training "
                   "statistics (default: a warning, recorded in summary.json as input_check)")
    if cluster:
        g.add_argument("--dask-address", default=None, metavar="ADDR",
                       help="scheduler of a running Dask cluster (tcp://host:8786): tiling and prediction chunks "
                       "run on its workers (default: this machine)")


def _options(a: argparse.Namespace) -> dict[str, Any]:
    return {k: getattr(a, k, None) for k in RUN_OPTIONS}


def _tile_args(t: argparse.ArgumentParser) -> None:
    t.add_argument("scene", nargs="+", metavar="SCENE",
                   help="GeoTIFF path or URL (s3://…); several files (e.g. B02.tif B03.tif B04.tif B08.tif B11.tif) "
                   "are stacked as bands in that order on the finest grid; a .txt file may list them")
    t.add_argument("out", help="output store, e.g. run/tiles.zarr (valid.zarr is written beside it)")
    t.add_argument("--tile-size", type=int, default=512, dest="tile_px", metavar="PX", help="chunk side (default 512)")
    _add_band_options(t)
    t.add_argument("--band-names", default=None, metavar="N1,N2",
                   help="comma-separated names to give the file's bands in file order (default: band descriptions)")
    t.add_argument("--dask-address", default=None, help="scheduler address of a running Dask cluster (default: local threads)")
    t.add_argument("--resampling", default="bilinear",
                   help="resampling of stack files coarser than the finest (bilinear, cubic, average, nearest…)")


def _add_band_options(g: Any) -> None:
    """``--bands --sensor --nodata --scale --offset`` (tile, predict, run)."""
    from unetgeo.bands import SENSORS

    g.add_argument("--bands", default=None, metavar="B1,B2",
                   help="bands to read, in the model's order: names, band descriptions, codes or 1-based numbers "
                   "(e.g. B2,B3,B4,B8,B11 or 2,3,4,8,12); codes map to canonical names (B02=blue, B8=nir…)")
    g.add_argument("--sensor", default=None, choices=SENSORS,
                   help="band table of the codes (default: guessed from the band / file names, else s2)")
    g.add_argument("--nodata", default=None, metavar="V|none",
                   help="nodata value of the scene, or 'none' (default: the file's; undeclared 0 / max fill at the "
                   "scene edge is detected and masked)")
    g.add_argument("--scale", type=_numbers, default=None, metavar="S[,S…]",
                   help="physical = DN * scale + offset, one value or one per band (default: the file's tags)")
    g.add_argument("--offset", type=_numbers, default=None, metavar="O[,O…]",
                   help="offset after the scale, one or per band (default: file tags / Sentinel-2 metadata)")


def _numbers(text: str) -> tuple[float, ...]:
    try:
        vals = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers, e.g. 0.0001") from None
    if not vals:
        raise argparse.ArgumentTypeError(f"{text!r}: give one number, or one per band")
    return vals


def _train_args(tr: argparse.ArgumentParser) -> None:
    tr.add_argument("--config", required=True, help="YAML config path or name in configs/ (flood, landuse, …)")
    tr.add_argument("--out", default=None, help="model directory (default models/<config name>)")
    tr.add_argument("--resume", action="store_true", help="continue from checkpoint.json + checkpoint.safetensors in the model directory")


def _add_scene_model_out(p: argparse.ArgumentParser) -> None:
    p.add_argument("scene", help="GeoTIFF path or URL (or a .txt file listing band files to stack)")
    p.add_argument("--model", required=True, help="model directory (model.safetensors + model.json)")
    p.add_argument("--out", required=True, help="run directory (created; a second live run into it is refused)")


def _predict_args(pr: argparse.ArgumentParser) -> None:
    _add_scene_model_out(pr)
    pr.add_argument("--probs", action="store_true", help="also write probs.tif (one band per class)")
    _add_inference_args(pr)


def _stitch_args(st: argparse.ArgumentParser) -> None:
    st.add_argument("probs", help="probs.zarr store")
    st.add_argument("out", help="output directory")
    st.add_argument("--valid", default=None, help="valid.zarr (default: beside probs.zarr)")
    st.add_argument("--probs-tif", action="store_true", help="also write probs.tif")


def _vectorize_args(ve: argparse.ArgumentParser) -> None:
    ve.add_argument("classes", help="class raster (uint8, nodata 255)")
    ve.add_argument("out", help="output .gpkg")
    ve.add_argument("--min-area-m2", type=float, default=0.0, help="drop polygons smaller than this (m²)")
    ve.add_argument("--simplify-m", type=float, default=0.0, help="simplify outlines by this tolerance (m)")
    ve.add_argument("--confidence", default=None, help="confidence.tif for the mean_conf attribute")
    ve.add_argument("--class-names", default=None, help="comma-separated class names (default: from the raster)")
    ve.add_argument("--no-shapefile", action="store_true", help="no <out stem>.shp beside the GeoPackage")
    ve.add_argument("--no-parquet", action="store_true",
                    help="no <out stem>.parquet (GeoParquet 1.1, all classes, bbox column) beside the GeoPackage")


def _run_args(ru: argparse.ArgumentParser) -> None:
    _add_scene_model_out(ru)
    ru.add_argument("--reference", default=None,
                    help="pre-event scene (or a single-band water mask) on the same grid: writes flood.gpkg")
    ru.add_argument("--truth", default=None, help="label raster on the same grid: IoU goes into summary.json")
    _add_inference_args(ru)


def _evaluate_args(ev: argparse.ArgumentParser) -> None:
    ev.add_argument("--model", required=True, help="model directory")
    ev.add_argument("--scene", default=None, help="georeferenced scene")
    ev.add_argument("--labels", default=None, help="label raster (same grid) or vector file for --scene")
    ev.add_argument("--images", default=None, help="folder of images (pairs mode)")
    ev.add_argument("--masks", default=None, help="folder of RGB-coded masks (pairs mode)")
    ev.add_argument("--class-attribute", default=None, metavar="NAME",
                    help="vector --labels: the attribute holding the class (a class name or id, or a key of "
                    "--class-map)")
    ev.add_argument("--class-map", default=None, metavar="JSON_OR_FILE",
                    help="value -> class id, as JSON or a .json file: vector labels map attribute values "
                    "('__other__': class of uncovered pixels, default ignored), raster labels map raster values "
                    "(e.g. '{\"-1\": 255}'); 255 = ignored")
    ev.add_argument("--ignore-values", type=_numbers, default=(), metavar="V[,V…]",
                    help="raster --labels: values that mean 'not labelled' (e.g. -1); they are not scored")
    ev.add_argument("--json", default=None, dest="json_out", help="write the scores to this JSON file")
    ev.add_argument("--work", default=None, help="working directory for intermediate stores")
    _add_inference_args(ev, cluster=False)


def _demo_args(de: argparse.ArgumentParser) -> None:
    de.add_argument("--out", default="demo", help="output directory (default ./demo)")
    de.add_argument("--size", type=int, default=1024, dest="size_px", help="scene side in pixels (default 1024)")
    de.add_argument("--seed", type=int, default=0)


#: The subcommands in ``--help`` order: ``(name, one-line help, description, adds its arguments)``;
#: :data:`COMMANDS` runs them.
SUBCOMMANDS: tuple[tuple[str, str, str, Callable[[argparse.ArgumentParser], None]], ...] = (
    ("tile", "GeoTIFF scene -> Zarr tiles + valid mask",
     "Cut a GeoTIFF into a Zarr v3 store of (band, y, x) chunks plus valid.zarr "
     "(nodata mask) beside it, with grid attributes and per-band statistics. "
     "Resumable: a killed run started again writes only the missing chunks.", _tile_args),
    ("train", "train a U-Net from a YAML config",
     "Train a segmentation model and write a model bundle "
     "(model.safetensors, model.json, training report PNG).", _train_args),
    ("predict", "scene -> classes.tif + confidence.tif",
     "Tile a scene, predict every chunk with a halo (seam-free), fuse test-time "
     "scales/flips, and write classes.tif and confidence.tif (COGs) into RUN_DIR.", _predict_args),
    ("stitch", "probs.zarr -> classes.tif + confidence.tif",
     "Turn a probs.zarr store into COGs (classes, confidence).", _stitch_args),
    ("vectorize", "classes.tif -> polygons (GeoPackage + GeoParquet + Shapefile)",
     "Polygonise a class raster chunk by chunk, merging polygons across chunk "
     "borders. One GeoPackage layer per class; a GeoParquet file and a Shapefile with all classes beside it.", _vectorize_args),
    ("run", "all stages: tile, predict, stitch, vectorize, flood, report",
     "Validate every input first (bands, grids, model, output folder: exit 2 in "
     "seconds, nothing written), then tile -> predict -> stitch -> vectorize (-> flood) -> report "
     "into RUN_DIR. The Prefect flow 'scene-to-polygons' runs the same sequence as tasks.", _run_args),
    ("evaluate", "score a model on labelled data through the full inference path",
     "Per-class IoU and mIoU of a model, predicted exactly as `predict` does "
     "(same tile size, halo and fusion for the same model and config).", _evaluate_args),
    ("demo", "make data, train a small model, run a flood scene end to end",
     "Generate a synthetic pre/post flood pair and a training scene, train a small "
     "U-Net on CPU, run the post-flood scene through every stage with the pre-flood scene "
     "as reference, and print water IoU, flooded km² and timings. `make demo` does the same "
     "through the Prefect flow scene-to-polygons.", _demo_args),
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used to render --help in the README).

    Returns:
        The ``unetgeo`` parser, one subparser per entry of :data:`SUBCOMMANDS`.
    """
    from unetgeo import __version__

    p = _Parser(prog="unetgeo", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
                description="Turn large remote-sensing scenes (GeoTIFF) into georeferenced class rasters and "
                "land-use / flood polygons with U-Nets. Every stage streams chunk by chunk.")
    p.add_argument("--version", action="version", version=f"unetgeo {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging and tracebacks")
    p.add_argument("-q", "--quiet", action="store_true", help="warnings only, no progress bars")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name, help_, description, add_arguments in SUBCOMMANDS:
        add_arguments(sub.add_parser(name, help=help_, description=description))
    return p


def setup_logging(verbose: bool, quiet: bool) -> None:
    level = logging.DEBUG if verbose else (logging.WARNING if quiet else logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    root = logging.getLogger("unetgeo")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    for noisy in ("distributed", "tornado", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def _cmd_tile(a: argparse.Namespace, progress: bool) -> int:
    from unetgeo.bands import ReadOptions, parse_bands
    from unetgeo.io.scene import check_tail
    from unetgeo.tiling import make_tiles, scene_sources

    for src in scene_sources(a.scene[0] if len(a.scene) == 1 else a.scene):
        check_tail(src)  # a truncated file is refused before any store exists
    names = parse_bands(a.band_names)
    bands = parse_bands(a.bands)
    read = ReadOptions(bands=tuple(bands) if bands else None, sensor=a.sensor, nodata=a.nodata,
                       scale=a.scale, offset=a.offset)
    scene = a.scene[0] if len(a.scene) == 1 else a.scene
    r = make_tiles(scene, a.out, tile_px=a.tile_px, band_names=names, dask_address=a.dask_address,
                   progress=progress, resampling=a.resampling, read=read)
    print(f"{r.tiles_uri}: {r.grid.height}x{r.grid.width} px, bands {list(r.band_names)}, "
          f"{r.n_chunks} chunks ({r.n_written} written) in {r.seconds:.1f} s; mask {r.valid_uri}")
    return 0


def _cmd_train(a: argparse.Namespace, progress: bool) -> int:
    from unetgeo.config import load_config
    from unetgeo.pipeline import check_training_inputs
    from unetgeo.train import train

    cfg = load_config(a.config)
    check_training_inputs(cfg, a.config)
    out = a.out or os.path.join("models", cfg.name)
    kwargs = {"resume": True} if a.resume else {}
    r = train(cfg, out, progress=progress, **kwargs)
    print(f"model written to {r.model_dir}")
    print(json.dumps({k: v for k, v in r.metrics.items() if k in ("miou", "iou", "accuracy")}, indent=1))
    return 0


def _cmd_predict(a: argparse.Namespace, progress: bool) -> int:
    from unetgeo.pipeline import make_run, predict_scene

    run = make_run(a.scene, a.model, a.out, config=a.config, write_probs=a.probs, **_options(a))
    r = predict_scene(run, progress=progress)
    tr, pr, sr = r["tile"], r["predict"], r["stitch"]
    print(f"{sr.classes_uri} and {sr.confidence_uri} written ({pr.megapixels:.1f} Mpx, "
          f"tile {tr.seconds:.1f} s, predict {pr.seconds:.1f} s on {pr.device}, stitch {sr.seconds:.1f} s)")
    return 0


def _cmd_stitch(a: argparse.Namespace, progress: bool) -> int:
    from unetgeo.io.uri import sibling
    from unetgeo.stitch import stitch

    sr = stitch(a.probs, a.valid or sibling(a.probs, "valid.zarr"), a.out, write_probs=a.probs_tif, progress=progress)
    print(f"{sr.classes_uri} and {sr.confidence_uri} written in {sr.seconds:.1f} s")
    return 0


def _cmd_vectorize(a: argparse.Namespace, progress: bool) -> int:
    from unetgeo.vectorize import vectorize

    names = [n.strip() for n in a.class_names.split(",")] if a.class_names else None
    r = vectorize(a.classes, a.out, confidence_uri=a.confidence, class_names=names, min_area_m2=a.min_area_m2,
                  simplify_m=a.simplify_m, shapefile=not a.no_shapefile, parquet=not a.no_parquet,
                  progress=progress)
    for name, n in r.counts.items():
        print(f"{name:>16}: {n:7d} polygons, {r.area_km2.get(name, 0.0):10.3f} km²")
    print("written " + ", ".join(u for u in (r.out_uri, r.shapefile_uri, r.parquet_uri) if u))
    return 0


def _cmd_run(a: argparse.Namespace, progress: bool) -> int:
    from unetgeo.pipeline import make_run, run_scene

    run = make_run(a.scene, a.model, a.out, reference=a.reference, truth=a.truth, config=a.config, **_options(a))
    summary = run_scene(run, progress=progress)
    print(json.dumps({k: summary[k] for k in ("area_km2", "flooded_km2", "iou", "miou", "timings_s") if k in summary},
                     indent=1))
    print(f"outputs in {a.out}")
    return 0


def _cmd_evaluate(a: argparse.Namespace, progress: bool) -> int:
    from unetgeo.config import build_config
    from unetgeo.evaluate import evaluate_model, parse_class_map

    cfg = build_config(a.config, _options(a))
    class_map = parse_class_map(a.class_map) if a.class_map else None
    scores = evaluate_model(a.model, scene=a.scene, labels=a.labels, images=a.images, masks=a.masks,
                            inference=cfg.inference, tile_px=cfg.tiling.tile_px, work_dir=a.work,
                            class_attribute=a.class_attribute, class_map=class_map, ignore_values=a.ignore_values,
                            progress=progress)
    for name, v in scores["iou"].items():
        print(f"{name:>16}: IoU " + ("n/a (absent)" if v is None else f"{v:.3f}"))
    print(f"{'mIoU':>16}: " + ("n/a" if scores["miou"] is None else f"{scores['miou']:.3f}"))
    if a.json_out:
        from unetgeo.io.uri import write_atomic

        write_atomic(a.json_out, json.dumps(scores, indent=1))
    return 0


def _cmd_demo(a: argparse.Namespace, progress: bool) -> int:
    from unetgeo.demo import run_demo

    run_demo(a.out, size_px=a.size_px, seed=a.seed, progress=progress)
    return 0


COMMANDS = {
    "tile": _cmd_tile, "train": _cmd_train, "predict": _cmd_predict, "stitch": _cmd_stitch,
    "vectorize": _cmd_vectorize, "run": _cmd_run, "evaluate": _cmd_evaluate, "demo": _cmd_demo,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``unetgeo`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    progress = not args.quiet
    try:
        return COMMANDS[args.command](args, progress)
    except UnetgeoError as e:
        print(f"unetgeo {args.command}: error: {e.one_line()}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("unetgeo: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the last line of defence: one line, exit 1
        if args.verbose:
            raise
        msg = " ".join(str(e).split()) or type(e).__name__
        print(f"unetgeo {args.command}: internal error: {type(e).__name__}: {msg} (run with -v for a traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
