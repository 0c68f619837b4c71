"""Validated configuration, loaded from ``configs/*.yaml``.

Every model is frozen and forbids unknown keys, so a typo in a YAML file is an error that names
the key, not a silently ignored setting. The defaults of :class:`Config` are the embedded
flood-monitoring defaults that ``unetgeo demo`` and ``unetgeo run`` use without any file.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from unetgeo.errors import ConfigError

_HEX = re.compile(r"^#[0-9a-fA-F]{6}$")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ClassSpec(_Frozen):
    """One output class: its name (used in rasters, polygons and reports) and colour."""

    name: str
    color: str = Field(description="hex colour #RRGGBB used in the colour table and quicklook")
    rgb: tuple[int, int, int] | None = Field(
        default=None, description="colour of this class in RGB-coded mask images (pair folders)"
    )

    @field_validator("color")
    @classmethod
    def _hex(cls, v: str) -> str:
        if not _HEX.match(v):
            raise ValueError(f"color={v!r} is not a hex colour like '#1f78b4'")
        return v.lower()

    @property
    def color_rgb(self) -> tuple[int, int, int]:
        """The display colour as an ``(r, g, b)`` tuple of 0–255 ints."""
        return tuple(int(self.color[i : i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


class ModelSpec(_Frozen):
    """Architecture of the segmentation network (any segmentation-models-pytorch name)."""

    arch: str = "Unet"
    encoder: str = "resnet18"
    encoder_depth: int = Field(default=5, ge=3, le=5)
    decoder_channels: tuple[int, ...] | None = Field(
        default=None, description="decoder widths, one per encoder stage; smp's default when null"
    )
    encoder_weights: str | None = Field(
        default=None,
        description="null (random init, the default: nothing is downloaded) or a local .pth/.safetensors file",
    )
    indices: tuple[str, ...] = Field(
        default=(),
        description="spectral indices appended as input channels (ndwi, mndwi, ndvi): gain-invariant, so "
        "they carry across illumination, haze and sensor calibration",
    )

    @field_validator("indices")
    @classmethod
    def _known_indices(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        from unetgeo.indices import INDEX_BANDS

        bad = [i for i in v if i not in INDEX_BANDS]
        if bad:
            raise ValueError(f"unknown indices {bad}; use any of {sorted(INDEX_BANDS)}")
        if len(set(v)) != len(v):
            raise ValueError(f"indices repeat: {list(v)}")
        return v


class TilingSpec(_Frozen):
    """How scenes are cut into Zarr chunks."""

    tile_px: int = Field(default=512, ge=32, le=8192)


class SceneLabels(_Frozen):
    """A georeferenced training scene and its labels (raster on the same grid, or vector)."""

    image: str
    labels: str
    class_attribute: str | None = Field(
        default=None, description="for vector labels: the attribute that holds the class"
    )
    class_map: dict[str, int] | None = Field(
        default=None,
        description="vector labels: attribute value -> class id ('__other__': id for uncovered pixels); "
        "raster labels: raster value (e.g. '-1') -> class id; 255 = ignore",
    )
    ignore_values: tuple[float, ...] = Field(
        default=(),
        description="raster labels: values that mean 'not labelled' (e.g. [-1] for Sen1Floods11); "
        "ignored in the loss and in validation",
    )


class PairFolders(_Frozen):
    """Folders of image / RGB-coded mask pairs (not georeferenced)."""

    root: str
    train_globs: tuple[str, ...] = ("*/images/*.jpg",)
    val_globs: tuple[str, ...] = ()
    mask_from_image: tuple[str, str] = Field(
        default=("images/", "masks/"),
        description="replace this substring of an image path to find its mask",
    )
    mask_suffix: str = ".png"
    ignore_rgb: tuple[tuple[int, int, int], ...] = ()


class TrainingSpec(_Frozen):
    """Training settings. Chips are sampled from tiled scenes or from pair folders."""

    scenes: tuple[SceneLabels, ...] = ()
    val_scenes: tuple[SceneLabels, ...] = ()
    pairs: PairFolders | None = None
    chip_px: int = Field(default=256, ge=32)
    batch_size: int = Field(default=8, ge=1)
    epochs: int = Field(default=6, ge=1)
    steps_per_epoch: int = Field(default=40, ge=1)
    val_fraction: float = Field(default=0.2, ge=0.0, lt=1.0, description="share of spatial blocks held out")
    val_block_px: int = Field(default=256, ge=32, description="side of the spatial blocks for the split")
    lr: float = Field(default=2e-3, gt=0)
    weight_decay: float = Field(default=1e-4, ge=0)
    warmup_steps: int = Field(default=20, ge=0)
    grad_accum: int = Field(default=1, ge=1)
    ce_weight: float = Field(default=1.0, ge=0)
    dice_weight: float = Field(default=1.0, ge=0)
    class_weights: Literal["none", "inverse_sqrt_freq"] = "inverse_sqrt_freq"
    class_aware_sampling: float = Field(
        default=0.5, ge=0, le=1, description="share of chips centred on a pixel of a rare class"
    )
    early_stop_patience: int = Field(default=0, ge=0, description="epochs without val mIoU gain; 0 = off")
    seed: int = 0
    device: str = "auto"
    num_threads: int | None = None
    # Augmentation, sampling and loss switches (issue 15). The defaults are the behaviour before them.
    aug_color: float = Field(
        default=0.0, ge=0, le=1,
        description="probability of colour jitter (brightness, contrast, saturation, hue) on the bands named "
        "red, green, blue (skipped when the model has no such three bands)",
    )
    aug_gamma: float = Field(default=0.0, ge=0, le=1, description="probability of a random gamma in [0.7, 1.5] on all bands")
    aug_gain: float = Field(default=0.0, ge=0, le=1, description="probability of a per-band gain in 1 ± 0.2 (scene units)")
    aug_scale: tuple[float, float] = Field(default=(0.8, 1.25), description="scale jitter range (min, max)")
    aug_scale_p: float = Field(default=0.3, ge=0, le=1, description="probability of the scale jitter")
    class_share: dict[str, float] = Field(
        default_factory=dict,
        description="share of chips centred on a pixel of each named class, e.g. {water: 0.2, road: 0.2}; when "
        "given it replaces class_aware_sampling (the rest of the chips are placed at random)",
    )
    label_smoothing: float = Field(default=0.0, ge=0, lt=1, description="label smoothing of the cross-entropy term")

    @field_validator("aug_scale")
    @classmethod
    def _scale_range(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 < v[0] <= v[1]:
            raise ValueError(f"aug_scale={list(v)} must be [min, max] with 0 < min <= max, e.g. [0.7, 1.4]")
        return v

    @field_validator("class_share")
    @classmethod
    def _shares(cls, v: dict[str, float]) -> dict[str, float]:
        if any(s < 0 for s in v.values()) or sum(v.values()) > 1 + 1e-9:
            raise ValueError(f"class_share={v} must be shares >= 0 that sum to at most 1")
        return v


class InferenceSpec(_Frozen):
    """Prediction settings: halo, test-time fusion, batching, device."""

    halo_px: int = Field(default=64, ge=0)
    scales: tuple[float, ...] = (1.0,)
    scale_weights: tuple[float, ...] | None = None
    flips: bool = False
    d4: bool = False
    batch_size: int = Field(default=4, ge=1)
    device: str = "auto"
    probs_dtype: Literal["float16", "uint8"] = "float16"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        default="auto", description="autocast dtype; auto = bf16 (or fp16) on CUDA, fp32 on CPU"
    )
    channels_last: bool | None = Field(default=None, description="NHWC memory layout; None = on CUDA only")
    auto_batch: bool = Field(
        default=True, description="on CUDA, raise batch_size to fill 60 % of free GPU memory (CPU: unchanged)"
    )
    workers: int | None = Field(
        default=None, ge=1, description="Dask worker processes sharing the chunks; None = one per CUDA device (1 on CPU)"
    )
    max_forward_batch: int | None = Field(
        default=None, ge=1,
        description="most images in one forward pass; None = on CUDA batch_size x symmetries (all flips of a "
        "batch in one pass), on CPU batch_size (larger passes are slower per pixel there)",
    )

    @field_validator("device")
    @classmethod
    def _device_name(cls, v: str) -> str:
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", v):
            raise ValueError(f"device={v!r} is not a device; use auto, cpu, cuda or cuda:N")
        return v

    @model_validator(mode="after")
    def _weights_match(self) -> InferenceSpec:
        if any(s <= 0 for s in self.scales):
            raise ValueError(f"scales={list(self.scales)} must all be > 0, e.g. [0.75, 1.0, 1.25]")
        if self.scale_weights is not None and len(self.scale_weights) != len(self.scales):
            raise ValueError(
                f"scale_weights has {len(self.scale_weights)} values but scales has {len(self.scales)}"
            )
        return self


class VectorizeSpec(_Frozen):
    """Polygon output settings."""

    min_area_m2: float = Field(default=0.0, ge=0)
    simplify_m: float = Field(default=0.0, ge=0)
    shapefile: bool = Field(default=True, description="also polygons.shp (all classes, short attribute names)")
    parquet: bool = Field(default=True, description="also polygons.parquet (GeoParquet 1.1 with a bbox column)")


class ClusterSpec(_Frozen):
    """Where the chunks of tiling and prediction run."""

    dask_address: str | None = Field(
        default=None, description="scheduler of a running Dask cluster (tcp://host:8786); null = this machine"
    )


class FloodSpec(_Frozen):
    """Flood-monitoring settings: which class is water, how small a flood patch may be."""

    water_class: str = "water"
    min_area_m2: float = Field(default=0.0, ge=0)
    unknown_classes: tuple[str, ...] = Field(
        default=("cloud",),
        description="classes that are neither dry nor water (clouds): unknown (255) in flood.tif, "
        "never flooded, counted in unknown_km2; names the model does not have are ignored",
    )


class InputSpec(_Frozen):
    """How scenes are read: band selection, nodata, radiometry, and the input guard's thresholds."""

    bands: tuple[str, ...] | None = Field(
        default=None, description="bands to read in the model's order: names, codes (B02, B8A, SR_B5) or 1-based numbers"
    )
    sensor: Literal["s2", "landsat8", "landsat7", "s1"] | None = Field(
        default=None, description="band table of the codes; null = guessed from the band / file names"
    )
    nodata: float | Literal["none"] | None = Field(
        default=None, description="nodata value of the scene; 'none' = no nodata; null = the file's, else detected"
    )
    scale: tuple[float, ...] | None = Field(default=None, description="per band (or one) DN * scale + offset")
    offset: tuple[float, ...] | None = Field(default=None, description="per band (or one) offset, after scale")
    detect_nodata: bool = Field(default=True, description="mask undeclared nodata (0 / dtype max at the edge)")
    guard_mean_sd: float = Field(
        default=3.0, gt=0, description="warn when a band's mean is this many training stds from the training mean"
    )
    guard_std_ratio: float = Field(
        default=4.0, gt=1, description="warn when a band's std is this factor wider than the training std (or 25x narrower)"
    )
    strict: bool = Field(default=False, description="an input guard warning is an error (exit 2) before prediction")

    @field_validator("bands", "scale", "offset", mode="before")
    @classmethod
    def _comma_list(cls, v: Any) -> Any:
        return [p.strip() for p in v.split(",") if p.strip()] if isinstance(v, str) else v

    @field_validator("nodata", mode="before")
    @classmethod
    def _nodata(cls, v: Any) -> Any:
        if isinstance(v, str) and v.strip().lower() in ("none", "null", ""):
            return "none"
        return v


