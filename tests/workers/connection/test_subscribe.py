"""ExchangeConnection: subscribe batching, pacing and acks, and events reaching Redis intact."""

from __future__ import annotations

import itertools
from typing import Any

import orjson
import pytest

from control import keys
from control.topics import Topic
from scripts.simulator import ExchangeSimulator
from tests.workers.connection._world import (
    BM_TRADE,
    BN_TRADE,
    FAST,
    all_active,
    binance_url,
    bitmart_url,
    client_frames,
    stream_events,
)
from workers.exchanges import get_adapter

pytestmark = pytest.mark.timeout(30)


# -- subscribe: batching, pacing, acks ------------------------------------------------------------


async def test_bitmart_batches_paces_and_tracks_acks(sim: ExchangeSimulator, make_conn: Any, pub: Any) -> None:
    symbols = ("BTCUSDT", "ETHUSDT", "AAAUSDT", "BBBUSDT", "CCCUSDT")
    topics = [Topic("bitmart", "kline", s, tf) for s in symbols for tf in ("1m", "5m", "15m", "30m", "1h", "2h",
                                                                             "4h", "1d", "1w")]
    assert len(topics) == 45
    conn, _ = make_conn(get_adapter("bitmart"), bitmart_url(sim), topics)
    await sim.wait_for(lambda: sim.connections and len(client_frames(sim.connections[0], "subscribe")) == 3)
    frames = client_frames(sim.connections[0], "subscribe")
    assert [len(f["args"]) for _, f in frames] == [20, 20, 5]
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(frames)]
    assert min(gaps) >= 0.045, gaps  # SUBSCRIBE_DELAY_MS=50 (5 ms allowance for loopback scheduling)
    good = [t for t in topics if t.symbol in ("BTCUSDT", "ETHUSDT")]
    bad = Topic("bitmart", "kline", "AAAUSDT", "1h")
    await pub.wait_for(lambda: len(pub.states) == 45 and all(r["state"] != "pending" for r in pub.states.values()))
    assert all_active(pub, good)()
    assert pub.states[str(bad)]["state"] == "failed"
    assert pub.states[str(bad)]["error"] == "Invalid channel: not found futures/klineBin1H:AAAUSDT"
    assert pub.states[str(bad)]["conn"] == "c1"
    assert conn.status()["state"] == "open"
    assert await pub.flush(5.0)
    state = orjson.loads(await pub.redis.hget(keys.SUB_STATE, str(bad)))
    assert state["error"] == "Invalid channel: not found futures/klineBin1H:AAAUSDT"


async def test_binance_paces_at_its_rate_limit_and_acks_by_id(
    sim: ExchangeSimulator, make_conn: Any, pub: Any
) -> None:
    symbols = ("SUSHIUSDT", "AKROUSDT", "KEEPUSDT", "CTKUSDT", "AAAUSDT")
    topics = [Topic("binanceusdm", "kline", s, tf) for s in symbols for tf in ("1m", "5m", "15m", "30m", "1h", "2h",
                                                                                 "4h", "1d", "1w")]
    make_conn(get_adapter("binanceusdm"), binance_url(sim, "market"), topics)
    await pub.wait_for(all_active(pub, topics))
    frames = client_frames(sim.connections[0], "subscribe")
    assert [len(f["params"]) for _, f in frames] == [20, 20, 5]
    assert len({f["id"] for _, f in frames}) == 3
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(frames)]
    assert min(gaps) >= 0.105, gaps  # adapter.min_send_interval_ms=110 beats SUBSCRIBE_DELAY_MS=50


async def test_binance_rejected_subscribe_is_failed_with_exchange_text(
    sim: ExchangeSimulator, make_conn: Any, pub: Any
) -> None:
    sim.reject("btcusdt@aggTrade", "Invalid request: stream not allowed")
    conn, _ = make_conn(get_adapter("binanceusdm"), binance_url(sim, "market"), [BN_TRADE])
    await pub.wait_for(lambda: pub.states.get(str(BN_TRADE), {}).get("state") == "failed")
    assert pub.states[str(BN_TRADE)]["error"] == "2: Invalid request: stream not allowed"
    assert conn.status()["reconnects"] == 0


# -- events -----------------------------------------------------------------------------------------


async def test_bitmart_trades_reach_redis_with_decimal_strings_intact(
    sim: ExchangeSimulator, make_conn: Any, pub: Any, make_settings: Any
) -> None:
    # one socket all along (the sent frames are compared 1:1): liveness timers that a busy machine cannot trip
    calm = make_settings(**{**FAST, "PING_INTERVAL_S": "2", "PONG_TIMEOUT_S": "5", "STALL_TIMEOUT_S": "10"})
    conn, _ = make_conn(get_adapter("bitmart"), bitmart_url(sim), [BM_TRADE], calm)
    await pub.wait_for(lambda: pub.counts[str(BM_TRADE)] >= 20)
    assert await pub.flush(5.0)
    got = await stream_events(pub.redis, BM_TRADE)
    sent = [t for frame in sim.sent_data["futures/trade:BTCUSDT"] for t in reversed(orjson.loads(frame)["data"])]
    n = len(got)
    assert n >= 20
    assert [(e["trade_id"], e["price"], e["size"]) for e in got] == [
        (str(t["trade_id"]), t["deal_price"], t["deal_vol"]) for t in sent[:n]
    ]
    assert all(isinstance(e["price"], str) and isinstance(e["ts_received"], int) for e in got)
    latest = orjson.loads(await pub.redis.get(keys.latest(str(BM_TRADE))))
    assert latest == got[-1]
    status = conn.status()
    assert status["events"] >= n and status["messages_received"] > 0 and status["last_message_at"] is not None


async def test_binance_trades_reach_redis_with_decimal_strings_intact(
    sim: ExchangeSimulator, make_conn: Any, pub: Any
) -> None:
    make_conn(get_adapter("binanceusdm"), binance_url(sim, "market"), [BN_TRADE])  # aggTrade, the default
    await pub.wait_for(lambda: pub.counts[str(BN_TRADE)] >= 20)
    assert await pub.flush(5.0)
    got = await stream_events(pub.redis, BN_TRADE)
    sent = [orjson.loads(frame)["data"] for frame in sim.sent_data["btcusdt@aggTrade"]]
    assert [(e["trade_id"], e["price"], e["size"], e["ts_exchange"]) for e in got] == [
        (str(d["a"]), d["p"], d["q"], d["T"]) for d in sent[: len(got)]
    ]
    assert any(e["price"].endswith("0") for e in got) or all("." in e["price"] for e in got)
