"""The one A/B helper of the tools: run variants alternately, report medians and ratios.

A shared 2-core machine drifts by tens of percent within minutes, so a comparison is only
fair when its variants take turns: ``alternate`` runs every variant once per round, in
A B ... order on even rounds and reversed (... B A) on odd ones, so slow drift hits all of
them alike. Each variant's ``run()`` returns a flat ``{metric: number}`` dict; the result is
the median of every metric over the rounds, and ``table`` prints each median with its ratio
to the first variant of its group (e.g. the old tree, or the baseline server).
"""

from __future__ import annotations

import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field


@dataclass
class Variant:
    """One side of a comparison: a name, what to run once, and the group it is compared in."""

    name: str
    run: Callable[[], dict[str, float]]
    group: str = ""


@dataclass
class Result:
    """Every round's numbers of one variant, and their medians."""

    name: str
    group: str
    samples: list[dict[str, float]] = field(default_factory=list)

    @property
    def medians(self) -> dict[str, float]:
        keys = {k for s in self.samples for k in s}
        return {k: statistics.median(s[k] for s in self.samples if k in s) for k in sorted(keys)}


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def alternate(
    variants: Sequence[Variant], rounds: int, say: Callable[[str], None] = _say
) -> list[Result]:
    """``rounds`` rounds of every variant, alternating the order; results in input order."""
    results = [Result(v.name, v.group) for v in variants]
    pairs = list(zip(variants, results, strict=True))
    for r in range(rounds):
        say(f"round {r + 1}/{rounds}")
        for v, res in pairs if r % 2 == 0 else pairs[::-1]:
            res.samples.append(v.run())
    return results


Column = tuple[str, str, str]  # (metric key, header, format of the median)


def table(results: Sequence[Result], columns: Sequence[Column], ratio: str | None = None) -> str:
    """Markdown: one row per variant, the median of each column, and (``ratio``: a metric
    key) that metric's median over the first variant's of the same group."""
    head = ["variant", *(h for _, h, _ in columns)]
    first: dict[str, Result] = {}
    for res in results:
        first.setdefault(res.group, res)
    if ratio:
        label = next((h for k, h, _ in columns if k == ratio), ratio)
        vs = "the first of its group" if len(first) > 1 else results[0].name
        head.append(f"{label}: x of {vs}")
    rows = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for res in results:
        med = res.medians
        name = f"{res.name} ({res.group})" if res.group else res.name
        cells = [name] + [fmt.format(med[k]) if k in med else "-" for k, _, fmt in columns]
        if ratio:
            base = first[res.group].medians.get(ratio)
            cells.append(f"{med[ratio] / base:.2f}x" if base and ratio in med else "-")
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)
