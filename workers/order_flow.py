"""What each order request does at the exchange, step by step (``workers.orders.OrderExecutor`` does the I/O).

``place``: guards -> (positions) -> margin mode and leverage (skipped when already so) -> entry order -> take-profit
-> stop-loss. Each step's outcome is kept in ``fp:orders:progress:{exchange}:{account}:{client_order_id}``: a retry
with the same client order id skips what is done, and before placing the entry again it looks the order up at the
exchange by client order id (the previous attempt may have placed it and died before answering). One attempt at a
time per client order id (``fp:orders:lock:…``, else 409 ``order_in_progress``).

Answers: 201 ``{"order", "take_profit", "stop_loss", "client_order_id", "steps", "recovered"}``; a refusal 502
``exchange_error`` with ``details`` ``{"step", "exchange_code", "exchange_message", "http_status", "steps", "order",
"alert"}``; no answer from the exchange 504 ``exchange_timeout`` (outcome unknown: retry with the same client order
id). An entry that is (partly) filled while its stop-loss failed also publishes an ``alert`` on the order topic.
"""

from __future__ import annotations

import secrets
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

import orjson
from redis.exceptions import RedisError

from control.orders import (
    CANCEL,
    CANCEL_OPEN,
    CLOSE,
    GET,
    HALT,
    LOCK_TTL_MS,
    PLACE,
    PROGRESS_TTL_S,
    OrderRequest,
    error_body,
    halted,
    lock_key,
    progress_key,
)
from workers.exchanges.base import AdapterError, RestRequest
from workers.exchanges.order_contract import OrderAdapter, OrderSpec, TriggerSpec, VenueRefusal
from workers.rest import RestError

if TYPE_CHECKING:
    from workers.orders import OrderExecutor

Answer = tuple[int, dict[str, Any]]
FILLED = ("filled", "partially_filled")


class StepFailed(Exception):
    """A step failed: ``answer`` is the (status, body) to give."""

    def __init__(self, answer: Answer) -> None:
        super().__init__(answer[1]["error"]["message"])
        self.answer = answer


class Run:
    """One request's execution: its executor, adapter, credentials and the steps done so far."""

    def __init__(self, ex: OrderExecutor, request: OrderRequest, adapter: OrderAdapter, creds: Any) -> None:
        self.ex, self.request, self.adapter, self.creds = ex, request, adapter, creds
        self.args = request.args
        self.steps: list[dict[str, Any]] = []
        self.partial: dict[str, Any] = {}

    def fail(self, status: int, code: str, message: str, step: str, **details: Any) -> StepFailed:
        self.steps.append({"step": step, "status": "failed"})
        return StepFailed((status, error_body(code, message, {"step": step, "steps": self.steps, **self.partial,
                                                             **details})))  # fmt: skip

    async def send(self, step: str, req: RestRequest) -> bytes:
        """One exchange call; StepFailed with 502 ``exchange_error`` (refusal) or 504 ``exchange_timeout``."""
        try:
            status, body = await self.ex.call(self.adapter.id, req, self.request.deadline_ms)
        except RestError as exc:
            raise self.fail(504, "exchange_timeout", f"{step}: no answer from {self.adapter.id} ({exc}); the outcome "
                            "is unknown: retry with the same client_order_id", step) from None  # fmt: skip
        refusal = self.adapter.refusal(status, body)
        if refusal is not None:
            raise self.refused(step, refusal)
        return body

    def refused(self, step: str, refusal: VenueRefusal) -> StepFailed:
        return self.fail(502, "exchange_error", f"{step}: {self.adapter.id} refused: {refusal.code}: {refusal.message}",
                         step, exchange_code=refusal.code, exchange_message=refusal.message,
                         http_status=refusal.status)  # fmt: skip

    def done(self, step: str, status: str = "done", **data: Any) -> None:
        self.steps.append({"step": step, "status": status, **data})


