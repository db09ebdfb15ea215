"""Install the UI tests' misbehaving plugins as ``<id>.binary`` launchers, plus one whose
metadata is invalid."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
IDS = ("ui-throw-load", "ui-throw-mount")


def build(out: Path) -> dict[str, Path]:
    """Write one executable launcher per id into ``out``; returns {id: path}."""
    out.mkdir(parents=True, exist_ok=True)
    found = {}
    for plugin_id in IDS:
        target = out / f"{plugin_id}.binary"
        target.write_text(
            "#!/bin/sh\n"
            f'exec "{sys.executable}" "{HERE / "broken_bundle.py"}" --as {plugin_id} "$@"\n'
        )
        target.chmod(0o755)
        found[plugin_id] = target
    # Metadata that fails validation: the host lists it as `invalid` with the reason.
    bad = out / "ui-bad-meta.binary"
    bad.write_text('#!/bin/sh\necho \'{"id": "../escape", "name": "Bad", "route": "x"}\'\n')
    bad.chmod(0o755)
    found["ui-bad-meta"] = bad
    return found
