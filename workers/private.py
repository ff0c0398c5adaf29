"""One account's private session: what an account's socket needs beyond a public one (issue #3).

``WorkerRuntime`` builds a ``PrivateSession`` for every planned connection whose route is ``private:<account>``
(credentials from ``control.accounts.load_accounts``) and hands it to ``ExchangeConnection``, which calls it at
fixed points of each socket's life::

    connect_url()        before connecting. Binance USD-M: POST /fapi/v1/listenKey (creates a key, or returns the
                         account's active one and extends it) and the socket URL ``/private/ws?listenKey=<key>``
                         (binance_usdm.md §7). A key is never DELETEd on a reconnect: one key serves every socket of
                         the account, so a DELETE would also cut any other holder's stream.
    login_frame(now_ms)  after connecting, before any subscribe: BitMart's ``access`` frame (exchanges.md §1.3); the
                         connection waits for ``Ack(action="login")`` and, on a refusal, fails every topic with the
                         exchange's text and backs off at the maximum delay (the server closes the socket anyway).
    creds                Gate.io signs each private subscribe with them (exchanges.md §2.3a).
    started(cut)         the socket is open (and logged in), before anything is read from it: every topic served on
                         an earlier socket gets a ``gap`` event (``reason``: ``reconnect``, ``listen_key_expired`` or
                         ``login``; ``since``: when the last socket went down). The Binance keepalive timer starts
                         (PUT every ``LISTEN_KEY_KEEPALIVE_S``); a ``-1125`` answer (key gone) ends the socket via ``cut``.
    want_snapshot(topic) the topic became active on this socket (a topic new to the connection first gets a ``gap``
                         with reason ``subscribe``): a REST snapshot (open orders for ``order`` topics, positions for
                         ``position`` topics) is fetched and published as events with ``snapshot: true``, so
                         consumers converge. Balances have no REST snapshot here: their gap says to wait for the next
                         push.
    on_reconnect(reason) the exchange asked for a new socket (Binance ``listenKeyExpired``): the next connect gets a
                         fresh key and the next gap says ``listen_key_expired``.
    ended()              the socket is gone: keepalive and fetches stop.
    close(forget)        the connection stops; ``forget`` (the account's last private topic was unsubscribed) DELETEs
                         the listenKey. Pausing, draining or a hand-over to another worker never does.

REST calls go through ``workers.rest`` (timeouts, 429/418 ``Retry-After`` honoured for the whole session) and retry
with capped backoff until they succeed or the socket ends. Secrets stay out of logs and Redis: the session logs the
account as ``exchange:account`` and a key fingerprint, and ``scrub()`` masks the API key, secret, memo and the
listenKey in any text the exchange sends back (errors end up in ``fp:subs``).

A private connection whose account is not configured runs as ``workers.unserved.UnservedConnection``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from control.accounts import fingerprint
from control.errors import FeedplaneError
from control.redact import RedactingFilter
from control.topics import Topic
from workers.backoff import Backoff
from workers.exchanges.base import Credentials, FrameParser, PrivateAdapter, RestRequest
from workers.logutil import RateLimitedLog
from workers.publisher import Publisher
from workers.rest import RestError, fetch, request_url

log = logging.getLogger(__name__)
#: ``PrivateAdapter.parse_open_orders`` / ``parse_positions``: ``(body, account, ts_received_ms) -> (topic, event)s``.
_SnapshotParser = Callable[[bytes, str, int], list[tuple[str, dict[str, Any]]]]

PRIVATE_ROUTE_PREFIX = "private:"
#: Gap reasons (``control.events.GapEvent``) a private topic can get.
SUBSCRIBE, RECONNECT, LISTEN_KEY_EXPIRED, LOGIN = "subscribe", "reconnect", "listen_key_expired", "login"


def account_of_route(route: str) -> str | None:
    """``"alice"`` for the route ``"private:alice"``; None for a public route."""
    return route[len(PRIVATE_ROUTE_PREFIX) :] if route.startswith(PRIVATE_ROUTE_PREFIX) else None


class PrivateAuthError(FeedplaneError):
    """The exchange refused the account's credentials (login refused, listenKey creation refused); the text is the
    exchange's own (scrubbed). The connection fails every topic with it and retries at the maximum backoff."""


