"""This worker among the live ones: its record in ``fp:workers``, the records of the others, and what they imply.

Every tick (step a of ``workers.runtime``) the worker writes its record and reads everyone's: records older than
3 x the lease TTL are pruned (their process is gone), records younger than one lease TTL count as live (the fair
share divides the planned connections among them), and the worker that started last among the live ones is the
``newest`` (its settings' URLs win a re-plan). Times are epoch milliseconds.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

from control.store import ControlStore

log = logging.getLogger(__name__)


class Heartbeat:
    """The heartbeat of worker ``worker_id`` (see the module docstring).

    :param store: the control store. :param ttl_ms: the lease TTL (milliseconds).

    After ``beat``: ``beats`` (worker id -> heartbeat_at, epoch ms) and ``newest``.
    """

    def __init__(self, store: ControlStore, *, worker_id: str, ttl_ms: int) -> None:
        self.store, self.worker_id, self.ttl_ms = store, worker_id, ttl_ms
        self.host = socket.gethostname()
        self.started_at = 0  # epoch ms, set when the runtime starts
        #: This process started last among the live workers: its settings' URLs win (``WorkerRuntime._current_plan``).
        self.newest = True
        #: worker id -> heartbeat_at (epoch ms) of the records read at the last heartbeat.
        self.beats: dict[str, int] = {}
        #: worker id -> record of the live workers at the last heartbeat (this one's as written).
        self.live: dict[str, dict[str, Any]] = {}

    def record(self, now: int, **fields: Any) -> dict[str, Any]:
        """This worker's record at ``now``: host, pid, started_at, heartbeat_at, then ``fields``."""
        return {"host": self.host, "pid": os.getpid(), "started_at": self.started_at, "heartbeat_at": now, **fields}

    async def beat(self, now: int, record: dict[str, Any]) -> int:
        """Write our ``record``, prune dead ones; returns the number of live workers (us included)."""
        await self.store.put_worker(self.worker_id, record)
        ttl, live, newest = self.ttl_ms, 0, True
        self.live = {}
        workers = await self.store.workers()
        self.beats = {str(w["id"]): int(w.get("heartbeat_at") or 0) for w in workers}
        for worker in workers:
            age = now - int(worker.get("heartbeat_at") or 0)
            if worker["id"] != self.worker_id and age > 3 * ttl:
                log.info("worker %s: pruning stale worker record %s (%d ms old)", self.worker_id, worker["id"], age)
                await self.store.remove_worker(worker["id"])
            elif age <= ttl or worker["id"] == self.worker_id:
                live += 1
                self.live[str(worker["id"])] = record if worker["id"] == self.worker_id else worker
                started = (int(worker.get("started_at") or 0), str(worker["id"]))
                newest = newest and started <= (self.started_at, self.worker_id)
        self.newest = newest
        return live
