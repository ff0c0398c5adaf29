"""The simulator's own HTTP control surface (JSON) and its ``status()`` snapshot.

``GET /_sim/status``, ``POST /_sim/drop[?exchange=<id>]``, ``POST /_sim/dead?on=1|0``, ``POST /_sim/silent?on=1|0``,
``POST /_sim/reject?native=<n>[&error=<text>]``, ``DELETE /_sim/reject[?native=<n>]``, ``POST /_sim/fail_rest?n=<count>``;
private side: ``POST /_sim/accounts`` ``{"exchange","api_key","api_secret","memo"}`` (memo = BitMart API memo, Gate
uid), ``DELETE /_sim/accounts`` ``{"exchange","api_key"}``, ``POST /_sim/push_private``
``{"exchange","api_key","channel","frame"}``, ``POST /_sim/clock?ms=<epoch ms>`` (``DELETE`` restores the real
clock). Venues add their own (Binance: ``POST /_sim/expire_listen_key``).

Order API (``scripts.sim.matching``): ``POST /_sim/price`` ``{"exchange","symbol","last"[,"mark"]}`` pins a traded
symbol's last (and mark/index, default = last) price — the tape no longer moves it — matches resting orders and
fires triggers, and answers ``{"exchange","symbol","last","mark","pinned":true}`` only after the resulting order,
position and balance pushes were sent; ``DELETE /_sim/price?exchange=&symbol=`` hands the price back to the tape.
``GET /_sim/price?exchange=&symbol=`` reads it. ``POST /_sim/balance`` ``{"exchange","api_key","balance"}`` sets an
account's USDT margin balance. Prices and balances are decimal strings; errors 400 (unknown exchange/symbol, bad
number) or 404 (unknown account).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from functools import partial
from typing import TYPE_CHECKING, Any

from aiohttp import web

from scripts.sim import tapes
from scripts.sim.conn import int_param, json_response, read_json_body
from scripts.sim.private import mask_key

if TYPE_CHECKING:
    from scripts.sim.server import ExchangeSimulator

__all__ = ["Control", "build_status"]


def build_status(sim: ExchangeSimulator) -> dict[str, Any]:
    """JSON-ready snapshot: URLs, settings, faults, connections, subscriptions, tapes, counters."""
    subs: Counter[str] = Counter()
    for conn in sim.connections:
        subs.update(conn.subscribed)
    tape_info: dict[str, Any] = {}
    for (exchange, native), (_, source) in tapes.CATALOG.items():
        try:
            tape = tapes.cached_tape(exchange, native, sim._samples_dir)
            frames: int | None = len(tape) if tape else 0
        except LookupError:
            frames = None  # source not loaded yet
        tape_info[native] = {"exchange": exchange, "source": source, "derived": source.startswith("derived"),
                             "frames": frames}  # fmt: skip
    rest = {
        f"{exchange}:{symbol}": {"exchange": exchange, "symbol": symbol, "source": source}
        for (exchange, symbol), (_, source) in tapes.REST_CATALOG.items()
    }
    urls: dict[str, str] = {}
    settings: dict[str, Any] = {"speed": sim._speed, "rate": sim._rate, "loop": sim._loop}
    for venue in sim.venues.values():
        urls |= venue.urls()
        settings |= venue.settings()
    return {
        "simulator": f"feedplane exchange simulator ({', '.join(v.label for v in sim.venues.values())})",
        "urls": urls | {"control": f"{sim.http_url}/_sim/status"},
        "settings": settings,
        "faults": {
            "dead": sim._dead,
            "silent": sim._silent,
            "rejected": dict(sim._rejects),
            "rest_failures_pending": sim._rest_failures,
        },
        "connections": [
            {
                "id": c.conn_id,
                "exchange": c.exchange,
                "route": c.route,
                "mode": c.mode,
                "path": c.path,
                "subscribed": sorted(c.subscribed),
                "sent_count": c.sent_count,
                "received_count": len(c.received),
                "age_s": round(time.monotonic() - c.opened_at, 3),
            }
            for c in sim.connections
        ],
        "subscriptions": dict(subs),
        "tapes": tape_info,
        "tape_aliases": {
            "binanceusdm <s>@depth[@0ms|@100ms|@500ms]": "the symbol's one recorded diff-depth tape",
        },
        "rest_snapshots": rest,
        "private": sim._private.status(),
        "orders": _orders_status(sim),
        "counters": dict(sim.stats),
    }


def _orders_status(sim: ExchangeSimulator) -> dict[str, Any]:
    """The order API's prices and, per account (key masked), balance, open orders/triggers and non-flat positions."""
    engine = sim.engine
    prices = {
        f"{e}:{s}": {"last": format(engine.price(e, s), "f"), "mark": format(engine.price(e, s, "mark"), "f"),
                     "pinned": engine.pinned(e, s)}
        for e, s in engine.contracts
    }  # fmt: skip
    accounts = [
        {
            "exchange": exchange, "key": mask_key(api_key), "balance": format(book.balance, "f"), "dual": book.dual,
            "open_orders": sum(1 for o in book.orders.values() if o.status == "open"),
            "open_triggers": sum(1 for t in book.triggers.values() if t.status == "open"),
            "positions": {f"{p.symbol}:{p.leg}": format(p.size, "f") for p in book.positions.values() if p.size},
        }
        for (exchange, api_key), book in engine.books.items()
    ]  # fmt: skip
    return {"prices": prices, "accounts": accounts}


