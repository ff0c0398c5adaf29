"""``python -m workers [arq options]``: one arq worker process (``workers.settings.WorkerSettings``) on uvloop.

The same as ``python -m arq workers.settings.WorkerSettings`` except the event loop: arq's ``Worker`` takes the
loop the policy gives it, so uvloop's policy is installed first (when uvloop is importable, i.e. everywhere but
Windows). uvloop's socket transports and loop cost the hot read path less CPU per frame than asyncio's
selector loop (measured with ``scripts/bench_ingest.py``: README "Benchmark"). Other arguments (``--burst``,
``--verbose``, ...) go to arq's CLI.
"""

from __future__ import annotations

import asyncio
import sys

from arq.cli import cli


def main(argv: list[str] | None = None) -> None:
    """Install uvloop's event-loop policy (if available), then run arq's CLI for ``WorkerSettings``."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        pass
    else:
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    args = sys.argv[1:] if argv is None else argv
    cli.main(args=["workers.settings.WorkerSettings", *args], prog_name="python -m workers")


if __name__ == "__main__":
    main()
