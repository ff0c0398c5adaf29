"""The adapter registry: every exchange has an adapter that honours the ``ExchangeAdapter`` protocol and points at
its capability declaration (``control/exchanges/<id>.py``), which ``control.topics`` derives its tables from.
The per-role contract tests every adapter runs are in ``test_contract.py``."""

from __future__ import annotations

import orjson
import pytest

from control.exchanges import DECLARATIONS
from control.settings import Settings
from control.topics import (
    CAPABILITIES,
    CHANNELS,
    DEPTH_LEVELS_CAP,
    DEPTH_LEVELS_MAX,
    EXCHANGES,
    PRIVATE_CHANNELS,
    TIMEFRAME_MS,
    Topic,
    private_topic,
)
from workers.exchanges import REGISTRY, UnknownExchangeError, get_adapter
from workers.exchanges.base import AdapterError, BookUpdate, ExchangeAdapter, OutFrame, Parsed, SnapshotRequest

ATTRIBUTES = {
    "id": str,
    "channels": frozenset,
    "timeframes": dict,
    "max_topics_per_connection": int,
    "max_subscribe_frame_bytes": int,
    "min_send_interval_ms": int,
    "app_ping": bool,
    "ws_headers": dict,
    "max_depth_levels": int,
}
METHODS = [
    "route",
    "ws_url",
    "validate",
    "subscribe_frames",
    "unsubscribe_frames",
    "ping_frame",
    "new_parser",
    "snapshot_request",
    "parse_snapshot",
    "resync_frame",
]
NON_KLINE_CHANNELS = ("trade", "ticker", "bookticker", "depth")


def test_registry_covers_every_exchange() -> None:
    assert list(REGISTRY) == list(DECLARATIONS) == list(EXCHANGES) == ["bitmart", "binanceusdm", "gateio"]


@pytest.mark.parametrize("exchange_id", sorted(REGISTRY))
def test_adapter_points_at_its_declaration(exchange_id: str) -> None:
    # one source: the adapter's id, channels, depth window and timeframes are the declaration's
    adapter, declaration = REGISTRY[exchange_id], DECLARATIONS[exchange_id]

    assert adapter.declaration is declaration and adapter.id == declaration.id
    assert adapter.channels == frozenset(declaration.channels)
    assert adapter.private_channels == frozenset(declaration.private_channels)
    assert list(adapter.timeframes) == list(declaration.timeframes)
    assert adapter.max_depth_levels == declaration.depth_levels_cap


@pytest.mark.parametrize("exchange_id", sorted(DECLARATIONS))
def test_control_settings_read_the_declared_settings(exchange_id: str) -> None:
    # control/settings.py has no per-exchange line: its values for an exchange are exactly the declared ones
    declaration = DECLARATIONS[exchange_id]
    defaults = Settings.from_env({})
    values = defaults.exchange(exchange_id)
    names = {s.env for s in declaration.settings}

    assert {declaration.ws_url_env, declaration.rest_url_env, *declaration.credentials.values()} <= names
    assert declaration.private_ws_url_env is None or declaration.private_ws_url_env in names
    assert values.declaration is declaration and set(values.values) == names
    for setting in declaration.settings:
        assert values.get(setting) == defaults.value(setting) == setting.default, setting.env
    assert defaults.exchange_ws_uri(exchange_id) == declaration.setting(declaration.ws_url_env).default
    assert defaults.exchange_rest_uri(exchange_id) == declaration.setting(declaration.rest_url_env).default
    private_env = declaration.private_ws_url_env or declaration.ws_url_env
    assert defaults.exchange_ws_uri(exchange_id, private=True) == declaration.setting(private_env).default


def test_get_adapter() -> None:
    assert get_adapter("bitmart") is REGISTRY["bitmart"]
    assert get_adapter("binanceusdm") is REGISTRY["binanceusdm"]
    with pytest.raises(UnknownExchangeError) as info:
        get_adapter("okx")
    assert isinstance(info.value, AdapterError) and isinstance(info.value, KeyError)
    assert str(info.value) == "unknown exchange 'okx'; known: binanceusdm, bitmart, gateio"


@pytest.mark.parametrize("exchange_id", sorted(REGISTRY))
def test_control_capabilities_match_adapters(exchange_id: str) -> None:
    # control.topics derives CAPABILITIES from the declarations the adapters point at; both views agree.
    adapter = REGISTRY[exchange_id]
    capabilities = CAPABILITIES[exchange_id]

    assert set(capabilities) == adapter.channels | adapter.private_channels
    assert capabilities["kline"] == frozenset(adapter.timeframes)
    assert all(capabilities[channel] is None for channel in NON_KLINE_CHANNELS if channel in capabilities)


@pytest.mark.parametrize("exchange_id", sorted(REGISTRY))
def test_depth_cap_stays_inside_the_book_the_exchange_maintains(exchange_id: str) -> None:
    # A depth topic publishes its top ``levels``; levels outside the exchange's window never get updates.
    adapter = REGISTRY[exchange_id]
    cap = DEPTH_LEVELS_CAP[exchange_id]
    window = adapter.max_depth_levels
    request = adapter.snapshot_request("BTCUSDT", cap)
    if request is not None and "limit" in request.params:  # a REST snapshot spans the book kept (Binance: 1000)
        assert int(request.params["limit"]) >= window
    assert set(DEPTH_LEVELS_CAP) == set(EXCHANGES)
    assert 1 <= cap <= DEPTH_LEVELS_MAX
    assert cap == min(window, DEPTH_LEVELS_MAX)


