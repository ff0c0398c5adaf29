"""Shared pieces of the ingest benchmarks (``scripts.bench_ingest``, ``scripts.bench_vs_cryptofeed``).

Every piece is light on purpose so the benchmark measures the process under test, not itself:

- ``frames``: the recorded Binance USD-M BTCUSDT trades as ``aggTrade`` frames, pre-encoded once;
- ``exchange``: a minimal local fake exchange (raw asyncio WebSocket server) that writes those frames in
  batches, as fast as the socket drains or paced, and stamps each frame's send time;
- ``subscriber``: a raw-socket hiredis pub/sub subscriber that stamps arrivals;
- ``procs``: a fresh redis-server per run, CPU pinning, CPU time and peak RSS of a process, percentiles.
"""
