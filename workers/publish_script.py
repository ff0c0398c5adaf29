"""The publisher's Lua script, and which Redis errors mean "resend the batch later" rather than "lost".

One batch = one EVALSHA of ``PUBLISH_SCRIPT``. Packing one command per event in redis-py costs ~20 us of Python
per event (44k events/s measured); the same work done by Redis inside a script ran at ~220k events/s.

Layout. A *slot* is one (topic, connection) pair of the batch; connection index 0 means "not fenced".

- KEYS: ``[fp:topic:last_event, fp:subs, fp:batch:{publisher}, lease key per connection (n_conns), then per
  slot: stream, pub/sub channel, latest key]``
- ARGV: ``[maxlen, n_events, n_ts, n_states, n_conns, n_slots, owner, batch number, connection index per slot,
  (slot 0-based, payload) * n_events, (topic, ts ms, slot) * n_ts, (topic, state json, conn index) * n_states]``
- Reply: ``[n_failed, first_error or '', n_fenced, [fenced connection indexes], [lost event numbers]]``;
  event numbers are 1-based positions among the batch's events. A sixth element ``1`` marks a resend.

Exactly once per batch. The script ends by recording the batch's number and outcome in ``fp:batch:{publisher}``
(one key per publisher instance, 1-day TTL), in the same atomic run as the writes. A batch whose number is
already there was written by an earlier run whose reply was lost with the connection: the script writes nothing
and replies with the recorded outcome (and the resend mark), so a resend never duplicates an event, and a
failover or restart that lost the batch loses the record with it (the batch is then written again).

Per event, in order: ``XADD`` to its stream, then ``PUBLISH`` and (once per key) ``SET`` latest, both only when
the XADD succeeded. An event whose XADD failed (a stream key of the wrong type, a stream whose last id is in
the future) is *lost*: its number is returned so the publisher announces it in a ``gap`` event. A failed
PUBLISH, SET or HSET is counted (``n_failed``) but loses nothing: the event is in its stream. A topic's
``fp:topic:last_event`` time is set only when one of its events of the batch was written.

Redis unable to take writes right now (``TRANSIENT_CODES``: a replica, a data set still loading, a replica
cut off from its master, out of memory, ...) rejects the first write of the script. The script then stops
with that error before anything is written, so the client can resend the whole batch without writing
anything twice. Redis 7 rejects some of these before the script even starts (``LOADING``, ``MASTERDOWN``);
either way the client sees one error reply and ``is_transient`` classifies it. (A ``#!lua`` shebang would
make Redis do all of these checks up front, but the embedded fakeredis fallback cannot parse it.)
"""

from __future__ import annotations

from typing import Any

import hiredis
from redis.asyncio import Redis
from redis.exceptions import BusyLoadingError, OutOfMemoryError, ReadOnlyError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from control import keys

