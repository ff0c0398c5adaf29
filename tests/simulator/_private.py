"""The references' own signing vectors (exchanges.md §1.3, §2.3, §2.7; binance_usdm.md §8) and the login /
subscribe builders of the simulator's private-side tests; the simulator clock is pinned to the vectors' time."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import aiohttp
import orjson

from scripts import tapes
from scripts.simulator import ExchangeSimulator
from tests.simulator._helpers import recv, send

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
