"""Gate.io futures: the 2023 cryptofeed capture (socket frames, REST snapshots, acks without id)."""

from __future__ import annotations

import json
from collections import Counter

from control.topics import Topic
from scripts.tapes import GATE_2023, GATE_2023_HTTP, read_cryptofeed_http, read_cryptofeed_ws, sample_path
from tests.exchanges.gateio._helpers import ADAPTER, BOOKTICKER_KEYS, KLINE_KEYS, parser
from workers.exchanges.base import Ack, BookUpdate, OutFrame, Parsed, match_request

# --- the 2023 capture (cryptofeed GATEIO_FUTURES.*) ---------------------------------------------


def parse_capture() -> list[Parsed]:
    p = parser()
    return [p.parse(raw, int(ts * 1000)) for ts, raw in read_cryptofeed_ws(GATE_2023)]


def test_every_captured_frame_parses() -> None:
    results = parse_capture()
    acks = [a for r in results for a in r.acks]
    books = [b for r in results for b in r.book]
    kinds = Counter(event["type"] for r in results for _, event in r.events)

    assert len(results) == 450
    assert not any(r.unknown or r.error or r.pong for r in results)
    # the 2023 server echoes neither id nor payload: the acks name their channel, for match_request
    assert len(acks) == 22 and {a.request_id for a in acks} == {None} and {a.topic for a in acks} == {None}
    assert Counter(a.channel for a in acks) == {"kline": 10, "depth": 10, "trade": 1, "bookticker": 1}
    assert len(books) == 352
    assert all(type(b.first_id) is int and type(b.last_id) is int and b.first_id <= b.last_id for b in books)
    assert all(not b.snapshot and b.topic == f"gateio:depth:{b.symbol}" for b in books)
    assert kinds == {"bookticker": 75, "kline": 1}


def test_captured_book_updates_chain_without_gaps() -> None:
    books = [b for r in parse_capture() for b in r.book]
    last: dict[str, int] = {}
    links = gaps = 0
    for b in books:
        if b.symbol in last:
            links += 1
            gaps += b.first_id != last[b.symbol] + 1
        last[b.symbol] = b.last_id

    assert len(last) == 10
    assert (links, gaps) == (342, 0)


def test_captured_samples() -> None:
    results = parse_capture()
    [kline] = [e for r in results for _, e in r.events if e["type"] == "kline"]
    first_book = next(b for r in results for b in r.book)
    bbo = next(e for r in results for _, e in r.events if e["type"] == "bookticker")

    assert list(kline) == KLINE_KEYS
    assert kline | {"ts_received": 0} == {
        "type": "kline",
        "exchange": "gateio",
        "symbol": "FRONT_USDT",
        "timeframe": "1m",
        "open_time": 1684930140000,
        "close_time": 1684930199999,
        "open": "0.1701",
        "high": "0.1701",
        "low": "0.1701",
        "close": "0.1701",
        "volume": "0",  # the wire has the int 0
        "closed": False,
        "ts_exchange": 1684930165934,
        "ts_received": 0,
    }
    assert first_book == BookUpdate(
        topic="gateio:depth:RDNT_USDT",
        symbol="RDNT_USDT",
        bids=[],
        asks=[("0.2983", "0")],
        first_id=203083177,
        last_id=203083177,
        ts_exchange=1684930165217,
        ts_received=1684930165403,
    )
    assert list(bbo) == BOOKTICKER_KEYS
    assert bbo | {"ts_received": 0} == {
        "type": "bookticker",
        "exchange": "gateio",
        "symbol": "PHB_USDT",
        "bid_price": "0.7379",
        "bid_size": "814",
        "ask_price": "0.739",
        "ask_size": "677",
        "update_id": "6159967",
        "ts_exchange": 1684930165621,
        "ts_received": 0,
    }


def test_every_captured_rest_snapshot_parses() -> None:
    snapshots = []
    for url, ts, raw in read_cryptofeed_http(GATE_2023_HTTP):
        symbol = url.split("contract=")[1].split("&")[0]
        snapshots.append(ADAPTER.parse_snapshot(symbol, raw.encode(), int(ts * 1000)))

    assert len(snapshots) == 10
    assert all(s.snapshot and s.first_id is None and type(s.last_id) is int for s in snapshots)
    assert all(s.bids and s.asks and all(type(size) is str for _, size in s.bids + s.asks) for s in snapshots)
    rdnt = next(s for s in snapshots if s.symbol == "RDNT_USDT")
    assert rdnt.topic == "gateio:depth:RDNT_USDT"
    assert rdnt.ts_exchange == 1684930166384  # "current":1684930166.384, exactly
    assert rdnt.ts_received == 1684930166535
    assert rdnt.asks[0] == ("0.2974", "803")


