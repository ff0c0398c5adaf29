"""BitMart login frame and REST signing vectors (exchanges.md §1.3; ``workers.exchanges.bitmart.private``)."""

from __future__ import annotations

import pytest

from control.accounts import Account
from tests.exchanges.bitmart._helpers import ADAPTER, DOC, OWN
from workers.exchanges.base import AdapterError, RestRequest
from workers.exchanges.bitmart.private import login_frame, rest_headers, sign


def test_login_frame_doc_vector() -> None:
    assert login_frame(DOC, 1589267764859) == (
        '{"action":"access","args":["80618e45710812162b04892c7ee5ead4a3cc3e56","1589267764859",'
        '"3ceeb7e1b8cb165a975e28a2e2dfaca4d30b358873c0351c1a071d8c83314556","web"]}'
    )


def test_login_frame_own_vector_is_ccxts_frame() -> None:
    # byte for byte what ccxt.pro.bitmart.authenticate("swap") sent with milliseconds() pinned (§1.3)
    assert ADAPTER.login_frame(OWN, 1700000000000) == (
        '{"action":"access","args":["bmkey_0123456789abcdef","1700000000000",'
        '"bfeb553bcd9d22e6adc5bc65fcd945675789aa128550a5b4e9b8058c01e27435","web"]}'
    )


def test_login_frame_refuses_unusable_credentials() -> None:
    no_memo = Account("bitmart", "main", "k", "s3cr3t-value")
    other = Account("gateio", "main", "k", "s3cr3t-value", memo="m")
    no_secret = Account("bitmart", "main", "k", "", memo="m")

    for creds, text in ((no_memo, "no API memo"), (other, "cannot sign bitmart"), (no_secret, "no API key or secret")):
        with pytest.raises(AdapterError, match=text) as info:
            login_frame(creds, 1)
        assert "s3cr3t" not in str(info.value)


def test_rest_signing_doc_vector_and_headers() -> None:
    # GET_signature.md (futures v2 doc, [S-BMDOC]): a POST body signed at 1589793796145
    body = '{"symbol":"BTC_USDT","price":"8600","count":"100"}'
    assert sign(DOC.api_secret, 1589793796145, "test001", body) == (
        "c31dc326bf87f38bfb49a3f8494961abfa291bd549d0d98d9578e87516cee46d"
    )
    assert rest_headers(DOC, 1589793796145, body) == {
        "X-BM-KEY": "80618e45710812162b04892c7ee5ead4a3cc3e56",
        "X-BM-TIMESTAMP": "1589793796145",
        "X-BM-SIGN": "c31dc326bf87f38bfb49a3f8494961abfa291bd549d0d98d9578e87516cee46d",
    }


def test_snapshot_requests_are_signed_over_the_empty_query() -> None:
    headers = {
        "X-BM-KEY": OWN.api_key,
        "X-BM-TIMESTAMP": "1700000000000",
        "X-BM-SIGN": sign(OWN.api_secret, 1700000000000, "mymemo", ""),
    }

    assert ADAPTER.open_orders_request(OWN, 1700000000000) == RestRequest(
        "GET", "/contract/private/get-open-orders", {}, headers
    )
    assert ADAPTER.positions_request(OWN, 1700000000000) == RestRequest(
        "GET", "/contract/private/position", {}, headers
    )
