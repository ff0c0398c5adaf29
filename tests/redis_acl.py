"""A real Redis fault for tests: commands refused with ``NOPERM`` through the ACL of the ``default`` user.

Every Feedplane client (workers, control server, the test's own clients) authenticates as ``default``, and an
``ACL SETUSER`` applies at once to connections already open, so ``deny(r, "xrevrange")`` makes every read of that
command fail server-side, exactly as a misconfigured ACL or a renamed command would, while everything else keeps
working. ``ACL LOG`` records each refusal; ``denials`` counts them, so a test can wait for the system under test to
have tried (and been refused) a number of times instead of sleeping.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from redis.asyncio import Redis


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def denials(redis: Redis, command: str) -> int:
    """How many times ``command`` was refused since the last ``ACL LOG RESET`` (entries merge repeats: summed)."""
    total = 0
    for entry in await redis.acl_log(count=128):
        fields = entry if isinstance(entry, dict) else dict(zip(entry[::2], entry[1::2], strict=True))
        fields = {_text(k): v for k, v in fields.items()}
        if _text(fields.get("reason")) == "command" and _text(fields.get("object")).lower() == command.lower():
            total += int(fields.get("count") or 0)
    return total


@contextlib.asynccontextmanager
async def deny(redis: Redis, *commands: str) -> AsyncIterator[None]:
    """Refuse ``commands`` to the ``default`` user while the block runs (always restored; ``ACL LOG`` reset first)."""
    await redis.acl_log_reset()
    await redis.execute_command("ACL", "SETUSER", "default", *(f"-{c}" for c in commands))
    try:
        yield
    finally:
        await redis.execute_command("ACL", "SETUSER", "default", *(f"+{c}" for c in commands))


async def allow(redis: Redis, *commands: str) -> None:
    """Lift a ``deny`` before its block ends (the fault heals while the test goes on)."""
    await redis.execute_command("ACL", "SETUSER", "default", *(f"+{c}" for c in commands))
