"""The simulator's private sockets (scripts.sim.*_private): BitMart /user logins and pushes, Binance user data
(listenKey), Gate private channels. Credentials and signatures are the references' test vectors, recomputed
with ``hmac``. Waits are event-driven; the only fixed timeouts are the short windows that prove nothing arrives."""

from __future__ import annotations

import re
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import WSMsgType

from scripts import tapes
from scripts.sim.binance_private import binance_sign
from scripts.sim.bitmart_private import bitmart_sign
from scripts.sim.gate_private import gate_rest_sign, gate_ws_sign
from scripts.sim.private import mask_key
from scripts.simulator import ExchangeSimulator
from tests.simulator._helpers import nothing_arrives, recv, send
from tests.simulator._private import (
    BM_KEY,
    BM_MEMO,
    BM_SECRET,
    BM_SIGN,
    BM_TS,
    BN_KEY,
    BN_QUERY,
    BN_SECRET,
    BN_SIGN,
    GATE_KEY,
    GATE_REST_SIGN,
    GATE_SECRET,
    GATE_TS,
    GATE_UID,
    GATE_WS_SIGN,
    NAUTILUS,
    bitmart_access,
    bitmart_login,
    gate_sub,
    jkorf_pushes,
)

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
