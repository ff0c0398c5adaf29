"""What an exchange offers, as data the control server validates against (no workers code, no I/O).

One ``ExchangeDeclaration`` per exchange lives in ``control/exchanges/<id>.py``; ``control.exchanges.DECLARATIONS``
lists them, ``control.topics`` derives its tables (``EXCHANGES``, ``EXCHANGE_ALIASES``, ``CAPABILITIES``,
``DEPTH_LEVELS_CAP``) from them, and each worker adapter (``workers.exchanges.<id>``) points at its declaration for
the same facts, so there is one source. ``tests/exchanges/test_registry.py`` keeps the two registries in step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

#: How a setting's text is checked: a ``ws://``/``wss://`` URL, an ``http(s)://`` URL, a secret (never shown), or
#: one of ``choices``.
SettingKind = Literal["ws_url", "http_url", "secret", "choice"]


@dataclass(frozen=True, slots=True)
class ExchangeSetting:
    """One environment variable an exchange reads: ``env`` name, ``default`` text, ``kind``, a doc line.

    Declared here so the settings table (``control.settings``) can be built from the exchanges' own lists; until
    that wiring lands ``tests/exchanges/test_registry.py`` checks that ``Settings`` has the same names and defaults.
    """

    env: str
    default: str
    kind: SettingKind
    doc: str
    choices: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ExchangeDeclaration:
    """Everything the control plane needs to know about one exchange.

    Attributes:
        id: ccxt exchange id, the first part of every topic (``bitmart``).
        name: human name for help texts.
        aliases: other spellings accepted on input (``gate`` for ``gateio``).
        channels: public Feedplane channels served (subset of ``control.topics.CHANNELS``).
        private_channels: account channels served (subset of ``control.topics.PRIVATE_CHANNELS``).
        timeframes: canonical kline timeframes served (subset of ``control.topics.TIMEFRAME_MS``), in that order.
        depth_levels_cap: most levels per side a ``depth`` topic may publish: the window in which the exchange keeps
            the book up to date, at most ``control.topics.DEPTH_LEVELS_MAX``.
        credentials: ``control.accounts.Account`` field -> environment variable of the default account's value
            (``api_key`` -> ``BITMART_API_KEY``); the fields a private account of this exchange needs.
        ws_url_env, private_ws_url_env, rest_url_env: the settings holding the public WebSocket base, the private
            one (None: the public base serves private sockets too) and the REST base.
        settings: every environment variable of this exchange (URLs, credentials, options) with default and doc.
    """

    id: str
    name: str
    channels: tuple[str, ...]
    private_channels: tuple[str, ...]
    timeframes: tuple[str, ...]
    depth_levels_cap: int
    credentials: dict[str, str]
    ws_url_env: str
    rest_url_env: str
    private_ws_url_env: str | None = None
    aliases: tuple[str, ...] = ()
    settings: tuple[ExchangeSetting, ...] = field(default=())

    def capabilities(self) -> dict[str, frozenset[str] | None]:
        """``control.topics.CAPABILITIES`` entry: channel -> served timeframes (``kline``) or None (no timeframe)."""
        caps: dict[str, frozenset[str] | None] = {}
        for channel in self.channels:
            caps[channel] = frozenset(self.timeframes) if channel == "kline" else None
        for channel in self.private_channels:
            caps[channel] = None
        return caps

    def setting(self, env: str) -> ExchangeSetting:
        """The declared setting named ``env``; raises KeyError if this exchange declares none by that name."""
        for item in self.settings:
            if item.env == env:
                return item
        raise KeyError(env)
