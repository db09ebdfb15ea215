"""Write a run's results: ``results.json`` (the stable format), ``results.md``, ``results.png``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .targets import issue12, rps_ratio

GROUP_TITLES = {
    "core": "Scenarios (a)-(h)",
    "scale_concurrency": "Throughput and p99 against concurrency",
    "scale_body": "Throughput and p99 against body size",
    "scale_plugins": "Throughput against the number of enabled plugins",
}


def _rng(s: dict[str, Any] | None, scale: float = 1.0, fmt: str = "{:.0f}") -> str:
    if not s:
        return "-"
    med, lo, hi = (s[k] / scale for k in ("median", "min", "max"))
    if s.get("n", 1) <= 1:
        return fmt.format(med)
    return f"{fmt.format(med)} ({fmt.format(lo)}-{fmt.format(hi)})"


def _roles(sc: dict[str, Any]) -> str:
    roles = sc.get("cpu_us_per_request_by_role") or {}
    sys_ = sc.get("sys_cpu_us_per_request_by_role") or {}
    parts = []
    for r, v in roles.items():
        if v is not None and v >= 0.5:
            k = sys_.get(r)
            parts.append(f"{r} {v:.0f}" + (f" ({k:.0f} sys)" if k is not None else ""))
    client = sc.get("client_cpu_us_per_request")
    if client is not None:  # the load generator, not a server process: not in the total
        parts.append(f"[client {client:.0f}]")
    return ", ".join(parts) or "-"


def base_for(sid: str, base: str) -> str:
    """The baseline to compare ``sid`` with: the one of the same variant (``b_toru_sdk_1m``
    against ``a_asgi_1m``, ``*_c1`` against ``a_*_c1``), else ``base`` itself."""
    for suffix in ("_1m", "_1mpost", "_c1"):
        if sid.endswith(suffix):
            return base + suffix
    return base


def _x(doc: dict[str, Any], sc: dict[str, Any], base: str) -> str:
    """``sc``'s req/s as a multiple of a baseline's (paired by round), for HTTP scenarios."""
    if sc.get("kind") != "http" or not sc.get("rps"):
        return "-"
    r = rps_ratio(doc, sc["id"], base_for(sc["id"], base))
    return "-" if r is None else f"{r:.2f}"


def scenario_table(doc: dict[str, Any], scenarios: list[dict[str, Any]]) -> str:
    """Markdown table: median (min-max) of every metric, req/s against both baselines."""
    rows = [
        "| scenario | conns | req/s | x of asgi direct | x of sync direct | p50 ms | p99 ms | max ms | CPU µs/req | CPU µs/req by process (of it kernel) | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for sc in scenarios:
        if sc.get("error") and not sc.get("rps"):
            rows.append(
                f"| {sc['label']} | {sc['connections']} | failed: {sc['error'][:80]} | | | | | | | | |"
            )
            continue
        rows.append(
            f"| {sc['label']} | {sc['connections']} | {_rng(sc['rps'])} | {_x(doc, sc, 'a_asgi')} | {_x(doc, sc, 'a_sync')} | "
            f"{_rng(sc['p50_us'], 1000, '{:.2f}')} | {_rng(sc['p99_us'], 1000, '{:.2f}')} | "
            f"{_rng(sc['max_us'], 1000, '{:.1f}')} | {_rng(sc['cpu_us_per_request'])} | {_roles(sc)} | {sc['errors']} |"
        )
    return "\n".join(rows)


SUMMARY_ROWS = (
    "a_sync", "a_asgi", "p_one_hop", "p_one_hop_sdk", "h_app_only", "b_toru_sdk", "c_toru_raw", "b_toru_sdk_slow", "b_toru_sdk_c64",
    "a_sync_1m", "a_asgi_1m", "b_toru_sdk_1m", "a_sync_1mpost", "a_asgi_1mpost", "b_toru_sdk_1mpost",
)  # fmt: skip


def summary(doc: dict[str, Any]) -> str:
    """The short table printed first: baselines, Toru's routes, ratios, issue 12's targets."""
    rows = [
        "| | req/s | x of asgi direct | x of sync direct | p50 ms | p99 ms | CPU µs/req |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for sid in SUMMARY_ROWS:
        sc = doc["scenarios"].get(sid)
        if not sc:
            continue
        if not sc.get("rps"):
            rows.append(f"| {sc['label']} | failed: {(sc.get('error') or '')[:60]} | | | | | |")
            continue
        cpu = sc.get("cpu_us_per_request")
        rows.append(
            f"| {sc['label']} | {sc['rps']['median']:.0f} | {_x(doc, sc, 'a_asgi')} | {_x(doc, sc, 'a_sync')} | "
            f"{sc['p50_us']['median'] / 1000:.2f} | {sc['p99_us']['median'] / 1000:.2f} | "
            + (f"{cpu['median']:.0f} |" if cpu else "- |")
        )
    rows += ["", "| target (issue 12) | value | met |", "|---|---:|:---:|"]
    rows += [f"| {t['text']} | {_value(t)} | {_met(t)} |" for t in issue12(doc)]
    return "\n".join(rows)


def _met(t: dict[str, Any]) -> str:
    return {True: "yes", False: "**no**", None: "not measured"}[t["met"]]


def _value(t: dict[str, Any]) -> str:
    return "-" if t["value"] is None else f"{t['value']:,.2f} {t['unit']}"


def targets_table(targets: list[dict[str, Any]]) -> str:
    """Markdown table of the issue's targets."""
    rows = ["| target | value | threshold | met | other form |", "|---|---:|---:|:---:|---|"]
    for t in targets:
        rows.append(
            f"| {t['text']} | {_value(t)} | {t['op']} {t['threshold']:,} {t['unit']} | {_met(t)} | {t['detail']} |"
        )
    return "\n".join(rows)


