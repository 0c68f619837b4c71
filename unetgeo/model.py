"""Segmentation networks, model bundles and input normalisation.

A model bundle (``MODEL_DIR``) is ``model.safetensors`` (weights) plus ``model.json`` (meta)::

    {"arch", "encoder", "encoder_depth", "decoder_channels", "in_bands": [names in order],
     "norm": {"mean": [...], "std": [...]}, "classes": [{"name", "color"}], "tile_px",
     "stride": 2**encoder_depth, "metrics", "training", "unetgeo_version", "model_id"}

:func:`bundle_meta` is the one builder of that dict (training, tests and benchmarks use it);
:func:`check_bundle` validates a whole folder without reading the weights' data.

Networks come from segmentation-models-pytorch with random initialisation; an encoder is only
ever initialised from a local file (``ModelSpec.encoder_weights``), never downloaded.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from unetgeo.config import ClassSpec, ModelSpec
from unetgeo.errors import BandMismatchError, ConfigError, ModelBundleError
from unetgeo.indices import index_positions, normalized_differences

log = logging.getLogger(__name__)

REQUIRED_META = ("arch", "encoder", "encoder_depth", "in_bands", "norm", "classes", "tile_px")
DEFAULT_COLOR = "#808080"
_HEX = re.compile(r"^#[0-9a-fA-F]{6}$")


def build_model(spec: ModelSpec, in_channels: int, n_classes: int):
    """Build a segmentation network ``(B, in_channels, H, W) -> logits (B, n_classes, H, W)``.

    ``H`` and ``W`` must be multiples of ``2**spec.encoder_depth``.

    Args:
        spec: architecture, encoder, depth, decoder widths, optional local encoder weights.
        in_channels: number of input bands.
        n_classes: number of output classes.

    Raises:
        ConfigError: unknown architecture/encoder, decoder widths that do not fit the depth, or an
            unreadable encoder-weights file.
    """
    import segmentation_models_pytorch as smp

    kwargs: dict[str, Any] = {"encoder_depth": spec.encoder_depth}
    if spec.decoder_channels is not None:
        if spec.arch.lower() in ("unet", "unetplusplus", "manet") and len(spec.decoder_channels) != spec.encoder_depth:
            raise ConfigError(
                f"model.decoder_channels={list(spec.decoder_channels)} has {len(spec.decoder_channels)} widths but "
                f"encoder_depth={spec.encoder_depth}; give one width per encoder stage, e.g. "
                f"{[2 ** (8 - i) for i in range(spec.encoder_depth)]}"
            )
        kwargs["decoder_channels"] = tuple(spec.decoder_channels)
    try:
        model = smp.create_model(
            spec.arch,
            encoder_name=spec.encoder,
            encoder_weights=None,
            in_channels=int(in_channels),
            classes=int(n_classes),
            **kwargs,
        )
    except KeyError as e:
        raise ConfigError(f"model: {' '.join(str(e).split())}") from e
    except (TypeError, ValueError) as e:
        raise ConfigError(f"model: arch={spec.arch!r} encoder={spec.encoder!r} cannot be built ({e})") from e
    _drop_unused_stages(model, spec.encoder_depth)
    if spec.encoder_weights:
        load_encoder_weights(model, spec.encoder_weights, in_channels)
    return model


def _drop_unused_stages(model, encoder_depth: int) -> None:
    """Remove ResNet stages a shallow encoder never runs (``layer{k}`` for ``k >= depth``).

    smp keeps ``layer4`` in a depth-4 ResNet encoder although ``forward`` skips it: 8.4 M dead
    parameters in resnet18 (75 % of the bundle). Both training and :func:`load_bundle` build
    through here, so saved and loaded state dicts agree.
    """
    import torch.nn as nn

    enc = getattr(model, "encoder", None)
    if enc is None or type(enc).__name__ != "ResNetEncoder":
        return
    for k in range(max(encoder_depth, 1), 5):
        if isinstance(getattr(enc, f"layer{k}", None), nn.Module):
            setattr(enc, f"layer{k}", nn.Identity())


def load_encoder_weights(model, path: str, in_channels: int) -> None:
    """Load a local encoder state_dict into ``model.encoder``.

    Keys may carry an ``encoder.`` prefix (a whole smp model) or none (a bare backbone); a
    classification head (``fc.*``) is dropped. A first convolution trained on 3 bands is adapted
    to ``in_channels`` the way smp does it (channels cycled, scaled by ``3 / in_channels``).

    Raises:
        ConfigError: the file is unreadable or none of its tensors fit the encoder.
    """
    import torch

    from unetgeo.io.bundle import read_weights_file

    sd = read_weights_file(path)
    if any(k.startswith("encoder.") for k in sd):
        sd = {k[len("encoder.") :]: v for k, v in sd.items() if k.startswith("encoder.")}
    target = model.encoder.state_dict()
    out: dict[str, Any] = {}
    for k, v in sd.items():
        if k not in target:
            continue
        want = target[k]
        if v.shape == want.shape:
            out[k] = v
        elif v.ndim == 4 and want.ndim == 4 and v.shape[0] == want.shape[0] and v.shape[2:] == want.shape[2:]:
            src = v.shape[1]
            new = torch.empty_like(want)
            for i in range(want.shape[1]):
                new[:, i] = v[:, i % src]
            out[k] = new * (src / want.shape[1])
    if not out:
        raise ConfigError(
            f"encoder_weights={path!r}: none of its {len(sd)} tensors fit encoder {type(model.encoder).__name__}; "
            "give weights of the same encoder (model.encoder)"
        )
    missing = [k for k in target if k not in out and not k.endswith("num_batches_tracked")]
    model.encoder.load_state_dict({**target, **out}, strict=True)
    log.info("loaded %d encoder tensors from %s (%d left at random init)", len(out), path, len(missing))


@dataclass(frozen=True)
class ModelMeta:
    """Read-only view of ``model.json``.

    Attributes:
        in_bands: band names in the order the model expects them.
        mean, std: per-band normalisation, in ``in_bands`` order (scene units).
        indices: spectral indices appended as input channels (``model.json`` ``input.indices``).
        class_names, class_colors: class names and ``'#rrggbb'`` colours in id order.
        stride: input height/width must be multiples of this (``2**encoder_depth``).
        tile_px: tile size used in training.
        model_id: identifier recorded in outputs.
        raw: the whole ``model.json`` dict.
    """

    arch: str
    encoder: str
    encoder_depth: int
    decoder_channels: tuple[int, ...] | None
    in_bands: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...]
    class_colors: tuple[str, ...]
    stride: int
    tile_px: int
    model_id: str
    raw: Mapping[str, Any] = field(repr=False, compare=False)
    indices: tuple[str, ...] = ()

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def in_channels(self) -> int:
        """Input channels of the network: the bands, then the spectral indices (:mod:`unetgeo.indices`)."""
        return len(self.in_bands) + len(self.indices)

    @property
    def spec(self) -> ModelSpec:
        """The :class:`ModelSpec` that rebuilds this network (without encoder weights)."""
        return ModelSpec(
            arch=self.arch,
            encoder=self.encoder,
            encoder_depth=self.encoder_depth,
            decoder_channels=self.decoder_channels,
        )

    @classmethod
    def from_dict(cls, meta: Mapping[str, Any], where: str = "model.json") -> ModelMeta:
        """Validate a ``model.json`` dict.

        Raises:
            ModelBundleError: a key is missing or inconsistent (names the key and ``where``).
        """
        missing = [k for k in REQUIRED_META if k not in meta]
        if missing:
            raise ModelBundleError(f"{where}: model.json lacks {missing}; re-export the model with `unetgeo train`")
        try:
            bands = tuple(str(b) for b in meta["in_bands"])
            mean = tuple(float(v) for v in meta["norm"]["mean"])
            std = tuple(float(v) for v in meta["norm"]["std"])
            names = tuple(str(c["name"]) for c in meta["classes"])
            colors = tuple(str(c.get("color", "#808080")) for c in meta["classes"])
            depth = int(meta["encoder_depth"])
            dec = meta.get("decoder_channels")
            dec_t = tuple(int(v) for v in dec) if dec else None
            stride = int(meta.get("stride", 2**depth))
            tile_px = int(meta["tile_px"])
            indices = tuple(str(v) for v in (meta.get("input") or {}).get("indices") or ())
        except (TypeError, KeyError, ValueError, AttributeError) as e:
            raise ModelBundleError(f"{where}: malformed model.json ({type(e).__name__}: {e}); re-export the model") from e
        if not (len(bands) == len(mean) == len(std)):
            raise ModelBundleError(
                f"{where}: in_bands has {len(bands)} names but norm has {len(mean)} means and {len(std)} stds"
            )
        if any(s <= 0 for s in std):
            raise ModelBundleError(f"{where}: norm.std must be > 0 for every band, got {list(std)}")
        if len(names) < 2:
            raise ModelBundleError(f"{where}: needs at least 2 classes, got {list(names)}")
        try:
            index_positions(bands, indices, where)
        except ConfigError as e:
            raise ModelBundleError(e.one_line()) from e
        return cls(
            arch=str(meta["arch"]),
            encoder=str(meta["encoder"]),
            encoder_depth=depth,
            decoder_channels=dec_t,
            in_bands=bands,
            mean=mean,
            std=std,
            class_names=names,
            class_colors=colors,
            stride=stride,
            tile_px=tile_px,
            model_id=str(meta.get("model_id", "")),
            raw=dict(meta),
            indices=indices,
        )


def _class_entry(c: ClassSpec | Mapping[str, Any] | str) -> dict:
    if isinstance(c, ClassSpec):
        return {"name": c.name, "color": c.color, **({"rgb": list(c.rgb)} if c.rgb else {})}
    if isinstance(c, str):
        return {"name": c, "color": DEFAULT_COLOR}
    out = {"color": DEFAULT_COLOR, **dict(c)}
    if "rgb" in out and out["rgb"] is not None:
        out["rgb"] = [int(v) for v in out["rgb"]]
    return out


def bundle_meta(
    spec: ModelSpec,
    in_bands: Sequence[str],
    classes: Sequence[ClassSpec | Mapping[str, Any] | str],
    *,
    mean: Sequence[float],
    std: Sequence[float],
    tile_px: int,
    name: str = "model",
    metrics: Mapping[str, Any] | None = None,
    training: Mapping[str, Any] | None = None,
    summary: Mapping[str, Any] | None = None,
    indices: Sequence[str] = (),
) -> dict:
    """The ``model.json`` dict of a bundle (the one builder; :func:`save_bundle` fills in the id).

    Args:
        spec: architecture, encoder, depth, decoder widths.
        in_bands: band names in model input order.
        classes: in id order; :class:`ClassSpec`, ``{"name", "color", "rgb"?}`` dicts or bare
            names (colour ``#808080``).
        mean, std: per-band normalisation in ``in_bands`` order (scene units).
        tile_px: tile size (px) the model was trained for.
        name: model name; the ``model_id`` becomes ``<name>-<12 hex of the weights' sha256>``.
        metrics: validation metrics (``ConfusionMatrix.as_dict``); ``{}`` if None.
        training: the training config dump; ``{}`` if None.
        summary: ``training_summary`` (epochs, steps, timings, history); left out if None.
        indices: spectral indices appended as input channels (:mod:`unetgeo.indices`).

    Raises:
        ModelBundleError: the dict would not validate (names the model and the problem).
    """
    meta: dict[str, Any] = {
        "name": str(name),
        "arch": spec.arch,
        "encoder": spec.encoder,
        "encoder_depth": int(spec.encoder_depth),
        "decoder_channels": [int(v) for v in spec.decoder_channels] if spec.decoder_channels else None,
        "in_bands": [str(b) for b in in_bands],
        "norm": {"mean": [float(v) for v in mean], "std": [float(v) for v in std]},
        "input": {"indices": [str(v) for v in indices]},
        "classes": [_class_entry(c) for c in classes],
        "tile_px": int(tile_px),
        "stride": 2 ** int(spec.encoder_depth),
        "metrics": dict(metrics or {}),
        "training": dict(training or {}),
    }
    if summary is not None:
        meta["training_summary"] = dict(summary)
    ModelMeta.from_dict(meta, where=f"model.json of {name!r}")
    return meta


def save_bundle(model_dir: str, model, meta: dict) -> None:
    """Write ``model.safetensors`` and ``model.json`` into ``model_dir`` (atomic per file).

    Missing ``stride``, ``unetgeo_version`` and ``model_id`` are filled in (``model_id`` =
    ``<name>-<first 12 hex of the weights' sha256>``, ``name`` from ``meta['name']`` or
    ``training.name``, else ``"model"``).

    Args:
        model_dir: output folder (path or URL).
        model: the network (its ``state_dict`` is saved).
        meta: model.json content; must hold the keys of :data:`REQUIRED_META`.

    Raises:
        ModelBundleError: ``meta`` is incomplete.
    """
    from unetgeo import __version__
    from unetgeo.io.bundle import weights_digest, write_bundle_files

    meta = dict(meta)
    meta.setdefault("stride", 2 ** int(meta.get("encoder_depth", 5)))
    meta.setdefault("unetgeo_version", __version__)
    state = model.state_dict()
    if not meta.get("model_id"):
        training = meta.get("training") or {}
        name = meta.get("name") or (training.get("name") if isinstance(training, dict) else None) or "model"
        meta["model_id"] = f"{name}-{weights_digest(state)[:12]}"
    ModelMeta.from_dict(meta, where=str(model_dir))
    write_bundle_files(str(model_dir), state, meta)


def load_bundle(model_dir: str, device: str = "cpu"):
    """Load a model bundle: ``(network in eval mode on device, ModelMeta)``.

    Raises:
        ModelBundleError: a file is missing, unreadable, or the weights do not fit the
            architecture in ``model.json`` (names the directory and the file).
    """
    from unetgeo.io.bundle import WEIGHTS_NAME, read_meta, read_weights

    meta = ModelMeta.from_dict(read_meta(model_dir), where=f"{model_dir}/model.json")
    state = read_weights(model_dir)
    try:
        model = build_model(meta.spec, meta.in_channels, meta.n_classes)
    except ConfigError as e:
        raise ModelBundleError(f"{model_dir}/model.json: {e}") from e
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = " ".join(str(e).split())[:300]
        raise ModelBundleError(
            f"{model_dir}/{WEIGHTS_NAME}: weights do not fit {meta.arch}/{meta.encoder} depth {meta.encoder_depth} "
            f"with {meta.in_channels} input channels and {meta.n_classes} classes ({first}); the two files come from different models"
        ) from e
    model.eval()
    return model.to(device), meta


def _check_consistent(meta: ModelMeta, where: str) -> None:
    """Cross-field checks of a parsed ``model.json`` (raises :class:`ModelBundleError`)."""
    problems = []
    if meta.stride != 2**meta.encoder_depth:
        problems.append(f"stride={meta.stride} but encoder_depth={meta.encoder_depth} needs {2**meta.encoder_depth}")
    if meta.tile_px <= 0:
        problems.append(f"tile_px={meta.tile_px} must be > 0")
    for what, names in (("in_bands", meta.in_bands), ("class names", meta.class_names)):
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            problems.append(f"{what} repeat {dup}")
    bad = [c for c in meta.class_colors if not _HEX.match(c)]
    if bad:
        problems.append(f"class colours {bad} are not '#rrggbb'")
    if problems:
        raise ModelBundleError(f"{where}: inconsistent model.json: {'; '.join(problems)}; re-export the model")


def _expected_tensors(meta: ModelMeta, where: str) -> dict[str, tuple[bool, tuple[int, ...]]]:
    """``{name: (is floating point, shape)}`` of the network ``model.json`` describes, built on the meta device."""
    import torch

    try:
        with torch.device("meta"):
            net = build_model(meta.spec, meta.in_channels, meta.n_classes)
    except ConfigError as e:
        raise ModelBundleError(f"{where}: {e.one_line()}") from e
    return {k: (v.is_floating_point(), tuple(v.shape)) for k, v in net.state_dict().items()}


def check_bundle(model_dir: str) -> ModelMeta:
    """Validate a model folder completely without loading the network's weights (< 1 s).

    Checks that ``model.json`` parses and is consistent (keys, band/class lists, stride), that
    ``model.safetensors`` exists, is complete (its size matches its header) and holds exactly
    the tensors, with the shapes and kinds (float/int), of the architecture ``model.json`` names.
    The network is built on the ``meta`` device (no memory, ~30 ms for the default U-Net).

    Returns:
        The bundle's :class:`ModelMeta`.

    Raises:
        ModelBundleError: one line naming the file and the problem.
    """
    from unetgeo.io import uri as U
    from unetgeo.io.bundle import WEIGHTS_NAME, read_meta
    from unetgeo.io.checkpoint import safetensors_header

    model_dir = str(model_dir).rstrip("/")
    where = f"{model_dir}/model.json"
    meta = ModelMeta.from_dict(read_meta(model_dir), where=where)
    _check_consistent(meta, where)
    wuri = U.join(model_dir, WEIGHTS_NAME)
    if not U.exists(wuri):
        raise ModelBundleError(f"{model_dir}: {WEIGHTS_NAME} is missing; a model directory needs {WEIGHTS_NAME} and model.json (written by `unetgeo train`)")
    got = safetensors_header(wuri, error=ModelBundleError)
    want = _expected_tensors(meta, where)
    missing = [k for k in want if k not in got]
    extra = [k for k in got if k not in want]
    wrong = [
        f"{k} {list(got[k][1])} (want {list(want[k][1])})"
        for k in want
        if k in got and (got[k][1] != want[k][1] or got[k][0].startswith(("F", "BF")) != want[k][0])
    ]
    if missing or extra or wrong:
        parts = [f"{len(v)} {label} (e.g. {v[0]})" for label, v in (("missing", missing), ("unexpected", extra), ("of another shape or kind", wrong)) if v]
        raise ModelBundleError(
            f"{wuri}: weights do not fit {meta.arch}/{meta.encoder} depth {meta.encoder_depth} with {meta.in_channels} "
            f"input channels and {meta.n_classes} classes: {', '.join(parts)}; model.json and the weights come from different models"
        )
    return meta


_GENERIC = "b{}"


def check_bands(meta: ModelMeta, scene_band_names: Sequence[str], scene_uri: str, sensor: str | None = None) -> None:
    """Refuse a scene whose bands differ from the model's.

    Names are compared as canonical names (:mod:`unetgeo.bands`: ``B02`` of Sentinel-2 is
    ``blue``, ``SR_B5`` of Landsat 8 is ``nir``…), case-insensitively and in order. A scene
    without band descriptions (names ``b1..bN``) with the model's band count is accepted with a
    warning (its band order is assumed to be the model's).

    Args:
        sensor: band table of the scene's codes (``s2``, ``landsat8``…); None: guessed from the names.

    Raises:
        BandMismatchError: naming the scene's bands (with their canonical names) and the model's.
    """
    from unetgeo.bands import canonical_names, offered

    scene = [str(b) for b in scene_band_names]
    model = list(meta.in_bands)
    generic = [_GENERIC.format(i + 1) for i in range(len(scene))]
    if scene == generic and len(scene) == len(model):
        log.warning("%s has no band names; assuming its %d bands are the model's %s in order", scene_uri, len(scene), model)
        return
    canon, want = canonical_names(scene, sensor), canonical_names(model, sensor)
    if canon == want:
        return
    if len(scene) != len(model):
        why = f"it has {len(scene)} bands, the model needs {len(model)}"
    elif sorted(canon) == sorted(want):
        why = "same bands in another order"
    else:
        why = "different bands"
    raise BandMismatchError(
        f"{scene_uri}: scene bands {scene} (offered: {offered(scene, canon)}) do not match the bands {model} of model "
        f"{meta.model_id or '?'} ({why}); select them in the model's order with --bands (names, codes like "
        "B02 or 1-based numbers, e.g. --bands B2,B3,B4,B8,B11), or use a model trained on these bands"
    )


def normalise(x: np.ndarray, meta, valid: np.ndarray | None = None) -> np.ndarray:
    """Normalise a window per band: ``(x - mean) / std``, float32, then append the spectral indices.

    Args:
        x: ``(bands, h, w)`` in scene units, any numeric dtype, bands in ``meta.in_bands`` order.
        meta: anything with per-band ``mean`` and ``std`` sequences, ``in_bands`` and optional
            ``indices`` (a :class:`ModelMeta` or a training ``Norm``).
        valid: optional ``(h, w)`` bool; False pixels become 0 (the normalised mean).

    Returns:
        float32 ``(bands + len(indices), h, w)``; pixels with a non-finite band and invalid pixels
        are 0 in every channel.
    """
    mean = np.asarray(meta.mean, dtype=np.float32)
    std = np.asarray(meta.std, dtype=np.float32)
    if x.shape[0] != mean.shape[0]:
        raise BandMismatchError(f"window has {x.shape[0]} bands but the normalisation has {mean.shape[0]}")
    indices = tuple(getattr(meta, "indices", ()) or ())
    nb = x.shape[0]
    out = np.empty((nb + len(indices), *x.shape[1:]), dtype=np.float32)
    out[:nb] = x
    out[:nb] -= mean[:, None, None]
    out[:nb] /= std[:, None, None]
    if indices:
        out[nb:] = normalized_differences(x, index_positions(meta.in_bands, indices, "model"))
    bad = ~np.isfinite(out[:nb]).all(axis=0)
    if valid is not None:
        bad |= ~np.asarray(valid, dtype=bool)
    if bad.any():
        out[:, bad] = 0.0
    return out
