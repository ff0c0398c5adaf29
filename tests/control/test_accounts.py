"""control.accounts: env/file accounts and tokens, file permissions, Fernet sealing in Redis, reprs; private topics."""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from cryptography.fernet import Fernet
from redis.asyncio import Redis

from control import keys
from control.accounts import (
    API,
    FILE,
    Account,
    DecryptError,
    api_account_records,
    decrypt_secret,
    delete_api_account,
    encrypt_secret,
    env_accounts,
    fingerprint,
    load_accounts,
    load_secrets_file,
    put_api_account,
    secret_values,
    token_digest,
)
from control.settings import Settings, SettingsError
from control.topics import CAPABILITIES, PRIVATE_CHANNELS, Topic, TopicError, make_topic, private_topic


def tok() -> str:
    return secrets.token_urlsafe(32)


def write_file(path: Path, doc: Any, mode: int = 0o600) -> str:
    path.write_bytes(orjson.dumps(doc))
    os.chmod(path, mode)
    return str(path)


@pytest.fixture
def file_doc() -> dict[str, Any]:
    return {
        "accounts": [
            {"exchange": "bitmart", "account": "alice", "api_key": tok(), "api_secret": tok(), "memo": "alice-memo"},
            {"exchange": "gate", "account": "g.1", "api_key": tok(), "api_secret": tok(), "uid": 123456},
        ],
        "tokens": [
            {"token": tok(), "scopes": [], "accounts": ["bitmart:alice"]},
            {"token": tok(), "scopes": ["read"], "accounts": ["gate:g.1"]},
            {"token": tok(), "scopes": ["control"]},
        ],
    }


# -- ACCOUNTS_FILE ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o601])
def test_file_readable_by_others_is_refused(tmp_path: Path, file_doc: dict[str, Any], mode: int) -> None:
    path = write_file(tmp_path / "accounts.json", file_doc, mode)
    with pytest.raises(SettingsError) as err:
        load_secrets_file(path)
    assert err.value.name == "ACCOUNTS_FILE"
    assert str(err.value).startswith(f"ACCOUNTS_FILE: {path}: refused: mode {mode:04o}")
    assert "chmod 600" in str(err.value)
    with pytest.raises(SettingsError, match="^ACCOUNTS_FILE"):  # at start, through the settings
        Settings.from_env({"ACCOUNTS_FILE": path})


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_owner_only_file_loads(tmp_path: Path, file_doc: dict[str, Any], mode: int) -> None:
    path = write_file(tmp_path / "accounts.json", file_doc, mode)
    loaded = load_secrets_file(path)
    alice, gate = loaded.accounts
    assert (alice.exchange, alice.account, alice.source, alice.memo) == ("bitmart", "alice", FILE, "alice-memo")
    assert alice.api_key == file_doc["accounts"][0]["api_key"]
    assert alice.api_secret == file_doc["accounts"][0]["api_secret"]
    assert (gate.exchange, gate.account, gate.uid) == ("gateio", "g.1", "123456")  # alias, numeric uid
    account_only, read_gate, control = loaded.tokens
    assert account_only.id == "file:0" and account_only.scopes == frozenset()
    assert account_only.accounts == {"bitmart:alice"}
    assert account_only.digest == token_digest(file_doc["tokens"][0]["token"])
    assert read_gate.has("read") and not read_gate.has("control") and read_gate.accounts == {"gateio:g.1"}
    assert control.has("control") and control.has("read") and control.can_read_account("bitmart", "anyone")
    assert account_only.can_read_account("bitmart", "alice") and not account_only.can_read_account("bitmart", "bob")
    assert not account_only.has("read")
    settings = Settings.from_env({"ACCOUNTS_FILE": path})
    assert settings.secrets_file is not None and settings.secrets_file.tokens == loaded.tokens


