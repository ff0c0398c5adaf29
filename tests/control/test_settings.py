"""control.settings: every variable declared once; README's table is the declaration; per-exchange variables by role."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from control.exchanges import DECLARATIONS
from control.settings import Settings, SettingsError, settings_table
from control.settings_table import API_KEY, API_SECRET, REST, WS, declared
from control.topics import EXCHANGES

README = Path(__file__).resolve().parents[2] / "README.md"
#: Fields that are not environment variables of their own.
DERIVED = {"ctrl_port", "secrets_file", "exchanges"}


def readme_settings_table() -> str:
    """The markdown table under README's "## Settings" heading (header row to the first blank line)."""
    section = README.read_text().split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    start = section.index("| variable |")
    return section[start:].split("\n\n", 1)[0].rstrip("\n") + "\n"


def test_readme_table_is_the_declaration() -> None:
    expected = settings_table()
    assert readme_settings_table() == expected, "README's Settings table is stale: run python -m control.settings"


def test_every_field_is_declared_once() -> None:
    specs = list(declared(Settings))
    names = [spec.env for spec in Settings.specs()]  # the exchanges' variables and the process-wide ones
    assert len(names) == len(set(names))
    covered = {f.name for f, spec in specs} | {a for _, spec in specs for a in spec.attrs}
    assert covered | DERIVED == {f.name for f in dataclasses.fields(Settings)}
    for f, spec in specs:
        assert spec.doc and spec.parser.hint, spec.env
        assert f.repr is not spec.secret, spec.env


def test_defaults_are_what_an_empty_environment_gives() -> None:
    from_env = Settings.from_env({"WORKER_ID": "w"})
    assert dataclasses.replace(from_env, worker_id="") == Settings()


@pytest.mark.parametrize("exchange", EXCHANGES)
def test_each_exchange_declares_its_block(exchange: str) -> None:
    settings = Settings.from_env({})
    roles = {spec.role for spec in DECLARATIONS[exchange].settings}
    assert {WS, REST, API_KEY, API_SECRET} <= roles
    assert settings.exchange_ws_uri(exchange).startswith("wss://")
    assert settings.exchange_rest_uri(exchange).startswith("https://")
    assert settings.env_credentials(exchange)["api_key"] == ""
    assert settings.exchange_rest_uri("nope") == ""
    with pytest.raises(KeyError):
        settings.exchange_ws_uri("nope")
    assert settings.env_credentials("nope") == {}


def test_bitmart_private_socket_has_its_own_url() -> None:
    settings = Settings.from_env({"BITMART_PRIVATE_WS_URI": "wss://example.test/user"})
    assert settings.exchange_ws_uri("bitmart", private=True) == "wss://example.test/user"
    assert settings.exchange_ws_uri("gateio", private=True) == settings.exchange("gateio").ws_uri


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SUBSCRIBE_BATCH": "abc"}, "SUBSCRIBE_BATCH: invalid literal for int() with base 10: 'abc' (got 'abc')"),
        ({"SUBSCRIBE_BATCH": "0"}, "SUBSCRIBE_BATCH: must be an integer from 1 to 1000 (got '0')"),
        ({"PING_INTERVAL_S": "nan"}, "PING_INTERVAL_S: must be a positive number (got 'nan')"),
        ({"GATEIO_WS_URI": "https://x"}, "GATEIO_WS_URI: must be a ws:// or wss:// URL (got 'https://x')"),
        ({"CTRL_ADDR": "example.com:80"}, "CTRL_ADDR: "),
        ({"REDIS_URL": "http://:s3cr3tpass@h/0"}, "REDIS_URL: must be a redis://, rediss://"),
        ({"CONTROL_TOKEN": "s3cr3tpass short"}, "CONTROL_TOKEN: must be at least 16 characters"),
        ({"RECONNECT_DELAY_S": "9", "RECONNECT_MAX_DELAY_S": "8"}, "RECONNECT_MAX_DELAY_S: must be >= RECONNECT_"),
        ({"LEASE_TTL_S": "1"}, "LEASE_TTL_S: must be at least twice HEARTBEAT_INTERVAL_S"),
        ({"GATEIO_API_KEY": "k" * 20}, "GATEIO_API_SECRET: required when GATEIO_API_KEY is set"),
    ],
)
def test_invalid_values_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as err:
        Settings.from_env(env)
    assert str(err.value).startswith(message)
    assert err.value.name == message.split(":")[0]
    assert "s3cr3tpass" not in str(err.value)  # a password or secret is never quoted


def test_blank_means_default_and_values_are_trimmed() -> None:
    settings = Settings.from_env({"SUBSCRIBE_BATCH": "  ", "CTRL_ADDR": " [::1]:9000 ", "WORKER_ID": "w-1"})
    assert settings.subscribe_batch == 20
    assert (settings.ctrl_host, settings.ctrl_port, settings.ctrl_addr) == ("::1", 9000, "[::1]:9000")
    assert Settings.from_env({}).worker_id  # <host>-<pid> when unset
