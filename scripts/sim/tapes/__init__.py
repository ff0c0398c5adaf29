"""Replay tapes for the exchange simulator: recorded frames and frames derived from them.

A *tape* is one native stream's frames in order, each with a tape time (seconds since the
tape's source started, from the recorded receive timestamps). The simulator replays a tape
per (connection, subscribed stream). Everything is read in place through ``scripts.tapes``
(never copied into the tree), loaded lazily on first use and cached per process (``store``).

Modules: ``catalog`` (ids, labels, what exists), ``store`` (load + cache), ``recorded`` (one builder per
source), ``bars`` / ``tickers`` / ``book`` (derived tapes), ``aggtrade``, ``userdata`` (private fixtures).

Tapes and where each comes from (labels: the ``SRC_*`` constants; see ``../shared/exchange-ws-samples/README.md``):

==========================================  ===============================================================
native stream / topic                       source
==========================================  ===============================================================
Binance ``btcusdt@trade``                   recorded 2024-08-08, hftbacktest (21,313 frames)
Binance ``btcusdt@aggTrade``                DERIVED: the 2024 recorded trades aggregated (10,447 frames,
                                            ``aggtrade``: same ms, price and side; synthetic ``a``)
Binance ``btcusdt@bookTicker``              recorded 2024-08-08, hftbacktest (66,089 frames)
Binance ``btcusdt@depth@0ms``               recorded 2024-08-08, hftbacktest (6,551 frames)
Binance ``btcusdt@kline_1m``, ``_5m``       DERIVED from the 2024 recorded trades (binance_usdm.md §5 shape)
Binance ``<sym>@kline_1m``, ``@aggTrade``,  recorded 2021-07-22, cryptofeed; sym in sushiusdt, akrousdt,
``@depth@100ms``, ``@bookTicker``           keepusdt, ctkusdt
BitMart ``futures/klineBin1H:ETHUSDT``,     JKorf BitMart.Net fixture push frames (Concurrent.txt, Klines.txt,
``klineBin1D:ETHUSDT``, ``trade:ETHUSDT``   Trades.txt), minified, one frame each
BitMart ``futures/trade:BTCUSDT``,          DERIVED from the Binance 2024 recorded trades — no real
``futures/klineBin<tf>:BTCUSDT`` (9 tfs)    multi-message BitMart recording exists (samples README)
BitMart ``futures/ticker`` (all contracts)  JKorf ``Ticker.txt`` fixture (doc example; its symbol is BTCUSDT)
BitMart ``futures/ticker:AXONUSDT``         JKorf ``TickerAlternateIdentifier.txt`` (group ``...AXONUSDT@100ms``)
BitMart ``futures/ticker:BTCUSDT``          DERIVED: 2024 trades, one push per second of tape time
BitMart ``futures/bookticker:BTCUSDT``      DERIVED: one push per recorded 2024 ``btcusdt@bookTicker`` frame
BitMart ``futures/depthIncrease{5,20,50}``  DERIVED: 2024 REST snapshot + ``btcusdt@depth@0ms``;
``:BTCUSDT[@100ms|@200ms]``                 ``book.derive_bitmart_depth``
Binance ``btcusdt@ticker``                  DERIVED: 2024 trades, one 24hrTicker per second of tape time
Binance ``btcusdt@depth[@100ms|@500ms]``    alias of the recorded ``btcusdt@depth@0ms`` (``tape_key``)
Binance ``<2021 sym>@depth[@0ms|@500ms]``   alias of the recorded ``<sym>@depth@100ms``
Gate ``futures.order_book_update:<C>``      recorded 2023-05-24, cryptofeed (10 contracts, ``GATE_RECORDED_CONTRACTS``)
Gate ``futures.book_ticker:<C>``            recorded 2023-05-24 (5 contracts had frames: ``GATE_BOOK_TICKER_CONTRACTS``)
Gate ``futures.candlesticks:1m_FRONT_USDT`` recorded 2023-05-24 (the capture's only candle frame)
Gate ``futures.trades:ETH_USDT``,           JKorf GateIo.Net fixture push frames (doc-derived)
``futures.tickers:ETH_USDT``
Gate ``futures.trades:BTC_USDT``,           DERIVED from the Binance 2024 recorded trades (``bars.derive_gate``,
``futures.candlesticks:1m_BTC_USDT``,       ``tickers``)
``futures.tickers:BTC_USDT``
==========================================  ===============================================================

Fixture frames are served only on the channel and symbol they were written for: JKorf's BitMart
``Ticker.txt`` (a doc example whose symbol is BTCUSDT, last price 146.24) only on the all-contracts
``futures/ticker``, never on ``futures/ticker:BTCUSDT``; nautilus ``ticker_stream.json`` (BTCUSDT,
2023 values) is not served at all, since ``btcusdt@ticker`` is derived from the 2024 tape and the
two would mix prices 45k apart.

REST snapshots (``rest_snapshot``), served verbatim: Binance ``BTCUSDT`` (the 2024 capture's REST
line), ``SUSHIUSDT``/``AKROUSDT``/``KEEPUSDT``/``CTKUSDT`` (``BINANCE_FUTURES.http.0.0``, 2021) and the
10 Gate contracts (``GATEIO_FUTURES.http.0.0``, 2023, with ``id``). Each recording's snapshot is
bridged by a frame near the start of the matching depth tape (binance_usdm.md §6, exchanges.md
§2.5), and every replay starts at the tape's first frame: a client that buffers from its
subscribe and then fetches the snapshot finds the bridging frame in its buffer. The snapshot is
static, so a resync in mid-stream must also restart the stream (resubscribe or reconnect).

Binance tapes hold the bare ``data`` payload text (sliced out of the recorded envelope, so it
is byte-identical to the recording); the simulator re-wraps it for ``/stream`` connections.
BitMart and Gate tapes hold whole push frames (Gate's recorded ones verbatim).
"""

