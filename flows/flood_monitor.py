"""Flow ``flood-monitor``: new scenes of an inbox folder against a fixed reference, for schedules.

Each run lists ``inbox`` (a folder or URL prefix) for scenes matching ``pattern`` that have no
``out_root/<scene stem>/summary.json`` yet and runs ``scene-to-polygons`` on each (oldest name
first, at most ``max_scenes``). A multi-band reference scene is classified once into
``out_root/reference-<model id>/`` and its ``classes.tif`` is the reference of every later run;
a water mask or class raster is used as it is.
"""

from __future__ import annotations

from prefect import flow, get_run_logger

from flows.scene_to_polygons import _stem, library_logs, scene_to_polygons


def pending_scenes(inbox: str, out_root: str, pattern: str = "*.tif") -> list[str]:
    """Scenes in ``inbox`` matching ``pattern`` without a finished run in ``out_root``, sorted by name.

    ``inbox`` may also be a single scene file.
    """
    from unetgeo.io.uri import exists, fs_for, is_url, join

    fs, path = fs_for(inbox)
    if fs.isfile(path):
        found = [inbox]
    else:
        proto = inbox.split("://", 1)[0] + "://" if is_url(inbox) else ""
        found = sorted(proto + p for p in fs.glob(join(path, pattern)))
    return [s for s in found if not exists(join(out_root, _stem(s), "summary.json"))]


@flow(name="flood-monitor", persist_result=False)
def flood_monitor(
    inbox: str,
    reference: str,
    model: str,
    out_root: str,
    config: str | None = None,
    pattern: str = "*.tif",
    max_scenes: int = 4,
    device: str | None = None,
) -> dict:
    """Run ``scene-to-polygons`` for each new scene in ``inbox`` against ``reference``.

    Returns:
        ``{"processed": {scene: flooded km²}, "pending": n left for the next run}``.
    """
    from unetgeo.io.bundle import read_meta
    from unetgeo.io.scene import open_scene
    from unetgeo.io.uri import exists, join

    logger = get_run_logger()
    with library_logs():
        todo = pending_scenes(inbox, out_root, pattern)
        logger.info("%d new scene(s) in %s", len(todo), inbox)
        if not todo:
            return {"processed": {}, "pending": 0}
        ref = reference
        if open_scene(reference).count > 1:  # a scene: classify it once per model
            ref_dir = join(out_root, f"reference-{read_meta(model).get('model_id') or 'model'}")
            if not exists(join(ref_dir, "classes.tif")):
                scene_to_polygons(scene=reference, model=model, out=ref_dir, config=config, device=device)
            ref = join(ref_dir, "classes.tif")
        done: dict[str, float] = {}
        for scene in todo[:max_scenes]:
            summary = scene_to_polygons(scene=scene, model=model, out=join(out_root, _stem(scene)),
                                        reference=ref, config=config, device=device)
            done[scene] = float(summary.get("flooded_km2") or 0.0)
        return {"processed": done, "pending": max(0, len(todo) - max_scenes)}
