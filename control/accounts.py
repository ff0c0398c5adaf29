"""Exchange accounts (API keys) and API tokens, from the environment, ``ACCOUNTS_FILE`` and Redis.

Sources (an ``(exchange, account)`` pair is defined by exactly one of them)::

    env   BITMART_API_KEY/_SECRET/_MEMO -> ("bitmart", "default"); BINANCE_API_KEY/_SECRET -> ("binanceusdm",
          "default"); GATEIO_API_KEY/_SECRET/GATEIO_UID -> ("gateio", "default")
    file  ACCOUNTS_FILE, owner-only permissions (``mode & 0o077 == 0``), JSON (``control.secrets_file``):
          {"accounts": [{"exchange", "account", "api_key", "api_secret", "memo"?, "uid"?}],
           "tokens":   [{"token", "scopes": ["read" | "control"], "accounts": ["<exchange>:<account>", ...]}]}
    api   POST /accounts; Redis (``keys.ACCOUNTS``) holds them only as a Fernet token under FEEDPLANE_SECRET_KEY

A file entry and a POST /accounts body follow one schema, ``control.credentials.ACCOUNT_SCHEMA``. The types
(``Account``, ``TokenGrant``) live in ``control.credentials`` and are re-exported here. Secrets never leave
these modules in clear except through ``Account`` attributes: reprs and ``str()`` show a fingerprint, error
messages name the field, never the value, and tokens are kept as sha256 digests. Workers call
``load_accounts(settings, redis)``; ``secret_values(settings)`` feeds ``control.redact.install_redaction``.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

import orjson
from cryptography.fernet import Fernet, InvalidToken
from redis.asyncio import Redis

from control import keys
from control.credentials import (
    API,
    CONTROL,
    ENV,
    FILE,
    READ,
    SCOPES,
    Account,
    AccountError,
    TokenGrant,
    fingerprint,
    make_grant,
    parse_account,
    token_digest,
)
from control.errors import FeedplaneError
from control.secrets_file import SecretsFile, load_secrets_file
from control.settings import Settings

__all__ = [
    "API", "CONTROL", "ENV", "FILE", "READ", "SCOPES", "Account", "AccountError", "DecryptError", "SecretsFile",
    "TokenGrant", "api_account_records", "configured_accounts", "decrypt_secret", "delete_api_account",
    "encrypt_secret", "env_accounts", "fingerprint", "load_accounts", "load_secrets_file", "make_grant",
    "parse_account", "put_api_account", "secret_values", "token_digest",
]  # fmt: skip

logger = logging.getLogger(__name__)


class DecryptError(FeedplaneError, ValueError):
    """A sealed secret cannot be opened: wrong FEEDPLANE_SECRET_KEY or corrupted data (no content shown)."""


# -- loaders -------------------------------------------------------------------------------------------


def env_accounts(settings: Settings) -> list[Account]:
    """The default account of each exchange whose API key is set in the environment (``settings.exchanges``
    order: ``EXCHANGES``); its fields are the ones its declaration lists (``ExchangeDeclaration.credentials``)."""
    out = []
    for values in settings.exchanges:
        creds = values.credentials
        if creds.get("api_key"):
            out.append(Account(values.id, "default", creds["api_key"], creds["api_secret"],
                               memo=creds.get("memo", ""), uid=creds.get("uid", "")))  # fmt: skip
    return out


def configured_accounts(settings: Settings) -> list[Account]:
    """Accounts from the environment and ``ACCOUNTS_FILE`` (no Redis)."""
    file_accounts = settings.secrets_file.accounts if settings.secrets_file else ()
    return [*env_accounts(settings), *file_accounts]


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
    removed = await redis.hdel(keys.ACCOUNTS, f"{exchange}:{account}")  # type: ignore[misc]
    if removed:
        await redis.publish(keys.CONTROL_CHANNEL, "accounts")
    return bool(removed)


async def api_account_records(redis: Redis) -> list[dict[str, Any]]:
    """Public records of accounts added with POST /accounts: ``{"exchange","account","source","key"}``, sorted."""
    raw = await redis.hgetall(keys.ACCOUNTS)  # type: ignore[misc]
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
    raw = await redis.hgetall(keys.ACCOUNTS)  # type: ignore[misc]
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
