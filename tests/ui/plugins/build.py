"""Install the UI tests' misbehaving plugins as ``<id>.binary`` launchers, plus one whose
metadata is invalid and one that never creates its socket."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
IDS = ("ui-throw-load", "ui-throw-mount", "ui-api-only", "ui-view-ok")
NO_SOCKET = """#!/bin/sh
if [ "$1" = "--metadata" ]; then
  echo '{"id": "ui-no-socket", "name": "No Socket", "version": "0.1.0", "icon": "S", "route": "/ui-no-socket"}'
  exit 0
fi
echo "listening soon (not really)" >&2
exec sleep 3600
"""


def build(out: Path, ids: tuple[str, ...] = IDS, no_socket: bool = False) -> dict[str, Path]:
    """Write one executable launcher per id into ``out``; returns {id: path}.

    ``no_socket`` adds ``ui-no-socket``, which runs but never listens: the supervisor's
    start timeout fires and, after ``max_failures`` tries, the plugin is ``failed``.
    """
    out.mkdir(parents=True, exist_ok=True)
    found = {}
    if no_socket:
        target = out / "ui-no-socket.binary"
        target.write_text(NO_SOCKET)
        target.chmod(0o755)
        found["ui-no-socket"] = target
    for plugin_id in ids:
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
