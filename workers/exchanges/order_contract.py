"""The order-execution contract: ``OrderAdapter`` (what ``workers.orders`` needs of an exchange to place, read and
cancel orders, take-profit/stop-loss triggers, leverage and margin mode) and its value types. Pure: adapters build
signed ``RestRequest`` values and parse answers; ``workers.orders`` does the I/O. A sibling of
``workers.exchanges.base`` (which lists it with the other adapter contracts and would pass 400 lines with it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from workers.exchanges.base import AdapterError, Credentials, RestRequest, SnapshotRequest


class VenueRefusal(AdapterError):
    """The exchange refused an order call: ``code`` and ``message`` are its own (Gate ``label``/``message``, Binance
    ``code``/``msg``), ``status`` the HTTP status. Never carries a secret (the exchange does not echo them)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.status, self.code, self.message = status, code, message


@dataclass(frozen=True, slots=True)
class OrderSpec:
    """An order to place. ``size`` and ``price`` are decimal strings in the exchange's units (Gate: contracts,
    Binance: base asset); ``price`` None for market orders. ``side``: buy | sell; ``type``: market | limit;
    ``time_in_force``: gtc | ioc | fok | post_only; ``position_side``: long | short in hedge (dual) mode, None in
    one-way mode; ``client_order_id`` already in the exchange's form (``OrderAdapter.client_order_id``)."""

    symbol: str
    side: str
    type: str
    size: str
    price: str | None
    time_in_force: str
    reduce_only: bool
    client_order_id: str
    position_side: str | None = None


@dataclass(frozen=True, slots=True)
class TriggerSpec:
    """A take-profit or stop-loss trigger closing the whole ``position`` (long | short) of ``symbol`` at market when
    the ``price_type`` (last | mark | index) price reaches ``price`` (decimal string). ``kind``: take_profit |
    stop_loss; ``hedge``: the account is in hedge (dual) mode."""

    symbol: str
    kind: str
    position: str
    price: str
    price_type: str
    client_order_id: str
    hedge: bool = False


@dataclass(frozen=True, slots=True)
class PositionInfo:
    """One position as the exchange reports it: ``side`` long | short | both (one-way net), ``size`` the signed
    decimal string (negative: short), ``leverage`` and ``margin_mode`` (isolated | cross) as set, ``hedge`` whether
    the account is in hedge (dual) mode."""

    symbol: str
    side: str
    size: str
    leverage: str | None
    margin_mode: str | None
    hedge: bool
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ContractRules:
    """What an order must respect on one contract, from the exchange's contract info: ``tick`` (price step),
    ``lot`` (size step), ``min_size`` (decimal strings or None), ``multiplier`` (base units per size unit: Gate's
    ``quanto_multiplier``, 1 on Binance) and ``ref_price`` (a current price for the notional of market orders)."""

    symbol: str
    tick: str | None = None
    lot: str | None = None
    min_size: str | None = None
    multiplier: str = "1"
    ref_price: str | None = None


class OrderAdapter(Protocol):
    """Order execution on one exchange, as signed requests and parsers (pure: time comes in as ``now_ms``).

    Every ``*_request`` returns a ``RestRequest`` for ``{REST base}{path}``; every ``parse_*`` raises ``VenueRefusal``
    for an error answer (``refusal``) and ValueError for a malformed one. Order dicts are ``control.events.OrderEvent``
    (``snapshot`` false). Attributes: ``id`` (exchange id), ``price_types`` (trigger price types it supports),
    ``contract_sized`` (sizes count contracts of ``ContractRules.multiplier`` base units: the notional needs the
    contract info).
    """

    id: str
    price_types: frozenset[str]
    contract_sized: bool

    def client_order_id(self, value: str | None, fresh: str) -> str:
        """``value`` in the exchange's client-order-id form, or a new one from ``fresh`` (hex) when None; raises
        AdapterError for a value the exchange would refuse."""
        ...

    def refusal(self, status: int, body: bytes) -> VenueRefusal | None:
        """The exchange's refusal in an answer (status >= 400 or an error body), None for a success."""
        ...

    def is_not_found(self, refusal: VenueRefusal) -> bool:
        """True when ``refusal`` says the order does not exist (a look-up by client order id found nothing)."""
        ...

    def positions_request(self, creds: Credentials, symbol: str, now_ms: int) -> RestRequest:
        """Read the account's position(s) on ``symbol``."""
        ...

    def parse_positions(self, body: bytes, symbol: str) -> list[PositionInfo]:
        """The positions of ``symbol`` in a ``positions_request`` answer (one-way: one, hedge: long and short)."""
        ...

    def leverage_requests(
        self, creds: Credentials, symbol: str, leverage: int | None, margin_mode: str | None,
        positions: list[PositionInfo], now_ms: int,
    ) -> list[tuple[str, RestRequest]]:
        """``(step name, request)`` setting margin mode and leverage, skipping what ``positions`` show already so;
        AdapterError when the exchange cannot express the combination."""
        ...

    def order_request(self, creds: Credentials, spec: OrderSpec, now_ms: int) -> RestRequest:
        """Place ``spec``."""
        ...

    def get_request(
        self, creds: Credentials, symbol: str, order_id: str | None, client_order_id: str | None, now_ms: int
    ) -> RestRequest:
        """Read one order by exchange id or by client order id."""
        ...

    def cancel_request(self, creds: Credentials, symbol: str, order_id: str, now_ms: int) -> RestRequest:
        """Cancel one order."""
        ...

    def parse_order(self, body: bytes, account: str, ts_received_ms: int) -> dict[str, Any]:
        """The order in a place/get/cancel answer."""
        ...

    def close_spec(self, symbol: str, side: str, positions: list[PositionInfo], client_order_id: str) -> OrderSpec | None:
        """The reduce-only market order closing the whole ``side`` (long | short) position, None when flat."""
        ...

    def trigger_request(self, creds: Credentials, spec: TriggerSpec, now_ms: int) -> RestRequest:
        """Place a take-profit/stop-loss trigger order."""
        ...

    def parse_trigger(self, body: bytes) -> str:
        """The trigger order's id in a ``trigger_request`` answer."""
        ...

    def cancel_trigger_request(self, creds: Credentials, symbol: str, trigger_id: str, now_ms: int) -> RestRequest:
        """Cancel one trigger order."""
        ...

    def open_triggers_request(self, creds: Credentials, now_ms: int) -> RestRequest:
        """List the account's open trigger orders."""
        ...

    def parse_open_triggers(self, body: bytes) -> list[tuple[str, str]]:
        """``(symbol, trigger id)`` of each open trigger order."""
        ...

    def contract_request(self, symbol: str) -> SnapshotRequest:
        """The public contract-info request of ``symbol``."""
        ...

    def parse_contract(self, body: bytes, symbol: str) -> ContractRules:
        """The rules of ``symbol`` in a ``contract_request`` answer; ValueError when it is not there."""
        ...
