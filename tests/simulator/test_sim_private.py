"""The simulator's private side (scripts.sim.*_private): logins, user streams, private channels, signed REST.

Credentials and expected signatures are the references' own test vectors (exchanges.md §1.3, §2.3, §2.7;
binance_usdm.md §8), recomputed here with ``hmac``; the simulator clock is pinned to the vectors' time.
Waits are event-driven; the only fixed timeouts are the short windows that prove nothing arrives.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import WSMsgType
from yarl import URL

from scripts import tapes
from scripts.sim import tapes as sim_tapes
from scripts.sim.binance_private import binance_sign
from scripts.sim.bitmart_private import bitmart_sign
from scripts.sim.gate_private import gate_rest_sign, gate_ws_sign
from scripts.sim.private import mask_key
from scripts.simulator import ExchangeSimulator

ABSENCE_S = 0.3  # window used only to show that nothing arrives
NAUTILUS = "nautilus/binance-futures"

# exchanges.md §1.3 own vector
BM_KEY, BM_SECRET, BM_MEMO, BM_TS = "bmkey_0123456789abcdef", "bmsecret_fedcba9876543210", "mymemo", 1_700_000_000_000
BM_SIGN = "bfeb553bcd9d22e6adc5bc65fcd945675789aa128550a5b4e9b8058c01e27435"
# exchanges.md §2.3 / §2.7 own vectors
GATE_KEY, GATE_SECRET, GATE_UID, GATE_TS = (
    "gatekey_0123456789abcdef",
    "gatesecret_fedcba9876543210",
    "123456",
    1_700_000_000,
)
GATE_WS_SIGN = (
    "7ea8581ea4ed064655c445ad7d464ee76ecf4f356d321c08d47efb5cb7a29f40"
    "0786abc686338b36545b8f3f6d576dcbf1f8f60f753484a2430fa03ee06b0330"
)
GATE_REST_SIGN = (
    "3c4ac5d49e3b38d48979efa660d4f7abb4661073ee227b1c29ea31a5f64a6cdf"
    "f834025025599a5fff460a2d2269a870a557bc64917bfc7b9d1d6c406f33fdc1"
)
# binance_usdm.md §8 own vector
BN_KEY, BN_SECRET = "feedplane-test-apikey-0001", "feedplane-test-secret-0001"
BN_QUERY = "recvWindow=5000&timestamp=1700000000000"
BN_SIGN = "46c9d04512e820aefb87e9db7c33ebdb62b816c0d577d318f3897e1d338a659c"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def sim() -> AsyncIterator[ExchangeSimulator]:
    async with ExchangeSimulator(speed=0) as s:
        yield s


async def recv(ws: aiohttp.ClientWebSocketResponse, timeout: float = 10.0) -> Any:
    msg = await ws.receive(timeout=timeout)
    assert msg.type is WSMsgType.TEXT, msg
    return orjson.loads(msg.data)


async def send(ws: aiohttp.ClientWebSocketResponse, obj: Any) -> None:
    await ws.send_str(orjson.dumps(obj).decode())


async def nothing_arrives(ws: aiohttp.ClientWebSocketResponse) -> None:
    with pytest.raises(TimeoutError):
        await ws.receive(timeout=ABSENCE_S)


def jkorf_pushes(relative: str) -> list[Any]:
    return [orjson.loads(f.raw) for f in tapes.read_jkorf(relative) if f.direction == "="]


def bitmart_access(key: str, secret: str, memo: str, ts: int = BM_TS) -> dict[str, Any]:
    sign = hmac.new(secret.encode(), f"{ts}#{memo}#bitmart.WebSocket".encode(), hashlib.sha256).hexdigest()
    return {"action": "access", "args": [key, str(ts), sign, "web"]}


def gate_sub(
    channel: str, payload: list[str], key: str = GATE_KEY, secret: str = GATE_SECRET, **kw: Any
) -> dict[str, Any]:
    event = kw.pop("event", "subscribe")
    msg = f"channel={channel}&event={event}&time={GATE_TS}"
    sign = kw.pop("sign", hmac.new(secret.encode(), msg.encode(), hashlib.sha512).hexdigest())
    auth = {"method": "api_key", "KEY": key, "SIGN": sign}
    return {"time": GATE_TS, "channel": channel, "event": event, "payload": payload, "auth": auth, **kw}


async def bitmart_login(
    sim: ExchangeSimulator,
    session: aiohttp.ClientSession,
    key: str = BM_KEY,
    secret: str = BM_SECRET,
    memo: str = BM_MEMO,
) -> aiohttp.ClientWebSocketResponse:
    ws = await session.ws_connect(sim.bitmart_private_url)
    await send(ws, bitmart_access(key, secret, memo))
    assert await recv(ws) == {"action": "access", "success": True}
    return ws


# ---------------------------------------------------------------------- BitMart /user


def test_signing_helpers_reproduce_the_reference_vectors() -> None:
    assert bitmart_sign(BM_SECRET, str(BM_TS), BM_MEMO) == BM_SIGN
    doc = bitmart_sign(
        "6c6c98544461bbe71db2bca4c6d7fd0021e0ba9efc215f9c6ad41852df9d9df9", "1589267764859", "test001"
    )
    assert doc == "3ceeb7e1b8cb165a975e28a2e2dfaca4d30b358873c0351c1a071d8c83314556"
    assert gate_ws_sign(GATE_SECRET, "futures.orders", "subscribe", str(GATE_TS)) == GATE_WS_SIGN
    rest = gate_rest_sign(
        GATE_SECRET, "GET", "/api/v4/futures/usdt/orders", "status=open&contract=BTC_USDT", b"", str(GATE_TS)
    )
    assert rest == GATE_REST_SIGN
    assert binance_sign(BN_SECRET, BN_QUERY) == BN_SIGN
    assert mask_key(BM_KEY).startswith("bmke…") and BM_KEY not in mask_key(BM_KEY)


async def test_bitmart_login_then_order_position_asset_fixture_pushes(
    sim: ExchangeSimulator, session: aiohttp.ClientSession
) -> None:
    sim.add_account("bitmart", BM_KEY, BM_SECRET, memo=BM_MEMO)
    sim.set_clock(BM_TS)
    assert sim.bitmart_private_url == f"{sim.base_url}/user?protocol=1.1"
    assert sim.bitmart_rest_url == sim.http_url
    ws = await session.ws_connect(sim.bitmart_private_url)
    frame = bitmart_access(BM_KEY, BM_SECRET, BM_MEMO)
    assert frame["args"][2] == BM_SIGN  # the frame ccxt 4.5.70 sends for this account (§1.3)
    await send(ws, frame)
    assert await recv(ws) == {"action": "access", "success": True}
    topics = ["futures/order", "futures/position", "futures/asset:USDT", "futures/asset:BTC", "futures/asset:ETH"]
    request = {"action": "subscribe", "args": topics}
    await send(ws, request)
    for topic in topics:
        assert await recv(ws) == {"action": "subscribe", "group": topic, "success": True, "request": request}
    pushes = {}
    for _ in range(3):  # one fixture push each for order, position and asset:BTC (USDT/ETH have none)
        push = await recv(ws)
        pushes[push["group"]] = push
    folder = tapes.BITMART_FIXTURES
    assert pushes["futures/order"] == jkorf_pushes(f"{folder}/Orders.txt")[0]
    assert pushes["futures/position"] == jkorf_pushes(f"{folder}/Positions.txt")[0]
    assert pushes["futures/asset:BTC"] == jkorf_pushes(f"{folder}/Balances.txt")[0]
    assert pushes["futures/order"]["data"][0]["order"]["order_id"] == "220906179895578"
    await nothing_arrives(ws)  # played once, never looped
    await send(ws, {"action": "ping"})
    assert (await recv(ws))["data"].startswith("pong+")
    assert sim.stats["logins_ok"] == 1
    assert sim.connections[0].route == "user" and sim.connections[0].subscribed == set(topics)


async def test_bitmart_login_failures_close_the_socket(sim: ExchangeSimulator, session: aiohttp.ClientSession) -> None:
    sim.add_account("bitmart", BM_KEY, BM_SECRET, memo=BM_MEMO)
    sim.set_clock(BM_TS)
    masked = mask_key(BM_KEY)
    error = f"access failed: openapi auth: apiKey {masked} failed: openapi auth failed"
    for frame in (
        bitmart_access(BM_KEY, "wrong-secret", BM_MEMO),  # wrong secret
        bitmart_access(BM_KEY, BM_SECRET, "othermemo"),  # wrong memo
        bitmart_access(BM_KEY, BM_SECRET, BM_MEMO, ts=BM_TS - 61_000),  # older than 60 s
    ):
        ws = await session.ws_connect(sim.bitmart_private_url)
        await send(ws, frame)
        assert await recv(ws) == {"action": "access", "success": False, "error": error}
        msg = await ws.receive(timeout=5)
        assert msg.type is WSMsgType.CLOSE and msg.data == 1008
    ws = await session.ws_connect(sim.bitmart_private_url)
    await send(ws, bitmart_access("unknown-key-123", BM_SECRET, BM_MEMO))
    reply = await recv(ws)
    assert reply["success"] is False and "unknown-key-123" not in reply["error"]
    assert (await ws.receive(timeout=5)).type is WSMsgType.CLOSE
    assert sim.stats["logins_failed"] == 4 and sim.stats["logins_ok"] == 0
    await sim.wait_for(lambda: not sim.connections)


async def test_bitmart_private_topics_need_login(sim: ExchangeSimulator, session: aiohttp.ClientSession) -> None:
    ws = await session.ws_connect(sim.bitmart_private_url)
    await send(ws, {"action": "subscribe", "args": ["futures/order", "futures/asset:USDT", "futures/trade:BTCUSDT"]})
    assert await recv(ws) == {
        "action": "subscribe",
        "group": "futures/order",
        "success": False,
        "error": "futures/order need authenication",
    }
    assert (await recv(ws))["error"] == "futures/asset:USDT need authenication"
    not_here = await recv(ws)  # public topics are not served on /user (UNVERIFIED)
    assert not_here["success"] is False and not_here["error"] == "Invalid channel: not found futures/trade:BTCUSDT"
    await nothing_arrives(ws)
    assert not ws.closed and sim.connections[0].subscribed == set()


async def test_push_private_reaches_only_that_accounts_socket(
    sim: ExchangeSimulator, session: aiohttp.ClientSession
) -> None:
    sim.add_account("bitmart", BM_KEY, BM_SECRET, memo=BM_MEMO)
    sim.add_account("bitmart", "bmkey_other", "bmsecret_other", memo="othermemo")
    sim.set_clock(BM_TS)
    ws_a = await bitmart_login(sim, session)
    ws_b = await bitmart_login(sim, session, "bmkey_other", "bmsecret_other", "othermemo")
    for ws in (ws_a, ws_b):
        await send(ws, {"action": "subscribe", "args": ["futures/order"]})
        assert (await recv(ws))["success"] is True
        assert (await recv(ws))["data"][0]["order"]["order_id"] == "220906179895578"  # the fixture, per account
    for key, ws, other, oid in ((BM_KEY, ws_a, ws_b, "A-1"), ("bmkey_other", ws_b, ws_a, "B-1")):
        frame = {"group": "futures/order", "data": [{"action": 2, "order": {"order_id": oid, "state": 2}}]}
        assert await sim.push_private("bitmart", key, "futures/order", frame) == 1
        assert (await recv(ws))["data"][0]["order"]["order_id"] == oid
        await nothing_arrives(other)
    # a topic the account did not subscribe reaches no socket; an unknown account is an error
    assert await sim.push_private("bitmart", BM_KEY, "futures/position", {"group": "futures/position"}) == 0
    with pytest.raises(KeyError):
        await sim.push_private("bitmart", "nobody", "futures/order", "{}")


async def test_bitmart_private_faults_silent_dead_drop(sim: ExchangeSimulator, session: aiohttp.ClientSession) -> None:
    sim.add_account("bitmart", BM_KEY, BM_SECRET, memo=BM_MEMO)
    sim.set_clock(BM_TS)
    ws = await bitmart_login(sim, session)
    sim.set_silent(True)
    await send(ws, {"action": "subscribe", "args": ["futures/position"]})
    assert (await recv(ws))["success"] is True  # acks still flow
    await nothing_arrives(ws)
    assert await sim.push_private("bitmart", BM_KEY, "futures/position", "{}") == 0
    sim.set_silent(False)
    assert (await recv(ws))["group"] == "futures/position"  # the paused fixture push resumes
    sim.set_dead(True)
    await send(ws, {"action": "ping"})
    await nothing_arrives(ws)
    sim.set_dead(False)
    assert await sim.drop_connections("bitmart") == 1
    assert (await ws.receive(timeout=5)).type in (WSMsgType.CLOSED, WSMsgType.ERROR)


# ---------------------------------------------------------------------- Binance user data


async def listen_key(session: aiohttp.ClientSession, sim: ExchangeSimulator, method: str, key: str = BN_KEY) -> Any:
    async with session.request(method, f"{sim.binance_rest_url}/fapi/v1/listenKey", headers={"X-MBX-APIKEY": key}) as r:
        return r.status, await r.json()


async def test_binance_listen_key_rest_lifecycle(sim: ExchangeSimulator, session: aiohttp.ClientSession) -> None:
    sim.add_account("binanceusdm", BN_KEY, BN_SECRET)
    assert await listen_key(session, sim, "POST", "unknown-key") == (
        401,
        {"code": -2015, "msg": "Invalid API-key, IP, or permissions for action."},
    )
    status, body = await listen_key(session, sim, "POST")
    key = body["listenKey"]
    assert status == 200 and re.fullmatch(r"[A-Za-z0-9]{64}", key)
    assert await listen_key(session, sim, "POST") == (200, {"listenKey": key})  # same key while active
    assert await listen_key(session, sim, "PUT") == (200, {"listenKey": key})
    assert await listen_key(session, sim, "DELETE") == (200, {})
    assert await listen_key(session, sim, "PUT") == (400, {"code": -1125, "msg": "This listenKey does not exist."})
    status, body = await listen_key(session, sim, "POST")
    assert status == 200 and body["listenKey"] != key
    assert sim.stats["rest_listen_key"] == 7 and sim.stats["rest_requests"] == 7
    assert [(r.method, r.status) for r in sim.rest_requests] == [
        ("POST", 401),
        ("POST", 200),
        ("POST", 200),
        ("PUT", 200),
        ("DELETE", 200),
        ("PUT", 400),
        ("POST", 200),
    ]
    assert all(r.path_qs == "/fapi/v1/listenKey" for r in sim.rest_requests)


async def test_binance_user_socket_streams_fixtures_then_listen_key_expired(
    sim: ExchangeSimulator, session: aiohttp.ClientSession
) -> None:
    sim.add_account("binanceusdm", BN_KEY, BN_SECRET)
    key = (await listen_key(session, sim, "POST"))[1]["listenKey"]
    folder = tapes.samples_dir() / NAUTILUS
    files = [*sorted(folder.glob("order_update_*.json")), *sorted(folder.glob("account_update*.json")),
             folder / "algo_update_new.json"]  # fmt: skip
    expected = sorted((orjson.loads(p.read_bytes()) for p in files), key=lambda e: e["E"])
    for url in (f"{sim.base_url}/private/ws?listenKey={key}", f"{sim.base_url}/private/ws/{key}"):
        ws = await session.ws_connect(url)
        got = [await recv(ws) for _ in expected]
        assert [e["E"] for e in got] == sorted(e["E"] for e in got)  # ordered by E (§7)
        assert sorted(orjson.dumps(e) for e in got) == sorted(orjson.dumps(e) for e in expected)
        assert "stream" not in got[0]  # bare payloads (ws mode)
        await ws.close()
    assert key not in str(sim.status())  # the listen key is masked in paths and status
    ws = await session.ws_connect(f"{sim.base_url}/private/ws/{key}")
    for _ in expected:
        await recv(ws)
    assert await sim.push_private("binanceusdm", BN_KEY, "ORDER_TRADE_UPDATE", {"e": "ORDER_TRADE_UPDATE", "E": 1}) == 1
    assert (await recv(ws)) == {"e": "ORDER_TRADE_UPDATE", "E": 1}
    algo = {"e": "ALGO_UPDATE", "E": 2, "o": {"aid": 7, "X": "TRIGGERED", "ai": "8886774"}}
    assert await sim.push_private("binanceusdm", BN_KEY, "ALGO_UPDATE", algo) == 1
    assert (await recv(ws)) == algo
    sim.set_clock(1_700_000_000_000)
    assert await sim.expire_listen_key(BN_KEY) == 1
    expired = await recv(ws)
    assert expired["e"] == "listenKeyExpired" and expired["listenKey"] == key
    assert isinstance(expired["E"], int) and abs(expired["E"] - 1_700_000_000_000) < 60_000
    assert await sim.push_private("binanceusdm", BN_KEY, "ORDER_TRADE_UPDATE", {"e": "ORDER_TRADE_UPDATE"}) == 0
    await nothing_arrives(ws)  # open but silent
    assert not ws.closed
    assert (await listen_key(session, sim, "PUT"))[1]["code"] == -1125


async def test_binance_bogus_listen_key_handshakes_and_stays_silent(
    sim: ExchangeSimulator, session: aiohttp.ClientSession
) -> None:
    sim.add_account("binanceusdm", BN_KEY, BN_SECRET)
    ws = await session.ws_connect(f"{sim.base_url}/private/ws/{'x' * 64}")
    ws2 = await session.ws_connect(f"{sim.base_url}/private/ws")
    await nothing_arrives(ws)
    await nothing_arrives(ws2)
    assert sim.stats["bogus_listen_key_sockets"] == 2 and sim.stats["data_frames_sent"] == 0
    await send(ws, {"method": "SUBSCRIBE", "params": ["btcusdt@trade"], "id": 1})
    assert await recv(ws) == {"result": None, "id": 1}
    await nothing_arrives(ws)  # a market stream is never delivered on /private


async def test_binance_listen_key_lapses_after_ttl(session: aiohttp.ClientSession) -> None:
    async with ExchangeSimulator(speed=0, listen_key_ttl_s=0.5) as sim:
        sim.add_account("binanceusdm", BN_KEY, BN_SECRET)
        key = (await listen_key(session, sim, "POST"))[1]["listenKey"]
        ws = await session.ws_connect(f"{sim.base_url}/private/ws?listenKey={key}&events=listenKeyExpired")
        expired = await recv(ws, timeout=5)  # the events filter held back the fixture events
        assert expired["e"] == "listenKeyExpired" and expired["listenKey"] == key
        assert (await listen_key(session, sim, "PUT"))[0] == 400


# ---------------------------------------------------------------------- Gate private channels


async def test_gate_private_subscribe_with_auth_acks_and_replays(
    sim: ExchangeSimulator, session: aiohttp.ClientSession
) -> None:
    sim.add_account("gateio", GATE_KEY, GATE_SECRET, memo=GATE_UID)
    ws = await session.ws_connect(sim.gate_ws_url)
    # exactly the frame ccxt 4.5.90 sends for this account (exchanges.md §2.3)
    await ws.send_str(
        '{"id":1,"time":1700000000,"channel":"futures.orders","event":"subscribe","auth":{"method":"api_key",'
        f'"KEY":"{GATE_KEY}","SIGN":"{GATE_WS_SIGN}"}},"payload":["123456","!all"]}}'
    )
    ack = await recv(ws)
    assert ack["id"] == 1 and ack["error"] is None and ack["result"] == {"status": "success"}
    folder = "jkorf-gateio-net"
    assert await recv(ws) == jkorf_pushes(f"{folder}/SubscribeToOrderUpdates.txt")[0]
    await send(ws, gate_sub("futures.positions", [GATE_UID, "!all"], id=2))
    assert (await recv(ws))["result"] == {"status": "success"}
    assert await recv(ws) == jkorf_pushes(f"{folder}/SubscribeToPositionUpdates.txt")[0]
    await send(ws, gate_sub("futures.balances", [GATE_UID]))
    assert (await recv(ws))["channel"] == "futures.balances"
    assert await recv(ws) == jkorf_pushes(f"{folder}/SubscribeToBalanceUpdates.txt")[0]
    assert sim.connections[0].subscribed == {
        "futures.orders:123456:!all",
        "futures.positions:123456:!all",
        "futures.balances:123456",
    }
    frame = {"channel": "futures.orders", "event": "update", "result": [{"id": 99, "contract": "BTC_USDT"}]}
    assert await sim.push_private("gateio", GATE_KEY, "futures.orders", frame) == 1
    assert (await recv(ws))["result"][0]["id"] == 99
    await send(ws, gate_sub("futures.orders", [GATE_UID, "!all"], event="unsubscribe"))
    assert (await recv(ws))["event"] == "unsubscribe"
    assert await sim.push_private("gateio", GATE_KEY, "futures.orders", frame) == 0
    await send(ws, {"time": GATE_TS, "channel": "futures.ping"})
    assert (await recv(ws))["channel"] == "futures.pong"


async def test_gate_private_auth_and_payload_errors(sim: ExchangeSimulator, session: aiohttp.ClientSession) -> None:
    sim.add_account("gateio", GATE_KEY, GATE_SECRET, memo=GATE_UID)
    ws = await session.ws_connect(sim.gate_ws_url)
    invalid_key = orjson.dumps({"label": "INVALID_KEY", "message": "Invalid key provided"}).decode()
    no_auth = {"time": GATE_TS, "channel": "futures.orders", "event": "subscribe", "payload": [GATE_UID, "!all"]}
    for frame in (
        gate_sub("futures.orders", [GATE_UID, "!all"], sign="0" * 128),  # bad SIGN
        gate_sub("futures.orders", [GATE_UID, "!all"], secret="wrong"),  # signed with another secret
        gate_sub("futures.orders", [GATE_UID, "!all"], key="unknown"),  # unknown key
        no_auth,  # missing auth
    ):
        await send(ws, frame)
        reply = await recv(ws)
        assert reply["error"] == {"code": 4, "message": invalid_key}, frame
        assert reply["result"] == {"status": "fail"} and reply["channel"] == "futures.orders"
    await send(ws, gate_sub("futures.orders", ["999999", "!all"]))  # another user's id
    assert (await recv(ws))["error"]["code"] == 2
    await send(ws, gate_sub("futures.positions", [GATE_UID, "NOPE_USDT"]))
    assert (await recv(ws))["error"] == {"code": 2, "message": "unknown contract NOPE_USDT"}
    await nothing_arrives(ws)
    assert sim.connections[0].subscribed == set() and sim.stats["gate_auth_failures"] == 4


# ---------------------------------------------------------------------- signed REST snapshots


def bitmart_headers(query: str, *, key: str = BM_KEY, secret: str = BM_SECRET, ts: int = BM_TS) -> dict[str, str]:
    sign = hmac.new(secret.encode(), f"{ts}#{BM_MEMO}#{query}".encode(), hashlib.sha256).hexdigest()
    return {"X-BM-KEY": key, "X-BM-TIMESTAMP": str(ts), "X-BM-SIGN": sign}


async def get_json(session: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None) -> Any:
    async with session.get(URL(url, encoded=True), headers=headers) as r:
        return r.status, await r.json()


async def test_bitmart_signed_rest_snapshots(sim: ExchangeSimulator, session: aiohttp.ClientSession) -> None:
    sim.add_account("bitmart", BM_KEY, BM_SECRET, memo=BM_MEMO)
    sim.set_clock(BM_TS)
    base = sim.bitmart_rest_url
    status, body = await get_json(session, f"{base}/contract/private/get-open-orders", bitmart_headers(""))
    assert status == 200 and body["code"] == 1000 and body["message"] == "Ok"
    fixture = jkorf_pushes(f"{tapes.BITMART_FIXTURES}/Orders.txt")[0]["data"][0]["order"]
    assert [o["order_id"] for o in body["data"]] == [fixture["order_id"]]
    assert body["data"][0]["state"] == 2 and "last_trade" not in body["data"][0]
    status, body = await get_json(
        session, f"{base}/contract/private/position?symbol=BTCUSDT", bitmart_headers("symbol=BTCUSDT")
    )
    assert status == 200 and body["data"][0]["current_amount"] == "2000" and body["data"][0]["position_type"] == 1
    status, body = await get_json(
        session, f"{base}/contract/private/position?symbol=ETHUSDT", bitmart_headers("symbol=ETHUSDT")
    )
    assert status == 200 and body["data"] == []
    # signed over another query, another secret, or too old: refused with the documented codes
    for url, headers, code in (
        (f"{base}/contract/private/position?symbol=BTCUSDT", bitmart_headers(""), 30005),
        (f"{base}/contract/private/get-open-orders", bitmart_headers("", secret="nope"), 30005),
        (f"{base}/contract/private/get-open-orders", bitmart_headers("", ts=BM_TS - 61_000), 30007),
        (f"{base}/contract/private/get-open-orders", bitmart_headers("", key="unknown"), 30002),
    ):
        status, body = await get_json(session, url, headers)
        assert (status, body["code"]) == (401, code), url
    assert sim.stats["rest_bitmart_open_orders"] == 4 and sim.stats["rest_auth_failures"] == 4


async def test_binance_signed_rest_snapshots(sim: ExchangeSimulator, session: aiohttp.ClientSession) -> None:
    sim.add_account("binanceusdm", BN_KEY, BN_SECRET)
    sim.set_clock(1_700_000_000_000)
    base, headers = sim.binance_rest_url, {"X-MBX-APIKEY": BN_KEY}
    status, orders = await get_json(session, f"{base}/fapi/v1/openOrders?{BN_QUERY}&signature={BN_SIGN}", headers)
    assert status == 200
    assert {(o["orderId"], o["status"]) for o in orders} == {(8886774, "PARTIALLY_FILLED"), (8887004, "NEW")}
    status, positions = await get_json(session, f"{base}/fapi/v2/positionRisk?{BN_QUERY}&signature={BN_SIGN}", headers)
    assert status == 200
    assert {(p["positionSide"], p["positionAmt"]) for p in positions} == {
        ("BOTH", "0"),
        ("LONG", "20"),
        ("SHORT", "-10"),
    }
    query = f"symbol=BTCUSDT&{BN_QUERY}"
    sign = hmac.new(BN_SECRET.encode(), query.encode(), hashlib.sha256).hexdigest()
    status, orders = await get_json(session, f"{base}/fapi/v1/openOrders?{query}&signature={sign}", headers)
    assert status == 200 and len(orders) == 2
    bad = "0" * 64
    assert await get_json(session, f"{base}/fapi/v1/openOrders?{BN_QUERY}&signature={bad}", headers) == (
        400,
        {"code": -1022, "msg": "Signature for this request is not valid."},
    )
    # the signature covers the exact query: reordering it breaks the signature
    reordered = f"{base}/fapi/v1/openOrders?timestamp=1700000000000&recvWindow=5000&signature={BN_SIGN}"
    assert (await get_json(session, reordered, headers))[1]["code"] == -1022
    status, body = await get_json(session, f"{base}/fapi/v1/openOrders?{BN_QUERY}&signature={BN_SIGN}", {})
    assert (status, body["code"]) == (401, -2015)
    sim.set_clock(1_700_000_010_000)  # 10 s later: outside recvWindow=5000
    status, body = await get_json(session, f"{base}/fapi/v2/positionRisk?{BN_QUERY}&signature={BN_SIGN}", headers)
    assert (status, body["code"]) == (400, -1021)
    assert all("signature=***" in r.path_qs and BN_SIGN not in r.path_qs for r in sim.rest_requests)
    assert sim.stats["rest_binance_open_orders"] == 5 and sim.stats["rest_binance_position_risk"] == 2


async def test_gate_signed_rest_snapshots(sim: ExchangeSimulator, session: aiohttp.ClientSession) -> None:
    sim.add_account("gateio", GATE_KEY, GATE_SECRET, memo=GATE_UID)
    sim.set_clock(GATE_TS * 1000)
    base = sim.gate_rest_url

    def headers(path: str, query: str, *, sign: str | None = None) -> dict[str, str]:
        if sign is None:
            sign = gate_rest_sign(GATE_SECRET, "GET", path, query, b"", str(GATE_TS))
        return {"KEY": GATE_KEY, "Timestamp": str(GATE_TS), "SIGN": sign}

    orders_path = "/api/v4/futures/usdt/orders"
    vector_query = "status=open&contract=BTC_USDT"  # the §2.7 own GET vector, signed by ccxt identically
    status, body = await get_json(
        session, f"{base}{orders_path}?{vector_query}", headers(orders_path, vector_query, sign=GATE_REST_SIGN)
    )
    assert (status, body) == (200, [])  # accepted; the only fixture order is on BTC_USD
    status, body = await get_json(session, f"{base}{orders_path}?status=open", headers(orders_path, "status=open"))
    fixture = jkorf_pushes("jkorf-gateio-net/SubscribeToOrderUpdates.txt")[0]["result"][0]
    assert status == 200 and [o["id"] for o in body] == [fixture["id"]] and body[0]["status"] == "open"
    status, body = await get_json(
        session, f"{base}{orders_path}?status=finished", headers(orders_path, "status=finished")
    )
    assert status == 200 and body == [fixture]
    positions_path = "/api/v4/futures/usdt/positions"
    status, body = await get_json(session, f"{base}{positions_path}", headers(positions_path, ""))
    assert status == 200 and body[0]["size"] == "3.5" and body[0]["update_id"] == 170919
    status, body = await get_json(session, f"{base}{positions_path}", headers(positions_path, "", sign="0" * 128))
    assert (status, body) == (401, {"label": "INVALID_SIGNATURE", "message": "Signature mismatch"})
    status, body = await get_json(session, f"{base}{orders_path}?status=open", headers(orders_path, "status=finished"))
    assert (status, body["label"]) == (401, "INVALID_SIGNATURE")
    status, body = await get_json(session, f"{base}{positions_path}", headers(positions_path, "") | {"KEY": "nope"})
    assert (status, body["label"]) == (401, "INVALID_KEY")
    sim.set_clock((GATE_TS + 61) * 1000)
    status, body = await get_json(session, f"{base}{positions_path}", headers(positions_path, ""))
    assert (status, body["label"]) == (401, "REQUEST_EXPIRED")


# ---------------------------------------------------------------------- accounts over HTTP, no secrets anywhere


async def test_accounts_http_and_secrets_never_shown(
    sim: ExchangeSimulator, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    account = {"exchange": "bitmart", "api_key": BM_KEY, "api_secret": BM_SECRET, "memo": BM_MEMO}
    async with session.post(f"{sim.http_url}/_sim/accounts", json=account) as r:
        assert r.status == 200
        assert await r.json() == {"account": {"exchange": "bitmart", "key": mask_key(BM_KEY)}}
    async with session.post(f"{sim.http_url}/_sim/accounts", json={"exchange": "kraken", "api_key": "k"}) as r:
        assert r.status == 400
    async with session.post(f"{sim.http_url}/_sim/clock", params={"ms": str(BM_TS)}) as r:
        assert abs((await r.json())["now_ms"] - BM_TS) < 60_000
    ws = await bitmart_login(sim, session)
    await send(ws, {"action": "subscribe", "args": ["futures/order"]})
    await recv(ws)
    await recv(ws)
    push = {"exchange": "bitmart", "api_key": BM_KEY, "channel": "futures/order", "frame": {"group": "futures/order"}}
    async with session.post(f"{sim.http_url}/_sim/push_private", json=push) as r:
        assert await r.json() == {"sent": 1}
    assert await recv(ws) == {"group": "futures/order"}
    async with session.get(f"{sim.http_url}/_sim/status") as r:
        text = await r.text()
    status = orjson.loads(text)
    assert status["urls"]["BITMART_PRIVATE_WS_URI"] == sim.bitmart_private_url
    assert status["private"]["accounts"] == [
        {
            "exchange": "bitmart",
            "key": mask_key(BM_KEY),
            "memo_set": True,
            "listen_key": None,
            "listen_key_ttl_left_s": None,
        }
    ]
    for secret in (BM_KEY, BM_SECRET, BM_MEMO):
        assert secret not in text
        assert all(secret not in rec.getMessage() for rec in caplog.records)
    async with session.delete(f"{sim.http_url}/_sim/accounts", json={"exchange": "bitmart", "api_key": BM_KEY}) as r:
        assert await r.json() == {"removed": True}
    assert sim.status()["private"]["accounts"] == []


def test_private_fixture_frames_load(tmp_path: Path) -> None:
    frames = sim_tapes.private_frames("binanceusdm", sim_tapes.BINANCE_USER_STREAM)
    assert len(frames) == 12
    assert [orjson.loads(f)["o"]["X"] for f in frames if orjson.loads(f)["e"] == "ALGO_UPDATE"] == ["NEW"]
    assert sim_tapes.private_frames("bitmart", "futures/asset:USDT") == ()  # Balances.txt pushes BTC only
    with pytest.raises(FileNotFoundError):
        sim_tapes.private_frames("gateio", "futures.orders", tmp_path)
