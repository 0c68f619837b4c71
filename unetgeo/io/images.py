"""PNG writing for reports (training report, quicklooks), atomically (:func:`unetgeo.io.uri.write_atomic`)."""

from __future__ import annotations

import io
import logging

import numpy as np

from unetgeo.io import uri as U

log = logging.getLogger(__name__)


def _publish(uri: str, blob: bytes) -> str:
    U.write_atomic(uri, blob)
    log.info("wrote %s", uri)
    return str(uri)


def save_figure(fig, uri: str, *, dpi: int = 110) -> str:
    """Save a matplotlib figure as PNG at ``uri`` (path or URL) and close it.

    Returns:
        ``uri``.
    """
    import sys

    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=dpi)
    finally:
        if "matplotlib.pyplot" in sys.modules:  # a pyplot-managed figure: release it
            sys.modules["matplotlib.pyplot"].close(fig)
    return _publish(uri, buf.getvalue())


def write_png(uri: str, rgb: np.ndarray) -> str:
    """Write an ``(h, w, 3|4)`` or ``(h, w)`` uint8 array as PNG.

    Returns:
        ``uri``.
    """
    from PIL import Image

    arr = np.asarray(rgb)
    if arr.dtype != np.uint8:
        raise ValueError(f"write_png needs uint8 pixels, got {arr.dtype}; scale to 0..255 first")
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", optimize=False)
    return _publish(uri, buf.getvalue())


def figure(*, figsize: tuple[float, float] = (10, 6), nrows: int = 1, ncols: int = 1):
    """A matplotlib figure on the non-interactive Agg backend (no display needed): ``(fig, axes)``."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    axes = fig.subplots(nrows, ncols)
    return fig, axes
