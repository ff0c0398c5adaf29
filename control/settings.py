"""Settings read once from the environment (or any mapping), frozen, validated at start.

Every variable is declared once, as a field of ``Settings`` (``control.settings_table.setting``): environment
name, default, type, accepted values, README doc line and secrecy. README's "Settings" table is rendered from
these declarations (``python -m control.settings``; ``tests/control/test_settings.py`` checks README against it).
Per-exchange variables sit in one block per exchange, filed by role (``WS``, ``REST``, ``API_KEY`` ...), so a
new exchange adds its block here and nothing else in this module.

Names and defaults of the BitMart worker are kept so its configuration works unchanged. Invalid values raise
``SettingsError`` whose message starts with the variable's name. Secrets (``BITMART_API_SECRET``,
``CONTROL_TOKEN``, ``FEEDPLANE_SECRET_KEY`` ...) are never shown in reprs or error messages. ``ACCOUNTS_FILE`` is
read and validated here, once (``control.secrets_file.load_secrets_file``).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from control.credentials import TOKEN_MIN_CHARS, TOKEN_RE
from control.errors import SettingsError
from control.redis_client import display_url
from control.secrets_file import SecretsFile, check_env_overlap, load_secrets_file
from control.settings_table import (
    ADDR,
    API_KEY,
    API_SECRET,
    CREDENTIAL_ROLES,
    FERNET_KEY,
    HTTP_URL,
    KEEPALIVE_S,
    MEMO,
    ORIGINS,
    PATH,
    POSITIVE,
    PRIVATE_WS,
    REDIS_URL,
    REST,
    TEXT,
    TOKEN,
    UID,
    WORKER_ID,
    WS,
    WS_URL,
    declared,
    int_range,
    markdown_table,
    one_of,
    read_settings,
    setting,
)
from control.topics import EXCHANGES

__all__ = ["TOKEN_MIN_CHARS", "TOKEN_RE", "Settings", "SettingsError"]

_CTRL_ADDR = ("127.0.0.1", 8089)


def _host_pid() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True, slots=True)
class Settings:
    """All runtime settings. Units are in the names (``_s`` seconds, ``_ms`` milliseconds)."""

    # -- BitMart (USDT-M futures) ---------------------------------------------------------------------------
    bitmart_public_ws_uri: str = setting(
        "BITMART_PUBLIC_WS_URI", "wss://openapi-ws-v2.bitmart.com/api?protocol=1.1", WS_URL,
        "BitMart public socket", exchange="bitmart", role=WS)  # fmt: skip
    bitmart_private_ws_uri: str = setting(
        "BITMART_PRIVATE_WS_URI", "wss://openapi-ws-v2.bitmart.com/user?protocol=1.1", WS_URL,
        "BitMart private socket (orders, positions, balances)", exchange="bitmart", role=PRIVATE_WS)  # fmt: skip
    #: BitMart futures REST (private snapshots: open orders, positions; exchanges.md §1.1).
    bitmart_rest_uri: str = setting(
        "BITMART_REST_URI", "https://api-cloud-v2.bitmart.com", HTTP_URL,
        "BitMart REST (open-order and position snapshots)", exchange="bitmart", role=REST)  # fmt: skip
    bitmart_api_key: str = setting(
        "BITMART_API_KEY", "", TEXT, "default BitMart account: API key", secret=True, exchange="bitmart", role=API_KEY)
    bitmart_api_secret: str = setting(
        "BITMART_API_SECRET", "", TEXT, "default BitMart account: API secret (required with the key)", secret=True,
        exchange="bitmart", role=API_SECRET)  # fmt: skip
    bitmart_api_memo: str = setting(
        "BITMART_API_MEMO", "", TEXT, "default BitMart account: API memo", secret=True, exchange="bitmart", role=MEMO)

    # -- Binance USD-M futures ------------------------------------------------------------------------------
    binance_usdm_ws_uri: str = setting(
        "BINANCE_USDM_WS_URI", "wss://fstream.binance.com", WS_URL,
        "base URL; workers add the route: `/market` for klines, tickers and aggTrades, `/public` for raw trades "
        "(per `BINANCE_USDM_TRADE_STREAM`), best bid/ask and books (since 2026-04-23 an unrouted URL acks kline "
        "subscriptions and sends nothing)",
        exchange="binanceusdm", role=WS)  # fmt: skip
    binance_usdm_rest_uri: str = setting(
        "BINANCE_USDM_REST_URI", "https://fapi.binance.com", HTTP_URL, "REST (order-book snapshots, listenKey)",
        exchange="binanceusdm", role=REST)  # fmt: skip
    #: Native stream of Binance USD-M ``trade`` topics: ``aggTrade`` (documented, on /market; trade_id = aggregate id)
    #: or ``trade`` (raw trades; not in the official stream list, on /public). binance_usdm.md §2, §5.
    binance_usdm_trade_stream: str = setting(
        "BINANCE_USDM_TRADE_STREAM", "aggTrade", one_of(("aggTrade", "trade")),
        "native stream of `trade` topics: `aggTrade` (the documented `<s>@aggTrade` on `/market`; one event per "
        "aggregate of fills with one price and taker side, `trade_id` = the aggregate id, `size` = their sum) or "
        "`trade` (raw `<s>@trade` on `/public`, not in Binance's official stream list: if Binance stopped serving "
        "it, the subscription would be acked and stay silent); trade ids change meaning when you switch",
        exchange="binanceusdm")  # fmt: skip
    #: Binance USD-M listenKey keepalive (PUT) period; a key lives 60 min, keep it <= 30 min (binance_usdm.md §7).
    listen_key_keepalive_s: float = setting(
        "LISTEN_KEY_KEEPALIVE_S", 1800.0, KEEPALIVE_S, "Binance USD-M listenKey keepalive period (a key lives 60 min)",
        exchange="binanceusdm")  # fmt: skip
    binance_api_key: str = setting(
        "BINANCE_API_KEY", "", TEXT, "default Binance USD-M account: API key", secret=True,
        exchange="binanceusdm", role=API_KEY)  # fmt: skip
    binance_api_secret: str = setting(
        "BINANCE_API_SECRET", "", TEXT, "default Binance USD-M account: API secret (required with the key)",
        secret=True, exchange="binanceusdm", role=API_SECRET)  # fmt: skip

    # -- Gate.io USDT futures -------------------------------------------------------------------------------
    gateio_ws_uri: str = setting(
        "GATEIO_WS_URI", "wss://fx-ws.gateio.ws/v4/ws/usdt", WS_URL, "Gate.io USDT futures socket",
        exchange="gateio", role=WS)  # fmt: skip
    gateio_rest_uri: str = setting(
        "GATEIO_REST_URI", "https://api.gateio.ws", HTTP_URL, "Gate.io REST (order-book and private snapshots)",
        exchange="gateio", role=REST)  # fmt: skip
    gateio_api_key: str = setting(
        "GATEIO_API_KEY", "", TEXT, "default Gate.io account: API key", secret=True, exchange="gateio", role=API_KEY)
    gateio_api_secret: str = setting(
        "GATEIO_API_SECRET", "", TEXT, "default Gate.io account: API secret (required with the key)", secret=True,
        exchange="gateio", role=API_SECRET)  # fmt: skip
    gateio_uid: str = setting(
        "GATEIO_UID", "", TEXT, "default Gate.io account: user id", secret=True, exchange="gateio", role=UID)

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
    log_level: str = setting("LOG_LEVEL", "INFO", one_of(("DEBUG", "INFO", "WARNING", "ERROR")), "log level")

    # -- control server -------------------------------------------------------------------------------------
    ctrl_host: str = setting(
        "CTRL_ADDR", _CTRL_ADDR, ADDR, "control server address", attrs=("ctrl_host", "ctrl_port"))
    ctrl_port: int = _CTRL_ADDR[1]  # set from CTRL_ADDR with ctrl_host
    max_body_bytes: int = setting(
        "MAX_BODY_BYTES", 65_536, int_range(256, 16 * 1024 * 1024), "request body limit (413 above)")
    sse_ping_s: float = setting("SSE_PING_S", 15.0, POSITIVE, "SSE keep-alive comment interval")
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
        "RATE_LIMIT_SSE_PER_MIN", 5, int_range(0, 1_000_000), "new SSE streams per minute per token; 0 = unlimited")
    rate_limit_auth_fail_per_min: int = setting(
        "RATE_LIMIT_AUTH_FAIL_PER_MIN", 30, int_range(0, 1_000_000),
        "failed authentications per minute per client address; 0 = unlimited")  # fmt: skip
    #: Origins allowed by CORS (browser SSE clients); empty = no CORS headers at all.
    cors_origins: tuple[str, ...] = setting(
        "CORS_ORIGINS", (), ORIGINS, "origins allowed to call the API from a browser; empty: no CORS headers")

    @property
    def ctrl_addr(self) -> str:
        """``host:port`` the control server binds."""
        host = f"[{self.ctrl_host}]" if ":" in self.ctrl_host else self.ctrl_host
        return f"{host}:{self.ctrl_port}"

    def exchange_value(self, exchange: str, role: str) -> str | None:
        """The setting filed under ``exchange`` with ``role`` (see ``settings_table``), or None when none is."""
        for f, spec in declared(type(self)):
            if spec.exchange == exchange and spec.role == role:
                value: str = getattr(self, f.name)
                return value
        return None

    def exchange_ws_uri(self, exchange: str, private: bool = False) -> str:
        """Configured base WebSocket URL for ``exchange`` (adapters add routes); ``private``: for an account's
        private socket (BitMart's ``/user`` URL; Binance and Gate.io use the same base as public data).
        Raises KeyError for an exchange without one."""
        url = self.exchange_value(exchange, PRIVATE_WS) if private else None
        url = url if url is not None else self.exchange_value(exchange, WS)
        if url is None:
            raise KeyError(exchange)
        return url

    def exchange_rest_uri(self, exchange: str) -> str:
        """Configured REST base URL for ``exchange`` (order-book and private snapshots, listenKeys); "" if unknown."""
        return self.exchange_value(exchange, REST) or ""

    def env_credentials(self, exchange: str) -> dict[str, str]:
        """The environment's default account of ``exchange``: ``{"api_key", "api_secret", "memo"?, "uid"?}`` as
        configured ("" when unset); ``{}`` for an exchange that declares no credential variables."""
        found = {role: self.exchange_value(exchange, role) for role in CREDENTIAL_ROLES}
        return {role: value for role, value in found.items() if value is not None}

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``environ`` (default ``os.environ``); raises SettingsError naming the variable."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = read_settings(cls, env)
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
        names = {(spec.exchange, spec.role): spec.env for _, spec in declared(type(self)) if spec.role}
        env_refs: dict[str, str] = {}
        for exchange in EXCHANGES:
            creds = self.env_credentials(exchange)
            key, secret = creds.get(API_KEY, ""), creds.get(API_SECRET, "")
            if bool(key) != bool(secret):
                missing, present = (API_SECRET, API_KEY) if key else (API_KEY, API_SECRET)
                raise SettingsError(names[exchange, missing], f"required when {names[exchange, present]} is set")
            if key:
                env_refs[f"{exchange}:default"] = names[exchange, API_KEY]
        if self.secrets_file is not None:
            check_env_overlap(self.secrets_file, env_refs)


if __name__ == "__main__":  # README's table: python -m control.settings
    print(markdown_table(Settings), end="")
