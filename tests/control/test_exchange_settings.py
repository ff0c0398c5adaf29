"""A fourth exchange's variables: declared in its own declaration only, then parsed, checked, listed and used.

Nothing in ``control/settings.py`` or ``control/accounts.py`` names an exchange: this test registers a throwaway
declaration (``acme``) and shows its variables are read from the environment with the usual errors, listed in
README's table, and give its URLs and its default account.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from control import exchanges
from control.accounts import env_accounts, secret_values
from control.exchanges import DECLARATIONS, ExchangeDeclaration
from control.setting_spec import API_KEY, API_SECRET, HTTP_URL, PRIVATE_WS, REST, TEXT, UID, WS, WS_URL, Setting
from control.settings import Settings, SettingsError, settings_table

DEPTH: Setting[str] = Setting("ACME_DEPTH_MODE", "diff", TEXT, "Acme depth stream mode")
ACME = ExchangeDeclaration(
    id="acme",
    name="Acme perpetual futures",
    channels=("kline", "trade"),
    private_channels=("order",),
    timeframes=("1m", "1h"),
    depth_levels_cap=50,
    settings=(
        Setting("ACME_WS_URI", "wss://ws.acme.example/v1", WS_URL, "Acme public socket", role=WS),
        Setting("ACME_PRIVATE_WS_URI", "wss://ws.acme.example/user", WS_URL, "Acme private socket", role=PRIVATE_WS),
        Setting("ACME_REST_URI", "https://api.acme.example", HTTP_URL, "Acme REST", role=REST),
        DEPTH,
        Setting("ACME_API_KEY", "", TEXT, "default Acme account: API key", secret=True, role=API_KEY),
        Setting("ACME_API_SECRET", "", TEXT, "default Acme account: API secret", secret=True, role=API_SECRET),
        Setting("ACME_UID", "", TEXT, "default Acme account: user id", secret=True, role=UID),
    ),
)
KEY, SECRET = "acme-key-0123456789abcdef", "acme-secret-0123456789abcdef"


@pytest.fixture
def with_acme(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``DECLARATIONS`` with ``acme`` registered after the real exchanges, for this test only."""
    monkeypatch.setattr(exchanges, "DECLARATIONS", {**DECLARATIONS, "acme": ACME})
    yield


def test_a_new_exchange_is_read_from_its_declaration(with_acme: None) -> None:
    env = {"ACME_REST_URI": " https://rest.acme.test/ ", "ACME_DEPTH_MODE": "full", "ACME_API_KEY": KEY,
           "ACME_API_SECRET": SECRET, "ACME_UID": "42"}  # fmt: skip
    settings = Settings.from_env(env)

    assert [values.id for values in settings.exchanges] == [*DECLARATIONS, "acme"]
    assert settings.exchange_ws_uri("acme") == "wss://ws.acme.example/v1"
    assert settings.exchange_ws_uri("acme", private=True) == "wss://ws.acme.example/user"
    assert settings.exchange_rest_uri("acme") == "https://rest.acme.test"  # trimmed, trailing "/" dropped
    assert settings.value(DEPTH) == "full"
    assert settings.env_credentials("acme") == {"api_key": KEY, "api_secret": SECRET, "uid": "42"}
    [account] = env_accounts(settings)
    assert (account.exchange, account.account, account.api_key, account.uid) == ("acme", "default", KEY, "42")
    assert {KEY, SECRET} <= secret_values(settings)
    assert KEY not in repr(settings) and SECRET not in repr(settings) and "ACME_DEPTH_MODE='full'" in repr(settings)
    assert Settings.from_env({}).exchange("acme").rest_uri == "https://api.acme.example"  # defaults


def test_declarations_can_be_passed_instead_of_registered() -> None:
    settings = Settings.from_env({"ACME_WS_URI": "wss://other.test"}, declarations=[ACME])

    assert [values.id for values in settings.exchanges] == ["acme"]
    assert settings.exchange_ws_uri("acme") == settings.exchange_ws_uri("acme", private=False) == "wss://other.test"
    assert settings.exchange_rest_uri("bitmart") == ""  # only the given exchanges


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ACME_WS_URI": "https://x"}, "ACME_WS_URI: must be a ws:// or wss:// URL (got 'https://x')"),
        ({"ACME_REST_URI": "ftp://x"}, "ACME_REST_URI: must be an http:// or https:// URL (got 'ftp://x')"),
        ({"ACME_API_KEY": KEY}, "ACME_API_SECRET: required when ACME_API_KEY is set"),
        ({"ACME_API_SECRET": SECRET}, "ACME_API_KEY: required when ACME_API_SECRET is set"),
    ],
)
def test_a_new_exchange_gets_the_same_errors(with_acme: None, env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as err:
        Settings.from_env(env)
    assert str(err.value) == message and SECRET not in str(err.value) and KEY not in str(err.value)


def test_a_new_exchange_is_listed_in_the_settings_table(with_acme: None) -> None:
    rows = [row for row in settings_table().splitlines() if row.startswith("| `ACME_")]

    assert [row.split("`")[1] for row in rows] == [spec.env for spec in ACME.settings]
    assert "| `ACME_API_KEY` | empty | secret; text | default Acme account: API key |" in rows
    assert "| `ACME_DEPTH_MODE` | `diff` | text | Acme depth stream mode |" in rows
    assert settings_table() == settings_table([*DECLARATIONS.values(), ACME])


def test_a_declaration_must_name_its_urls_and_key() -> None:
    with pytest.raises(ValueError, match="acme: no setting with role 'rest'"):
        ExchangeDeclaration(id="acme", name="Acme", channels=(), private_channels=(), timeframes=(), depth_levels_cap=1,
                            settings=ACME.settings[:2])  # fmt: skip
