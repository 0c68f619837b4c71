"""albumentations transforms for normalised multi-band chips (imported only when training augments).

albumentations' own pixel transforms assume images in [0, 1] or uint8 and clip to that range, which
would destroy normalised data (mean 0, std 1 per band). These transforms work on the normalised
chip directly, or (:class:`UnitSpace`) map some channels to the unit space ``(x + 4) / 8`` around an
albumentations transform and back (-4 standard deviations is taken as the scene's zero).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
from albumentations.core.transforms_interface import ImageOnlyTransform

UNIT_OFFSET = np.float32(4.0)


class UnitSpace(ImageOnlyTransform):
    """Run an albumentations pixel transform on some channels in the unit space ``(x + 4) / 8``."""

    def __init__(self, inner: Any, channels: tuple[int, ...] | None = None, p: float = 0.5):
        super().__init__(p=p)
        self.inner, self.channels = inner, channels

    def get_params_dependent_on_data(self, params: dict, data: dict) -> dict:
        return {"inner_seed": int(self.random_generator.integers(2**31))}

    def apply(self, img: np.ndarray, inner_seed: int = 0, **params: Any) -> np.ndarray:
        k = UNIT_OFFSET
        ch = list(self.channels) if self.channels is not None else list(range(img.shape[-1]))
        if max(ch) >= img.shape[-1]:
            return img
        u = np.clip((img[..., ch] + k) / (2 * k), 0.0, 1.0).astype(np.float32)
        self.inner.set_random_seed(inner_seed)
        v = self.inner(image=np.ascontiguousarray(u))["image"]
        out = img.copy()
        out[..., ch] = v * (2 * k) - k
        return out

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("inner", "channels")


class _PerBand(ImageOnlyTransform):
    """A random draw per chip (:meth:`draw`), combined with the image by :meth:`combine`."""

    defaults: dict[str, float] = {}
    default_p = 0.5

    def __init__(self, *values: float, p: float | None = None, **named: float):
        super().__init__(p=self.default_p if p is None else p)
        if len(values) > len(self.defaults):
            raise TypeError(f"{type(self).__name__} takes {list(self.defaults)} and p, got {len(values)} values")
        args = {**self.defaults, **dict(zip(list(self.defaults)[: len(values)], values, strict=True)), **named}
        for name, value in args.items():
            setattr(self, name, value)

    def draw(self, rng: np.random.Generator, shape: tuple[int, ...]) -> dict:
        raise NotImplementedError

    def combine(self, img: np.ndarray, **drawn: Any) -> np.ndarray:
        raise NotImplementedError

    def get_params_dependent_on_data(self, params: dict, data: dict) -> dict:
        return {"drawn": self.draw(self.random_generator, data["image"].shape)}

    def apply(self, img: np.ndarray, drawn: dict | None = None, **params: Any) -> np.ndarray:
        return self.combine(img, **drawn) if drawn is not None else img

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return tuple(self.defaults)


class BandGain(_PerBand):
    """A gain per band in ``1 ± gain`` in scene units (``(x + 4) * g - 4`` on normalised data)."""

    defaults = {"gain": 0.2}
    gain: float

    def draw(self, rng: np.random.Generator, shape: tuple[int, ...]) -> dict:
        return {"g": rng.uniform(1 - self.gain, 1 + self.gain, size=shape[-1]).astype(np.float32)}

    def combine(self, img: np.ndarray, g: np.ndarray) -> np.ndarray:
        return (img + UNIT_OFFSET) * g - UNIT_OFFSET


class BandBrightnessContrast(_PerBand):
    """``x * alpha + beta``: one ``alpha`` in ``1 ± contrast``, per-band ``beta`` in ``± brightness``."""

    defaults = {"brightness": 0.1, "contrast": 0.15}
    brightness: float
    contrast: float

    def draw(self, rng: np.random.Generator, shape: tuple[int, ...]) -> dict:
        return {"alpha": float(rng.uniform(1 - self.contrast, 1 + self.contrast)),
                "beta": rng.uniform(-self.brightness, self.brightness, size=shape[-1]).astype(np.float32)}

    def combine(self, img: np.ndarray, alpha: float, beta: np.ndarray) -> np.ndarray:
        return img * np.float32(alpha) + beta


class BandNoise(_PerBand):
    """Gaussian noise, its standard deviation drawn per band in ``[0, std_max]`` (normalised units)."""

    defaults = {"std_max": 0.05}
    default_p = 0.3
    std_max: float

    def draw(self, rng: np.random.Generator, shape: tuple[int, ...]) -> dict:
        std = rng.uniform(0, self.std_max, size=shape[-1]).astype(np.float32)
        return {"noise": rng.standard_normal(shape, dtype=np.float32) * std}

    def combine(self, img: np.ndarray, noise: np.ndarray) -> np.ndarray:
        return img + noise


def augment_ops() -> SimpleNamespace:
    """The transforms of this module by name (``UnitSpace``, ``BandGain``, ``BandBrightnessContrast``, ``BandNoise``)."""
    return SimpleNamespace(UnitSpace=UnitSpace, BandGain=BandGain, BandBrightnessContrast=BandBrightnessContrast,
                           BandNoise=BandNoise)
