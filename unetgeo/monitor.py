"""Flood monitoring of an inbox, scene by scene, with a history: the library side of ``flood-monitor``.

- :func:`pending_scenes` lists the inbox (a folder or URL prefix), keeps files that are
  complete (size and mtime unchanged for ``stable_s`` seconds, or a ``<file>.ready`` marker)
  and not yet in the history with the same fingerprint (a failed scene is tried again only
  once it changes).
  The inbox may also be a STAC source: an ItemCollection, Item or static catalog JSON, or a
  STAC API search (``stac_search``); an item is the band stack of its per-band assets (in the
  model's band order, see :mod:`unetgeo.stac`) with its SCL asset as the unknown mask, listed
  in datetime order.
- :func:`scene_id` keys the outputs: the file stem plus a short hash of the URI, so two scenes
  with the same name in different places never share a folder.
- :func:`reference_classes` classifies a reference *scene* once per (reference content hash,
  model id, config hash); a water mask or class raster is used as it is.
- :func:`process_scene` runs one scene and returns its history row; bad input becomes a
  ``failed`` row with the one-line reason, so one bad scene never stops the others.
- :func:`append_history` rewrites ``out_root/history.csv`` atomically with one row more;
  ``change_km2`` is the flooded area minus the previous ``ok`` scene's.
"""

from __future__ import annotations

import csv
import datetime as _dt
import fnmatch
import hashlib
import io
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from unetgeo.errors import InputError, UnetgeoError

log = logging.getLogger(__name__)

HISTORY_NAME = "history.csv"
HISTORY_COLUMNS = ("scene_id", "acquired", "processed", "status", "flooded_km2", "water_km2", "unknown_km2",
                   "change_km2", "message", "uri", "fingerprint")


@dataclass(frozen=True)
class InboxScene:
    """A complete scene file in the inbox.

    Attributes:
        uri: the scene (path or URL).
        scene_id: output key (:func:`scene_id`).
        fingerprint: size and mtime / ETag as compact JSON (changes when the file changes).
        acquired: acquisition time (ISO 8601) when known, else None.
        assets: a STAC item's ``(band name, href)`` raster assets (empty: ``uri`` is the scene).
        unknown_mask: a STAC item's SCL asset (cloud, shadow, snow, no data are "unknown").
    """

    uri: str
    scene_id: str
    fingerprint: str
    acquired: str | None = None
    assets: tuple[tuple[str, str], ...] = ()
    unknown_mask: str | None = None


def scene_id(uri: str) -> str:
    """``<stem>-<8 hex of sha256(uri)>``: unique per location, readable in a folder listing."""
    from unetgeo.io.naming import stem

    return f"{stem(uri)}-{hashlib.sha256(str(uri).encode()).hexdigest()[:8]}"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def is_complete(uri: str, stable_s: float, now_s: float | None = None) -> bool:
    """True when ``uri`` is not being written: a ``<uri>.ready`` marker exists, or it was last
    modified at least ``stable_s`` seconds ago (local files; URLs: objects are complete on arrival)."""
    from unetgeo.io.files import mtime_ns
    from unetgeo.io.uri import exists

    if exists(f"{uri}.ready"):
        return True
    mtime = mtime_ns(uri)
    return mtime == 0 or ((now_s if now_s is not None else time.time()) - mtime / 1e9) >= stable_s


def pending_scenes(inbox: str, out_root: str, pattern: str = "*.tif", *, stable_s: float = 30.0,
                   stac_search: Mapping[str, Any] | None = None) -> list[InboxScene]:
    """Complete scenes of ``inbox`` matching ``pattern`` that the history has not seen as they are.

    Sorted by name. ``inbox`` may also be one scene file, or a STAC JSON (``*.json``: an
    ItemCollection, Item or static catalog) whose items are listed by datetime. With
    ``stac_search`` (``url`` (default ``inbox``), ``collections``, ``bbox`` or ``aoi``,
    ``datetime``, optional ``max_items`` / ``query``) a STAC API is searched instead.
    """
    from unetgeo.io.files import is_file, list_files
    from unetgeo.io.stac import is_stac_json
    from unetgeo.io.uri import fingerprint

    if stac_search is not None or is_stac_json(inbox):
        return _pending_stac(inbox, out_root, stac_search)
    files = [inbox] if is_file(inbox) else [f for f in list_files(inbox)
                                            if fnmatch.fnmatch(f.rsplit("/", 1)[-1], pattern)]
    seen = _seen(out_root)
    out = []
    for f in files:
        if not is_complete(f, stable_s):
            log.info("%s: still being written (changed less than %.0f s ago); left for the next run", f, stable_s)
            continue
        fp = json.dumps(fingerprint(f), sort_keys=True)
        if (f, fp) not in seen:
            out.append(InboxScene(uri=f, scene_id=scene_id(f), fingerprint=fp))
    return out


