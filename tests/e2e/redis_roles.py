"""Redis role and loading faults for the publisher and chaos tests, on private ``redis-server`` processes.

- ``ReplicaPair``: a master and its replica. ``demote()`` swaps their roles the way a Sentinel failover does,
  without losing a write (the master's writes are paused until the replica has them all): the replica is
  promoted and the old master becomes its replica, so a client still pointed at the old master gets ``READONLY``.
  ``promote_back()`` swaps them again. Nothing writes to the other server meanwhile, so no data moves.
- ``stale_replica()``: turn one server into the replica of an address where nothing listens, with
  ``replica-serve-stale-data no``: every command (scripts included) is answered ``MASTERDOWN``.
- ``fill()`` + ``slow_loading()``: a data set large enough, loaded slowly enough (Redis 7's debug config
  ``key-load-delay``, microseconds per key), that a restarted server answers ``LOADING`` for seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis

from tests.e2e.harness import RedisServer, free_port, wait_until


def client(server: RedisServer) -> redis.Redis:
    """A blocking client of ``server`` (str replies) for the test's own admin commands."""
    return redis.Redis(host="127.0.0.1", port=server.port, socket_timeout=5, decode_responses=True)


def info(server: RedisServer, section: str) -> dict[str, Any]:
    with client(server) as c:
        return c.info(section)


class ReplicaPair:
    """``master`` and ``replica`` (started already, the replica replicating the master); see the module docstring.

    The attributes keep naming the servers, whatever role ``demote`` gave them.
    """

    def __init__(self, master: RedisServer, replica: RedisServer) -> None:
        self.master = master
        self.replica = replica

    @classmethod
    def start_replica_of(cls, master: RedisServer, directory: Path) -> ReplicaPair:
        """Start a replica of the running ``master`` in ``directory`` and wait until it is in sync (blocking)."""
        replica = RedisServer(directory, args=["--replicaof", "127.0.0.1", str(master.port)])
        replica.start()
        pair = cls(master, replica)
        wait_until(pair.linked, 30, "the replica to sync")
        return pair

    def linked(self) -> bool:
        """The replica (``self.replica``, whichever role it has now) is connected to ``self.master`` and in sync."""
        try:
            rep = info(self.replica, "replication")
            master = info(self.master, "replication")
        except (redis.RedisError, OSError):
            return False
        return rep.get("master_link_status") == "up" and rep.get("slave_repl_offset") == master.get(
            "master_repl_offset"
        )

    def demote(self) -> None:
        """The master becomes the replica of its promoted replica; writes sent to it now answer READONLY."""
        with client(self.master) as m, client(self.replica) as r:
            m.execute_command("CLIENT", "PAUSE", 10_000, "WRITE")  # writes wait: the replica must have them all
            try:
                wait_until(self.linked, 10, "the replica to catch up")
                r.execute_command("REPLICAOF", "NO", "ONE")
                m.execute_command("REPLICAOF", "127.0.0.1", str(self.replica.port))
            finally:
                m.execute_command("CLIENT", "UNPAUSE")  # the paused writes now meet a replica
        wait_until(lambda: info(self.master, "replication").get("master_link_status") == "up", 10, "the demoted master")

    def promote_back(self) -> None:
        """Undo ``demote``: the old master takes writes again and the other server replicates it."""
        with client(self.master) as m, client(self.replica) as r:
            m.execute_command("REPLICAOF", "NO", "ONE")
            r.execute_command("REPLICAOF", "127.0.0.1", str(self.master.port))
        wait_until(self.linked, 10, "the replica to follow the master again")

    def role(self) -> str:
        return str(info(self.master, "replication")["role"])


@contextlib.contextmanager
def replica_pair(directory: Path) -> Iterator[ReplicaPair]:
    """A fresh master (non-persistent) and its replica, both killed afterwards."""
    master = RedisServer(directory / "a")
    pair = None
    try:
        master.start()
        pair = ReplicaPair.start_replica_of(master, directory / "b")
        yield pair
    finally:
        if pair is not None:
            pair.replica.kill()
        master.kill()


def stale_replica(server: RedisServer) -> None:
    """Make ``server`` a replica of a dead address that refuses stale reads: it answers MASTERDOWN to everything."""
    with client(server) as c:
        c.config_set("replica-serve-stale-data", "no")
        c.execute_command("REPLICAOF", "127.0.0.1", str(free_port()))


def promote(server: RedisServer) -> None:
    with client(server) as c:
        c.execute_command("REPLICAOF", "NO", "ONE")


def fill(server: RedisServer, keys: int, prefix: str = "filler") -> None:
    """Add ``keys`` small string keys (``prefix:N``) so a restart has something to load."""
    with client(server) as c:
        for start in range(0, keys, 5000):
            with c.pipeline(transaction=False) as pipe:
                for i in range(start, min(keys, start + 5000)):
                    pipe.set(f"{prefix}:{i}", "x" * 16)
                pipe.execute()


def slow_loading(server: RedisServer, delay_us: int) -> None:
    """From the next start on, ``server`` loads its data set at ``delay_us`` microseconds per key (and serves
    clients, answering LOADING, every kilobyte loaded). ``key-load-delay`` is a hidden debug config of Redis 7."""
    server.args = [*server.args, "--key-load-delay", str(delay_us), "--loading-process-events-interval-bytes", "1024"]


def loading(server: RedisServer) -> bool:
    """True while ``server`` is loading its data set (INFO answers during loading)."""
    try:
        return info(server, "persistence").get("loading") == 1
    except (redis.RedisError, OSError):
        return False


def rewrite_aof(server: RedisServer, timeout_s: float = 30.0) -> None:
    """Compact ``server``'s append-only file (BGREWRITEAOF: an RDB preamble, so a restart loads it key by key,
    at the ``key-load-delay`` pace) and wait until the rewrite is done."""
    with client(server) as c:
        c.bgrewriteaof()

    def done() -> bool:
        persistence = info(server, "persistence")
        return not persistence["aof_rewrite_in_progress"] and not persistence["aof_rewrite_scheduled"]

    wait_until(done, timeout_s, "the AOF rewrite", interval_s=0.05)
    status = info(server, "persistence")["aof_last_bgrewrite_status"]
    if status != "ok":
        raise RuntimeError(f"BGREWRITEAOF failed: {status}")


class ReplyCutter:
    """A TCP proxy in front of a Redis server that can lose one reply: once ``arm(marker)`` is called, the next
    request containing ``marker`` (e.g. ``b"EVALSHA"``) reaches Redis and is executed, but the connection is cut
    before its reply gets back (a network failure at the worst moment). ``port``: where clients connect."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.cuts = 0
        self._marker: bytes | None = None
        self._server: asyncio.Server | None = None

    def arm(self, marker: bytes) -> None:
        self._marker = marker

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        cut = asyncio.Event()  # set once this connection's marked request went through: drop the reply

        async def upstream() -> None:
            while data := await client_r.read(65536):
                if self._marker is not None and self._marker in data:
                    self._marker = None
                    cut.set()
                server_w.write(data)
                await server_w.drain()

        async def downstream() -> None:
            while data := await server_r.read(65536):
                if cut.is_set():
                    self.cuts += 1
                    return
                client_w.write(data)
                await client_w.drain()

        tasks = [asyncio.create_task(upstream()), asyncio.create_task(downstream())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for writer in (client_w, server_w):
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
