"""Order execution's contract between the control server and the workers: Redis names, the request and answer
envelopes, the guards and the kill switch (pure apart from the small async helpers at the end).

How one order travels (README "Orders")::

    control server  validate -> guards -> LPUSH fp:orders:queue <request JSON> -> BLPOP fp:orders:reply:<id>
    worker          BRPOP fp:orders:queue (blocking, no polling) -> exchange REST -> RPUSH fp:orders:reply:<id>

Request (``OrderRequest.encode``)::

    {"id": "<32 hex>", "op": "place"|"close"|"cancel"|"get"|"cancel_open", "exchange": "gateio",
     "account": "alice", "args": {...}, "sent_ms": <epoch ms>, "deadline_ms": <epoch ms>}

Answer: ``{"status": <http status>, "body": {...}}``; an error's body is ``{"error": {"code", "message",
"details"}}`` (the envelope without its timestamp). A request whose ``deadline_ms`` has passed when a worker takes
it is answered 504 ``order_timeout`` without touching the exchange (nobody waits for it any more).

Redis names (all here):

    fp:orders:queue                       list    pending requests (LPUSH by the control server, BRPOP by workers)
    fp:orders:reply:{id}                  list    the answer to request {id}; TTL REPLY_TTL_S
    fp:orders:halt                        hash    "*" or "{exchange}:{account}" -> {"since","reason"}: kill switch
    fp:orders:lock:{ex}:{acct}:{coid}     string  the worker executing that client order id; PX LOCK_TTL_MS
    fp:orders:progress:{ex}:{acct}:{coid} hash    steps done for that client order id (entry, tp, sl, answer);
                                                  TTL PROGRESS_TTL_S: a retry continues where the last attempt ended
    fp:audit:{exchange}:{account}         stream  every order action and its outcome (no secret); MAXLEN ~ AUDIT_MAXLEN
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson

from control.setting_spec import Parser

PREFIX = "fp:orders"
QUEUE = f"{PREFIX}:queue"
HALT = f"{PREFIX}:halt"
#: Halt entry meaning every account.
HALT_ALL = "*"
REPLY_TTL_S = 60
LOCK_TTL_MS = 30_000
PROGRESS_TTL_S = 7 * 24 * 3600
AUDIT_MAXLEN = 10_000

#: Operations a worker serves.
PLACE, CLOSE, CANCEL, GET, CANCEL_OPEN = "place", "close", "cancel", "get", "cancel_open"
OPS = (PLACE, CLOSE, CANCEL, GET, CANCEL_OPEN)


def reply_key(request_id: str) -> str:
    """``fp:orders:reply:{request_id}``."""
    return f"{PREFIX}:reply:{request_id}"


def lock_key(exchange: str, account: str, client_order_id: str) -> str:
    """``fp:orders:lock:{exchange}:{account}:{client_order_id}``."""
    return f"{PREFIX}:lock:{exchange}:{account}:{client_order_id}"


def progress_key(exchange: str, account: str, client_order_id: str) -> str:
    """``fp:orders:progress:{exchange}:{account}:{client_order_id}``."""
    return f"{PREFIX}:progress:{exchange}:{account}:{client_order_id}"


def audit_key(exchange: str, account: str) -> str:
    """``fp:audit:{exchange}:{account}``: the account's audit stream."""
    return f"fp:audit:{exchange}:{account}"


def new_request_id() -> str:
    """A fresh request id: 32 hex characters."""
    return secrets.token_hex(16)


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """One request for a worker. ``args`` holds the operation's validated fields (decimal strings, no secret)."""

    op: str
    exchange: str
    account: str
    args: dict[str, Any]
    deadline_ms: int
    sent_ms: int
    id: str = field(default_factory=new_request_id)

    def encode(self) -> bytes:
        """The JSON put on ``QUEUE``."""
        return orjson.dumps({"id": self.id, "op": self.op, "exchange": self.exchange, "account": self.account,
                             "args": self.args, "sent_ms": self.sent_ms, "deadline_ms": self.deadline_ms})  # fmt: skip

    @classmethod
    def decode(cls, raw: bytes | str) -> OrderRequest:
        """Parse a queued request; raises ValueError for anything malformed (the worker logs and drops it)."""
        try:
            d = orjson.loads(raw)
            request = cls(op=str(d["op"]), exchange=str(d["exchange"]), account=str(d["account"]),
                          args=dict(d["args"]), deadline_ms=int(d["deadline_ms"]), sent_ms=int(d["sent_ms"]),
                          id=str(d["id"]))  # fmt: skip
        except (KeyError, TypeError, ValueError, orjson.JSONDecodeError) as exc:
            raise ValueError(f"malformed order request: {exc!r}") from None
        if request.op not in OPS or not request.id.isalnum():
            raise ValueError(f"malformed order request: op {request.op!r}")
        return request


def answer(status: int, body: Mapping[str, Any]) -> bytes:
    """An answer JSON ``{"status", "body"}``."""
    return orjson.dumps({"status": status, "body": dict(body)})


