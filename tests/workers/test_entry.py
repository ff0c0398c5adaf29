"""``python -m workers``: arq's CLI for ``WorkerSettings`` on uvloop's event-loop policy."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import uvloop

import workers.__main__ as entry


def test_runs_arq_cli_for_worker_settings_on_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def fake_cli_main(args: list[str], prog_name: str) -> None:
        seen["args"], seen["prog"] = args, prog_name
        seen["policy"] = asyncio.get_event_loop_policy()

    monkeypatch.setattr(entry.cli, "main", fake_cli_main)
    try:
        entry.main(["--burst"])
    finally:
        asyncio.set_event_loop_policy(None)  # the rest of the session keeps asyncio's default
    assert seen["args"] == ["workers.settings.WorkerSettings", "--burst"]
    assert seen["prog"] == "python -m workers"
    assert isinstance(seen["policy"], uvloop.EventLoopPolicy)