def _seen(out_root: str) -> set[tuple[str, str]]:
    """``(uri, fingerprint)`` of the history's finished scenes (``ok`` / ``failed``; ``error`` is retried)."""
    return {(r["uri"], r["fingerprint"]) for r in read_history(out_root) if r["status"] in ("ok", "failed")}


def _pending_stac(inbox: str, out_root: str, search: Mapping[str, Any] | None) -> list[InboxScene]:
    """The unseen items of a STAC JSON inbox or API search, oldest first (see :func:`pending_scenes`)."""
    from unetgeo.io.stac import read_items, search_items
    from unetgeo.stac import scene_fields

    if search is None:
        found = read_items(inbox)
    else:
        opts = {k: v for k, v in search.items() if k != "url"}
        unknown = set(opts) - {"collections", "bbox", "aoi", "datetime", "max_items", "query"}
        if unknown:
            raise InputError(f"stac_search has unknown key(s) {sorted(unknown)}; use url, collections, bbox, aoi, "
                             "datetime, max_items, query")
        found = search_items(str(search.get("url") or inbox), **opts)
    scenes = [InboxScene(**scene_fields(item, src, api=search is not None)) for item, src in found]
    seen = _seen(out_root)
    todo = [s for s in scenes if (s.uri, s.fingerprint) not in seen]
    return sorted(todo, key=lambda s: (_when(s.acquired), s.scene_id))


def _when(iso: str | None) -> _dt.datetime:
    """An ISO 8601 time as an aware datetime for sorting (UTC when it has no zone; unknown: earliest)."""
    try:
        t = _dt.datetime.fromisoformat(str(iso).replace("Z", "+00:00"))
    except ValueError:
        return _dt.datetime.min.replace(tzinfo=_dt.timezone.utc)
    return t if t.tzinfo else t.replace(tzinfo=_dt.timezone.utc)


def read_history(out_root: str) -> list[dict[str, str]]:
    """The rows of ``out_root/history.csv`` (empty when there is none)."""
    from unetgeo.io.files import is_file, read_text
    from unetgeo.io.uri import join

    uri = join(out_root, HISTORY_NAME)
    if not is_file(uri):
        return []
    return [{c: r.get(c) or "" for c in HISTORY_COLUMNS} for r in csv.DictReader(io.StringIO(read_text(uri)))]


def append_history(out_root: str, row: Mapping[str, Any]) -> dict[str, str]:
    """Add ``row`` to ``out_root/history.csv`` (rewritten atomically); fills ``change_km2``.

    Returns:
        The row as written (strings).
    """
    from unetgeo.io.uri import join, write_atomic

    rows = read_history(out_root)
    new = {c: "" if row.get(c) is None else str(row.get(c)) for c in HISTORY_COLUMNS}
    prev = [r for r in rows if r["status"] == "ok" and r["flooded_km2"]]
    if new["status"] == "ok" and new["flooded_km2"]:
        base = float(prev[-1]["flooded_km2"]) if prev else 0.0
        new["change_km2"] = f"{float(new['flooded_km2']) - base:.6f}"
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(HISTORY_COLUMNS), lineterminator="\n")
    w.writeheader()
    w.writerows([*rows, new])
    write_atomic(join(out_root, HISTORY_NAME), buf.getvalue())
    return new


def reference_classes(reference: str, model: str, out_root: str, *, config: str | None = None,
                      runner: Any = None, **options: Any) -> str:
    """The reference as a class raster or mask: a multi-band scene is classified once per
    (content sha256, model id, config hash) into ``out_root/reference-<key>/``; other rasters as they are."""
    from dataclasses import replace

    from unetgeo.io.scene import open_scene
    from unetgeo.io.uri import exists, join
    from unetgeo.model import check_bundle
    from unetgeo.pipeline import make_run, predict_scene, run_inline

    if open_scene(reference).count <= 1:
        return reference
    run = make_run(reference, model, out_root, config=config, **options)
    key = hashlib.sha256("|".join([content_sha256(reference, out_root), check_bundle(model).model_id,
                                   run.config.config_hash()]).encode()).hexdigest()[:12]
    ref_dir = join(out_root, f"reference-{key}")
    if not exists(join(ref_dir, "classes.tif")):
        predict_scene(replace(run, out=ref_dir), runner=runner or run_inline)
    return join(ref_dir, "classes.tif")


