"""The accounts a worker runtime serves private connections for, and the private sessions built from them.

Private connections (route ``private:<account>``, one per account and exchange) get a ``workers.private``
session built from the account's credentials. Accounts are loaded with ``control.accounts.load_accounts`` at the
runtime's first tick and again whenever ``accounts`` arrives on ``fp:ctl`` (POST/DELETE /accounts); the runtime
adds every loaded secret to the log redaction filter (``control.redact``). A held private connection whose
credentials changed is restarted; one whose account is unknown runs as ``workers.unserved.UnservedConnection``
(topics ``failed``, ``unknown account``) until the account appears.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import aiohttp
from redis.asyncio import Redis

from control.accounts import Account, load_accounts, secret_values
from control.exchanges.binanceusdm import LISTEN_KEY_KEEPALIVE
from control.settings import Settings
from workers.exchanges.base import ExchangeAdapter
from workers.private import PrivateSession, account_of_route
from workers.publisher import Publisher


class AccountBook:
    """``(exchange, account) -> Account`` as last loaded, and the private sessions built from it.

    :param settings: the worker's settings (private WebSocket and REST URLs, keepalive, retry delays).
    :param adapters: exchange id -> adapter. :param session: shared ``aiohttp.ClientSession``.
    :param publisher: the runtime's event publisher. :param clock: wall clock, epoch seconds.
    """

    def __init__(self, settings: Settings, adapters: Mapping[str, ExchangeAdapter], *,
                 session: aiohttp.ClientSession, publisher: Publisher, clock: Callable[[], float]) -> None:  # fmt: skip
        self.settings, self.adapters, self.session, self.publisher, self.clock = (
            settings, adapters, session, publisher, clock
        )
        #: (exchange, account) -> credentials; loaded on the first tick and on every ``accounts`` nudge.
        self.by_key: dict[tuple[str, str], Account] = {}
        #: A (re)load is due: set at start and by an ``accounts`` message on ``fp:ctl``.
        self.due = True

    async def load(self, redis: Redis) -> tuple[bool, set[str]]:
        """(Re)load the accounts; returns ``(changed, secrets)``: whether any account differs from the last load,
        and every secret value to redact from logs (settings' and accounts'). Raises RedisError (``due`` stays set)."""
        accounts = await load_accounts(self.settings, redis)
        self.due = False
        secrets = secret_values(self.settings)
        for account in accounts.values():
            secrets.update(v for v in (account.api_key, account.api_secret, account.memo) if v)
        changed = accounts != self.by_key
        self.by_key = accounts
        return changed, secrets

    def get(self, exchange: str, name: str) -> Account | None:
        """The credentials of account ``name`` on ``exchange``, None when unknown."""
        return self.by_key.get((exchange, name))

    def account_for(self, exchange: str, route: str) -> Account | None:
        """The credentials of a private route's account (None for a public route or an unknown account)."""
        name = account_of_route(route)
        return None if name is None else self.by_key.get((exchange, name))

    def private_session(self, account: Account) -> PrivateSession:
        """A fresh ``PrivateSession`` for one private connection of ``account``."""
        s = self.settings
        return PrivateSession(
            account=account, adapter=self.adapters[account.exchange], session=self.session, publisher=self.publisher,
            ws_base_url=s.exchange_ws_uri(account.exchange, private=True),
            rest_base_url=s.exchange_rest_uri(account.exchange), keepalive_s=s.value(LISTEN_KEY_KEEPALIVE),
            retry_initial_s=min(s.reconnect_delay_s, 1.0), retry_max_s=s.reconnect_max_delay_s, clock=self.clock,
        )  # fmt: skip
