"""Local exchange simulator: BitMart futures v2, Binance USD-M and Gate.io USDT futures on loopback.

One aiohttp app on one port speaks the three WebSocket protocols and the two REST order-book
snapshot endpoints, replays recorded frames (``scripts.sim.tapes``: what is recorded and what is
derived) for the streams each client subscribed, with fault injection. Used in-process by the
workers' connection tests, by the end-to-end test and the offline demo (``python -m scripts.simulator``)
and by the ingest benchmark.

Endpoints:

- BitMart public: ``/api?protocol=1.1`` (exchanges.md §1.1).
- Binance USD-M: ``/public/{ws,stream}``, ``/market/{ws,stream}``, legacy ``/ws``, ``/stream``; streams
  may also be given in the URL: ``/<route>/ws/<s1>/<s2>`` or ``/<route>/stream?streams=<s1>/<s2>``
  (binance_usdm.md §1).
- Gate.io USDT futures: ``/v4/ws/usdt`` (exchanges.md §2.1; protocol in ``scripts.sim.gate_wire``).
- REST snapshots: Binance ``GET /fapi/v1/depth?symbol=S&limit=N`` (binance_usdm.md §6), Gate
  ``GET /api/v4/futures/usdt/order_book?contract=C&limit=N&with_id=true`` (exchanges.md §2.5).
- Private side (``scripts.sim.private`` and ``scripts.sim.<exchange>_private``): BitMart ``/user?protocol=1.1`` (login + orders, positions,
  assets), Binance ``POST/PUT/DELETE /fapi/v1/listenKey`` and ``/private/ws[/<listenKey>]``, Gate
  ``futures.orders|positions|balances`` with per-request auth, signed REST snapshots of open orders and
  positions for all three; accounts via ``add_account``, ``POST /_sim/accounts`` or ``--accounts-file``.
- Order execution (``scripts.sim.matching`` engine; ``gate_orders``, ``binance_orders``): Gate
  ``/api/v4/futures/usdt/{orders,price_orders,positions/{c}[/leverage],dual_comp/…,dual_mode,accounts,contracts/{c}}``,
  Binance ``/fapi/v1/{order,algoOrder,openAlgoOrders,leverage,marginType,exchangeInfo}``; fills at the replayed
  trades' price, pushed on the account's private sockets; ``POST /_sim/price`` pins a price (tests of TP/SL).
- Control (JSON, ``scripts.sim.control``): ``GET /_sim/status``,
  ``POST /_sim/drop[?exchange=bitmart|binanceusdm|gateio]``, ``POST /_sim/dead?on=1|0``, ``POST /_sim/silent?on=1|0``,
  ``POST /_sim/reject?native=<n>[&error=<text>]``, ``DELETE /_sim/reject[?native=<n>]``, ``POST /_sim/fail_rest?n=<count>``.

Order-book sync against the simulator: each depth replay starts at its recording's first frame and
the REST snapshot is the one recorded in the same session, bridged by a frame near the start
(Binance: ``U <= lastUpdateId <= u``; Gate: ``U <= id + 1 <= u``). A client must buffer the stream
from its subscribe, fetch the snapshot, then drop/apply per the exchange's recipe — at ``speed=0`` the
whole tape may already be buffered when the snapshot arrives. The snapshot is static: a resync in
mid-stream must restart the stream too (unsubscribe + subscribe, or reconnect), because a fresh
snapshot alone no longer bridges the frames that follow (with ``loop`` the bridge comes round again
each cycle). Gate ``DIA_USDT`` cannot sync at all: its two recorded pushes end at the snapshot's
``id`` (exchanges.md §2.5: 9 of 10 contracts bridge). BitMart depthIncrease needs no REST: the first
push is a snapshot, and ``{"action":"request","args":[topic]}`` returns a fresh one (§1.6).

Replay: each (connection, subscribed stream) gets its own task that plays the stream's tape from
its first frame — at the recorded pace divided by ``speed``, as fast as the socket drains when
``speed == 0``, or at a fixed ``rate`` frames/s — and restarts it when ``loop`` is set.
Facts marked UNVERIFIED are choices where the reference docs say nothing.

Code (``scripts.sim``): ``server`` (``ExchangeSimulator``, the public surface), ``core`` (state, sockets,
sending), ``replay``, ``control`` (``/_sim/*``, status), ``venue`` (the per-exchange contract) and ``registry``
(the list of venues); one module per exchange — ``bitmart``, ``binance``, ``gate`` (+ ``gate_wire``) — and its
private side ``<exchange>_private`` on ``private`` (accounts, clock, pushes); the order API: ``matching`` (+
``matching_types``) and ``<exchange>_orders`` (+ ``<exchange>_order_wire``); ``tapes/`` (what is replayed).
This module is the entry point and re-exports the public names.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from pathlib import Path

from scripts.sim.binance import binance_stream_class
from scripts.sim.bitmart import BITMART_MAX_FRAME_BYTES
from scripts.sim.conn import ReceivedFrame, RestRequest, SimConnection
from scripts.sim.server import ExchangeSimulator
from scripts.sim.tapes import BINANCE, BITMART, GATE

__all__ = [
    "BINANCE",
    "BITMART",
    "BITMART_MAX_FRAME_BYTES",
    "GATE",
    "ExchangeSimulator",
    "ReceivedFrame",
    "RestRequest",
    "SimConnection",
    "binance_stream_class",
    "main",
]


async def _run_cli(args: argparse.Namespace) -> None:
    sim = ExchangeSimulator(
        host=args.host,
        port=args.port,
        speed=args.speed,
        rate=args.rate,
        loop=args.loop,
        samples_dir=args.samples_dir,
        record_sent=False,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await sim.preload()  # ~1 s, so the first client is not kept waiting
    for acct in _read_accounts(args.accounts_file):
        sim.add_account(acct["exchange"], acct["api_key"], acct["api_secret"], acct.get("memo", acct.get("uid", "")))
    async with sim:
        for name, url in sim.urls().items():
            print(f"{name}={url}", flush=True)
        print(f"# control: {sim.http_url}/_sim/status  (Ctrl-C to stop)", flush=True)
        await stop.wait()
    print("# simulator stopped", flush=True)


def _read_accounts(path: Path | None) -> list[dict[str, str]]:
    """``--accounts-file``: a JSON list of ``{"exchange","api_key","api_secret"[,"memo"|"uid"]}`` (secrets stay out
    of the command line and the process list). Raises SystemExit with the reason when it is unreadable."""
    if path is None:
        return []
    try:
        accounts = json.loads(path.read_text())
        if not isinstance(accounts, list) or not all(
            isinstance(a, dict) and {"exchange", "api_key", "api_secret"} <= a.keys() for a in accounts
        ):
            raise ValueError('expected a list of {"exchange","api_key","api_secret"[,"memo"]} objects')
    except (OSError, ValueError) as exc:
        raise SystemExit(f"--accounts-file {path}: {exc}") from None
    return accounts


def main(argv: list[str] | None = None) -> int:
    """``python -m scripts.simulator``: serve until SIGINT/SIGTERM, then exit 0."""
    p = argparse.ArgumentParser(prog="python -m scripts.simulator", description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9100, help="0 picks a free port")
    p.add_argument("--speed", type=float, default=1.0, help="recorded pace multiplier; 0 = as fast as possible")
    p.add_argument("--rate", type=float, default=None, help="fixed frames/s per stream (overrides --speed)")
    p.add_argument("--loop", action="store_true", help="restart each tape when it ends")
    p.add_argument("--samples-dir", type=Path, default=None, help="recordings folder (default: FEEDPLANE_SAMPLES)")
    p.add_argument("--accounts-file", type=Path, default=None,
                   help='JSON list of {"exchange","api_key","api_secret","memo"} accounts the private APIs accept')  # fmt: skip
    p.add_argument("--log-level", default="INFO")
    args = p.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    asyncio.run(_run_cli(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
