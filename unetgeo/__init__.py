"""unetgeo: large remote-sensing scenes to georeferenced maps with U-Nets."""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("unetgeo")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

