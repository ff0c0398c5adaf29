"""A small local Gate.io futures REST server for the order tests (until the simulator's matching engine is merged).

It checks every private call's signature with the documented recipe (exchanges.md §2.7, computed here with
hashlib, independently of the adapter), keeps orders, trigger orders, positions and leverage per contract, fills
market orders at ``price`` at once, rests limit orders, and answers errors in Gate's shape (``{"label","message"}``).
``hold_place``: the next place is recorded, then never answered (the test kills the worker meanwhile).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from decimal import Decimal
from typing import Any

import orjson
from aiohttp import web

KEY, SECRET, UID = "gate-key-0123456789", "gate-secret-0123456789", "90817263"
BASE = "/api/v4/futures/usdt"


class FakeGate:
    """State and handlers; ``url`` after ``start``."""

    def __init__(self, price: str = "60000") -> None:
        self.price = Decimal(price)
        self.orders: dict[int, dict[str, Any]] = {}
        self.triggers: dict[int, dict[str, Any]] = {}
        self.positions: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, str]] = []
        self.dual = False
        self.refuse: dict[str, tuple[int, str, str]] = {}  # "METHOD path-suffix" -> (status, label, message)
        self.hold_place = False
        self.placed = asyncio.Event()
        self._closing = asyncio.Event()
        self._next = 1000
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", BASE + "/{tail:.*}", self.handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    async def close(self) -> None:
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()

    def _id(self) -> int:
        self._next += 1
        return self._next

    @staticmethod
    def _error(status: int, label: str, message: str) -> web.Response:
        return web.json_response({"label": label, "message": message}, status=status)

    def _signed(self, request: web.Request, body: bytes) -> bool:
        sign, ts = request.headers.get("SIGN", ""), request.headers.get("Timestamp", "")
        payload = "\n".join((request.method, request.path, request.query_string, hashlib.sha512(body).hexdigest(), ts))
        good = hmac.new(SECRET.encode(), payload.encode(), hashlib.sha512).hexdigest()
        return request.headers.get("KEY") == KEY and hmac.compare_digest(sign, good) and abs(time.time() - int(ts)) < 60

    async def handle(self, request: web.Request) -> web.StreamResponse:
        tail = request.match_info["tail"]
        body = await request.read()
        self.calls.append((request.method, tail))
        if tail.startswith("contracts/"):
            name = tail.split("/", 1)[1]
            return web.json_response({"name": name, "quanto_multiplier": "0.0001", "order_price_round": "0.1",
                                      "order_size_min": 1, "mark_price": str(self.price)})  # fmt: skip
        if not self._signed(request, body):
            return self._error(401, "INVALID_SIGNATURE", "Signature mismatch")
        for key, (status, label, message) in self.refuse.items():
            method, _, suffix = key.partition(" ")
            if method == request.method and tail.startswith(suffix):
                return self._error(status, label, message)
        data = orjson.loads(body) if body else {}
        parts = tail.split("/")
        if tail == "orders" and request.method == "POST":
            return await self._place(data)
        if parts[0] == "orders" and len(parts) == 2:
            found = self._find(parts[1])
            if found is None:
                return self._error(404, "ORDER_NOT_FOUND", "Order not found")
            if request.method == "DELETE":
                if found["status"] == "finished":
                    return self._error(400, "ORDER_FINISHED", "Order finished")
                found.update(status="finished", finish_as="cancelled", finish_time=time.time())
            return web.json_response(found)
        if tail == "orders" and request.method == "GET":
            return web.json_response([o for o in self.orders.values() if o["status"] == "open"])
        if tail == "price_orders" and request.method == "POST":
            trigger_id = self._id()
            self.triggers[trigger_id] = {"id": trigger_id, "status": "open", **data}
            return web.json_response({"id": trigger_id}, status=201)
        if tail == "price_orders" and request.method == "GET":
            return web.json_response([t for t in self.triggers.values() if t["status"] == "open"])
        if parts[0] == "price_orders" and len(parts) == 2 and request.method == "DELETE":
            trigger = self.triggers.get(int(parts[1])) if parts[1].isdigit() else None
            if trigger is None or trigger["status"] != "open":
                return self._error(404, "AUTO_ORDER_NOT_FOUND", "price order not found")
            trigger["status"] = "cancelled"
            return web.json_response(trigger)
        if tail == "positions" and request.method == "GET":
            return web.json_response(list(self.positions.values()))
        if tail.endswith("/leverage") and request.method == "POST":
            contract = parts[-2]
            pos = self._position(contract)
            pos["leverage"] = request.query.get("leverage", "0")
            pos["cross_leverage_limit"] = request.query.get("cross_leverage_limit", pos["cross_leverage_limit"])
            return web.json_response(pos)
        return self._error(404, "NOT_FOUND", f"no route {request.method} {tail}")

    def _find(self, ref: str) -> dict[str, Any] | None:
        if ref.isdigit():
            return self.orders.get(int(ref))
        return next((o for o in self.orders.values() if o["text"] == ref), None)

    def _position(self, contract: str) -> dict[str, Any]:
        return self.positions.setdefault(contract, {"contract": contract, "size": 0, "leverage": "10",
                                                    "cross_leverage_limit": "0", "mode": "single",
                                                    "entry_price": "0", "mark_price": str(self.price)})  # fmt: skip

    async def _place(self, data: dict[str, Any]) -> web.Response:
        if not str(data.get("text", "")).startswith("t-"):
            return self._error(400, "INVALID_PARAM_VALUE", "text must start with t-")
        size = Decimal(str(data["size"]))
        pos = self._position(data["contract"])
        if data.get("close") or data.get("auto_size"):
            size = -Decimal(str(pos["size"]))
        order_id = self._id()
        market = data.get("price") == "0" and data.get("tif") == "ioc"
        order = {"id": order_id, "contract": data["contract"], "size": str(size), "left": str(size),
                 "price": data["price"], "fill_price": "0", "tif": data["tif"], "text": data["text"],
                 "status": "open", "finish_as": "", "is_reduce_only": bool(data.get("reduce_only") or data.get("close")),
                 "create_time": time.time()}  # fmt: skip
        if market:
            order.update(left="0", fill_price=str(self.price), status="finished", finish_as="filled",
                         finish_time=time.time())  # fmt: skip
            pos["size"] = str(Decimal(str(pos["size"])) + size)
        self.orders[order_id] = order
        self.placed.set()
        if self.hold_place:
            self.hold_place = False
            await self._closing.wait()  # the answer is lost: the worker dies meanwhile
        return web.json_response(order, status=201)
