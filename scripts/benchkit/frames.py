"""The benchmark's input: the recorded Binance USD-M BTCUSDT trades as ``<s>@aggTrade`` combined-stream frames.

Source: ``hftbacktest/binance_usdm_btcusdt_20240808.gz`` (21,313 recorded ``btcusdt@trade`` frames, read in place
through ``scripts.tapes``). Each recorded trade becomes one aggregate-trade frame, the shape Binance documents
(https://developers.binance.com/docs/derivatives/usds-margined-futures/websocket-market-streams/Aggregate-Trade-Streams)::

    {"stream":"btcusdt@aggTrade","data":{"e":"aggTrade","E":<E>,"a":<aggregate id>,"s":"BTCUSDT","p":"<p>",
     "q":"<q>","f":<t>,"l":<t>,"T":<T>,"m":<m>}}

``p`` and ``q`` are the recorded decimal strings, byte for byte. The recording is looped until ``n`` frames exist;
the aggregate id is ``FIRST_ID + frame index`` so every frame has its own id (the duplicate and count checks
rely on it) and an id maps back to the frame that carried it.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from scripts.tapes import BINANCE_2024, read_hftbacktest

#: Aggregate id of frame 0 (the id of frame i is FIRST_ID + i).
FIRST_ID = 1_000_000_000
STREAM = "btcusdt@aggTrade"
SYMBOL = "BTCUSDT"


@dataclass(frozen=True, slots=True)
class Trades:
    """``n`` frames: ``frames[i]`` (UTF-8 JSON text), and the decimal strings ``prices[i]`` / ``sizes[i]`` it carries."""

    frames: list[bytes]
    prices: list[str]
    sizes: list[str]

    def index_of(self, trade_id: int | str) -> int:
        """The frame index that carried aggregate id ``trade_id``; -1 when it is none of ours."""
        i = int(trade_id) - FIRST_ID
        return i if 0 <= i < len(self.frames) else -1


def recorded_trades() -> list[dict[str, object]]:
    """The recording's raw trade payloads (``data`` of each ``btcusdt@trade`` frame), in order."""
    out = []
    for _ts, raw in read_hftbacktest(BINANCE_2024):
        if '"btcusdt@trade"' in raw:
            out.append(orjson.loads(raw)["data"])
    return out


def build(n: int) -> Trades:
    """``n`` aggTrade frames from the recorded trades, looped (see the module docstring)."""
    trades = recorded_trades()
    frames, prices, sizes = [], [], []
    for i in range(n):
        t = trades[i % len(trades)]
        p, q = str(t["p"]), str(t["q"])
        frame = (
            f'{{"stream":"{STREAM}","data":{{"e":"aggTrade","E":{t["E"]},"a":{FIRST_ID + i},"s":"{SYMBOL}",'
            f'"p":"{p}","q":"{q}","f":{t["t"]},"l":{t["t"]},"T":{t["T"]},"m":{"true" if t["m"] else "false"}}}}}'
        )
        frames.append(frame.encode())
        prices.append(p)
        sizes.append(q)
    return Trades(frames, prices, sizes)
