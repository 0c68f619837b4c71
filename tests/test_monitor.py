"""The library side of flood monitoring: complete files only, collision-free ids, the history,
the reference cache keyed by content, per-scene isolation and the alert rules."""

from __future__ import annotations

import csv
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio

from unetgeo import monitor
from unetgeo.monitor import InboxScene


def test_scene_ids_of_same_named_files_differ() -> None:
    a, b = monitor.scene_id("/data/a/s2.tif"), monitor.scene_id("/data/b/s2.tif")
    assert a != b and a.startswith("s2-") and b.startswith("s2-")
    assert monitor.scene_id("/data/a/s2.tif") == a  # deterministic: reruns find their folder


def test_files_being_written_wait_unless_marked_ready(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    old, fresh = inbox / "old.tif", inbox / "fresh.tif"
    old.write_bytes(b"x")
    fresh.write_bytes(b"y")
    past = time.time() - 120
    os.utime(old, (past, past))
    assert [s.uri for s in monitor.pending_scenes(str(inbox), str(tmp_path / "out"), stable_s=60)] == [str(old)]
    (inbox / "fresh.tif.ready").write_text("")
    assert [s.uri for s in monitor.pending_scenes(str(inbox), str(tmp_path / "out"), stable_s=60)] == [
        str(fresh), str(old)]


def test_history_rows_change_and_seen_fingerprints(tmp_path: Path) -> None:
    out = str(tmp_path / "site")
    scene = tmp_path / "s.tif"
    scene.write_bytes(b"x")
    fp = json.dumps(__import__("unetgeo.io.uri", fromlist=["fingerprint"]).fingerprint(str(scene)), sort_keys=True)
    first = monitor.append_history(out, {"scene_id": "a", "status": "ok", "flooded_km2": 2.0, "uri": str(scene),
                                         "fingerprint": fp})
    failed = monitor.append_history(out, {"scene_id": "b", "status": "failed", "message": "b.tif: not a raster"})
    second = monitor.append_history(out, {"scene_id": "c", "status": "ok", "flooded_km2": 5.5})
    assert float(first["change_km2"]) == 2.0 and failed["change_km2"] == "" and float(second["change_km2"]) == 3.5
    rows = list(csv.DictReader((tmp_path / "site" / "history.csv").open()))
    assert [r["scene_id"] for r in rows] == ["a", "b", "c"] and list(rows[0])[:9] == list(monitor.HISTORY_COLUMNS[:9])
    assert monitor.pending_scenes(str(scene), out, stable_s=0) == []  # seen as it is
    scene.write_bytes(b"changed content")
    assert len(monitor.pending_scenes(str(scene), out, stable_s=0)) == 1  # changed: tried again


def test_alert_rules() -> None:
    ok = {"scene_id": "s", "status": "ok", "flooded_km2": "3.0", "change_km2": "0.5"}
    assert monitor.alert_reason(ok) is None
    assert "3.000 km² > 2" in monitor.alert_reason(ok, flooded_over_km2=2.0)
    assert "grew by 0.500" in monitor.alert_reason(ok, growth_over_km2=0.1)
    assert monitor.alert_reason(ok, growth_over_km2=1.0) is None
    assert monitor.alert_reason({"status": "failed", "flooded_km2": ""}, flooded_over_km2=0.0) is None


def test_a_corrupt_scene_is_a_failed_row_not_an_exception(tmp_path: Path, pair: dict, tiny_model: Path) -> None:
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"II*\x00" + b"\x00" * 64)
    row = monitor.process_scene(InboxScene(uri=str(bad), scene_id="bad", fingerprint="{}"),
                                reference=pair["pre"].labels_uri, model=str(tiny_model), out_root=str(tmp_path))
    assert row["status"] == "failed" and "bad.tif" in row["message"]
    assert not (tmp_path / "bad").exists()


def test_reference_cache_follows_the_reference_content(tmp_path: Path, pair: dict, tiny_model: Path,
                                                       tiny_config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import unetgeo.io.uri as U

    ref = tmp_path / "before.tif"
    shutil.copy(pair["pre"].image_uri, ref)
    out = str(tmp_path / "site")
    hashed: list[str] = []
    real = U.sha256_of
    monkeypatch.setattr(U, "sha256_of", lambda uri, **kw: hashed.append(uri) or real(uri, **kw))
    first = monitor.reference_classes(str(ref), str(tiny_model), out, config=str(tiny_config))
    n_first = len(hashed)  # the cache key, and the tiling stage's source record
    again = monitor.reference_classes(str(ref), str(tiny_model), out, config=str(tiny_config))
    assert first == again and Path(first).exists() and len(hashed) == n_first  # nothing read again
    with rasterio.open(ref, "r+") as ds:  # the reference is replaced by another picture
        ds.write(np.full((ds.count, ds.height, ds.width), 900, ds.dtypes[0]))
    changed = monitor.reference_classes(str(ref), str(tiny_model), out, config=str(tiny_config))
    assert changed != first and Path(changed).exists() and len(hashed) > n_first
    mask = monitor.reference_classes(pair["pre"].labels_uri, str(tiny_model), out)
    assert mask == pair["pre"].labels_uri  # a single-band raster is used as it is
