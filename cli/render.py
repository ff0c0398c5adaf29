"""Rich output of the CLI: ``/status`` as tables, subscribe answers, tail rows. Pure functions of JSON bodies.

States are coloured and always written out too (a terminal without colour, or a colour-blind reader, loses
nothing): ``active``/``open``/``alive`` green, ``pending``/``connecting``/``subscribing``/``login`` yellow,
``failed``/``backoff``/``dead`` red, anything else plain. A stale subscription shows ``active (stale)`` in yellow.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

STATE_STYLES = {
    "active": "green", "open": "green", "alive": "green", "ok": "green", "ready": "green",
    "pending": "yellow", "connecting": "yellow", "subscribing": "yellow", "login": "yellow", "stale": "yellow",
    "suspended": "yellow", "stopping": "yellow",
    "failed": "bold red", "backoff": "red", "dead": "bold red", "error": "bold red", "unavailable": "bold red",
}  # fmt: skip


def state_text(state: str, suffix: str = "") -> Text:
    """``state`` (plus ``suffix``) in its colour."""
    style = STATE_STYLES.get("stale" if suffix else state, "")
    return Text(f"{state}{suffix}", style=style)


def when(ms: Any) -> str:
    """Epoch ms -> ``HH:MM:SS`` UTC; ``-`` for none."""
    if not isinstance(ms, (int, float)) or ms <= 0:
        return "-"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%H:%M:%S")


def filter_subscriptions(
    records: Iterable[Mapping[str, Any]], *, state: str | None = None, exchange: str | None = None,
    topic: str | None = None, stale: bool = False,
) -> list[Mapping[str, Any]]:
    """The records matching every given filter (``topic`` is a prefix). The server may have applied them already
    (``/status?state=..``); applying them again here is harmless and keeps an older server's answer right."""
    out = []
    for record in records:
        name = str(record.get("topic", ""))
        if state and record.get("state") != state:
            continue
        if exchange and name.split(":", 1)[0] != exchange:
            continue
        if topic and not name.startswith(topic):
            continue
        if stale and not record.get("stale"):
            continue
        out.append(record)
    return out


def summary_of(records: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, int]]:
    """Subscription counts ``{"state": {..}, "exchange": {..}}`` (what ``/status?summary=1`` returns, computed)."""
    by_state: Counter[str] = Counter()
    by_exchange: Counter[str] = Counter()
    for record in records:
        by_state[str(record.get("state"))] += 1
        by_state["stale"] += bool(record.get("stale"))
        by_exchange[str(record.get("topic", "")).split(":", 1)[0]] += 1
    return {"state": dict(sorted(by_state.items())), "exchange": dict(sorted(by_exchange.items()))}


def workers_table(workers: Sequence[Mapping[str, Any]]) -> Table:
    """One row per worker: id, alive, connections, backlog, dropped, heartbeat."""
    table = Table(title="workers", title_justify="left")
    for column in ("worker", "state", "connections", "backlog", "dropped", "heartbeat"):
        table.add_column(column)
    for w in workers:
        publisher = w.get("publisher") or {}
        backlog = int(publisher.get("queue_depth") or 0) + int(publisher.get("inflight") or 0)
        table.add_row(str(w.get("id", "?")), state_text("alive" if w.get("alive") else "dead"),
                      str(len(w.get("connections") or [])), str(backlog), str(publisher.get("dropped", 0)),
                      when(w.get("heartbeat_at")))  # fmt: skip
    return table


def connections_table(connections: Sequence[Mapping[str, Any]]) -> Table:
    """One row per connection: id, exchange, state, worker, topics, frames, reconnects, last error."""
    table = Table(title="connections", title_justify="left")
    for column in ("connection", "exchange", "state", "worker", "topics", "frames", "reconnects", "last error"):
        table.add_column(column)
    for c in connections:
        table.add_row(str(c.get("id", "?")), str(c.get("exchange", "")), state_text(str(c.get("state", "?"))),
                      str(c.get("worker", "")), str(c.get("topics", "")), str(c.get("messages_received", "")),
                      str(c.get("reconnects", "")), str(c.get("last_error") or ""))  # fmt: skip
    return table


def subscriptions_table(records: Sequence[Mapping[str, Any]], title: str = "subscriptions") -> Table:
    """One row per subscription: topic, state (``active (stale)`` when stale), connection, last event, error."""
    table = Table(title=title, title_justify="left")
    for column in ("topic", "state", "connection", "last event", "error"):
        table.add_column(column)
    for s in records:
        state = str(s.get("state", "?"))
        table.add_row(str(s.get("topic", "?")), state_text(state, " (stale)" if s.get("stale") else ""),
                      str(s.get("conn") or ""), when(s.get("last_event_at")), str(s.get("error") or ""))  # fmt: skip
    return table


def counts_table(title: str, counts: Mapping[str, Any]) -> Table:
    """A two-column table of ``counts`` (nested dicts flattened as ``outer.inner``)."""
    table = Table(title=title, title_justify="left")
    table.add_column("key")
    table.add_column("count", justify="right")
    for key, value in counts.items():
        if isinstance(value, Mapping):
            for inner, n in value.items():
                table.add_row(state_text(str(inner)) if key == "state" else f"{key}.{inner}", str(n))
        else:
            table.add_row(str(key), str(value))
    return table


def print_status(console: Console, body: Mapping[str, Any], subscriptions: Sequence[Mapping[str, Any]]) -> None:
    """The whole status: pause flag, workers, connections, ``subscriptions`` (already filtered), gaps."""
    paused = body.get("paused")
    console.print(Text("paused" if paused else "running", style="yellow" if paused else "green"),
                  f" desired version {body.get('desired_version', '?')}")  # fmt: skip
    console.print(workers_table(body.get("workers") or []))
    console.print(connections_table(body.get("connections") or []))
    console.print(subscriptions_table(subscriptions))
    if body.get("gaps"):
        console.print(counts_table("gaps by reason", body["gaps"]))


def tail_row(topic_width: int, data: Any) -> str:
    """A compact one-line view of an event for ``tail --pretty``: type, topic-ish, the key figures."""
    if not isinstance(data, Mapping):
        return str(data)
    kind = str(data.get("type", "?"))
    where = ":".join(str(data.get(k)) for k in ("exchange", "symbol") if data.get(k) is not None)
    keys = {"kline": ("timeframe", "open", "high", "low", "close", "volume", "closed"),
            "trade": ("price", "size", "side", "trade_id"),
            "ticker": ("last", "mark_price", "change_pct_24h"),
            "bookticker": ("bid_price", "bid_size", "ask_price", "ask_size"),
            "gap": ("topic", "reason", "since", "until")}.get(kind, ())  # fmt: skip
    figures = " ".join(f"{k}={data.get(k)}" for k in keys if k in data)
    return f"{when(data.get('ts_received') or data.get('ts_exchange'))} {kind:<10} {where:<{topic_width}} {figures}"
