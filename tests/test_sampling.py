"""Class-balanced chip sampling (issue 15): ``training.class_share`` gives each named class the
requested share of chips, rare classes stay present, and the earlier rule is kept by default."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from unetgeo.config import load_config
from unetgeo.errors import ConfigError
from unetgeo.grid import Window
from unetgeo.train.data import ArrayRegion
from unetgeo.train.objective import use_training_spec
from unetgeo.train.sampling import ChipSampler, resolve_class_share, scan_labels

DUBAI = str(Path(__file__).resolve().parent.parent / "configs" / "dubai_landcover.yaml")
CHIP = 64
N = 1500


def _regions() -> list[ArrayRegion]:
    """Two 384² images of 'land' (class 1); one small water patch (4) and one road patch (2),
    each well under 1 % of the pixels, in different images."""
    regs = []
    for k in range(2):
        lab = np.ones((384, 384), dtype=np.uint8)
        if k == 0:
            lab[300:316, 40:56] = 4  # water
        else:
            lab[20:32, 330:346] = 2  # road
        lab[200:216, 200:216] = 0  # a little building in both
        img = np.zeros((3, 384, 384), dtype=np.uint8)
        reg = ArrayRegion(f"r{k}", img, lab)
        reg.set_split(128, 0.0, np.random.default_rng(k))
        regs.append(reg)
    return regs


def _share_with(sampler: ChipSampler, regions, cls: int, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(N):
        ri, win = sampler.sample(rng)
        reg = regions[ri]
        r0, c0 = max(0, win.row_off), max(0, win.col_off)
        r1, c1 = min(reg.height, win.row_off + win.height), min(reg.width, win.col_off + win.width)
        hits += bool((reg.read_labels(Window(r0, c0, r1 - r0, c1 - c0)) == cls).any())
    return hits / N


def test_class_share_gives_the_requested_share_of_chips():
    regions = _regions()
    scan = scan_labels(regions, 5, np.random.default_rng(1))
    sampler = ChipSampler(regions, scan, CHIP, class_aware=0.0, class_share={"water": 0.25, "road": 0.15},
                          class_names=["building", "land", "road", "vegetation", "water"])
    assert sampler.rare == [2, 4]
    # a random 64 px chip meets a 16 px patch in an image of 384² about 2 % of the time
    water, road = _share_with(sampler, regions, 4), _share_with(sampler, regions, 2)
    assert 0.22 <= water <= 0.31, water
    assert 0.12 <= road <= 0.21, road
    # without class_share the same classes are much rarer in the chips
    plain = ChipSampler(regions, scan, CHIP, class_aware=0.0)
    assert _share_with(plain, regions, 4) < 0.06


def test_default_rule_is_unchanged_and_class_share_comes_from_the_config():
    regions = _regions()
    scan = scan_labels(regions, 5, np.random.default_rng(1))
    old = ChipSampler(regions, scan, CHIP, class_aware=0.5)
    assert old.shares is None and old.rare == [0, 2, 4]  # rare: below a uniform share
    base = load_config(DUBAI)
    cfg = load_config(DUBAI, training={**base.training.model_dump(), "class_share": {"water": 0.4}})
    with use_training_spec(cfg):
        s = ChipSampler(regions, scan, CHIP, class_aware=0.5)
    assert s.rare == [4] and s.shares is not None and s.shares[4] == 0.4
    assert 0.36 <= _share_with(s, regions, 4, seed=5) <= 0.47
    assert ChipSampler(regions, scan, CHIP, class_aware=0.5).shares is None  # reset after the block


def test_class_share_errors_and_absent_classes():
    names = ["building", "land", "road", "vegetation", "water"]
    with pytest.raises(ConfigError, match="not a class"):
        resolve_class_share({"lake": 0.2}, 5, names)
    with pytest.raises(ConfigError, match="at most 1"):
        resolve_class_share([0.6, 0, 0, 0, 0.6], 5)
    with pytest.raises(ValueError):
        load_config(DUBAI, training={**load_config(DUBAI).training.model_dump(), "class_share": {"water": 1.5}})
    regions = _regions()
    scan = scan_labels(regions, 5, np.random.default_rng(1))
    s = ChipSampler(regions, scan, CHIP, 0.0, class_share={"vegetation": 0.5, "water": 0.2}, class_names=names)
    assert s.rare == [4] and s.shares[3] == 0.0  # no vegetation pixels: its share goes to random chips
