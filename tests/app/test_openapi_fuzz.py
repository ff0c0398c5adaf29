"""schemathesis against the real app (in-process ASGI, real Redis): every operation of its own OpenAPI document,
positive and negative cases, with and without tokens; 0 5xx, every answer as documented, and no refused request
changes Redis (``tests/app/_fuzz.py``). ``scripts/fuzz_api.py`` is the bigger, random run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from cryptography.fernet import Fernet
from redis.asyncio import Redis
from schemathesis.python import asgi

from app.main import create_app
from control.settings import Settings
from tests.app._api import BM_ENV
from tests.app._auth import ALICE, CONTROL, READ, WRONG, write_secrets
from tests.app._fuzz import fuzz

#: Cases per operation and generation mode: 33 operations x 2 modes x 2 apps x 10 -> about 1,150 requests.
EXAMPLES = 10


async def test_fuzz_secured_and_open(
    make_settings: Callable[..., Settings], redis_url: str, redis: Redis, tmp_path: Path
) -> None:
    # Secured (tokens, accounts on, rate limits off so a refused request writes nothing) and open mode with the
    # accounts feature switched off (POST /accounts must be a 4xx, not a 5xx).
    secured = create_app(make_settings(
        CONTROL_TOKEN=CONTROL, READ_TOKEN=READ, ACCOUNTS_FILE=write_secrets(tmp_path),
        FEEDPLANE_SECRET_KEY=Fernet.generate_key().decode(), RATE_LIMIT_CONTROL_PER_MIN="0",
        RATE_LIMIT_READ_PER_MIN="0", RATE_LIMIT_SSE_PER_MIN="0", RATE_LIMIT_AUTH_FAIL_PER_MIN="0", **BM_ENV,
    ))  # fmt: skip
    opened = create_app(make_settings(CTRL_ADDR="127.0.0.1:18089", **BM_ENV))
    try:
        first = fuzz(secured, redis_url, EXAMPLES, [None, WRONG, READ, CONTROL, ALICE])
        second = fuzz(opened, redis_url, EXAMPLES, [None, WRONG])
    finally:
        asgi.shutdown_lifespans()
    total = first.requests + second.requests
    statuses = first.statuses + second.statuses
    print(f"fuzz: {total} requests in {first.seconds + second.seconds:.1f} s; statuses {dict(sorted(statuses.items()))}")
    assert total >= 1000
    assert not [s for s in statuses if s >= 500]
    assert len(first.by_operation) == len(second.by_operation) >= 33  # every operation
    assert statuses[401] and statuses[403] and statuses[200] and statuses[202] and statuses[400]
