"""A minimal local fake exchange for the ingest benchmarks: one replay of ``frames.build(n)`` to one subscriber.

Deliberately not ``scripts.simulator``: that one builds every frame with aiohttp per send and stamps it in a
Python callback, which costs more CPU than the worker it feeds. Here the frames are WebSocket-encoded once and
written in batches straight to the transport, so at saturation the exchange uses a small share of a core.

Protocol (RFC 6455, only what the two clients need): the HTTP upgrade (no extensions, no compression), unmasked
server TEXT frames, PONG for a client PING, CLOSE echoed. Binance's combined-stream routes
(binance_usdm.md §1): a connection whose URL carries ``?streams=btcusdt@aggTrade`` (cryptofeed) is subscribed at
once; otherwise the client's ``{"method":"SUBSCRIBE","params":[...],"id":N}`` is answered ``{"result":null,"id":N}``
(Feedplane, on ``/market/stream``). ``GET /fapi/v1/exchangeInfo`` answers the exchangeInfo cryptofeed recorded
(``cryptofeed/BINANCE_FUTURES.0``), which cryptofeed reads to map symbols.

Replay: the first subscription to ``btcusdt@aggTrade`` gets all ``n`` frames once, as fast as the socket drains
(``rate`` None) or paced at ``rate`` frames/s (the frames due are written together at each wake-up, ~1 ms apart);
``stamps[i]`` is ``time.time_ns()`` when frame i was handed to the socket. Later subscriptions get nothing, and
are counted (a client that reconnected mid-run shows up in the report).

Run as a child process: ``python -m scripts.benchkit.exchange --port P --frames N [--rate R] --stamps FILE``;
prints ``ready`` once listening; on SIGTERM writes the stamps (int64 array) to FILE and one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import signal
import sys
import time
from array import array
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson

from scripts.benchkit.frames import STREAM, build
from scripts.tapes import read_cryptofeed_http

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
EXCHANGE_INFO = "cryptofeed/BINANCE_FUTURES.0"


def ws_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """One unmasked, final server frame (RFC 6455 §5.2)."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 127)) + n.to_bytes(8, "big")
    return head + payload


def exchange_info() -> bytes:
    """The exchangeInfo body cryptofeed recorded (2021-07-22)."""
    for url, _ts, raw in read_cryptofeed_http(EXCHANGE_INFO):
        if url.endswith("/fapi/v1/exchangeInfo"):
            return raw.encode()
    raise FileNotFoundError(f"no exchangeInfo in {EXCHANGE_INFO}")


class FakeExchange:
    """See the module docstring. ``wire[i]`` is frame i WebSocket-encoded."""

    def __init__(self, frames: list[bytes], rate: float | None, batch: int = 256) -> None:
        self.wire = [ws_frame(f) for f in frames]
        self.rate = rate
        self.batch = batch
        self.stamps = array("q", bytes(8 * len(frames)))
        self.sent = 0
        self.connections = 0
        self.subscriptions = 0
        self.replay_task: asyncio.Task[None] | None = None
        self.info = exchange_info()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One client connection: HTTP GET or WebSocket upgrade."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        lines = head.decode("latin-1").split("\r\n")
        target = lines[0].split(" ")[1] if len(lines[0].split(" ")) > 1 else "/"
        headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
        if headers.get("upgrade", "").lower() != "websocket":
            await self._http(writer, target)
            return
        accept = base64.b64encode(hashlib.sha1(headers["sec-websocket-key"].encode() + _GUID).digest())
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")  # fmt: skip
        self.connections += 1
        streams = parse_qs(urlsplit(target).query).get("streams", [""])[0].split("/")
        if STREAM in streams:
            self._subscribed(writer)
        try:
            await self._client_frames(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _http(self, writer: asyncio.StreamWriter, target: str) -> None:
        if urlsplit(target).path == "/fapi/v1/exchangeInfo":
            status, body = b"200 OK", self.info
        else:
            status, body = b"404 Not Found", b'{"code":-1,"msg":"not served by the benchmark exchange"}'
        writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\nConnection: close\r\n"
                     b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)  # fmt: skip
        await writer.drain()
        writer.close()

    async def _client_frames(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Masked client frames: SUBSCRIBE/UNSUBSCRIBE (answered), PING (PONG), CLOSE (echoed, ends)."""
        while True:
            b0, b1 = await reader.readexactly(2)
            opcode, n = b0 & 0x0F, b1 & 0x7F
            if n == 126:
                n = int.from_bytes(await reader.readexactly(2), "big")
            elif n == 127:
                n = int.from_bytes(await reader.readexactly(8), "big")
            mask = await reader.readexactly(4) if b1 & 0x80 else b"\0\0\0\0"
            raw = await reader.readexactly(n)
            payload = bytes(c ^ mask[i % 4] for i, c in enumerate(raw))
            if opcode == 0x9:
                writer.write(ws_frame(payload, 0xA))
            elif opcode == 0x8:
                writer.write(ws_frame(payload[:2], 0x8))
                return
            elif opcode == 0x1:
                self._request(writer, payload)

    def _request(self, writer: asyncio.StreamWriter, payload: bytes) -> None:
        try:
            msg: dict[str, Any] = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return
        writer.write(ws_frame(orjson.dumps({"result": None, "id": msg.get("id")})))
        if msg.get("method") == "SUBSCRIBE" and STREAM in msg.get("params", []):
            self._subscribed(writer)

    def _subscribed(self, writer: asyncio.StreamWriter) -> None:
        self.subscriptions += 1
        if self.replay_task is None:
            self.replay_task = asyncio.get_running_loop().create_task(self._replay(writer))

    async def _replay(self, writer: asyncio.StreamWriter) -> None:
        wire, stamps, n, batch, rate = self.wire, self.stamps, len(self.wire), self.batch, self.rate
        clock, now_ns = time.perf_counter, time.time_ns
        start = clock()
        i = 0
        while i < n:
            if rate is None:
                k = min(n, i + batch)
            else:
                k = min(n, int((clock() - start) * rate) + 1, i + 4 * batch)
            if k > i:
                stamp = now_ns()
                writer.write(b"".join(wire[i:k]))
                for j in range(i, k):
                    stamps[j] = stamp
                i = self.sent = k
            if rate is None:
                await writer.drain()
            elif i < n:
                await asyncio.sleep(max(0.0, start + i / rate - clock()))


async def _main(args: argparse.Namespace) -> None:
    exchange = FakeExchange(build(args.frames).frames, args.rate)
    server = await asyncio.start_server(exchange.handle, "127.0.0.1", args.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("ready", flush=True)
    await stop.wait()
    server.close()
    Path(args.stamps).write_bytes(exchange.stamps.tobytes())
    report = {"sent": exchange.sent, "connections": exchange.connections, "subscriptions": exchange.subscriptions}
    print(orjson.dumps(report).decode(), flush=True)


def main(argv: list[str] | None = None) -> int:
    """Child-process entry point (see the module docstring)."""
    p = argparse.ArgumentParser(description="benchmark fake exchange (Binance USD-M aggTrade replay)")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--frames", type=int, required=True)
    p.add_argument("--rate", type=float, default=None)
    p.add_argument("--stamps", required=True)
    asyncio.run(_main(p.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
