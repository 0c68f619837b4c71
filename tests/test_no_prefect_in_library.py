"""The library never imports Prefect or flows/: orchestration lives in flows/ only, and flows/ only orchestrates."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import unetgeo

LIB = Path(unetgeo.__file__).resolve().parent


FORBIDDEN = ("prefect", "flows")


def _prefect_imports(source: str, forbidden: tuple[str, ...] = FORBIDDEN) -> list[tuple[int, str]]:
    """``(line, text)`` of every import of a forbidden package in ``source``: ``import prefect[.x]``,
    ``from prefect[.x] import …``, ``importlib.import_module("prefect…")`` and ``__import__("prefect…")``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            fn = node.func
            fname = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", "")
            if fname in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                names = [node.args[0].value]
        if any(n == p or n.startswith(p + ".") for n in names for p in forbidden):
            found.append((node.lineno, ast.get_source_segment(source, node) or ""))
    return found


def test_scanner_catches_every_import_form() -> None:
    src = (
        "import os\nimport prefect\nfrom prefect.artifacts import x\nimport prefect.flows as pf\n"
        "import importlib\nimportlib.import_module('prefect')\n__import__('prefect.tasks')\n"
        "from prefectish import y\nimport_module('prefect')\nfrom . import prefect_notes\n"
        "from flows.cli_entry import run_scene_flow\nimport flowsheet\n"
    )
    assert sorted(line for line, _ in _prefect_imports(src)) == [2, 3, 4, 6, 7, 9, 11]


def test_no_library_file_imports_prefect() -> None:
    files = sorted(LIB.rglob("*.py"))
    assert len(files) > 5, f"found only {len(files)} modules under {LIB}"
    offenders = [f"{f.relative_to(LIB.parent)}:{line}: {text}"
                 for f in files for line, text in _prefect_imports(f.read_text(encoding="utf-8"))]
    assert not offenders, "unetgeo/ must not import prefect or flows (move it to flows/):\n" + "\n".join(offenders)


def test_importing_every_library_module_leaves_prefect_out() -> None:
    code = (
        "import importlib, json, pkgutil, sys\n"
        "import unetgeo\n"
        "mods = [m.name for m in pkgutil.walk_packages(unetgeo.__path__, 'unetgeo.')]\n"
        "failed = {}\n"
        "for name in mods:\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception as e:\n"
        "        failed[name] = repr(e)\n"
        "print(json.dumps({'mods': mods, 'failed': failed,\n"
        "                  'prefect': sorted(m for m in sys.modules if m.split('.')[0] in ('prefect', 'flows'))}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert "unetgeo.cli" in res["mods"] and "unetgeo.io.scene" in res["mods"]
    assert not res["failed"], f"modules that fail to import: {res['failed']}"
    assert res["prefect"] == [], f"importing unetgeo pulled in {res['prefect'][:5]}"


def test_unetgeo_run_never_imports_prefect(tmp_path: Path) -> None:
    """`unetgeo run` (here on a missing scene, which it refuses) runs without Prefect or flows/."""
    code = (
        "import json, sys\n"
        "from unetgeo.cli import main\n"
        f"code = main(['-q', 'run', {str(tmp_path / 'missing.tif')!r}, '--model', 'm', '--out', {str(tmp_path / 'r')!r}])\n"
        "print(json.dumps({'code': code, 'loaded': sorted(m for m in sys.modules if m.split('.')[0] in ('prefect', 'flows'))}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res == {"code": 2, "loaded": []}, res


FLOWS = LIB.parent / "flows"
LIBRARY_INTERNALS = ("unetgeo.io", "unetgeo.grid", "unetgeo.model")


def test_flows_only_orchestrate() -> None:
    """flows/ never reaches into the library's I/O, grid arithmetic or model code, and each flow
    body stays short (the sequence itself lives in unetgeo.pipeline)."""
    offenders = [f"{f.name}:{line}: {text}" for f in sorted(FLOWS.glob("*.py"))
                 for line, text in _prefect_imports(f.read_text(encoding="utf-8"), LIBRARY_INTERNALS)]
    assert not offenders, "flows/ must call library stages, not unetgeo.io/grid/model:\n" + "\n".join(offenders)
    for f in sorted(FLOWS.glob("*.py")):
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef) and any("flow" in ast.unparse(d) for d in node.decorator_list):
                body = node.body[1:] if ast.get_docstring(node) else node.body
                n = body[-1].end_lineno - body[0].lineno + 1
                assert n <= 25, f"{f.name}:{node.name}: flow body of {n} lines (at most 25)"
