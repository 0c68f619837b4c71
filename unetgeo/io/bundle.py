"""Model bundle files: ``MODEL_DIR/model.safetensors`` (weights) + ``MODEL_DIR/model.json`` (meta).

Both files are written atomically (:func:`unetgeo.io.uri.write_atomic`); the weights go first, so a ``model.json`` is only
ever beside complete weights. Local paths and fsspec URLs are accepted. Also reads a local
encoder-weights file (``.pth`` / ``.pt`` / ``.safetensors``) for ``ModelSpec.encoder_weights``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from unetgeo.errors import ConfigError, ModelBundleError
from unetgeo.io import uri as U

log = logging.getLogger(__name__)

WEIGHTS_NAME = "model.safetensors"
META_NAME = "model.json"


def write_bundle_files(model_dir: str, state_dict: dict[str, Any], meta: dict) -> str:
    """Write the weights then the meta of a bundle; returns the sha256 (hex) of the weights file.

    Args:
        model_dir: folder (created if missing).
        state_dict: ``{name: torch.Tensor}``; tensors are made contiguous CPU copies.
        meta: JSON-able dict written as ``model.json`` (indented, sorted keys kept in insertion order).
    """
    from safetensors.torch import save

    model_dir = str(model_dir).rstrip("/")
    U.makedirs(model_dir)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    blob = save(tensors, metadata={"format": "pt"})
    digest = hashlib.sha256(blob).hexdigest()
    U.write_atomic(U.join(model_dir, WEIGHTS_NAME), blob)
    U.write_atomic(U.join(model_dir, META_NAME), json.dumps(meta, indent=2, allow_nan=False).encode())
    log.info("wrote model bundle %s", model_dir)
    return digest


def weights_digest(state_dict: dict[str, Any]) -> str:
    """sha256 (hex) of the safetensors serialisation of ``state_dict`` (the weights file's hash)."""
    from safetensors.torch import save

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    return hashlib.sha256(save(tensors, metadata={"format": "pt"})).hexdigest()


def read_meta(model_dir: str) -> dict:
    """Read ``MODEL_DIR/model.json``.

    Raises:
        ModelBundleError: the folder or the file is missing, or it is not a JSON object.
    """
    model_dir = str(model_dir).rstrip("/")
    path = U.join(model_dir, META_NAME)
    if not U.exists(model_dir):
        raise ModelBundleError(f"{model_dir}: model directory not found; train one with `unetgeo train --out {model_dir}`")
    if not U.exists(path):
        raise ModelBundleError(
            f"{model_dir}: {META_NAME} is missing; a model directory needs {WEIGHTS_NAME} and {META_NAME} "
            "(written by `unetgeo train`)"
        )
    try:
        with U.open_file(path, "rb") as f:
            meta = json.loads(f.read().decode())
    except (ValueError, UnicodeDecodeError) as e:
        raise ModelBundleError(f"{path}: not valid JSON ({e}); re-export the model with `unetgeo train`") from e
    if not isinstance(meta, dict):
        raise ModelBundleError(f"{path}: must hold a JSON object, got {type(meta).__name__}")
    return meta


def read_weights(model_dir: str) -> dict[str, Any]:
    """Read ``MODEL_DIR/model.safetensors`` into a ``{name: torch.Tensor}`` dict on the CPU.

    Raises:
        ModelBundleError: the file is missing or not a safetensors file.
    """
    from safetensors.torch import load

    model_dir = str(model_dir).rstrip("/")
    path = U.join(model_dir, WEIGHTS_NAME)
    if not U.exists(path):
        raise ModelBundleError(
            f"{model_dir}: {WEIGHTS_NAME} is missing; a model directory needs {WEIGHTS_NAME} and {META_NAME} "
            "(written by `unetgeo train`)"
        )
    with U.open_file(path, "rb") as f:
        blob = f.read()
    try:
        return load(blob)
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
        raise ModelBundleError(f"{path}: not a readable safetensors file ({type(e).__name__}: {e}); re-export the model") from e


def read_weights_file(path: str) -> dict[str, Any]:
    """Read a local encoder-weights file (``.pth``/``.pt`` via ``torch.load(weights_only=True)``,
    or ``.safetensors``) into ``{name: tensor}``. Nothing is ever downloaded.

    Raises:
        ConfigError: the file is missing, has another extension, or holds no tensors.
    """
    import torch

    if U.is_url(path) and not path.startswith("file://"):
        raise ConfigError(f"encoder_weights={path!r}: must be a local .pth or .safetensors file (nothing is downloaded)")
    p = U.local_path(path)
    if not p.exists():
        raise ConfigError(f"encoder_weights={path!r}: file not found; give a local .pth/.safetensors file or null")
    suffix = p.suffix.lower()
    try:
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(p))
        elif suffix in (".pth", ".pt", ".bin"):
            sd = torch.load(str(p), map_location="cpu", weights_only=True)
        else:
            raise ConfigError(f"encoder_weights={path!r}: unknown extension {suffix!r}; use a .pth or .safetensors file")
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001
        raise ConfigError(f"encoder_weights={path!r}: cannot be read ({type(e).__name__}: {e})") from e
    for key in ("state_dict", "model", "model_state"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not any(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ConfigError(f"encoder_weights={path!r}: holds no tensors; expected an encoder state_dict")
    return {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}
