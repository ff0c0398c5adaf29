"""A small local Binance USD-M REST server for the order tests (until the simulator's matching engine is merged).

Checks each signed call as binance_usdm.md §8 says (hex HMAC-SHA256 of the query before ``&signature=``, key in
``X-MBX-APIKEY``; computed here with hashlib), keeps orders, algo orders, positions, leverage and margin type, fills
market orders at ``price`` at once, and answers errors as ``{"code","msg"}``.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from decimal import Decimal
from typing import Any

from aiohttp import web

KEY, SECRET = "binance-key-0123456789", "binance-secret-0123456789"


class FakeBinance:
    """State and handlers; ``url`` after ``start``."""

    def __init__(self, price: str = "60000.10") -> None:
        self.price = Decimal(price)
        self.orders: dict[int, dict[str, Any]] = {}
        self.algos: dict[int, dict[str, Any]] = {}
        self.position = {"symbol": "BTCUSDT", "positionAmt": "0", "positionSide": "BOTH", "leverage": "20",
                         "marginType": "cross", "entryPrice": "0", "markPrice": str(self.price)}  # fmt: skip
        self.calls: list[tuple[str, str]] = []
        self.refuse: dict[str, tuple[int, int, str]] = {}
        self._next = 5000
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/fapi/{tail:.*}", self.handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @staticmethod
    def _error(status: int, code: int, msg: str) -> web.Response:
        return web.json_response({"code": code, "msg": msg}, status=status)

    def _id(self) -> int:
        self._next += 1
        return self._next

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = "/fapi/" + request.match_info["tail"]
        self.calls.append((request.method, path))
        if path == "/fapi/v1/exchangeInfo":
            return web.json_response({"symbols": [{"symbol": "BTCUSDT", "filters": [
                {"filterType": "PRICE_FILTER", "tickSize": "0.10"},
                {"filterType": "LOT_SIZE", "stepSize": "0.001", "minQty": "0.001"}]}]})  # fmt: skip
        query, _, signature = request.query_string.rpartition("&signature=")
        good = hmac.new(SECRET.encode(), query.encode(), hashlib.sha256).hexdigest()
        if request.headers.get("X-MBX-APIKEY") != KEY or not hmac.compare_digest(signature, good):
            return self._error(400, -1022, "Signature for this request is not valid.")
        for key, (status, code, msg) in self.refuse.items():
            if key == f"{request.method} {path}":
                return self._error(status, code, msg)
        q = dict(request.query)
        if path == "/fapi/v1/order":
            return self._order(request.method, q)
        if path == "/fapi/v1/algoOrder" and request.method == "POST":
            algo_id = self._id()
            self.algos[algo_id] = {"algoId": algo_id, "algoStatus": "NEW", **q}
            return web.json_response(self.algos[algo_id])
        if path == "/fapi/v1/algoOrder" and request.method == "DELETE":
            algo = self.algos.get(int(q.get("algoId", "0")))
            if algo is None or algo["algoStatus"] != "NEW":
                return self._error(400, -2011, "Unknown order sent.")
            algo["algoStatus"] = "CANCELED"
            return web.json_response({"algoId": algo["algoId"], "code": "200", "msg": "success"})
        if path == "/fapi/v1/openAlgoOrders":
            return web.json_response([a for a in self.algos.values() if a["algoStatus"] == "NEW"])
        if path == "/fapi/v1/openOrders":
            return web.json_response([o for o in self.orders.values() if o["status"] == "NEW"])
        if path == "/fapi/v2/positionRisk":
            return web.json_response([self.position])
        if path == "/fapi/v1/leverage":
            self.position["leverage"] = q["leverage"]
            return web.json_response({"symbol": q["symbol"], "leverage": int(q["leverage"])})
        if path == "/fapi/v1/marginType":
            wanted = "isolated" if q["marginType"] == "ISOLATED" else "cross"
            if wanted == self.position["marginType"]:
                return self._error(400, -4046, "No need to change margin type.")
            self.position["marginType"] = wanted
            return web.json_response({"code": 200, "msg": "success"})
        return self._error(404, -1000, f"no route {path}")

    def _order(self, method: str, q: dict[str, str]) -> web.Response:
        if method == "POST":
            if any(o["clientOrderId"] == q["newClientOrderId"] and o["status"] == "NEW" for o in self.orders.values()):
                return self._error(400, -4015, "Client order id is not valid.")
            order_id = self._id()
            market = q["type"] == "MARKET"
            qty = Decimal(q["quantity"])
            order = {"orderId": order_id, "symbol": q["symbol"], "clientOrderId": q["newClientOrderId"],
                     "side": q["side"], "type": q["type"], "status": "FILLED" if market else "NEW",
                     "price": q.get("price", "0"), "origQty": q["quantity"],
                     "executedQty": q["quantity"] if market else "0",
                     "avgPrice": str(self.price) if market else "0.00",
                     "reduceOnly": q.get("reduceOnly") == "true", "timeInForce": q.get("timeInForce", "GTC"),
                     "updateTime": int(time.time() * 1000)}  # fmt: skip
            if market:
                signed = qty if q["side"] == "BUY" else -qty
                self.position["positionAmt"] = str(Decimal(self.position["positionAmt"]) + signed)
            self.orders[order_id] = order
            return web.json_response(order)
        found = None
        if "orderId" in q:
            found = self.orders.get(int(q["orderId"]))
        elif "origClientOrderId" in q:
            found = next((o for o in self.orders.values() if o["clientOrderId"] == q["origClientOrderId"]), None)
        if found is None:
            return self._error(400, -2013, "Order does not exist.")
        if method == "DELETE":
            if found["status"] != "NEW":
                return self._error(400, -2011, "Unknown order sent.")
            found["status"] = "CANCELED"
        return web.json_response(found)
