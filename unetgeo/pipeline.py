"""The scene sequence, as plain functions over URIs: validate everything, then run the stages.

``unetgeo run`` / ``predict`` call :func:`run_scene` / :func:`predict_scene` with the default
:func:`run_inline` runner; the Prefect flow ``scene-to-polygons`` calls the same functions with
a runner that wraps each stage in a task. One sequence, two runners: the paths cannot drift.

A *runner* is ``runner(stage, label, fn, *args, **kwargs) -> fn(*args, **kwargs)``: ``stage`` is
the stage name (``tile``, ``predict``, ``stitch``, ``vectorize``, ``flood-raster``,
``flood-polygons``, ``report``), ``label`` the name of this call (``tile-reference``).

Order of a run (nothing is written before step 1 has passed)::

    1. validate   config (done by build_config), output folder, model bundle, scene bands,
                  reference / truth readable, georeferenced and on the scene's grid, flood classes
    2. lock       RUN/.unetgeo.lock: a second run into the same folder is refused (exit 2)
    3. tile -> predict -> stitch        (the reference scene too, into RUN/reference/)
    4. vectorize  -> [flood-raster -> flood-polygons] -> report (summary.json, quicklook.png)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from unetgeo.config import OPTIONS, Config, FloodSpec, build_config
from unetgeo.errors import ConfigError, InputError

log = logging.getLogger(__name__)
T = TypeVar("T")


class Runner(Protocol):
    """How a stage is executed: ``runner(stage, label, fn, *args, **kwargs)`` returns ``fn(...)``."""

    def __call__(self, stage: str, label: str, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T: ...


def run_inline(stage: str, label: str, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """The plain runner: call the stage in this process."""
    return fn(*args, **kwargs)


@dataclass(frozen=True)
class SceneRun:
    """One scene run: its inputs, its output folder and its effective configuration.

    Attributes:
        scene: GeoTIFF path or URL (or a band stack: a list / ``.txt`` of files).
        model: model bundle folder.
        out: run folder (created after validation).
        reference: "before" scene, water mask or class raster on the scene's grid (flood runs).
        truth: label raster on the scene's grid (scores in summary.json).
        config: the effective :class:`Config` (defaults < YAML < options).
        config_source: the YAML path or name (None: embedded defaults).
        options: the options that were given explicitly (recorded in summary.json).
        write_probs: also write ``probs.tif``.
        reference_source: the reference as the user gave it, when ``reference`` is a cached
            classification of it (the flood monitor); recorded in summary.json.
        unknown_mask: a Sentinel-2 SCL raster (any resolution, same extent): its cloud, shadow,
            snow and no-data pixels are "unknown" in the flood outputs, never flooded.
    """

    scene: Any
    model: str
    out: str
    reference: str | None = None
    truth: str | None = None
    config: Config = field(default_factory=Config)
    config_source: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    write_probs: bool = False
    reference_source: str | None = None
    unknown_mask: str | None = None


def make_run(scene: Any, model: str, out: str, *, reference: str | None = None, truth: str | None = None,
             config: str | None = None, write_probs: bool = False, reference_source: str | None = None,
             unknown_mask: str | None = None, **options: Any) -> SceneRun:
    """A :class:`SceneRun` with its effective configuration built by :func:`build_config`.

    Args:
        options: command-line options / flow parameters by name (``tile_px``, ``halo_px``,
            ``scales``, ``flips``, ``d4``, ``batch_size``, ``device``, ``workers``,
            ``dask_address``, …); None means "not given".

    Raises:
        ConfigError: a bad config file or option value (one line naming it).
    """
    cfg = build_config(config, options)
    given = {k: (list(v) if isinstance(v, tuple) else v) for k, v in options.items() if v is not None}
    return SceneRun(scene=scene, model=str(model), out=str(out), reference=reference, truth=truth, config=cfg,
                    config_source=None if config is None else str(config), options=given, write_probs=write_probs,
                    reference_source=reference_source, unknown_mask=unknown_mask)


@dataclass(frozen=True)
class Plan:
    """What validation found out about the inputs (all small, JSON-able but ``meta``).

    Attributes:
        meta: the model's :class:`unetgeo.model.ModelMeta`.
        scene_shape: ``(height, width)`` of the scene in pixels.
        reference_kind: None, ``"scene"`` (predicted too), ``"classes"`` or ``"mask"``.
        water_id: the model's water class id in a flood run (None otherwise).
    """

    meta: Any
    scene_shape: tuple[int, int]
    reference_kind: str | None = None
    water_id: int | None = None


def validate_run(run: SceneRun) -> Plan:
    """Check every input of a run before anything is written (fast: headers and model.json only).

    Raises:
        InputError: the output folder cannot be used, a raster is unusable, a scene too small.
        ModelBundleError: the model folder is incomplete or inconsistent.
        BandMismatchError: the scene (or reference scene) bands differ from the model's.
        GridMismatchError: reference or truth on another grid than the scene.
        ConfigError: the flood water class is not a class of the model.
    """
    from unetgeo.bands import ReadOptions
    from unetgeo.io.files import check_output_dir
    from unetgeo.io.scene import check_tail
    from unetgeo.model import check_bands, check_bundle
    from unetgeo.tiling import scene_info, scene_sources

    check_output_dir(run.out, "--out")
    meta = check_bundle(run.model)
    info = scene_info(run.scene, read=ReadOptions.from_spec(run.config.input))
    for src in scene_sources(run.scene):
        check_tail(src)
    check_bands(meta, list(info.band_names), _name(run.scene), run.config.input.sensor)
    h, w = info.grid.height, info.grid.width
    if min(h, w) < meta.stride:
        raise InputError(f"{_name(run.scene)}: {h}x{w} px is smaller than one encoder stride ({meta.stride} px) of "
                         f"model {meta.model_id}; nothing can be predicted: give a scene of at least "
                         f"{meta.stride}x{meta.stride} px")
    kind, ref_names = _check_reference(run, info, meta)
    if run.truth:
        _check_on_grid(run.truth, info, "truth", _name(run.scene))
    if run.unknown_mask:
        from unetgeo.flood import unknown_reader

        unknown_reader(run.unknown_mask, info.grid, _name(run.scene)).close()
    water_id = _water_id(run, meta, kind, ref_names) if run.reference else None
    return Plan(meta=meta, scene_shape=(h, w), reference_kind=kind, water_id=water_id)


def _name(scene: Any) -> str:
    return scene if isinstance(scene, str) else ",".join(map(str, scene))


def _check_on_grid(uri: str, info: Any, what: str, scene_name: str) -> Any:
    """Open ``uri`` (a georeferenced raster) and refuse it when it is not on the scene's grid."""
    from unetgeo.grid import same_grid
    from unetgeo.io.scene import crs_equal, open_scene

    other = open_scene(uri, need_crs=False)
    if not other.grid.crs_wkt:
        raise InputError(f"{uri}: the {what} raster has no CRS (no georeferencing), so it cannot be laid over "
                         f"{scene_name}; give it the scene's CRS and transform (gdal_edit.py -a_srs / -a_ullr)")
    same_grid(other.grid, info.grid, uri, scene_name, crs_equal=crs_equal)
    return other


