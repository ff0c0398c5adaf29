"""HMAC helpers shared by the adapters' request signing (pure: no clock, no I/O, no logging).

Each exchange's recipe (what string is signed, where the signature travels) lives in its adapter module next to
the reference section it implements: BitMart ``exchanges.md`` §1.3, Gate.io §2.3 / §2.7, Binance USD-M
``binance_usdm.md`` §8. The functions here only hash. Their inputs include API secrets: never log them, never
put them in an exception message (``check_credentials`` names the account, nothing else).
"""

from __future__ import annotations

import hashlib
import hmac

from workers.exchanges.base import AdapterError, Credentials


def hmac_sha256_hex(secret: str, message: str | bytes) -> str:
    """Lowercase hex HMAC-SHA256 of ``message`` (UTF-8) keyed with ``secret`` (UTF-8): 64 characters."""
    data = message.encode() if isinstance(message, str) else message
    return hmac.new(secret.encode(), data, hashlib.sha256).hexdigest()


def hmac_sha512_hex(secret: str, message: str | bytes) -> str:
    """Lowercase hex HMAC-SHA512 of ``message`` (UTF-8) keyed with ``secret`` (UTF-8): 128 characters."""
    data = message.encode() if isinstance(message, str) else message
    return hmac.new(secret.encode(), data, hashlib.sha512).hexdigest()


def sha512_hex(data: str | bytes) -> str:
    """Lowercase hex SHA-512 of ``data`` (UTF-8 when a string); of ``""`` it is ``cf83e135…927da3e``."""
    return hashlib.sha512(data.encode() if isinstance(data, str) else data).hexdigest()


def check_credentials(creds: Credentials | None, exchange: str, account: str | None = None) -> Credentials:
    """``creds`` when they belong to ``exchange`` (and to ``account`` when given) and carry a key and a secret.

    Raises AdapterError otherwise; the message names the exchange and account only, never a key or secret.
    """
    if creds is None:
        raise AdapterError(f"{exchange} private requests need the account's credentials")
    if creds.exchange != exchange:
        raise AdapterError(f"credentials of {creds.exchange}:{creds.account} cannot sign {exchange} requests")
    if account is not None and creds.account != account:
        raise AdapterError(f"credentials of {exchange}:{creds.account} cannot serve account {account!r}")
    if not creds.api_key or not creds.api_secret:
        raise AdapterError(f"{exchange}:{creds.account} has no API key or secret")
    return creds
