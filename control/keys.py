"""Every Redis name Feedplane uses, in one place (README "Redis keys" mirrors this list).

Control state (small, JSON values, read by /status):
    fp:desired            hash  topic -> {"since": ms}            desired subscriptions: the truth
    fp:desired:version    int   bumped on every desired-state change
    fp:paused             str   "1" while POST /stop has paused streaming (desired state kept)
    fp:subs               hash  topic -> {"state","error","since","conn"}   pending|active|failed
    fp:topic:last_event   hash  topic -> ms of the last event received for it
    fp:topic:options      hash  topic -> {"levels": N} for depth topics (top-N of published snapshots)
    fp:plan:assign        hash  topic -> connection id (sticky assignment made by the planner)
    fp:plan:conns         hash  connection id -> {"exchange","route","url"}
    fp:plan:lock          str   planner mutex (SET NX PX)
    fp:plan:seq           int   connection id counter
    fp:lease:{conn}       str   worker id owning connection {conn}; PX = LEASE_TTL_S, renewed by heartbeat
    fp:handover:{conn}    str   rebalancing offer of connection {conn}: "<from worker>" while offered,
                                "<from worker>><to worker>" once claimed; PX = HANDOVER_TIMEOUT_S (workers.handover)
    fp:conn:status        hash  connection id -> status JSON (state, reconnects, counters)
    fp:workers            hash  worker id -> {"host","pid","started_at","heartbeat_at","connections","taking",
                                "offered","publisher": {queue_depth, oldest_queued_age_ms, dropped, fenced, ...}}
    fp:ctl                pub/sub channel: "plan" / "state" / "handover" nudges between control server and workers
    fp:arq:queue          arq job queue
Accounts and request limits (control server; see control/accounts.py, app/ratelimit.py):
    fp:accounts           hash  "exchange:account" -> {"exchange","account","key","created_at","sealed"}
                                accounts added with POST /accounts; "key" is a fingerprint, "sealed" the Fernet
                                token (FEEDPLANE_SECRET_KEY) of {"api_key","api_secret","memo","uid"}: no plaintext
    fp:rl:{kind}:{who}    int   fixed-window request counter, PX = 60 s from the first request of the window;
                                kind control|read|sse -> who = token id ("env:control", "file:2"), never a token;
                                kind authfail -> who = client address (requests without a valid token)
Event outputs (per topic, e.g. topic = ``bitmart:kline:BTCUSDT:1m``; on ``EVENTS_REDIS_URL`` when set, see
control/events_redis.py). The braces are literal: the topic is the hash tag, one Redis Cluster slot per topic
(``fp:stream:{bitmart:kline:BTCUSDT:1m}``):
    fp:stream:{topic}     stream, one entry per event, field "d" = event JSON; MAXLEN ~ STREAM_MAXLEN
    fp:pub:{topic}        pub/sub channel, message = event JSON (sharded pub/sub, SPUBLISH, on a cluster)
    fp:last:{topic}       str   latest event JSON
Split mode only (``EVENTS_REDIS_URL`` set; workers.publish_nodes, workers.fence). Per events node, ``{tag}`` a hash
tag of a slot that node serves (``control.events_redis.master_tags``):
    fp:batch:{tag}:{pub}  str   a publisher instance's last batch on that node and its outcome (1-day TTL)
    fp:fence:{tag}:{conn} int   highest fence token seen for connection {conn} on that node (1-day TTL)
    and on the control Redis:
    fp:fence              hash  connection id -> "<token> <worker id>": the token of the lease's current holder
    fp:fence:seq          int   fence token counter
"""

from __future__ import annotations

PREFIX = "fp"

DESIRED = "fp:desired"
DESIRED_VERSION = "fp:desired:version"
PAUSED = "fp:paused"
SUB_STATE = "fp:subs"
TOPIC_LAST_EVENT = "fp:topic:last_event"
TOPIC_OPTIONS = "fp:topic:options"
PLAN_ASSIGN = "fp:plan:assign"
PLAN_CONNS = "fp:plan:conns"
PLAN_LOCK = "fp:plan:lock"
PLAN_SEQ = "fp:plan:seq"
CONN_STATUS = "fp:conn:status"
WORKERS = "fp:workers"
CONTROL_CHANNEL = "fp:ctl"
ARQ_QUEUE = "fp:arq:queue"

STREAM_FIELD = "d"


ACCOUNTS = "fp:accounts"


def rate_limit(kind: str, who: str) -> str:
    """Counter of rate-limit class ``kind`` (control, read, sse, ws, authfail) for ``who`` (token id or address)."""
    return f"fp:rl:{kind}:{who}"


def lease(conn_id: str) -> str:
    """Lease key of connection ``conn_id``; its value is the owning worker id."""
    return f"fp:lease:{conn_id}"


def handover(conn_id: str) -> str:
    """Rebalancing offer of connection ``conn_id`` (``workers.handover``): ``<from>`` or ``<from>><to>``."""
    return f"fp:handover:{conn_id}"


def publisher_batch(publisher: str) -> str:
    """Last batch written by one publisher instance (``<worker id>:<random hex>``), with what the script reported
    for it (string, 1-day TTL): a batch resent after a lost reply is recognised and not written twice."""
    return f"fp:batch:{publisher}"


FENCE_TOKENS = "fp:fence"
FENCE_SEQ = "fp:fence:seq"


def node_batch(tag: str, publisher: str) -> str:
    """``publisher_batch`` of one events node (split mode): ``tag`` is a hash tag of a slot that node serves."""
    return f"fp:batch:{{{tag}}}:{publisher}"


def node_fence(tag: str, conn_id: str) -> str:
    """Highest fence token of connection ``conn_id`` seen on the events node of hash tag ``tag`` (split mode)."""
    return f"fp:fence:{{{tag}}}:{conn_id}"


def event_stream(topic: str) -> str:
    """Redis Stream holding the events of ``topic``: ``fp:stream:{<topic>}`` (literal braces: the topic is the
    key's hash tag, so a topic's stream, channel and latest value share one Redis Cluster slot)."""
    return f"fp:stream:{{{topic}}}"


def event_channel(topic: str) -> str:
    """Pub/sub channel carrying the events of ``topic``: ``fp:pub:{<topic>}`` (a shard channel on a cluster)."""
    return f"fp:pub:{{{topic}}}"


def latest(topic: str) -> str:
    """String key holding the latest event of ``topic``: ``fp:last:{<topic>}``."""
    return f"fp:last:{{{topic}}}"


def topic_of_stream(key: str) -> str:
    """Inverse of ``event_stream``: ``fp:stream:{T}`` -> ``T``."""
    return key[len("fp:stream:{"):-1]


#: (added by the workers' planner) int: the ``fp:desired:version`` the current plan was made from;
#: a worker re-plans when it differs from ``DESIRED_VERSION``.
PLAN_VERSION = "fp:plan:version"
