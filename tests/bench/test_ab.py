"""The tools' shared A/B helper: alternation order, medians, ratios (in-process, no timing)."""

from __future__ import annotations

from collections.abc import Callable

from benchmarks.tools.ab import Variant, alternate, table


def test_alternate_reverses_the_order_every_other_round_and_reports_medians() -> None:
    calls: list[str] = []

    def variant(name: str, values: list[float]) -> Variant:
        it = iter(values)

        def run() -> dict[str, float]:
            calls.append(name)
            return {"rps": next(it)}

        return Variant(name, run)

    results = alternate(
        [variant("old", [100, 300, 200]), variant("new", [150, 450, 300])], 3, say=lambda _: None
    )
    assert calls == ["old", "new", "new", "old", "old", "new"]
    assert [r.medians["rps"] for r in results] == [200, 300]
    text = table(results, [("rps", "req/s", "{:.0f}")], ratio="rps")
    assert "| old | 200 | 1.00x |" in text
    assert "| new | 300 | 1.50x |" in text


def test_table_ratios_are_within_a_group() -> None:
    def fixed(v: float) -> Callable[[], dict[str, float]]:
        return lambda: {"cpu_us": v}

    results = alternate(
        [
            Variant("a", fixed(10), "seq"),
            Variant("b", fixed(20), "seq"),
            Variant("a", fixed(4), "32"),
            Variant("b", fixed(2), "32"),
        ],
        1,
        say=lambda _: None,
    )
    text = table(results, [("cpu_us", "CPU", "{:.0f}")], ratio="cpu_us")
    assert "| b (seq) | 20 | 2.00x |" in text
    assert "| b (32) | 2 | 0.50x |" in text
