"""Band names: sensor band codes to canonical names, band selection, radiometry. Pure (opens nothing).

Canonical names are what a model bundle records (``model.json`` ``in_bands``): ``coastal blue green
red rededge1 rededge2 rededge3 nir nir08 watervapour cirrus swir swir2 pan thermal thermal2 vv vh``.
A scene band is known by its name (file stem in a stack, band description, or ``b1..``), and its
code (``B02``, ``B8A``, ``SR_B5``…) maps to a canonical name through the table of its sensor:

- ``s2`` (Sentinel-2 MSI): B1 coastal, B2 blue, B3 green, B4 red, B5–B7 rededge1–3, B8 nir,
  B8A nir08, B9 watervapour, B10 cirrus, B11 swir (swir16), B12 swir2 (swir22);
- ``landsat8`` (Landsat 8/9 OLI/TIRS): B1 coastal, B2 blue, B3 green, B4 red, B5 nir, B6 swir,
  B7 swir2, B8 pan, B9 cirrus, B10 thermal, B11 thermal2;
- ``landsat7`` (Landsat 4–7 TM/ETM+): B1 blue, B2 green, B3 red, B4 nir, B5 swir, B6 thermal,
  B7 swir2, B8 pan;
- ``s1`` (Sentinel-1): VV, VH.

The sensor is given (``--sensor``) or guessed from the names: Landsat product names (``LC08_``,
``LC09_`` → landsat8; ``LE07_``, ``LT05_``, ``LT04_`` → landsat7), ``SR_B``/``ST_B`` names
(landsat8), ``VV``/``VH`` (s1); otherwise Sentinel-2 (the codes ``B8A``, ``B11``, ``B12`` and the
tile names ``T33UUU_…`` are Sentinel-2's, and B-codes without a sensor hint are read as such).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

SENSORS = ("s2", "landsat8", "landsat7", "s1")

_S2 = {"1": "coastal", "2": "blue", "3": "green", "4": "red", "5": "rededge1", "6": "rededge2", "7": "rededge3",
       "8": "nir", "8A": "nir08", "9": "watervapour", "10": "cirrus", "11": "swir", "12": "swir2"}
_L8 = {"1": "coastal", "2": "blue", "3": "green", "4": "red", "5": "nir", "6": "swir", "7": "swir2", "8": "pan",
       "9": "cirrus", "10": "thermal", "11": "thermal2"}
_L7 = {"1": "blue", "2": "green", "3": "red", "4": "nir", "5": "swir", "6": "thermal", "7": "swir2", "8": "pan"}
TABLES: dict[str, dict[str, str]] = {"s2": _S2, "landsat8": _L8, "landsat7": _L7, "s1": {"VV": "vv", "VH": "vh"}}

#: Other spellings of canonical names (STAC eo:common_name and friends).
SYNONYMS = {"swir16": "swir", "swir1": "swir", "swir22": "swir2", "nir08": "nir08", "narrow_nir": "nir08",
            "nir_narrow": "nir08", "nir2": "nir08", "red_edge_1": "rededge1", "red_edge_2": "rededge2",
            "red_edge_3": "rededge3", "water_vapour": "watervapour", "water_vapor": "watervapour",
            "watervapor": "watervapour", "panchromatic": "pan", "tir": "thermal", "lwir": "thermal",
            "lwir11": "thermal", "lwir12": "thermal2", "coastal_aerosol": "coastal", "aerosol": "coastal"}
CANONICAL = frozenset(v for t in TABLES.values() for v in t.values()) | frozenset(SYNONYMS.values())

#: Sentinel-2 band order of the product metadata (``band_id`` 0..12 of RADIO_ADD_OFFSET / BOA_ADD_OFFSET).
S2_BAND_IDS = ("1", "2", "3", "4", "5", "6", "7", "8", "8A", "9", "10", "11", "12")

_CODE = re.compile(r"(?:^|[_\-.\s])(?:SR_|ST_|TOA_)?B(?:AND)?[_\s]?0*(\d{1,2}A?)(?:_[126]0m)?$", re.IGNORECASE)
_S1 = re.compile(r"(?:^|[_\-.\s])(VV|VH|HH|HV)$", re.IGNORECASE)


def band_code(name: str) -> str | None:
    """The sensor band code of a band name, zero dropped: ``"T33UUU_…_B02"`` → ``"2"``,
    ``"B8A"`` → ``"8A"``, ``"SR_B5"`` → ``"5"``, ``"…_B11_20m"`` (L2A) → ``"11"``, ``"vv"`` → ``"VV"``;
    None when it has none."""
    s = str(name).strip()
    m = _CODE.search(s) or _CODE.search("_" + s)
    if m:
        return m.group(1).upper()
    m = _S1.search(s) or _S1.search("_" + s)
    return m.group(1).upper() if m else None


def guess_sensor(names: Sequence[str]) -> str:
    """The sensor whose table applies to ``names`` (file stems or descriptions); see the module doc."""
    text = " ".join(str(n) for n in names).upper()
    if re.search(r"\bL[CO]0[89]_|LC[89]\d|\b(SR|ST)_B\d", text):
        return "landsat8"
    if re.search(r"\bL[ET]0[457]_|L[ET][457]\d", text):
        return "landsat7"
    codes = [band_code(n) for n in names]
    if codes and all(c in ("VV", "VH", "HH", "HV") for c in codes if c):
        if any(codes):
            return "s1"
    return "s2"


def canonical_name(name: str, sensor: str) -> str:
    """Canonical name of one band (lower case); a name that is neither canonical nor a known code
    is returned lower-cased as it is (``"ndvi"`` stays ``"ndvi"``)."""
    low = str(name).strip().lower()
    if low in SYNONYMS:
        return SYNONYMS[low]
    if low in CANONICAL:
        return low
    code = band_code(name)
    table = TABLES.get(sensor, {})
    if code is not None and code in table:
        return table[code]
    return low


def canonical_names(names: Sequence[str], sensor: str | None = None) -> list[str]:
    """Canonical names of ``names`` under ``sensor`` (None: :func:`guess_sensor`)."""
    s = sensor or guess_sensor(names)
    return [canonical_name(n, s) for n in names]


def parse_bands(text: str | Sequence[str | int] | None) -> list[str] | None:
    """``"B2,B3,B4"`` / ``["B2", 3]`` → ``["B2", "B3", "B4"]`` (strings, blanks dropped); None stays None."""
    if text is None:
        return None
    items = text.split(",") if isinstance(text, str) else list(text)
    out = [str(i).strip() for i in items if str(i).strip()]
    return out or None


def select_indexes(request: Sequence[str], names: Sequence[str], descriptions: Sequence[str | None],
                   sensor: str | None, where: str) -> list[int]:
    """0-based positions of the requested bands among a scene's bands.

    Each request item is matched, in this order, against: a 1-based band number, a band name,
    a band description, a band code (``B2`` = ``B02``), a canonical name (``nir``).

    Raises:
        ValueError (``InputError``): an item matching no band or several; names what the scene offers.
    """
    from unetgeo.errors import InputError

    s = sensor or guess_sensor(list(names) + [d for d in descriptions if d])
    canon = [canonical_name(n, s) for n in names]
    codes = [band_code(n) or band_code(d or "") for n, d in zip(names, descriptions, strict=True)]
    out: list[int] = []
    for item in request:
        if item.isdigit():
            k = int(item)
            if not 1 <= k <= len(names):
                raise InputError(f"{where}: band {k} does not exist (it has {len(names)} bands); "
                                 f"use 1..{len(names)} or a name of {offered(names, canon)}")
            out.append(k - 1)
            continue
        low = item.lower()
        hits = [i for i, n in enumerate(names) if n.lower() == low]
        hits = hits or [i for i, d in enumerate(descriptions) if d and d.lower() == low]
        hits = hits or ([i for i, c in enumerate(codes) if c is not None and c == band_code(item)]
                        if band_code(item) else [])
        hits = hits or [i for i, c in enumerate(canon) if c == canonical_name(item, s)]
        if len(hits) != 1:
            why = "matches no band" if not hits else f"matches bands {[h + 1 for h in hits]}"
            raise InputError(f"{where}: --bands item {item!r} {why}; the scene offers {offered(names, canon)} "
                             "(give names, codes like B02, or 1-based numbers)")
        out.append(hits[0])
    return out


def offered(names: Sequence[str], canon: Sequence[str]) -> str:
    """``"1 B02 (blue), 2 B03 (green)"``: what a scene's bands are, for error messages."""
    return ", ".join(f"{i + 1} {n}" + (f" ({c})" if c != n.lower() else "") for i, (n, c) in
                     enumerate(zip(names, canon, strict=True)))


