"""Validated configuration, loaded from ``configs/*.yaml``.

Every model is frozen and forbids unknown keys, so a typo in a YAML file is an error that names
the key, not a silently ignored setting. The defaults of :class:`Config` are the embedded
flood-monitoring defaults that ``unetgeo demo`` and ``unetgeo run`` use without any file.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Literal

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
        default=None, description="for vector labels: attribute value -> class id"
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
    shapefile: bool = True
    parquet: bool = False


class FloodSpec(_Frozen):
    """Flood-monitoring settings: which class is water, how small a flood patch may be."""

    water_class: str = "water"
    min_area_m2: float = Field(default=0.0, ge=0)


_FLOOD_CLASSES = (
    ClassSpec(name="background", color="#d9d9d9"),
    ClassSpec(name="water", color="#1f78b4"),
)


class Config(_Frozen):
    """The whole configuration. Its defaults are the embedded flood-monitoring defaults."""

    name: str = "flood"
    bands: tuple[str, ...] = ("blue", "green", "red", "nir", "swir")
    classes: tuple[ClassSpec, ...] = _FLOOD_CLASSES
    model: ModelSpec = ModelSpec()
    tiling: TilingSpec = TilingSpec()
    training: TrainingSpec = TrainingSpec()
    inference: InferenceSpec = InferenceSpec()
    vectorize: VectorizeSpec = VectorizeSpec()
    flood: FloodSpec | None = FloodSpec()

    @model_validator(mode="after")
    def _consistent(self) -> Config:
        names = [c.name for c in self.classes]
        if len(set(names)) != len(names):
            raise ValueError(f"class names must be unique, got {names}")
        if not 2 <= len(names) <= 254:
            raise ValueError(f"need 2 to 254 classes (255 is nodata), got {len(names)}")
        if self.flood is not None and self.flood.water_class not in names:
            raise ValueError(f"flood.water_class={self.flood.water_class!r} is not one of the classes {names}")
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


def load_config(path_or_name: str | Path | None = None, **overrides) -> Config:
    """Load and validate a YAML config.

    Args:
        path_or_name: a YAML path, or a bare name such as ``"flood"`` looked up in ``configs/``;
            ``None`` gives the embedded defaults.
        overrides: top-level fields replaced after loading (already-validated objects or dicts).

    Raises:
        ConfigError: the file is missing, is not YAML, or fails validation (names the key).
    """
    import yaml  # local: yaml is only needed when a file is read

    data: dict = {}
    if path_or_name is not None:
        p = Path(path_or_name)
        if not p.suffix and not p.exists():
            for d in _configs_dirs():
                if (d / f"{p.name}.yaml").exists():
                    p = d / f"{p.name}.yaml"
                    break
        if not p.exists():
            raise ConfigError(f"{path_or_name}: config file not found; pass a YAML path or one of configs/*.yaml")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML ({' '.join(str(e).split())})") from e
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: the top level must be a mapping of settings, got {type(data).__name__}")
        source = str(p)
    else:
        source = "embedded defaults"
    data.update({k: (v.model_dump() if isinstance(v, BaseModel) else v) for k, v in overrides.items()})
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(str(x) for x in first["loc"]) or "(top level)"
        raise ConfigError(f"{source}: {loc}: {first['msg']} ({e.error_count()} problem(s) in all)") from e
