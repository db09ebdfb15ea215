"""The one place tests take time budgets from, so the suite survives a loaded machine.

Shared CI machines here run 10-20x slower than a quiet one. Every product timeout a test
sets (``TORU_*_TIMEOUT`` and friends) and every deadline it polls against comes from this
module, multiplied by ``TORU_TEST_TIME_SCALE`` (default 1; set 3 or more on a busy box).
A test that wants a timeout to *fire* sets a short product timeout here and makes the plugin
take far longer than that (say 0.5 s against a plugin that sleeps for ``scaled(30)``), so
the outcome never hinges on how fast the machine is.
"""

from __future__ import annotations

import os

SCALE = float(os.environ.get("TORU_TEST_TIME_SCALE", "1") or 1)


def scaled(seconds: float) -> float:
    """``seconds`` stretched by the machine's slowness factor."""
    return seconds * SCALE


# Budgets for things that must *not* time out in a test: generous on a quiet machine, and
# scaled on top of that. A slow --metadata of a Python zipapp takes 2.5-4.5 s under load.
START = scaled(30.0)  # a plugin creating its socket
METADATA = scaled(30.0)  # `<binary> --metadata`
HEALTH = scaled(15.0)  # a health probe of an idle plugin
HTTP = scaled(30.0)  # a proxied request that is expected to complete
SHUTDOWN_GRACE = scaled(3.0)  # shutdown -> SIGTERM -> SIGKILL in tests that stop plugins
WAIT = scaled(60.0)  # polling for a condition that should come true


def product_env(**overrides: float | str) -> dict[str, str]:
    """``TORU_*`` timeouts for a supervisor or ``toru serve`` under test.

    Keyword names are the env var without the ``TORU_`` prefix (``HTTP_TIMEOUT=0.5``);
    numbers given here are used as they are (the caller decides whether to scale them).
    """
    env = {
        "TORU_START_TIMEOUT": str(START),
        "TORU_METADATA_TIMEOUT": str(METADATA),
        "TORU_HEALTH_TIMEOUT": str(HEALTH),
        "TORU_HTTP_TIMEOUT": str(HTTP),
        "TORU_SHUTDOWN_GRACE": str(SHUTDOWN_GRACE),
    }
    for key, value in overrides.items():
        env[f"TORU_{key}"] = str(value)
    return env
