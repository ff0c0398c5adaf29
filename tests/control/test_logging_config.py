"""control.logging_config: the worker and control-server set-ups, run in a fresh interpreter (global state)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

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
