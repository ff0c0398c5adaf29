"""One master node of a Redis Cluster, read for ``app.sse_cluster_reader.ClusterHub``: ``NodeReader``.

Two connections to the node: one for reads (pipelined non-blocking ``XREAD COUNT n`` per hash slot from the hub's
positions), one ``SSUBSCRIBE``d to the shard channels ``fp:pub:{T}`` of the node's topics (one command per slot:
the channels of one command must share a slot). A message marks its slot dirty and wakes the reader; every slot
is read on the safety poll (``ClusterHub.poll_s``) whatever the wakeups did. Errors mark the reader down and its
topics suspect (``ClusterHub.node_failed``); the reader retries with backoff until the hub re-homes the topics.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.connection import AbstractConnection, ConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import EqualJitterBackoff, NoBackoff

from app.sse_entries import READ_ERRORS, format_stream_id
from app.sse_hub import RECONNECT_BASE_S, RECONNECT_CAP_S
from control import keys
from control.events_redis import topic_slot

if TYPE_CHECKING:
    from app.sse_cluster_reader import ClusterHub

__all__ = ["NodeReader"]

logger = logging.getLogger(__name__)

_CHANNEL_PREFIX = len("fp:pub:{")


class NodeReader:
    """Reads the streams of the hub's topics served by one master ``node`` (module docstring). ``up`` is False
    from a failed read until the next one succeeds."""

    def __init__(self, hub: ClusterHub, node: ClusterNode) -> None:
        self.hub = hub
        self.node = node
        self.name = node.name
        self.up = True
        kwargs = {**node.connection_kwargs, "retry": Retry(NoBackoff(), 0)}  # errors surface at once
        self._kwargs = kwargs
        self.client = Redis.from_pool(ConnectionPool(connection_class=node.connection_class, **kwargs))
        self._pubsub: AbstractConnection | None = None
        self._listener: asyncio.Task[None] | None = None
        self._subscribed: dict[int, set[str]] = {}  # slot -> shard channels subscribed on ``_pubsub``
        self._leaving: set[bytes] = set()  # channels we SUNSUBSCRIBEd (their confirmation is no slot move)
        self._groups: dict[int, list[str]] = {}
        self._version = -1
        self._synced = False  # the subscription matches ``_groups``
        self._dirty: set[int] = set()
        self._wake = asyncio.Event()
        self.task = asyncio.create_task(self._run(), name=f"sse-hub-node-{self.name}")

    def wake(self, slot: int | None = None) -> None:
        """Make the reader read ``slot`` (None: re-check its topics and read every slot) now."""
        if slot is None:
            self._version = -1
        else:
            self._dirty.add(slot)
        self._wake.set()

    async def close(self) -> None:
        """Stop reading and close both connections."""
        for task in (self.task, self._listener):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        await self._drop_pubsub()
        await self.client.aclose()

    # -- loop --------------------------------------------------------------------------------------

    async def _run(self) -> None:
        hub = self.hub
        loop = asyncio.get_running_loop()
        backoff = EqualJitterBackoff(cap=RECONNECT_CAP_S, base=RECONNECT_BASE_S)
        failures = 0
        next_poll = 0.0
        while True:
            self._wake.clear()
            try:
                if self._version != hub.version:
                    self._version = hub.version
                    self._groups = hub.groups_of(self.name)
                    self._synced = False
                    next_poll = 0.0
                if not self._synced or self._pubsub is None or self._listener is None or self._listener.done():
                    await self._sync_channels()
                    self._synced = True
                if hub.suspects:
                    await hub.check_suspects(self.client, [t for ts in self._groups.values() for t in ts])
                now = loop.time()
                if now >= next_poll:
                    slots, next_poll = list(self._groups), now + hub.poll_s
                    hub.counters["polls"] += 1
                else:
                    slots = [s for s in self._dirty if s in self._groups]
                self._dirty.clear()
                full = await self._read(slots) if slots else set()
            except READ_ERRORS as exc:
                failures += 1
                self._set_up(False)
                hub.node_failed(self.name, [t for ts in self._groups.values() for t in ts])
                await self._drop_pubsub()
                log = logger.warning if failures == 1 else logger.debug
                log("sse hub: node %s read failed (%d in a row): %s: %s", self.name, failures, type(exc).__name__, exc)
                await asyncio.sleep(backoff.compute(failures - 1))
                self._version = -1
                continue
            if failures:
                logger.info("sse hub: node %s recovered after %d failures", self.name, failures)
                hub.counters["reconnects"] += 1
                failures = 0
            self._set_up(True)
            if full:
                self._dirty.update(full)
                continue
            if not self._wake.is_set():
                try:
                    async with asyncio.timeout(max(0.0, next_poll - loop.time())):
                        await self._wake.wait()
                except TimeoutError:
                    pass

    def _set_up(self, up: bool) -> None:
        if self.up != up:
            self.up = up
            self.hub.update_up()

    async def _read(self, slots: Sequence[int]) -> set[int]:
        """One pipelined XREAD per slot from the hub's positions; dispatches; returns the slots that filled a page."""
        hub, positions, count = self.hub, self.hub.positions, self.hub.count
        plan = []
        async with self.client.pipeline(transaction=False) as pipe:
            for slot in slots:
                streams = {keys.event_stream(t): format_stream_id(positions[t])
                           for t in self._groups[slot] if t in positions}  # fmt: skip
                if streams:
                    pipe.xread(streams, count=count)  # type: ignore[arg-type]
                    plan.append(slot)
            replies = await pipe.execute() if plan else []
        hub.counters["reads"] += len(plan)
        full = set()
        merged: list[Any] = []
        for slot, reply in zip(plan, replies):
            for key, raw in reply or ():
                if len(raw) >= count:
                    full.add(slot)
                merged.append((key, raw))
        if merged:
            hub.dispatch_fresh(merged)
        return full

    # -- shard channel wakeups -------------------------------------------------------------------------

    async def _sync_channels(self) -> None:
        """SSUBSCRIBE the channels of new topics (one command per slot), SUNSUBSCRIBE those of topics gone."""
        if self._listener is not None and self._listener.done():
            await self._drop_pubsub()
        if self._pubsub is None:
            conn = self.node.connection_class(**self._kwargs)
            await conn.connect()
            self._pubsub, self._subscribed, self._leaving = conn, {}, set()
            self._listener = asyncio.create_task(self._listen(conn), name=f"sse-hub-wake-{self.name}")
        want = {slot: {keys.event_channel(t) for t in topics} for slot, topics in self._groups.items()}
        for slot, channels in want.items():
            have = self._subscribed.setdefault(slot, set())
            if channels - have:
                await self._pubsub.send_command("SSUBSCRIBE", *sorted(channels - have))
            if have - channels:
                await self._unsubscribe(have - channels)
            self._subscribed[slot] = channels
        for slot in [s for s in self._subscribed if s not in want]:
            if self._subscribed[slot]:
                await self._unsubscribe(self._subscribed[slot])
            del self._subscribed[slot]

    async def _unsubscribe(self, channels: set[str]) -> None:
        assert self._pubsub is not None
        self._leaving.update(c.encode() for c in channels)
        await self._pubsub.send_command("SUNSUBSCRIBE", *sorted(channels))

    async def _listen(self, conn: AbstractConnection) -> None:
        """Read the subscription connection: a message wakes its slot; an error (``MOVED``: the slot moved, or the
        connection lost) ends the listener, and the reader opens a new subscription on its next turn."""
        hub = self.hub
        try:
            while True:
                msg = await conn.read_response(disconnect_on_error=False)
                if isinstance(msg, list) and msg and msg[0] == b"smessage":
                    hub.counters["wakeups"] += 1
                    self.wake(topic_slot(msg[1][_CHANNEL_PREFIX:-1].decode()))
                elif isinstance(msg, list) and msg and msg[0] == b"sunsubscribe" and msg[1] is not None:
                    if msg[1] in self._leaving:
                        self._leaving.discard(msg[1])
                    else:
                        hub.request_refresh()  # the server dropped us: the channel's slot moved elsewhere
        except READ_ERRORS as exc:
            logger.debug("sse hub: node %s wakeup subscription ended: %s: %s", self.name, type(exc).__name__, exc)
            hub.request_refresh()
            self.wake()

    async def _drop_pubsub(self) -> None:
        conn, self._pubsub = self._pubsub, None
        if self._listener is not None and not self._listener.done():
            self._listener.cancel()
        self._listener = None
        if conn is not None:
            await conn.disconnect(nowait=True)
