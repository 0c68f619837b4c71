"""unetgeo: large remote-sensing scenes to georeferenced maps with U-Nets."""

from functools import cache


@cache
def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("unetgeo")
    except PackageNotFoundError:  # running from a source tree without installation
        return "0.0.0+unknown"


def __getattr__(name: str) -> str:
    """``unetgeo.__version__``, read from the installed metadata on first use (importlib.metadata costs 60 ms)."""
    if name == "__version__":
        return _version()
    raise AttributeError(f"module 'unetgeo' has no attribute {name!r}")
