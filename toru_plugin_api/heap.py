"""Keep the cyclic GC off the request path's tail: freeze what start-up allocated.

PERF: CPython's oldest-generation collection walks every tracked object. A serving process
(web worker, supervisor, plugin) carries tens of thousands of them from its imports and
start-up that live for ever, so each full collection stalled every request in flight:
gen2 pauses of 170-340 ms were logged in web workers under ``wrk -c64`` (gc.callbacks),
i.e. the p99. ``gc.freeze()`` moves them to the permanent generation, which collections
skip; what requests allocate is still collected as before.
"""

from __future__ import annotations

import gc

__all__ = ["freeze_startup_heap"]


def freeze_startup_heap() -> None:
    """Collect once, then exempt every surviving object from later collections.

    Call it once per process when start-up is over (after a fork, in the child).
    """
    gc.collect()
    gc.freeze()
