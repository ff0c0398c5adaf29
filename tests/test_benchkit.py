"""The ingest benchmarks' own pieces: the frames both systems get, the fake exchange's encoding, the checks."""

from __future__ import annotations

import orjson

from scripts.benchkit.exchange import ws_frame
from scripts.benchkit.frames import FIRST_ID, build, recorded_trades
from scripts.benchkit.run import check
from workers.exchanges.binanceusdm.public import BinanceUsdmParser


def test_frames_are_the_recorded_trades_as_aggtrade_with_unique_ids() -> None:
    recorded = recorded_trades()
    n = len(recorded) + 5  # loops once
    trades = build(n)
    assert len(trades.frames) == n
    parser = BinanceUsdmParser()
    for i in (0, 1, len(recorded) - 1, len(recorded), n - 1):
        raw = recorded[i % len(recorded)]
        [(topic, event)] = parser.parse(trades.frames[i], 1).events
        assert topic == "binanceusdm:trade:BTCUSDT"
        assert event["trade_id"] == str(FIRST_ID + i)
        assert (event["price"], event["size"]) == (raw["p"], raw["q"]) == (trades.prices[i], trades.sizes[i])
        assert event["ts_exchange"] == raw["T"]
        assert trades.index_of(event["trade_id"]) == i
    assert trades.index_of(FIRST_ID - 1) == -1 and trades.index_of(FIRST_ID + n) == -1


def test_ws_frame_lengths() -> None:
    assert ws_frame(b"x" * 125)[:2] == bytes((0x81, 125))
    assert ws_frame(b"x" * 126)[:4] == bytes((0x81, 126, 0, 126))
    assert ws_frame(b"x" * 70_000)[:2] == bytes((0x81, 127)) and len(ws_frame(b"x" * 70_000)) == 70_010
    assert ws_frame(b"ab", 0xA) == b"\x8a\x02ab"


def test_check_finds_duplicates_gaps_order_and_changed_decimals() -> None:
    trades = build(3)
    good = [(FIRST_ID + i, trades.prices[i], trades.sizes[i]) for i in range(3)]
    assert check(good, trades)["correct"]
    dup = check([good[0], good[1], good[1], good[2]], trades)
    assert dup["duplicates"] == 1 and not dup["in_order"] and not dup["correct"]
    assert check(good[:2], trades)["missing"] == 1
    changed = [good[0], (good[1][0], good[1][1] + "0", good[1][2]), good[2]]  # "61800.30" -> "61800.300"
    assert not check(changed, trades)["exact"]
    assert orjson.loads(trades.frames[0])["data"]["e"] == "aggTrade"


async def test_the_clock_counts_gap_announced_losses_toward_the_expected_events(redis_url: str) -> None:
    """The pub/sub clock stops once arrivals plus the losses gap events announce reach ``count``."""
    import asyncio
    import threading

    from redis.asyncio import Redis

    from scripts.benchkit.subscriber import listen, trade_ids

    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    result: list[object] = []
    thread = threading.Thread(target=lambda: result.append(listen(port, "bench:clock", 8, 20.0)), daemon=True)
    thread.start()
    r = Redis.from_url(redis_url)
    try:
        async with asyncio.timeout(10):
            while not await r.pubsub_numsub("bench:clock") or (await r.pubsub_numsub("bench:clock"))[0][1] < 1:
                await asyncio.sleep(0.01)
        await r.publish("bench:clock", b'{"type":"trade","trade_id":"1000000000"}')
        await r.publish("bench:clock", orjson.dumps({"type": "gap", "reason": "backpressure", "dropped": 5}))
        await r.publish("bench:clock", b'{"type":"trade","trade_id":"1000000006"}')
        await r.publish("bench:clock", b'{"type":"trade","trade_id":"1000000007"}')
        await asyncio.to_thread(thread.join, 10)
    finally:
        await r.aclose()
    [(payloads, stamps)] = result  # type: ignore[misc]
    assert len(payloads) == 4 and len(stamps) == 4
    assert list(trade_ids(payloads, "trade_id")) == [FIRST_ID, -1, FIRST_ID + 6, FIRST_ID + 7]