def _check_reference(run: SceneRun, info: Any, meta: Any) -> tuple[str | None, list[str] | None]:
    """``(kind, class names)`` of the reference: ``scene`` (multi-band), ``classes`` or ``mask``."""
    from unetgeo.io.cog import read_class_info
    from unetgeo.model import check_bands

    if not run.reference:
        return None, None
    from unetgeo.bands import ReadOptions
    from unetgeo.tiling import scene_info

    ref = _check_on_grid(run.reference, info, "reference", _name(run.scene))
    if ref.count > 1:  # a scene: read with the same band selection and radiometry as the scene
        ref = scene_info(run.reference, read=ReadOptions.from_spec(run.config.input))
        check_bands(meta, list(ref.band_names), run.reference, run.config.input.sensor)
        return "scene", None
    names, _ = read_class_info(run.reference)
    return ("classes", names) if names else ("mask", None)


def _water_id(run: SceneRun, meta: Any, kind: str | None, ref_names: list[str] | None) -> int:
    """The model's water class id; a class-raster reference must have water at the same id."""
    water = (run.config.flood or FloodSpec()).water_class
    names = list(meta.class_names)
    if water not in names:
        raise ConfigError(f"flood.water_class={water!r} is not a class of model {run.model} ({names}); "
                          "set flood.water_class in the config to the model's water class")
    water_id = names.index(water)
    if kind == "classes" and (water not in (ref_names or []) or ref_names.index(water) != water_id):
        raise InputError(f"{run.reference}: reference classes {ref_names} do not have {water!r} at id {water_id} "
                         f"as model {run.model} has ({names}); give a reference classified with the same "
                         "classes, a water mask without class names, or the reference scene")
    return water_id