from __future__ import annotations

from scripts.sim.tapes.book import bitmart_depth_snapshot
from scripts.sim.tapes.catalog import (
    BINANCE,
    BINANCE_2021_SYMBOLS,
    BINANCE_DERIVED_KLINES_MS,
    BITMART,
    BITMART_DEPTH_LEVELS,
    BITMART_DEPTH_SPEEDS_MS,
    BITMART_SYMBOLS,
    BITMART_TIMEFRAMES_S,
    CATALOG,
    GATE,
    GATE_BOOK_TICKER_CONTRACTS,
    GATE_BTC_USDT_MULTIPLIER,
    GATE_CONTRACTS,
    GATE_RECORDED_CONTRACTS,
    REST_CATALOG,
    SRC_BINANCE_2021,
    SRC_BINANCE_2024,
    SRC_BITMART_FIXTURE,
    SRC_DERIVED,
    SRC_DERIVED_AGG,
    SRC_DERIVED_BOOK,
    SRC_GATE_2023,
    SRC_GATE_FIXTURE,
    RestSnapshot,
    Tape,
    source_of,
    tape_key,
)
from scripts.sim.tapes.store import cached_rest_snapshot, cached_tape, get_tape, preload, rest_snapshot
from scripts.sim.tapes.userdata import (
    BINANCE_USER_STREAM,
    SRC_BINANCE_USER_FIXTURE,
    binance_open_orders,
    binance_position_risk,
    bitmart_open_orders,
    bitmart_positions,
    gate_orders,
    gate_positions,
    private_frames,
)

__all__ = [
    "BINANCE",
    "BINANCE_2021_SYMBOLS",
    "BINANCE_DERIVED_KLINES_MS",
    "BINANCE_USER_STREAM",
    "BITMART",
    "BITMART_DEPTH_LEVELS",
    "BITMART_DEPTH_SPEEDS_MS",
    "BITMART_SYMBOLS",
    "BITMART_TIMEFRAMES_S",
    "CATALOG",
    "GATE",
    "GATE_BOOK_TICKER_CONTRACTS",
    "GATE_BTC_USDT_MULTIPLIER",
    "GATE_CONTRACTS",
    "GATE_RECORDED_CONTRACTS",
    "REST_CATALOG",
    "SRC_BINANCE_2021",
    "SRC_BINANCE_2024",
    "SRC_BINANCE_USER_FIXTURE",
    "SRC_BITMART_FIXTURE",
    "SRC_DERIVED",
    "SRC_DERIVED_AGG",
    "SRC_DERIVED_BOOK",
    "SRC_GATE_2023",
    "SRC_GATE_FIXTURE",
    "RestSnapshot",
    "Tape",
    "binance_open_orders",
    "binance_position_risk",
    "bitmart_depth_snapshot",
    "bitmart_open_orders",
    "bitmart_positions",
    "cached_rest_snapshot",
    "cached_tape",
    "gate_orders",
    "gate_positions",
    "get_tape",
    "preload",
    "private_frames",
    "rest_snapshot",
    "source_of",
    "tape_key",
]