#: Error codes (the first word of a Redis error reply) of a server that cannot take writes *now* and will
#: again: a demoted master or a replica (READONLY), a restart loading its data (LOADING), a replica cut off
#: from its master (MASTERDOWN), a cluster resharding or down (TRYAGAIN, CLUSTERDOWN), a long script running
#: (BUSY), too few replicas for min-replicas-to-write (NOREPLICAS), maxmemory reached (OOM).
TRANSIENT_CODES = frozenset(
    {"READONLY", "LOADING", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN", "BUSY", "NOREPLICAS", "OOM"}
)
#: Exceptions after which the same batch is sent again (the server did not, or may not, have written it).
#: redis-py raises LOADING as BusyLoadingError, a ConnectionError.
CONNECTIVITY = (RedisConnectionError, RedisTimeoutError, OSError)
#: redis-py strips the code from these replies and names it by the exception class instead.
_TRANSIENT_CLASSES = (ReadOnlyError, OutOfMemoryError, BusyLoadingError)


def is_transient(exc: BaseException) -> bool:
    """True when the batch that raised ``exc`` must be sent again later: a connection problem, or Redis answering
    with one of ``TRANSIENT_CODES``. False for an error that resending would repeat (the batch is then lost and
    announced)."""
    if isinstance(exc, CONNECTIVITY + _TRANSIENT_CLASSES):
        return True
    if isinstance(exc, ResponseError):
        return str(exc).split(" ", 1)[0] in TRANSIENT_CODES
    return False


#: Argument types ``hiredis.pack_command`` encodes exactly as redis-py's ``Encoder`` does (``bool``, ``float`` and
#: ``memoryview`` are left to redis-py: it refuses a bool and formats floats with ``repr``).
_PLAIN_ARGS = frozenset({bytes, str, int})


class _HiredisPacking:
    """Connection mixin: RESP-encode a command with ``hiredis.pack_command`` (C) instead of redis-py's asyncio
    ``pack_command`` (Python, per argument). A batch's EVALSHA carries ~2 arguments per event, and packing them
    was ~10% of a saturated worker's CPU (py-spy, README "Benchmark"); the bytes sent are identical
    (``tests/workers/test_publish_packing.py``). Commands with any other argument type go the redis-py way."""

    def pack_command(self, *args: Any) -> list[bytes]:
        name = args[0] if args else None
        if type(name) is str and " " not in name and all(type(a) in _PLAIN_ARGS for a in args):
            return [hiredis.pack_command(args)]
        return super().pack_command(*args)  # type: ignore[misc, no-any-return]


def use_hiredis_packing(redis: Redis) -> None:
    """Make the connections ``redis``'s pool opens from now on pack commands with hiredis (``_HiredisPacking``);
    idempotent; a client without a connection pool of its own is left as it is."""
    pool = getattr(redis, "connection_pool", None)
    cls = getattr(pool, "connection_class", None)
    if pool is None or not isinstance(cls, type) or issubclass(cls, _HiredisPacking):
        return
    pool.connection_class = type(f"HiredisPacking{cls.__name__}", (_HiredisPacking, cls), {})


_CODES_LUA = ", ".join(f"{code}=true" for code in sorted(TRANSIENT_CODES))

PUBLISH_SCRIPT = (
    """
local maxlen, n_events = ARGV[1], tonumber(ARGV[2])
local n_ts, n_states = tonumber(ARGV[3]), tonumber(ARGV[4])
local n_conns, n_slots, owner, batch = tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7], ARGV[8]
local field = '"""
    + keys.STREAM_FIELD
    + """'
local transient = {"""
    + _CODES_LUA
    + """}
local failed, first, wrote = 0, nil, false
-- An error reply: counted; when Redis cannot take writes now and nothing is written yet, the script stops
-- with it (the client resends the batch).
local function failure(r)
  -- (fakeredis, the embedded fallback, hands err over as userdata: never transient there)
  if not wrote and type(r.err) == 'string' and transient[string.match(r.err, '^%u+')] then
    error(r)
  end
  failed = failed + 1
  first = first or r.err
end
local function write(...)
  local r = redis.pcall(...)
  if type(r) == 'table' and r.err then
    failure(r)
    return false
  end
  wrote = true
  return true
end
local function ints(text)
  local out = {}
  for n in string.gmatch(text, '%d+') do out[#out + 1] = tonumber(n) end
  return out
end
local done = redis.pcall('GET', KEYS[3])
if type(done) == 'table' and done.err then
  failure(done)
elseif type(done) == 'string' then
  local b, f, cs, ls = string.match(done, '^(%d+) (%d+) ([%d,]*) ([%d,]*)$')
  if b == batch then
    return {0, '', tonumber(f), ints(cs), ints(ls), 1}
  end
end
local held, fenced_conns = {}, {}
for c = 1, n_conns do
  local v = redis.pcall('GET', KEYS[3 + c])
  if type(v) == 'table' and v.err then
    failure(v)
    held[c] = false
  else
    held[c] = v == owner
  end
  if not held[c] then fenced_conns[#fenced_conns + 1] = c end
end
local a = 9
local ok = {}
for s = 0, n_slots - 1 do
  local c = tonumber(ARGV[a])
  ok[s] = c == 0 or held[c]
  a = a + 1
end
local key0 = 3 + n_conns
local last, written = {}, {}
local fenced, lost = 0, {}
for e = 1, n_events do
  local s = tonumber(ARGV[a])
  if ok[s] then
    local base = key0 + s * 3
    local payload = ARGV[a + 1]
    if write('XADD', KEYS[base + 1], 'MAXLEN', '~', maxlen, '*', field, payload) then
      local r = redis.pcall('PUBLISH', KEYS[base + 2], payload)
      if type(r) == 'table' and r.err then failure(r) end
      last[KEYS[base + 3]] = payload
      written[s] = true
    else
      lost[#lost + 1] = e
    end
  else
    fenced = fenced + 1
  end
  a = a + 2
end
for key, payload in pairs(last) do
  write('SET', key, payload)
end
for _ = 1, n_ts do
  if written[tonumber(ARGV[a + 2])] then
    write('HSET', KEYS[1], ARGV[a], ARGV[a + 1])
  end
  a = a + 3
end
for _ = 1, n_states do
  local c = tonumber(ARGV[a + 2])
  if c == 0 or held[c] then
    write('HSET', KEYS[2], ARGV[a], ARGV[a + 1])
  end
  a = a + 3
end
local outcome = table.concat(fenced_conns, ',') .. ' ' .. table.concat(lost, ',')
write('SET', KEYS[3], batch .. ' ' .. fenced .. ' ' .. outcome, 'EX', 86400)
return {failed, first or '', fenced, fenced_conns, lost}
"""
)


#: One queued event: (topic, payload serialized once, ts_received ms or None, connection id or None,
#: time.monotonic() at publish). A plain tuple: it is built on the hot path.
Item = tuple[str, bytes, int | None, str | None, float]

_LAST_EVENT_KEY = keys.TOPIC_LAST_EVENT.encode()
_SUB_STATE_KEY = keys.SUB_STATE.encode()


class ScriptArgs:
    """Builds the KEYS and ARGV of ``PUBLISH_SCRIPT`` (layout in the module docstring); keeps the encoded key
    names of recent topics and connections (up to 100,000 each) so a batch encodes nothing twice.

    :param stream_maxlen: ``MAXLEN ~`` of every stream; :param owner: this worker's id (b"" turns fencing off);
    :param publisher: this publisher instance's id (``fp:batch:{publisher}``).
    """

    def __init__(self, stream_maxlen: int, owner: bytes, publisher: str) -> None:
        self.stream_maxlen = stream_maxlen
        self.owner = owner
        self.batch_key = keys.publisher_batch(publisher).encode()
        self._keys: dict[str, tuple[bytes, bytes, bytes]] = {}
        self._lease_keys: dict[str, bytes] = {}

    def build(
        self,
        gaps: list[tuple[str, str | None, bytes]],
        batch: list[Item],
        states: dict[str, tuple[bytes, str | None]],
        number: int,
    ) -> tuple[list[bytes], list[Any], list[str]]:
        """KEYS and ARGV for one batch (``number``: counts this publisher's batches from 1), and the connection
        ids in index order (index i + 1).

        ``gaps``: gap events to write first, ``(topic, connection or None, payload)``; ``batch``: the queued
        events; ``states``: ``topic -> (state record json, connection or None)`` for ``HSET fp:subs``.
        """
        key_cache = self._keys
        conn_index: dict[str, int] = {}
        slot: dict[tuple[str, str | None], int] = {}
        slot_keys: list[bytes] = []
        slot_conn: list[int] = []
        events: list[bytes | int] = []
        last_ts: dict[str, tuple[int, int]] = {}

        def new_slot(topic: str, conn: str | None) -> int:
            k = key_cache.get(topic)
            if k is None:
                if len(key_cache) > 100_000:
                    key_cache.clear()
                k = key_cache[topic] = (
                    keys.event_stream(topic).encode(),
                    keys.event_channel(topic).encode(),
                    keys.latest(topic).encode(),
                )
            slot_keys.extend(k)
            if conn is None:
                slot_conn.append(0)
            else:
                slot_conn.append(conn_index.setdefault(conn, len(conn_index) + 1))
            index = slot[(topic, conn)] = len(slot_conn) - 1
            return index

        for topic, conn, payload in gaps:
            index = slot.get((topic, conn))
            if index is None:
                index = new_slot(topic, conn)
            events.append(index)
            events.append(payload)
        for topic, payload, ts, conn, _ in batch:
            index = slot.get((topic, conn))
            if index is None:
                index = new_slot(topic, conn)
            events.append(index)
            events.append(payload)
            if ts is not None:
                last_ts[topic] = (ts, index)
        state_args: list[bytes | int | str] = []
        for topic, (record, conn) in states.items():
            state_args.append(topic)
            state_args.append(record)
            state_args.append(0 if conn is None else conn_index.setdefault(conn, len(conn_index) + 1))
        lease_cache = self._lease_keys
        lease_keys = []
        for conn in conn_index:  # insertion order == index order
            k2 = lease_cache.get(conn)
            if k2 is None:
                if len(lease_cache) > 100_000:
                    lease_cache.clear()
                k2 = lease_cache[conn] = keys.lease(conn).encode()
            lease_keys.append(k2)
        script_keys: list[bytes] = [_LAST_EVENT_KEY, _SUB_STATE_KEY, self.batch_key, *lease_keys, *slot_keys]
        args: list[Any] = [self.stream_maxlen, len(events) // 2, len(last_ts), len(states), len(conn_index),
                           len(slot_conn), self.owner, number, *slot_conn, *events]  # fmt: skip
        for topic, (ts, index) in last_ts.items():
            args.append(topic)
            args.append(ts)
            args.append(index)
        args.extend(state_args)
        return script_keys, args, list(conn_index)
