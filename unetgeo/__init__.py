"""unetgeo: large remote-sensing scenes to georeferenced maps with U-Nets."""

import os
from functools import cache

# Arrow allocates from the C library's malloc, not its bundled jemalloc, unless the user chose a pool:
# jemalloc kept every freed table copy and Parquet page buffer resident (vectorize with GeoParquet:
# +30 MiB at 8192², +50 MiB at 32768²), where malloc's freed memory goes back to the system.
# Read when Arrow first allocates, so it must be set before any pyarrow use; a no-op after.
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")


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
