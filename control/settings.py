"""Settings read once from the environment (or any mapping), frozen, validated at start.

Names and defaults of the BitMart worker are kept so its configuration works unchanged.
Invalid values raise ``SettingsError`` whose message starts with the variable's name.
Secrets (``BITMART_API_SECRET``, ``CONTROL_TOKEN``, ``FEEDPLANE_SECRET_KEY`` ...) are never shown in reprs or
error messages. ``ACCOUNTS_FILE`` is read and validated here, once (``control.secrets_file.load_secrets_file``).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import math
import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

from control.credentials import TOKEN_MIN_CHARS, TOKEN_RE
from control.errors import SettingsError
from control.redis_client import SENTINEL_SCHEME, display_url, parse_sentinel_url
from control.secrets_file import SecretsFile, check_env_overlap, load_secrets_file
from control.topics import EXCHANGES

T = TypeVar("T")

_BITMART_PUBLIC = "wss://openapi-ws-v2.bitmart.com/api?protocol=1.1"
_BITMART_PRIVATE = "wss://openapi-ws-v2.bitmart.com/user?protocol=1.1"
_REDIS_URL = "redis://127.0.0.1:6379/0"
_BINANCE_USDM = "wss://fstream.binance.com"
_BINANCE_USDM_REST = "https://fapi.binance.com"
_BITMART_REST = "https://api-cloud-v2.bitmart.com"
_GATEIO_WS = "wss://fx-ws.gateio.ws/v4/ws/usdt"
_GATEIO_REST = "https://api.gateio.ws"
_FERNET_KEY_RE = re.compile(r"[A-Za-z0-9_-]{43}=")


@dataclass(frozen=True, slots=True)
class Settings:
    """All runtime settings. Units are in the names (``_s`` seconds, ``_ms`` milliseconds)."""

    bitmart_public_ws_uri: str = _BITMART_PUBLIC
    bitmart_private_ws_uri: str = _BITMART_PRIVATE
    bitmart_api_key: str = field(default="", repr=False)
    bitmart_api_secret: str = field(default="", repr=False)
    bitmart_api_memo: str = field(default="", repr=False)
    ctrl_host: str = "127.0.0.1"
    ctrl_port: int = 8089
    subscribe_batch: int = 20
    subscribe_delay_ms: int = 200
    ping_interval_s: float = 15.0
    pong_timeout_s: float = 10.0
    reconnect_delay_s: float = 5.0
    reconnect_max_delay_s: float = 60.0
    stall_timeout_s: float = 90.0
    #: BitMart futures REST (private snapshots: open orders, positions; exchanges.md §1.1).
    bitmart_rest_uri: str = _BITMART_REST
    #: Binance USD-M listenKey keepalive (PUT) period; a key lives 60 min, keep it <= 30 min (binance_usdm.md §7).
    listen_key_keepalive_s: float = 1800.0
    redis_url: str = _REDIS_URL
    binance_usdm_ws_uri: str = _BINANCE_USDM
    binance_usdm_rest_uri: str = _BINANCE_USDM_REST
    #: Native stream of Binance USD-M ``trade`` topics: ``aggTrade`` (documented, on /market; trade_id = aggregate id)
    #: or ``trade`` (raw trades; not in the official stream list, on /public). binance_usdm.md §2, §5.
    binance_usdm_trade_stream: str = "aggTrade"
    gateio_ws_uri: str = _GATEIO_WS
    gateio_rest_uri: str = _GATEIO_REST
    depth_interval_ms: int = 100
    #: Klines of exchanges without a closed flag (BitMart, Gate) are closed by close_time + this (workers.kline_close).
    kline_close_grace_ms: int = 1500
    default_exchange: str = "bitmart"
    workers: int = 2
    stream_maxlen: int = 100_000
    #: A dead worker's connections are served again by another within about LEASE_TTL_S (+ one connect).
    lease_ttl_s: float = 4.0
    heartbeat_interval_s: float = 1.0
    drain_timeout_s: float = 5.0
    #: Age at which a public socket is rolled (make-before-break) ahead of the exchanges' 24 h limit.
    connection_max_age_s: float = 84_600.0
    #: Bound on one make-before-break (rebalancing handover or lifetime roll): offer lifetime, standby readiness.
    handover_timeout_s: float = 30.0
    max_body_bytes: int = 65_536
    sse_ping_s: float = 15.0
    worker_id: str = ""
    log_level: str = "INFO"
    binance_api_key: str = field(default="", repr=False)
    binance_api_secret: str = field(default="", repr=False)
    gateio_api_key: str = field(default="", repr=False)
    gateio_api_secret: str = field(default="", repr=False)
    gateio_uid: str = field(default="", repr=False)
    #: API tokens (scopes control+read, and read); kept for the redaction filter, verified by sha256 digest only.
    control_token: str = field(default="", repr=False)
    read_token: str = field(default="", repr=False)
    #: Path of the owner-only JSON secrets file (accounts and tokens); "" when none. Parsed into ``secrets_file``.
    accounts_file: str = ""
    secrets_file: SecretsFile | None = field(default=None, repr=False, compare=False)
    #: Fernet key (urlsafe base64 of 32 bytes) sealing accounts added with POST /accounts; "" disables that.
    secret_key: str = field(default="", repr=False)
    #: Requests per minute per token (0 = unlimited); auth failures per minute per client address.
    rate_limit_control_per_min: int = 100
    rate_limit_read_per_min: int = 1000
    rate_limit_sse_per_min: int = 5
    rate_limit_auth_fail_per_min: int = 30
    #: Origins allowed by CORS (browser SSE clients); empty = no CORS headers at all.
    cors_origins: tuple[str, ...] = ()

    @property
    def ctrl_addr(self) -> str:
        """``host:port`` the control server binds."""
        host = f"[{self.ctrl_host}]" if ":" in self.ctrl_host else self.ctrl_host
        return f"{host}:{self.ctrl_port}"

    def exchange_ws_uri(self, exchange: str, private: bool = False) -> str:
        """Configured base WebSocket URL for ``exchange`` (adapters add routes); ``private``: for an account's
        private socket (BitMart's ``/user`` URL; Binance and Gate.io use the same base as public data)."""
        if private and exchange == "bitmart":
            return self.bitmart_private_ws_uri
        return {
            "bitmart": self.bitmart_public_ws_uri,
            "binanceusdm": self.binance_usdm_ws_uri,
            "gateio": self.gateio_ws_uri,
        }[exchange]

    def exchange_rest_uri(self, exchange: str) -> str:
        """Configured REST base URL for ``exchange`` (order-book and private snapshots, listenKeys); "" if unknown."""
        return {
            "bitmart": self.bitmart_rest_uri,
            "binanceusdm": self.binance_usdm_rest_uri,
            "gateio": self.gateio_rest_uri,
        }.get(exchange, "")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``environ`` (default ``os.environ``); raises SettingsError naming the variable."""
        env = os.environ if environ is None else environ
        r = _Reader(env)
        host, port = r.get("CTRL_ADDR", ("127.0.0.1", 8089), _parse_addr)
        accounts_file = r.get("ACCOUNTS_FILE", "", str)
        settings = cls(
            bitmart_public_ws_uri=r.get("BITMART_PUBLIC_WS_URI", _BITMART_PUBLIC, _ws_url),
            bitmart_private_ws_uri=r.get("BITMART_PRIVATE_WS_URI", _BITMART_PRIVATE, _ws_url),
            bitmart_api_key=r.secret("BITMART_API_KEY"),
            bitmart_api_secret=r.secret("BITMART_API_SECRET"),
            bitmart_api_memo=r.secret("BITMART_API_MEMO"),
            ctrl_host=host,
            ctrl_port=port,
            subscribe_batch=r.get("SUBSCRIBE_BATCH", 20, _int_range(1, 1000)),
            subscribe_delay_ms=r.get("SUBSCRIBE_DELAY_MS", 200, _int_range(0, 60_000)),
            ping_interval_s=r.get("PING_INTERVAL_S", 15.0, _positive_float),
            pong_timeout_s=r.get("PONG_TIMEOUT_S", 10.0, _positive_float),
            reconnect_delay_s=r.get("RECONNECT_DELAY_S", 5.0, _positive_float),
            reconnect_max_delay_s=r.get("RECONNECT_MAX_DELAY_S", 60.0, _positive_float),
            stall_timeout_s=r.get("STALL_TIMEOUT_S", 90.0, _positive_float),
            bitmart_rest_uri=r.get("BITMART_REST_URI", _BITMART_REST, _http_url),
            listen_key_keepalive_s=r.get("LISTEN_KEY_KEEPALIVE_S", 1800.0, _keepalive_s),
            redis_url=r.get("REDIS_URL", _REDIS_URL, _redis_url, show=display_url),  # no password in errors
            binance_usdm_ws_uri=r.get("BINANCE_USDM_WS_URI", _BINANCE_USDM, _ws_url),
            binance_usdm_rest_uri=r.get("BINANCE_USDM_REST_URI", _BINANCE_USDM_REST, _http_url),
            binance_usdm_trade_stream=r.get("BINANCE_USDM_TRADE_STREAM", "aggTrade", _one_of(("aggTrade", "trade"))),
            gateio_ws_uri=r.get("GATEIO_WS_URI", _GATEIO_WS, _ws_url),
            gateio_rest_uri=r.get("GATEIO_REST_URI", _GATEIO_REST, _http_url),
            depth_interval_ms=r.get("DEPTH_INTERVAL_MS", 100, _int_range(10, 60_000)),
            kline_close_grace_ms=r.get("KLINE_CLOSE_GRACE_MS", 1500, _int_range(0, 600_000)),
            default_exchange=r.get("DEFAULT_EXCHANGE", "bitmart", _one_of(EXCHANGES)),
            workers=r.get("WORKERS", 2, _int_range(1, 256)),
            stream_maxlen=r.get("STREAM_MAXLEN", 100_000, _int_range(100, 100_000_000)),
            lease_ttl_s=r.get("LEASE_TTL_S", 4.0, _positive_float),
            heartbeat_interval_s=r.get("HEARTBEAT_INTERVAL_S", 1.0, _positive_float),
            drain_timeout_s=r.get("DRAIN_TIMEOUT_S", 5.0, _positive_float),
            connection_max_age_s=r.get("CONNECTION_MAX_AGE_S", 84_600.0, _positive_float),
            handover_timeout_s=r.get("HANDOVER_TIMEOUT_S", 30.0, _positive_float),
            max_body_bytes=r.get("MAX_BODY_BYTES", 65_536, _int_range(256, 16 * 1024 * 1024)),
            sse_ping_s=r.get("SSE_PING_S", 15.0, _positive_float),
            worker_id=r.get("WORKER_ID", f"{socket.gethostname()}-{os.getpid()}", _worker_id),
            log_level=r.get("LOG_LEVEL", "INFO", _one_of(("DEBUG", "INFO", "WARNING", "ERROR"))),
            binance_api_key=r.secret("BINANCE_API_KEY"),
            binance_api_secret=r.secret("BINANCE_API_SECRET"),
            gateio_api_key=r.secret("GATEIO_API_KEY"),
            gateio_api_secret=r.secret("GATEIO_API_SECRET"),
            gateio_uid=r.secret("GATEIO_UID"),
            control_token=r.secret("CONTROL_TOKEN", _token),
            read_token=r.secret("READ_TOKEN", _token),
            accounts_file=accounts_file,
            secrets_file=_secrets_file(accounts_file),
            secret_key=r.secret("FEEDPLANE_SECRET_KEY", _fernet_key),
            rate_limit_control_per_min=r.get("RATE_LIMIT_CONTROL_PER_MIN", 100, _int_range(0, 1_000_000)),
            rate_limit_read_per_min=r.get("RATE_LIMIT_READ_PER_MIN", 1000, _int_range(0, 1_000_000)),
            rate_limit_sse_per_min=r.get("RATE_LIMIT_SSE_PER_MIN", 5, _int_range(0, 1_000_000)),
            rate_limit_auth_fail_per_min=r.get("RATE_LIMIT_AUTH_FAIL_PER_MIN", 30, _int_range(0, 1_000_000)),
            cors_origins=r.get("CORS_ORIGINS", (), _origins),
        )
        env_refs = {}
        for prefix, exchange in (("BITMART", "bitmart"), ("BINANCE", "binanceusdm"), ("GATEIO", "gateio")):
            key, secret = r.secret(f"{prefix}_API_KEY"), r.secret(f"{prefix}_API_SECRET")
            if bool(key) != bool(secret):  # an account needs both halves
                missing = f"{prefix}_API_SECRET" if key else f"{prefix}_API_KEY"
                raise SettingsError(missing, f"required when {prefix}_API_{'KEY' if key else 'SECRET'} is set")
            if key:
                env_refs[f"{exchange}:default"] = f"{prefix}_API_KEY"
        if settings.secrets_file is not None:
            check_env_overlap(settings.secrets_file, env_refs)
        if settings.reconnect_max_delay_s < settings.reconnect_delay_s:
            raise SettingsError("RECONNECT_MAX_DELAY_S", "must be >= RECONNECT_DELAY_S")
        if settings.heartbeat_interval_s * 2 > settings.lease_ttl_s:
            raise SettingsError("LEASE_TTL_S", "must be at least twice HEARTBEAT_INTERVAL_S")
        return settings


class _Reader:
    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def get(self, name: str, default: Any, parse: Callable[[str], T], show: Callable[[str], str] = str) -> T:
        """``parse(value)``, or ``default`` when unset; an error quotes the value as ``show`` renders it."""
        raw = self.env.get(name)
        if raw is None or raw.strip() == "":
            return default  # type: ignore[no-any-return]
        try:
            return parse(raw.strip())
        except (ValueError, TypeError) as exc:
            raise SettingsError(name, f"{exc} (got {show(raw)!r})") from None

    def secret(self, name: str, parse: Callable[[str], str] | None = None) -> str:
        """Like ``get`` with default "", but an error never shows the value."""
        raw = self.env.get(name, "").strip()
        if not raw or parse is None:
            return raw
        try:
            return parse(raw)
        except (ValueError, TypeError) as exc:
            raise SettingsError(name, str(exc)) from None


def _int_range(lo: int, hi: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        value = int(raw)
        if not lo <= value <= hi:
            raise ValueError(f"must be an integer from {lo} to {hi}")
        return value

    return parse


def _positive_float(raw: str) -> float:
    value = float(raw)
    if not (math.isfinite(value) and value > 0):  # also refuses nan and inf
        raise ValueError("must be a positive number")
    return value


def _keepalive_s(raw: str) -> float:
    value = _positive_float(raw)
    if value > 3000:  # a listenKey expires 60 min after its last keepalive (binance_usdm.md §7)
        raise ValueError("must be at most 3000 seconds (a listenKey lives 60 minutes)")
    return value


def _one_of(choices: tuple[str, ...]) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return raw

    return parse


def _ws_url(raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError("must be a ws:// or wss:// URL")
    return raw


def _http_url(raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL")
    return raw.rstrip("/")


def _redis_url(raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme == SENTINEL_SCHEME:
        parse_sentinel_url(raw)  # ValueError names what is wrong
    elif parts.scheme not in ("redis", "rediss", "unix"):
        raise ValueError("must be a redis://, rediss://, unix:// or redis+sentinel:// URL")
    return raw


def _token(raw: str) -> str:
    if len(raw) < TOKEN_MIN_CHARS or not TOKEN_RE.fullmatch(raw):
        raise ValueError(
            f"must be at least {TOKEN_MIN_CHARS} characters of A-Z a-z 0-9 . _ ~ + / - (e.g. secrets.token_urlsafe(32))"
        )
    return raw


def _fernet_key(raw: str) -> str:
    hint = "must be a urlsafe base64 32-byte key (cryptography.fernet.Fernet.generate_key())"
    if not _FERNET_KEY_RE.fullmatch(raw):
        raise ValueError(hint)
    try:
        if len(base64.urlsafe_b64decode(raw)) != 32:
            raise ValueError(hint)
    except binascii.Error:
        raise ValueError(hint) from None
    return raw


def _origins(raw: str) -> tuple[str, ...]:
    out = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        parts = urlsplit(item)
        if item != "*" and (parts.scheme not in ("http", "https") or not parts.hostname or parts.path or parts.query):
            raise ValueError(f"{item!r} is not an origin (scheme://host[:port], or *)")
        out.append(item)
    return tuple(out)


def _secrets_file(path: str) -> SecretsFile | None:
    return load_secrets_file(path) if path else None


def _worker_id(raw: str) -> str:
    if not all(c.isalnum() or c in "-_." for c in raw) or len(raw) > 64:
        raise ValueError("may hold only letters, digits, '-', '_' and '.' (at most 64)")
    return raw


def _parse_addr(raw: str) -> tuple[str, int]:
    host, sep, port_text = raw.rpartition(":")
    if not sep or not host:
        raise ValueError("must be host:port")
    host = host.strip("[]")
    port = int(port_text)
    if not 0 < port < 65536:
        raise ValueError("port must be 1-65535")
    if host != "localhost":
        ipaddress.ip_address(host)  # ValueError for anything but an IP literal
    return host, port
