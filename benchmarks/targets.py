"""Issue 12's and issue 6's targets, from one run's medians, each with its other form.

Every target is a dict with stable keys: ``id``, ``text``, ``value``, ``unit``,
``threshold``, ``op`` (``>=``/``<=``), ``met`` (True/False, or None when a scenario it needs
did not run), and ``detail`` (the other form: ratio when the value is µs, µs when a ratio).
"""

from __future__ import annotations

import statistics
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


def rps_ratio(doc: dict[str, Any], sid: str, base: str) -> float | None:
    """req/s of ``sid`` over ``base``'s: the median of the per-round ratios.

    Runs are interleaved, so round i of two scenarios ran seconds apart; pairing them
    cancels the shared machine's drift between rounds, which a ratio of two medians (taken
    from different rounds) does not. Falls back to the ratio of the medians when the rounds
    do not pair up."""
    x, y = doc["scenarios"].get(sid) or {}, doc["scenarios"].get(base) or {}
    xr = [r.get("rps") for r in x.get("runs") or []]
    yr = [r.get("rps") for r in y.get("runs") or []]
    pairs = [a / b for a, b in zip(xr, yr, strict=False) if a is not None and b]
    if pairs and len(xr) == len(yr):
        return statistics.median(pairs)
    xm, ym = _med(doc, sid, "rps"), _med(doc, base, "rps")
    return xm / ym if xm is not None and ym else None


def cpu_detail(doc: dict[str, Any], sid: str, base: str) -> str:
    """CPU per request of ``sid`` and ``base``, and their quotient: the throughput ratio the
    two would have on cores of their own (CPU-bound), steadier than req/s on a shared box."""
    x, y = _med(doc, sid, "cpu_us_per_request"), _med(doc, base, "cpu_us_per_request")
    if not x or not y:
        return ""
    return f"CPU {x:.0f} vs {y:.0f} us/request ({y / x:.2f}x as CPU-bound capacity)"


def _slow_closed(doc: dict[str, Any]) -> int:
    runs = (doc["scenarios"].get("b_toru_sdk_slow") or {}).get("runs") or []
    return sum(int(r.get("slow_closed_by_server") or 0) for r in runs)


def own_baseline(doc: dict[str, Any]) -> str:
    """The baseline with Toru's own worker class: issue 6's "(a)"."""
    return "a_asgi" if doc["config"].get("toru_worker_class") == "asgi" else "a_sync"


def ratio_detail(doc: dict[str, Any], sid: str) -> str:
    """``"0.80x of asgi direct, 3.20x of sync direct"`` (the parts that are known)."""
    parts = []
    for name, base in (("asgi", "a_asgi"), ("sync", "a_sync")):
        r = rps_ratio(doc, sid, base)
        if r is not None:
            parts.append(f"{r:.2f}x of {name} direct")
    return ", ".join(parts)


def _ceiling(doc: dict[str, Any]) -> str:
    """What (p) to the same SDK plugin did: the most any route to that plugin could do here
    with no supervisor and none of Toru's rules."""
    r = rps_ratio(doc, "p_one_hop_sdk", "a_asgi")
    if r is None:
        return ""
    return f"; the plain one-hop proxy to the same SDK plugin, (p), did {r:.2f}x"