def content_sha256(uri: str, out_root: str) -> str:
    """sha256 of a file, remembered in ``out_root/hashes.json`` by its fingerprint (size, mtime or
    ETag): a scheduled run reads a large reference only when it has changed."""
    from unetgeo.io.files import is_file, read_text
    from unetgeo.io.uri import fingerprint, join, sha256_of, write_atomic

    book_uri = join(out_root, "hashes.json")
    book = json.loads(read_text(book_uri)) if is_file(book_uri) else {}
    fp = json.dumps(fingerprint(uri), sort_keys=True)
    known = book.get(str(uri)) or {}
    if known.get("fingerprint") != fp:
        known = {"fingerprint": fp, "sha256": sha256_of(uri) or ""}
        book[str(uri)] = known
        write_atomic(book_uri, json.dumps(book, indent=1))
    return str(known["sha256"])


def process_scene(scene: InboxScene, *, reference: str, model: str, out_root: str, config: str | None = None,
                  runner: Any = None, reference_source: str | None = None, **options: Any) -> dict[str, Any]:
    """Run one inbox scene into ``out_root/<scene id>/``; its history row (status ``ok``/``failed``/``error``).

    A STAC item's scene is the list of its band assets in the model's band order, and its SCL
    asset the run's ``unknown_mask``.

    Bad input (``ValueError`` kinds: unreadable or mismatched rasters, band mismatch) gives a
    ``failed`` row that is not retried until the file changes; an I/O error that outlived the
    stage retries gives an ``error`` row, tried again on the next run. Neither is raised.
    """
    from unetgeo.io.uri import join
    from unetgeo.pipeline import make_run, run_inline, run_scene

    row: dict[str, Any] = {"scene_id": scene.scene_id, "acquired": scene.acquired, "uri": scene.uri,
                           "fingerprint": scene.fingerprint}
    try:
        source, extra = _scene_argument(scene, model)
        run = make_run(source, model, join(out_root, scene.scene_id), reference=reference, config=config,
                       reference_source=reference_source, **extra, **options)
        s = run_scene(run, runner=runner or run_inline)
    except (UnetgeoError, OSError, ValueError) as e:
        msg = e.one_line() if isinstance(e, UnetgeoError) else " ".join(str(e).split())
        status = "failed" if _is_bad_input(e, scene.uri) else "error"
        log.warning("%s: %s: %s", scene.uri, status, msg)
        return {**row, "processed": _now(), "status": status, "message": msg}
    water = (s.get("area_km2") or {}).get("water")
    return {**row, "processed": _now(), "status": "ok", "flooded_km2": s.get("flooded_km2"),
            "water_km2": water, "unknown_km2": s.get("unknown_km2"), "message": ""}


def _scene_argument(scene: InboxScene, model: str) -> tuple[Any, dict[str, Any]]:
    """The pipeline's scene argument (a file, or a STAC item's band hrefs in the model's order) and
    the extra :func:`~unetgeo.pipeline.make_run` keywords (``unknown_mask``)."""

    from unetgeo.model import check_bundle
    from unetgeo.stac import band_hrefs

    if not scene.assets:
        return scene.uri, {}
    hrefs = band_hrefs(scene.assets, list(check_bundle(model).in_bands), scene.uri)
    return hrefs, ({"unknown_mask": scene.unknown_mask} if scene.unknown_mask else {})


def _is_bad_input(e: BaseException, uri: str) -> bool:
    """Bad input, not worth a retry: a ValueError kind, or a local file that exists but is no raster."""
    from unetgeo.errors import SceneReadError
    from unetgeo.io.uri import exists, is_url

    return isinstance(e, ValueError) or (isinstance(e, SceneReadError) and not is_url(uri) and exists(uri))


def alert_reason(row: Mapping[str, Any], *, flooded_over_km2: float | None = None,
                 growth_over_km2: float | None = None) -> str | None:
    """Why this history row calls for an alert (None: no alert): flooded area over a threshold,
    or growth since the previous scene over a threshold."""
    if row.get("status") != "ok" or row.get("flooded_km2") in (None, ""):
        return None
    flooded = float(row["flooded_km2"])
    change = float(row["change_km2"]) if row.get("change_km2") not in (None, "") else None
    if flooded_over_km2 is not None and flooded > flooded_over_km2:
        return f"{row['scene_id']}: flooded {flooded:.3f} km² > {flooded_over_km2:g} km²"
    if growth_over_km2 is not None and change is not None and change > growth_over_km2:
        return f"{row['scene_id']}: flooded area grew by {change:.3f} km² > {growth_over_km2:g} km²"
    return None


def history_markdown(rows: Sequence[Mapping[str, Any]], title: str) -> str:
    """Key numbers first: a markdown table of the history rows (newest last)."""
    cols = ("scene_id", "acquired", "status", "flooded_km2", "change_km2", "water_km2", "unknown_km2", "message")
    lines = [f"### {title}", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r.get(c) or "").replace("|", "\\|") for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


__all__ = ["HISTORY_COLUMNS", "InboxScene", "alert_reason", "append_history", "history_markdown", "is_complete",
           "content_sha256", "pending_scenes", "process_scene", "read_history", "reference_classes", "scene_id"]
