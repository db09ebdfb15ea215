"""Issue 6's targets, evaluated from one run's medians: each as a ratio AND as added µs.

Every target is a dict with stable keys: ``id``, ``text``, ``value``, ``unit``,
``threshold``, ``op`` (``>=``/``<=``), ``met`` (True/False, or None when a scenario it needs
did not run), and ``detail`` (the other form: ratio when the value is µs, µs when a ratio).
"""

from __future__ import annotations

from typing import Any


def _med(doc: dict[str, Any], sid: str, key: str) -> float | None:
    sc = doc["scenarios"].get(sid)
    if not sc or sc.get(key) is None:
        return None
    return sc[key]["median"]


def _target(
    tid: str, text: str, value: float | None, op: str, threshold: float, unit: str, detail: str = ""
) -> dict[str, Any]:
    met = None
    if value is not None:
        met = value >= threshold if op == ">=" else value <= threshold
    return {
        "id": tid,
        "text": text,
        "value": None if value is None else round(value, 3),
        "unit": unit,
        "op": op,
        "threshold": threshold,
        "met": met,
        "detail": detail,
    }


def evaluate(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """All targets computable from ``doc``."""
    out: list[dict[str, Any]] = []
    m = lambda sid, key: _med(doc, sid, key)  # noqa: E731

    a, b = m("a_baseline", "rps"), m("b_toru_sdk", "rps")
    c = doc["config"]["connections"]
    ratio = b / a if a and b else None
    added = None
    if a and b:
        # The server's wall time per request (1/throughput), (b) minus (a).
        added = 1e6 / b - 1e6 / a
    out.append(_target(
        "throughput_ratio", f"(b)/(a) requests/s at {c} connections >= 0.70", ratio, ">=", 0.70, "ratio",
        f"+{added:.0f} us of server time per request (1/throughput: {1e6 / b:.0f} vs {1e6 / a:.0f} us)" if added is not None else "",
    ))  # fmt: skip

    g = m("g_toru_hop", "rps")
    if g is not None:
        out.append(_target(
            "throughput_ratio_hop", f"(g)/(a) at {c} connections: every request through the supervisor, direct channel off (informational)", g / a if a else None, ">=", 0.70, "ratio",
            f"+{1e6 / g - 1e6 / a:.0f} us of server time per request; (b)/(g) = {b / g:.2f}" if a and b and g else "",
        ))  # fmt: skip

    ca, cb = m("a_baseline", "cpu_us_per_request"), m("b_toru_sdk", "cpu_us_per_request")
    cpu_added = cb - ca if ca is not None and cb is not None else None
    out.append(_target(
        "added_cpu", "added CPU per proxied request <= 150 us ((b)-(a), all server processes)", cpu_added, "<=", 150, "us",
        f"ratio {cb / ca:.2f}x ({cb:.0f} vs {ca:.0f} us/request)" if cpu_added is not None and ca else "",
    ))  # fmt: skip

    la, lb = m("a_baseline_c1", "p50_us"), m("b_toru_sdk_c1", "p50_us")
    lat_added = lb - la if la is not None and lb is not None else None
    out.append(_target(
        "added_latency_c1", "added p50 latency at 1 connection <= 100 us ((b)-(a))", lat_added, "<=", 100, "us",
        f"ratio {lb / la:.2f}x ({lb:.0f} vs {la:.0f} us)" if lat_added is not None and la else "",
    ))  # fmt: skip

    for q, limit in (("p50", 50), ("p99", 150)):
        d, e = m("d_floor_seq", f"{q}_us"), m("e_hop_seq", f"{q}_us")
        hop = e - d if d is not None and e is not None else None
        out.append(_target(
            f"hop_{q}", f"supervisor hop adds <= {limit} us at {q}, sequential ((e)-(d))", hop, "<=", limit, "us",
            f"ratio {e / d:.2f}x ({e:.0f} vs {d:.0f} us)" if hop is not None and d else "",
        ))  # fmt: skip

    e32, d32 = m("e_hop_32", "rps"), m("d_floor_32", "rps")
    out.append(_target(
        "hop_throughput", "messages/s through the supervisor, 32 in flight >= 50,000", e32, ">=", 50_000, "msg/s",
        f"{e32 / d32:.2f}x of the plugin alone ({d32:.0f} msg/s); {1e6 / e32:.1f} us/message" if e32 and d32 else "",
    ))  # fmt: skip

    em, dm = m("e_hop_32_minimal", "rps"), m("d_minimal_32", "rps")
    if em is not None:
        out.append(_target(
            "hop_throughput_minimal", "messages/s through the supervisor, 32 in flight, to the minimal plugin (the supervisor's capacity; informational)", em, ">=", 50_000, "msg/s",
            f"{em / dm:.2f}x of the minimal plugin alone ({dm:.0f} msg/s); {1e6 / em:.1f} us/message" if em and dm else "",
        ))  # fmt: skip

    p50, p99 = m("b_toru_sdk_c64", "p50_us"), m("b_toru_sdk_c64", "p99_us")
    out.append(_target(
        "no_convoy", "p99 of (b) at 64 connections <= 3x its p50", p99 / p50 if p50 and p99 else None, "<=", 3.0, "ratio",
        f"p50 {p50:.0f} us, p99 {p99:.0f} us (p99-p50 = {p99 - p50:.0f} us)" if p50 and p99 else "",
    ))  # fmt: skip

    counts = sorted(
        (sc["params"]["plugins"], sc["rps"]["median"])
        for sc in doc["scenarios"].values()
        if sc.get("group") == "scale_plugins" and sc.get("rps")
    )
    drop = None
    if len(counts) >= 2:
        drop = 1 - counts[-1][1] / counts[0][1]
    out.append(_target(
        "plugin_count", "throughput drop from 1 to 50 enabled plugins <= 10%", None if drop is None else drop * 100, "<=", 10, "%",
        ", ".join(f"{n} plugins: {r:.0f} req/s" for n, r in counts),
    ))  # fmt: skip

    leak = doc.get("leak") or {}
    growth = leak.get("rss_growth_bytes_after_warmup")
    out.append(_target(
        "no_leak", f"supervisor RSS growth over {leak.get('requests', 1_000_000):,} proxied requests <= 1 MB (after warm-up)",
        None if growth is None else growth / 1e6, "<=", 1.0, "MB",
        f"first/last RSS {leak['samples'][0]['rss_bytes'] / 1e6:.1f}/{leak['samples'][-1]['rss_bytes'] / 1e6:.1f} MB" if leak.get("samples") and leak["samples"][0].get("rss_bytes") else "",
    ))  # fmt: skip
    return out
