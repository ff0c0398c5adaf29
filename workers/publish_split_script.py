"""The split-mode publisher's script, run once per events node per batch (``workers.publish_nodes``).

One batch is grouped per master of the events Redis; each group is one ``EVALSHA`` of ``NODE_SCRIPT`` sent to its
node. The script starts with ``#!lua flags=allow-cross-slot-keys`` (Redis >= 7.0): on a cluster it may then touch
keys of several slots *of its node*. Only ``KEYS[1]`` is declared (the node's batch record, whose hash tag is the
node's own: the cluster routes and checks the call by it); every topic key comes in ``ARGV``. Before writing, the
script touches one key per topic (``EXISTS``): a topic whose slot moved away fails with ``TRYAGAIN`` before
anything is written (a node writing only part of a batch and then failing on a non-local key would otherwise
leave a half-written batch). The shebang also makes Redis refuse the call up front on a replica (``READONLY``), out
of memory (``OOM``) or with too few replicas (``NOREPLICAS``): nothing is written then either.

Layout (n_conns connections, n_slots (topic, connection) pairs, n_events events, all of this node):

- KEYS: ``[fp:batch:{tag}:{publisher}]``
- ARGV: ``[maxlen, n_events, n_conns, n_slots, batch number, PUBLISH|SPUBLISH, check (1 on a cluster),
  (fence key, token) * n_conns, (stream, channel, latest key, connection index or 0) * n_slots,
  (slot 0-based, payload) * n_events]``
- Reply: ``[n_failed, first_error or '', n_fenced, [fenced connection indexes], [lost event numbers]]``, numbers
  local to this node's call (1-based); a sixth element ``1`` marks a batch the node had already recorded.

Fencing: ``fp:fence:{tag}:{conn}`` holds the highest fence token seen for a connection on this node
(``workers.fence``). A connection whose token is lower is fenced (its events skipped and counted); an equal or
higher one is written and raises the stored token. Exactly once: like ``workers.publish_script``, the batch number
and outcome are recorded in the same atomic run; a resent batch the node already has replies with the recorded
outcome and writes nothing but the record's expiry (a write, so a ``WAIT`` after it confirms that the record, and
with it the batch, reached the replicas).
"""

from __future__ import annotations

from typing import Any

from control import keys

NODE_SCRIPT = (
    """#!lua flags=allow-cross-slot-keys
local maxlen, n_events = ARGV[1], tonumber(ARGV[2])
local n_conns, n_slots, batch, pub, check = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5], ARGV[6], ARGV[7] == '1'
local function ints(text)
  local out = {}
  for n in string.gmatch(text, '%d+') do out[#out + 1] = tonumber(n) end
  return out
end
local done = redis.call('GET', KEYS[1])
if done then
  local b, f, cs, ls = string.match(done, '^(%d+) (%d+) ([%d,]*) ([%d,]*)$')
  if b == batch then
    redis.call('PEXPIRE', KEYS[1], 86400000)
    return {0, '', tonumber(f), ints(cs), ints(ls), 1}
  end
end
local c0 = 8
local s0 = c0 + 2 * n_conns
local e0 = s0 + 4 * n_slots
if check then
  for s = 0, n_slots - 1 do
    local r = redis.pcall('EXISTS', ARGV[s0 + 4 * s])
    if type(r) == 'table' and r.err then
      return redis.error_reply('TRYAGAIN a key of this batch is not served by this node: ' .. tostring(r.err))
    end
  end
end
local held, fenced_conns = {}, {}
for c = 1, n_conns do
  local key, token = ARGV[c0 + 2 * (c - 1)], tonumber(ARGV[c0 + 2 * c - 1])
  local seen = tonumber(redis.call('GET', key) or '0')
  if token < seen then
    held[c] = false
    fenced_conns[#fenced_conns + 1] = c
  else
    held[c] = true
    if token > seen then redis.call('SET', key, ARGV[c0 + 2 * c - 1], 'EX', 86400) end
  end
end
local ok = {}
for s = 0, n_slots - 1 do
  local c = tonumber(ARGV[s0 + 4 * s + 3])
  ok[s] = c == 0 or held[c]
end
local failed, first = 0, nil
local function failure(r)
  failed = failed + 1
  first = first or r.err
end
local field = '"""
    + keys.STREAM_FIELD
    + """'
local last, fenced, lost = {}, 0, {}
local a = e0
for e = 1, n_events do
  local s = tonumber(ARGV[a])
  if ok[s] then
    local b = s0 + 4 * s
    local payload = ARGV[a + 1]
    local r = redis.pcall('XADD', ARGV[b], 'MAXLEN', '~', maxlen, '*', field, payload)
    if type(r) == 'table' and r.err then
      failure(r)
      lost[#lost + 1] = e
    else
      local p = redis.pcall(pub, ARGV[b + 1], payload)
      if type(p) == 'table' and p.err then failure(p) end
      last[ARGV[b + 2]] = payload
    end
  else
    fenced = fenced + 1
  end
  a = a + 2
end
for key, payload in pairs(last) do
  local r = redis.pcall('SET', key, payload)
  if type(r) == 'table' and r.err then failure(r) end
end
local outcome = table.concat(fenced_conns, ',') .. ' ' .. table.concat(lost, ',')
redis.call('SET', KEYS[1], batch .. ' ' .. fenced .. ' ' .. outcome, 'EX', 86400)
return {failed, first or '', fenced, fenced_conns, lost}
"""
)