def apply_radiometry(data: np.ndarray, scales: Sequence[float], offsets: Sequence[float]) -> np.ndarray:
    """``data * scale + offset`` per band.

    Args:
        data: ``(bands, h, w)`` any numeric dtype.
        scales, offsets: one float per band.

    Returns:
        ``data`` itself when every scale is 1 and every offset 0, else float32 ``(bands, h, w)``.
    """
    if all(s == 1.0 for s in scales) and all(o == 0.0 for o in offsets):
        return data
    out = data.astype(np.float32)
    out *= np.asarray(scales, np.float32)[:, None, None]
    out += np.asarray(offsets, np.float32)[:, None, None]
    return out


def fill_mask(data: np.ndarray, fill: float) -> np.ndarray:
    """``(h, w)`` bool: pixels equal to ``fill`` in every band of ``data`` ``(bands, h, w)``."""
    m = data[0] == fill
    for b in range(1, data.shape[0]):
        m &= data[b] == fill
    return m


#: Undeclared nodata is masked when pixels equal to the fill value in every band and connected to the
#: scene edge make up more than this share of the scene.
FILL_MIN_FRACTION = 0.005


def fill_from_decimated(dec: np.ndarray, dtype: str) -> tuple[float | None, float]:
    """``(fill value, share of the scene)`` of undeclared nodata in a decimated scene, or ``(None, 0.0)``.

    Candidates are 0 and, for integer data, the dtype's maximum. Pixels equal to a candidate in
    every band of ``dec`` ``(bands, h, w)`` are labelled into 8-connected regions; those touching
    the scene edge count (a satellite footprint's outside). A candidate is the fill when they make
    up more than :data:`FILL_MIN_FRACTION` of the scene.
    """
    from scipy import ndimage

    dt = np.dtype(dtype)
    for cand in [0.0] + ([float(np.iinfo(dt).max)] if dt.kind in "ui" else []):
        m = fill_mask(dec, cand)
        if m.mean() <= FILL_MIN_FRACTION:
            continue
        lab, _ = ndimage.label(m, structure=np.ones((3, 3), bool))
        edge = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
        share = float(np.isin(lab, edge[edge > 0]).mean())
        if share > FILL_MIN_FRACTION:
            return cand, share
    return None, 0.0