def test_file_errors_name_the_field_never_the_value(tmp_path: Path) -> None:
    secret = tok()
    cases: list[tuple[Any, str]] = [
        ({"accounts": [{"exchange": "bitmart", "account": "a", "api_key": secret, "api_secret": 5}]},
         "accounts[0].api_secret must be a non-empty string"),
        ({"accounts": [{"exchange": "kraken", "account": "a", "api_key": secret, "api_secret": secret}]},
         "accounts[0]: unknown exchange 'kraken'"),
        ({"accounts": [{"exchange": "bitmart", "account": "a b", "api_key": secret, "api_secret": secret}]},
         "accounts[0].account must be"),
        ({"accounts": [{"exchange": "bitmart", "account": "a", "api_key": secret, "api_secret": secret, "x": 1}]},
         "accounts[0]: unknown field(s) x"),
        ({"accounts": [{"exchange": "bitmart", "account": "a", "api_key": secret, "api_secret": secret}] * 2},
         "accounts[1]: bitmart:a is listed twice"),
        ({"tokens": [{"token": secret[:10], "scopes": ["read"]}]}, "tokens[0].token must be at least 16"),
        ({"tokens": [{"token": secret + " x", "scopes": ["read"]}]}, "tokens[0].token must be at least 16"),
        ({"tokens": [{"token": secret, "scopes": ["admin"]}]}, "tokens[0].scopes must be a list"),
        ({"tokens": [{"token": secret, "accounts": ["alice"]}]}, "tokens[0].accounts: 'alice' is not"),
        ({"tokens": [{"token": secret}]}, "tokens[0] grants nothing"),
        ({"tokens": [{"token": secret, "scopes": ["read"]}, {"token": secret, "scopes": ["control"]}]},
         "tokens[1]: the same token is listed twice"),
        ({"accounts": {}}, '"accounts" must be a list'),
        ([], "must hold a JSON object"),
        ({"users": []}, "must hold a JSON object"),
    ]  # fmt: skip
    for doc, expected in cases:
        path = write_file(tmp_path / "f.json", doc)
        with pytest.raises(SettingsError) as err:
            load_secrets_file(path)
        assert err.value.name == "ACCOUNTS_FILE"
        assert expected in str(err.value), (expected, str(err.value))
        assert secret[:8] not in str(err.value)


def test_file_missing_or_not_json(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="no such file"):
        load_secrets_file(str(tmp_path / "nope.json"))
    secret = tok()
    path = tmp_path / "bad.json"
    path.write_text('{"tokens": [{"token": "' + secret + '", oops}]}')
    os.chmod(path, 0o600)
    with pytest.raises(SettingsError, match=r"not valid JSON \(line 1") as err:
        load_secrets_file(str(path))
    assert secret[:8] not in str(err.value)
    with pytest.raises(SettingsError, match="not a regular file"):
        os.chmod(tmp_path, 0o700)
        load_secrets_file(str(tmp_path))


# -- environment ------------------------------------------------------------------------------------------


def test_env_accounts(make_settings: Callable[..., Settings]) -> None:
    env = {"BITMART_API_KEY": tok(), "BITMART_API_SECRET": tok(), "BITMART_API_MEMO": "memo-1",
           "BINANCE_API_KEY": tok(), "BINANCE_API_SECRET": tok(),
           "GATEIO_API_KEY": tok(), "GATEIO_API_SECRET": tok(), "GATEIO_UID": "10001"}  # fmt: skip
    bitmart, binance, gate = env_accounts(make_settings(**env))
    assert (bitmart.ref, bitmart.api_key, bitmart.api_secret, bitmart.memo) == (
        "bitmart:default", env["BITMART_API_KEY"], env["BITMART_API_SECRET"], "memo-1")  # fmt: skip
    assert (binance.ref, binance.api_key, binance.api_secret) == (
        "binanceusdm:default", env["BINANCE_API_KEY"], env["BINANCE_API_SECRET"])  # fmt: skip
    assert (gate.ref, gate.api_secret, gate.uid) == ("gateio:default", env["GATEIO_API_SECRET"], "10001")
    assert gate.source == "env"
    assert env_accounts(make_settings()) == []
    assert set(env.values()) - {"10001"} <= secret_values(make_settings(**env))


def test_env_account_needs_key_and_secret(make_settings: Callable[..., Settings]) -> None:
    with pytest.raises(SettingsError, match="^BINANCE_API_SECRET: required when BINANCE_API_KEY is set"):
        make_settings(BINANCE_API_KEY=tok())
    with pytest.raises(SettingsError, match="^GATEIO_API_KEY: required"):
        make_settings(GATEIO_API_SECRET=tok())


