"""Subscription sync of one connection: the live topic table, paced subscribe/unsubscribe frames, acks.

Owned by ``workers.connection.ExchangeConnection`` (``conn.subs``). ``live`` maps each topic on the current
socket to ``pending|active|failed``; ``counts`` counts them by state. The syncer task diffs the desired topics
against ``live`` and sends paced frames (at least ``max(SUBSCRIBE_DELAY_MS, adapter.min_send_interval_ms)``
apart). Acks are matched by request id (Binance, binance_usdm.md §4), by channel in order (Gate acks without id
or payload) or by the echoed topic (BitMart, exchanges.md §1.4). Topic states go to the connection's output as
``{"state","error","since"(ms),"conn"}``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Literal

import aiohttp

from control.store import ACTIVE, FAILED, PENDING
from control.topics import Topic
from workers.conn_reasons import ERROR, SEND_FAILED
from workers.exchanges.base import Ack, AdapterError, OutFrame, match_request

if TYPE_CHECKING:
    from workers.connection import ExchangeConnection

log = logging.getLogger("workers.connection")

#: The connection's sockets: frames arrive as bytes (``decode_text=False``; orjson parses bytes).
WebSocket = aiohttp.ClientWebSocketResponse[Literal[False]]


class Subscriptions:
    """The topics on the current socket and the frames that get them there; see the module docstring."""

    def __init__(self, conn: ExchangeConnection) -> None:
        self._conn = conn
        s, adapter = conn.settings, conn.adapter
        self.live: dict[str, str] = {}  # topic -> pending|active|failed on the current socket
        self.topics: dict[str, Topic] = {}
        self.counts = {PENDING: 0, ACTIVE: 0, FAILED: 0}
        self.requests: dict[int, tuple[str, tuple[str, ...]]] = {}  # request id -> (action, topics)
        self._next_request_id = 1
        self._send_lock = asyncio.Lock()
        self._last_send = -1e9
        self._gap_s = max(s.subscribe_delay_ms, adapter.min_send_interval_ms) / 1000.0

    def reset(self) -> None:
        """The socket is gone: nothing is live (in place: the reader holds references)."""
        for table in (self.live, self.topics, self.requests):
            table.clear()
        self.counts.update({PENDING: 0, ACTIVE: 0, FAILED: 0})

    async def run(self, ws: WebSocket) -> None:
        """The syncer task: sync now and whenever the desired set changes; a failure ends the session."""
        conn = self._conn
        try:
            while not conn._stopping:
                conn._changed.clear()
                await self.sync(ws)
                if self.counts[PENDING] == 0 and conn._state == "subscribing":
                    conn._state = "open"
                await conn._changed.wait()
        except (aiohttp.ClientError, ConnectionError) as exc:
            conn._cut_session(f"send failed: {exc!r}", SEND_FAILED)
        except Exception as exc:  # an adapter or logic error: a fresh socket is the safe retry
            log.exception("%s: subscription sync failed", conn.conn_id)
            conn._cut_session(f"subscription sync failed: {exc!r}", ERROR)

    async def sync(self, ws: WebSocket) -> None:
        """Unsubscribe the topics no longer desired, then subscribe the new ones (invalid ones fail at once)."""
        conn = self._conn
        for frame in self.frames("unsubscribe", self._forget_gone()):
            await self.send(ws, frame.text)
        new = self._validated()
        if new and not conn._stopping:
            conn._state = "subscribing"
        try:
            frames = self.frames("subscribe", new)
        except AdapterError as exc:  # private: credentials that cannot sign (Gate without a uid); public: a bug
            if conn.private is None:
                raise
            for topic in new:
                self.topics[str(topic)] = topic
                self.mark(str(topic), FAILED, str(exc))
            frames, new = [], []
        if conn.private is not None:  # no frame for it (Binance user data): the socket itself serves the topic
            framed = {name for frame in frames for name in frame.topics}
            for topic in new:
                if (name := str(topic)) not in framed and name in conn._desired:
                    self.topics[name] = topic
                    self.mark(name, ACTIVE)
        for frame in frames:
            if conn._stopping:
                return
            for name in frame.topics:
                self.topics[name] = conn._desired.get(name) or Topic.parse(name)
                self.mark(name, PENDING)
            await self.send(ws, frame.text)

    def _forget_gone(self) -> list[Topic]:
        """Drop the live topics no longer desired; returns those to unsubscribe (not the failed ones)."""
        desired, live = self._conn._desired, self.live
        gone = [n for n in live if n not in desired]
        unsub = [self.topics[n] for n in gone if live[n] != FAILED]
        for name in gone:
            self.counts[live.pop(name)] -= 1
            self.topics.pop(name)
        return unsub

    def _validated(self) -> list[Topic]:
        """Desired topics not live yet that the adapter accepts; the others are marked failed with its reason."""
        new: list[Topic] = []
        for name, topic in list(self._conn._desired.items()):
            if name in self.live:
                continue
            try:
                self._conn.adapter.validate(topic)
                new.append(topic)
            except AdapterError as exc:
                self.topics[name] = topic
                self.mark(name, FAILED, str(exc))
        return new

    def live_topics(self) -> list[Topic]:
        """The topics to unsubscribe on a graceful stop (all live ones but the failed)."""
        return [self.topics[n] for n, st in self.live.items() if st != FAILED]

    def frames(self, action: str, topics: list[Topic]) -> list[OutFrame]:
        """Build the ``action`` frames for ``topics`` and remember their request ids (for the acks)."""
        if not topics:
            return []
        conn = self._conn
        adapter = conn.adapter
        build = adapter.subscribe_frames if action == "subscribe" else adapter.unsubscribe_frames
        now_ms = int(conn.clock() * 1000)
        if conn.private is None:
            frames = build(topics, conn.settings.subscribe_batch, self._next_request_id, now_ms=now_ms)
        else:  # Gate signs every private subscribe (exchanges.md §2.3a); the others ignore creds
            frames = build(topics, conn.settings.subscribe_batch, self._next_request_id, now_ms=now_ms,
                           creds=conn.private.creds)  # fmt: skip
        for frame in frames:
            if frame.request_id is not None:
                self.requests[frame.request_id] = (action, frame.topics)
                self._next_request_id = max(self._next_request_id, frame.request_id + 1)
        return frames

    async def send(self, ws: WebSocket, text: str) -> None:
        """Send one frame at least ``max(SUBSCRIBE_DELAY_MS, adapter.min_send_interval_ms)`` after the last."""
        async with self._send_lock:
            loop = asyncio.get_running_loop()
            wait = self._last_send + self._gap_s - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)  # pacing, not synchronisation
            await ws.send_str(text)
            self._last_send = loop.time()

    async def send_on_socket(self, text: str) -> None:
        """Send ``text`` on the current socket (paced); dropped when there is none (the book keeper's resyncs)."""
        ws = self._conn._ws
        if ws is not None and not ws.closed:
            await self.send(ws, text)

    def on_acks(self, acks: list[Ack]) -> None:
        """Apply the acks of one frame to the live topics."""
        for ack in acks:
            action, names = self._request_of(ack)
            if action == "subscribe":
                for name in names:
                    if self.live.get(name) == PENDING:
                        self.mark(name, ACTIVE if ack.ok else FAILED, ack.error)
            if not ack.ok:
                self._conn._log_limited("%s %s failed: %s", action or "request", ",".join(names), ack.error)
        if self.counts[PENDING] == 0 and self._conn._state == "subscribing":
            self._conn._state = "open"

    def _request_of(self, ack: Ack) -> tuple[str, tuple[str, ...]]:
        """``(action, topics)`` an ack answers."""
        if ack.request_id is not None:  # Binance: the id says what was asked (binance_usdm.md §4)
            return self.requests.pop(ack.request_id, ("", ()))
        if ack.channel is not None and ack.topic is None:  # Gate without id or payload: by channel, in order
            request_id = match_request(ack, self.requests)
            return self.requests.pop(request_id) if request_id is not None else (ack.action, ())
        return ack.action, ((ack.topic,) if ack.topic else ())  # BitMart: one ack per topic (exchanges.md §1.4)

    def mark(self, name: str, state: str, error: str | None = None) -> None:
        """Set ``name``'s state on this socket and write its state record (an active topic's gap timer starts)."""
        conn = self._conn
        old = self.live.get(name)
        if old is not None:
            self.counts[old] -= 1
        self.live[name] = state
        self.counts[state] += 1
        if state == ACTIVE and self.counts[ACTIVE] == 1:
            conn.liveness.active_at = asyncio.get_running_loop().time()  # the silent-feed clock starts now
        if name in conn._desired:
            if conn.private is not None:
                error = conn.private.scrub(error)
            now_ms = int(conn.clock() * 1000)
            record: dict[str, Any] = {"state": state, "error": error, "since": now_ms, "conn": conn.conn_id}
            cont = conn.continuity
            cont.set_state(name, record)
            if state == FAILED and name in cont.pending:  # not flowing again: its state says so, no gap to close
                cont.drop_gap(name)
            if state == ACTIVE:
                if conn.private is not None:
                    conn.private.want_snapshot(name)
                cont.on_active(name, now_ms)
        if old == PENDING or state == PENDING:
            conn._check_ready()
