"""STAC items as band stacks: asset names, absolute hrefs, acquisition times, scene ids. Pure (opens nothing).

A Sentinel-2 L2A item publishes one COG per band (10 m ``B02 B03 B04 B08``, 20 m ``B11``…, keyed
by band code or by common name: ``blue green red nir swir16``) and the scene classification
``SCL`` (20 m). The monitor turns an item into the list of its band hrefs in the model's band
order (a band stack, stacked onto the finest grid window by window) and takes the SCL classes
:data:`SCL_UNKNOWN_CLASSES` as "unknown" in the flood raster.

The readers that fetch catalogs and search APIs live in :mod:`unetgeo.io.stac`; the functions
here take the item JSON (a dict) and the location it was read from.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urljoin

from unetgeo.bands import CANONICAL, canonical_name
from unetgeo.errors import InputError

#: SCL classes that are neither dry nor water: no data (0), cloud shadow (3), cloud medium (8) and
#: high (9) probability, thin cirrus (10), snow / ice (11).
SCL_UNKNOWN_CLASSES = (0, 3, 8, 9, 10, 11)
#: The name :func:`asset_band` gives the scene classification asset.
SCL_NAME = "scl"

_RES_SUFFIX = re.compile(r"[_-]\d+m$", re.IGNORECASE)  # ``B02_10m`` (Planetary Computer keys)
_RASTER_TYPES = ("image/tiff", "image/geotiff", "image/tif")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def resolve_href(href: str, base: str | None) -> str:
    """The absolute form of ``href`` relative to the JSON document at ``base`` (path or URL).

    ``./B02.tif`` beside ``s3://b/items/x.json`` is ``s3://b/items/B02.tif``; absolute hrefs
    and URLs are returned as they are.
    """
    if not base or "://" in href or href.startswith("/"):
        return href
    if base.startswith(("http://", "https://")):
        return urljoin(base, href)
    if "://" in base:
        scheme, rest = base.split("://", 1)
        netloc, _, path = rest.partition("/")
        return f"{scheme}://{netloc}/" + posixpath.normpath(posixpath.join(posixpath.dirname(path), href)).lstrip("/")
    return posixpath.normpath(posixpath.join(posixpath.dirname(base), href))


def self_href(doc: Mapping[str, Any], base: str | None = None) -> str | None:
    """The absolute ``rel=self`` link of a STAC document, or None."""
    for link in doc.get("links") or ():
        if link.get("rel") == "self" and link.get("href"):
            return resolve_href(str(link["href"]), base)
    return None


def asset_band(key: str, asset: Mapping[str, Any]) -> str | None:
    """Canonical band name of a raster asset (``B02``/``blue`` → ``blue``, ``SCL`` → ``scl``), or None
    for assets that are no GeoTIFF (JPEG 2000 copies, thumbnails, metadata)."""
    media = str(asset.get("type") or "").lower()
    if media and not media.startswith(_RASTER_TYPES):
        return None
    bare = _RES_SUFFIX.sub("", key)
    if bare.lower() == SCL_NAME:
        return SCL_NAME
    name = canonical_name(bare, "s2")
    if name in CANONICAL:
        return name
    for band in asset.get("eo:bands") or asset.get("bands") or ():  # STAC 1.0 / 1.1 band objects
        common = band.get("common_name") or band.get("eo:common_name")
        if common:
            return canonical_name(str(common), "s2")
    return name


def item_assets(item: Mapping[str, Any], base: str | None) -> tuple[tuple[str, str], ...]:
    """``(band name, absolute href)`` of the item's raster assets (:func:`asset_band`), in the item's order."""
    out = []
    for key, asset in (item.get("assets") or {}).items():
        name = asset_band(str(key), asset)
        if name is not None and asset.get("href"):
            out.append((name, resolve_href(str(asset["href"]), base)))
    return tuple(out)


def band_hrefs(assets: Sequence[tuple[str, str]], bands: Sequence[str], where: str) -> list[str]:
    """The hrefs of ``bands`` (model band names, in order) among ``assets`` (:func:`item_assets`).

    Raises:
        InputError: a band the item has no asset for (names the item and what it offers).
    """
    by: dict[str, str] = {}
    for name, href in assets:
        by.setdefault(name, href)
    want = [canonical_name(b, "s2") for b in bands]
    missing = [b for b, w in zip(bands, want, strict=True) if w not in by]
    if missing:
        raise InputError(f"{where}: the STAC item has no asset for band(s) {missing} (it offers "
                         f"{sorted(n for n in by if n != SCL_NAME)}); give items with one GeoTIFF asset per model band "
                         "(B02 B03 B04 B08 B11 or blue green red nir swir16)")
    return [by[w] for w in want]


def item_datetime(item: Mapping[str, Any]) -> str | None:
    """The item's acquisition time (``datetime``, else ``start_datetime``) as ISO 8601, or None."""
    props = item.get("properties") or {}
    value = props.get("datetime") or props.get("start_datetime")
    return None if value is None else str(value)


def source_key(source: str, item: Mapping[str, Any], api: bool) -> str:
    """What an item's scene id hashes: the catalog / ItemCollection URL, or for a STAC API the
    collection's URL (``<api>/collections/<collection>``)."""
    return f"{source.rstrip('/')}/collections/{item.get('collection') or ''}" if api else source


def stac_scene_id(item_id: str, source: str) -> str:
    """``<item id>-<8 hex of sha256(source)>``: the same item id in two catalogs never shares a folder."""
    return f"{_UNSAFE.sub('_', item_id).strip('_') or 'item'}-{hashlib.sha256(source.encode()).hexdigest()[:8]}"


def scene_fields(item: Mapping[str, Any], source: str, *, api: bool = False) -> dict[str, Any]:
    """The :class:`unetgeo.monitor.InboxScene` fields of one STAC item read from ``source``.

    ``uri`` is the item's self link (else ``<source>#<id>``); relative asset hrefs are resolved
    against it; ``fingerprint`` changes when the item's assets or its ``updated`` time change.

    Raises:
        InputError: an item without ``id``.
    """
    item_id = item.get("id")
    if not item_id:
        raise InputError(f"{source}: a STAC item has no 'id'; every item needs one (STAC spec)")
    me = self_href(item, source)
    assets = item_assets(item, me or source)
    scl = next((h for n, h in assets if n == SCL_NAME), None)
    digest = hashlib.sha256(json.dumps(assets).encode()).hexdigest()[:16]
    fp = {"stac": str(item_id), "updated": (item.get("properties") or {}).get("updated"), "assets": digest}
    return {"uri": me or f"{source}#{item_id}", "scene_id": stac_scene_id(str(item_id), source_key(source, item, api)),
            "fingerprint": json.dumps(fp, sort_keys=True), "acquired": item_datetime(item),
            "assets": tuple((n, h) for n, h in assets if n != SCL_NAME), "unknown_mask": scl}


__all__ = ["SCL_NAME", "SCL_UNKNOWN_CLASSES", "asset_band", "band_hrefs", "item_assets", "item_datetime",
           "resolve_href", "scene_fields", "self_href", "source_key", "stac_scene_id"]
