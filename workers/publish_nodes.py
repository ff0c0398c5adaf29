"""The split-mode writer of one publisher batch: events on the events Redis (one script per node), control state
on the control Redis. ``workers.publisher`` uses it in place of its one-Redis script when ``EVENTS_REDIS_URL`` names
another Redis than ``REDIS_URL`` (``Settings.events_split``); the publisher's queue, retries, gap events and
accounting stay the same.

One batch, one attempt (``SplitWriter.write``):

1. Control Redis, one script (``workers.fence.Fence.tokens``): the fence token of each connection of the batch
   whose lease is ours (0: not ours, its events are fenced here), the batch's ``fp:subs`` state records and its
   topics' ``fp:topic:last_event`` times (both only for connections whose lease is ours). The times are thus
   written just before the events: a batch an events node then fences or cannot write leaves them ahead.
2. Events Redis: the events grouped by the master serving their topic's slot; per node one pipelined round trip,
   ``EVALSHA`` of ``workers.publish_split_script.NODE_SCRIPT`` and, when ``min_replicas`` > 0, ``WAIT min_replicas
   wait_timeout_ms``; all nodes concurrently.

Exactly once per node: each node records the batch number and outcome under ``fp:batch:{tag}:{publisher}`` in the
same atomic run as its writes. When any node fails transiently (connection lost, ``MOVED``/``ASK``/``TRYAGAIN``/
``CLUSTERDOWN``, ``READONLY``, a slot that moved, a ``WAIT`` not confirmed) the attempt raises ``NodesNotWritten``
(a ``ConnectionError``: the publisher resends the whole batch with backoff); the slot map is re-read before the
resend and the events regrouped; nodes that recorded the batch reply with the recorded outcome and write nothing.

Replicated before counted (``min_replicas``): Redis replicates asynchronously, so a batch a master acknowledged can
vanish when the master dies and its replica takes over. A node's part counts as written only once ``WAIT`` says
``min_replicas`` replicas have it. An unconfirmed part is resent: if the replica got it, the batch record came with
it (script effects replicate atomically) and nothing is written twice; if not, it is written again, once. When a
node cannot confirm for ``confirm_within_s`` (no replica left), its writes are accepted unconfirmed and counted in
``unreplicated`` (events); meanwhile each of its batches asks ``ROLE`` instead of ``WAIT``, and once the node lists
``min_replicas`` replicas again its writes wait for confirmation again (no periodic stall while it has none).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import AskError, ClusterError, NoScriptError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError

from control import keys
from control.events_redis import EventsRedis
from workers.event_nodes import EventNodes, Node
from workers.fence import Fence
from workers.publish_script import Item, is_transient
from workers.publish_split_script import NODE_SCRIPT, NodeBatch

log = logging.getLogger(__name__)

#: Errors of a node that mean "the slot map changed or the cluster is between states": resend after a refresh.
_CLUSTER_TRANSIENT = (AskError, TryAgainError, ClusterError, KeyError)


class NodesNotWritten(RedisConnectionError):
    """Some events node did not (or not verifiably) take its part of a batch; the batch is resent whole."""


class _Batch:
    """One batch as handed over by the publisher (kept across its resends)."""

    __slots__ = ("announce", "conns", "items", "last_event", "number", "states", "unconfirmed_since")

    def __init__(self, announce: list[tuple[str, str | None, bytes]], batch: list[Item],
                 states: dict[str, tuple[bytes, str | None]], number: int) -> None:  # fmt: skip
        self.number = number
        #: Gap events ``(topic, connection or None, payload)``, then the queued events: numbered 1.. in that order.
        self.announce, self.items = announce, batch
        conns: dict[str, None] = {}
        for _, conn, _ in announce:
            if conn is not None:
                conns.setdefault(conn)
        #: topic -> (ts_received ms of its last event in the batch, its connection)
        last: dict[str, tuple[int, str | None]] = {}
        for topic, _, ts, conn, _ in batch:
            if ts is not None:
                last[topic] = (ts, conn)
            if conn is not None and conn not in conns:
                conns[conn] = None
        self.last_event = [(topic, ts, conn) for topic, (ts, conn) in last.items()]
        self.states = [(topic, record, conn) for topic, (record, conn) in states.items()]
        for _, _, conn in self.states:
            if conn is not None:
                conns.setdefault(conn)
        self.conns = list(conns)
        self.unconfirmed_since: float | None = None


class SplitWriter:
    """Writes publisher batches in split mode (module docstring). Stands in for the publisher's script: ``build``
    takes what ``workers.publish_script.ScriptArgs.build`` takes, and awaiting the writer with what it returned
    answers like ``PUBLISH_SCRIPT`` (``[n_failed, first_error, n_fenced, [fenced connection indexes],
    [lost event numbers]]``, a sixth element when some node had already recorded the batch).

    :param control: bytes client of the control Redis. :param events: client of the events Redis
        (``make_events_redis(url, decode=False)``). :param owner: the worker id (b"" turns fencing off).
    :param publisher: the publisher instance id. :param min_replicas: ``WAIT`` for this many replicas (0: off).
    """

    def __init__(self, control: Redis, events: EventsRedis, *, stream_maxlen: int, owner: bytes, publisher: str,
                 min_replicas: int = 0, wait_timeout_ms: int = 500, confirm_within_s: float = 5.0) -> None:  # fmt: skip
        self.control = control
        self.nodes = EventNodes(events)
        self.fence = Fence(control, self.nodes)
        self.stream_maxlen, self.owner, self.publisher = stream_maxlen, owner, publisher
        self.min_replicas, self.wait_timeout_ms = min_replicas, wait_timeout_ms
        self.confirm_within_s = confirm_within_s
        self._sha: str | None = None
        #: Nodes whose writes are accepted without replica confirmation until ``ROLE`` lists enough replicas.
        self._degraded: set[str] = set()
        #: Events accepted without the replica confirmation ``min_replicas`` asks for (see the module docstring).
        self.unreplicated = 0
        #: Attempts that failed on some node and were resent (slot map re-read), and WAITs that fell short.
        self.node_retries = 0
        self.unconfirmed = 0

    def build(self, announce: list[tuple[str, str | None, bytes]], batch: list[Item],
              states: dict[str, tuple[bytes, str | None]], number: int) -> tuple[list[Any], list[Any], list[str]]:  # fmt: skip
        """Prepare batch ``number``; returns ``([batch], [], connection ids in index order)`` for ``__call__``."""
        prepared = _Batch(announce, batch, states, number)
        return [prepared], [], prepared.conns

    async def __call__(self, keys: Sequence[Any], args: Sequence[Any]) -> list[Any]:
        """Write the batch ``build`` prepared (``keys[0]``); see ``write``."""
        return await self.write(keys[0])

    async def write(self, batch: _Batch) -> list[Any]:
        """One attempt at ``batch``; the script-like reply (class docstring). Raises ``NodesNotWritten`` (resend),
        another transient error (``workers.publish_script.is_transient``: resend) or an error resending would repeat
        (the batch is then lost and announced by the publisher)."""
        tokens = await self.fence.tokens(self.owner, batch.conns, batch.states, batch.last_event)
        try:
            nodes = await self.nodes.ready()
        except Exception as exc:
            self.nodes.invalidate()
            raise NodesNotWritten(f"events nodes unknown: {type(exc).__name__}: {exc}") from exc
        by_name = {n.name: n for n in nodes}
        groups: dict[str, NodeBatch] = {}
        slot_of: dict[tuple[str, str | None], tuple[NodeBatch, int]] = {}  # (topic, conn) -> its group and slot
        fenced_here: set[str] = set()
        fenced = 0

        def place(topic: str, conn: str | None) -> tuple[NodeBatch, int]:
            try:
                name = self.nodes.node_of(topic)
                by_name[name]
            except (KeyError, IndexError) as exc:
                self.nodes.invalidate()
                raise NodesNotWritten(f"no known events node serves {topic}") from exc
            group = groups.get(name)
            if group is None:
                group = groups[name] = NodeBatch()
            hit = slot_of[(topic, conn)] = (group, group.slot(topic, conn))
            return hit

        for number, (topic, conn, payload) in enumerate(batch.announce, 1):
            if conn is not None and not tokens.get(conn):
                fenced += 1
                fenced_here.add(conn)
                continue
            group, slot = slot_of.get((topic, conn)) or place(topic, conn)
            group.add(slot, payload, number)
        for number, (topic, payload, _, conn, _) in enumerate(batch.items, len(batch.announce) + 1):  # hot: inlined
            if conn is not None and not tokens.get(conn):
                fenced += 1
                fenced_here.add(conn)
                continue
            hit = slot_of.get((topic, conn))
            if hit is None:
                hit = place(topic, conn)
            group, slot = hit
            events = group.events
            events.append(slot)
            events.append(payload)
            group.numbers.append(number)
        names = list(groups)
        replies = await asyncio.gather(*(self._send(by_name[n], groups[n], batch.number, tokens) for n in names),
                                       return_exceptions=True)  # fmt: skip
        return await self._combine(batch, [(by_name[n], groups[n]) for n in names], replies, fenced, fenced_here)

    async def _send(self, node: Node, group: NodeBatch, number: int, tokens: dict[str, int]) -> tuple[Any, int | None]:
        """EVALSHA (+ WAIT) on ``node``; returns ``(script reply, replicas confirmed or None without WAIT)``."""
        args = group.argv(self.stream_maxlen, number, self.nodes.cluster is not None, node.tag, tokens)
        record = keys.node_batch(node.tag, self.publisher).encode()
        wait = self.min_replicas > 0 and node.name not in self._degraded
        probe = self.min_replicas > 0 and not wait
        for _ in range(2):
            if self._sha is None:
                self._sha = await node.client.script_load(NODE_SCRIPT)
            async with node.client.pipeline(transaction=False) as pipe:
                pipe.execute_command("EVALSHA", self._sha, 1, record, *args)
                if wait:
                    pipe.execute_command("WAIT", self.min_replicas, self.wait_timeout_ms)
                elif probe:
                    pipe.execute_command("ROLE")
                out = await pipe.execute(raise_on_error=False)
            if isinstance(out[0], NoScriptError):  # a node that never saw it (a promoted replica, a restart)
                await node.client.script_load(NODE_SCRIPT)
                continue
            if isinstance(out[0], BaseException):
                raise out[0]
            if probe and _replicas_listed(out[1]) >= self.min_replicas:
                self._degraded.discard(node.name)  # replicas are back: the next batch waits for them again
                log.info("events node %s lists %d replicas again; writes wait for confirmation", node.name,
                         _replicas_listed(out[1]))  # fmt: skip
            if not wait:
                return out[0], None
            return out[0], 0 if isinstance(out[1], BaseException) else int(out[1])  # a failed WAIT confirms nothing
        raise NodesNotWritten(f"script not loadable on {node.name}")

    async def _combine(self, batch: _Batch, sent: list[tuple[Node, NodeBatch]], replies: list[Any], fenced: int,
                       fenced_conns: set[str]) -> list[Any]:  # fmt: skip
        """Merge the nodes' replies into one script-like reply; raise when some node must be tried again."""
        retry: list[str] = []
        refused: BaseException | None = None
        now = time.monotonic()
        short: list[tuple[Node, NodeBatch]] = []
        for (node, group), reply in zip(sent, replies, strict=True):
            if isinstance(reply, BaseException):
                if is_transient(reply) or isinstance(reply, _CLUSTER_TRANSIENT):
                    retry.append(f"{node.name}: {type(reply).__name__}: {reply}")
                elif refused is None:
                    refused = reply
                continue
            confirmed = reply[1]
            if confirmed is not None and confirmed < self.min_replicas:
                short.append((node, group))
        if refused is not None and not retry:
            raise refused
        if short:
            self.unconfirmed += 1
            if batch.unconfirmed_since is None:
                batch.unconfirmed_since = now
            if now - batch.unconfirmed_since < self.confirm_within_s:
                retry.extend(f"{node.name}: WAIT confirmed fewer than {self.min_replicas} replicas" for node, _ in short)
            else:
                for node, _ in short:
                    self._degraded.add(node.name)
                    log.warning("events node %s: no replica confirmed a batch for %.1f s; accepting writes "
                                "unconfirmed until it lists %d replicas again", node.name,
                                now - batch.unconfirmed_since, self.min_replicas)  # fmt: skip
        if retry:
            self.node_retries += 1
            self.nodes.invalidate()
            raise NodesNotWritten("; ".join(retry))
        if self.min_replicas > 0:
            self.unreplicated += sum(len(g.numbers) for (_, g), r in zip(sent, replies, strict=True)
                                     if r[1] is None or r[1] < self.min_replicas)  # fmt: skip
        failed, first, resend = 0, "", False
        lost: list[int] = []
        conn_index = {c: i + 1 for i, c in enumerate(batch.conns)}
        for (_, group), reply in zip(sent, replies, strict=True):
            script = reply[0]
            failed += int(script[0])
            if script[1] and not first:
                first = script[1]
            fenced += int(script[2])
            local_conns = list(group.conns)
            fenced_conns.update(local_conns[int(i) - 1] for i in script[3])
            lost.extend(group.numbers[int(n) - 1] for n in script[4])
            resend = resend or len(script) > 5
        lost.sort()
        out = [failed, first, fenced, [conn_index[c] for c in fenced_conns], lost]
        return [*out, 1] if resend else out

    @property
    def stats(self) -> dict[str, int]:
        """``unreplicated`` events, ``node_retries`` (attempts resent), ``unconfirmed`` (WAITs that fell short)."""
        return {"unreplicated": self.unreplicated, "node_retries": self.node_retries, "unconfirmed": self.unconfirmed}

    async def aclose(self) -> None:
        """Close the per-node clients and the events client (not the control client)."""
        await self.nodes.aclose()
        await self.nodes.events.aclose()


def _replicas_listed(role: Any) -> int:
    """Replicas a master's ``ROLE`` reply lists (``[b"master", offset, [[host, port, offset], ...]]``); 0 for
    anything else (an error, a replica's reply)."""
    if isinstance(role, list) and len(role) >= 3 and role[0] in (b"master", "master") and isinstance(role[2], list):
        return len(role[2])
    return 0
