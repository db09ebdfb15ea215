"""A non-editable install must carry everything a server needs, the web UI included."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_wheel_carries_packages_console_script_and_every_webapp_file(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("toru-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "toru_plugin_api/codec.py" in names
    assert "toru_plugin_api/protocol.schema.json" in names  # the checker validates with it
    templates = ROOT / "toru" / "scaffold" / "templates"
    wanted_templates = {str(p.relative_to(ROOT)) for p in templates.rglob("*.tmpl")}
    assert len(wanted_templates) > 10, "toru/scaffold/templates is empty"
    assert wanted_templates <= names, (
        f"setup.cfg package_data misses {sorted(wanted_templates - names)}"
    )
    assert "toru/supervisor/main.py" in names
    assert "toru/wsgi/app.py" in names
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "toru = toru.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
    data = {n.split(".data/data/share/toru/", 1)[1] for n in names if ".data/data/share/toru/" in n}
    wanted = {
        str(p.relative_to(ROOT))
        for p in (ROOT / "webapp").rglob("*")
        if p.is_file() and p.name != "README.md"
    }
    assert wanted, "webapp/ is empty"
    missing = wanted - data
    assert not missing, f"setup.cfg data_files misses {sorted(missing)}"
