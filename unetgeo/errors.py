"""Error classes. Every message names the input, the value and the fix.

Each class also inherits a builtin so callers can treat them generically: flows retry
``OSError`` (I/O) and never retry ``ValueError`` (bad input). The CLI maps every
``UnetgeoError`` to exit code 2 with a one-line message, anything else to exit code 1.
"""

from __future__ import annotations


class UnetgeoError(Exception):
    """Base class of all errors the user can fix by changing the input or the config."""

    exit_code: int = 2

    def one_line(self) -> str:
        """The message folded onto one line, as the CLI prints it."""
        return " ".join(str(self).split())


class InputError(UnetgeoError, ValueError):
    """An input file exists and was read, but its content cannot be used."""


class SceneReadError(UnetgeoError, OSError):
    """A scene or raster could not be opened or read (missing, not a GeoTIFF, unreadable)."""


class GridMismatchError(UnetgeoError, ValueError):
    """Two inputs that must share a pixel grid (CRS, transform, size) do not."""


class ConfigError(UnetgeoError, ValueError):
    """A YAML config is missing, malformed or fails validation."""


class ModelBundleError(UnetgeoError, ValueError):
    """A model directory is missing files or holds an inconsistent model.json."""


class BandMismatchError(UnetgeoError, ValueError):
    """A scene's bands do not match the bands a model was trained on."""


class LabelError(UnetgeoError, ValueError):
    """Labels (raster, vector or RGB masks) cannot be aligned with the imagery."""


class StoreError(UnetgeoError, OSError):
    """A Zarr store is missing, incomplete, or was written by an incompatible run."""
