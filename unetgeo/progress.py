"""Progress bars for the command line: tqdm when asked for, a silent stand-in otherwise."""

from __future__ import annotations

from typing import Any, Protocol


class ProgressBar(Protocol):
    """What the stages use of a bar: ``update(n)`` and ``close()``."""

    def update(self, n: int = 1) -> Any: ...

    def close(self) -> None: ...


class _NoProgress:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(enabled: bool, total: int, desc: str, unit: str = "chunk") -> ProgressBar:
    """A tqdm bar of ``total`` steps, or a silent stand-in (tqdm not even imported) when disabled."""
    if not enabled:
        return _NoProgress()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True)