async def execute(ex: OrderExecutor, request: OrderRequest) -> Answer:
    """Run ``request``; returns ``(HTTP status, body)`` for the control server and writes the audit entry."""
    if ex.now_ms() > request.deadline_ms:
        await ex.audit(request, "expired", {})
        return 504, error_body("order_timeout", "the request waited too long in the queue and was not executed")
    adapter = ex.adapters.get(request.exchange)
    if adapter is None:
        return 400, error_body("orders_unsupported", f"{request.exchange} has no order execution in Feedplane")
    creds = await ex.account(request.exchange, request.account)
    if creds is None:
        return 400, error_body("unknown_account", f"unknown account {request.exchange}:{request.account}")
    run = Run(ex, request, adapter, creds)
    try:
        handler = {PLACE: place, CLOSE: close, CANCEL: cancel, GET: get, CANCEL_OPEN: cancel_open}[request.op]
        status, body = await handler(run)
    except StepFailed as exc:
        status, body = exc.answer
    except AdapterError as exc:
        status, body = 400, error_body("invalid_order", str(exc), {"steps": run.steps})
    except RedisError as exc:
        status, body = 503, error_body("redis_unavailable", f"order state unreachable ({type(exc).__name__})")
    except (ValueError, ArithmeticError) as exc:  # an exchange answer we cannot read
        status, body = 502, error_body("exchange_error", f"{request.exchange} answered something unreadable: {exc}",
                                       {"steps": run.steps, **run.partial})  # fmt: skip
    outcome = "ok" if status < 400 else body["error"]["code"]
    await ex.audit(request, outcome, {"status": status, "args": request.args, "steps": run.steps,
                                      "result": body if status < 400 else body["error"]})  # fmt: skip
    return status, body


# -- place / close -------------------------------------------------------------------------------------------


async def _check_rules(run: Run, spec: OrderSpec) -> None:
    """Guards (symbol, leverage, notional) and the contract's tick/lot rules when the exchange gave them."""
    ex, args = run.ex, run.args
    for kind in ("take_profit", "stop_loss"):  # refused before anything is placed
        if args.get(kind) and args[kind].get("price_type", "last") not in run.adapter.price_types:
            raise run.fail(400, "invalid_order", f"{kind}: {run.adapter.id} triggers fire on the "
                           f"{' or '.join(sorted(run.adapter.price_types))} price", "rules")  # fmt: skip
    guard = ex.settings.order_guard(run.request.exchange, run.request.account)
    refusal = guard.refusal(spec.symbol, args.get("leverage"))
    rules = await ex.rules(run.adapter, spec.symbol)
    if refusal is None and guard.max_notional is not None and not spec.reduce_only:
        price = spec.price or (rules.ref_price if rules else None)
        if price is None:
            price = await ex.last_price(run.request.exchange, spec.symbol)
        notional = None
        if price is not None and (rules is not None or not run.adapter.contract_sized):
            notional = Decimal(spec.size) * Decimal(rules.multiplier if rules else "1") * Decimal(price)
        refusal = guard.notional_refusal(notional)
    if refusal is not None:
        raise run.fail(403, refusal[0], refusal[1], "guards")
    if rules is not None:
        try:
            for value, step, what in ((spec.price, rules.tick, "price"), (spec.size, rules.lot, "size")):
                if value is not None and step and Decimal(step) > 0 and Decimal(value) % Decimal(step) != 0:
                    raise run.fail(400, "invalid_order", f"{what} {value} is not a multiple of {step} on "
                                   f"{spec.symbol}", "rules")  # fmt: skip
            if rules.min_size and Decimal(spec.size) < Decimal(rules.min_size):
                raise run.fail(400, "invalid_order", f"size {spec.size} is below the minimum {rules.min_size}", "rules")
        except InvalidOperation:
            pass
    run.done("guards")