def markdown(doc: dict[str, Any]) -> str:
    """The whole run as Markdown."""
    m, c = doc["machine"], doc["config"]
    parts = [f"# Toru benchmark ({doc['mode']}) — {doc['started_at']}", ""]
    if doc["scenarios"]:
        parts += [summary(doc), ""]
    parts += [
        f"Command: `{doc['command']}`  ",
        f"Machine: {m['cpus']} CPUs ({m['cpu_model']}), {m['memory_mb']} MB, Linux {m['kernel']}, "
        f"Python {m['python']}  ",
        (
            f"Target: {c['target']}; "
            if c.get("target")
            else f"Servers: gunicorn {c['workers']} workers each; Toru `{c.get('toru_worker_class', c['worker_class'])}`, "
            f"baselines `{c['worker_class']}` and `asgi` (uvloop); "
        )
        + f"wrk 1 thread; {c['runs']} interleaved runs of {c['duration_s']:g} s (socket scenarios {c['socket_duration_s']:g} s); "
        + "cells are median (min-max) over runs.",
        "",
    ]
    by_group: dict[str, list[dict[str, Any]]] = {}
    for sc in doc["scenarios"].values():
        by_group.setdefault(sc.get("group", "core"), []).append(sc)
    for group, title in GROUP_TITLES.items():
        if group in by_group:
            parts += [f"## {title}", "", scenario_table(doc, by_group[group]), ""]
    parts += ["## Targets (issues 12 and 6)", "", targets_table(doc["targets"]), ""]
    for what, err in (doc.get("start_errors") or {}).items():
        parts += [f"Not started: {what}: `{err[:300]}`", ""]
    leak = doc.get("leak")
    if leak:
        parts += ["## Leak check (supervisor RSS)", "", "| requests | RSS MB |", "|---:|---:|"]
        for s in leak["samples"]:
            rss = s.get("rss_bytes")
            parts.append(
                f"| {s['requests']:,} | {rss / 1e6:.1f} |" if rss else f"| {s['requests']:,} | - |"
            )
        parts.append("")
    return "\n".join(parts)


def chart(doc: dict[str, Any], path: Path) -> bool:
    """A PNG: requests/s (with min-max bars) and p50/p99 latency of the core scenarios.

    Returns False (and writes nothing) when matplotlib is not installed (``pip install
    '.[bench]'``).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    core = [s for s in doc["scenarios"].values() if s.get("group") == "core" and s.get("rps")]
    if not core:
        return False
    labels = [s["id"] for s in core]
    rps = [s["rps"]["median"] for s in core]
    err = [
        [s["rps"]["median"] - s["rps"]["min"] for s in core],
        [s["rps"]["max"] - s["rps"]["median"] for s in core],
    ]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, 5.5))
    colors = [
        "#555555" if s["id"].startswith("a_asgi") else "#aaaaaa" if s["id"].startswith("a_")
        else "#3b78c2" if s["kind"] == "http" else "#d08a2b"
        for s in core
    ]  # fmt: skip
    ax1.barh(labels, rps, xerr=err, color=colors)
    for sid, style in (("a_asgi", "-"), ("a_sync", "--")):  # the two references
        ref = (doc["scenarios"].get(sid) or {}).get("rps")
        if ref:
            ax1.axvline(ref["median"], color="#333333", linestyle=style, linewidth=0.8,
                        label=f"{sid[2:]} direct, 16 conns")  # fmt: skip
    if ax1.get_legend_handles_labels()[0]:
        ax1.legend(loc="lower right")
    ax1.set_xscale("log")
    ax1.set_xlabel("requests/s (median, min-max; log scale)")
    ax1.invert_yaxis()
    p50 = [s["p50_us"]["median"] / 1000 for s in core]
    p99 = [s["p99_us"]["median"] / 1000 for s in core]
    y = range(len(core))
    ax2.barh([i - 0.2 for i in y], p50, height=0.4, label="p50", color="#3b78c2")
    ax2.barh([i + 0.2 for i in y], p99, height=0.4, label="p99", color="#c24a3b")
    ax2.set_yticks(list(y), labels)
    ax2.set_xscale("log")
    ax2.set_xlabel("latency ms (median over runs; log scale)")
    ax2.invert_yaxis()
    ax2.legend()
    fig.suptitle(
        f"Toru proxy path — {doc['mode']} run {doc['started_at']} ({doc['machine']['cpus']} CPUs)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_all(doc: dict[str, Any], out: Path) -> dict[str, Path]:
    """Write JSON, Markdown and (if matplotlib is there) PNG into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "markdown": out / "results.md"}
    paths["json"].write_text(json.dumps(doc, indent=2) + "\n")
    paths["markdown"].write_text(markdown(doc))
    png = out / "results.png"
    if chart(doc, png):
        paths["png"] = png
    return paths