class PrivateSession:
    """See the module docstring.

    :param account: the account's credentials (``control.accounts.Account``; ``uid`` is read when present).
    :param adapter: the exchange adapter (``PrivateAdapter``: ``login_frame``, ``listen_key``, ``open_orders_request`` ...).
    :param ws_base_url: the exchange's WebSocket base for private sockets (``Settings.exchange_ws_uri(.., True)``);
        Binance builds ``/private/ws?listenKey=`` on it.
    :param rest_base_url: the exchange's REST base (``Settings.exchange_rest_uri``).
    :param keepalive_s: listenKey keepalive period (``LISTEN_KEY_KEEPALIVE_S``).
    :param retry_initial_s, retry_max_s: backoff of failed REST calls (snapshots, keepalives).
    :param fetch_timeout_s: timeout of one REST call.
    """

    def __init__(
        self, *, account: Credentials, adapter: PrivateAdapter, session: aiohttp.ClientSession,
        publisher: Publisher, ws_base_url: str, rest_base_url: str, keepalive_s: float = 1800.0,
        retry_initial_s: float = 0.5, retry_max_s: float = 30.0, fetch_timeout_s: float = 10.0,
        clock: Callable[[], float] = time.time, rng: random.Random | None = None,
    ) -> None:  # fmt: skip
        self.account, self.adapter, self.session, self.publisher = account, adapter, session, publisher
        self.ws_base_url, self.rest_base_url = ws_base_url, rest_base_url.rstrip("/")
        self.keepalive_s, self.fetch_timeout_s, self.clock = keepalive_s, fetch_timeout_s, clock
        self.retry_initial_s, self.retry_max_s = retry_initial_s, max(retry_max_s, retry_initial_s)
        self._rng = rng or random.Random()
        self.conn_id = f"{account.exchange}.private:{account.account}"
        self._is_desired: Callable[[str], bool] = lambda topic: True
        self.uses_listen_key = adapter.listen_key is not None
        self._redactor = RedactingFilter([account.api_key, account.api_secret, account.memo])
        self._listen_key: str | None = None
        self._next_reason = RECONNECT  # why the next socket's topics may have missed events
        self._served: set[str] = set()  # topics announced (gap) on this socket or an earlier one
        self._announced: set[str] = set()  # topics that had their gap on the current socket
        self._due: set[str] = set()
        self._down_since: int | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._snapshot_task: asyncio.Task[None] | None = None
        self._blocked_until = 0.0  # monotonic: no REST call before this (Retry-After)
        self._limited_log = RateLimitedLog(log)
        self.last_error: str | None = None
        self.stats = {"snapshots": 0, "snapshot_events": 0, "rest_failures": 0, "listen_keys_created": 0,
                      "keepalives": 0, "logins": 0}  # fmt: skip
        self.listen_key_renewed_at: int | None = None

    # -- binding and reporting --------------------------------------------------------------------

    def bind(self, conn_id: str, is_desired: Callable[[str], bool]) -> None:
        """Called by the connection that runs this session: its id (log lines) and which topics it still wants."""
        self.conn_id, self._is_desired = conn_id, is_desired

    @property
    def creds(self) -> Credentials:
        """The account's credentials (for Gate's signed subscribe frames). Never log them."""
        return self.account

    def new_parser(self) -> FrameParser:
        """A parser that emits this account's private topics."""
        return self.adapter.new_parser(account=self.account.account)

    def scrub(self, text: str | None) -> str | None:
        """``text`` with the account's key, secret, memo and listenKey masked (exchange error texts may echo them)."""
        return None if text is None else self._redactor.redact(text)

    def status(self) -> dict[str, Any]:
        """For the connection's status record: no secret, only the account, its key fingerprint and counters."""
        record: dict[str, Any] = {
            "account": f"{self.account.exchange}:{self.account.account}",
            "key": fingerprint(self.account.api_key),
            **self.stats,
            "last_error": self.last_error,
        }
        if self.uses_listen_key:
            record["listen_key"] = self._listen_key is not None
            record["listen_key_renewed_at"] = self.listen_key_renewed_at
        return record

    # -- socket life ------------------------------------------------------------------------------

    async def connect_url(self, planned_url: str) -> str:
        """The URL to open now: ``planned_url``, or for Binance the listenKey URL (POSTing for the key first).

        Raises PrivateAuthError when the exchange refuses the credentials, RestError on other REST failures.
        """
        duty = self.adapter.listen_key
        if duty is None:
            return planned_url
        request = duty.request(self.account, "POST")
        status, body = await self._call(request)
        if status != 200:
            raise self._refusal("listenKey creation", status, body)
        try:
            key = duty.parse(body)
        except ValueError as exc:
            raise RestError(self.scrub(str(exc)) or "") from None
        if key != self._listen_key:
            self.stats["listen_keys_created"] += 1
            log.info("%s: %s: listenKey %s", self.conn_id, _ref(self.account),
                     "obtained" if self.stats["listen_keys_created"] == 1 else "replaced")  # fmt: skip
        self._listen_key = key
        self._redactor.add([key])
        self.listen_key_renewed_at = self._now_ms()
        return duty.ws_url(self.ws_base_url, key)

    def login_frame(self, now_ms: int) -> str | None:
        """The login frame to send before subscribing (BitMart), or None. It carries the key: never log it."""
        frame = self.adapter.login_frame(self.account, now_ms)
        if frame is not None:
            self.stats["logins"] += 1
        return frame

    def login_refused(self, error: str | None) -> PrivateAuthError:
        """The error to fail topics with after a refused login; the next socket's gap says ``login``."""
        self._next_reason = LOGIN
        return PrivateAuthError(f"login refused: {self.scrub(error) or 'no reason given'}")

    def started(self, cut: Callable[[str], None]) -> None:
        """The socket is open (and logged in), nothing read yet; ``cut(reason)`` ends it. Announces the gap of every
        topic served before and starts the listenKey keepalive."""
        reason, self._next_reason = self._next_reason, RECONNECT
        self._announced.clear()
        for topic in sorted(t for t in self._served if self._is_desired(t)):
            self._gap(topic, reason, self._down_since)
        if self.uses_listen_key and self._listen_key is not None:
            self._spawn(self._keepalive(cut), "keepalive")

    def on_reconnect(self, reason: str) -> None:
        """The exchange asked for a new socket (``Parsed.reconnect``): forget the key when it expired."""
        if self.uses_listen_key:
            self._listen_key = None
            self._next_reason = LISTEN_KEY_EXPIRED
            log.info("%s: %s: listenKey expired (%s); a new one is created on reconnect", self.conn_id,
                     _ref(self.account), reason)  # fmt: skip

    def ended(self) -> None:
        """The socket is gone: stop keepalives and snapshot fetches (the next socket re-syncs everything)."""
        self._down_since = self._now_ms()
        self._due.clear()
        for task in list(self._tasks):
            task.cancel()
        self._snapshot_task = None

    async def close(self, *, forget: bool = False) -> None:
        """Stop every task; with ``forget`` also DELETE the account's listenKey (best effort)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._snapshot_task = None
        duty = self.adapter.listen_key
        if forget and duty is not None and self._listen_key is not None:
            try:
                request = duty.request(self.account, "DELETE")
                status, _ = await self._call(request)
                log.info("%s: %s: listenKey closed (HTTP %d): no private topic left", self.conn_id,
                         _ref(self.account), status)  # fmt: skip
            except Exception as exc:  # noqa: BLE001 - it expires by itself within 60 minutes
                log.warning("%s: %s: could not close the listenKey: %s", self.conn_id, _ref(self.account),
                            self.scrub(str(exc)))  # fmt: skip
            self._listen_key = None

    # -- snapshots --------------------------------------------------------------------------------

    def want_snapshot(self, topic: str) -> None:
        """``topic`` became active on the current socket: fetch its REST snapshot (batched with the others); a topic
        new to this connection gets its ``subscribe`` gap first."""
        if topic not in self._announced:
            self._gap(topic, SUBSCRIBE, None)
        self._due.add(topic)
        if self._snapshot_task is None or self._snapshot_task.done():
            self._snapshot_task = self._spawn(self._snapshots(), "snapshot")

    async def _snapshots(self) -> None:
        await asyncio.sleep(0)  # topics acked by one frame arrive together: one fetch for all of them
        while self._due:
            topics = sorted(t for t in self._due if self._is_desired(t))
            self._due.clear()
            channels = {Topic.parse(t).channel for t in topics}
            for channel, build, parse in (
                ("order", self.adapter.open_orders_request, self.adapter.parse_open_orders),
                ("position", self.adapter.positions_request, self.adapter.parse_positions),
            ):
                if channel not in channels:
                    continue
                events = await self._fetch_snapshot(channel, build, parse)
                wanted = {t for t in topics if Topic.parse(t).channel == channel}
                for topic, event in events:
                    if topic in wanted and self._is_desired(topic):
                        self.publisher.publish(topic, event)
                        self.stats["snapshot_events"] += 1
            self.stats["snapshots"] += 1

    async def _fetch_snapshot(
        self, channel: str, build: Callable[[Credentials, int], RestRequest], parse: _SnapshotParser
    ) -> list[tuple[str, dict[str, Any]]]:
        """Call and parse one snapshot endpoint until it works (cancelled when the socket ends)."""
        backoff = Backoff(self.retry_initial_s, self.retry_max_s, rng=self._rng)
        while True:
            retry_after: float | None = None
            try:
                request = build(self.account, self._now_ms())
                status, body = await self._call(request)
                if status != 200:
                    raise RestError(f"HTTP {status}: {self.scrub(body[:200].decode(errors='replace'))}",
                                    status=status)  # fmt: skip
                return parse(body, self.account.account, self._now_ms())
            except (RestError, ValueError) as exc:  # ValueError: an error reply or a malformed one
                retry_after = exc.retry_after_s if isinstance(exc, RestError) else None
                self.stats["rest_failures"] += 1
                self.last_error = f"{channel} snapshot: {self.scrub(str(exc))}"
            delay = backoff.next_delay()
            if retry_after is not None:
                delay = max(delay, retry_after)
            self._log_limited("%s: %s snapshot failed (%s); retrying in %.2f s", _ref(self.account), channel,
                              self.last_error, delay)  # fmt: skip
            await asyncio.sleep(delay)

    def _gap(self, topic: str, reason: str, since: int | None) -> None:
        """Publish a ``gap`` event (``control.events.GapEvent``) on ``topic``."""
        self.publisher.publish(topic, {"type": "gap", "topic": topic, "reason": reason, "since": since, "until": None})
        self._served.add(topic)
        self._announced.add(topic)

    # -- listenKey keepalive ----------------------------------------------------------------------

    async def _keepalive(self, cut: Callable[[str], None]) -> None:
        """PUT the listenKey every ``keepalive_s``; failures retry sooner (the key lives 60 minutes)."""
        duty = self.adapter.listen_key
        assert duty is not None  # started() runs this for listen-key sessions only
        backoff = Backoff(min(1.0, self.keepalive_s), self.keepalive_s, rng=self._rng)
        delay = self.keepalive_s
        while True:
            await asyncio.sleep(delay)
            try:
                request = duty.request(self.account, "PUT")
                status, body = await self._call(request)
            except RestError as exc:
                self.last_error = f"listenKey keepalive: {self.scrub(str(exc))}"
                delay = max(backoff.next_delay(), exc.retry_after_s or 0.0)
                self._log_limited("%s: %s; retrying in %.2f s", _ref(self.account), self.last_error, delay)
                continue
            if status == 200:
                self.stats["keepalives"] += 1
                self.listen_key_renewed_at = self._now_ms()
                backoff.reset()
                delay = self.keepalive_s
                continue
            code, text = self.adapter.rest_error(body)
            self.last_error = f"listenKey keepalive: HTTP {status}: {self.scrub(text)}"
            if code == duty.gone_code or 400 <= status < 500:
                self._listen_key = None
                self._next_reason = LISTEN_KEY_EXPIRED
                log.warning("%s: %s: %s; reconnecting with a new key", self.conn_id, _ref(self.account),
                            self.last_error)  # fmt: skip
                cut(f"listenKey keepalive refused ({code})")
                return
            delay = backoff.next_delay()

    # -- helpers ----------------------------------------------------------------------------------

    async def _call(self, request: RestRequest) -> tuple[int, bytes]:
        """One REST call, waiting out a ``Retry-After`` first; raises RestError (see ``workers.rest.fetch``)."""
        if not self.rest_base_url:
            raise RestError(f"no REST URL configured for {self.account.exchange}")
        wait = self._blocked_until - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        url = request_url(self.rest_base_url, request.path, request.params)
        try:
            return await fetch(self.session, request.method, url, headers=request.headers,
                               timeout_s=self.fetch_timeout_s, retry_after_default_s=self.retry_initial_s)  # fmt: skip
        except RestError as exc:
            if exc.retry_after_s is not None:
                self._blocked_until = max(self._blocked_until, time.monotonic() + exc.retry_after_s)
            raise

    def _refusal(self, what: str, status: int, body: bytes) -> Exception:
        _, text = self.adapter.rest_error(body)
        message = f"{what} refused: HTTP {status}: {self.scrub(text)}"
        self.last_error = message
        if 400 <= status < 500:
            return PrivateAuthError(message)
        return RestError(message, status=status)

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro, name=f"{name}:{self.conn_id}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("%s: %s: %s failed: %s", self.conn_id, _ref(self.account), task.get_name().split(":")[0],
                      self.scrub(repr(exc)))  # fmt: skip

    def _log_limited(self, fmt: str, *args: object) -> None:
        self._limited_log.warning("%s: " + fmt, self.conn_id, *args)

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)


def _ref(account: Credentials) -> str:
    return f"{account.exchange}:{account.account}"
