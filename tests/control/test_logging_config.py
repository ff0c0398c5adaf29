"""control.logging_config: the worker and control-server set-ups, run in a fresh interpreter (global state)."""

from __future__ import annotations

import logging
import re
import secrets
import subprocess
import sys
from pathlib import Path

import orjson

from control.logging_config import request_id_var
from control.redact import MASK, install_redaction, uninstall_redaction
from tests.app._logs import json_handler

REPO = Path(__file__).resolve().parents[2]
STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}"


def run(code: str) -> tuple[str, str]:
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60, check=True
    )
    return proc.stdout, proc.stderr


def test_worker_lines_carry_the_worker_id_on_stdout_once() -> None:
    out, err = run(
        "import logging\n"
        "from control.logging_config import configure_logging\n"
        "for _ in range(2):  # a second call replaces the handler: each line once\n"
        "    configure_logging(level='INFO', loggers=('workers', 'control'), stream='stdout', worker_id='w-01')\n"
        "logging.getLogger('workers.connection').info('hello %s', 'there')\n"
        "logging.getLogger('workers.x').debug('hidden')\n"
        "logging.getLogger('control.store').warning('careful')\n"
        "logging.getLogger('other').warning('not ours')\n"
    )
    lines = out.splitlines()
    assert len(lines) == 2, out
    assert re.fullmatch(rf"{STAMP} INFO \[w-01\] workers\.connection: hello there", lines[0]), lines[0]
    assert re.fullmatch(rf"{STAMP} WARNING \[w-01\] control\.store: careful", lines[1]), lines[1]
    assert err == "not ours\n"  # no handler for it: logging's last resort, as before


def test_control_server_logs_everything_to_stderr() -> None:
    out, err = run(
        "import logging\n"
        "from control.logging_config import configure_logging\n"
        "configure_logging(level='DEBUG', stream='stderr', levels={'sse_starlette': 'INFO'})\n"
        "logging.getLogger('hypercorn.error').debug('dbg')\n"
        "logging.getLogger('sse_starlette.sse').debug('chunk')\n"
        "logging.getLogger('app.serve').info('up')\n"
    )
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 2, err
    assert re.fullmatch(rf"{STAMP} DEBUG hypercorn\.error: dbg", lines[0]), lines[0]
    assert re.fullmatch(rf"{STAMP} INFO app\.serve: up", lines[1]), lines[1]


def test_json_lines_carry_role_worker_request_connection_and_topic() -> None:
    out, _ = run(
        "import asyncio, logging\n"
        "from control.logging_config import configure_logging, conn_id_var, request_id_var\n"
        "configure_logging(level='INFO', loggers=('workers',), stream='stdout', worker_id='w-02', fmt='json',\n"
        "                  role='worker')\n"
        "log = logging.getLogger('workers.jobs')\n"
        "log.info('plain %d', 1)\n"
        "request_id_var.set('req-1')\n"
        "async def conn():\n"
        "    conn_id_var.set('bitmart.public.1')\n"
        "    log.warning('in a connection', extra={'topic': 'bitmart:trade:BTCUSDT'})\n"
        "asyncio.run(conn())\n"
        "log.info('after')\n"
    )
    lines = [orjson.loads(line) for line in out.splitlines()]
    assert len(lines) == 3, out
    first, second, third = lines
    assert re.fullmatch(STAMP, first["time"])
    assert {k: first[k] for k in ("level", "logger", "message", "role", "worker_id")} == {
        "level": "INFO", "logger": "workers.jobs", "message": "plain 1", "role": "worker", "worker_id": "w-02"}
    assert "request_id" not in first and "conn_id" not in first and "topic" not in first  # absent, not null
    assert (second["request_id"], second["conn_id"], second["topic"]) == ("req-1", "bitmart.public.1",
                                                                        "bitmart:trade:BTCUSDT")
    assert third["request_id"] == "req-1" and "conn_id" not in third  # the task's context ended with it


def test_text_lines_end_with_the_context_that_applies() -> None:
    _, err = run(
        "import logging\n"
        "from control.logging_config import configure_logging, request_id_var\n"
        "configure_logging(level='INFO', stream='stderr', role='api')\n"
        "request_id_var.set('abc')\n"
        "logging.getLogger('app.x').info('hello', extra={'topic': 'bitmart:kline:BTCUSDT:1m'})\n"
    )
    assert re.fullmatch(rf"{STAMP} INFO app\.x: hello  request_id=abc topic=bitmart:kline:BTCUSDT:1m\n", err), err


def test_json_lines_mask_secrets_in_context_fields() -> None:
    """A secret that reaches a JSON line through a context field (a client's X-Request-ID, an ``extra=``) is masked
    like one in the message: the formatter redacts the whole line."""
    secret, piece = f"j{secrets.token_urlsafe(24)}", 8
    uninstall_redaction()
    install_redaction([secret])
    handler = json_handler()
    log = logging.getLogger("test.redact.json")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    token = request_id_var.set(f"req-{secret}")
    try:
        log.info("message with %s", secret, extra={"topic": f"t:{secret}"})
    finally:
        request_id_var.reset(token)
        log.removeHandler(handler)
        uninstall_redaction()
    (line,) = handler.lines
    assert secret[:piece] not in line
    record = orjson.loads(line)
    assert record["message"] == f"message with {MASK}" and record["request_id"] == f"req-{MASK}"
    assert record["topic"] == f"t:{MASK}" and record["role"] == "api" and record["level"] == "INFO"
