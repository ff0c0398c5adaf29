"""control.credentials.ACCOUNT_SCHEMA: one shape for ACCOUNTS_FILE entries and POST /accounts bodies."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson
import pytest

from control.credentials import API, FILE, AccountError, parse_account
from control.errors import SettingsError
from control.secrets_file import load_secrets_file

SECRET = "Zx9-very-secret-value-do-not-echo"
GOOD = {"exchange": "bitmart", "account": "dave", "api_key": "dave-key-0123456789", "api_secret": SECRET}


def file_error(tmp_path: Path, entry: Any) -> str:
    path = tmp_path / "accounts.json"
    path.write_bytes(orjson.dumps({"accounts": [entry]}))
    os.chmod(path, 0o600)
    with pytest.raises(SettingsError) as err:
        load_secrets_file(str(path))
    return str(err.value)


@pytest.mark.parametrize(
    ("entry", "field", "file_text"),
    [
        ({**GOOD, "account": "bad name!"}, "account", "accounts[0].account must be 1-64 of"),
        ({**GOOD, "exchange": "kraken"}, "exchange", "accounts[0]: unknown exchange 'kraken'"),
        ({**GOOD, "api_secret": [SECRET]}, "api_secret", "accounts[0].api_secret must be a non-empty string"),
        ({**GOOD, "api_secret": SECRET + " x"}, "api_secret", "accounts[0].api_secret must not contain whitespace"),
        ({**GOOD, "api_key": SECRET * 20}, "api_key", "accounts[0].api_key must be 1 to 512 characters"),
        ({**GOOD, "memo": [SECRET]}, "memo", "accounts[0].memo must be a string"),
        ({**GOOD, "uid": "9" * 65}, "uid", "accounts[0].uid must be at most 64 characters"),
        ({**GOOD, "surprise": SECRET}, "surprise", "accounts[0]: unknown field(s) surprise"),
        ({k: v for k, v in GOOD.items() if k != "api_key"}, "api_key", "accounts[0].api_key must be a non-empty"),
    ],
)
def test_file_and_api_reject_the_same_entries(
    tmp_path: Path, entry: dict[str, Any], field: str, file_text: str
) -> None:
    with pytest.raises(AccountError) as err:
        parse_account(entry, source=API)
    assert list(err.value.messages) == [field]  # what POST /accounts answers as details
    text = file_error(tmp_path, entry)
    assert text.startswith("ACCOUNTS_FILE: ") and file_text in text, text
    for shown in (text, str(err.value), repr(err.value.messages)):
        assert SECRET[:8] not in shown and SECRET[-8:] not in shown


def test_both_accept_aliases_and_numeric_uids(tmp_path: Path) -> None:
    entry = {**GOOD, "exchange": "gate", "uid": 123456}
    api = parse_account(entry, source=API)
    assert (api.exchange, api.uid, api.source) == ("gateio", "123456", API)
    path = tmp_path / "a.json"
    path.write_bytes(orjson.dumps({"accounts": [{**entry, "api_key": "  " + GOOD["api_key"] + "\n"}]}))
    os.chmod(path, 0o600)
    (loaded,) = load_secrets_file(str(path)).accounts  # a hand-edited file's values are trimmed
    assert (loaded.exchange, loaded.uid, loaded.api_key, loaded.source) == ("gateio", "123456", GOOD["api_key"], FILE)


def test_not_an_object() -> None:
    with pytest.raises(AccountError) as err:
        parse_account(["x"], source=API)
    assert err.value.messages == {"_schema": ["must be an object"]}
