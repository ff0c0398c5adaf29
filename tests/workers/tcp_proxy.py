"""A TCP forwarder that a test can cut: a network partition between one process and its Redis.

``TcpProxy(target_port)`` listens on ``127.0.0.1:port`` and pipes every connection to ``127.0.0.1:target_port``
(asyncio streams). ``cut()`` aborts every piped connection (both ends see a reset) and closes the listener, so new
connections are refused, as when a host loses its route to Redis; ``restore()`` listens again on the same port.
``sent_by_conn`` counts what each piped connection sent upstream (numbered in accept order); ``delay(number, s)``
holds that connection's upstream bytes ``s`` seconds before passing them on (order kept, throughput not limited): a
slow link for one client connection, e.g. a worker publisher's, while its other connections stay fast.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable


class TcpProxy:
    """See the module docstring. ``port`` is known after ``start()``; ``url(db)`` is a Redis URL through it."""

    def __init__(self, target_port: int, *, host: str = "127.0.0.1") -> None:
        self.host, self.target_port = host, target_port
        self.port = 0
        self.cuts = 0
        #: Bytes each piped connection sent upstream, by connection number (accept order).
        self.sent_by_conn: dict[int, int] = {}
        self.delays: dict[int, float] = {}
        self._server: asyncio.Server | None = None
        self._pipes: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def url(self, db: int = 0) -> str:
        return f"redis://{self.host}:{self.port}/{db}"

    @property
    def open(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        """Listen (on the same port again after a ``cut``)."""
        self._server = await asyncio.start_server(self._accept, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        """Refuse new connections and reset every open one."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for down, up in list(self._pipes):
            for writer in (down, up):
                writer.transport.abort()
        self.cuts += 1
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)

    async def restore(self) -> None:
        await self.start()

    async def close(self) -> None:
        await self.cut()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            try:
                up_reader, up_writer = await asyncio.open_connection(self.host, self.target_port)
            except OSError:
                writer.transport.abort()
                return
            pair = (writer, up_writer)
            self._pipes.add(pair)
            try:
                await asyncio.gather(_pump(reader, up_writer, self._upstream()), _pump(up_reader, writer))
            finally:
                self._pipes.discard(pair)
        finally:
            self._tasks.discard(task)


    def delay(self, number: int, seconds: float | None) -> None:
        """Hold the upstream bytes of connection ``number`` ``seconds`` before passing them on (None: no delay)."""
        if seconds:
            self.delays[number] = seconds
        else:
            self.delays.pop(number, None)

    def _upstream(self) -> Callable[[int], float]:
        """The client -> target side of a new connection: counts its bytes, returns their delay (seconds)."""
        number, last_due = len(self.sent_by_conn), 0.0
        self.sent_by_conn[number] = 0

        def pace(n: int) -> float:
            nonlocal last_due
            self.sent_by_conn[number] += n
            now = asyncio.get_running_loop().time()
            if now >= last_due and not self.delays.get(number):
                return 0.0
            # strictly after the previous chunk: bytes never overtake (timers with equal times have no set order)
            last_due = max(now + self.delays.get(number, 0.0), last_due + 1e-6)
            return last_due - now

        return pace


def _late_write(writer: asyncio.StreamWriter, data: bytes) -> None:
    if not writer.is_closing():
        writer.write(data)


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                pace: Callable[[int], float] | None = None) -> None:  # fmt: skip
    loop = asyncio.get_running_loop()
    try:
        while data := await reader.read(65536):
            delay = 0.0 if pace is None else pace(len(data))
            if delay:  # later, in order (same delay, FIFO timers)
                loop.call_later(delay, _late_write, writer, data)
                continue
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(ConnectionError, OSError):
            writer.close()
