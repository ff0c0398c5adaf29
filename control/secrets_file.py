"""``ACCOUNTS_FILE``: the owner-only JSON secrets file, read and validated once at start.

Shape (accounts follow ``control.credentials.ACCOUNT_SCHEMA``, the same as ``POST /accounts`` bodies)::

    {"accounts": [{"exchange", "account", "api_key", "api_secret", "memo"?, "uid"?}],
     "tokens":   [{"token", "scopes": ["read" | "control"], "accounts": ["<exchange>:<account>", ...]}]}

String values are trimmed before they are checked (a file is edited by hand). Every problem raises
``SettingsError`` naming ``ACCOUNTS_FILE``, the entry and the field, never a value. Imported by
``control.settings`` (which calls ``load_secrets_file``) and imports nothing of it, so there is no import cycle.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from control.credentials import (
    FILE,
    SCOPES,
    TOKEN_MIN_CHARS,
    TOKEN_RE,
    Account,
    AccountError,
    TokenGrant,
    canonical_exchange,
    make_grant,
    parse_account,
)
from control.errors import SettingsError
from control.topics import TopicError, validate_account

_MAX_FILE_BYTES = 1 << 20
_TOKEN_FIELDS = {"token", "scopes", "accounts"}


@dataclass(frozen=True, slots=True)
class SecretsFile:
    """Parsed ``ACCOUNTS_FILE``. ``redact`` holds the raw token strings, for the log redaction filter only."""

    path: str
    accounts: tuple[Account, ...] = field(default=(), repr=False)
    tokens: tuple[TokenGrant, ...] = field(default=(), repr=False)
    redact: tuple[str, ...] = field(default=(), repr=False)


_Fail = Callable[[str], SettingsError]


def load_secrets_file(path: str) -> SecretsFile:
    """Read and validate ``ACCOUNTS_FILE`` (see module docstring).

    Raises SettingsError naming ``ACCOUNTS_FILE`` when the file is missing, unreadable, readable or writable by
    group/others, too large, not JSON, or has an invalid entry (the message names the entry and field, never
    the value).
    """

    def fail(reason: str) -> SettingsError:
        return SettingsError("ACCOUNTS_FILE", f"{path}: {reason}")

    doc = _read_json(path, fail)
    if not isinstance(doc, dict) or set(doc) - {"accounts", "tokens"}:
        raise fail('must hold a JSON object with "accounts" and/or "tokens" lists only')
    accounts: list[Account] = []
    for i, item in enumerate(_list(fail, doc, "accounts")):
        try:
            account = parse_account(_trimmed(item), source=FILE)
        except AccountError as exc:
            raise fail(exc.describe(f"accounts[{i}]")) from None
        if any(a.ref == account.ref for a in accounts):
            raise fail(f"accounts[{i}]: {account.ref} is listed twice")
        accounts.append(account)
    tokens: list[TokenGrant] = []
    raw_tokens: list[str] = []
    for i, item in enumerate(_list(fail, doc, "tokens")):
        token, grant = _file_token(fail, i, item)
        if token in raw_tokens:
            raise fail(f"tokens[{i}]: the same token is listed twice")
        raw_tokens.append(token)
        tokens.append(grant)
    return SecretsFile(path, tuple(accounts), tuple(tokens), tuple(raw_tokens))


def check_env_overlap(secrets: SecretsFile, env_refs: Mapping[str, str]) -> None:
    """Raise SettingsError (ACCOUNTS_FILE) when the file defines an account the environment defines too.

    ``env_refs``: ``"exchange:account"`` -> the variable defining it (``BINANCE_API_KEY``).
    """
    for i, account in enumerate(secrets.accounts):
        if (variable := env_refs.get(account.ref)) is not None:
            raise SettingsError(
                "ACCOUNTS_FILE", f"accounts[{i}]: {account.ref} is already configured by {variable}; keep one"
            )


def _read_json(path: str, fail: _Fail) -> Any:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise fail("no such file") from None
    except OSError as exc:
        raise fail(f"cannot open it ({exc.strerror})") from None
    try:
        info = os.fstat(fd)  # the opened file itself: no race with a chmod/replace after a stat(path)
        if not stat.S_ISREG(info.st_mode):
            raise fail("not a regular file")
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077:
            raise fail(f"refused: mode {mode:04o} lets group/others access it; allow the owner only (chmod 600)")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            raw = fh.read(_MAX_FILE_BYTES + 1)
    finally:
        os.close(fd)
    if len(raw) > _MAX_FILE_BYTES:
        raise fail(f"larger than {_MAX_FILE_BYTES} bytes")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise fail(f"not valid JSON (line {exc.lineno}, column {exc.colno})") from None


def _list(fail: _Fail, doc: Mapping[str, Any], name: str) -> list[Any]:
    value = doc.get(name, [])
    if not isinstance(value, list):
        raise fail(f'"{name}" must be a list')
    return value


def _trimmed(item: Any) -> Any:
    """``item`` with its string values stripped (hand-edited files); anything else unchanged."""
    if not isinstance(item, dict):
        return item
    return {k: v.strip() if isinstance(v, str) else v for k, v in item.items()}


def _file_token(fail: _Fail, index: int, item: Any) -> tuple[str, TokenGrant]:
    where = f"tokens[{index}]"
    if not isinstance(item, dict):
        raise fail(f"{where} must be an object")
    if unknown := set(item) - _TOKEN_FIELDS:
        raise fail(f"{where}: unknown field(s) {', '.join(sorted(map(str, unknown)))}")
    token = item.get("token")
    if not isinstance(token, str) or len(token) < TOKEN_MIN_CHARS or not TOKEN_RE.fullmatch(token):
        raise fail(f"{where}.token must be at least {TOKEN_MIN_CHARS} characters of A-Z a-z 0-9 . _ ~ + / -")
    scopes = item.get("scopes", [])
    if not isinstance(scopes, list) or not all(s in SCOPES for s in scopes):
        raise fail(f'{where}.scopes must be a list of "read" and/or "control"')
    refs = item.get("accounts", [])
    if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs):
        raise fail(f'{where}.accounts must be a list of "exchange:account" strings')
    canonical = []
    for ref in refs:
        exchange, sep, name = ref.partition(":")
        try:
            validate_account(name)
        except TopicError:
            raise fail(f'{where}.accounts: {ref!r} is not "exchange:account"') from None
        if not sep:
            raise fail(f'{where}.accounts: {ref!r} is not "exchange:account"')
        try:
            canonical.append(f"{canonical_exchange(exchange)}:{name}")
        except ValueError as exc:
            raise fail(f"{where}: {exc}") from None
    if not scopes and not canonical:
        raise fail(f"{where} grants nothing: give scopes and/or accounts")
    return token, make_grant(f"file:{index}", token, scopes, canonical)
