"""``ExchangeSimulator``: the simulator's public surface (lifecycle, URLs, faults, accounts, status).

The engine is ``scripts.sim.core.SimCore``; each exchange is a venue from ``scripts.sim.registry.VENUES``.
"""

from __future__ import annotations

import asyncio
import logging
from decimal import Decimal
from pathlib import Path
from typing import Any, Self

from aiohttp import WSCloseCode, web

from scripts.sim import tapes
from scripts.sim.binance_private import BinancePrivate
from scripts.sim.conn import CLOSE_TIMEOUT_S
from scripts.sim.control import Control, build_status
from scripts.sim.core import SimCore
from scripts.sim.registry import VENUES
from scripts.sim.tapes import BINANCE, GATE

__all__ = ["ExchangeSimulator"]

log = logging.getLogger(__name__)


class ExchangeSimulator(SimCore):
    """BitMart + Binance USD-M + Gate.io futures simulator on ``host:port`` (``port=0`` picks a free one).

    :param speed: recorded pace multiplier (2.0 = twice as fast); 0 sends as fast as the socket drains.
    :param rate: fixed frames/s per stream; overrides ``speed``.
    :param loop: restart a tape when it ends (the next cycle starts one mean gap after the last
        frame, at least 1 s of tape time later); frames repeat verbatim.
    :param binance_ping_interval_s: server protocol ping period (§3: 3 min).
    :param binance_pong_timeout_s: close a Binance socket when no pong arrives this long after a ping (§3: 10 min).
    :param gate_ping_interval_s: Gate server protocol ping period (§2.4: Gate pings; period UNVERIFIED).
    :param gate_pong_timeout_s: close a Gate socket when no pong arrives this long after a ping (UNVERIFIED).
    :param samples_dir: recordings folder; default ``scripts.tapes.samples_dir()``.
    :param record_sent: append every data frame to ``sent_data``; turn off for long benchmark runs.
    :param listen_key_ttl_s: Binance listenKey validity (binance_usdm.md §7: 60 min); each POST/PUT restarts it.
        Measured on the monotonic clock (``set_clock`` does not move it); on lapse the key's sockets get
        ``listenKeyExpired``.

    Raises ValueError for a negative ``speed``, a non-positive ``rate`` or ``listen_key_ttl_s``.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        speed: float = 1.0,
        rate: float | None = None,
        loop: bool = False,
        binance_ping_interval_s: float = 180.0,
        binance_pong_timeout_s: float = 600.0,
        gate_ping_interval_s: float = 30.0,
        gate_pong_timeout_s: float = 60.0,
        samples_dir: Path | None = None,
        record_sent: bool = True,
        listen_key_ttl_s: float = 3600.0,
    ) -> None:
        if speed < 0 or (rate is not None and rate <= 0):
            raise ValueError("speed must be >= 0 and rate > 0")
        super().__init__(host=host, port=port, speed=speed, rate=rate, loop=loop, samples_dir=samples_dir,
                         record_sent=record_sent)  # fmt: skip
        options: dict[str, dict[str, float]] = {
            BINANCE: {
                "ping_interval_s": binance_ping_interval_s,
                "pong_timeout_s": binance_pong_timeout_s,
                "listen_key_ttl_s": listen_key_ttl_s,
            },
            GATE: {"ping_interval_s": gate_ping_interval_s, "pong_timeout_s": gate_pong_timeout_s},
        }
        self.venues = {cls.name: cls(self, **options.get(cls.name, {})) for cls in VENUES}
        self._runner: web.AppRunner | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Bind and serve. Tapes load lazily on first subscribe (or call ``preload()``)."""
        if self._runner is not None:
            raise RuntimeError("simulator already started")
        runner = web.AppRunner(self._build_app(), access_log=None, shutdown_timeout=CLOSE_TIMEOUT_S)
        await runner.setup()
        try:
            await web.TCPSite(runner, self._host, self._port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = runner.addresses[0][1]
        log.info("simulator listening on %s", self.base_url)

    async def stop(self) -> None:
        """Close every socket (1001), stop serving and await every task this simulator started."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        self._private.close()
        conns = list(self._conns.values())
        await asyncio.gather(*(t for c in conns for t in self._cancel_tasks(c)), return_exceptions=True)
        await asyncio.gather(*(self._close(c, WSCloseCode.GOING_AWAY, b"simulator stopping") for c in conns))
        await runner.cleanup()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._notify()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def preload(self) -> None:
        """Load every tape now (about 2 s, once per process) so the first subscribe is not delayed."""
        await asyncio.to_thread(tapes.preload, self._samples_dir)

    def _build_app(self) -> web.Application:
        app = web.Application()
        for venue in self.venues.values():
            venue.add_routes(app.router)
        Control(self).add_routes(app.router)
        return app

    # ------------------------------------------------------------------ URLs and observation

    def urls(self) -> dict[str, str]:
        """Settings name -> URL for every venue (``BITMART_PUBLIC_WS_URI`` ...), in registry order."""
        out: dict[str, str] = {}
        for venue in self.venues.values():
            out |= venue.urls()
        return out

    @property
    def bitmart_public_url(self) -> str:
        return self.urls()["BITMART_PUBLIC_WS_URI"]

    @property
    def bitmart_private_url(self) -> str:
        """BitMart private socket (login, orders, positions, assets; exchanges.md §1.3)."""
        return self.urls()["BITMART_PRIVATE_WS_URI"]

    @property
    def bitmart_rest_url(self) -> str:
        """BitMart futures REST base: the client appends ``/contract/private/get-open-orders`` and so on."""
        return self.urls()["BITMART_REST_URI"]

    @property
    def binance_base_url(self) -> str:
        """The client appends ``/market/stream``, ``/public/ws`` and so on."""
        return self.urls()["BINANCE_USDM_WS_URI"]

    @property
    def binance_rest_url(self) -> str:
        """Binance USD-M REST base: the client appends ``/fapi/v1/depth?...``."""
        return self.urls()["BINANCE_USDM_REST_URI"]

    @property
    def gate_ws_url(self) -> str:
        """Gate.io USDT futures WebSocket (``wss://fx-ws.gateio.ws/v4/ws/usdt`` in production)."""
        return self.urls()["GATEIO_WS_URI"]

    @property
    def gate_rest_url(self) -> str:
        """Gate.io REST base: the client appends ``/api/v4/futures/usdt/order_book?...``."""
        return self.urls()["GATEIO_REST_URI"]

    def status(self) -> dict[str, Any]:
        """JSON-ready snapshot: URLs, settings, faults, connections, subscriptions, tapes, counters."""
        return build_status(self)

    # ------------------------------------------------------------------ private side (scripts.sim.private)

    def add_account(self, exchange: str, api_key: str, api_secret: str, memo: str = "") -> None:
        """Make an account known (``memo``: the BitMart API memo or the Gate uid). Secrets stay in memory only."""
        self._private.add_account(exchange, api_key, api_secret, memo)

    def remove_account(self, exchange: str, api_key: str) -> bool:
        """Forget an account (its Binance listen key too); False if it was unknown."""
        return self._private.remove_account(exchange, api_key)

    async def push_private(
        self, exchange: str, api_key: str, channel: str, frame_json: str | dict[str, Any] | list[Any]
    ) -> int:
        """Send one frame to that account's live private sockets; returns how many got it (``PrivateSide.push``)."""
        return await self._private.push(exchange, api_key, channel, frame_json)

    async def expire_listen_key(self, api_key: str) -> int:
        """Send ``listenKeyExpired`` to the Binance account's user sockets, which then stay silent."""
        private = self.venues[BINANCE].private
        assert isinstance(private, BinancePrivate)
        return await private.expire_listen_key(api_key)

    def set_clock(self, epoch_ms: int | None) -> None:
        """Set the clock the private APIs check timestamps against (it runs on from ``epoch_ms``); None: real time."""
        self._private.set_clock(epoch_ms)

    def now_ms(self) -> int:
        """The simulator clock in epoch milliseconds (see ``set_clock``)."""
        return self._private.now_ms()

    # ------------------------------------------------------------------ order API (scripts.sim.matching)

    async def set_price(self, exchange: str, symbol: str, last: Decimal, mark: Decimal | None = None) -> None:
        """Pin a traded symbol's last (and mark/index) price, match resting orders and fire triggers, and return
        once the resulting pushes were sent. ``engine.release(exchange, symbol)`` hands it back to the tape.
        Raises ``matching_types.Rejected`` for a symbol the order API does not trade."""
        self.engine.set_price(exchange, symbol, last, mark)
        await self.flush_orders()

    # ------------------------------------------------------------------ faults

    async def drop_connections(self, exchange: str | None = None) -> int:
        """Abort matching sockets without a close handshake (the client sees 1006); returns the count."""
        dropped = 0
        for conn in list(self._conns.values()):
            if exchange is None or conn.exchange == exchange:
                self._cancel_tasks(conn)
                if conn._transport is not None:
                    conn._transport.abort()
                dropped += 1
        self.stats["connections_dropped"] += dropped
        log.info("dropped %d connection(s) (exchange=%s)", dropped, exchange or "any")
        return dropped

    def set_dead(self, enabled: bool) -> None:
        """Dead peer: sockets stay open but nothing is sent — no data, acks, errors, pongs or pings.

        Closes the simulator would initiate (rate limit, oversize, pong timeout) are skipped too.
        A client's close frame is still answered so that its ``close()`` returns promptly.
        """
        self._dead = enabled
        self._update_gate()

    def set_silent(self, enabled: bool) -> None:
        """Silent feed: data pushes pause (replay resumes where it stopped); acks and pongs still go out."""
        self._silent = enabled
        self._update_gate()

    def reject(self, native: str, error: str | None = None) -> None:
        """Make future subscribes of ``native`` fail with the exchange's error shape (``error`` = its text).

        BitMart (native = topic ``futures/trade:BTCUSDT``): ``{"action":"subscribe","group":<topic>,
        "success":false,"error":...}`` (default text ``Invalid channel: not found <topic>``, §1.4).
        Binance (native = stream ``btcusdt@trade``): ``{"error":{"code":2,"msg":...},"id":N}`` (default
        ``Invalid request: invalid stream``, §4). Gate (native = ``f"{channel}:{contract}"``, e.g.
        ``futures.trades:BTC_USDT``, ``futures.order_book_update:RDNT_USDT``; candles
        ``futures.candlesticks:1m_BTC_USDT``): the whole request gets ``{"error":{"code":2,"message":...},
        "result":{"status":"fail"}}`` (default ``unknown contract <C>``, exchanges.md §2.4).
        """
        self._rejects[native] = error

    def unreject(self, native: str | None = None) -> None:
        """Undo ``reject`` for ``native``, or for everything when None."""
        if native is None:
            self._rejects.clear()
        else:
            self._rejects.pop(native, None)

    def fail_rest(self, n: int) -> None:
        """Answer the next ``n`` REST snapshot calls with HTTP 429 (0 cancels).

        Binance: ``Retry-After: 1`` and ``{"code":-1003,"msg":"Too many requests; ..."}``; Gate:
        ``{"label":"TOO_MANY_REQUESTS","message":"Request Rate Limit Exceeded"}`` (exchanges.md §2.8).
        """
        if n < 0:
            raise ValueError("n must be >= 0")
        self._rest_failures = n

    def _update_gate(self) -> None:
        if self._dead or self._silent:
            self._data_open.clear()
        else:
            self._data_open.set()
        self._notify()
