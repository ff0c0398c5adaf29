"""The publisher's RESP packing (``workers.publish_script.use_hiredis_packing``): the same bytes as redis-py's."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis
from redis.asyncio.connection import Connection

from workers.publish_script import use_hiredis_packing


def _packers() -> tuple[Connection, Connection]:
    client = Redis()
    use_hiredis_packing(client)
    use_hiredis_packing(client)  # idempotent
    cls = client.connection_pool.connection_class
    assert cls is not Connection and issubclass(cls, Connection)
    return Connection(), cls()


@pytest.mark.parametrize("args", [
    ("EVALSHA", "0123abcd", 3, b"fp:stream:x", "caf\u00e9", -7, 2**62, b"", "", b'{"price":"61800.30"}' * 400),
    ("CLIENT SETNAME", "fp"),  # a command name with a space: split the redis-py way
    ("SET", "k", 1.5),  # a float: redis-py's repr formatting
    ("SET", "k", memoryview(b"abc")),
])  # fmt: skip
def test_same_bytes_as_redis_py(args: tuple[object, ...]) -> None:
    plain, fast = _packers()
    assert b"".join(fast.pack_command(*args)) == b"".join(plain.pack_command(*args))


def test_a_refused_argument_is_still_refused() -> None:
    plain, fast = _packers()
    with pytest.raises(Exception) as plain_error:
        plain.pack_command("SET", "k", True)
    with pytest.raises(type(plain_error.value)):
        fast.pack_command("SET", "k", True)
