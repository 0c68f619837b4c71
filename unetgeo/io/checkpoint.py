"""Training checkpoints without pickle: ``checkpoint.safetensors`` (tensors) + ``checkpoint.json``.

``MODEL_DIR/checkpoint.safetensors`` holds every tensor (model, best weights, optimizer moments,
torch RNG state) under flat names; ``MODEL_DIR/checkpoint.json`` holds the scalar state (epoch,
step, history, RNG states as plain ints, ...) and the sha256 of the tensor file, so a pair from
two different saves is refused. Both are written atomically, the JSON last: a JSON file is only
ever beside the tensors it describes. Nothing here unpickles: an old ``checkpoint.pt`` is
ignored with a warning (a crafted pickle runs code when loaded).

Also reads the header of any safetensors file (names, dtypes, shapes) without its data.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np

from unetgeo.errors import InputError, UnetgeoError
from unetgeo.io import uri as U

log = logging.getLogger(__name__)

TENSORS_NAME = "checkpoint.safetensors"
STATE_NAME = "checkpoint.json"
LEGACY_NAME = "checkpoint.pt"
FORMAT = "unetgeo-checkpoint/1"
MAX_HEADER_BYTES = 100 << 20


def to_jsonable(obj: Any) -> Any:
    """Plain JSON data from nested dicts/lists/tuples/numpy scalars and arrays; NaN and ±inf become None."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(float(obj)) else None
    if obj is None or isinstance(obj, str):
        return obj
    raise TypeError(f"checkpoint state holds a {type(obj).__name__}, which JSON cannot store")


def write_checkpoint(model_dir: str, tensors: Mapping[str, Any], state: Mapping[str, Any]) -> None:
    """Write ``checkpoint.safetensors`` then ``checkpoint.json`` into ``model_dir`` (each atomically).

    Args:
        model_dir: the model folder (path or URL).
        tensors: ``{name: torch.Tensor}`` (any device; saved as contiguous CPU copies).
        state: JSON-able scalar state (tuples become lists, non-finite floats None).
    """
    from safetensors.torch import save

    blob = save({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, metadata={"format": FORMAT})
    doc = {"format": FORMAT, "tensors_sha256": hashlib.sha256(blob).hexdigest(), "state": to_jsonable(state)}
    U.write_atomic(U.join(model_dir, TENSORS_NAME), blob)
    U.write_atomic(U.join(model_dir, STATE_NAME), json.dumps(doc, allow_nan=False))


def warn_legacy(model_dir: str) -> None:
    """Log a warning when an old pickled ``checkpoint.pt`` lies in ``model_dir`` (it is never loaded)."""
    legacy = U.join(model_dir, LEGACY_NAME)
    if U.exists(legacy):
        log.warning(
            "%s: old pickled checkpoint ignored (never unpickled: loading it could run code); "
            "delete it; checkpoints are now %s + %s", legacy, TENSORS_NAME, STATE_NAME,
        )


def _one_line(e: BaseException) -> str:
    return " ".join(f"{type(e).__name__}: {e}".split())[:300]


def _read_state(state_uri: str, fix: str) -> dict:
    try:
        with U.open_file(state_uri, "rb") as f:
            doc = json.loads(f.read().decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise InputError(f"{state_uri}: checkpoint state is not valid JSON ({_one_line(e)}); {fix}") from e
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("state"), dict):
        got = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise InputError(f"{state_uri}: not a {FORMAT} checkpoint (format {got!r}); {fix}")
    return doc


def read_checkpoint(model_dir: str) -> tuple[dict[str, Any], dict] | None:
    """Read a checkpoint: ``({name: CPU torch.Tensor}, state dict)``, or None when there is none.

    Raises:
        InputError: ``checkpoint.json`` is not valid JSON or not a checkpoint, the tensor file is
            missing, unreadable or from another save (one line, names the file and the fix).
    """
    from safetensors.torch import load

    warn_legacy(model_dir)
    state_uri, tensors_uri = U.join(model_dir, STATE_NAME), U.join(model_dir, TENSORS_NAME)
    if not U.exists(state_uri):
        return None
    fix = f"delete {state_uri} and {tensors_uri} to start over"
    doc = _read_state(state_uri, fix)
    if not U.exists(tensors_uri):
        raise InputError(f"{tensors_uri}: missing beside {state_uri}; {fix}")
    with U.open_file(tensors_uri, "rb") as f:
        blob = f.read()
    if hashlib.sha256(blob).hexdigest() != doc.get("tensors_sha256"):
        raise InputError(f"{tensors_uri}: sha256 differs from the one {state_uri} records (corrupted or from another save); {fix}")
    try:
        tensors = load(blob)
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
        raise InputError(f"{tensors_uri}: not a readable safetensors file ({_one_line(e)}); {fix}") from e
    return tensors, doc["state"]


def safetensors_header(uri: str, error: type[UnetgeoError] = InputError) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Tensor names, dtypes and shapes of a safetensors file, read from its header only.

    The file size must equal ``8 + header + data`` (a truncated file is refused).

    Returns:
        ``{name: (dtype such as 'F32', shape)}`` (the ``__metadata__`` entry left out).

    Raises:
        error: missing file, bad header, or a size that does not match the header.
    """
    if not U.exists(uri):
        raise error(f"{uri}: file is missing")
    size = int(U.fingerprint(uri)["size"])
    with U.open_file(uri, "rb") as f:
        head = f.read(8)
        n = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
        if not 0 < n <= min(MAX_HEADER_BYTES, size - 8):
            raise error(f"{uri}: not a safetensors file ({size} bytes, header length {n}); re-export it")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
        out = {k: (str(v["dtype"]), tuple(int(s) for s in v["shape"])) for k, v in header.items() if k != "__metadata__"}
        end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    except (ValueError, UnicodeDecodeError, KeyError, TypeError, IndexError) as e:
        raise error(f"{uri}: not a safetensors file (bad header: {_one_line(e)}); re-export it") from e
    if 8 + n + end != size:
        raise error(f"{uri}: {size} bytes but its header describes {8 + n + end} (truncated or padded); re-export it")
    return out
