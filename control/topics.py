"""Topics: the unit of subscription, ``{exchange}:{channel}:{symbol}[:{timeframe}]``.

Examples: ``bitmart:kline:BTCUSDT:1m``, ``binanceusdm:trade:BTCUSDT``.
Exchange ids follow ccxt (``bitmart``, ``binanceusdm``); symbols are exchange-native
(``BTCUSDT``); timeframes are canonical lowercase ccxt style (``1m`` ... ``1w``).

Private topics (one account's orders, positions, balances) are ``{exchange}:{channel}:{account}``,
e.g. ``bitmart:order:default``: the symbol slot holds the account name (``ACCOUNT_RE``, case kept).
Every exchange serves them (``CAPABILITIES``; the workers open one socket per account: ``workers.private``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from control.errors import FeedplaneError
from control.exchanges import DECLARATIONS

#: Exchange ids, from the per-exchange declarations (``control/exchanges/<id>.py``).
EXCHANGES: tuple[str, ...] = tuple(DECLARATIONS)
#: Other spellings accepted on input (ccxt knows Gate.io as both ``gate`` and ``gateio``).
EXCHANGE_ALIASES: dict[str, str] = {alias: d.id for d in DECLARATIONS.values() for alias in d.aliases}
CHANNELS: tuple[str, ...] = ("kline", "trade", "ticker", "bookticker", "depth")
#: Order-book depth: levels a ``depth`` subscription may ask for (top-N snapshots), and the default.
DEPTH_LEVELS_MAX = 100
DEPTH_LEVELS_DEFAULT = 20
#: Canonical timeframes accepted by the API, with their length in milliseconds.
TIMEFRAME_MS: dict[str, int] = {
    "1m": 60_000,
    "5m": 300_000,
    "15m": 900_000,
    "30m": 1_800_000,
    "1h": 3_600_000,
    "2h": 7_200_000,
    "4h": 14_400_000,
    "1d": 86_400_000,
    "1w": 604_800_000,
}
#: BitMart spells hours, days and weeks in upper case (exchanges.md §1.6); accepted as input.
_TIMEFRAME_ALIASES = {"1H": "1h", "2H": "2h", "4H": "4h", "1D": "1d", "1W": "1w"}
_SYMBOL_RE = re.compile(r"^[A-Z0-9][A-Z0-9_\-]{1,39}$")  # Gate contracts carry "_": BTC_USDT
#: Channels of one account's private data; topics ``{exchange}:{channel}:{account}``.
PRIVATE_CHANNELS: tuple[str, ...] = ("order", "position", "balance")
#: Account names (``ACCOUNTS_FILE``, ``POST /accounts``, private topics): no ``:``, so topics stay splittable.
ACCOUNT_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class TopicError(FeedplaneError, ValueError):
    """A topic string or one of its parts is invalid; ``field`` names the part."""

    def __init__(self, message: str, field: str = "topic") -> None:
        super().__init__(message)
        self.field = field


def normalize_timeframe(tf: str) -> str:
    """Return the canonical spelling of ``tf`` (``"1H"`` -> ``"1h"``).

    Raises TopicError when ``tf`` is not one of ``1m 5m 15m 30m 1h 2h 4h 1d 1w``.
    """
    canonical = _TIMEFRAME_ALIASES.get(tf, tf)
    if canonical not in TIMEFRAME_MS:
        raise TopicError(f"unknown timeframe {tf!r}; use one of {' '.join(TIMEFRAME_MS)}", "tfs")
    return canonical


def normalize_symbol(symbol: str) -> str:
    """Upper-case and validate an exchange-native symbol such as ``BTCUSDT``; raises TopicError."""
    s = symbol.strip().upper()
    if not _SYMBOL_RE.match(s):
        raise TopicError(f"invalid symbol {symbol!r}", "symbol")
    return s


def validate_account(account: str) -> str:
    """``account`` unchanged when it matches ``ACCOUNT_RE`` (1-64 of ``A-Z a-z 0-9 _ . -``); raises TopicError."""
    if not ACCOUNT_RE.fullmatch(account):  # fullmatch: "$" alone would accept a trailing newline
        raise TopicError(f"invalid account {account!r}; use 1-64 letters, digits, '_', '.' or '-'", "account")
    return account


def is_private(topic: str) -> bool:
    """True for ``{exchange}:{order|position|balance}:{account}`` topics (cheap: no validation)."""
    return topic.split(":", 2)[1:2] in (["order"], ["position"], ["balance"])


def private_topic(exchange: str, channel: str, account: str) -> str:
    """``{exchange}:{channel}:{account}`` for a private ``channel`` (``order``/``position``/``balance``).

    ``exchange`` may be an alias (``gate``). Raises TopicError (with ``field``) for an unknown exchange or
    channel, or an account name outside ``ACCOUNT_RE``.
    """
    exchange = EXCHANGE_ALIASES.get(exchange, exchange)
    if exchange not in EXCHANGES:
        raise TopicError(f"unknown exchange {exchange!r}; use one of {', '.join(EXCHANGES)}", "exchange")
    if channel not in PRIVATE_CHANNELS:
        raise TopicError(f"unknown private channel {channel!r}; use one of {', '.join(PRIVATE_CHANNELS)}", "channel")
    if channel not in CAPABILITIES.get(exchange, {}):
        raise TopicError(f"{exchange} has no {channel} channel", "channel")
    return f"{exchange}:{channel}:{validate_account(account)}"


@dataclass(frozen=True, slots=True)
class Topic:
    """One subscription target. ``timeframe`` is set for klines only; for private channels ``symbol`` is the account."""

    exchange: str
    channel: str
    symbol: str
    timeframe: str | None = None

    def __str__(self) -> str:
        base = f"{self.exchange}:{self.channel}:{self.symbol}"
        return f"{base}:{self.timeframe}" if self.timeframe else base

    @classmethod
    def parse(cls, text: str) -> Topic:
        """Parse ``exchange:channel:SYMBOL[:tf]`` or a private ``exchange:order:account``; raises TopicError."""
        parts = text.split(":")
        if len(parts) not in (3, 4):
            raise TopicError(f"invalid topic {text!r}; expected exchange:channel:SYMBOL[:timeframe]")
        exchange, channel, symbol = parts[0], parts[1], parts[2]
        if exchange not in EXCHANGES:
            raise TopicError(f"unknown exchange {exchange!r}", "exchange")
        if channel in PRIVATE_CHANNELS:
            if len(parts) != 3:
                raise TopicError(f"{channel} topic {text!r} takes no timeframe")
            return cls(exchange, channel, validate_account(symbol))
        if channel not in CHANNELS:
            raise TopicError(f"unknown channel {channel!r}", "channel")
        if channel == "kline":
            if len(parts) != 4:
                raise TopicError(f"kline topic {text!r} needs a timeframe")
            return cls(exchange, channel, normalize_symbol(symbol), normalize_timeframe(parts[3]))
        if len(parts) != 3:
            raise TopicError(f"{channel} topic {text!r} takes no timeframe")
        return cls(exchange, channel, normalize_symbol(symbol))


#: What each exchange serves, for request validation in the control server: channel -> served timeframes (``kline``)
#: or None, derived from each exchange's declaration (``control/exchanges/<id>.py``), which the worker adapters point
#: at too. Private channels (``order``, ``position``, ``balance``) take an account name where public ones take a symbol.
CAPABILITIES: dict[str, dict[str, frozenset[str] | None]] = {d.id: d.capabilities() for d in DECLARATIONS.values()}
#: Most levels per side a ``depth`` subscription may ask for, per exchange: the window in which the worker's book is
#: kept up to date (levels outside an exchange's window never receive updates, so a larger ``levels`` would publish
#: stale levels). Declared per exchange (``ExchangeDeclaration.depth_levels_cap``); adapters use the same number.
DEPTH_LEVELS_CAP: dict[str, int] = {d.id: d.depth_levels_cap for d in DECLARATIONS.values()}


def depth_levels_max(exchange: str) -> int:
    """The most levels per side a ``depth`` topic of ``exchange`` (id or alias) may publish: ``DEPTH_LEVELS_CAP``,
    ``DEPTH_LEVELS_MAX`` for an exchange without an entry."""
    return DEPTH_LEVELS_CAP.get(EXCHANGE_ALIASES.get(exchange, exchange), DEPTH_LEVELS_MAX)


def make_topic(exchange: str, channel: str, symbol: str, timeframe: str | None = None) -> Topic:
    """Validated topic from parts (symbol normalised, timeframe canonicalised; for a private channel ``symbol`` is
    the account name, kept as given).

    Raises TopicError (with ``field``) for an unknown exchange/channel, a bad symbol or account, or a
    timeframe the exchange does not serve.
    """
    exchange = EXCHANGE_ALIASES.get(exchange, exchange)
    if exchange not in CAPABILITIES:
        raise TopicError(f"unknown exchange {exchange!r}; use one of {', '.join(EXCHANGES)}", "exchange")
    channels = CAPABILITIES[exchange]
    if channel not in channels:
        raise TopicError(f"{exchange} has no {channel} channel", "channel")
    if channel in PRIVATE_CHANNELS:
        return Topic(exchange, channel, validate_account(symbol))
    sym = normalize_symbol(symbol)
    if channel != "kline":
        return Topic(exchange, channel, sym)
    if timeframe is None:
        raise TopicError("a kline topic needs a timeframe", "tfs")
    tf = normalize_timeframe(timeframe)
    served = channels["kline"]
    if served is not None and tf not in served:
        raise TopicError(f"{exchange} has no {tf} klines", "tfs")
    return Topic(exchange, channel, sym, tf)
