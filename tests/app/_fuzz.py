"""The schemathesis run behind ``tests/app/test_openapi_fuzz.py`` and ``scripts/fuzz_api.py``.

``fuzz(app, redis_url, examples, tokens, seed)`` fuzzes every operation of ``app``'s own OpenAPI document
in-process (schemathesis' ASGI transport, with the app's lifespan): for each operation, ``examples`` positive
and ``examples`` negative (schema-violating) cases, each sent with a token drawn from ``tokens`` (None: no
header). Every answer must pass the checks in ``CHECKS`` (no 5xx; status code, content type, headers and body
as documented, the error envelope included; schema-violating input refused). A live worker's heartbeat
is written before each request (``/health/ready`` answers 503 without one, by design). Every refused request (4xx) must
leave Redis exactly as it was: a digest of every key (``DUMP`` and whether it expires) is taken before and after.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import hypothesis
import orjson
import redis
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from control import keys

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
#: Subscribe's ``?wait=S`` would hold a request up to 30 s (no worker settles anything here): sent as 10 ms.
WAIT_SENT_S = "0.01"
#: Over this many keys (accepted subscribes add up), the database is emptied between requests.
MAX_KEYS = 300
#: SSE answers: schemathesis reads this many events, then disconnects (every stream starts with ``gap`` or
#: ``ready`` at once; waiting for more would wait for keep-alives).
STREAM_EVENTS = 1


@dataclass
class FuzzResult:
    """What a run did: ``requests`` sent, ``statuses`` seen, ``by_operation`` counts, wall ``seconds``."""

    requests: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    by_operation: Counter[str] = field(default_factory=Counter)
    seed: int = 0
    rejected_unchanged: int = 0
    seconds_by_operation: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0


def redis_digest(client: redis.Redis) -> dict[bytes, tuple[str, Any, bool]]:
    """Every key -> (type, value, has an expiry): equal digests mean nothing in Redis changed. Values are read
    by type (a hash as a dict, a stream as its entries, ...), not with DUMP: a big hash's DUMP lists its fields
    in table order, which Redis' incremental rehashing changes without any write. Two round trips."""
    names = client.keys("*")
    with client.pipeline(transaction=False) as pipe:
        for key in names:
            pipe.type(key)
            pipe.pttl(key)
        meta = pipe.execute()
    kinds = [kind.decode() if isinstance(kind, bytes) else kind for kind in meta[0::2]]
    readers = {"string": "get", "hash": "hgetall", "list": "lrange", "set": "smembers", "zset": "zrange",
               "stream": "xrange"}  # fmt: skip
    with client.pipeline(transaction=False) as pipe:
        for key, kind in zip(names, kinds):
            if kind in ("list", "zset"):
                getattr(pipe, readers[kind])(key, 0, -1, **({"withscores": True} if kind == "zset" else {}))
            elif kind in readers:
                getattr(pipe, readers[kind])(key)
            else:
                pipe.dump(key)
        values = pipe.execute()
    return {key: (kind, value, ttl >= 0) for key, kind, value, ttl in zip(names, kinds, values, meta[1::2])}


def _heartbeat(store: redis.Redis) -> None:
    """A live worker's record, so ``/health/ready`` is 200 (its 503 without one is tested in test_health.py)."""
    record = {"host": "fuzz", "pid": 0, "heartbeat_at": time.time_ns() // 1_000_000, "connections": []}
    store.hset(keys.WORKERS, "fuzz-worker", orjson.dumps(record))


def _as_sent(case: schemathesis.Case) -> None:
    """Drop query values the HTTP client would not send (None, []), so schemathesis judges the request that is
    sent: a negative case whose only fault was such a value is then a valid request (it re-checks edited cases)."""
    query = case.query or {}
    if any(v is None or v == [] for v in query.values()):
        case.query = {k: v for k, v in query.items() if v is not None and v != []}  # assignment: re-checked


def _clamp_wait(case: schemathesis.Case) -> None:
    query = case.query or {}
    raw = query.get("wait")
    try:
        value = float(raw) if isinstance(raw, (str, int, float)) and not isinstance(raw, bool) else None
    except ValueError:
        value = None
    if value is not None and 0 < value <= 30:
        case.query = {**query, "wait": WAIT_SENT_S}  # assignment: schemathesis re-checks the edited case


def fuzz(
    app: Any, redis_url: str, examples: int, tokens: Sequence[str | None], seed: int | None = 0,
    paths: Sequence[str] | None = None,
) -> FuzzResult:  # fmt: skip
    """Run the fuzzing (module docstring); raises AssertionError (or schemathesis' FailureGroup) on the first
    failure, with a curl line to reproduce it. ``seed``: the same cases for the same seed; None draws one
    (``result.seed`` tells it, to repeat the run with ``FEEDPLANE_FUZZ_SEED``). ``paths``: only the operations
    whose path is one of these (None: all)."""
    seed = random.getrandbits(32) if seed is None else seed
    # The token is the test's choice (``tokens``): schemathesis generating (and negating) the Authorization
    # header itself would send a "missing token" case that the test's header then makes valid.
    config = schemathesis.Config.from_dict({"max-stream-events": STREAM_EVENTS,
                                            "generation": {"with-security-parameters": False}})  # fmt: skip
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=config)  # the document the app serves
    store = redis.Redis.from_url(redis_url)
    result = FuzzResult(seed=seed)
    started = time.perf_counter()
    try:
        for op_result in schema.get_all_operations():
            operation = op_result.ok()
            if paths is not None and operation.path not in paths:
                continue
            _run_operation(operation, schemathesis.GenerationMode.POSITIVE, store, tokens, examples, seed, result)
            parts = (operation.query, operation.headers, operation.path_parameters, operation.body)
            if not sum(len(part) for part in parts):
                continue  # nothing to send wrong (the probes, /openapi.json, /docs)
            try:
                _run_operation(operation, schemathesis.GenerationMode.NEGATIVE, store, tokens, examples, seed, result)
            except hypothesis.errors.Unsatisfiable:  # no parameter and no body: nothing to send wrong
                pass
    finally:
        store.close()
    result.seconds = time.perf_counter() - started
    return result


def _run_operation(
    operation: Any, mode: Any, store: redis.Redis, tokens: Sequence[str | None], examples: int,
    seed: int, result: FuzzResult,
) -> None:  # fmt: skip
    label = f"{operation.method.upper()} {operation.path}"

    @settings(
        max_examples=examples, deadline=None, database=None, print_blob=True,
        suppress_health_check=list(HealthCheck), phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
    )  # fmt: skip
    @hypothesis.seed(seed)
    @given(case=operation.as_strategy(generation_mode=mode), token=st.sampled_from(list(tokens)))
    def run(case: schemathesis.Case, token: str | None) -> None:
        if store.dbsize() > MAX_KEYS:
            store.flushdb()
        _heartbeat(store)
        _as_sent(case)
        _clamp_wait(case)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        before = redis_digest(store)
        sent = time.perf_counter()
        response = case.call(headers=headers)
        result.seconds_by_operation[label] += time.perf_counter() - sent
        result.requests += 1
        result.statuses[response.status_code] += 1
        result.by_operation[label] += 1
        case.validate_response(response, checks=CHECKS, headers=headers)
        if 400 <= response.status_code < 500:
            after = redis_digest(store)
            changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
            assert not changed, f"{label} answered {response.status_code} but changed Redis keys {changed}: {case!r}"
            result.rejected_unchanged += 1

    run()
