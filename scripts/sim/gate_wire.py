"""Gate.io USDT futures WebSocket v4 wire protocol for the simulator (exchanges.md §2.2-2.5).

Pure functions: parse one client text frame into a ``GateRequest`` and build the reply frames.
The venue (``scripts.sim.gate``, ``scripts.sim.gate_private``) owns the sockets, replays and faults.

Natives (the keys of ``SimConnection.subscribed``, ``sent_data`` and ``ExchangeSimulator.reject``):
``f"{channel}:{contract}"`` — ``futures.trades:BTC_USDT``, ``futures.tickers:BTC_USDT``,
``futures.book_ticker:WOO_USDT``, ``futures.order_book_update:RDNT_USDT`` (whatever frequency and
level were asked) — and ``f"futures.candlesticks:{interval}_{contract}"`` for candles
(``futures.candlesticks:1m_BTC_USDT``, the push's own ``n``).

Facts marked UNVERIFIED are choices where the reference says nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import orjson

from scripts.sim.tapes import GATE_CONTRACTS

__all__ = [
    "CANDLE_INTERVALS",
    "LIST_CHANNELS",
    "OBU_LEVELS",
    "ONE_CONTRACT_CHANNELS",
    "GateRequest",
    "ack_frame",
    "error_frame",
    "native_key",
    "parse_request",
    "pong_frame",
]

#: Channels whose payload is a list of contracts (§2.4).
LIST_CHANNELS = frozenset({"futures.trades", "futures.tickers", "futures.book_ticker"})
#: Channels that take exactly one contract per request (§2.4).
ONE_CONTRACT_CHANNELS = frozenset({"futures.candlesticks", "futures.order_book_update"})
#: futures.candlesticks intervals (§2.5).
CANDLE_INTERVALS = frozenset({"10s", "1m", "5m", "15m", "30m", "1h", "4h", "8h", "1d", "7d"})
#: futures.order_book_update frequency -> accepted levels (§2.5: 20ms only with level 20).
OBU_LEVELS: dict[str, frozenset[str]] = {"20ms": frozenset({"20"}), "100ms": frozenset({"100", "50", "20"})}
_CONTRACT_SHAPE = re.compile(r"[A-Z0-9]+_[A-Z0-9]+")
_PRICE_PREFIXES = ("mark_", "index_")  # candles of the mark / index price (§2.5)

# Error codes (§2.4): 1 invalid argument struct, 2 invalid argument.
_BAD_STRUCT = 1
_BAD_ARG = 2


def native_key(channel: str, contract: str, interval: str | None = None) -> str:
    """``futures.trades:BTC_USDT``; candles ``futures.candlesticks:1m_BTC_USDT``."""
    return f"{channel}:{interval}_{contract}" if interval is not None else f"{channel}:{contract}"


@dataclass(slots=True)
class GateRequest:
    """One parsed client frame.

    ``kind``: ``ping`` | ``subscribe`` | ``unsubscribe`` | ``invalid``. ``natives``: the streams the
    request names (in payload order). ``error``: ``(code, message)`` when it must be refused.
    ``id_sent`` tells an absent ``id`` from ``"id": null``; acks echo it only when sent.
    """

    kind: str
    channel: str = ""
    event: str = ""
    id: Any = None
    id_sent: bool = False
    natives: list[str] = field(default_factory=list)
    error: tuple[int, str] | None = None


def parse_request(text: str, rejects: dict[str, str | None] | None = None) -> GateRequest:
    """Parse one client frame; validates structure, channel, payload and contracts.

    Errors (§2.4; message texts other than ``unknown contract <C>`` are UNVERIFIED):

    - not JSON, not an object, ``channel`` not a string, ``event`` other than subscribe/unsubscribe,
      ``payload`` not a list of strings -> code 1 ``invalid argument struct: ...``;
    - channel not served (anything but the five public channels below) -> code 2 ``unknown channel <ch>``;
    - empty payload, bad interval/frequency/level -> code 2 ``invalid argument: ...``;
    - more than one contract for candlesticks / order_book_update -> code 2
      ``invalid argument: <channel> takes one contract per request``;
    - an unknown contract -> code 2 ``unknown contract <C>`` (the first one; nothing of the request
      is subscribed);
    - a native listed in ``rejects`` (on subscribe) -> code 2 with that text, default ``unknown contract <C>``.
    """
    try:
        req = orjson.loads(text)
    except orjson.JSONDecodeError:
        return GateRequest("invalid", error=(_BAD_STRUCT, "invalid argument struct: message must be JSON"))
    if not isinstance(req, dict):
        return GateRequest("invalid", error=(_BAD_STRUCT, "invalid argument struct: message must be an object"))
    out = GateRequest("invalid", id=req.get("id"), id_sent="id" in req)
    channel, event = req.get("channel"), req.get("event")
    if not isinstance(channel, str):
        out.error = (_BAD_STRUCT, "invalid argument struct: channel is required")
        return out
    out.channel = channel
    if channel == "futures.ping":
        out.kind = "ping"
        return out
    if event not in ("subscribe", "unsubscribe"):
        out.event = event if isinstance(event, str) else ""
        out.error = (_BAD_STRUCT, f"invalid argument struct: unknown event {event!r}")
        return out
    out.event = event
    payload = req.get("payload")
    if not isinstance(payload, list) or not all(isinstance(p, str) for p in payload):
        out.error = (_BAD_STRUCT, "invalid argument struct: payload must be a list of strings")
        return out
    if channel in LIST_CHANNELS:
        natives, error = _list_payload(channel, payload)
    elif channel == "futures.candlesticks":
        natives, error = _candle_payload(payload)
    elif channel == "futures.order_book_update":
        natives, error = _obu_payload(payload)
    else:
        natives, error = [], (_BAD_ARG, f"unknown channel {channel}")
    if error is None and event == "subscribe" and rejects:
        for native in natives:
            if native in rejects:
                contract = native.rpartition(":")[2]
                if channel == "futures.candlesticks":
                    contract = contract.partition("_")[2]
                error = (_BAD_ARG, rejects[native] or f"unknown contract {contract}")
                break
    out.kind = event
    out.natives = natives
    out.error = error
    return out


def _unknown(contract: str) -> tuple[int, str] | None:
    return None if contract in GATE_CONTRACTS else (_BAD_ARG, f"unknown contract {contract}")


def _list_payload(channel: str, payload: list[str]) -> tuple[list[str], tuple[int, str] | None]:
    if not payload:
        return [], (_BAD_ARG, "invalid argument: payload is empty")
    for contract in payload:
        if (error := _unknown(contract)) is not None:
            return [], error
    return [native_key(channel, c) for c in dict.fromkeys(payload)], None


def _one_contract(channel: str) -> tuple[int, str]:
    return (_BAD_ARG, f"invalid argument: {channel} takes one contract per request")


def _candle_payload(payload: list[str]) -> tuple[list[str], tuple[int, str] | None]:
    """``["1m", "BTC_USDT"]`` (contract may carry ``mark_`` / ``index_``)."""
    if len(payload) > 2:
        return [], _one_contract("futures.candlesticks")
    if len(payload) < 2:
        return [], (_BAD_ARG, "invalid argument: payload must be [interval, contract]")
    interval, contract = payload
    if interval not in CANDLE_INTERVALS:
        return [], (_BAD_ARG, f"invalid argument: unknown interval {interval}")
    bare = contract
    for prefix in _PRICE_PREFIXES:
        bare = bare.removeprefix(prefix)
    if (error := _unknown(bare)) is not None:
        return [], error
    return [native_key("futures.candlesticks", contract, interval)], None


def _obu_payload(payload: list[str]) -> tuple[list[str], tuple[int, str] | None]:
    """``[contract, frequency]`` or ``[contract, frequency, level]`` (the 2023 capture sent no level)."""
    channel = "futures.order_book_update"
    if len(payload) > 3 or any(_CONTRACT_SHAPE.fullmatch(p) for p in payload[1:]):
        return [], _one_contract(channel)
    if len(payload) < 2:
        return [], (_BAD_ARG, "invalid argument: payload must be [contract, frequency, level]")
    contract, frequency = payload[0], payload[1]
    if (error := _unknown(contract)) is not None:
        return [], error
    levels = OBU_LEVELS.get(frequency)
    if levels is None:
        return [], (_BAD_ARG, f"invalid argument: unknown frequency {frequency}")
    if len(payload) == 3 and payload[2] not in levels:
        return [], (_BAD_ARG, f"invalid argument: level {payload[2]} not allowed with {frequency}")
    return [native_key(channel, contract)], None


def _head(req: GateRequest, now_ns: int) -> dict[str, Any]:
    head: dict[str, Any] = {"time": now_ns // 1_000_000_000, "time_ms": now_ns // 1_000_000}
    if req.id_sent:
        head["id"] = req.id
    return head


def ack_frame(req: GateRequest, now_ns: int) -> dict[str, Any]:
    """``{"time","time_ms","id"?,"channel","event","error":null,"result":{"status":"success"}}`` (§2.4)."""
    return _head(req, now_ns) | {
        "channel": req.channel,
        "event": req.event,
        "error": None,
        "result": {"status": "success"},
    }


def error_frame(req: GateRequest, now_ns: int) -> dict[str, Any]:
    """``{"time","time_ms","id"?,"channel","event","error":{"code","message"},"result":{"status":"fail"}}``."""
    code, message = req.error or (_BAD_ARG, "invalid argument")
    return _head(req, now_ns) | {
        "channel": req.channel,
        "event": req.event,
        "error": {"code": code, "message": message},
        "result": {"status": "fail"},
    }


def pong_frame(req: GateRequest, now_ns: int) -> dict[str, Any]:
    """``{"time","time_ms","id"?,"channel":"futures.pong","event":"","result":null}`` (§2.4)."""
    return _head(req, now_ns) | {"channel": "futures.pong", "event": "", "result": None}