_key_cache: dict[str, tuple[bytes, bytes, bytes]] = {}


def topic_keys(topic: str) -> tuple[bytes, bytes, bytes]:
    """``(stream, channel, latest)`` key names of ``topic``, encoded (cached for up to 100,000 topics)."""
    k = _key_cache.get(topic)
    if k is None:
        if len(_key_cache) > 100_000:
            _key_cache.clear()
        k = _key_cache[topic] = (
            keys.event_stream(topic).encode(), keys.event_channel(topic).encode(), keys.latest(topic).encode())
    return k


class NodeBatch:
    """The part of one batch that goes to one events node: ``slot`` and ``add`` events in order, then ``argv()``.

    ``numbers[i]``: the batch-wide number (1-based) of this node's event i + 1; ``conns``: connection id -> index
    local to this node (1-based) in first-seen order.
    """

    __slots__ = ("conns", "events", "numbers", "slot_args", "slots")

    def __init__(self) -> None:
        self.conns: dict[str, int] = {}
        self.slots: dict[tuple[str, str | None], int] = {}
        self.slot_args: list[bytes | int] = []
        self.events: list[bytes | int] = []
        self.numbers: list[int] = []

    def slot(self, topic: str, conn: str | None) -> int:
        """The slot (0-based) of ``topic`` written for connection ``conn`` (None: unfenced), added when new."""
        slot = self.slots.get((topic, conn))
        if slot is None:
            slot = self.slots[(topic, conn)] = len(self.slots)
            self.slot_args.extend(topic_keys(topic))
            self.slot_args.append(0 if conn is None else self.conns.setdefault(conn, len(self.conns) + 1))
        return slot

    def add(self, slot: int, payload: bytes, number: int) -> None:
        """Append one event of ``slot`` (see ``slot``) with its batch-wide ``number``."""
        self.events.append(slot)
        self.events.append(payload)
        self.numbers.append(number)

    def argv(self, maxlen: int, number: int, sharded: bool, tag: str, tokens: dict[str, int]) -> list[Any]:
        """ARGV of ``NODE_SCRIPT`` (layout in the module docstring) for batch ``number``; ``sharded``: SPUBLISH and
        the locality check (a cluster); ``tag``: the node's hash tag; ``tokens``: connection -> fence token."""
        fence: list[bytes | int] = []
        for conn in self.conns:  # insertion order == index order
            fence.append(keys.node_fence(tag, conn).encode())
            fence.append(tokens[conn])
        return [maxlen, len(self.numbers), len(self.conns), len(self.slots), number,
                b"SPUBLISH" if sharded else b"PUBLISH", 1 if sharded else 0, *fence, *self.slot_args,
                *self.events]  # fmt: skip
