"""The simulator's signed REST snapshots (BitMart, Binance, Gate), accounts over HTTP with no secret shown, and
the private fixture frames."""

from __future__ import annotations

import hashlib
import hmac
import logging
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from yarl import URL

from scripts import tapes
from scripts.sim import tapes as sim_tapes
from scripts.sim.gate_private import gate_rest_sign
from scripts.sim.private import mask_key
from scripts.simulator import ExchangeSimulator
from tests.simulator._helpers import recv, send
from tests.simulator._private import (
    BM_KEY,
    BM_MEMO,
    BM_SECRET,
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
    bitmart_login,
    jkorf_pushes,
)

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
