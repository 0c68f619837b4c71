"""The library never imports Prefect: orchestration lives in flows/ only."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import unetgeo

LIB = Path(unetgeo.__file__).resolve().parent


def _prefect_imports(source: str) -> list[tuple[int, str]]:
    """``(line, text)`` of every import of prefect in ``source``: ``import prefect[.x]``,
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
        if any(n == "prefect" or n.startswith("prefect.") for n in names):
            found.append((node.lineno, ast.get_source_segment(source, node) or ""))
    return found


def test_scanner_catches_every_import_form() -> None:
    src = (
        "import os\nimport prefect\nfrom prefect.artifacts import x\nimport prefect.flows as pf\n"
        "import importlib\nimportlib.import_module('prefect')\n__import__('prefect.tasks')\n"
        "from prefectish import y\nimport_module('prefect')\nfrom . import prefect_notes\n"
    )
    assert [line for line, _ in _prefect_imports(src)] == [2, 3, 4, 6, 7, 9]


def test_no_library_file_imports_prefect() -> None:
    files = sorted(LIB.rglob("*.py"))
    assert len(files) > 5, f"found only {len(files)} modules under {LIB}"
    offenders = [f"{f.relative_to(LIB.parent)}:{line}: {text}"
                 for f in files for line, text in _prefect_imports(f.read_text(encoding="utf-8"))]
    assert not offenders, "unetgeo/ must not import prefect (move it to flows/):\n" + "\n".join(offenders)


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
        "                  'prefect': sorted(m for m in sys.modules if m == 'prefect' or m.startswith('prefect.'))}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert "unetgeo.cli" in res["mods"] and "unetgeo.io.scene" in res["mods"]
    assert not res["failed"], f"modules that fail to import: {res['failed']}"
    assert res["prefect"] == [], f"importing unetgeo pulled in {res['prefect'][:5]}"
