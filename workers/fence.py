"""Fence tokens: fencing a worker that lost a lease when the events live on another Redis (split mode).

With one Redis the publisher's script reads each connection's lease next to its writes (``workers.publisher``).
With ``EVENTS_REDIS_URL`` set the events nodes cannot see the leases, so each lease holding gets a number:

- ``fp:fence`` (control Redis, hash) maps a connection id to ``"<token> <worker id>"``: the token of the worker that
  holds its lease. ``tokens()`` runs one script per batch on the control Redis: for each connection of the batch
  whose lease this worker holds it returns the recorded token, or, when the record names another worker (or none),
  a new one (``INCR fp:fence:seq``) it records; 0 for a connection whose lease is not ours (its events are fenced
  right there). The same script writes the batch's ``fp:subs`` state records and ``fp:topic:last_event`` times,
  each only while its connection's lease is ours (as the one-Redis script does; the times just before the
  events are written, which saves a round trip per batch). A token is thus taken at the first batch (or handover) after a lease
  acquisition, transfer, suspend re-acquisition or adoption, and it grows with every change of holder.
- Each events node keeps ``fp:fence:{tag}:{conn}``, the highest token it has seen (``workers.publish_split_script``):
  events carrying a lower token are fenced there, counted and reported like lease fencing.
- ``push()``: a handover taker, right after its lease compare-and-set and before it reads the stream markers
  (``workers.handover``), raises the stored token of the connection on every events node, so the old owner's
  batches still in flight are fenced from that instant on (the same guarantee as the one-Redis lease check).

Tokens are never reused (one counter), so a worker that lost a lease and got it back after another holder wrote
gets a higher token than that holder's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from control import keys
from workers.event_nodes import EventNodes

_TOKENS_LUA = """
local owner, n, n_states = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local tokens = {}
for c = 1, n do
  local conn = ARGV[3 + c]
  tokens[c] = 0
  if owner ~= '' and redis.call('GET', KEYS[4 + c]) == owner then
    local rec = redis.call('HGET', KEYS[1], conn)
    local token, who = nil, nil
    if rec then token, who = string.match(rec, '^(%d+) (.*)$') end
    if who ~= owner then
      token = tostring(redis.call('INCR', KEYS[2]))
      redis.call('HSET', KEYS[1], conn, token .. ' ' .. owner)
    end
    tokens[c] = tonumber(token)
  end
end
local a = 4 + n
for i = 1, n_states do
  local c = tonumber(ARGV[a + 2])
  if c == 0 or tokens[c] > 0 then redis.call('HSET', KEYS[3], ARGV[a], ARGV[a + 1]) end
  a = a + 3
end
while a + 2 <= #ARGV do
  local c = tonumber(ARGV[a + 2])
  if c == 0 or tokens[c] > 0 then redis.call('HSET', KEYS[4], ARGV[a], ARGV[a + 1]) end
  a = a + 3
end
return tokens
"""

_PUSH_LUA = """
local seen = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > seen then redis.call('SET', KEYS[1], ARGV[1], 'EX', 86400) end
return seen
"""


class Fence:
    """Fence tokens on the control Redis and their pushes to the events nodes (module docstring).

    :param control: a control Redis client (bytes or text). :param nodes: the events nodes.
    Calls raise ``redis.exceptions.RedisError`` on Redis trouble.
    """

    def __init__(self, control: Redis, nodes: EventNodes) -> None:
        self.control = control
        self.nodes = nodes
        self._tokens = control.register_script(_TOKENS_LUA)

    async def tokens(self, owner: bytes | str, conns: Sequence[str], states: Sequence[tuple[str, bytes, str | None]] = (),
                     last_event: Sequence[tuple[str, int, str | None]] = ()) -> dict[str, int]:  # fmt: skip
        """``conn -> token`` for ``conns`` (0: the lease is not ``owner``'s); writes ``states`` (``(topic, record
        json, connection or None)``) to ``fp:subs`` and ``last_event`` (``(topic, ts ms, connection or None)``) to
        ``fp:topic:last_event``, each only while its connection is ``owner``'s."""
        if not conns and not states and not last_event:
            return {}
        index = {c: i + 1 for i, c in enumerate(conns)}
        args: list[bytes | str | int] = [owner, len(conns), len(states), *conns]
        for topic, record, conn in states:
            args.extend((topic, record, 0 if conn is None else index[conn]))
        for topic, ts, conn in last_event:
            args.extend((topic, ts, 0 if conn is None else index[conn]))
        lease_keys = [keys.lease(c) for c in conns]
        reply = await self._tokens(keys=[keys.FENCE_TOKENS, keys.FENCE_SEQ, keys.SUB_STATE, keys.TOPIC_LAST_EVENT,
                                         *lease_keys], args=args)  # fmt: skip
        return {c: int(t) for c, t in zip(conns, reply, strict=True)}

    async def push(self, conn_id: str, owner: str) -> int:
        """Raise ``conn_id``'s fence on every events node to ``owner``'s token (taken now if needed); returns the
        token, 0 (nothing pushed) when the lease is not ``owner``'s. Raises RedisError when a node did not take it
        (the caller retries: the old owner is fenced only once every node has it)."""
        token = (await self.tokens(owner, [conn_id]))[conn_id]
        if token:
            await self.push_token(conn_id, token)
        return token

    async def push_token(self, conn_id: str, token: int) -> None:
        """``SET fp:fence:{tag}:{conn} token`` on every events node unless a higher token is there."""
        try:
            nodes = await self.nodes.ready()
            await asyncio.gather(*(n.client.execute_command("EVAL", _PUSH_LUA, 1, keys.node_fence(n.tag, conn_id), token)
                                   for n in nodes))  # fmt: skip
        except RedisError:
            self.nodes.invalidate()
            raise
        except Exception as exc:  # e.g. RedisClusterException: no node reachable to read the slot map from
            self.nodes.invalidate()
            raise RedisConnectionError(f"fence token not pushed: {type(exc).__name__}: {exc}") from exc

    async def seen(self, conn_id: str) -> Mapping[str, int]:
        """``node name -> highest token stored for conn_id`` (tests and diagnostics)."""
        nodes = await self.nodes.ready()
        values = await asyncio.gather(*(n.client.get(keys.node_fence(n.tag, conn_id)) for n in nodes))
        return {n.name: int(v or 0) for n, v in zip(nodes, values, strict=True)}
