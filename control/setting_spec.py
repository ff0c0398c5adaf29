"""The declaration of one environment variable (``Setting``) and the parsers that need nothing of Feedplane.

A leaf module (imports only ``control.errors``) so that both ``control.settings`` (process-wide variables) and
``control.exchanges.<id>`` (each exchange's own variables) declare settings with the same type without an import
cycle (``control.settings_table`` needs ``control.credentials``, which needs ``control.topics`` and so the
exchange declarations). ``control.settings_table`` re-exports every name here.

``read_value(spec, env)`` is the one reader: an unset or blank variable means the default, surrounding whitespace
is stripped, and a bad value raises ``SettingsError("NAME", "<reason> (got '<value>')")``; a secret's message
never shows its value.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit

from control.errors import SettingsError

T = TypeVar("T")

#: Role of a per-exchange setting (``Setting.role``): ``Settings.exchange_ws_uri``/``exchange_rest_uri`` and the
#: environment's default account read their exchange's values by role, so a new exchange only declares its list.
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
class Setting(Generic[T]):
    """One environment variable, declared once: ``env`` name, ``default`` (the value when unset), ``parser``
    (type and accepted values), ``doc`` (README's "meaning" column), ``secret`` (kept out of reprs and error
    messages), ``role`` (per-exchange variables: ``WS``, ``PRIVATE_WS``, ``REST``, ``API_KEY``, ``API_SECRET``,
    ``MEMO``, ``UID``; "" for none). ``attrs``: the ``Settings`` fields a tuple value is spread over (CTRL_ADDR ->
    ctrl_host, ctrl_port). ``env_default`` computes the default at read time instead (WORKER_ID), then README
    shows ``shown_default``. ``show`` renders a bad value in an error message (REDIS_URL hides its password)."""

    env: str
    default: T
    parser: Parser[T]
    doc: str
    secret: bool = False
    role: str = ""
    attrs: tuple[str, ...] = ()
    env_default: Callable[[], T] | None = None
    shown_default: str | None = None
    show: Callable[[str], str] = str


def read_value(spec: Setting[T], env: Mapping[str, str]) -> T:
    """The value of ``spec`` in ``env`` (its default when unset or blank); raises SettingsError naming it."""
    raw = env.get(spec.env, "").strip()
    if not raw:
        return spec.env_default() if spec.env_default is not None else spec.default
    try:
        return spec.parser(raw)
    except (ValueError, TypeError) as exc:
        reason = str(exc) if spec.secret else f"{exc} (got {spec.show(env[spec.env])!r})"
        raise SettingsError(spec.env, reason) from None


def shown_default(spec: Setting[Any]) -> str:
    """The default as README's table shows it: ``empty``, or the value in backticks (floats without ``.0``)."""
    if spec.shown_default is not None:
        return f"`{spec.shown_default}`"
    value = spec.default
    if value is None or value in ("", ()):
        return "empty"
    if isinstance(value, float):
        return f"`{value:g}`"
    if isinstance(value, tuple):
        return f"`{':'.join(map(str, value))}`"
    return f"`{value}`"


# -- parsers -----------------------------------------------------------------------------------------------

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


WS_URL: Parser[str] = Parser(_ws_url, "ws:// or wss:// URL")
HTTP_URL: Parser[str] = Parser(_http_url, "http:// or https:// URL")
