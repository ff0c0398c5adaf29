"""``GET /docs`` renders in a real headless browser with no network beyond the server: Swagger UI draws every
operation of ``/openapi.json`` from the assets the server ships (skipped where no chromium is installed)."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on this machine")
async def test_docs_page_renders_every_operation(start_server: Callable[..., Any]) -> None:
    server = await start_server()
    assert CHROMIUM is not None
    proc = await asyncio.create_subprocess_exec(
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--proxy-server=127.0.0.1:9",  # no other host
        "--proxy-bypass-list=127.0.0.1", "--virtual-time-budget=10000", "--dump-dom", f"{server.url}/docs",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    dom, _ = await asyncio.wait_for(proc.communicate(), 60)
    text = dom.decode()
    assert "Feedplane control API" in text and "OAS 3.1" in text
    for path in ("/health/ready", "/status", "/klines/subscribe", "/sse/orders/{account}", "/accounts"):
        assert f">{path}<" in text.replace("<wbr>", ""), path
    assert text.count("opblock-summary-path") >= 34
