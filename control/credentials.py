"""Account credentials and API tokens: the types, and ``ACCOUNT_SCHEMA``, the one shape an account entry must have.

``ACCOUNT_SCHEMA`` is what both ``ACCOUNTS_FILE`` entries (``control.secrets_file``) and ``POST /accounts`` bodies
(``app.routes.accounts``) are validated with, by ``parse_account``::

    {"exchange": str, "account": str, "api_key": str, "api_secret": str, "memo"?: str, "uid"?: str | int}

It is plain data and stdlib code rather than a marshmallow schema because ``control`` imports the standard
library, orjson, redis and cryptography only (``style.md`` §2): the settings loader, which reads ``ACCOUNTS_FILE``
at start, lives here too, and the app's marshmallow schemas stay in ``app/``. Errors come as ``AccountError``
with marshmallow-shaped ``messages`` (``{field: [message]}``), so the app answers them like any validation error.

Secrets never leave this module in clear except through ``Account`` attributes: reprs and ``str()`` show a
fingerprint (``"abcd…1a2b3c4d"``: 4 characters of the API key and a sha256 prefix), error messages name the
field, never the value, and tokens are kept as sha256 digests (``TokenGrant``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from control.errors import FeedplaneError
from control.topics import EXCHANGE_ALIASES, EXCHANGES, TopicError, validate_account

#: Where an account or token was defined.
ENV, FILE, API = "env", "file", "api"
#: Token scopes. ``control`` implies ``read`` and every account's private streams.
READ, CONTROL = "read", "control"
SCOPES = (READ, CONTROL)
#: RFC 6750 b64token: what may follow "Bearer " in an Authorization header.
TOKEN_RE = re.compile(r"[A-Za-z0-9._~+/-]+=*")
TOKEN_MIN_CHARS = 16


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


def canonical_exchange(value: str) -> str:
    """The exchange id for ``value`` (an id or an alias such as ``gate``); raises ValueError saying which exist."""
    exchange = EXCHANGE_ALIASES.get(value, value)
    if exchange not in EXCHANGES:
        raise ValueError(f"unknown exchange {value!r}; use one of {', '.join(EXCHANGES)}")
    return exchange


# -- the schema ------------------------------------------------------------------------------------------

SECRET_MAX_CHARS = 512
UID_MAX_CHARS = 64
_MUST_BE_TEXT = "must be a non-empty string"


class AccountError(FeedplaneError, ValueError):
    """An account entry breaks ``ACCOUNT_SCHEMA``. ``messages``: ``{field: [message, ...]}`` in schema order
    (unknown fields under their own name, a non-object under ``_schema``); messages never quote a secret."""

    def __init__(self, messages: Mapping[str, list[str]]) -> None:
        self.messages = {name: list(texts) for name, texts in messages.items()}
        super().__init__(self.describe("account"))

    def describe(self, where: str) -> str:
        """One line for a human, e.g. ``accounts[0].api_secret must be a non-empty string`` or
        ``accounts[0]: unknown field(s) x``; ``where`` names the entry."""
        unknown = sorted(n for n, texts in self.messages.items() if texts == [_UNKNOWN])
        if unknown:
            return f"{where}: unknown field(s) {', '.join(unknown)}"
        name, texts = next(iter(self.messages.items()))
        if name == "_schema":
            return f"{where} {texts[0]}"
        return f"{where}.{name} {texts[0]}" if texts[0].startswith("must") else f"{where}: {texts[0]}"


_UNKNOWN = "unknown field"


@dataclass(frozen=True, slots=True)
class AccountField:
    """One field of ``ACCOUNT_SCHEMA``: ``required`` (non-empty), ``max_chars`` (0 = no limit), ``secret`` (no
    whitespace inside, never echoed), ``numbers`` (an integer is accepted and kept as its decimal text),
    ``check`` (value -> canonical value; raises AccountError or TopicError)."""

    name: str
    doc: str
    required: bool = False
    max_chars: int = 0
    secret: bool = False
    numbers: bool = False
    check: Callable[[str], str] | None = None

    def load(self, item: Mapping[str, Any]) -> str:
        """This field's value from ``item`` ("" when optional and absent); raises ValueError with the message."""
        value = item.get(self.name, "")
        if self.numbers and isinstance(value, int) and not isinstance(value, bool):  # Gate.io user ids are numbers
            value = str(value)
        if not isinstance(value, str) or (self.required and not value):
            raise ValueError(_MUST_BE_TEXT if self.required else "must be a string")
        if self.max_chars and len(value) > self.max_chars:
            limit = f"1 to {self.max_chars}" if self.required else f"at most {self.max_chars}"
            raise ValueError(f"must be {limit} characters")
        if self.secret and self.required and any(c.isspace() for c in value):
            raise ValueError("must not contain whitespace")  # the message never includes the value: a secret
        return self.check(value) if self.check is not None else value


def _account_name(value: str) -> str:
    try:
        return validate_account(value)
    except TopicError:
        raise ValueError("must be 1-64 of A-Z a-z 0-9 _ . -") from None


#: The account entry, field by field (``ACCOUNTS_FILE`` ``accounts[]`` and the ``POST /accounts`` body).
ACCOUNT_SCHEMA: tuple[AccountField, ...] = (
    AccountField("exchange", f"one of {', '.join(EXCHANGES)} (or an alias: gate)", required=True,
                 check=canonical_exchange),
    AccountField("account", "account name, 1-64 of A-Z a-z 0-9 _ . -", required=True, check=_account_name),
    AccountField("api_key", "API key", required=True, max_chars=SECRET_MAX_CHARS, secret=True),
    AccountField("api_secret", "API secret", required=True, max_chars=SECRET_MAX_CHARS, secret=True),
    AccountField("memo", "BitMart API memo", max_chars=SECRET_MAX_CHARS, secret=True),
    AccountField("uid", "Gate.io user id", max_chars=UID_MAX_CHARS, numbers=True),
)
ACCOUNT_FIELDS = frozenset(f.name for f in ACCOUNT_SCHEMA)


def parse_account(item: Any, *, source: str) -> Account:
    """``item`` (a decoded JSON object) checked against ``ACCOUNT_SCHEMA``; the exchange alias resolved.

    Raises AccountError listing every field that is wrong (never a value of a secret field).
    """
    if not isinstance(item, dict):
        raise AccountError({"_schema": ["must be an object"]})
    errors: dict[str, list[str]] = {}
    values: dict[str, str] = {}
    for name in sorted(set(map(str, item)) - ACCOUNT_FIELDS):
        errors[name] = [_UNKNOWN]
    for rule in ACCOUNT_SCHEMA:
        try:
            values[rule.name] = rule.load(item)
        except ValueError as exc:
            errors[rule.name] = [str(exc)]
    if errors:
        raise AccountError(errors)
    return Account(source=source, **values)