@pytest.mark.parametrize("exchange_id", sorted(REGISTRY))
def test_adapter_satisfies_protocol(exchange_id: str) -> None:
    adapter: ExchangeAdapter = REGISTRY[exchange_id]

    assert adapter.id == exchange_id
    for name, kind in ATTRIBUTES.items():
        assert isinstance(getattr(adapter, name), kind), name
    for name in METHODS:
        assert callable(getattr(adapter, name)), name
    # the exact sets per exchange are pinned by test_control_capabilities_match_adapters
    assert adapter.channels <= set(CHANNELS)
    assert set(adapter.timeframes) <= set(TIMEFRAME_MS)
    assert adapter.max_topics_per_connection > 0 and adapter.max_subscribe_frame_bytes > 0
    assert adapter.book_sync.rule in ("binance", "gate", "bitmart")
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in adapter.ws_headers.items())
    parser = adapter.new_parser()
    assert callable(parser.parse)
    assert parser is not adapter.new_parser()  # one parser per connection
    assert isinstance(parser.parse(b"{}", 0), Parsed)


@pytest.mark.parametrize("exchange_id", sorted(REGISTRY))
def test_every_canonical_topic_subscribes(exchange_id: str) -> None:
    adapter = REGISTRY[exchange_id]
    topics = [Topic(exchange_id, "kline", "BTCUSDT", tf) for tf in adapter.timeframes]
    topics.extend(Topic(exchange_id, channel, "BTCUSDT") for channel in NON_KLINE_CHANNELS)
    for topic in topics:
        adapter.validate(topic)
        assert isinstance(adapter.route(topic), str)

    frames = adapter.subscribe_frames(topics, batch_size=4, first_request_id=1, now_ms=1_700_000_000_000)

    assert all(isinstance(f, OutFrame) for f in frames)
    assert [t for f in frames for t in f.topics] == [str(t) for t in topics]
    assert all(len(f.topics) <= 4 and len(f.text.encode()) <= adapter.max_subscribe_frame_bytes for f in frames)


@pytest.mark.parametrize("exchange_id", sorted(REGISTRY))
def test_book_hooks_match_the_book_rule(exchange_id: str) -> None:
    adapter = REGISTRY[exchange_id]
    depth = Topic(exchange_id, "depth", "BTCUSDT")

    request = adapter.snapshot_request("BTCUSDT", 20)
    resync = adapter.resync_frame(depth)

    if not adapter.book_sync.buffers:  # BitMart: snapshot on the socket, asked for again after a gap
        assert request is None and isinstance(resync, str)
    else:  # REST snapshot
        assert isinstance(request, SnapshotRequest) and request.path.startswith("/")
        assert all(isinstance(v, str) for v in request.params.values())


def test_binance_snapshot_round_trip() -> None:
    adapter = get_adapter("binanceusdm")

    snap = adapter.parse_snapshot("BTCUSDT", b'{"lastUpdateId":9,"E":1,"T":1,"bids":[["1","2"]],"asks":[]}', 3)

    assert isinstance(snap, BookUpdate) and snap.snapshot and snap.last_id == 9 and snap.ts_received == 3


@pytest.mark.parametrize(
    "text",
    [
        "bitmart:kline:BTCUSDT:1m",
        "bitmart:kline:ETHUSDT:1h",
        "bitmart:kline:XRPUSDT:1w",
        "bitmart:trade:BTCUSDT",
        "bitmart:ticker:BTCUSDT",
        "bitmart:bookticker:BTCUSDT",
        "bitmart:depth:BTCUSDT",
    ],
)
def test_bitmart_round_trip_topic_to_frame_to_ack(text: str) -> None:
    adapter = get_adapter("bitmart")
    topic = Topic.parse(text)

    [frame] = adapter.subscribe_frames([topic], batch_size=20, first_request_id=1)
    request = orjson.loads(frame.text)
    # BitMart echoes each subscribed topic as the ack's "group" (exchanges.md §1.4)
    ack_raw = orjson.dumps({"action": "subscribe", "group": request["args"][0], "success": True, "request": request})
    parsed = adapter.new_parser().parse(ack_raw, 0)

    assert frame.topics == (text,)
    assert [(a.ok, a.action, a.topic) for a in parsed.acks] == [(True, "subscribe", text)]


def test_binance_round_trip_by_request_id() -> None:
    adapter = get_adapter("binanceusdm")
    topics = [Topic("binanceusdm", "kline", "BTCUSDT", "1m"), Topic("binanceusdm", "kline", "ETHUSDT", "1m")]

    frames = adapter.subscribe_frames(topics, batch_size=1, first_request_id=41)
    sent = {f.request_id: f.topics for f in frames}
    acks = [a for f in frames for a in adapter.new_parser().parse(f'{{"result":null,"id":{f.request_id}}}', 0).acks]

    assert [sent[a.request_id] for a in acks if a.ok and a.request_id is not None] == [
        ("binanceusdm:kline:BTCUSDT:1m",),
        ("binanceusdm:kline:ETHUSDT:1m",),
    ]


@pytest.mark.parametrize("exchange_id", sorted(REGISTRY))
def test_every_adapter_serves_the_private_channels(exchange_id: str) -> None:
    # the private seam (PrivateAdapter): same names and shapes on every adapter
    adapter = REGISTRY[exchange_id]
    topics = [Topic.parse(private_topic(exchange_id, channel, "acct-1")) for channel in PRIVATE_CHANNELS]

    assert adapter.private_channels == set(PRIVATE_CHANNELS)
    assert not adapter.private_channels & adapter.channels
    for topic in topics:
        adapter.validate(topic)
        assert adapter.route(topic) == "private:acct-1"
    for name in ("login_frame", "open_orders_request", "positions_request", "parse_open_orders", "parse_positions"):
        assert callable(getattr(adapter, name)), name
    parser = adapter.new_parser("acct-1")
    assert isinstance(parser.parse(b"{}", 0), Parsed)
