"""Build the benchmark plugin into a zipapp executable (``<id>.binary``), SDK bundled.

One archive is built; extra copies only differ in their file name, which is where the
plugin takes its id from (see ``bench_sdk.plugin_id_from_argv``).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import zipapp
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
SDK = ROOT / "toru_plugin_api"

_MAIN = "from bench_sdk import main\n\nmain()\n"


def build_bench_plugin(
    out: Path, ids: list[str] | None = None, interpreter: str | None = None
) -> dict[str, Path]:
    """Write ``out/<id>.binary`` for each id (default ``bench-sdk``); returns id -> path.

    The interpreter defaults to the running Python, so uvloop and ujson are used when the
    benchmark's environment has them (as in a production install of the SDK).
    """
    ids = ids or ["bench-sdk"]
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="toru-bench-build-") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        shutil.copytree(
            SDK,
            src / "toru_plugin_api",
            ignore=shutil.ignore_patterns("__pycache__", "testing.py", "check.py"),
        )
        shutil.copy2(HERE / "bench_sdk.py", src / "bench_sdk.py")
        (src / "__main__.py").write_text(_MAIN)
        archive = Path(tmp) / "bench.pyz"
        zipapp.create_archive(src, archive, interpreter=interpreter or sys.executable)
        paths: dict[str, Path] = {}
        for plugin_id in ids:
            dst = out / f"{plugin_id}.binary"
            shutil.copyfile(archive, dst)
            dst.chmod(0o755)
            paths[plugin_id] = dst
    return paths


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--count", type=int, default=1, help="copies (bench-sdk, bench-sdk-02, ...)")
    a = ap.parse_args()
    names = ["bench-sdk"] + [f"bench-sdk-{i:02d}" for i in range(2, a.count + 1)]
    for pid, path in build_bench_plugin(a.out, names).items():
        print(pid, path)
