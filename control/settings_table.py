"""How a setting is declared once: ``setting()`` on a dataclass field, the parsers, the reader, README's table.

A field of ``control.settings.Settings`` declared with ``setting(ENV_NAME, default, parser, doc, ...)`` carries
everything about that variable in one place: its environment name, default, type (the annotation) and accepted
values (the parser and its ``hint``), the doc line of README's table and whether it is a secret (then it is
kept out of ``repr`` and out of error messages). ``read_settings`` reads every declared field from a mapping;
``markdown_table`` renders README's "Settings" table (a test checks README against it). The ``Setting`` type,
the reader of one value and the parsers an exchange declaration needs live in the leaf ``control.setting_spec``
(re-exported here), so each exchange declares its own variables with them (``control/exchanges/<id>.py``)::

    ping_interval_s: float = setting("PING_INTERVAL_S", 15.0, POSITIVE, "BitMart ping interval")

The reader treats an unset or blank variable as "use the default", strips surrounding whitespace, and raises
``SettingsError("NAME", "<reason> (got '<value>')")``; a secret's message never shows its value.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import Field, field, fields
from typing import Any
from urllib.parse import urlsplit

from control.credentials import TOKEN_MIN_CHARS, TOKEN_RE
from control.events_redis import parse_cluster_url
from control.redis_client import SENTINEL_SCHEME, parse_sentinel_url
from control.setting_spec import (
    API_KEY,
    API_SECRET,
    CREDENTIAL_ROLES,
    HTTP_URL,
    KEEPALIVE_S,
    MEMO,
    PATH,
    POSITIVE,
    PRIVATE_WS,
    REST,
    TEXT,
    UID,
    WS,
    WS_URL,
    Parser,
    Setting,
    int_range,
    one_of,
    read_value,
    shown_default,
)

__all__ = [
    "ADDR", "API_KEY", "API_SECRET", "CREDENTIAL_ROLES", "EVENTS_REDIS_URL", "FERNET_KEY", "HTTP_URL", "KEEPALIVE_S", "MEMO", "ORIGINS",
    "PATH", "POSITIVE", "PRIVATE_WS", "REDIS_URL", "REST", "TEXT", "TOKEN", "UID", "WORKER_ID", "WS", "WS_URL",
    "Parser", "Setting", "declared", "int_range", "markdown_table", "one_of", "read_settings", "setting",
    "shown_default",
]  # fmt: skip


def setting(
    env: str,
    default: Any,
    parser: Parser[Any],
    doc: str,
    *,
    secret: bool = False,
    attrs: tuple[str, ...] = (),
    env_default: Callable[[], Any] | None = None,
    shown_default: str | None = None,
    show: Callable[[str], str] = str,
) -> Any:
    """A dataclass field declaring the environment variable ``env`` (see ``Setting`` and the module docstring).

    ``default`` is the value when the variable is unset (for ``attrs``, a tuple spread like a parsed value);
    ``env_default`` computes it at read time instead (WORKER_ID), ``shown_default`` is what README shows then.
    ``show`` renders a bad value in an error message (REDIS_URL hides its password). Per-exchange variables are
    not declared here but in their exchange's declaration (``control/exchanges/<id>.py``).
    """
    spec = Setting(env, default, parser, doc, secret=secret, attrs=attrs, env_default=env_default,
                   shown_default=shown_default, show=show)  # fmt: skip
    field_default = default[0] if attrs else default
    return field(default=field_default, repr=not secret, metadata={"setting": spec})


def declared(cls: type) -> Iterator[tuple[Field[Any], Setting[Any]]]:
    """``(field, Setting)`` for every field of the dataclass ``cls`` declared with ``setting()``, in order."""
    for f in fields(cls):
        spec = f.metadata.get("setting")
        if isinstance(spec, Setting):
            yield f, spec


def read_settings(cls: type, env: Mapping[str, str]) -> dict[str, Any]:
    """``{attribute: value}`` for every declared field of ``cls``, read from ``env``; raises SettingsError."""
    values: dict[str, Any] = {}
    for f, spec in declared(cls):
        value = read_value(spec, env)
        if spec.attrs:
            values.update(zip(spec.attrs, value, strict=True))
        else:
            values[f.name] = value
    return values


# -- README ------------------------------------------------------------------------------------------------


def markdown_table(specs: Iterable[Setting[Any]]) -> str:
    """README's settings table: one row per variable of ``specs`` (variable, default, accepts, meaning)."""
    rows = ["| variable | default | accepts | meaning |", "| --- | --- | --- | --- |"]
    for spec in specs:
        accepts = f"secret; {spec.parser.hint}" if spec.secret else spec.parser.hint
        rows.append(f"| `{spec.env}` | {shown_default(spec)} | {accepts} | {spec.doc} |")
    return "\n".join(rows) + "\n"


# -- parsers -----------------------------------------------------------------------------------------------

_FERNET_KEY_RE = re.compile(r"[A-Za-z0-9_-]{43}=")


def _redis_url(raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme == SENTINEL_SCHEME:
        parse_sentinel_url(raw)  # ValueError names what is wrong
    elif parts.scheme not in ("redis", "rediss", "unix"):
        raise ValueError("must be a redis://, rediss://, unix:// or redis+sentinel:// URL")
    return raw


REDIS_URL: Parser[str] = Parser(_redis_url, "redis://, rediss://, unix:// or redis+sentinel:// URL")


def _events_redis_url(raw: str) -> str:
    if parse_cluster_url(raw) is None:  # ValueError names what is wrong in a cluster URL
        _redis_url(raw)
    return raw


EVENTS_REDIS_URL: Parser[str] = Parser(
    _events_redis_url, "redis://, rediss://, unix://, redis+sentinel:// or redis+cluster:// URL")


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


def _networks(raw: str) -> tuple[str, ...]:
    out = []
    for item in (part.strip() for part in raw.split(",")):
        if item:
            try:
                out.append(str(ipaddress.ip_network(item, strict=False)))
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or network (CIDR)") from None
    return tuple(out)


NETWORKS: Parser[tuple[str, ...]] = Parser(_networks, "comma list of IP addresses or CIDR networks")


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
