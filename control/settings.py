"""Settings read once from the environment (or any mapping), frozen, validated at start.

Every variable is declared once: a process-wide one as a field of ``Settings`` (``control.settings_table.setting``),
an exchange's own ones (URLs, credentials, options) in its declaration (``control/exchanges/<id>.py``,
``ExchangeDeclaration.settings``), each with environment name, default, type, accepted values, README doc line,
secrecy and (per exchange) role. ``Settings.exchanges`` holds the values of every declared exchange
(``Settings.exchange(id)``, ``Settings.value(spec)``), read from ``control.exchanges.DECLARATIONS`` or the
declarations given to ``from_env``: a new exchange edits nothing in this module. README's "Settings" table is
rendered from all of them (``python -m control.settings``; ``tests/control/test_settings.py`` checks README).

Names and defaults of the BitMart worker are kept so its configuration works unchanged. Invalid values raise
``SettingsError`` whose message starts with the variable's name. Secrets (``BITMART_API_SECRET``,
``CONTROL_TOKEN``, ``FEEDPLANE_SECRET_KEY`` ...) are never shown in reprs or error messages. ``ACCOUNTS_FILE`` is
read and validated here, once (``control.secrets_file.load_secrets_file``).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TypeVar

from control.credentials import TOKEN_MIN_CHARS, TOKEN_RE
from control.errors import SettingsError
from control.exchange_settings import ExchangeSettings, declarations_or_registry, read_exchanges
from control.exchanges import ExchangeDeclaration
from control.orders import DECIMAL_LIMIT, FLAG, GUARDS, SYMBOLS, Guard, guard_for
from control.redis_client import display_url
from control.secrets_file import SecretsFile, check_env_overlap, load_secrets_file
from control.settings_table import (
    ADDR,
    API_KEY,
    API_SECRET,
    EVENTS_REDIS_URL,
    FERNET_KEY,
    NETWORKS,
    ORIGINS,
    PATH,
    POSITIVE,
    REDIS_URL,
    TOKEN,
    WORKER_ID,
    Setting,
    declared,
    int_range,
    markdown_table,
    one_of,
    read_settings,
    setting,
)
from control.topics import EXCHANGES

__all__ = ["TOKEN_MIN_CHARS", "TOKEN_RE", "ExchangeSettings", "Settings", "SettingsError", "settings_table"]

T = TypeVar("T")

_CTRL_ADDR = ("127.0.0.1", 8089)


def _host_pid() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True, slots=True)
class Settings:
    """All runtime settings. Units are in the names (``_s`` seconds, ``_ms`` milliseconds)."""

    # -- feeds ----------------------------------------------------------------------------------------------
    default_exchange: str = setting(
        "DEFAULT_EXCHANGE", "bitmart", one_of(EXCHANGES), "exchange when a request names none")
    subscribe_batch: int = setting(
        "SUBSCRIBE_BATCH", 20, int_range(1, 1000),
        "topics per subscribe frame (BitMart frames also stay under 2,000 bytes)")  # fmt: skip
    subscribe_delay_ms: int = setting(
        "SUBSCRIBE_DELAY_MS", 200, int_range(0, 60_000),
        "least gap between two frames we send (Binance: also ≥ 100 ms, its 10 msg/s limit)")  # fmt: skip
    ping_interval_s: float = setting(
        "PING_INTERVAL_S", 15.0, POSITIVE, 'BitMart `{"action":"ping"}` interval; WebSocket ping interval on Binance')
    pong_timeout_s: float = setting(
        "PONG_TIMEOUT_S", 10.0, POSITIVE, "a peer silent for `PING_INTERVAL_S + PONG_TIMEOUT_S` is dead")
    reconnect_delay_s: float = setting(
        "RECONNECT_DELAY_S", 5.0, POSITIVE, "first reconnect delay; doubles with jitter up to `RECONNECT_MAX_DELAY_S`")
    reconnect_max_delay_s: float = setting(
        "RECONNECT_MAX_DELAY_S", 60.0, POSITIVE, "longest reconnect delay (at least `RECONNECT_DELAY_S`)")
    stall_timeout_s: float = setting(
        "STALL_TIMEOUT_S", 90.0, POSITIVE, "a subscribed connection with no data this long is reconnected")
    depth_interval_ms: int = setting(
        "DEPTH_INTERVAL_MS", 100, int_range(10, 60_000), "least gap between two top-N `depth` snapshots of one book")
    #: Klines of exchanges without a closed flag (BitMart, Gate) are closed by close_time + this (workers.kline_close).
    kline_close_grace_ms: int = setting(
        "KLINE_CLOSE_GRACE_MS", 1500, int_range(0, 600_000),
        'BitMart and Gate.io klines (no closed flag): each bar goes out with `"closed": true`, from its last values '
        "seen, by `close_time` + this")  # fmt: skip

    # -- processes, Redis, leases ---------------------------------------------------------------------------
    redis_url: str = setting(
        "REDIS_URL", "redis://127.0.0.1:6379/0", REDIS_URL,
        "Redis; Sentinel as `redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db]` "
        "(sentinel port 26379 by default)", show=display_url)  # fmt: skip  # display_url: no password in errors
    #: The event data plane (streams, pub/sub, latest values; control.events_redis); control state stays on REDIS_URL.
    events_redis_url: str = setting(
        "EVENTS_REDIS_URL", "", EVENTS_REDIS_URL,
        "Redis for the event data (streams, pub/sub, latest values) when it is not `REDIS_URL`: one server, "
        "Sentinel, or a Redis Cluster as `redis+cluster://[[user]:password@]host:port[,host:port...]`",
        show=display_url, shown_default="REDIS_URL")  # fmt: skip
    #: Split mode (workers.publish_nodes): replicas that must confirm (WAIT) a batch before it counts as written.
    events_min_replicas: int = setting(
        "EVENTS_MIN_REPLICAS", -1, int_range(-1, 16),
        "replicas of an events node that must confirm (`WAIT`) each batch before it counts as written; -1: 1 on a "
        "Redis Cluster, else 0; 0: off. Unconfirmed batches are resent after a failover (never twice)",
        shown_default="-1")  # fmt: skip
    workers: int = setting("WORKERS", 2, int_range(1, 256), "worker processes started by `scripts/run`")
    worker_id: str = setting(
        "WORKER_ID", "", WORKER_ID, "set per process by supervisord (`<host>-<n>`)", env_default=_host_pid,
        shown_default="<host>-<pid>")  # fmt: skip
    stream_maxlen: int = setting(
        "STREAM_MAXLEN", 100_000, int_range(100, 100_000_000), "approximate length cap of each topic's Redis Stream")
    #: A dead worker's connections are served again by another within about LEASE_TTL_S (+ one connect).
    lease_ttl_s: float = setting(
        "LEASE_TTL_S", 4.0, POSITIVE,
        "connection lease lifetime (≥ 2 × `HEARTBEAT_INTERVAL_S`): a dead worker's connections are served again "
        "about this long after its last renewal")  # fmt: skip
    heartbeat_interval_s: float = setting("HEARTBEAT_INTERVAL_S", 1.0, POSITIVE, "worker heartbeat")
    drain_timeout_s: float = setting("DRAIN_TIMEOUT_S", 5.0, POSITIVE, "graceful stop budget per worker")
    #: Age at which a public socket is rolled (make-before-break) ahead of the exchanges' 24 h limit.
    connection_max_age_s: float = setting(
        "CONNECTION_MAX_AGE_S", 84_600.0, POSITIVE,
        "23.5 h: public sockets are rolled (make-before-break, no gap) before the exchanges' 24 h limit")
    #: Bound on one make-before-break (rebalancing handover or lifetime roll): offer lifetime, standby readiness.
    handover_timeout_s: float = setting(
        "HANDOVER_TIMEOUT_S", 30.0, POSITIVE,
        "bound on one rebalancing handover or roll (offer lifetime, standby socket readiness)")  # fmt: skip
    #: A worker this far behind the exchange has spread its connections already; beyond it, it sheds (workers.lag_guard).
    lag_max_ms: int = setting(
        "LAG_MAX_MS", 2000, int_range(0, 3_600_000),
        "bound on a worker's lag (`lag_ms`): above half of it for 2 ticks the worker hands connections to healthy "
        "workers; when its write lag stays above it, queued events older than half of it are shed, announced as "
        "`gap` `lag`; 0 = off")  # fmt: skip
    log_level: str = setting("LOG_LEVEL", "INFO", one_of(("DEBUG", "INFO", "WARNING", "ERROR")), "log level")
    log_format: str = setting(
        "LOG_FORMAT", "text", one_of(("text", "json")),
        "log lines as plain text, or one JSON object per line (role, worker id, request id, connection, topic)")
    #: Prometheus metrics of each worker process on METRICS_PORT + PROCESS_NUM (``workers.metrics``); 0 = off.
    metrics_port: int = setting(
        "METRICS_PORT", 9300, int_range(0, 65_000),
        "worker metrics on `http://<host>:METRICS_PORT+PROCESS_NUM/metrics`; 0 = off (the control server's are on "
        "`GET /metrics`)")  # fmt: skip
    process_num: int = setting(
        "PROCESS_NUM", 0, int_range(0, 255), "set per worker by supervisord (its process number): the metrics port offset")

    # -- control server -------------------------------------------------------------------------------------
    ctrl_host: str = setting(
        "CTRL_ADDR", _CTRL_ADDR, ADDR, "control server address", attrs=("ctrl_host", "ctrl_port"))
    ctrl_port: int = _CTRL_ADDR[1]  # set from CTRL_ADDR with ctrl_host
    max_body_bytes: int = setting(
        "MAX_BODY_BYTES", 65_536, int_range(256, 16 * 1024 * 1024), "request body limit (413 above)")
    sse_ping_s: float = setting("SSE_PING_S", 15.0, POSITIVE, "SSE keep-alive comment interval")
    sse_send_timeout_s: float = setting(
        "SSE_SEND_TIMEOUT_S", 10.0, POSITIVE,
        "an SSE client that takes no bytes for this long is cut (`bye`, reason `slow_consumer`); it resumes by cursor")
    #: Load balancers whose ``X-Forwarded-For`` names the client, as networks (``app.client_address``).
    trusted_proxies: tuple[str, ...] = setting(
        "TRUSTED_PROXIES", (), NETWORKS,
        "proxies whose `X-Forwarded-For` names the client for per-client limits; empty: the peer is the client")
    ctrl_reuse_port: int = setting(
        "CTRL_REUSE_PORT", 0, int_range(0, 1),
        "1: bind CTRL_ADDR with SO_REUSEPORT, so several control processes share one address")
    #: API tokens (scopes control+read, and read); kept for the redaction filter, verified by sha256 digest only.
    control_token: str = setting(
        "CONTROL_TOKEN", "", TOKEN, "bearer token of the control scope (and read); see Security", secret=True)
    read_token: str = setting("READ_TOKEN", "", TOKEN, "bearer token of the read scope; see Security", secret=True)
    #: Path of the owner-only JSON secrets file (accounts and tokens); "" when none. Parsed into ``secrets_file``.
    accounts_file: str = setting(
        "ACCOUNTS_FILE", "", PATH, "secrets file (accounts, tokens); refused unless owner-only (`chmod 600`)")
    secrets_file: SecretsFile | None = field(default=None, repr=False, compare=False)
    #: Fernet key (urlsafe base64 of 32 bytes) sealing accounts added with POST /accounts; "" disables that.
    secret_key: str = setting(
        "FEEDPLANE_SECRET_KEY", "", FERNET_KEY, "encrypts accounts stored in Redis; `POST /accounts` needs it",
        secret=True)  # fmt: skip
    #: Requests per minute per token (0 = unlimited); auth failures per minute per client address.
    rate_limit_control_per_min: int = setting(
        "RATE_LIMIT_CONTROL_PER_MIN", 100, int_range(0, 1_000_000),
        "control requests per minute per token; 0 = unlimited")  # fmt: skip
    rate_limit_read_per_min: int = setting(
        "RATE_LIMIT_READ_PER_MIN", 1000, int_range(0, 1_000_000), "read requests per minute per token; 0 = unlimited")
    rate_limit_sse_per_min: int = setting(
        "RATE_LIMIT_SSE_PER_MIN", 5, int_range(0, 1_000_000), "new SSE streams per minute per token and client address; 0 = unlimited")
    rate_limit_auth_fail_per_min: int = setting(
        "RATE_LIMIT_AUTH_FAIL_PER_MIN", 30, int_range(0, 1_000_000),
        "failed authentications per minute per client address; 0 = unlimited")  # fmt: skip
    #: WebSocket fan-out (``GET /ws``, ``app.ws``): the realtime spec's limits. 0 = unlimited where noted.
    ws_connections_per_token: int = setting(
        "WS_CONNECTIONS_PER_TOKEN", 3, int_range(0, 1_000_000),
        "open `/ws` connections per token (per control process); 0 = unlimited")  # fmt: skip
    ws_subscriptions_max: int = setting(
        "WS_SUBSCRIPTIONS_MAX", 50, int_range(1, 10_000), "topics one `/ws` connection may subscribe to")
    ws_new_per_min: int = setting(
        "WS_NEW_PER_MIN", 5, int_range(0, 1_000_000),
        "new `/ws` connections per minute per client address (secured mode); 0 = unlimited")  # fmt: skip
    ws_heartbeat_s: float = setting(
        "WS_HEARTBEAT_S", 30.0, POSITIVE,
        '`/ws` server `{"type":"ping"}` interval; a client silent through two of them is closed')  # fmt: skip
    ws_idle_timeout_s: float = setting(
        "WS_IDLE_TIMEOUT_S", 300.0, POSITIVE, "a `/ws` connection without any subscription this long is closed")
    ws_send_queue_max: int = setting(
        "WS_SEND_QUEUE_MAX", 5000, int_range(1000, 1_000_000),
        "events queued for one `/ws` client (≥ 2 × the 500 one hub read hands over at once); a client further "
        "behind gets `CONNECTION_LOST` and is closed")  # fmt: skip
    #: Origins allowed by CORS (browser SSE clients); empty = no CORS headers at all.
    cors_origins: tuple[str, ...] = setting(
        "CORS_ORIGINS", (), ORIGINS, "origins allowed to call the API from a browser; empty: no CORS headers")
    # -- orders (control.orders) --------------------------------------------------------------------------
    orders_enabled: bool = setting(
        "ORDERS_ENABLED", False, FLAG, "`1` turns order execution on (`POST /orders` ...); off, they answer 409 "
        "`orders_disabled`")  # fmt: skip
    orders_timeout_s: float = setting(
        "ORDERS_TIMEOUT_S", 10.0, POSITIVE, "how long the control server waits for a worker's answer to an order "
        "request (then 504 `order_timeout`: retry with the same `client_order_id`)")  # fmt: skip
    orders_max_notional: Decimal | None = setting(  # noqa: RUF009 (frozen: read once)
        "ORDERS_MAX_NOTIONAL", None, DECIMAL_LIMIT, "default guard: largest notional (quote currency) of one new "
        "order; empty = no limit")  # fmt: skip
    orders_max_leverage: int = setting(
        "ORDERS_MAX_LEVERAGE", 0, int_range(0, 1000), "default guard: highest leverage an order may ask; 0 = no limit")
    orders_symbols: frozenset[str] | None = setting(
        "ORDERS_SYMBOLS", None, SYMBOLS, "default guard: the only symbols orders may use; empty = any",
    )  # fmt: skip
    orders_guards: dict[str, Guard] | None = setting(  # noqa: RUF009 (frozen: read once)
        "ORDERS_GUARDS", None, GUARDS, "per-account guards replacing the three defaults for that account",
    )  # fmt: skip
    #: Every exchange's own variables, read from its declaration (``control/exchanges/<id>.py``), in
    #: ``DECLARATIONS`` order; defaults when built without ``from_env``. Its repr shows no secret.
    exchanges: tuple[ExchangeSettings, ...] = field(default_factory=lambda: read_exchanges(None, {}))

    @property
    def events_url(self) -> str:
        """The event data Redis URL: ``EVENTS_REDIS_URL``, or ``REDIS_URL`` when that is blank."""
        return self.events_redis_url or self.redis_url

    @property
    def events_split(self) -> bool:
        """True when the event data lives on another Redis than the control state (``EVENTS_REDIS_URL`` set and
        different from ``REDIS_URL``)."""
        return self.events_url != self.redis_url

    @property
    def ctrl_addr(self) -> str:
        """``host:port`` the control server binds."""
        host = f"[{self.ctrl_host}]" if ":" in self.ctrl_host else self.ctrl_host
        return f"{host}:{self.ctrl_port}"

    def order_guard(self, exchange: str, account: str) -> Guard:
        """The guard of ``exchange:account``'s new orders (``control.orders.guard_for``)."""
        defaults = Guard(self.orders_max_notional, self.orders_max_leverage or None, self.orders_symbols)
        return guard_for(defaults, self.orders_guards or {}, exchange, account)

    def exchange(self, exchange: str) -> ExchangeSettings:
        """The values of ``exchange``'s declared variables; raises KeyError for an exchange not declared."""
        for item in self.exchanges:
            if item.id == exchange:
                return item
        raise KeyError(exchange)

    def value(self, spec: Setting[T]) -> T:
        """The value of the exchange variable ``spec`` (e.g. ``control.exchanges.binanceusdm.TRADE_STREAM``), typed
        as declared; raises KeyError when no exchange declares it."""
        for item in self.exchanges:
            if spec.env in item.values:
                return item.get(spec)
        raise KeyError(spec.env)

    def exchange_ws_uri(self, exchange: str, private: bool = False) -> str:
        """Configured base WebSocket URL for ``exchange`` (adapters add routes); ``private``: for an account's
        private socket (BitMart's ``/user`` URL; Binance and Gate.io use the same base as public data).
        Raises KeyError for an exchange without one."""
        values = self.exchange(exchange)
        return values.private_ws_uri if private else values.ws_uri

    def exchange_rest_uri(self, exchange: str) -> str:
        """Configured REST base URL for ``exchange`` (order-book and private snapshots, listenKeys); "" if unknown."""
        try:
            return self.exchange(exchange).rest_uri
        except KeyError:
            return ""

    def env_credentials(self, exchange: str) -> dict[str, str]:
        """The environment's default account of ``exchange``: ``{"api_key", "api_secret", "memo"?, "uid"?}`` as
        configured ("" when unset); ``{}`` for an exchange not declared."""
        try:
            return self.exchange(exchange).credentials
        except KeyError:
            return {}

    @classmethod
    def specs(cls, declarations: Iterable[ExchangeDeclaration] | None = None) -> list[Setting[Any]]:
        """Every declared variable, README's order: each exchange's (``declarations``, default the registry), then
        the fields of ``Settings``."""
        exchange_specs = [spec for d in declarations_or_registry(declarations) for spec in d.settings]
        return [*exchange_specs, *(spec for _, spec in declared(cls))]

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, declarations: Iterable[ExchangeDeclaration] | None = None
    ) -> Settings:
        """Build settings from ``environ`` (default ``os.environ``); raises SettingsError naming the variable.

        ``declarations``: the exchanges whose variables are read (default ``control.exchanges.DECLARATIONS``)."""
        env = os.environ if environ is None else environ
        exchanges = read_exchanges(declarations, env)  # first: README lists the exchanges' variables first
        values: dict[str, Any] = read_settings(cls, env)
        values["exchanges"] = exchanges
        if values["accounts_file"]:
            values["secrets_file"] = load_secrets_file(values["accounts_file"])
        settings = cls(**values)
        settings._check_credentials()
        if settings.reconnect_max_delay_s < settings.reconnect_delay_s:
            raise SettingsError("RECONNECT_MAX_DELAY_S", "must be >= RECONNECT_DELAY_S")
        if settings.heartbeat_interval_s * 2 > settings.lease_ttl_s:
            raise SettingsError("LEASE_TTL_S", "must be at least twice HEARTBEAT_INTERVAL_S")
        return settings

    def _check_credentials(self) -> None:
        """An environment account needs both halves, and ACCOUNTS_FILE may not define it again."""
        env_refs: dict[str, str] = {}
        for values in self.exchanges:
            creds, names = values.credentials, values.declaration.credentials
            key, secret = creds.get(API_KEY, ""), creds.get(API_SECRET, "")
            if bool(key) != bool(secret):
                missing, present = (API_SECRET, API_KEY) if key else (API_KEY, API_SECRET)
                raise SettingsError(names[missing], f"required when {names[present]} is set")
            if key:
                env_refs[f"{values.id}:default"] = names[API_KEY]
        if self.secrets_file is not None:
            check_env_overlap(self.secrets_file, env_refs)


def settings_table(declarations: Iterable[ExchangeDeclaration] | None = None) -> str:
    """README's "Settings" table: every exchange's variables (``declarations``, default the registry), then the
    process-wide ones."""
    return markdown_table(Settings.specs(declarations))


if __name__ == "__main__":  # README's table: python -m control.settings
    print(settings_table(), end="")