async def _progress(run: Run, coid: str) -> dict[str, Any]:
    """One pipeline: the kill switch (423), the client order id's lock (409 when another attempt holds it), what
    earlier attempts did, and the mark that an attempt started (a later retry then looks the order up first)."""
    req = run.request
    key = progress_key(req.exchange, req.account, coid)
    # held until the request's deadline (+1 s): past it no call of this attempt is still running (``Run.send``)
    ttl_ms = min(LOCK_TTL_MS, max(1000, req.deadline_ms - run.ex.now_ms() + 1000))
    async with run.ex.redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(HALT)
        pipe.set(lock_key(req.exchange, req.account, coid), req.id, nx=True, px=ttl_ms)
        pipe.hgetall(key)
        pipe.hsetnx(key, "attempt", orjson.dumps({"request_id": req.id, "ts": run.ex.now_ms()}).decode())
        pipe.expire(key, PROGRESS_TTL_S)
        halts, locked, raw, _, _ = await pipe.execute()
    if halted(halts, req.exchange, req.account):
        if locked:
            await _release(run, coid)
        raise run.fail(423, "trading_halted", "trading is halted (POST /trading/resume)", "halt")
    if not locked:
        raise run.fail(409, "order_in_progress", f"client_order_id {coid} is being executed; retry shortly", "lock")
    return {k: orjson.loads(v) for k, v in raw.items()}


async def _remember(run: Run, coid: str, field: str, value: Any) -> None:
    key = progress_key(run.request.exchange, run.request.account, coid)
    async with run.ex.redis.pipeline(transaction=False) as pipe:
        pipe.hset(key, field, orjson.dumps(value).decode())
        pipe.expire(key, PROGRESS_TTL_S)
        await pipe.execute()


async def _release(run: Run, coid: str) -> None:
    key = lock_key(run.request.exchange, run.request.account, coid)
    try:
        if await run.ex.redis.get(key) == run.request.id:
            await run.ex.redis.delete(key)
    except RedisError:
        pass  # expires by itself (LOCK_TTL_MS)


async def _recorded(run: Run, symbol: str, coid: str, progress: dict[str, Any]) -> dict[str, Any] | None:
    """The order an earlier attempt placed: from progress, or, when an attempt started and died before recording
    it, looked up at the exchange by client order id. None when there is none (place it now)."""
    if "entry" in progress:
        run.done("entry", "already_done", order_id=progress["entry"]["order_id"])
        return dict(progress["entry"])
    if "attempt" not in progress:
        return None
    adapter, ex = run.adapter, run.ex
    try:
        req = adapter.get_request(run.creds, symbol, None, coid, ex.now_ms())
        status, body = await ex.call(adapter.id, req, run.request.deadline_ms)
    except RestError as exc:
        raise run.fail(504, "exchange_timeout", f"lookup by client_order_id: no answer ({exc})", "lookup") from None
    refusal = adapter.refusal(status, body)
    if refusal is not None:
        if adapter.is_not_found(refusal):
            return None
        raise run.refused("lookup", refusal)
    order = adapter.parse_order(body, run.request.account, ex.now_ms())
    await _remember(run, coid, "entry", order)
    run.done("entry", "recovered", order_id=order["order_id"])
    return order