@dataclass(frozen=True)
class ReadOptions:
    """How a scene's bands are read (``--bands --sensor --nodata --scale --offset``).

    Attributes:
        bands: band names, codes or 1-based numbers to read, in this order (None: all).
        sensor: band table (``s2 landsat8 landsat7 s1``) for codes; None: guessed from the names.
        nodata: a number, ``"none"`` (no nodata) or None (the file's own, else detected).
        scale, offset: per band (or one for all) physical = DN * scale + offset; None: the file's tags.
        detect_nodata: look for undeclared nodata (see :func:`detect_fill`) when none is declared.
    """

    bands: tuple[str, ...] | None = None
    sensor: str | None = None
    nodata: float | str | None = None
    scale: tuple[float, ...] | None = None
    offset: tuple[float, ...] | None = None
    detect_nodata: bool = True

    @classmethod
    def from_spec(cls, spec: Any) -> ReadOptions:
        """The options of a :class:`unetgeo.config.InputSpec` (``config.input``)."""
        return cls(bands=tuple(spec.bands) if spec.bands else None, sensor=spec.sensor, nodata=spec.nodata,
                   scale=spec.scale, offset=spec.offset, detect_nodata=spec.detect_nodata)

    def key(self) -> dict[str, Any]:
        """What of these options changes the bytes written (for the run key)."""
        return {"bands": self.bands, "sensor": self.sensor, "nodata": self.nodata, "scale": self.scale,
                "offset": self.offset, "detect": self.detect_nodata}


