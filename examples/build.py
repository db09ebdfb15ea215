#!/usr/bin/env python3
"""Build every example plugin into ``OUT/<id>.binary`` (standard library only, no network).

    python3 examples/build.py --out build/plugins

- SDK plugins (hello-python, system-info) become zipapps with a ``python3`` shebang that carry
  ``toru_plugin_api``, so they run with no packages installed (``python3 -I`` too).
- raw-python is its single script; hello-node is its single script with a ``node`` shebang.
"""

from __future__ import annotations

import argparse
import os
import shutil
import stat
import sys
import tempfile
import zipapp
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SDK = ROOT / "toru_plugin_api"
SDK_SKIP = {"testing.py", "check.py"}  # author tools, not needed inside a plugin
SKIP = {"__pycache__", "README.md", ".pytest_cache"}

ZIPAPPS = {"hello-python": "hello-python", "system-info": "system-info"}
SCRIPTS = {"raw-python": ("raw-python", "plugin.py"), "hello-node": ("hello-node", "plugin.js")}


def _copy_tree(src: Path, dst: Path, skip: set[str]) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for child in sorted(src.iterdir()):
        if child.name in skip or child.suffix == ".pyc":
            continue
        if child.is_dir():
            _copy_tree(child, dst / child.name, skip)
        else:
            shutil.copy2(child, dst / child.name)


def _make_executable(path: Path) -> None:
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def build_zipapp(src: Path, target: Path) -> Path:
    """Zip an SDK example (with its ``__main__.py``) plus the SDK into ``target``."""
    with tempfile.TemporaryDirectory(prefix="toru-build-") as tmp:
        stage = Path(tmp) / "app"
        _copy_tree(src, stage, SKIP)
        _copy_tree(SDK, stage / "toru_plugin_api", SKIP | SDK_SKIP)
        zipapp.create_archive(stage, target, interpreter="/usr/bin/env python3", compressed=True)
    _make_executable(target)
    return target


def build_script(src: Path, target: Path) -> Path:
    """Copy a single-file plugin (its shebang makes it executable as is)."""
    shutil.copyfile(src, target)
    _make_executable(target)
    return target


def build_all(out: Path) -> dict[str, Path]:
    """Build every example into ``out``; returns plugin id -> binary path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    built: dict[str, Path] = {}
    for plugin_id, folder in ZIPAPPS.items():
        built[plugin_id] = build_zipapp(HERE / folder, out / f"{plugin_id}.binary")
    for plugin_id, (folder, script) in SCRIPTS.items():
        built[plugin_id] = build_script(HERE / folder / script, out / f"{plugin_id}.binary")
    return built


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / "build" / "plugins"), help="output directory")
    args = parser.parse_args(argv)
    for plugin_id, path in build_all(Path(args.out)).items():
        print(f"built {plugin_id:<14} {os.path.relpath(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
