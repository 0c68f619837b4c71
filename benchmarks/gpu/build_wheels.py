"""Build ``.whl/``: the py3.12 manylinux wheels the device machine lacks, at the pinned versions.

The device machine (Python 3.12, torch, timm, safetensors, numpy, scipy, fsspec, pyyaml, tqdm,
pandas, pyarrow; no registry) lacks what tile -> predict -> stitch and the GPU tests import.
This downloads exactly those wheels (versions from ``constraints.txt``), checks that every
``Requires-Dist`` of a shipped wheel is either shipped or on the device, and refuses a set over
``--max-mib`` (default: the 64 MiB that travel to the device, less the working tree and 4 MiB of margin).

Usage: python benchmarks/gpu/build_wheels.py [--dest .whl] [--max-mib N]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# what unetgeo's tile/predict/stitch path, its config and the GPU tests import, missing on the device
SHIPPED = [
    "rasterio", "affine", "attrs", "certifi", "click", "cligj", "click-plugins", "pyparsing",  # rasterio + deps
    "pyproj",  # CRS handling in io/crs.py
    "zarr", "numcodecs", "donfig", "google-crc32c",  # stores (zarr 3 + deps)
    "pydantic", "pydantic_core", "annotated-types", "typing-inspection",  # config models
    "segmentation_models_pytorch",  # the networks (its deps timm/torch/hf-hub/pillow are there)
    "pytest", "iniconfig", "pluggy", "Pygments",  # the `gpu` tests (pytest imports pygments at start-up)
]
# on the device already (stated by the device notes, or pulled in by torch / timm / torchvision)
ON_DEVICE = {
    "torch", "torchvision", "timm", "safetensors", "numpy", "scipy", "fsspec", "pyyaml", "tqdm", "pandas",
    "pyarrow", "huggingface-hub", "pillow", "packaging", "typing-extensions", "filelock", "jinja2", "sympy",
    "networkx", "setuptools",
}
# absent on the device and deliberately not shipped (too big, or not on the checked paths)
NOT_SHIPPED = {"pyogrio", "geopandas", "shapely", "dask", "distributed", "prefect", "matplotlib",
               "albumentations", "opencv-python-headless", "hypothesis", "psutil", "rio-cogeo"}
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"]


def canon(name: str) -> str:
    """PEP 503 normalised name (``Pydantic_Core`` -> ``pydantic-core``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned_versions(constraints: Path) -> dict[str, str]:
    """``{canonical name: version}`` from ``name==version`` lines."""
    out = {}
    for line in constraints.read_text().splitlines():
        if "==" in line and not line.lstrip().startswith("#"):
            name, ver = line.split("==", 1)
            out[canon(name.strip())] = ver.split(";")[0].strip()
    return out


def requires(wheel: Path) -> list[str]:
    """Unconditional ``Requires-Dist`` names of ``wheel`` (extras and non-Linux markers skipped)."""
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        text = z.read(meta).decode()
    names = []
    for line in text.splitlines():
        if not line.startswith("Requires-Dist:"):
            continue
        spec = line.split(":", 1)[1]
        marker = spec.split(";", 1)[1] if ";" in spec else ""
        if "extra ==" in marker or "sys_platform == \"win32\"" in marker or "python_version < \"3." in marker:
            continue
        names.append(canon(re.split(r"[\s<>=!~\[(;]", spec.strip(), maxsplit=1)[0]))
    return names


def tree_mib() -> float:
    """MiB of the files that travel without ``carry``: tracked plus untracked, not ignored."""
    names = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                           capture_output=True).stdout.decode().split("\0")
    return sum((ROOT / n).stat().st_size for n in names if n and (ROOT / n).is_file()) / 2**20


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dest", default=str(ROOT / ".whl"))
    ap.add_argument("--max-mib", type=float, default=None, help="refuse above this (default: 60 MiB - tree)")
    args = ap.parse_args()
    if args.max_mib is None:
        args.max_mib = 60.0 - tree_mib()
    dest = Path(args.dest)
    dest.mkdir(exist_ok=True)
    pins = pinned_versions(ROOT / "constraints.txt")
    missing = [n for n in SHIPPED if canon(n) not in pins]
    if missing:
        print(f"not pinned in constraints.txt: {missing}", file=sys.stderr)
        return 2
    reqs = [f"{n}=={pins[canon(n)]}" for n in SHIPPED]
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
           "3.12", "--implementation", "cp", *[a for p in PLATFORMS for a in ("--platform", p)], "-d", str(dest), *reqs]
    subprocess.run(cmd, check=True)
    wanted = {canon(n) for n in SHIPPED}
    wheels = [w for w in sorted(dest.glob("*.whl")) if canon(w.name.split("-")[0]) in wanted]
    stray = sorted(set(dest.glob("*.whl")) - set(wheels))
    if stray:
        print(f"{dest} holds wheels not in the list (delete them): {[w.name for w in stray]}", file=sys.stderr)
        return 2
    unmet = sorted({(w.name, r) for w in wheels for r in requires(w)
                    if r not in wanted and r not in ON_DEVICE})
    for name, req in unmet:
        print(f"unmet on the device: {name} requires {req}", file=sys.stderr)
    total = sum(w.stat().st_size for w in wheels)
    for w in wheels:
        print(f"{w.stat().st_size / 2**20:7.2f} MiB  {w.name}")
    print(f"total {total / 2**20:.1f} MiB in {len(wheels)} wheels ({dest}); limit {args.max_mib:.1f} MiB")
    if total > args.max_mib * 2**20:
        print("refused: too big to travel with the working tree (64 MiB in all)", file=sys.stderr)
        return 1
    return 1 if unmet else 0


if __name__ == "__main__":
    sys.exit(main())
