"""schemathesis against the real app (in-process ASGI, real Redis): every operation of its own OpenAPI document,
positive and negative cases, with and without tokens; 0 5xx, every answer as documented, and no refused request
changes Redis (``tests/app/_fuzz.py``). Two tests (secured, open) so ``-n 2`` runs them side by side; together
they send more than 1,000 requests, the same ones on every run (seed 0). A third (``orders``) fuzzes only the order
routes with ``ORDERS_ENABLED=1`` (elsewhere they answer 409 ``orders_disabled`` before reading anything) and no
account configured: every request gets past the switch into validation and the account check, and none may reach a
worker's queue (there is no worker: it would end in 504 ``order_timeout``) or change Redis when refused.

The bigger, random run (README): ``FEEDPLANE_FUZZ_EXAMPLES=90 FEEDPLANE_FUZZ_SEED=random`` (cases per operation
and mode; ``random``, or an integer seed) with ``-s -n 0 --timeout=0`` (one process, so ``-s`` shows the figures)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from redis.asyncio import Redis
from schemathesis.python import asgi

from app.main import create_app
from control.settings import Settings
from tests.app._api import BM_ENV
from tests.app._auth import ALICE, CONTROL, READ, WRONG, write_secrets
from tests.app._fuzz import fuzz

#: Cases per operation and generation mode: 33 operations x 2 modes x 10, less the operations that have nothing
#: to send wrong, gives about 580 requests per test, about 1,150 for both.
EXAMPLES = int(os.environ.get("FEEDPLANE_FUZZ_EXAMPLES", "10"))
_SEED = os.environ.get("FEEDPLANE_FUZZ_SEED", "0")
SEED = None if _SEED == "random" else int(_SEED)
MIN_REQUESTS = 50 * EXAMPLES


def secured_env(tmp_path: Path) -> dict[str, str]:
    """Tokens, accounts on (FEEDPLANE_SECRET_KEY); rate limits off, so a refused request writes nothing."""
    return {"CONTROL_TOKEN": CONTROL, "READ_TOKEN": READ, "ACCOUNTS_FILE": write_secrets(tmp_path),
            "FEEDPLANE_SECRET_KEY": Fernet.generate_key().decode(), "RATE_LIMIT_CONTROL_PER_MIN": "0",
            "RATE_LIMIT_READ_PER_MIN": "0", "RATE_LIMIT_SSE_PER_MIN": "0", "RATE_LIMIT_AUTH_FAIL_PER_MIN": "0",
            **BM_ENV}  # fmt: skip


#: Open mode (no token) with the accounts feature switched off: POST /accounts must be a 4xx, never a 5xx.
OPEN_ENV = {"CTRL_ADDR": "127.0.0.1:18089", **BM_ENV}
#: Orders on, no account on an exchange with orders (BM_ENV is BitMart's), no worker: ORDERS_TIMEOUT_S is short so
#: a request that wrongly reaches the queue fails fast (504).
ORDERS_ENV = {**OPEN_ENV, "ORDERS_ENABLED": "1", "ORDERS_TIMEOUT_S": "0.2"}
ORDER_PATHS = ("/orders", "/orders/{order_id}", "/orders/client/{client_order_id}", "/positions/close",
               "/trading/halt", "/trading/resume", "/gate/place-futures-order", "/gate/close-futures-order",
               "/gate/cancel-futures-order", "/gate/get-futures-order")  # fmt: skip


@pytest.mark.parametrize("mode", ["secured", "open", "orders"])
async def test_fuzz(
    mode: str, make_settings: Callable[..., Settings], redis_url: str, redis: Redis, tmp_path: Path
) -> None:
    env = {"secured": secured_env(tmp_path), "open": OPEN_ENV, "orders": ORDERS_ENV}[mode]
    tokens = [None, WRONG, READ, CONTROL, ALICE] if mode == "secured" else [None, WRONG]
    app = create_app(make_settings(**env))
    try:
        result = fuzz(app, redis_url, EXAMPLES, tokens, SEED, ORDER_PATHS if mode == "orders" else None)
    finally:
        asgi.shutdown_lifespans()
    print(f"fuzz {mode} (seed {result.seed}): {result.requests} requests in {result.seconds:.1f} s; "
          f"statuses {dict(sorted(result.statuses.items()))}")  # fmt: skip
    assert not [s for s in result.statuses if s >= 500]
    if mode == "orders":
        assert len(result.by_operation) == 11 and result.requests >= 15 * EXAMPLES  # every order operation
        assert result.statuses[400] and result.statuses[200]  # refused; halt/resume done
        assert result.rejected_unchanged == sum(n for s, n in result.statuses.items() if 400 <= s < 500)
        return
    assert result.requests >= MIN_REQUESTS
    assert len(result.by_operation) >= 33  # every operation
    assert result.rejected_unchanged == sum(n for s, n in result.statuses.items() if 400 <= s < 500)
    assert result.statuses[200] and result.statuses[400]
    if mode == "secured":
        assert result.statuses[401] and result.statuses[403]
    else:
        assert result.statuses[202] and result.statuses[409]  # subscribes accepted; POST /accounts disabled