class _Stages:
    """The stage calls of one run through a runner, timing each into ``timings`` (seconds)."""

    def __init__(self, run: SceneRun, runner: Runner, progress: bool, meta: Any):
        self.run, self.runner, self.progress, self.meta = run, runner, progress, meta
        self.timings: dict[str, float] = {}

    def call(self, stage: str, label: str, key: str, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        t0 = time.perf_counter()
        try:
            return self.runner(stage, label, fn, *args, **kwargs)
        finally:
            self.timings[key] = round(self.timings.get(key, 0.0) + time.perf_counter() - t0, 3)

    def classify(self, scene: Any, run_dir: str, label: str = "") -> dict[str, Any]:
        """tile -> predict -> stitch of ``scene`` into ``run_dir``; the URIs and the stage records."""
        from unetgeo.bands import ReadOptions
        from unetgeo.infer import predict_tiles
        from unetgeo.io.uri import join
        from unetgeo.stitch import stitch
        from unetgeo.tiling import make_tiles

        cfg, sfx = self.run.config, f"-{label}" if label else ""
        key = (lambda s: label) if label else (lambda s: s)
        t = self.call("tile", f"tile{sfx}", key("tile"), make_tiles, scene, join(run_dir, "tiles.zarr"),
                      tile_px=cfg.tiling.tile_px, config_hash=cfg.config_hash(),
                      dask_address=cfg.cluster.dask_address, progress=self.progress,
                      read=ReadOptions.from_spec(cfg.input))
        checked = self._guard(t, _name(scene))
        p = self.call("predict", f"predict{sfx}", key("predict"), predict_tiles, t.tiles_uri, self.run.model,
                      join(run_dir, "probs.zarr"), valid_uri=t.valid_uri, inference=cfg.inference,
                      dask_address=cfg.cluster.dask_address, progress=self.progress)
        s = self.call("stitch", f"stitch{sfx}", key("stitch"), stitch, p.probs_uri, t.valid_uri, run_dir,
                      write_probs=self.run.write_probs and not label, progress=self.progress)
        log.info("%s: %d chunks tiled, %.2f Mpx predicted on %s, %s written", _name(scene), t.n_chunks,
                 p.megapixels, p.device, s.classes_uri)
        return {"tile": t, "predict": p, "stitch": s, "input_check": checked}

    def _guard(self, t: Any, where: str) -> dict[str, Any]:
        """The input guard on the tiles' statistics (warnings; an InputError with ``strict``)."""
        from unetgeo.guard import check_input

        spec, meta = self.run.config.input, self.meta
        if min((b.get("valid_pixels", 1) for b in t.stats.values()), default=0) == 0:
            msg = (f"{where}: no valid pixel (every pixel is nodata or NaN); the class map is all nodata (255) and "
                   "there are no polygons; check --nodata and the scene's footprint")
            log.warning("input check: %s", msg)
            return {"ok": False, "off_bands": [], "warnings": [msg], "bands": {}, "empty": True}
        checked = check_input(t.stats, meta.mean, meta.std, list(meta.in_bands), mean_sd=spec.guard_mean_sd,
                              std_ratio=spec.guard_std_ratio, where=where)
        for w in checked["warnings"]:
            log.warning("input check: %s", w)
        if spec.strict and not checked["ok"]:
            raise InputError(f"{checked['warnings'][0]} (--strict: bands {checked['off_bands']} are off; "
                             "nothing was predicted)")
        return checked


def predict_scene(run: SceneRun, *, runner: Runner = run_inline, progress: bool = False,
                  plan: Plan | None = None) -> dict[str, Any]:
    """Validate, then tile -> predict -> stitch the scene into ``run.out`` (``unetgeo predict``).

    Returns:
        ``{"tile": TileResult, "predict": PredictResult, "stitch": StitchResult, "timings": {…}}``.
    """
    from unetgeo.io.lock import RunLock

    plan = plan or validate_run(run)
    stages = _Stages(run, runner, progress, plan.meta)
    with RunLock(run.out):
        out = stages.classify(run.scene, run.out)
    return {**out, "timings": stages.timings, "plan": plan}


def run_scene(run: SceneRun, *, runner: Runner = run_inline, progress: bool = False) -> dict:
    """Validate, then every stage of one scene into ``run.out``; returns the summary.

    Outputs (deterministic names, so a rerun resumes and skips complete stages): ``tiles.zarr
    valid.zarr probs.zarr classes.tif confidence.tif polygons.gpkg`` (+ ``.shp``), with a
    reference ``reference/…`` and ``flood.tif flood.gpkg``, and ``summary.json quicklook.png``.

    Raises:
        UnetgeoError subclasses from :func:`validate_run` before anything is written;
        RunLockedError when another run holds the folder; stage errors afterwards.
    """
    from unetgeo.io.lock import RunLock

    plan = validate_run(run)
    stages = _Stages(run, runner, progress, plan.meta)
    with RunLock(run.out):
        now = stages.classify(run.scene, run.out)
        polys = _vectorize(stages, now["stitch"], plan)
        flood = _flood(stages, plan, now["stitch"].classes_uri) if run.reference else {}
        return _report(stages, plan, now, polys, flood)


def _vectorize(stages: _Stages, s: Any, plan: Plan) -> Any:
    from unetgeo.io.uri import join
    from unetgeo.vectorize import vectorize

    v = stages.run.config.vectorize
    return stages.call("vectorize", "vectorize", "vectorize", vectorize, s.classes_uri,
                       join(stages.run.out, "polygons.gpkg"), confidence_uri=s.confidence_uri,
                       class_names=s.class_names, min_area_m2=v.min_area_m2, simplify_m=v.simplify_m,
                       shapefile=v.shapefile, parquet=v.parquet, model_id=plan.meta.model_id,
                       progress=stages.progress)


def _flood(stages: _Stages, plan: Plan, classes_uri: str) -> dict[str, Any]:
    """The reference classified (if it is a scene), the flood raster and the flood polygons."""
    from unetgeo.flood import flood_polygons, flood_raster
    from unetgeo.io.uri import join

    run, cfg = stages.run, stages.run.config
    ref_uri = run.reference
    if plan.reference_kind == "scene":
        ref_uri = stages.classify(run.reference, join(run.out, "reference"), "reference")["stitch"].classes_uri
    unknown = set((cfg.flood or FloodSpec()).unknown_classes)
    unknown_ids = [i for i, n in enumerate(plan.meta.class_names) if n in unknown]
    flood_uri = stages.call("flood-raster", "flood-raster", "flood", flood_raster, classes_uri, ref_uri,
                            join(run.out, "flood.tif"), water_class_id=plan.water_id,
                            reference_is_mask=plan.reference_kind == "mask", unknown_uri=run.unknown_mask,
                            unknown_class_ids=unknown_ids)
    fp = stages.call("flood-polygons", "flood-polygons", "flood", flood_polygons, flood_uri,
                     join(run.out, "flood.gpkg"), min_area_m2=(cfg.flood or FloodSpec()).min_area_m2,
                     simplify_m=cfg.vectorize.simplify_m, shapefile=cfg.vectorize.shapefile,
                     parquet=cfg.vectorize.parquet)
    return {"flood_uri": flood_uri, "flood_polygons_uri": fp.out_uri, "reference_classes": ref_uri}


def run_record(run: SceneRun, now: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What summary.json records of the run's options and of the values the stages used."""
    rec: dict[str, Any] = {"config_source": run.config_source, "reference_source": run.reference_source or run.reference,
                           "given": dict(run.options),
                           "effective": {k: _lookup(run.config, s, f) for k, (s, f) in OPTIONS.items()}}
    if now:
        t, p = now["tile"], now["predict"]
        rec["stages"] = {"tile": {"tile_px": _chunk_px(t.tiles_uri), "n_chunks": t.n_chunks},
                         "predict": {"device": p.device, "megapixels": p.megapixels, "batch_size": p.batch_size,
                                     "workers": p.workers}}
    return rec


def _lookup(cfg: Config, section: str, field_name: str) -> Any:
    v = getattr(getattr(cfg, section), field_name)
    return list(v) if isinstance(v, tuple) else v


def _chunk_px(store_uri: str) -> int:
    from unetgeo.io.store import open_store

    return int(open_store(store_uri).chunks[-1])


def _report(stages: _Stages, plan: Plan, now: dict[str, Any], polys: Any, flood: dict[str, Any]) -> dict:
    from unetgeo.report import write_report

    run = stages.run
    return stages.call("report", "report", "report", write_report, run.out, scene_uri=_name(run.scene),
                       model_dir=run.model, config=run.config, timings=dict(stages.timings),
                       classes_uri=now["stitch"].classes_uri, polygons_uri=polys.out_uri,
                       flood_uri=flood.get("flood_uri"), flood_polygons_uri=flood.get("flood_polygons_uri"),
                       truth_uri=run.truth, reference_uri=run.reference,
                       extra={"run": run_record(run, now), "reference_classes": flood.get("reference_classes"),
                              "input_check": now.get("input_check")})


def check_training_inputs(cfg: Config, source: str) -> None:
    """Refuse a training config without data, or whose scene / label files are missing, before any work.

    Raises:
        ConfigError: no ``training.scenes`` and no ``training.pairs`` (names the config).
        InputError: a local image or label file that does not exist (names it).
    """
    from unetgeo.io.uri import exists, is_url

    t = cfg.training
    if not t.scenes and t.pairs is None:
        raise ConfigError(f"{source}: has no training data; give training.scenes (image + labels files) or "
                          "training.pairs (image/mask folders)")
    for sl in (*t.scenes, *t.val_scenes):
        for what, uri in (("image", sl.image), ("labels", sl.labels)):
            if not is_url(uri) and not exists(uri):
                raise InputError(f"{uri}: training {what} file not found (in {source}); check the path")


def train_from_config(config: str, out_dir: str, *, work_dir: str | None = None, resume: bool = False,
                      progress: bool = False) -> dict[str, Any]:
    """Train from a YAML config into ``out_dir``; a small JSON-able record of the result.

    Returns:
        ``{model_dir, metrics, epochs_run, seconds, best_epoch, report_uri}``.
    """
    from unetgeo.config import load_config
    from unetgeo.train import train

    cfg = load_config(config)
    check_training_inputs(cfg, str(config))
    r = train(cfg, out_dir, work_dir=work_dir, resume=resume, progress=progress)
    return {k: getattr(r, k, None) for k in ("model_dir", "metrics", "epochs_run", "seconds", "best_epoch",
                                              "report_uri")}


__all__ = ["Plan", "Runner", "SceneRun", "make_run", "predict_scene", "run_inline", "run_record", "run_scene",
           "check_training_inputs", "train_from_config", "validate_run"]
