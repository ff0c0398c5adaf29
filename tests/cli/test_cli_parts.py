"""The CLI's pure parts: request bodies, the SSE parser, error envelopes, addresses, and the supervisorctl wrapper."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import typer

from cli.client import CliError, base_url, error_from
from cli.ctl import ROOT, ctl_command, ctl_env, project_root
from cli.main import request_body
from cli.render import filter_subscriptions, summary_of
from cli.tail import SseParser


def test_request_bodies_follow_the_api() -> None:
    assert request_body("klines", ["BTCUSDT", "1m", "5m"], None, None) == {"symbol": "BTCUSDT", "tfs": ["1m", "5m"]}
    assert request_body("klines", ["BTCUSDT", "ETHUSDT", "1H"], "bitmart", None) == {
        "exchange": "bitmart", "symbols": ["BTCUSDT", "ETHUSDT"], "tfs": ["1H"]}
    assert request_body("trades", ["BTC_USDT"], "gateio", None) == {"exchange": "gateio", "symbol": "BTC_USDT"}
    assert request_body("depth", ["BTCUSDT"], None, 20) == {"symbol": "BTCUSDT", "levels": 20}
    assert request_body("orders", [], None, None) == {}
    assert request_body("balances", ["alice"], "bitmart", None) == {"exchange": "bitmart", "account": "alice"}
    for channel, args in (("klines", ["BTCUSDT"]), ("klines", ["1m"]), ("trades", []), ("orders", ["a", "b"])):
        with pytest.raises(typer.BadParameter):
            request_body(channel, args, None, None)


def test_sse_parser_builds_events_and_skips_comments() -> None:
    parser = SseParser()
    lines = [": ping", "event: trade", 'data: {"a":1}', "id: fp:1-0", "retry: 2000", "", "data: x", "data: y", ""]
    events = [e for e in map(parser.feed, lines) if e is not None]
    assert [(e.event, e.data, e.id) for e in events] == [("trade", '{"a":1}', "fp:1-0"), ("message", "x\ny", None)]


def test_error_envelope_message_is_what_the_user_sees() -> None:
    body = {"error": {"code": "validation_error", "message": "tfs.0: unknown timeframe '3m'", "details": {}}}
    err = error_from(400, body)
    assert str(err) == "HTTP 400 validation_error: tfs.0: unknown timeframe '3m'"
    assert str(error_from(502, None, "<html>bad gateway</html>")) == "HTTP 502 http_error: <html>bad gateway</html>"
    assert str(CliError(0, "unreachable", "no answer")) == "unreachable: no answer"


def test_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CTRL_ADDR", raising=False)
    assert base_url() == "http://127.0.0.1:8089"
    monkeypatch.setenv("CTRL_ADDR", "10.0.0.5:9000")
    assert base_url() == "http://10.0.0.5:9000"
    assert base_url("https://fp.example/") == "https://fp.example"


def test_status_filters_and_summary() -> None:
    records = [{"topic": "bitmart:kline:BTCUSDT:1m", "state": "active", "stale": True},
               {"topic": "bitmart:trade:BTCUSDT", "state": "failed"},
               {"topic": "gateio:trade:BTC_USDT", "state": "active", "stale": False}]  # fmt: skip
    assert [r["topic"] for r in filter_subscriptions(records, state="active", exchange="bitmart")] == [
        "bitmart:kline:BTCUSDT:1m"]
    assert len(filter_subscriptions(records, topic="bitmart:")) == 2
    assert len(filter_subscriptions(records, stale=True)) == 1
    assert summary_of(records) == {"state": {"active": 2, "failed": 1, "stale": 1},
                                   "exchange": {"bitmart": 2, "gateio": 1}}  # fmt: skip


def test_ctl_fills_in_what_scripts_run_sets(tmp_path: Path) -> None:
    env = ctl_env({"PATH": "/usr/bin", "WORKERS": "3"}, root=tmp_path)
    assert env["FEEDPLANE_RUN_DIR"] == str(tmp_path / "run") and env["WORKERS"] == "3"
    assert env["FEEDPLANE_PYTHON"] == sys.executable
    assert ctl_env({"FEEDPLANE_RUN_DIR": "/elsewhere"})["FEEDPLANE_RUN_DIR"] == "/elsewhere"
    command = ctl_command(["tail", "-f", "worker_00"])
    assert command[-3:] == ["tail", "-f", "worker:worker_00"] and command[-4] == str(ROOT / "supervisord.conf")
    assert project_root(ROOT) == ROOT and project_root(tmp_path) == ROOT


@pytest.mark.integration  # subprocesses
def test_ctl_works_without_the_runner_environment(tmp_path: Path) -> None:
    """Plain supervisorctl fails on supervisord.conf's environment names; scripts/ctl reaches the socket (here
    absent: no supervisord runs in this run dir, so it says so instead of failing to read its configuration)."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    plain = subprocess.run([sys.executable, "-m", "supervisor.supervisorctl", "-c", "supervisord.conf", "status"],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert "cannot be expanded" in plain.stdout + plain.stderr
    wrapped = subprocess.run(["scripts/ctl", "status"], cwd=ROOT, env={**env, "FEEDPLANE_RUN_DIR": str(tmp_path)},
                             capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    output = wrapped.stdout + wrapped.stderr
    assert "cannot be expanded" not in output and "no such file" in output.lower(), output
    assert wrapped.returncode != 0