def test_captured_snapshots_meet_the_buffered_updates() -> None:
    # exchanges.md §2.5: for 9 of 10 contracts a buffered push covers snapshot.id + 1
    books = [b for r in parse_capture() for b in r.book]
    covered = 0
    for url, _, raw in read_cryptofeed_http(GATE_2023_HTTP):
        symbol = url.split("contract=")[1].split("&")[0]
        base = ADAPTER.parse_snapshot(symbol, raw.encode(), 0).last_id
        covered += any(b.symbol == symbol and (b.first_id or 0) <= base + 1 <= b.last_id for b in books)

    assert covered == 9


# --- acks without id (the 2023 capture) ---------------------------------------------------------


def captured_requests() -> tuple[list[OutFrame], dict[int, tuple[str, tuple[str, ...]]]]:
    """Our frames for the capture's 42 subscriptions in its order, and the connection's request table for them."""
    contracts = [json.loads(raw)["payload"][1] for _, raw in sent_capture() if '"futures.candlesticks"' in raw]
    topics = [Topic("gateio", "kline", c, "1m") for c in contracts]
    topics += [Topic("gateio", "trade", c) for c in contracts]
    topics += [Topic("gateio", "depth", c) for c in contracts]
    topics += [Topic("gateio", "bookticker", c) for c in contracts]
    frames = ADAPTER.subscribe_frames(topics, 20, 1)
    return frames, {f.request_id: ("subscribe", f.topics) for f in frames if f.request_id is not None}


def sent_capture() -> list[tuple[float, str]]:
    """The frames the 2023 client sent (``<url> <- <ts>: <json>`` lines)."""
    out = []
    for line in sample_path(GATE_2023).read_text(encoding="utf-8").splitlines():
        head, sep, raw = line.partition(": ")
        if sep and " <- " in head:
            out.append((float(head.rpartition(" ")[2]), raw))
    return out


def test_captured_acks_without_id_match_their_requests_in_order() -> None:
    frames, requests = captured_requests()
    # our frames go out in the capture's order: one per candle/book contract, one list frame per list channel
    assert [json.loads(f.text)["channel"] for f in frames] == [json.loads(raw)["channel"] for _, raw in sent_capture()]
    p = parser()
    matched = []
    for ts, raw in read_cryptofeed_ws(GATE_2023):
        for ack in p.parse(raw, int(ts * 1000)).acks:
            request_id = match_request(ack, requests)
            assert request_id is not None, raw
            matched.append(requests.pop(request_id)[1])

    assert matched == [f.topics for f in frames]  # each of the 22 acks answers the request it followed
    assert requests == {}


def test_idless_refusal_is_tied_to_the_contract_it_names() -> None:
    _, requests = captured_requests()
    # The refusal of the third candle request overtakes the two acks before it; the contract it names decides.
    refusal = (
        '{"time":1684930165,"time_ms":0,"channel":"futures.candlesticks","event":"subscribe",'
        '"error":{"code":2,"message":"unknown contract LIT_USDT"},"result":{"status":"fail"}}'
    )
    recorded_ack = next(raw for _, raw in read_cryptofeed_ws(GATE_2023) if '"futures.candlesticks"' in raw)
    p = parser()
    [refused] = p.parse(refusal, 0).acks
    assert (refused.ok, refused.channel, refused.symbols) == (False, "kline", ("LIT_USDT",))
    assert requests.pop(match_request(refused, requests))[1] == ("gateio:kline:LIT_USDT:1m",)  # type: ignore[arg-type]
    first, second = (requests.pop(match_request(a, requests))[1] for a in 2 * p.parse(recorded_ack, 0).acks)  # type: ignore[arg-type]
    assert (first, second) == (("gateio:kline:DIA_USDT:1m",), ("gateio:kline:RDNT_USDT:1m",))
    # an unsubscribe ack never answers a subscribe request, and an ack of a channel with nothing pending matches none
    unsub = recorded_ack.replace('"subscribe"', '"unsubscribe"')
    assert match_request(p.parse(unsub, 0).acks[0], requests) is None
    assert match_request(Ack(ok=True, channel="ticker"), requests) is None
    assert match_request(Ack(ok=True, request_id=1, channel="kline"), requests) is None  # ids are matched by id