def error_body(code: str, message: str, details: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``{"error": {"code", "message", "details"}}`` (the control server adds the timestamp)."""
    return {"error": {"code": code, "message": message, "details": dict(details or {})}}


# -- guards ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Guard:
    """Limits on one account's new orders. ``max_notional``: quote currency (USDT) per order, None = no limit;
    ``max_leverage``: None = no limit; ``symbols``: the symbols allowed, None = any."""

    max_notional: Decimal | None = None
    max_leverage: int | None = None
    symbols: frozenset[str] | None = None

    def refusal(self, symbol: str, leverage: int | None) -> tuple[str, str] | None:
        """``(code, message)`` when ``symbol`` or ``leverage`` breaks the guard, else None (notional: see
        ``notional_refusal``)."""
        if self.symbols is not None and symbol not in self.symbols:
            return "guard_symbol", f"{symbol} is not in this account's allowed symbols"
        if leverage is not None and self.max_leverage is not None and leverage > self.max_leverage:
            return "guard_leverage", f"leverage {leverage} is above this account's maximum {self.max_leverage}"
        return None

    def notional_refusal(self, notional: Decimal | None) -> tuple[str, str] | None:
        """``(code, message)`` when the order's notional (quote currency; None = unknown) may exceed
        ``max_notional``; an unknown notional is refused when a limit is set (the risk cannot be bounded)."""
        if self.max_notional is None:
            return None
        if notional is None:
            return "guard_notional", "the order's notional cannot be computed (no price or contract size known)"
        if notional > self.max_notional:
            limit = self.max_notional.normalize()
            return "guard_notional", f"notional {notional.normalize():f} is above this account's maximum {limit:f}"
        return None


def parse_guard(value: Any, where: str) -> Guard:
    """A ``Guard`` from ``{"max_notional": "1000", "max_leverage": 5, "symbols": ["BTC_USDT"]}`` (each optional);
    ValueError naming ``where`` and the field."""
    if not isinstance(value, dict) or set(value) - {"max_notional", "max_leverage", "symbols"}:
        raise ValueError(f"{where}: expected an object with max_notional, max_leverage, symbols")
    notional = None
    if value.get("max_notional") is not None:
        try:
            notional = Decimal(str(value["max_notional"]))
        except ArithmeticError:
            raise ValueError(f"{where}.max_notional: not a decimal") from None
        if not notional.is_finite() or notional <= 0:
            raise ValueError(f"{where}.max_notional: must be > 0")
    leverage = value.get("max_leverage")
    if leverage is not None and (type(leverage) is not int or leverage < 1):
        raise ValueError(f"{where}.max_leverage: must be an integer >= 1")
    symbols = value.get("symbols")
    if symbols is not None and (not isinstance(symbols, list) or not all(isinstance(s, str) for s in symbols)):
        raise ValueError(f"{where}.symbols: must be a list of symbols")
    return Guard(notional, leverage, frozenset(symbols) if symbols is not None else None)


def guard_for(defaults: Guard, per_account: Mapping[str, Guard], exchange: str, account: str) -> Guard:
    """The guard of ``exchange:account``: its own entry in ``ORDERS_GUARDS`` when there is one, else the defaults
    (``ORDERS_MAX_NOTIONAL``, ``ORDERS_MAX_LEVERAGE``, ``ORDERS_SYMBOLS``)."""
    return per_account.get(f"{exchange}:{account}", defaults)


# -- kill switch ----------------------------------------------------------------------------------------------


def halted(entries: Mapping[str, str], exchange: str, account: str) -> str | None:
    """The halt entry (``"*"`` or ``"exchange:account"``) that stops ``exchange:account``, or None. ``entries``:
    the ``HALT`` hash."""
    for ref in (HALT_ALL, f"{exchange}:{account}"):
        if ref in entries:
            return ref
    return None


def audit_fields(action: str, exchange: str, account: str, outcome: str, data: Mapping[str, Any]) -> dict[str, str]:
    """The fields of one audit entry: ``{"d": JSON}`` with action, exchange, account, outcome and ``data`` (the
    caller passes no secret; credentials never reach the request ``args``)."""
    return {"d": orjson.dumps({"action": action, "exchange": exchange, "account": account, "outcome": outcome,
                               **data}).decode()}  # fmt: skip


# -- settings parsers (control.settings declares ORDERS_*) -----------------------------------------------------


def _flag(raw: str) -> bool:
    if raw not in ("0", "1"):
        raise ValueError("must be 0 or 1")
    return raw == "1"


def _decimal_limit(raw: str) -> Decimal | None:
    return parse_guard({"max_notional": raw}, "value").max_notional


def _symbols(raw: str) -> frozenset[str] | None:
    items = [s.strip() for s in raw.split(",") if s.strip()]
    return frozenset(items) if items else None


def _guards(raw: str) -> dict[str, Guard]:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ValueError("must be a JSON object") from None
    if not isinstance(value, dict):
        raise ValueError("must be a JSON object {\"exchange:account\": {...}}")  # noqa: TRY004 (a settings value)
    out = {}
    for ref, item in value.items():
        if ref.count(":") != 1:
            raise ValueError(f"{ref!r}: keys are exchange:account")
        out[ref] = parse_guard(item, ref)
    return out


FLAG: Parser[bool] = Parser(_flag, "`0` `1`")
DECIMAL_LIMIT: Parser[Decimal | None] = Parser(_decimal_limit, "decimal > 0")
SYMBOLS: Parser[frozenset[str] | None] = Parser(_symbols, "comma list of symbols")
GUARDS: Parser[dict[str, Guard]] = Parser(
    _guards, 'JSON `{"exchange:account": {"max_notional": "…", "max_leverage": n, "symbols": […]}}`')
