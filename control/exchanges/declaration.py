"""What an exchange offers, as data the control server validates against (no workers code, no I/O).

One ``ExchangeDeclaration`` per exchange lives in ``control/exchanges/<id>.py``; ``control.exchanges.DECLARATIONS``
lists them, ``control.topics`` derives its tables (``EXCHANGES``, ``EXCHANGE_ALIASES``, ``CAPABILITIES``,
``DEPTH_LEVELS_CAP``) from them, and each worker adapter (``workers.exchanges.<id>``) points at its declaration for
the same facts, so there is one source. ``tests/exchanges/test_registry.py`` keeps the two registries in step.
Its environment variables are declared here too, and only here: ``control.settings`` reads them and renders
their README rows from ``ExchangeDeclaration.settings``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from control.setting_spec import API_KEY, API_SECRET, CREDENTIAL_ROLES, PRIVATE_WS, REST, WS, Setting

#: One environment variable an exchange reads: a ``control.setting_spec.Setting`` (name, default, parser, doc,
#: secrecy, role). ``control.settings`` reads and documents exactly the ones the declarations list.
ExchangeSetting = Setting


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
        settings: every environment variable of this exchange (URLs, credentials, options), each declared once
            with its default, parser, README doc line, secrecy and role. ``control.settings`` builds its
            per-exchange values and README rows from these alone; the roles say which holds the public WebSocket
            base (``WS``, required), the private one (``PRIVATE_WS``, optional: else the public base serves
            private sockets too), the REST base (``REST``, required) and the default account's credential fields
            (``API_KEY`` and ``API_SECRET`` required, ``MEMO``, ``UID``).
        orders: order execution is offered (``POST /orders`` ...; the worker side is the venue's
            ``workers.exchanges.ORDER_ADAPTERS`` entry). False for BitMart (shutting down by 2027-01-31).
    """

    id: str
    name: str
    channels: tuple[str, ...]
    private_channels: tuple[str, ...]
    timeframes: tuple[str, ...]
    depth_levels_cap: int
    aliases: tuple[str, ...] = ()
    settings: tuple[Setting[Any], ...] = field(default=())
    orders: bool = False

    def __post_init__(self) -> None:
        envs = [s.env for s in self.settings]
        if len(envs) != len(set(envs)):
            raise ValueError(f"{self.id}: a setting is declared twice")
        for role in (WS, REST, API_KEY, API_SECRET):
            if self.by_role(role) is None:
                raise ValueError(f"{self.id}: no setting with role {role!r}")

    def by_role(self, role: str) -> Setting[Any] | None:
        """The setting filed under ``role`` (``control.setting_spec.WS`` ...), or None when none is."""
        return next((s for s in self.settings if s.role == role), None)

    @property
    def credentials(self) -> dict[str, str]:
        """``control.accounts.Account`` field -> environment variable of the default account's value
        (``api_key`` -> ``BITMART_API_KEY``): the fields a private account of this exchange needs."""
        return {s.role: s.env for s in self.settings if s.role in CREDENTIAL_ROLES}

    @property
    def ws_url_env(self) -> str:
        """Name of the variable holding the public WebSocket base."""
        return self._env(WS)

    @property
    def private_ws_url_env(self) -> str | None:
        """Name of the variable holding the private WebSocket base; None: the public base serves private sockets."""
        spec = self.by_role(PRIVATE_WS)
        return spec.env if spec is not None else None

    @property
    def rest_url_env(self) -> str:
        """Name of the variable holding the REST base."""
        return self._env(REST)

    def _env(self, role: str) -> str:
        spec = self.by_role(role)
        assert spec is not None  # __post_init__ checked the required roles
        return spec.env

    def capabilities(self) -> dict[str, frozenset[str] | None]:
        """``control.topics.CAPABILITIES`` entry: channel -> served timeframes (``kline``) or None (no timeframe)."""
        caps: dict[str, frozenset[str] | None] = {}
        for channel in self.channels:
            caps[channel] = frozenset(self.timeframes) if channel == "kline" else None
        for channel in self.private_channels:
            caps[channel] = None
        return caps

    def setting(self, env: str) -> Setting[Any]:
        """The declared setting named ``env``; raises KeyError if this exchange declares none by that name."""
        for item in self.settings:
            if item.env == env:
                return item
        raise KeyError(env)
