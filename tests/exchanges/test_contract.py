"""The adapter contract (``workers.exchanges.base``), run the same way against EVERY registered adapter.

Each venue brings a few wire samples (``SAMPLES``: its ack for a sent frame, its pong, one valid push per channel,
from the reference docs) and nothing else: the tests below are shared. A new exchange fails here until its samples
exist (``test_every_adapter_has_samples``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from typing import Any

import orjson
import pytest

from control.accounts import Account
from control.exchanges import DECLARATIONS
from control.topics import CHANNELS, DEPTH_LEVELS_MAX, PRIVATE_CHANNELS, TIMEFRAME_MS, Topic
from workers.exchanges import REGISTRY
from workers.exchanges.base import AdapterError, ExchangeAdapter, OutFrame, Parsed, RestRequest, match_request
from workers.orderbook import BookSync

NOW_MS = 1_700_000_000_000
ACCOUNT = "acct-1"


@dataclass(frozen=True)
class Samples:
    """What a venue answers, as recorded in its reference (section in each comment)."""

    symbols: tuple[str, ...]  # contract names as the venue spells them
    acks: Callable[[OutFrame], list[bytes]]  # the success replies to one sent subscribe frame
    pong: bytes | None  # the reply to ping_frame(), None when the venue needs no app ping
    pushes: tuple[bytes, ...]  # one valid push per channel, private ones included (parsed with an account)


def _bitmart_acks(frame: OutFrame) -> list[bytes]:
    # one ack per topic, echoing it as "group" (exchanges.md §1.4)
    request = orjson.loads(frame.text)
    return [orjson.dumps({"action": request["action"], "group": arg, "success": True}) for arg in request["args"]]


def _binance_acks(frame: OutFrame) -> list[bytes]:
    return [orjson.dumps({"result": None, "id": frame.request_id})]  # binance_usdm.md §4


def _gate_acks(frame: OutFrame) -> list[bytes]:
    # the 2023 server echoes neither id nor payload (exchanges.md §2.4): the hardest case to match
    request = orjson.loads(frame.text)
    return [orjson.dumps({"time": 1, "time_ms": 0, "channel": request["channel"], "event": request["event"],
                          "result": {"status": "success"}})]  # fmt: skip


SAMPLES: dict[str, Samples] = {
    "bitmart": Samples(  # exchanges.md §1.5-§1.7
        symbols=("BTCUSDT", "ETHUSDT", "XRPUSDT"),
        acks=_bitmart_acks,
        pong=b'{"group":"System","data":"pong+1"}',
        pushes=(
            (b'{"group":"futures/klineBin1m:BTCUSDT","data":{"symbol":"BTCUSDT","items":[{"o":"1","h":"2","l":"0.5",'
            b'"c":"1.5","v":"10","ts":1700000000}]}}'),
            (b'{"group":"futures/trade:BTCUSDT","data":[{"trade_id":3000000389425121,"symbol":"BTCUSDT",'
            b'"deal_price":"78727.3","deal_vol":"310","way":2,"m":true,"created_at":"2025-03-10T18:17:14.656686827Z"}]}'),
            (b'{"group":"futures/ticker:BTCUSDT","data":{"symbol":"BTCUSDT","volume_24":"246128","mark_price":"567.02",'
            b'"index_price":"566.44","last_price":"566.92","range":"-0.0117663465058309","ask_price":"568.75"}}'),
            (b'{"group":"futures/bookticker:BTCUSDT","data":{"symbol":"BTCUSDT","best_bid_price":"1",'
            b'"best_bid_vol":"2","best_ask_price":"3","best_ask_vol":"4","ms_t":1700000000000}}'),
            (b'{"group":"futures/depthIncrease50:BTCUSDT@100ms","data":{"symbol":"BTCUSDT","asks":[{"price":"1",'
            b'"vol":"2"}],"bids":[],"ms_t":1700000000000,"version":42,"type":"snapshot"}}'),
            (b'{"group":"futures/order","data":[{"action":3,"order":{"order_id":"220906179895578",'
            b'"client_order_id":"BM1234","price":"1","size":"1000","symbol":"BTCUSDT","state":2,"side":1,'
            b'"type":"limit","deal_avg_price":"0","deal_size":"1000","update_time":1662368173000}}]}'),
            (b'{"group":"futures/position","data":[{"symbol":"BTCUSDT","hold_volume":"2000","position_type":1,'
            b'"open_type":1,"hold_avg_price":"19406.2092","liquidate_price":"15621.998406","update_time":1662692862255}]}'),
            (b'{"group":"futures/asset:USDT","data":{"currency":"USDT","available_balance":"1000",'
            b'"position_deposit":"1000","frozen_balance":"1000"}}'),
        ),
    ),
    "binanceusdm": Samples(  # binance_usdm.md §4-§7
        symbols=("BTCUSDT", "ETHUSDT", "XRPUSDT"),
        acks=_binance_acks,
        pong=None,
        pushes=(
            (b'{"stream":"btcusdt@kline_1m","data":{"e":"kline","E":1626992741424,"s":"BTCUSDT","k":{"t":1,"T":2,'
            b'"s":"BTCUSDT","i":"1m","o":"1","c":"2","h":"3","l":"0.5","v":"10","x":false}}}'),
            (b'{"stream":"btcusdt@aggTrade","data":{"e":"aggTrade","E":1626992741575,"a":16599292,"s":"BTCUSDT",'
            b'"p":"1.01100","q":"10","f":23961322,"l":23961322,"T":1626992741421,"m":false}}'),
            (b'{"e":"trade","E":1723161256322,"T":1723161256322,"s":"BTCUSDT","t":5266583935,"p":"61800.30",'
            b'"q":"0.006","X":"MARKET","m":false}'),
            (b'{"e":"24hrTicker","E":1672515782136,"s":"BTCUSDT","p":"-131.4","P":"-0.786","c":"16584.6",'
            b'"h":"16764.89","l":"16456.51","v":"122474.816"}'),
            (b'{"e":"bookTicker","u":400900217,"E":1568014460893,"T":1568014460891,"s":"BTCUSDT","b":"25.35",'
            b'"B":"31.21","a":"25.36","A":"40.66"}'),
            (b'{"e":"depthUpdate","E":123456789,"T":123456788,"s":"BTCUSDT","U":157,"u":160,"pu":149,'
            b'"b":[["0.0024","10"]],"a":[["0.0026","100"]]}'),
            (b'{"e":"ORDER_TRADE_UPDATE","E":1568879465651,"T":1568879465651,"o":{"s":"BTCUSDT","c":"TEST",'
            b'"S":"BUY","o":"LIMIT","q":"0.001","p":"7100.50","ap":"7100.50","X":"PARTIALLY_FILLED","i":8886774,'
            b'"z":"0.001","R":false,"ps":"LONG"}}'),
            (b'{"e":"ACCOUNT_UPDATE","E":1564745798939,"T":1564745798939,"a":{"m":"ORDER","B":[{"a":"USDT",'
            b'"wb":"122624.12345678","cw":"100.12345678","bc":"50.12345678"}],"P":[{"s":"BTCUSDT","pa":"20",'
            b'"ep":"6563.6","cr":"0","up":"2850.21200","mt":"isolated","iw":"13200.70726908","ps":"LONG"}]}}'),
            (b'{"e":"ALGO_UPDATE","T":1750515742297,"E":1750515742303,"o":{"caid":"Q5xaq5EGKgXXa0fD7fs0Ip",'
            b'"aid":2148719,"at":"CONDITIONAL","o":"TAKE_PROFIT","s":"BNBUSDT","S":"SELL","ps":"BOTH","f":"GTC",'
            b'"q":"0.01","X":"CANCELED","ai":"","ap":"0.00000","aq":"0.00000","tp":"750","p":"750",'
            b'"wt":"CONTRACT_PRICE","R":false}}'),
        ),
    ),
    "gateio": Samples(  # exchanges.md §2.4-§2.6
        symbols=("BTC_USDT", "ETH_USDT", "XRP_USDT"),
        acks=_gate_acks,
        pong=b'{"time":1684930165,"time_ms":1684930165001,"channel":"futures.pong","event":"","result":null}',
        pushes=(
            (b'{"time":1684930165,"time_ms":1684930165934,"channel":"futures.candlesticks","event":"update",'
            b'"result":[{"t":1684930140,"v":0,"c":"0.1701","h":"0.1701","l":"0.1701","o":"0.1701","n":"1m_BTC_USDT"}]}'),
            (b'{"channel":"futures.trades","event":"update","result":[{"size":-108,"id":27753479,'
            b'"create_time":1545136464,"create_time_ms":1545136464123,"price":"96.4","contract":"BTC_USDT"}]}'),
            (b'{"channel":"futures.tickers","event":"update","time_ms":1541659086123,"result":[{"contract":"BTC_USDT",'
            b'"last":"118.4","change_percentage":"0.77","funding_rate":"-0.000114","mark_price":"118.35"}]}'),
            (b'{"channel":"futures.book_ticker","event":"update","result":{"t":1684930165621,"u":6159967,'
            b'"s":"BTC_USDT","b":"0.7379","B":814,"a":"0.739","A":677}}'),
            (b'{"channel":"futures.order_book_update","event":"update","result":{"t":1684930165247,"s":"BTC_USDT",'
            b'"U":203083178,"u":203083178,"b":[],"a":[{"p":"0.3047","s":8393}]}}'),
            (b'{"channel":"futures.orders","event":"update","time_ms":1541505434123,"result":[{"contract":"BTC_USD",'
            b'"id":4872460,"size":"1.5","left":"0.5","price":40000.4,"fill_price":40000.4,"status":"finished",'
            b'"finish_as":"filled","tif":"gtc","text":"-","is_reduce_only":false,"finish_time_ms":1628736848321}]}'),
            (b'{"channel":"futures.positions","event":"update","result":[{"contract":"BTC_USD","size":"3.5",'
            b'"entry_price":40000.36666661111,"leverage":0,"cross_leverage_limit":0,"liq_price":0.1,"mode":"single",'
            b'"time_ms":1628736848321}]}'),
            (b'{"channel":"futures.balances","event":"update","result":[{"balance":9.998739899488,'
            b'"change":-0.000002074115,"currency":"btc","type":"fee","time_ms":1547199246123}]}'),
        ),
    ),
}
ADAPTERS = sorted(REGISTRY)
ACCOUNT_FIELDS = {f.name for f in fields(Account)}


def adapter_of(exchange_id: str) -> ExchangeAdapter:
    return REGISTRY[exchange_id]


def public_topics(adapter: ExchangeAdapter, symbols: tuple[str, ...]) -> list[Topic]:
    topics = []
    for symbol in symbols:
        for channel in adapter.declaration.channels:
            if channel == "kline":
                topics.extend(Topic(adapter.id, channel, symbol, tf) for tf in adapter.declaration.timeframes)
            else:
                topics.append(Topic(adapter.id, channel, symbol))
    return topics


def private_topics(adapter: ExchangeAdapter) -> list[Topic]:
    return [Topic(adapter.id, channel, ACCOUNT) for channel in adapter.declaration.private_channels]


def credentials(adapter: ExchangeAdapter, blank: str | None = None) -> Account:
    values = {name: ("" if name == blank else f"test-{name}-0123456789") for name in adapter.declaration.credentials}
    return Account(adapter.id, ACCOUNT, **{"api_key": "", "api_secret": "", **values})


def test_every_adapter_has_samples() -> None:
    assert set(SAMPLES) == set(REGISTRY)


# -- declarations ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("exchange_id", ADAPTERS)
def test_declaration_is_complete(exchange_id: str) -> None:
    adapter = adapter_of(exchange_id)
    declaration = adapter.declaration

    assert declaration is DECLARATIONS[exchange_id] and declaration.name
    assert set(declaration.channels) <= set(CHANNELS) and set(declaration.private_channels) <= set(PRIVATE_CHANNELS)
    assert list(declaration.timeframes) == [tf for tf in TIMEFRAME_MS if tf in declaration.timeframes]
    assert ("kline" in declaration.channels) == bool(declaration.timeframes)
    assert 1 <= declaration.depth_levels_cap <= DEPTH_LEVELS_MAX
    assert {"api_key", "api_secret"} <= set(declaration.credentials) <= ACCOUNT_FIELDS
    envs = [s.env for s in declaration.settings]
    assert len(envs) == len(set(envs)) and all(env.isupper() for env in envs)
    assert all(s.doc and s.parser.hint and (not s.secret or s.default == "") for s in declaration.settings)
    # the adapter's own declarations
    assert adapter.max_topics_per_connection > 0 and adapter.max_subscribe_frame_bytes > 0
    assert adapter.min_send_interval_ms >= 0
    assert all(type(k) is str and type(v) is str for k, v in adapter.ws_headers.items())
    assert set(adapter.timeframes) == set(declaration.timeframes)


# -- public: frames, acks, pings, malformed input -------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [1, 7, 10_000])
@pytest.mark.parametrize("action", ["subscribe", "unsubscribe"])
@pytest.mark.parametrize("exchange_id", ADAPTERS)
def test_frames_stay_within_limits(exchange_id: str, action: str, batch_size: int) -> None:
    adapter = adapter_of(exchange_id)
    topics = public_topics(adapter, SAMPLES[exchange_id].symbols)
    for topic in topics:
        adapter.validate(topic)
    build = adapter.subscribe_frames if action == "subscribe" else adapter.unsubscribe_frames

    frames = build(topics, batch_size, 5, now_ms=NOW_MS)

    sent = [name for frame in frames for name in frame.topics]
    assert sorted(sent) == sorted(str(t) for t in topics) and len(sent) == len(set(sent))
    for frame in frames:
        assert 1 <= len(frame.topics) <= batch_size
        assert len(frame.text.encode()) <= adapter.max_subscribe_frame_bytes
        orjson.loads(frame.text)
    ids = [frame.request_id for frame in frames]
    assert ids == [None] * len(frames) or ids == list(range(5, 5 + len(frames)))


@pytest.mark.parametrize("exchange_id", ADAPTERS)
def test_unserved_topics_are_refused(exchange_id: str) -> None:
    adapter = adapter_of(exchange_id)
    symbol = SAMPLES[exchange_id].symbols[0]
    refused = [Topic("nope", "trade", symbol), Topic(exchange_id, "funding", symbol)]
    refused += [Topic(exchange_id, "kline", symbol, tf) for tf in TIMEFRAME_MS if tf not in adapter.timeframes]

    for topic in refused:
        with pytest.raises(AdapterError):
            adapter.validate(topic)
        with pytest.raises(AdapterError):
            adapter.subscribe_frames([topic], 10, 1, now_ms=NOW_MS)


@pytest.mark.parametrize("exchange_id", ADAPTERS)
def test_acks_match_the_frames_they_answer(exchange_id: str) -> None:
    adapter = adapter_of(exchange_id)
    frames = adapter.subscribe_frames(public_topics(adapter, SAMPLES[exchange_id].symbols), 4, 1, now_ms=NOW_MS)
    parser = adapter.new_parser()
    pending = {f.request_id: ("subscribe", f.topics) for f in frames if f.request_id is not None}

    for frame in frames:
        for raw in SAMPLES[exchange_id].acks(frame):
            [ack] = parser.parse(raw, NOW_MS).acks
            assert ack.ok and ack.action == "subscribe"
            if ack.topic is not None:
                assert ack.topic in frame.topics
            else:
                request_id = ack.request_id if ack.request_id is not None else match_request(ack, pending)
                assert request_id == frame.request_id
                pending.pop(request_id)


@pytest.mark.parametrize("exchange_id", ADAPTERS)
def test_ping_frames(exchange_id: str) -> None:
    adapter = adapter_of(exchange_id)
    ping = adapter.ping_frame(now_ms=NOW_MS)
    pong = SAMPLES[exchange_id].pong

    if not adapter.app_ping:
        assert ping is None and pong is None
        return
    assert isinstance(ping, str) and isinstance(orjson.loads(ping), dict)
    assert pong is not None and adapter.new_parser().parse(pong, NOW_MS).pong


def _mutations(value: Any, depth: int = 0) -> Iterator[Any]:
    """``value`` with one part removed or replaced by a value of the wrong type, recursively (3 levels)."""
    wrong: tuple[Any, ...] = (None, [], {}, "x", "", -1, 1.5, True, [[]], {"x": []})
    if depth > 3:
        return
    if isinstance(value, dict):
        for key, item in value.items():
            yield {k: v for k, v in value.items() if k != key}
            for other in wrong:
                yield {**value, key: other}
            for inner in _mutations(item, depth + 1):
                yield {**value, key: inner}
    elif isinstance(value, list) and value:
        yield []
        for other in wrong:
            yield [other, *value[1:]]
        for inner in _mutations(value[0], depth + 1):
            yield [inner, *value[1:]]


@pytest.mark.parametrize("exchange_id", ADAPTERS)
def test_malformed_frames_raise_value_error_only(exchange_id: str) -> None:
    # The connection counts a frame that fails to parse as malformed and keeps the socket (never fatal); the
    # contract is ValueError (orjson errors included), so a parser never leaks KeyError/TypeError/IndexError.
    adapter = adapter_of(exchange_id)
    broken = [b"", b"not json", b'{"a":', b"[]", b"null", b"1", b'"x"', b"{}", b"\xff\xfe"]
    failures = []
    for raw in broken:
        for account in (None, ACCOUNT):
            try:
                assert isinstance(adapter.new_parser(account).parse(raw, NOW_MS), Parsed)
            except ValueError:
                pass
    for push in SAMPLES[exchange_id].pushes:
        parsed = adapter.new_parser(ACCOUNT).parse(push, NOW_MS)
        assert parsed.events or parsed.book, push  # the sample itself is valid
        for mutated in _mutations(orjson.loads(push)):
            raw = orjson.dumps(mutated)
            try:
                assert isinstance(adapter.new_parser(ACCOUNT).parse(raw, NOW_MS), Parsed)
            except ValueError:
                pass
            except Exception as exc:  # noqa: BLE001 - collected to show every leak at once
                failures.append(f"{type(exc).__name__}: {exc} <- {raw[:160]!r}")
    assert not failures, "\n".join(failures[:20])


# -- books ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("exchange_id", ADAPTERS)
def test_book_rule_is_declared(exchange_id: str) -> None:
    adapter = adapter_of(exchange_id)
    if "depth" not in adapter.channels:
        pytest.skip("no order books")
    rules = [a.book_sync.rule for a in REGISTRY.values() if "depth" in a.channels]
    depth = Topic(exchange_id, "depth", SAMPLES[exchange_id].symbols[0])

    assert issubclass(adapter.book_sync, BookSync) and adapter.book_sync._check is not BookSync._check
    assert adapter.book_sync.rule and rules.count(adapter.book_sync.rule) == 1
    assert 1 <= adapter.max_depth_levels <= DEPTH_LEVELS_MAX
    request = adapter.snapshot_request(depth.symbol, 20)
    if adapter.book_sync.buffers:  # updates wait for a REST snapshot
        assert request is not None and request.path.startswith("/")
        assert all(type(v) is str for v in request.params.values())
    else:  # the snapshot arrives on the socket; after a gap the adapter asks for another
        assert request is None and isinstance(adapter.resync_frame(depth), str)


# -- private ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("exchange_id", ADAPTERS)
def test_private_methods_serve_the_declared_channels(exchange_id: str) -> None:
    adapter = adapter_of(exchange_id)
    if not adapter.declaration.private_channels:
        pytest.skip("no private channels")
    creds = credentials(adapter)
    topics = private_topics(adapter)

    for topic in topics:
        adapter.validate(topic)
        assert adapter.route(topic) == f"private:{ACCOUNT}"
    frame = adapter.login_frame(creds, NOW_MS)
    assert frame is None or isinstance(orjson.loads(frame), dict)
    frames = adapter.subscribe_frames(topics, 10, 1, now_ms=NOW_MS, creds=creds)
    assert {name for f in frames for name in f.topics} <= {str(t) for t in topics}
    for request in (adapter.open_orders_request(creds, NOW_MS), adapter.positions_request(creds, NOW_MS)):
        assert isinstance(request, RestRequest) and request.path.startswith("/")
    for parse in (adapter.parse_open_orders, adapter.parse_positions):  # a gateway page is an error, not data
        with pytest.raises(ValueError):
            parse(b"<html>gateway</html>", ACCOUNT, NOW_MS)
    assert adapter.rest_error(b"<html>gateway</html>") == (None, "<html>gateway</html>")
    if adapter.listen_key is not None:
        duty = adapter.listen_key
        assert isinstance(duty.request(creds, "POST"), RestRequest) and isinstance(duty.gone_code, int)
        assert duty.planned_url("wss://example.test") != duty.ws_url("wss://example.test", "key")
        assert "key" in duty.ws_url("wss://example.test", "key")


@pytest.mark.parametrize("exchange_id", ADAPTERS)
def test_every_declared_credential_is_needed(exchange_id: str) -> None:
    # a declared field the adapter never reads would be asked of users for nothing; one it reads undeclared
    # would fail at the first private request
    adapter = adapter_of(exchange_id)
    topics = private_topics(adapter)

    def build(creds: Account) -> None:
        adapter.login_frame(creds, NOW_MS)
        adapter.subscribe_frames(topics, 10, 1, now_ms=NOW_MS, creds=creds)
        adapter.open_orders_request(creds, NOW_MS)
        adapter.positions_request(creds, NOW_MS)

    build(credentials(adapter))
    for name in adapter.declaration.credentials:
        with pytest.raises(AdapterError):
            build(credentials(adapter, blank=name))