async def _entry(run: Run, spec: OrderSpec, progress: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """The entry order: recorded or found (``_recorded``, ``recovered`` True), or placed now."""
    found = await _recorded(run, spec.symbol, spec.client_order_id, progress)
    if found is not None:
        return found, True
    body = await run.send("entry", run.adapter.order_request(run.creds, spec, run.ex.now_ms()))
    order = run.adapter.parse_order(body, run.request.account, run.ex.now_ms())
    await _remember(run, spec.client_order_id, "entry", order)
    run.done("entry", order_id=order["order_id"])
    return order, False


async def _trigger(run: Run, kind: str, position: str, hedge: bool, coid: str, progress: dict[str, Any]) -> Any:
    asked = run.args.get(kind)
    if not asked:
        return None
    if kind in progress:
        run.done(kind, "already_done", order_id=progress[kind]["order_id"])
        return progress[kind]
    spec = TriggerSpec(run.args["symbol"], kind, position, asked["price"], asked.get("price_type", "last"),
                       f"{coid}-{'tp' if kind == 'take_profit' else 'sl'}", hedge)  # fmt: skip
    body = await run.send(kind, run.adapter.trigger_request(run.creds, spec, run.ex.now_ms()))
    result = {"order_id": run.adapter.parse_trigger(body), "price": spec.price, "price_type": spec.price_type,
              "status": "open"}  # fmt: skip
    await _remember(run, coid, kind, result)
    run.done(kind, order_id=result["order_id"])
    return result


async def _positions(run: Run, symbol: str) -> list[Any]:
    body = await run.send("positions", run.adapter.positions_request(run.creds, symbol, run.ex.now_ms()))
    positions = run.adapter.parse_positions(body, symbol)
    run.done("positions")
    return positions


async def place(run: Run) -> Answer:
    """``POST /orders``: the steps of the module docstring."""
    a, adapter = run.args, run.adapter
    coid = adapter.client_order_id(a.get("client_order_id"), secrets.token_hex(13))
    position = "long" if a["side"] == "buy" else "short"
    spec = OrderSpec(a["symbol"], a["side"], a["type"], a["size"], a.get("price"), a.get("time_in_force") or "gtc",
                     bool(a.get("reduce_only")), coid, a.get("position_side"))  # fmt: skip
    await _check_rules(run, spec)
    progress = await _progress(run, coid)
    try:
        if "answer" in progress:
            run.done("entry", "already_done")
            return 200, {**progress["answer"], "replayed": True}
        hedge = spec.position_side is not None
        if a.get("leverage") is not None or a.get("margin_mode") or a.get("take_profit") or a.get("stop_loss"):
            positions = await _positions(run, spec.symbol)
            hedge = hedge or any(p.hedge for p in positions)
            if hedge and spec.position_side is None:
                spec = OrderSpec(spec.symbol, spec.side, spec.type, spec.size, spec.price, spec.time_in_force,
                                 spec.reduce_only, coid, position)  # fmt: skip
            steps = adapter.leverage_requests(run.creds, spec.symbol, a.get("leverage"), a.get("margin_mode"),
                                              positions, run.ex.now_ms())  # fmt: skip
            for step, req in steps:
                await run.send(step, req)
                run.done(step)
            if not steps and (a.get("leverage") is not None or a.get("margin_mode")):
                run.done("leverage", "skipped")
        order, recovered = await _entry(run, spec, progress)
        run.partial["order"] = order
        result: dict[str, Any] = {"order": order, "client_order_id": coid}
        try:
            result["take_profit"] = await _trigger(run, "take_profit", position, hedge, coid, progress)
            run.partial["take_profit"] = result["take_profit"]
            result["stop_loss"] = await _trigger(run, "stop_loss", position, hedge, coid, progress)
        except StepFailed as exc:
            if run.steps[-1]["step"] == "stop_loss" or (a.get("stop_loss") and "stop_loss" not in result):
                filled = order["status"] in FILLED
                exc.answer[1]["error"]["details"]["alert"] = filled
                if filled:
                    await run.ex.alert(run.request, f"entry {order['order_id']} on {spec.symbol} is "
                                       f"{order['status']} but its stop-loss was not placed: the position is unprotected",
                                       {"order_id": order["order_id"], "client_order_id": coid,
                                        "error": exc.answer[1]["error"]["message"]})  # fmt: skip
            raise
        result.update(steps=run.steps, recovered=recovered)
        await _remember(run, coid, "answer", result)
        return 201, result
    finally:
        await _release(run, coid)


async def close(run: Run) -> Answer:
    """``POST /positions/close``: a reduce-only market order closing the whole ``side`` position; 409
    ``no_position`` when it is flat."""
    a, adapter = run.args, run.adapter
    coid = adapter.client_order_id(a.get("client_order_id"), secrets.token_hex(13))
    progress = await _progress(run, coid)
    try:
        if "answer" in progress:
            return 200, {**progress["answer"], "replayed": True}
        order = await _recorded(run, a["symbol"], coid, progress)  # a close that an earlier attempt sent
        recovered = order is not None
        if order is None:
            positions = await _positions(run, a["symbol"])
            spec = adapter.close_spec(a["symbol"], a["side"], positions, coid)
            if spec is None:
                raise run.fail(409, "no_position", f"no {a['side']} position on {a['symbol']} to close", "close")
            order, _ = await _entry(run, spec, {})
            if order.get("size") in ("0", 0):  # a whole-position close (Gate size 0): its side is the close's
                order = {**order, "side": spec.side}
        result = {"order": order, "client_order_id": coid, "steps": run.steps, "recovered": recovered}
        await _remember(run, coid, "answer", result)
        return 201, result
    finally:
        await _release(run, coid)


# -- cancel / get / cancel_open ------------------------------------------------------------------------------


async def cancel(run: Run) -> Answer:
    """``DELETE /orders/{id}``: the order, then its take-profit/stop-loss (``tp_id``/``sl_id``) when given."""
    a, adapter, ex = run.args, run.adapter, run.ex
    result: dict[str, Any] = {}
    if a.get("order_id"):
        body = await run.send("cancel", adapter.cancel_request(run.creds, a["symbol"], a["order_id"], ex.now_ms()))
        result["order"] = run.partial["order"] = adapter.parse_order(body, run.request.account, ex.now_ms())
        run.done("cancel", order_id=a["order_id"])
    for kind, name in (("take_profit", "tp_id"), ("stop_loss", "sl_id")):
        if a.get(name):
            await run.send(f"cancel_{kind}", adapter.cancel_trigger_request(run.creds, a["symbol"], a[name],
                                                                            ex.now_ms()))  # fmt: skip
            result[kind] = run.partial[kind] = {"order_id": a[name], "status": "canceled"}
            run.done(f"cancel_{kind}", order_id=a[name])
    return 200, {**result, "steps": run.steps}


async def get(run: Run) -> Answer:
    """``GET /orders/{id}`` (or by client order id): the order as the exchange has it now; 404 when unknown."""
    a, adapter, ex = run.args, run.adapter, run.ex
    coid = adapter.client_order_id(a["client_order_id"], "") if a.get("client_order_id") else None
    try:
        req = adapter.get_request(run.creds, a.get("symbol") or "", a.get("order_id"), coid, ex.now_ms())
        status, body = await ex.call(adapter.id, req, run.request.deadline_ms)
    except RestError as exc:
        raise run.fail(504, "exchange_timeout", f"no answer from {adapter.id} ({exc})", "get") from None
    refusal = adapter.refusal(status, body)
    if refusal is not None:
        if adapter.is_not_found(refusal):
            raise run.fail(404, "order_not_found", f"{adapter.id} has no such order ({refusal.message})", "get")
        raise run.refused("get", refusal)
    return 200, {"order": adapter.parse_order(body, run.request.account, ex.now_ms())}


async def cancel_open(run: Run) -> Answer:
    """The kill switch's ``cancel_open``: every open order and open trigger order of the account, one by one."""
    adapter, ex, account = run.adapter, run.ex, run.request.account
    private = ex.private_adapter(adapter.id)
    canceled: list[dict[str, str]] = []
    failed: list[dict[str, str]] = []
    body = await run.send("list_orders", private.open_orders_request(run.creds, ex.now_ms()))
    orders = [(e["symbol"], e["order_id"]) for _, e in private.parse_open_orders(body, account, ex.now_ms())]
    body = await run.send("list_triggers", adapter.open_triggers_request(run.creds, ex.now_ms()))
    work = [("order", s, i) for s, i in orders] + [("trigger", s, i) for s, i in adapter.parse_open_triggers(body)]
    for kind, symbol, oid in work:
        req = (adapter.cancel_request if kind == "order" else adapter.cancel_trigger_request)(
            run.creds, symbol, oid, ex.now_ms())
        try:
            status, body = await ex.call(adapter.id, req, run.request.deadline_ms)
            refusal = adapter.refusal(status, body)
        except RestError as exc:
            failed.append({"kind": kind, "symbol": symbol, "order_id": oid, "error": str(exc)})
            continue
        if refusal is not None:
            failed.append({"kind": kind, "symbol": symbol, "order_id": oid, "error": str(refusal)})
        else:
            canceled.append({"kind": kind, "symbol": symbol, "order_id": oid})
    run.done("cancel_open", canceled=len(canceled), failed=len(failed))
    return 200, {"canceled": canceled, "failed": failed}
