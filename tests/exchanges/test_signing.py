"""Every signing vector of the references, the credential checks, and that nothing built from credentials shows the
secret: BitMart (exchanges.md §1.3), Binance USD-M (binance_usdm.md §8), Gate.io (exchanges.md §2.3, §2.7)."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from control.accounts import Account
from control.topics import Topic
from workers.exchanges.base import AdapterError
from workers.exchanges.binanceusdm import BinanceUsdmAdapter
from workers.exchanges.binanceusdm import private as binanceusdm
from workers.exchanges.bitmart import BitmartAdapter
from workers.exchanges.bitmart import private as bitmart
from workers.exchanges.gateio import GateioAdapter
from workers.exchanges.gateio import private as gateio
from workers.exchanges.signing import check_credentials, hmac_sha256_hex, hmac_sha512_hex, sha512_hex

EMPTY_SHA512 = (
    "cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce"
    "47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e"
)

# --- primitives ---------------------------------------------------------------------------------------------------


def test_primitives_match_the_standard_library() -> None:
    assert hmac_sha256_hex("k", "m") == hmac.new(b"k", b"m", hashlib.sha256).hexdigest()
    assert hmac_sha256_hex("k", b"m") == hmac_sha256_hex("k", "m")
    assert hmac_sha512_hex("k", "m") == hmac.new(b"k", b"m", hashlib.sha512).hexdigest()
    assert sha512_hex("") == sha512_hex(b"") == EMPTY_SHA512
    assert len(hmac_sha256_hex("k", "é")) == 64 and len(hmac_sha512_hex("k", "é")) == 128  # UTF-8, lowercase hex


# --- BitMart (exchanges.md §1.3) ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("secret", "memo", "timestamp", "signature"),
    [
        (  # doc example
            "6c6c98544461bbe71db2bca4c6d7fd0021e0ba9efc215f9c6ad41852df9d9df9",
            "test001",
            1589267764859,
            "3ceeb7e1b8cb165a975e28a2e2dfaca4d30b358873c0351c1a071d8c83314556",
        ),
        (  # own vector, verified against ccxt 4.5.70
            "bmsecret_fedcba9876543210",
            "mymemo",
            1700000000000,
            "bfeb553bcd9d22e6adc5bc65fcd945675789aa128550a5b4e9b8058c01e27435",
        ),
    ],
)
def test_bitmart_login_vectors(secret: str, memo: str, timestamp: int, signature: str) -> None:
    assert bitmart.sign(secret, timestamp, memo, "bitmart.WebSocket") == signature
    assert bitmart.sign(secret, str(timestamp), memo, "bitmart.WebSocket") == signature


def test_bitmart_rest_doc_vector() -> None:
    # futures v2 GET_signature.md: ts#memo#<JSON body>
    body = '{"symbol":"BTC_USDT","price":"8600","count":"100"}'
    secret = "6c6c98544461bbe71db2bca4c6d7fd0021e0ba9efc215f9c6ad41852df9d9df9"

    assert bitmart.sign(secret, 1589793796145, "test001", body) == (
        "c31dc326bf87f38bfb49a3f8494961abfa291bd549d0d98d9578e87516cee46d"
    )


# --- Binance USD-M (binance_usdm.md §8) ------------------------------------------------------------------------------


def test_binance_rest_doc_vector() -> None:
    params = {
        "symbol": "BTCUSDT",
        "side": "BUY",
        "type": "LIMIT",
        "quantity": "1",
        "price": "9000",
        "timeInForce": "GTC",
        "recvWindow": "5000",
        "timestamp": "1591702613943",
    }
    secret = "2b5eb11e18796d12d88f13dc27dbbd02c2cc51ff7059765ed9821957d82bb4d9"

    assert binanceusdm.sign_query(params, secret) == (
        "symbol=BTCUSDT&side=BUY&type=LIMIT&quantity=1&price=9000&timeInForce=GTC&recvWindow=5000&timestamp=1591702613943"
        "&signature=3c661234138461fcc7a7d8746c6558c9842d4e10870d2ecbedf7777cad694af9"
    )


@pytest.mark.parametrize(
    ("params", "signature"),
    [
        (
            {
                "symbol": "BTCUSDT",
                "side": "BUY",
                "type": "LIMIT",
                "timeInForce": "GTC",
                "quantity": "0.010",
                "price": "60000.10",
                "recvWindow": "5000",
                "timestamp": "1700000000000",
            },
            "2d0cd99e9701906340f1abbdbc5d899ea115f051960c08c037059b9bfbcb65f5",
        ),
        (
            {"recvWindow": "5000", "timestamp": "1700000000000"},
            "46c9d04512e820aefb87e9db7c33ebdb62b816c0d577d318f3897e1d338a659c",
        ),
    ],
)
def test_binance_rest_own_vectors(params: dict[str, str], signature: str) -> None:
    query = binanceusdm.sign_query(params, "feedplane-test-secret-0001")

    assert query == "&".join(f"{k}={v}" for k, v in params.items()) + f"&signature={signature}"


def test_binance_ws_api_vector_sorts_params() -> None:
    # given out of order, with a stale signature that must not be signed
    params = {
        "timestamp": "1700000000000",
        "signature": "x",
        "recvWindow": "5000",
        "apiKey": "feedplane-test-apikey-0001",
    }

    assert binanceusdm.ws_api_signature(params, "feedplane-test-secret-0001") == (
        "13318f9ed73a4a1f909bc630046153541310ec07750cff704224d9c136b157ed"
    )


def test_binance_sign_query_without_params() -> None:
    assert binanceusdm.sign_query({}, "s") == f"signature={hmac_sha256_hex('s', '')}"


# --- Gate.io (exchanges.md §2.3, §2.7) -------------------------------------------------------------------------------

GATE_SECRET = "gatesecret_fedcba9876543210"


def test_gate_ws_auth_vector() -> None:
    assert gateio.ws_signature(GATE_SECRET, "futures.orders", "subscribe", 1700000000) == (
        "7ea8581ea4ed064655c445ad7d464ee76ecf4f356d321c08d47efb5cb7a29f40"
        "0786abc686338b36545b8f3f6d576dcbf1f8f60f753484a2430fa03ee06b0330"
    )


@pytest.mark.parametrize(
    ("req_param", "signature"),
    [
        (  # what the SDK and ccxt 4.5.90 sign (verified)
            "{}",
            (
                "4949c932e03fc8af032aa497cbbb0b8e17cf2477fd0e9792e31555ef00b24c52"
                "40132be15f8b4ea4f806e24e6f2422479090e75d8f96ebdb6abcd26bbfa67666"
            ),
        ),
        (  # the doc-literal empty variant
            "",
            (
                "d5eb0b9ff39ff7b10f7ad741e71c3371dd3f6cf5704c26fdd755d792e5cc6c78"
                "90e7c5be8f3243c077cc68ed1c3a79ed1d526c4b6de4fb57f958057fd2e5f021"
            ),
        ),
    ],
)
def test_gate_ws_login_vectors(req_param: str, signature: str) -> None:
    assert gateio.login_signature(GATE_SECRET, "futures.login", req_param, 1700000000) == signature


@pytest.mark.parametrize(
    ("secret", "method", "path", "query", "body", "timestamp", "signature"),
    [
        (
            "secret",
            "GET",
            "/api/v4/futures/orders",
            "contract=BTC_USD&status=finished&limit=50",
            "",
            1541993715,
            (
                "55f84ea195d6fe57ce62464daaa7c3c02fa9d1dde954e4c898289c9a2407a3d6"
                "fb3faf24deff16790d726b66ac9f74526668b13bd01029199cc4fcc522418b8a"
            ),
        ),
        (
            "secret",
            "POST",
            "/api/v4/futures/orders",
            "",
            '{"contract":"BTC_USD","type":"limit","size":100,"price":6800,"time_in_force":"gtc"}',
            1541993715,
            (
                "eae42da914a590ddf727473aff25fc87d50b64783941061f47a3fdb92742541f"
                "c4c2c14017581b4199a1418d54471c269c03a38d788d802e2c306c37636389f0"
            ),
        ),
        (
            GATE_SECRET,
            "POST",
            "/api/v4/futures/usdt/orders",
            "",
            '{"contract":"BTC_USDT","size":1,"price":"60000","tif":"gtc","text":"t-test1"}',
            1700000000,
            (
                "5fa8367774fc24b4fa9212b5e725ecc499986139c693d488942443a3ea2d5747"
                "59a03de7b9362ea5682999852520f578a04a2b54920aa8bee51da5358f2fc6c3"
            ),
        ),
        (
            GATE_SECRET,
            "GET",
            "/api/v4/futures/usdt/orders",
            "status=open&contract=BTC_USDT",
            "",
            1700000000,
            (
                "3c4ac5d49e3b38d48979efa660d4f7abb4661073ee227b1c29ea31a5f64a6cdf"
                "f834025025599a5fff460a2d2269a870a557bc64917bfc7b9d1d6c406f33fdc1"
            ),
        ),
    ],
)
def test_gate_rest_vectors(
    secret: str, method: str, path: str, query: str, body: str, timestamp: int, signature: str
) -> None:
    assert gateio.rest_signature(secret, method, path, query, body, timestamp) == signature
    assert gateio.rest_signature(secret, method.lower(), path, query, body.encode(), str(timestamp)) == signature


def test_gate_rest_headers_own_get_vector() -> None:
    creds = Account("gateio", "main", "gatekey_0123456789abcdef", GATE_SECRET, uid="123456")

    path, query = "/api/v4/futures/usdt/orders", "status=open&contract=BTC_USDT"

    headers = gateio.rest_headers(creds, "GET", path, query, "", 1_700_000_000_999)

    assert headers == {
        "KEY": "gatekey_0123456789abcdef",
        "Timestamp": "1700000000",
        "SIGN": "3c4ac5d49e3b38d48979efa660d4f7abb4661073ee227b1c29ea31a5f64a6cdf"
        "f834025025599a5fff460a2d2269a870a557bc64917bfc7b9d1d6c406f33fdc1",
        "X-Gate-Size-Decimal": "1",
    }


# --- credential checks and secrecy ------------------------------------------------------------------------------------

SECRET = "TOP-SECRET-value-9f8e7d"
MEMO = "hidden-memo-41"


def test_check_credentials() -> None:
    good = Account("gateio", "main", "k", SECRET)

    assert check_credentials(good, "gateio") is good
    assert check_credentials(good, "gateio", "main") is good
    for creds, exchange, account, text in [
        (None, "gateio", None, "need the account's credentials"),
        (good, "bitmart", None, "cannot sign bitmart"),
        (good, "gateio", "other", "cannot serve account 'other'"),
        (Account("gateio", "main", "", SECRET), "gateio", None, "no API key or secret"),
    ]:
        with pytest.raises(AdapterError, match=text) as info:
            check_credentials(creds, exchange, account)
        assert SECRET not in str(info.value)


def every_signed_output() -> list[object]:
    """Everything the adapters build from credentials: frames, headers, REST requests."""
    bm = Account("bitmart", "main", "bm-key", SECRET, memo=MEMO)
    bn = Account("binanceusdm", "main", "bn-key", SECRET)
    gt = Account("gateio", "main", "gt-key", SECRET, uid="123456")
    gate_private = [Topic.parse(f"gateio:{c}:main") for c in ("order", "position", "balance")]
    bitmart_adapter = BitmartAdapter()
    binance_adapter = BinanceUsdmAdapter()
    gate_adapter = GateioAdapter()
    return [
        bitmart_adapter.login_frame(bm, 1_700_000_000_000),
        bitmart.rest_headers(bm, 1, '{"a":1}'),
        bitmart_adapter.open_orders_request(bm, 1),
        bitmart_adapter.positions_request(bm, 1),
        bitmart_adapter.new_parser("main"),
        binance_adapter.listen_key.request(bn, "POST"),
        binance_adapter.open_orders_request(bn, 1),
        binance_adapter.positions_request(bn, 1),
        binance_adapter.new_parser("main"),
        *gate_adapter.subscribe_frames(gate_private, 20, 1, now_ms=1, creds=gt),
        *gate_adapter.unsubscribe_frames(gate_private, 20, 1, now_ms=1, creds=gt),
        gate_adapter.open_orders_request(gt, 1),
        gate_adapter.positions_request(gt, 1),
        gateio.rest_headers(gt, "POST", "/api/v4/futures/usdt/orders", "", "{}", 1),
        gate_adapter.new_parser("main"),
        bm,
        bn,
        gt,
    ]


def test_nothing_built_from_credentials_shows_the_secret_or_memo() -> None:
    for thing in every_signed_output():
        for text in (repr(thing), str(thing)):
            assert SECRET not in text, type(thing)
            assert MEMO not in text, type(thing)
