"""Printing benchmark runs: one line per run, and per (system, mode) the median with min-max of each figure."""

from __future__ import annotations

import statistics
from collections import defaultdict
from typing import Any

#: ``--mode`` -> the rates (frames/s; None = as fast as it goes) it runs, in this order.
MODES: dict[str, list[float | None]] = {"max": [None], "5000": [5000.0], "20000": [20000.0],
                                        "all": [None, 5000.0, 20000.0]}  # fmt: skip

_COLUMNS = [("events_per_s", "events/s", "{:,.0f}"), ("p50_ms", "p50 ms", "{:.2f}"), ("p99_ms", "p99 ms", "{:.2f}"),
            ("max_ms", "max ms", "{:.1f}"), ("cpu_s_per_100k", "CPU-s/100k", "{:.2f}"),
            ("redis_cpu_s_per_100k", "Redis CPU-s/100k", "{:.2f}"), ("sut_core_pct", "core %", "{:.0f}"),
            ("events_per_cpu_s", "events/CPU-s", "{:,.0f}"),
            ("rss_mb", "peak RSS MB", "{:.0f}")]  # fmt: skip


def _check(run: dict[str, Any]) -> str:
    if run["correct"]:
        return f"ok ({run['stored']:,} exact, in order, 0 dup)"
    announced = sum(run["announced"].values())
    told = (f"all announced: gaps {run['announced']}" if announced == run["missing"] else
            f"UNANNOUNCED: {run['missing'] - announced} (gaps {run['announced']})")  # fmt: skip
    return (f"FAILED: {run['stored']:,} stored, {run['missing']} missing ({told}), {run['duplicates']} dup, "
            f"in order {run['in_order']}, exact {run['exact']}")  # fmt: skip


def print_rows(runs: list[dict[str, Any]]) -> None:
    """One line per run."""
    for r in runs:
        cells = " ".join(f"{label} {fmt.format(r[key])}" for key, label, fmt in _COLUMNS)
        print(f"{r['sut']:<11}{r['mode']:<9}{cells}  check {_check(r)}", flush=True)


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Print and return, per (system, mode), each figure as (median, min, max) and how many runs were correct."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in runs:
        groups[(r["sut"], r["mode"])].append(r)
    out = []
    for (sut, mode), group in groups.items():
        row: dict[str, Any] = {"sut": sut, "mode": mode, "runs": len(group),
                               "correct": sum(1 for r in group if r["correct"])}  # fmt: skip
        cells = []
        for key, label, fmt in _COLUMNS:
            values = [r[key] for r in group]
            row[key] = (statistics.median(values), min(values), max(values))
            med, lo, hi = row[key]
            cells.append(f"{label} {fmt.format(med)} ({fmt.format(lo)}-{fmt.format(hi)})")
        print(f"{sut:<11}{mode:<9}" + "  ".join(cells) + f"  correct {row['correct']}/{row['runs']}", flush=True)
        out.append(row)
    return out
