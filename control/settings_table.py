"""How a setting is declared once: ``setting()`` on a dataclass field, the parsers, the reader, README's table.

A field of ``control.settings.Settings`` declared with ``setting(ENV_NAME, default, parser, doc, ...)`` carries
everything about that variable in one place: its environment name, default, type (the annotation) and accepted
values (the parser and its ``hint``), the doc line of README's table and whether it is a secret (then it is
kept out of ``repr`` and out of error messages). ``read_settings`` reads every declared field from a mapping;
``markdown_table`` renders README's "Settings" table (a test checks README against it)::

    ping_interval_s: float = setting("PING_INTERVAL_S", 15.0, POSITIVE, "BitMart ping interval")

The reader treats an unset or blank variable as "use the default", strips surrounding whitespace, and raises
``SettingsError("NAME", "<reason> (got '<value>')")``; a secret's message never shows its value.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import Field, dataclass, field, fields
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit

from control.credentials import TOKEN_MIN_CHARS, TOKEN_RE
from control.errors import SettingsError
from control.redis_client import SENTINEL_SCHEME, parse_sentinel_url

T = TypeVar("T")

#: Role of a per-exchange setting (``Setting.role``): ``Settings.exchange_ws_uri``/``exchange_rest_uri`` and the
#: environment's default account read their exchange's values by role, so a new exchange only declares its block.
WS, PRIVATE_WS, REST = "ws", "private_ws", "rest"
API_KEY, API_SECRET, MEMO, UID = "api_key", "api_secret", "memo", "uid"
CREDENTIAL_ROLES = (API_KEY, API_SECRET, MEMO, UID)


@dataclass(frozen=True, slots=True)
class Parser(Generic[T]):
    """Turns the variable's text into its value; raises ValueError (or TypeError) saying what is expected.
    ``hint``: the accepted values in a few words (README's "accepts" column)."""

    parse: Callable[[str], T]
    hint: str

    def __call__(self, raw: str) -> T:
        return self.parse(raw)


@dataclass(frozen=True, slots=True)
class Setting:
    """What ``setting()`` stores in a field's metadata (see the module docstring). ``attrs``: the fields the
    parsed value fills (a tuple value is spread over several, e.g. CTRL_ADDR -> ctrl_host, ctrl_port)."""

    env: str
    default: Any
    parser: Parser[Any]
    doc: str
    secret: bool = False
    attrs: tuple[str, ...] = ()
    exchange: str = ""
    role: str = ""
    env_default: Callable[[], Any] | None = None
    shown_default: str | None = None
    show: Callable[[str], str] = str


def setting(
    env: str,
    default: Any,
    parser: Parser[Any],
    doc: str,
    *,
    secret: bool = False,
    attrs: tuple[str, ...] = (),
    exchange: str = "",
    role: str = "",
    env_default: Callable[[], Any] | None = None,
    shown_default: str | None = None,
    show: Callable[[str], str] = str,
) -> Any:
    """A dataclass field declaring the environment variable ``env`` (see ``Setting`` and the module docstring).

    ``default`` is the value when the variable is unset (for ``attrs``, a tuple spread like a parsed value);
    ``env_default`` computes it at read time instead (WORKER_ID), ``shown_default`` is what README shows then.
    ``show`` renders a bad value in an error message (REDIS_URL hides its password). ``exchange``/``role``
    file a per-exchange setting (roles: WS, PRIVATE_WS, REST, API_KEY, API_SECRET, MEMO, UID).
    """
    spec = Setting(env, default, parser, doc, secret, attrs, exchange, role, env_default, shown_default, show)
    field_default = default[0] if attrs else default
    return field(default=field_default, repr=not secret, metadata={"setting": spec})


def declared(cls: type) -> Iterator[tuple[Field[Any], Setting]]:
    """``(field, Setting)`` for every field of the dataclass ``cls`` declared with ``setting()``, in order."""
    for f in fields(cls):
        spec = f.metadata.get("setting")
        if isinstance(spec, Setting):
            yield f, spec


def read_settings(cls: type, env: Mapping[str, str]) -> dict[str, Any]:
    """``{attribute: value}`` for every declared field of ``cls``, read from ``env``; raises SettingsError."""
    values: dict[str, Any] = {}
    for f, spec in declared(cls):
        raw = env.get(spec.env, "").strip()
        if not raw:
            value = spec.env_default() if spec.env_default is not None else spec.default
        else:
            try:
                value = spec.parser(raw)
            except (ValueError, TypeError) as exc:
                reason = str(exc) if spec.secret else f"{exc} (got {spec.show(env[spec.env])!r})"
                raise SettingsError(spec.env, reason) from None
        if spec.attrs:
            values.update(zip(spec.attrs, value, strict=True))
        else:
            values[f.name] = value
    return values


# -- README ------------------------------------------------------------------------------------------------


def shown_default(spec: Setting) -> str:
    """The default as README's table shows it: ``empty``, or the value in backticks (floats without ``.0``)."""
    if spec.shown_default is not None:
        return f"`{spec.shown_default}`"
    value = spec.default
    if value in ("", ()):
        return "empty"
    if isinstance(value, float):
        return f"`{value:g}`"
    if isinstance(value, tuple):
        return f"`{':'.join(map(str, value))}`"
    return f"`{value}`"


def markdown_table(cls: type) -> str:
    """README's settings table: one row per declared variable of ``cls`` (variable, default, accepts, meaning)."""
    rows = ["| variable | default | accepts | meaning |", "| --- | --- | --- | --- |"]
    for _, spec in declared(cls):
        accepts = f"secret; {spec.parser.hint}" if spec.secret else spec.parser.hint
        rows.append(f"| `{spec.env}` | {shown_default(spec)} | {accepts} | {spec.doc} |")
    return "\n".join(rows) + "\n"


# -- parsers -----------------------------------------------------------------------------------------------

_FERNET_KEY_RE = re.compile(r"[A-Za-z0-9_-]{43}=")

TEXT: Parser[str] = Parser(lambda raw: raw, "text")
PATH: Parser[str] = Parser(lambda raw: raw, "file path")


def int_range(lo: int, hi: int) -> Parser[int]:
    """An integer from ``lo`` to ``hi`` (inclusive)."""

    def parse(raw: str) -> int:
        value = int(raw)
        if not lo <= value <= hi:
            raise ValueError(f"must be an integer from {lo} to {hi}")
        return value

    return Parser(parse, f"integer {lo} to {hi}")


def _positive_float(raw: str) -> float:
    value = float(raw)
    if not (math.isfinite(value) and value > 0):  # also refuses nan and inf
        raise ValueError("must be a positive number")
    return value


POSITIVE: Parser[float] = Parser(_positive_float, "number > 0")


def _keepalive_s(raw: str) -> float:
    value = _positive_float(raw)
    if value > 3000:  # a listenKey expires 60 min after its last keepalive (binance_usdm.md §7)
        raise ValueError("must be at most 3000 seconds (a listenKey lives 60 minutes)")
    return value


KEEPALIVE_S: Parser[float] = Parser(_keepalive_s, "number > 0, at most 3000")


def one_of(choices: tuple[str, ...]) -> Parser[str]:
    """Exactly one of ``choices``."""

    def parse(raw: str) -> str:
        if raw not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return raw

    return Parser(parse, " ".join(f"`{c}`" for c in choices))


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


WS_URL: Parser[str] = Parser(_ws_url, "ws:// or wss:// URL")
HTTP_URL: Parser[str] = Parser(_http_url, "http:// or https:// URL")
REDIS_URL: Parser[str] = Parser(_redis_url, "redis://, rediss://, unix:// or redis+sentinel:// URL")


def _token(raw: str) -> str:
    if len(raw) < TOKEN_MIN_CHARS or not TOKEN_RE.fullmatch(raw):
        raise ValueError(
            f"must be at least {TOKEN_MIN_CHARS} characters of A-Z a-z 0-9 . _ ~ + / - (e.g. secrets.token_urlsafe(32))"
        )
    return raw


TOKEN: Parser[str] = Parser(_token, f"at least {TOKEN_MIN_CHARS} of A-Z a-z 0-9 . _ ~ + / -")


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


FERNET_KEY: Parser[str] = Parser(_fernet_key, "Fernet key (urlsafe base64 of 32 bytes)")


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


ORIGINS: Parser[tuple[str, ...]] = Parser(_origins, "comma list of `scheme://host[:port]`, or `*`")


def _worker_id(raw: str) -> str:
    if not all(c.isalnum() or c in "-_." for c in raw) or len(raw) > 64:
        raise ValueError("may hold only letters, digits, '-', '_' and '.' (at most 64)")
    return raw


WORKER_ID: Parser[str] = Parser(_worker_id, "1 to 64 of letters, digits, `-` `_` `.`")


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


ADDR: Parser[tuple[str, int]] = Parser(_parse_addr, "`host:port`, host an IP literal or `localhost`")