class Control:
    """The ``/_sim/*`` handlers of one simulator (see the module docstring)."""

    def __init__(self, sim: ExchangeSimulator) -> None:
        self.sim = sim

    def add_routes(self, r: web.UrlDispatcher) -> None:
        sim = self.sim
        r.add_get("/_sim/status", self._h_status)
        r.add_post("/_sim/drop", self._h_drop)
        r.add_post("/_sim/dead", partial(self._h_flag, setter=sim.set_dead, name="dead"))
        r.add_post("/_sim/silent", partial(self._h_flag, setter=sim.set_silent, name="silent"))
        r.add_post("/_sim/reject", self._h_reject)
        r.add_delete("/_sim/reject", self._h_unreject)
        r.add_post("/_sim/fail_rest", self._h_fail_rest)
        r.add_post("/_sim/accounts", self._h_accounts_post)
        r.add_delete("/_sim/accounts", self._h_accounts_delete)
        r.add_post("/_sim/push_private", self._h_push)
        r.add_post("/_sim/clock", self._h_clock)
        r.add_delete("/_sim/clock", self._h_clock)
        r.add_route("*", "/_sim/price", self._h_price)
        r.add_post("/_sim/balance", self._h_balance)

    async def _h_status(self, request: web.Request) -> web.Response:
        return json_response(self.sim.status())

    async def _h_drop(self, request: web.Request) -> web.Response:
        return json_response({"dropped": await self.sim.drop_connections(request.query.get("exchange") or None)})

    async def _h_flag(self, request: web.Request, *, setter: Callable[[bool], None], name: str) -> web.Response:
        on = request.query.get("on", "1").lower() not in ("0", "false", "off", "no")
        setter(on)
        return json_response({name: on})

    async def _h_reject(self, request: web.Request) -> web.Response:
        native = request.query.get("native")
        if not native:
            raise web.HTTPBadRequest(text="native is required")
        self.sim.reject(native, request.query.get("error") or None)
        return json_response({"rejected": dict(self.sim._rejects)})

    async def _h_unreject(self, request: web.Request) -> web.Response:
        self.sim.unreject(request.query.get("native") or None)
        return json_response({"rejected": dict(self.sim._rejects)})

    async def _h_fail_rest(self, request: web.Request) -> web.Response:
        n = int_param(request.query.get("n"), 1, 1_000_000, minimum=0)
        if n is None:
            raise web.HTTPBadRequest(text="n must be an integer >= 0")
        self.sim.fail_rest(n)
        return json_response({"rest_failures_pending": n})

    async def _h_accounts_post(self, request: web.Request) -> web.Response:
        body = await read_json_body(request)
        memo = body.get("memo", body.get("uid", ""))
        try:
            acct = self.sim._private.add_account(
                body.get("exchange", ""), body.get("api_key", ""), body.get("api_secret", ""), memo
            )
        except (TypeError, ValueError) as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        return json_response({"account": {"exchange": acct.exchange, "key": acct.masked}})

    async def _h_accounts_delete(self, request: web.Request) -> web.Response:
        body = await read_json_body(request)
        removed = self.sim.remove_account(str(body.get("exchange", "")), str(body.get("api_key", "")))
        return json_response({"removed": removed})

    async def _h_push(self, request: web.Request) -> web.Response:
        body = await read_json_body(request)
        try:
            sent = await self.sim.push_private(
                str(body.get("exchange", "")),
                str(body.get("api_key", "")),
                str(body.get("channel", "")),
                body.get("frame", {}),
            )
        except KeyError:
            raise web.HTTPNotFound(text="no such account") from None
        return json_response({"sent": sent})

    async def _h_clock(self, request: web.Request) -> web.Response:
        if request.method == "DELETE":
            self.sim.set_clock(None)
        else:
            ms = request.query.get("ms", "")
            if not ms.isdigit():
                raise web.HTTPBadRequest(text="ms must be epoch milliseconds")
            self.sim.set_clock(int(ms))
        return json_response({"now_ms": self.sim.now_ms(), "clock_offset_ms": self.sim._private.clock_offset_ms})

    async def _h_price(self, request: web.Request) -> web.Response:
        body = await read_json_body(request) if request.method == "POST" else dict(request.query)
        exchange, symbol = str(body.get("exchange", "")), str(body.get("symbol", ""))
        engine = self.sim.engine
        if (exchange, symbol) not in engine.contracts:
            traded = sorted(f"{e}:{s}" for e, s in engine.contracts)
            raise web.HTTPBadRequest(text=f"exchange/symbol must be one of {', '.join(traded)}")
        if request.method == "POST":
            last, mark = _decimal(body.get("last")), _decimal(body.get("mark", body.get("last")))
            await self.sim.set_price(exchange, symbol, last, mark)
        elif request.method == "DELETE":
            engine.release(exchange, symbol)
        elif request.method != "GET":
            raise web.HTTPMethodNotAllowed(request.method, ["GET", "POST", "DELETE"])
        return json_response({
            "exchange": exchange, "symbol": symbol, "last": format(engine.price(exchange, symbol), "f"),
            "mark": format(engine.price(exchange, symbol, "mark"), "f"), "pinned": engine.pinned(exchange, symbol),
        })  # fmt: skip

    async def _h_balance(self, request: web.Request) -> web.Response:
        body = await read_json_body(request)
        exchange, api_key = str(body.get("exchange", "")), str(body.get("api_key", ""))
        if self.sim._private.account(exchange, api_key) is None:
            raise web.HTTPNotFound(text="no such account")
        balance = _decimal(body.get("balance"))
        self.sim.engine.book(exchange, api_key).balance = balance
        return json_response({"exchange": exchange, "balance": format(balance, "f")})


def _decimal(value: object) -> Decimal:
    """A positive decimal string (or number) as a Decimal; 400 otherwise."""
    try:
        number = Decimal(str(value)) if isinstance(value, str | int | float) and not isinstance(value, bool) else None
    except InvalidOperation:
        number = None
    if number is None or not number.is_finite() or number <= 0:
        raise web.HTTPBadRequest(text=f"expected a positive decimal string, got {value!r}")
    return number
