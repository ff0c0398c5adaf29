"""Exchange accounts (API keys) and API tokens, from the environment, ``ACCOUNTS_FILE`` and Redis.

Sources (an ``(exchange, account)`` pair is defined by exactly one of them)::

    env   BITMART_API_KEY/_SECRET/_MEMO -> ("bitmart", "default"); BINANCE_API_KEY/_SECRET -> ("binanceusdm",
          "default"); GATEIO_API_KEY/_SECRET/GATEIO_UID -> ("gateio", "default")
    file  ACCOUNTS_FILE, owner-only permissions (``mode & 0o077 == 0``), JSON:
          {"accounts": [{"exchange", "account", "api_key", "api_secret", "memo"?, "uid"?}],
           "tokens":   [{"token", "scopes": ["read" | "control"], "accounts": ["<exchange>:<account>", ...]}]}
    api   POST /accounts; Redis (``keys.ACCOUNTS``) holds them only as a Fernet token under FEEDPLANE_SECRET_KEY

Secrets never leave this module in clear except through ``Account`` attributes: reprs and ``str()`` show a
fingerprint (``"abcd…1a2b3c4d"``: 4 characters of the API key and a sha256 prefix), error messages name the
field, never the value, and tokens are kept as sha256 digests (``TokenGrant``). Workers call
``load_accounts(settings, redis)``; ``secret_values(settings)`` feeds ``control.redact.install_redaction``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import orjson
from cryptography.fernet import Fernet, InvalidToken
from redis.asyncio import Redis

from control import keys
from control.errors import FeedplaneError
from control.settings import TOKEN_MIN_CHARS, TOKEN_RE, Settings, SettingsError
from control.topics import EXCHANGE_ALIASES, EXCHANGES, TopicError, validate_account

logger = logging.getLogger(__name__)

ENV, FILE, API = "env", "file", "api"
#: Token scopes. ``control`` implies ``read`` and every account's private streams.
READ, CONTROL = "read", "control"
SCOPES = (READ, CONTROL)
_MAX_FILE_BYTES = 1 << 20
_ACCOUNT_FIELDS = {"exchange", "account", "api_key", "api_secret", "memo", "uid"}
_TOKEN_FIELDS = {"token", "scopes", "accounts"}


class DecryptError(FeedplaneError, ValueError):
    """A sealed secret cannot be opened: wrong FEEDPLANE_SECRET_KEY or corrupted data (no content shown)."""


def fingerprint(api_key: str) -> str:
    """Short, non-secret identification of an API key: its first 4 characters, ``…``, 8 hex of its sha256."""
    return f"{api_key[:4]}…{hashlib.sha256(api_key.encode()).hexdigest()[:8]}"


def token_digest(token: str) -> bytes:
    """sha256 digest of an API token (what is kept and compared instead of the token)."""
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True, slots=True, repr=False)
class Account:
    """One exchange account's credentials. ``repr``/``str`` show ``exchange:account``, the key fingerprint
    and the source (``env``, ``file``, ``api``), never the key, secret, memo or uid."""

    exchange: str
    account: str
    api_key: str
    api_secret: str
    memo: str = ""
    uid: str = ""
    source: str = ENV

    @property
    def ref(self) -> str:
        """``"exchange:account"`` (as listed in a token's ``accounts``)."""
        return f"{self.exchange}:{self.account}"

    @property
    def fingerprint(self) -> str:
        """See ``fingerprint()``."""
        return fingerprint(self.api_key)

    def public(self) -> dict[str, str]:
        """``{"exchange", "account", "source", "key"}``: what GET /accounts shows."""
        return {"exchange": self.exchange, "account": self.account, "source": self.source, "key": self.fingerprint}

    def __repr__(self) -> str:
        return f"Account({self.ref}, key={self.fingerprint}, source={self.source})"

    __str__ = __repr__


@dataclass(frozen=True, slots=True)
class TokenGrant:
    """What one API token may do. ``id`` names it in rate-limit keys and logs (``env:control``, ``file:0``);
    ``digest`` is the token's sha256 (the token itself is not kept)."""

    id: str
    digest: bytes = field(repr=False)
    scopes: frozenset[str] = frozenset()
    accounts: frozenset[str] = frozenset()

    def has(self, scope: str) -> bool:
        """True when the token carries ``scope`` (``control`` implies ``read``)."""
        return scope in self.scopes or (scope == READ and CONTROL in self.scopes)

    def can_read_account(self, exchange: str, account: str) -> bool:
        """True for a control token or a token listing ``exchange:account``."""
        return CONTROL in self.scopes or f"{exchange}:{account}" in self.accounts


def make_grant(grant_id: str, token: str, scopes: Iterable[str], accounts: Iterable[str] = ()) -> TokenGrant:
    """A TokenGrant for ``token`` (only its digest is kept)."""
    return TokenGrant(grant_id, token_digest(token), frozenset(scopes), frozenset(accounts))


@dataclass(frozen=True, slots=True)
class SecretsFile:
    """Parsed ``ACCOUNTS_FILE``. ``redact`` holds the raw token strings, for the log redaction filter only."""

    path: str
    accounts: tuple[Account, ...] = field(default=(), repr=False)
    tokens: tuple[TokenGrant, ...] = field(default=(), repr=False)
    redact: tuple[str, ...] = field(default=(), repr=False)


# -- loaders -------------------------------------------------------------------------------------------


def env_accounts(settings: Settings) -> list[Account]:
    """The default account of each exchange whose API key is set in the environment."""
    out = []
    if settings.bitmart_api_key:
        out.append(Account("bitmart", "default", settings.bitmart_api_key, settings.bitmart_api_secret,
                           memo=settings.bitmart_api_memo))  # fmt: skip
    if settings.binance_api_key:
        out.append(Account("binanceusdm", "default", settings.binance_api_key, settings.binance_api_secret))
    if settings.gateio_api_key:
        out.append(Account("gateio", "default", settings.gateio_api_key, settings.gateio_api_secret,
                           uid=settings.gateio_uid))  # fmt: skip
    return out


def configured_accounts(settings: Settings) -> list[Account]:
    """Accounts from the environment and ``ACCOUNTS_FILE`` (no Redis)."""
    file_accounts = settings.secrets_file.accounts if settings.secrets_file else ()
    return [*env_accounts(settings), *file_accounts]


def load_secrets_file(path: str) -> SecretsFile:
    """Read and validate ``ACCOUNTS_FILE`` (see module docstring).

    Raises SettingsError naming ``ACCOUNTS_FILE`` when the file is missing, unreadable, readable or writable by
    group/others, too large, not JSON, or has an invalid entry (the message names the entry and field, never
    the value).
    """
    fail = _file_error(path)
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
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise fail(f"not valid JSON (line {exc.lineno}, column {exc.colno})") from None
    if not isinstance(doc, dict) or set(doc) - {"accounts", "tokens"}:
        raise fail('must hold a JSON object with "accounts" and/or "tokens" lists only')
    accounts = [_file_account(fail, i, item) for i, item in enumerate(_list(fail, doc, "accounts"))]
    seen: set[str] = set()
    for i, acc in enumerate(accounts):
        if acc.ref in seen:
            raise fail(f"accounts[{i}]: {acc.ref} is listed twice")
        seen.add(acc.ref)
    tokens: list[TokenGrant] = []
    raw_tokens: list[str] = []
    for i, item in enumerate(_list(fail, doc, "tokens")):
        token, grant = _file_token(fail, i, item)
        if token in raw_tokens:
            raise fail(f"tokens[{i}]: the same token is listed twice")
        raw_tokens.append(token)
        tokens.append(grant)
    return SecretsFile(path, tuple(accounts), tuple(tokens), tuple(raw_tokens))


def _file_error(path: str) -> Any:
    def fail(reason: str) -> SettingsError:
        return SettingsError("ACCOUNTS_FILE", f"{path}: {reason}")

    return fail


def _list(fail: Any, doc: Mapping[str, Any], name: str) -> list[Any]:
    value = doc.get(name, [])
    if not isinstance(value, list):
        raise fail(f'"{name}" must be a list')
    return value


def _string(fail: Any, where: str, item: Mapping[str, Any], name: str, required: bool) -> str:
    value = item.get(name, "")
    if name == "uid" and isinstance(value, int) and not isinstance(value, bool):  # Gate.io user ids are numbers
        value = str(value)
    if not isinstance(value, str) or (required and not value.strip()):
        raise fail(f"{where}.{name} must be a non-empty string" if required else f"{where}.{name} must be a string")
    return value.strip()


def _exchange(fail: Any, where: str, value: str) -> str:
    exchange = EXCHANGE_ALIASES.get(value, value)
    if exchange not in EXCHANGES:
        raise fail(f"{where}: unknown exchange {value!r}; use one of {', '.join(EXCHANGES)}")
    return exchange


def _file_account(fail: Any, index: int, item: Any) -> Account:
    where = f"accounts[{index}]"
    if not isinstance(item, dict):
        raise fail(f"{where} must be an object")
    if unknown := set(item) - _ACCOUNT_FIELDS:
        raise fail(f"{where}: unknown field(s) {', '.join(sorted(map(str, unknown)))}")
    exchange = _exchange(fail, where, _string(fail, where, item, "exchange", True))
    name = _string(fail, where, item, "account", True)
    try:
        validate_account(name)
    except TopicError:
        raise fail(f"{where}.account must be 1-64 of A-Z a-z 0-9 _ . -") from None
    return Account(
        exchange,
        name,
        _string(fail, where, item, "api_key", True),
        _string(fail, where, item, "api_secret", True),
        memo=_string(fail, where, item, "memo", False),
        uid=_string(fail, where, item, "uid", False),
        source=FILE,
    )


def _file_token(fail: Any, index: int, item: Any) -> tuple[str, TokenGrant]:
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
        canonical.append(f"{_exchange(fail, where, exchange)}:{name}")
    if not scopes and not canonical:
        raise fail(f"{where} grants nothing: give scopes and/or accounts")
    return token, make_grant(f"file:{index}", token, scopes, canonical)


def check_sources(settings: Settings) -> None:
    """Raise SettingsError (ACCOUNTS_FILE) when the file defines an account the environment defines too."""
    env = {a.ref: a for a in env_accounts(settings)}
    for i, acc in enumerate(settings.secrets_file.accounts if settings.secrets_file else ()):
        if acc.ref in env:
            prefix = {"bitmart": "BITMART", "binanceusdm": "BINANCE", "gateio": "GATEIO"}[acc.exchange]
            raise SettingsError(
                "ACCOUNTS_FILE", f"accounts[{i}]: {acc.ref} is already configured by {prefix}_API_KEY; keep one"
            )


def secret_values(settings: Settings) -> set[str]:
    """Every configured secret string (tokens, API keys and secrets, memos, FEEDPLANE_SECRET_KEY), for redaction."""
    values = {settings.control_token, settings.read_token, settings.secret_key}
    for acc in configured_accounts(settings):
        values.update((acc.api_key, acc.api_secret, acc.memo))
    if settings.secrets_file:
        values.update(settings.secrets_file.redact)
    values.add(urlsplit(settings.redis_url).password or "")  # redis://:password@host
    return {v for v in values if v}


# -- sealing (Fernet) ----------------------------------------------------------------------------------


def encrypt_secret(plaintext: str | bytes, *, key: str) -> str:
    """Fernet token (text) of ``plaintext`` under ``key`` (FEEDPLANE_SECRET_KEY); authenticated and timestamped."""
    data = plaintext.encode() if isinstance(plaintext, str) else plaintext
    return Fernet(key.encode()).encrypt(data).decode()


def decrypt_secret(token: str | bytes, *, key: str) -> str:
    """Inverse of ``encrypt_secret``; raises DecryptError (wrong key, tampered or not a Fernet token)."""
    data = token.encode() if isinstance(token, str) else token
    try:
        return Fernet(key.encode()).decrypt(data).decode()
    except (InvalidToken, UnicodeDecodeError):
        raise DecryptError("cannot decrypt: wrong FEEDPLANE_SECRET_KEY or corrupted data") from None


# -- accounts added at run time (Redis) ------------------------------------------------------------------


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def put_api_account(redis: Redis, account: Account, *, key: str, now_ms: int) -> bool:
    """Store ``account`` in ``keys.ACCOUNTS`` sealed under ``key``; True when new, False when replaced.

    The record keeps ``exchange``, ``account``, the key fingerprint and ``created_at`` in clear and everything
    else only inside ``sealed``. Nudges workers with ``accounts`` on ``fp:ctl``.
    """
    creds = {"api_key": account.api_key, "api_secret": account.api_secret, "memo": account.memo, "uid": account.uid}
    sealed = encrypt_secret(orjson.dumps(creds), key=key)
    record = {"exchange": account.exchange, "account": account.account, "key": account.fingerprint,
              "created_at": now_ms, "sealed": sealed}  # fmt: skip
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hset(keys.ACCOUNTS, account.ref, orjson.dumps(record).decode())
        pipe.publish(keys.CONTROL_CHANNEL, "accounts")
        created, _ = await pipe.execute()
    return bool(created)


async def delete_api_account(redis: Redis, exchange: str, account: str) -> bool:
    """Forget an account added with POST /accounts; True when it existed. Nudges workers when it did."""
    removed = await redis.hdel(keys.ACCOUNTS, f"{exchange}:{account}")
    if removed:
        await redis.publish(keys.CONTROL_CHANNEL, "accounts")
    return bool(removed)


async def api_account_records(redis: Redis) -> list[dict[str, Any]]:
    """Public records of accounts added with POST /accounts: ``{"exchange","account","source","key"}``, sorted."""
    raw = await redis.hgetall(keys.ACCOUNTS)
    out = []
    for value in raw.values():
        record = orjson.loads(value)
        out.append({"exchange": record["exchange"], "account": record["account"], "source": API, "key": record["key"]})
    return sorted(out, key=lambda r: (r["exchange"], r["account"]))


async def load_accounts(settings: Settings, redis: Redis) -> dict[tuple[str, str], Account]:
    """Every usable account: environment, ``ACCOUNTS_FILE`` and (with FEEDPLANE_SECRET_KEY) Redis, decrypted.

    Keyed by ``(exchange, account)``. Environment and file win over a Redis record of the same name; Redis
    records that cannot be decrypted (key rotated, corrupted) are skipped with a warning naming the account.
    Raises redis errors.
    """
    out = {(a.exchange, a.account): a for a in configured_accounts(settings)}
    raw = await redis.hgetall(keys.ACCOUNTS)
    if raw and not settings.secret_key:
        logger.warning("%d account(s) in Redis ignored: FEEDPLANE_SECRET_KEY is not set", len(raw))
        return out
    for ref, value in sorted((_text(k), v) for k, v in raw.items()):
        record = orjson.loads(value)
        pair = (record["exchange"], record["account"])
        if pair in out:
            logger.warning("account %s in Redis ignored: it is also configured in the environment or file", ref)
            continue
        try:
            creds = orjson.loads(decrypt_secret(record["sealed"], key=settings.secret_key))
        except DecryptError:
            logger.warning("account %s in Redis ignored: cannot decrypt it with FEEDPLANE_SECRET_KEY", ref)
            continue
        out[pair] = Account(pair[0], pair[1], creds["api_key"], creds["api_secret"], memo=creds.get("memo", ""),
                            uid=creds.get("uid", ""), source=API)  # fmt: skip
    return out