def evaluate(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """All targets computable from ``doc``: issue 12's first, then issue 6's."""
    return issue12(doc) + issue6(doc)


def issue12(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The event-loop web tier's targets, against both baselines of the same run."""
    out: list[dict[str, Any]] = []
    m = lambda sid, key: _med(doc, sid, key)  # noqa: E731
    c = doc["config"]["connections"]
    sync_, asgi_ = m("a_sync", "rps"), m("a_asgi", "rps")
    b, raw = m("b_toru_sdk", "rps"), m("c_toru_raw", "rps")
    out.append(_target(
        "sdk_vs_asgi", f"(b) Toru -> SDK plugin, {c} conns, >= 0.75x asgi direct", rps_ratio(doc, "b_toru_sdk", "a_asgi"), ">=", 0.75, "ratio",
        f"{b:.0f} vs {asgi_:.0f} req/s; {cpu_detail(doc, 'b_toru_sdk', 'a_asgi')}{_ceiling(doc)}" if b and asgi_ else "",
    ))  # fmt: skip
    out.append(_target(
        "sdk_vs_sync", f"(b) Toru -> SDK plugin, {c} conns, >= 2.0x sync direct", rps_ratio(doc, "b_toru_sdk", "a_sync"), ">=", 2.0, "ratio",
        f"{b:.0f} vs {sync_:.0f} req/s; {cpu_detail(doc, 'b_toru_sdk', 'a_sync')}" if b and sync_ else "",
    ))  # fmt: skip
    out.append(_target(
        "one_conn_vs_asgi", f"(c) one-connection plugin through the supervisor, {c} conns, >= 0.60x asgi direct", rps_ratio(doc, "c_toru_raw", "a_asgi"), ">=", 0.60, "ratio",
        f"{raw:.0f} req/s; {ratio_detail(doc, 'c_toru_raw')}; {cpu_detail(doc, 'c_toru_raw', 'a_asgi')}" if raw else "",
    ))  # fmt: skip
    slow = m("b_toru_sdk_slow", "rps")
    kept = rps_ratio(doc, "b_toru_sdk_slow", "b_toru_sdk")
    drop = (1 - kept) * 100 if kept is not None else None
    out.append(_target(
        "slow_clients", f"{doc['config'].get('slow_clients', 64)} slow clients alongside (b) lower its req/s by <= 10%", drop, "<=", 10, "%",
        f"{slow:.0f} req/s with them, {b:.0f} without (same run); the server closed {_slow_closed(doc)} slow connections" if b and slow is not None else "",
    ))  # fmt: skip
    p50, p99 = m("b_toru_sdk_c64", "p50_us"), m("b_toru_sdk_c64", "p99_us")
    out.append(_target(
        "no_convoy", "p99 of (b) at 64 connections <= 3x its p50", p99 / p50 if p50 and p99 else None, "<=", 3.0, "ratio",
        f"p50 {p50:.0f} us, p99 {p99:.0f} us (p99-p50 = {p99 - p50:.0f} us)" if p50 and p99 else "",
    ))  # fmt: skip
    big = rps_ratio(doc, "b_toru_sdk_1m", "a_asgi_1m")
    out.append(_target(
        "large_answers", f"(b) with 1 MiB answers, {c} conns, >= 0.5x asgi direct with the same answers", big, ">=", 0.5, "ratio",
        f"{m('b_toru_sdk_1m', 'rps'):.0f} req/s; {rps_ratio(doc, 'b_toru_sdk_1m', 'a_sync_1m') or 0:.2f}x of sync direct; {cpu_detail(doc, 'b_toru_sdk_1m', 'a_asgi_1m')}" if big is not None else "",
    ))  # fmt: skip
    up = rps_ratio(doc, "b_toru_sdk_1mpost", "a_asgi_1mpost")
    out.append(_target(
        "large_requests", f"(b) with 1 MiB request bodies (echoed), {c} conns, >= 0.5x asgi direct with the same bodies", up, ">=", 0.5, "ratio",
        f"{m('b_toru_sdk_1mpost', 'rps'):.0f} req/s; {rps_ratio(doc, 'b_toru_sdk_1mpost', 'a_sync_1mpost') or 0:.2f}x of sync direct; {cpu_detail(doc, 'b_toru_sdk_1mpost', 'a_asgi_1mpost')}" if up is not None else "",
    ))  # fmt: skip
    return out


def issue6(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 6's targets; "(a)" is the baseline with Toru's own worker class."""
    out: list[dict[str, Any]] = []
    m = lambda sid, key: _med(doc, sid, key)  # noqa: E731
    own = own_baseline(doc)
    ca, cb = m(own, "cpu_us_per_request"), m("b_toru_sdk", "cpu_us_per_request")
    cpu_added = cb - ca if ca is not None and cb is not None else None
    out.append(_target(
        "added_cpu", f"added CPU per proxied request <= 150 us ((b)-{own}, all server processes)", cpu_added, "<=", 150, "us",
        f"ratio {cb / ca:.2f}x ({cb:.0f} vs {ca:.0f} us/request)" if cpu_added is not None and ca else "",
    ))  # fmt: skip

    la, lb = m(own + "_c1", "p50_us"), m("b_toru_sdk_c1", "p50_us")
    lat_added = lb - la if la is not None and lb is not None else None
    out.append(_target(
        "added_latency_c1", f"added p50 latency at 1 connection <= 100 us ((b)-{own})", lat_added, "<=", 100, "us",
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