def test_file_may_not_redefine_an_env_account(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    path = write_file(tmp_path / "a.json", {"accounts": [
        {"exchange": "binanceusdm", "account": "default", "api_key": tok(), "api_secret": tok()}]})  # fmt: skip
    with pytest.raises(SettingsError, match=r"^ACCOUNTS_FILE: accounts\[0\]: binanceusdm:default is already config"):
        make_settings(ACCOUNTS_FILE=path, BINANCE_API_KEY=tok(), BINANCE_API_SECRET=tok())


def test_token_settings_are_validated_without_echo(make_settings: Callable[..., Settings]) -> None:
    short = "abc123def"
    with pytest.raises(SettingsError) as err:
        make_settings(CONTROL_TOKEN=short)
    assert err.value.name == "CONTROL_TOKEN" and short not in str(err.value)
    with pytest.raises(SettingsError, match="^READ_TOKEN"):
        make_settings(READ_TOKEN="has spaces in it, 16+ chars")
    token = tok()
    settings = make_settings(CONTROL_TOKEN=token, READ_TOKEN=tok())
    assert settings.control_token == token
    assert token not in repr(settings)


@pytest.mark.parametrize(  # fixed ids: xdist workers must collect the same names (the key is random)
    "bad", ["nope", Fernet.generate_key().decode()[:-2] + "!=", "A" * 44, "A" * 42 + "=="],
    ids=["not_base64", "bad_character", "33_bytes", "31_bytes"],
)
def test_secret_key_validation(make_settings: Callable[..., Settings], bad: str) -> None:
    with pytest.raises(SettingsError) as err:
        make_settings(FEEDPLANE_SECRET_KEY=bad)
    assert err.value.name == "FEEDPLANE_SECRET_KEY"
    assert str(err.value).startswith("FEEDPLANE_SECRET_KEY: must be a urlsafe base64 32-byte key")
    assert bad not in str(err.value)


def test_secret_key_accepted(make_settings: Callable[..., Settings]) -> None:
    key = Fernet.generate_key().decode()
    settings = make_settings(FEEDPLANE_SECRET_KEY=key)
    assert settings.secret_key == key and key not in repr(settings)
    assert key in secret_values(settings)


def test_cors_and_rate_limit_settings(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(CORS_ORIGINS="https://app.example.com, http://localhost:3000,", RATE_LIMIT_SSE_PER_MIN="0")
    assert settings.cors_origins == ("https://app.example.com", "http://localhost:3000")
    assert settings.rate_limit_sse_per_min == 0
    defaults = make_settings()
    assert (defaults.rate_limit_control_per_min, defaults.rate_limit_read_per_min, defaults.rate_limit_sse_per_min,
            defaults.rate_limit_auth_fail_per_min, defaults.cors_origins) == (100, 1000, 5, 30, ())  # fmt: skip
    with pytest.raises(SettingsError, match="^CORS_ORIGINS"):
        make_settings(CORS_ORIGINS="https://app.example.com/path")
    with pytest.raises(SettingsError, match="^RATE_LIMIT_READ_PER_MIN"):
        make_settings(RATE_LIMIT_READ_PER_MIN="-1")


# -- reprs ------------------------------------------------------------------------------------------------


def test_repr_and_str_hide_secrets(tmp_path: Path, file_doc: dict[str, Any]) -> None:
    key, secret = "abcdEFGH" + tok(), tok()
    account = Account("bitmart", "alice", key, secret, memo="my-secret-memo", uid="uid-12345678")
    for text in (repr(account), str(account), f"{account}", f"{account!r}", repr([account]), repr({"a": account})):
        assert key[4:12] not in text and secret[:8] not in text and "my-secret-memo" not in text
        assert "uid-12345678" not in text
        assert "bitmart:alice" in text and fingerprint(key) in text
    assert fingerprint(key).startswith("abcd…") and len(fingerprint(key)) == 13
    assert account.public() == {"exchange": "bitmart", "account": "alice", "source": "env", "key": fingerprint(key)}
    loaded = load_secrets_file(write_file(tmp_path / "a.json", file_doc))
    text = repr(loaded) + repr(loaded.tokens) + repr(loaded.accounts)
    for item in (*file_doc["tokens"], *file_doc["accounts"]):
        for value in item.values():
            if isinstance(value, str) and len(value) >= 16:
                assert value[:8] not in text and value[-8:] not in text


# -- Fernet and Redis -------------------------------------------------------------------------------------


def test_fernet_round_trip_and_wrong_key() -> None:
    key, other = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    secret = tok()
    sealed = encrypt_secret(secret, key=key)
    assert secret not in sealed and sealed != encrypt_secret(secret, key=key)  # random IV
    assert decrypt_secret(sealed, key=key) == secret
    assert decrypt_secret(encrypt_secret(secret.encode(), key=key).encode(), key=key) == secret
    for bad_key, token in ((other, sealed), (key, sealed[:-4] + "AAAA"), (key, "not a token")):
        with pytest.raises(DecryptError) as err:
            decrypt_secret(token, key=bad_key)
        assert secret not in str(err.value)


async def dump(redis: Redis) -> bytes:
    """Every key name and value of the test database, all types, as one blob."""
    out = []
    for key in await redis.keys("*"):
        kind = (await redis.type(key)).decode()
        out.append(key)
        if kind == "string":
            out.append(await redis.get(key))
        elif kind == "hash":
            out.extend(b for kv in (await redis.hgetall(key)).items() for b in kv)
        elif kind == "list":
            out.extend(await redis.lrange(key, 0, -1))
        elif kind == "set":
            out.extend(await redis.smembers(key))
        elif kind == "zset":
            out.extend(m for m, _ in await redis.zrange(key, 0, -1, withscores=True))
        elif kind == "stream":
            out.extend(b for _, fields in await redis.xrange(key) for kv in fields.items() for b in kv)
    return b"\n".join(out)


async def test_redis_holds_accounts_only_sealed(
    make_settings: Callable[..., Settings], redis: Redis, redis_bytes: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    key = Fernet.generate_key().decode()
    settings = make_settings(FEEDPLANE_SECRET_KEY=key, BITMART_API_KEY=tok(), BITMART_API_SECRET=tok())
    carol = Account("gateio", "carol", "KEYC" + tok(), tok(), memo="carol-memo-value", uid="778899001", source=API)
    assert await put_api_account(redis, carol, key=key, now_ms=1) is True
    assert await put_api_account(redis, carol, key=key, now_ms=2) is False  # replaced
    blob = await dump(redis_bytes)
    for value in (carol.api_key, carol.api_secret, carol.memo, carol.uid, key):
        for i in range(len(value) - 7):
            assert value[i : i + 8].encode() not in blob, value
    record = orjson.loads(await redis.hget(keys.ACCOUNTS, "gateio:carol"))
    assert set(record) == {"exchange", "account", "key", "created_at", "sealed"} and record["key"] == carol.fingerprint
    assert await api_account_records(redis) == [
        {"exchange": "gateio", "account": "carol", "source": "api", "key": carol.fingerprint}
    ]
    accounts = await load_accounts(settings, redis)
    assert set(accounts) == {("bitmart", "default"), ("gateio", "carol")}
    assert accounts[("gateio", "carol")] == carol
    with caplog.at_level(logging.WARNING, logger="control.accounts"):  # rotated key: skipped, named, no secrets
        other = make_settings(FEEDPLANE_SECRET_KEY=Fernet.generate_key().decode())
        assert await load_accounts(other, redis) == {}
        assert await load_accounts(make_settings(), redis) == {}
    assert "gateio:carol in Redis ignored: cannot decrypt" in caplog.text
    assert "ignored: FEEDPLANE_SECRET_KEY is not set" in caplog.text
    assert await delete_api_account(redis, "gateio", "carol") is True
    assert await delete_api_account(redis, "gateio", "carol") is False
    assert await redis.exists(keys.ACCOUNTS) == 0


async def test_env_and_file_win_over_redis(
    make_settings: Callable[..., Settings], redis: Redis, tmp_path: Path, file_doc: dict[str, Any]
) -> None:
    key = Fernet.generate_key().decode()
    settings = make_settings(FEEDPLANE_SECRET_KEY=key, ACCOUNTS_FILE=write_file(tmp_path / "a.json", file_doc))
    shadow = Account("bitmart", "alice", tok(), tok(), source=API)
    await put_api_account(redis, shadow, key=key, now_ms=1)
    accounts = await load_accounts(settings, redis)
    assert accounts[("bitmart", "alice")].source == FILE
    assert accounts[("bitmart", "alice")].api_secret == file_doc["accounts"][0]["api_secret"]
    assert set(accounts) == {("bitmart", "alice"), ("gateio", "g.1")}


# -- private topics ---------------------------------------------------------------------------------------


def test_private_topics() -> None:
    assert PRIVATE_CHANNELS == ("order", "position", "balance")
    assert private_topic("bitmart", "order", "Alice.main-1") == "bitmart:order:Alice.main-1"
    assert private_topic("gate", "balance", "x_y") == "gateio:balance:x_y"
    parsed = Topic.parse("binanceusdm:position:acct_1")
    assert (parsed.exchange, parsed.channel, parsed.symbol) == ("binanceusdm", "position", "acct_1")
    assert parsed.timeframe is None
    assert str(parsed) == "binanceusdm:position:acct_1"
    for bad in ("a:b", "a b", "x" * 65, "", "alice\n", "ümlaut"):
        with pytest.raises(TopicError) as err:
            private_topic("bitmart", "order", bad)
        assert err.value.field == "account"
    with pytest.raises(TopicError, match="takes no timeframe"):
        Topic.parse("bitmart:order:alice:1m")
    with pytest.raises(TopicError) as err:
        private_topic("kraken", "order", "alice")
    assert err.value.field == "exchange"
    with pytest.raises(TopicError):
        private_topic("bitmart", "trade", "alice")
    # public parsing unchanged; every exchange serves the private channels, the account name kept as given
    assert str(Topic.parse("bitmart:kline:btcusdt:1H")) == "bitmart:kline:BTCUSDT:1h"
    assert all(channel in caps for caps in CAPABILITIES.values() for channel in PRIVATE_CHANNELS)
    assert str(make_topic("gate", "order", "Alice")) == "gateio:order:Alice"
    with pytest.raises(TopicError) as err:
        make_topic("bitmart", "order", "bad name")
    assert err.value.field == "account"
