"""When to restart a crashed plugin, and when to give up on it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RestartPolicy:
    """Backoff delays by consecutive failure count; give up after ``max_failures``.

    ``backoff`` is indexed by failures-1 and its last value repeats (1, 2, 4, 8, 16, 16, ...).
    A plugin that stayed up ``reset_after`` seconds starts counting from zero again.
    """

    backoff: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0, 16.0)
    max_failures: int = 10
    reset_after: float = 60.0

    def delay(self, failures: int) -> float:
        """Seconds to wait before restart number ``failures`` (1-based)."""
        if not self.backoff:
            return 0.0
        return self.backoff[min(max(failures, 1), len(self.backoff)) - 1]

    def gives_up(self, failures: int) -> bool:
        return failures >= self.max_failures

    def failures_after_crash(self, failures: int, uptime: float) -> int:
        """The new consecutive-failure count after a crash that followed ``uptime`` seconds up."""
        return 1 if uptime >= self.reset_after else failures + 1
