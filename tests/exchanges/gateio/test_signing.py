"""Gate.io private frames: signed payloads and credential checks (exchanges.md §2.3)."""

from __future__ import annotations

import json

import pytest

from control.accounts import Account
from control.topics import Topic
from tests.exchanges.gateio._helpers import ADAPTER, CREDS, ORDERS_SIGN, PRIVATE, BareCreds
from workers.exchanges.base import AdapterError, OutFrame
from workers.exchanges.gateio.private import (
    account_uid,
    ws_auth,
    ws_signature,
)


def test_private_subscribe_frame_is_ccxts_frame() -> None:
    # exchanges.md §2.3: ccxt 4.5.90 subscribe_private() with seconds pinned to 1700000000, first request id 1
    [frame] = ADAPTER.subscribe_frames(PRIVATE[:1], 20, 1, now_ms=1_700_000_000_999, creds=CREDS)

    assert frame == OutFrame(
        '{"id":1,"time":1700000000,"channel":"futures.orders","event":"subscribe","auth":{"method":"api_key",'
        f'"KEY":"gatekey_0123456789abcdef","SIGN":"{ORDERS_SIGN}"}},"payload":["123456","!all"]}}',
        ("gateio:order:main",),
        1,
    )


def test_private_frames_payloads_ids_and_signatures() -> None:
    public = Topic("gateio", "trade", "BTC_USDT")
    frames = ADAPTER.subscribe_frames([public, *PRIVATE], 20, 7, now_ms=1_700_000_000_000, creds=CREDS)
    [unsub] = ADAPTER.unsubscribe_frames(PRIVATE[2:], 20, 3, now_ms=1_700_000_000_000, creds=CREDS)
    sent = [json.loads(f.text) for f in frames]

    assert [f.request_id for f in frames] == [7, 8, 9, 10]
    assert [f.topics for f in frames] == [(str(public),), *((str(t),) for t in PRIVATE)]
    assert "auth" not in sent[0]
    assert [(m["channel"], m["payload"]) for m in sent[1:]] == [
        ("futures.orders", ["123456", "!all"]),
        ("futures.positions", ["123456", "!all"]),
        ("futures.balances", ["123456"]),
    ]
    for m in sent[1:]:
        assert m["auth"] == ws_auth(CREDS, m["channel"], "subscribe", 1700000000)
    assert sent[1]["auth"]["SIGN"] == ORDERS_SIGN
    message = json.loads(unsub.text)
    assert (message["event"], message["payload"]) == ("unsubscribe", ["123456"])
    assert message["auth"]["SIGN"] == ws_signature(CREDS.api_secret, "futures.balances", "unsubscribe", 1700000000)


def test_private_frames_refuse_missing_or_foreign_credentials() -> None:
    cases = [
        (None, "need the account's credentials"),
        (Account("gateio", "other", "k", "s3cr3t"), "cannot serve account 'main'"),
        (Account("bitmart", "main", "k", "s3cr3t"), "cannot sign gateio"),
        (Account("gateio", "main", "k", "s3cr3t"), "no uid"),
    ]
    for creds, text in cases:
        with pytest.raises(AdapterError, match=text) as info:
            ADAPTER.subscribe_frames(PRIVATE, 20, 1, creds=creds)
        assert "s3cr3t" not in str(info.value)


def test_uid_falls_back_to_the_memo() -> None:
    creds = BareCreds("gateio", "main", "k", "s", memo="777")

    [frame] = ADAPTER.subscribe_frames(PRIVATE[2:], 20, 1, creds=creds)

    assert account_uid(creds) == "777" and json.loads(frame.text)["payload"] == ["777"]
    assert account_uid(Account("gateio", "main", "k", "s", memo="1", uid="2")) == "2"  # uid wins
