"""A real Redis Cluster on loopback for tests: N masters with R replicas each, started by the test itself.

``redis-server --cluster-enabled yes`` per node (own data port and own cluster bus port, both free ports; nothing
persisted), then ``redis-cli --cluster create ... --cluster-replicas R --cluster-yes``; ready once every node
reports ``cluster_state:ok`` and every replica has synced. ``fail_master`` kills a master (SIGKILL) and waits
until the cluster has promoted its replica and is ``ok`` again (``cluster-node-timeout`` is short: 1 s).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis

from tests.e2e.harness import RedisServer, free_port, wait_until

REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"
NODE_TIMEOUT_MS = 1000


def _client(port: int) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5, socket_timeout=2, decode_responses=True)


class LocalCluster:
    """``masters`` masters with ``replicas`` replicas each, in ``directory``; ``url`` is its
    ``redis+cluster://`` URL (every node as a seed). Use ``with local_cluster(tmp) as cluster:``."""

    def __init__(self, directory: Path, *, masters: int = 3, replicas: int = 1) -> None:
        self.directory = directory
        self.n_masters = masters
        self.n_replicas = replicas
        self.nodes: list[RedisServer] = []
        for i in range(masters * (1 + replicas)):
            bus = free_port()
            args = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-port", str(bus),
                    "--cluster-node-timeout", str(NODE_TIMEOUT_MS), "--cluster-require-full-coverage", "yes",
                    "--cluster-replica-validity-factor", "0"]  # fmt: skip
            self.nodes.append(RedisServer(directory / f"node{i}", args=args))

    @property
    def url(self) -> str:
        """``redis+cluster://127.0.0.1:p1,127.0.0.1:p2,...`` of the nodes that are running."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes if n.proc is not None)

    def start(self, timeout_s: float = 30.0) -> None:
        """Start every node, create the cluster and wait until it is ``ok`` with replicas in sync."""
        for node in self.nodes:
            node.start()
        cmd = [REDIS_CLI, "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in self.nodes),
               "--cluster-replicas", str(self.n_replicas), "--cluster-yes"]  # fmt: skip
        done = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout_s)
        if done.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {done.stdout[-2000:]} {done.stderr[-2000:]}")
        self.wait_ok(timeout_s)

    def _running(self) -> list[RedisServer]:
        return [n for n in self.nodes if n.proc is not None and n.proc.poll() is None]

    def _state_ok(self) -> bool:
        try:
            for node in self._running():
                with _client(node.port) as c:
                    if c.cluster("info").get("cluster_state") != "ok":
                        return False
                    info = c.info("replication")
                    if info.get("role") == "slave" and info.get("master_link_status") != "up":
                        return False
            masters = self.masters()
            return len(masters) == self.n_masters
        except (redis.RedisError, OSError):
            return False

    def wait_ok(self, timeout_s: float = 30.0) -> None:
        """Wait until every running node says ``cluster_state:ok``, replicas are linked, and there are
        ``masters`` masters serving slots."""
        wait_until(self._state_ok, timeout_s, "redis cluster state ok", interval_s=0.1)

    def masters(self) -> list[RedisServer]:
        """The running nodes that are masters serving slots now."""
        out = []
        for node in self._running():
            with _client(node.port) as c:
                info = c.info("replication")
                if info.get("role") == "master" and self._own_slots(c):
                    out.append(node)
        return out

    @staticmethod
    def _own_slots(c: redis.Redis) -> list[tuple[int, int]]:
        """The slot ranges the node behind ``c`` serves (CLUSTER NODES' "myself" line)."""
        parsed: dict[str, Any] = c.cluster("nodes")  # type: ignore[assignment]
        for node in parsed.values():  # redis-py parses it: {"flags": "myself,master", "slots": [[lo, hi]]}
            if "myself" in node["flags"].split(","):
                return [(int(r[0]), int(r[-1])) for r in node.get("slots", [])]
        return []

    def master_of(self, key: str) -> RedisServer:
        """The running master that serves ``key``'s slot."""
        with _client(self._running()[0].port) as c:
            slot = int(c.cluster("keyslot", key))
        for node in self.masters():
            with _client(node.port) as c:
                if any(lo <= slot <= hi for lo, hi in self._own_slots(c)):
                    return node
        raise LookupError(f"no master serves slot {slot}")

    def fail_master(self, node: RedisServer, timeout_s: float = 30.0) -> float:
        """SIGKILL master ``node``, wait until its replica is promoted and the cluster is ``ok``; returns the
        seconds that took. The killed node stays down (``restart`` brings it back as a replica)."""
        started = time.monotonic()
        node.kill()
        self.wait_ok(timeout_s)
        return time.monotonic() - started

    def restart(self, node: RedisServer, timeout_s: float = 30.0) -> None:
        """Start a killed node again (it rejoins from its nodes.conf, as a replica of its promoted replica)."""
        node.start()
        self.wait_ok(timeout_s)

    def flush(self) -> None:
        """FLUSHALL on every master (between tests sharing one cluster)."""
        for node in self.masters():
            with _client(node.port) as c:
                c.flushall()

    def stop(self) -> None:
        """Kill every node (nothing is persisted)."""
        for node in self.nodes:
            node.kill()


@contextmanager
def local_cluster(directory: Path, *, masters: int = 3, replicas: int = 1) -> Iterator[LocalCluster]:
    """A started ``LocalCluster`` in ``directory``, always stopped afterwards."""
    cluster = LocalCluster(directory, masters=masters, replicas=replicas)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
