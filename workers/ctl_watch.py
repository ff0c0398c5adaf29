"""The ``fp:ctl`` listener of a worker: every message there wakes the runtime's loop for a tick at once.

Messages are short words (``plan``, ``handover``, ``accounts``, ...: ``ControlStore.notify``); ``accounts`` also
marks the accounts for reloading. The subscription is renewed with backoff after a Redis error, and a wake-up follows
every (re)subscription, to catch up on whatever was published while nobody listened.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from control import keys
from workers.backoff import Backoff

log = logging.getLogger(__name__)


async def watch_control(redis: Redis, *, worker_id: str, wake: Callable[[], None],
                        accounts_due: Callable[[], None]) -> None:  # fmt: skip
    """Run until cancelled: ``wake()`` on every ``fp:ctl`` message, ``accounts_due()`` first on ``accounts``."""
    backoff = Backoff(0.05, 5.0)
    while True:
        pubsub = redis.pubsub()
        try:
            await pubsub.subscribe(keys.CONTROL_CHANNEL)
            backoff.reset()
            wake()  # catch up on whatever was published while we were not listening
            while True:  # bounded waits, so the connection's health check keeps running
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is not None:
                    if message.get("data") in ("accounts", b"accounts"):
                        accounts_due()
                    wake()
        except (RedisError, OSError) as exc:
            delay = backoff.next_delay()
            log.warning("worker %s: %s listener lost (%s); retrying in %.2fs", worker_id, keys.CONTROL_CHANNEL, exc,
                        delay)  # fmt: skip
            await asyncio.sleep(delay)
        finally:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()  # type: ignore[no-untyped-call]