_FLOOD_CLASSES = (
    ClassSpec(name="background", color="#d9d9d9"),
    ClassSpec(name="water", color="#1f78b4"),
    ClassSpec(name="cloud", color="#ffffff"),
)


class Config(_Frozen):
    """The whole configuration. Its defaults are the embedded flood-monitoring defaults."""

    name: str = "flood"
    bands: tuple[str, ...] = ("blue", "green", "red", "nir", "swir")
    classes: tuple[ClassSpec, ...] = _FLOOD_CLASSES
    model: ModelSpec = ModelSpec()  # bands only: the ablation in benchmarks/RESULTS.md ("Real water")
    tiling: TilingSpec = TilingSpec()
    training: TrainingSpec = TrainingSpec()
    inference: InferenceSpec = InferenceSpec()
    vectorize: VectorizeSpec = VectorizeSpec()
    flood: FloodSpec | None = FloodSpec()
    cluster: ClusterSpec = ClusterSpec()
    input: InputSpec = InputSpec()

    @model_validator(mode="after")
    def _consistent(self) -> Config:
        names = [c.name for c in self.classes]
        if len(set(names)) != len(names):
            raise ValueError(f"class names must be unique, got {names}")
        if not 2 <= len(names) <= 254:
            raise ValueError(f"need 2 to 254 classes (255 is nodata), got {len(names)}")
        if self.flood is not None and self.flood.water_class not in names:
            raise ValueError(f"flood.water_class={self.flood.water_class!r} is not one of the classes {names}")
        if self.model.indices:
            from unetgeo.indices import INDEX_BANDS

            lower = [b.lower() for b in self.bands]
            for ix in self.model.indices:
                need = [b for b in INDEX_BANDS[ix] if b not in lower]
                if need:
                    raise ValueError(f"model.indices has {ix!r}, which needs the bands {list(INDEX_BANDS[ix])}, "
                                     f"but bands are {list(self.bands)}; name the bands so or drop {ix!r}")
        if self.inference.halo_px > self.tiling.tile_px:
            raise ValueError(f"inference.halo_px={self.inference.halo_px} is larger than tiling.tile_px="
                             f"{self.tiling.tile_px}; a halo is context around a chunk: use at most the tile "
                             f"size (default {InferenceSpec().halo_px})")
        return self

    @property
    def class_names(self) -> list[str]:
        """Class names in id order."""
        return [c.name for c in self.classes]

    def config_hash(self) -> str:
        """sha256 (16 hex chars) of the canonical JSON of this config."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _configs_dirs() -> list[Path]:
    here = Path(__file__).resolve().parent.parent / "configs"
    return [Path.cwd() / "configs", here]


def _read_yaml(path_or_name: str | Path) -> tuple[dict, str]:
    """``(mapping, source path)`` of a YAML config given by path or by name in ``configs/``."""
    import yaml  # local: yaml is only needed when a file is read

    from unetgeo.io.files import is_file, read_text

    p = Path(path_or_name)
    if not p.suffix and not is_file(p):
        for d in _configs_dirs():
            if is_file(d / f"{p.name}.yaml"):
                p = d / f"{p.name}.yaml"
                break
    if not is_file(p):
        raise ConfigError(f"{path_or_name}: config file not found; pass a YAML path or one of configs/*.yaml")
    try:
        data = yaml.safe_load(read_text(p)) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: not valid YAML ({' '.join(str(e).split())})") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a mapping of settings, got {type(data).__name__}")
    return data, str(p)


def _validate(data: dict, source: str, named: Mapping[tuple[str, str], str] | None = None) -> Config:
    """``Config.model_validate(data)``; the first problem becomes a one-line ConfigError naming the
    key (or, for a value given as an option, the option: ``named`` maps ``(section, field)`` to it)."""
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        loc = tuple(str(x) for x in first["loc"])
        where = ".".join(loc) or "(top level)"
        option = (named or {}).get(loc[:2]) if len(loc) >= 2 else None
        if option:
            where = f"{option}={first.get('input')!r} ({where})"
        raise ConfigError(f"{source}: {where}: {first['msg']} ({e.error_count()} problem(s) in all)") from e


def load_config(path_or_name: str | Path | None = None, **overrides) -> Config:
    """Load and validate a YAML config.

    Args:
        path_or_name: a YAML path, or a bare name such as ``"flood"`` looked up in ``configs/``;
            ``None`` gives the embedded defaults.
        overrides: top-level fields replaced after loading (already-validated objects or dicts).

    Raises:
        ConfigError: the file is missing, is not YAML, or fails validation (names the key).
    """
    data, source = _read_yaml(path_or_name) if path_or_name is not None else ({}, "embedded defaults")
    data.update({k: (v.model_dump() if isinstance(v, BaseModel) else v) for k, v in overrides.items()})
    return _validate(data, source)


# Options of the command line and the flows, by name: the (section, field) of Config they set.
OPTIONS: dict[str, tuple[str, str]] = {
    **{name: ("inference", name) for name in ("halo_px", "scales", "flips", "d4", "batch_size", "device", "workers",
                                              "precision")},
    **{name: ("vectorize", name) for name in ("min_area_m2", "simplify_m", "shapefile")},
    "tile_px": ("tiling", "tile_px"),
    "dask_address": ("cluster", "dask_address"),
    "bands": ("input", "bands"),
    "sensor": ("input", "sensor"),
    "nodata": ("input", "nodata"),
    "scale": ("input", "scale"),
    "offset": ("input", "offset"),
    "strict": ("input", "strict"),
}


def build_config(path_or_name: str | Path | None = None, options: Mapping[str, Any] | None = None) -> Config:
    """The effective configuration of a run: embedded defaults < YAML file < options.

    The one place where command-line options and flow parameters meet the config: every
    option in :data:`OPTIONS` that is not None replaces its field, and the result is validated
    as a whole (so ``halo_px=-10``, ``batch_size=0`` or a halo larger than the tile are refused
    with a one-line :class:`ConfigError` naming the option).

    Args:
        path_or_name: YAML path or name in ``configs/``; None for the embedded defaults.
        options: ``{option: value}`` (names of :data:`OPTIONS`; None values are ignored).

    Raises:
        ConfigError: unknown option, bad file, or a value that fails validation.
    """
    data, source = _read_yaml(path_or_name) if path_or_name is not None else ({}, "embedded defaults")
    given = {k: v for k, v in (options or {}).items() if v is not None}
    unknown = sorted(set(given) - set(OPTIONS))
    if unknown:
        raise ConfigError(f"unknown option(s) {unknown}; known: {sorted(OPTIONS)}")
    for name, value in given.items():
        section, field = OPTIONS[name]
        sec = dict(data.get(section) or {})
        sec[field] = list(value) if isinstance(value, tuple) else value
        if name == "scales":
            sec["scale_weights"] = None  # weights belong to the file's scales
        data[section] = sec
    named = {OPTIONS[k]: k for k in given}
    return _validate(data, source if not given else f"{source} + options", named)
