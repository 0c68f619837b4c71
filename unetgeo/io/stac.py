"""Reading STAC: ItemCollection / Item / static catalog JSON (path or fsspec URL) and STAC API searches.

Both readers return ``(item dict, source)`` pairs; every item carries an absolute ``rel=self``
link (added for items of a static catalog, which are files of their own), so relative asset
hrefs resolve against it (:func:`unetgeo.stac.scene_fields`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from unetgeo.errors import InputError, SceneReadError
from unetgeo.stac import resolve_href, self_href

log = logging.getLogger(__name__)

_MAX_DEPTH = 8  # catalog -> child catalogs / collections -> items


def is_stac_json(uri: str) -> bool:
    """True when an inbox names a STAC JSON document (``*.json``) rather than a folder of scenes."""
    return str(uri).split("?", 1)[0].lower().endswith(".json")


def _read_json(uri: str) -> dict[str, Any]:
    from unetgeo.io.files import read_text

    try:
        doc = json.loads(read_text(uri))
    except FileNotFoundError as e:
        raise SceneReadError(f"{uri}: STAC document not found; check the inbox path or URL") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{uri}: not a STAC JSON document ({e}); give an ItemCollection, Item or catalog.json") from e
    if not isinstance(doc, dict):
        raise InputError(f"{uri}: not a STAC JSON object; give an ItemCollection, Item or catalog.json")
    return doc


def read_items(uri: str, *, max_items: int = 10000) -> list[tuple[dict[str, Any], str]]:
    """The items of a STAC JSON document: an ItemCollection, one Item, or a static catalog /
    collection whose ``child`` and ``item`` links are followed (at most ``max_items`` items).

    Returns:
        ``[(item, uri)]`` in document order.

    Raises:
        SceneReadError: a document that cannot be read (OSError kinds pass through).
        InputError: JSON that is no STAC ItemCollection, Item, Catalog or Collection.
    """
    doc = _read_json(uri)
    kind = doc.get("type")
    if kind == "FeatureCollection":
        items = [f for f in doc.get("features") or () if isinstance(f, dict)]
    elif kind == "Feature":
        items = [doc]
    elif kind in ("Catalog", "Collection"):
        items = []
        _walk(uri, doc, items, {uri}, 0, max_items)
    else:
        raise InputError(f"{uri}: STAC type {kind!r} is not an ItemCollection (FeatureCollection), Item, Catalog "
                         "or Collection; point the inbox at one of those")
    return [(it, uri) for it in items[:max_items]]


def _walk(uri: str, doc: dict[str, Any], out: list[dict[str, Any]], seen: set[str], depth: int, cap: int) -> None:
    """Append the items linked from catalog ``doc`` (read from ``uri``) and its children to ``out``."""
    base = self_href(doc, uri) or uri
    for link in doc.get("links") or ():
        rel, href = link.get("rel"), link.get("href")
        if rel not in ("item", "child") or not href or len(out) >= cap:
            continue
        target = resolve_href(str(href), base)
        if target in seen:
            continue
        seen.add(target)
        child = _read_json(target)
        if rel == "item":
            links = [lk for lk in child.get("links") or () if lk.get("rel") != "self"]
            out.append({**child, "links": [*links, {"rel": "self", "href": target}]})
        elif depth < _MAX_DEPTH:
            _walk(target, child, out, seen, depth + 1, cap)


def aoi_geometry(uri: str) -> dict[str, Any]:
    """The union of an AOI file's geometries (GeoJSON, GeoPackage, Shapefile…) in EPSG:4326, as GeoJSON.

    Raises:
        InputError: a file without geometries or without a CRS.
    """
    from unetgeo.io.vector import read_polygons

    gdf = read_polygons(uri)
    if gdf.empty:
        raise InputError(f"{uri}: the AOI file has no geometries; draw the area of interest and save it")
    if gdf.crs is None:
        raise InputError(f"{uri}: the AOI file has no CRS; save it with one (GeoJSON is EPSG:4326)")
    return gdf.to_crs(4326).union_all().__geo_interface__


def search_items(url: str, *, collections: Sequence[str] | str | None = None,
                 bbox: Sequence[float] | None = None, aoi: str | None = None, datetime: str | None = None,
                 max_items: int = 1000, query: dict[str, Any] | None = None) -> list[tuple[dict[str, Any], str]]:
    """Items of a STAC API search (pystac-client) by ``bbox`` (lon/lat) or the ``aoi`` file, and a
    ``datetime`` window (``"2024-01-01/2024-01-31"``).

    Returns:
        ``[(item, url)]`` in the API's order.

    Raises:
        InputError: neither ``bbox`` nor ``aoi``, or the API refuses the search (a 4xx answer).
        SceneReadError: the API cannot be reached or fails (transient; the flow retries).
    """
    from pystac_client import Client
    from pystac_client.exceptions import APIError

    if bbox is None and aoi is None:
        raise InputError(f"stac_search at {url}: give 'bbox' [west, south, east, north] or 'aoi' (a polygon file)")
    cols = [collections] if isinstance(collections, str) else (list(collections) if collections else None)
    geom = aoi_geometry(aoi) if aoi else None
    try:
        search = Client.open(url).search(collections=cols, bbox=None if geom else list(bbox or ()), intersects=geom,
                                         datetime=datetime, max_items=max_items, query=query)
        items = list(search.items_as_dicts())
    except APIError as e:
        status = getattr(e, "status_code", None)
        err = InputError if status is not None and 400 <= int(status) < 500 else SceneReadError
        raise err(f"stac_search at {url}: the API answered {status}: {' '.join(str(e).split())[:200]}") from e
    except OSError as e:
        raise SceneReadError(f"stac_search at {url}: the API cannot be reached ({e}); check the url") from e
    log.info("STAC search %s: %d item(s)", url, len(items))
    return [(it, url) for it in items]


__all__ = ["aoi_geometry", "is_stac_json", "read_items", "search_items"]
