"""``GET /help``: every endpoint with a working curl line for the configured CTRL_ADDR, and the auth it needs.

text/plain by default (curl); JSON when ``Accept`` includes ``application/json`` or ``?format=json``.
Each endpoint's ``auth`` (``read``, ``control`` or ``account``) is read from the app's access policy, so it
cannot drift from what ``app.auth`` enforces. With tokens configured the curl lines carry
``-H "Authorization: Bearer $CONTROL_TOKEN"`` (or ``$READ_TOKEN`` / ``$ACCOUNT_TOKEN``), never a token.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Match, Route

from app.query import HelpQuerySchema
from control.settings import Settings
from control.topics import EXCHANGES, TIMEFRAME_MS

_QUERY = HelpQuerySchema()

_JSON = "-H 'Content-Type: application/json'"

#: (method, path, body or None, query suffix, description)
_ENDPOINTS: list[tuple[str, str, str | None, str, str]] = [
    ("GET", "/status", None, "", "workers, connections, subscriptions (state, stale), pause flag"),
    ("GET", "/status", None, "?state=failed&exchange=bitmart&topic=bitmart:kline:&stale=1&limit=100",
     "filtered and paged (follow page.next); ?summary=1 for counts by state, exchange and reason"),
    ("GET", "/health", None, "", "health summary: redis latency, workers alive of total, paused"),
    ("GET", "/health/live", None, "", "liveness probe (no token, never touches Redis): 200 while the process answers"),
    ("GET", "/health/ready", None, "", "readiness probe (no token): 200, or 503 redis_unavailable / events_redis_unavailable / no_live_worker"),
    ("GET", "/openapi.json", None, "", "the OpenAPI 3.1 document of this API (no token)"),
    ("GET", "/docs", None, "", "API documentation page (Swagger UI, works offline; no token)"),
    ("GET", "/help", None, "", "this list; JSON with -H 'Accept: application/json' or ?format=json"),
    ("GET", "/metrics", None, "", "Prometheus metrics of the control server (workers: METRICS_PORT + process number)"),
    ("POST", "/klines/subscribe", '{"symbol":"BTCUSDT","tfs":["1m","5m"]}', "",
     'subscribe klines; "symbols":[...] for bulk (<=200), "exchange" optional; ?wait=S waits for active'),
    ("POST", "/klines/subscribe", '{"symbols":["BTCUSDT","ETHUSDT"],"tfs":["1H"],"exchange":"bitmart"}', "?wait=5",
     "bulk subscribe and wait up to 5 s until every topic is active or failed"),
    ("POST", "/klines/unsubscribe", '{"symbol":"BTCUSDT","tfs":["1m","5m"]}', "", "unsubscribe klines"),
    ("POST", "/trades/subscribe", '{"symbol":"BTCUSDT"}', "", 'subscribe public trades ("symbols" for bulk)'),
    ("POST", "/trades/unsubscribe", '{"symbol":"BTCUSDT"}', "", "unsubscribe public trades"),
    ("POST", "/ticker/subscribe", '{"symbol":"BTCUSDT","exchange":"binanceusdm"}', "", "subscribe 24 h tickers"),
    ("POST", "/ticker/unsubscribe", '{"symbol":"BTCUSDT","exchange":"binanceusdm"}', "", "unsubscribe tickers"),
    ("POST", "/bookticker/subscribe", '{"symbol":"BTC_USDT","exchange":"gateio"}', "", "subscribe best bid/ask"),
    ("POST", "/bookticker/unsubscribe", '{"symbol":"BTC_USDT","exchange":"gateio"}', "", "unsubscribe best bid/ask"),
    ("POST", "/depth/subscribe", '{"symbol":"BTCUSDT","levels":20,"exchange":"binanceusdm"}', "",
     ("order book: sequence-checked local book, top-N snapshots + raw deltas"
      " (levels 1..50 on BitMart, 1..100 on Binance USD-M and Gate.io)")),
    ("POST", "/depth/unsubscribe", '{"symbol":"BTCUSDT","exchange":"binanceusdm"}', "", "unsubscribe the order book"),
    ("POST", "/orders/subscribe", None, "",
     "one account's order updates; no body = account default of DEFAULT_EXCHANGE; ?wait=S as above"),
    ("POST", "/orders/subscribe", '{"exchange":"bitmart","account":"default"}', "?wait=5",
     'orders of a named account ({"exchange","account"}; 400 for an unknown account); gap + REST snapshot on reconnect'),
    ("POST", "/orders/unsubscribe", '{"exchange":"bitmart","account":"default"}', "", "stop an account's orders"),
    ("POST", "/positions/subscribe", '{"exchange":"bitmart","account":"default"}', "", "one account's positions"),
    ("POST", "/positions/unsubscribe", '{"exchange":"bitmart","account":"default"}', "", "stop its positions"),
    ("POST", "/balances/subscribe", '{"exchange":"bitmart","account":"default"}', "", "one account's balances"),
    ("POST", "/balances/unsubscribe", '{"exchange":"bitmart","account":"default"}', "", "stop its balances"),
    ("POST", "/stop", None, "", "pause streaming in every worker (desired state kept; POST /start resumes)"),
    ("POST", "/stop", '{"clear":true}', "", "stop and forget every subscription"),
    ("POST", "/start", None, "", "resume streaming"),
    ("GET", "/sse", None, "?topic=bitmart:kline:BTCUSDT:1m&topic=bitmart:trade:BTCUSDT",
     "Server-Sent Events for 1..50 topics; resume with Last-Event-ID; ?backlog=N sends the last N first"),
    ("GET", "/sse/klines/BTCUSDT", None, "?tf=1m&tf=5m&exchange=bitmart", "SSE shortcut for kline topics"),
    ("GET", "/sse/trades/BTCUSDT", None, "?exchange=bitmart", "SSE shortcut for a trade topic"),
    ("GET", "/sse/orders/default", None, "?exchange=bitmart",
     "one account's private orders (topic bitmart:order:default), after POST /orders/subscribe; as /sse"),
    ("GET", "/sse/positions/default", None, "?exchange=bitmart", "one account's private positions, as above"),
    ("GET", "/sse/balances/default", None, "?exchange=bitmart", "one account's private balances, as above"),
    ("GET", "/dashboard", None, "", "the live dashboard: open it in a browser (no token needed for the page itself)"),
    ("GET", "/dashboard/feed", None, "", "the dashboard's SSE feed: one status snapshot with rates and latency a second"),
]
#: Accounts (kept apart from ``_ENDPOINTS``: adding one needs FEEDPLANE_SECRET_KEY and real credentials).
_ACCOUNT_ENDPOINTS: list[tuple[str, str, str | None, str, str]] = [
    ("GET", "/accounts", None, "", "accounts: exchange, account, source env|file|api, key fingerprint; no secrets"),
    ("POST", "/accounts", '{"exchange":"bitmart","account":"alice","api_key":"...","api_secret":"...","memo":"..."}',
     "", "add/replace an account at run time (needs FEEDPLANE_SECRET_KEY; stored only encrypted)"),
    ("DELETE", "/accounts/bitmart/alice", None, "", "forget an account added with POST /accounts"),
]
#: Orders (issue 14; off unless ORDERS_ENABLED=1; kept apart: they need an account and move real money live).
_ORDER_ENDPOINTS: list[tuple[str, str, str | None, str, str]] = [
    ("POST", "/orders", ('{"exchange":"gateio","account":"default","symbol":"BTC_USDT","type":"limit","side":"buy",'
     '"size":"1","price":"60000","leverage":10,"margin_mode":"isolated","client_order_id":"bot-1",'
     '"take_profit":{"price":"63000"},"stop_loss":{"price":"58000","price_type":"mark"}}'), "",
     "place an order (then its take-profit/stop-loss); idempotent by client_order_id"),
    ("GET", "/orders/123", None, "?exchange=gateio&account=default", "an order as the exchange has it"),
    ("GET", "/orders/client/bot-1", None, "?exchange=gateio", "an order by client order id"),
    ("DELETE", "/orders/123", None, "?exchange=gateio&tp_id=456&sl_id=457", "cancel an order and its TP/SL"),
    ("POST", "/positions/close", '{"exchange":"gateio","symbol":"BTC_USDT","side":"long"}', "",
     "reduce-only market close of the whole position"),
    ("POST", "/trading/halt", '{"cancel_open":true}', "", "kill switch: refuse new orders, cancel open ones"),
    ("POST", "/trading/resume", None, "", "lift the kill switch"),
    ("POST", "/gate/place-futures-order", ('{"userId":"default","market_type":"limit","price":60000,"contract":"BTC_USDT",'
     '"leverage":10,"leverage_type":"ISOLATED","size":1,"position_type":"long"}'), "",
     "the seed Gate.io connector's place, as POST /orders (api-key/api-secret headers store the account)"),
    ("POST", "/gate/close-futures-order", '{"userId":"default","contract":"BTC_USDT","auto_size":"close_long"}', "",
     "the seed connector's close, as POST /positions/close"),
    ("DELETE", "/gate/cancel-futures-order", None, "?userId=default&trade_id=123&tp_id=456&sl_id=457",
     "the seed connector's cancel, as DELETE /orders/{trade_id}"),
    ("GET", "/gate/get-futures-order", None, "?userId=default&trade_id=123", "the seed connector's order lookup"),
    ("GET", "/sse/sse/orders/default", None, "", "the seed connector's order stream (gateio:order:{userId})"),
]
_TOKEN_VARS = {"control": "$CONTROL_TOKEN", "read": "$READ_TOKEN", "account": "$ACCOUNT_TOKEN", "public": None}


def _curl(base: str, method: str, path: str, body: str | None, query: str, auth: str | None) -> str:
    url = f"'{base}{path}{query}'" if query else f"{base}{path}"
    header = f' -H "Authorization: Bearer {_TOKEN_VARS[auth]}"' if auth and _TOKEN_VARS.get(auth) else ""
    if path.startswith(("/sse", "/dashboard/feed")):
        return f"curl -N{header} {url}"
    if method == "GET":
        return f"curl -s{header} {url}"
    if body is None:
        return f"curl -s{header} -X {method} {url}"
    return f"curl -s{header} -X {method} {url} {_JSON} -d '{body}'"


def access_of(policy: Sequence[tuple[BaseRoute, Any]], method: str, path: str) -> str:
    """The auth an endpoint needs (``read``, ``control``, ``account`` or ``public``), from the app's access policy."""
    scope = {"type": "http", "method": method, "path": path, "root_path": ""}
    for route, rule in policy:
        if route.matches(scope)[0] == Match.FULL:
            return str(rule.access)
    raise LookupError(f"no route for {method} {path}")  # a help entry without a route is a bug


def endpoints(
    settings: Settings,
    policy: Sequence[tuple[BaseRoute, Any]],
    secured: bool = False,
    table: Sequence[tuple[str, str, str | None, str, str]] = _ENDPOINTS,
) -> list[dict[str, Any]]:
    """``[{"method", "path", "description", "auth", "curl"}]`` for the configured address.

    ``secured``: tokens are configured, so curl lines send ``Authorization: Bearer $<VAR>``.
    """
    base = f"http://{settings.ctrl_addr}"
    out = []
    for m, p, b, q, d in table:
        auth = access_of(policy, m, p)
        out.append({"method": m, "path": p, "description": d, "auth": auth,
                    "curl": _curl(base, m, p, b, q, auth if secured else None)})  # fmt: skip
    return out


def _auth_text(s: Settings, secured: bool) -> list[str]:
    mode = "secured: every endpoint needs a token"
    if not secured:
        mode = "open: no token configured and CTRL_ADDR is loopback, so no token is needed and there are no limits"
    return [
        f"auth:       {mode}",
        "            send Authorization: Bearer <token>; GET /sse... and GET /ws (WebSocket) also take ?token=<token>",
        "            (alias ?access_token=; EventSource cannot send headers; other endpoints refuse it: 400 token_in_query)",
        "            control = CONTROL_TOKEN or ACCOUNTS_FILE tokens with scope control (implies read, every account)",
        "            read    = READ_TOKEN or file tokens with scope read: status, help, public SSE",
        '            account = a file token listing "exchange:account" (or control): /sse/{orders,positions,balances}',
        "            public  = no token: /health/live, /health/ready, /openapi.json, /docs, /dashboard (page, assets)",
        "            401 unauthorized (missing/invalid token, WWW-Authenticate: Bearer), 403 forbidden (scope/account)",
        f"limits:     per token per minute: control {s.rate_limit_control_per_min}, read {s.rate_limit_read_per_min}",
        f"            per token per minute: new SSE connections {s.rate_limit_sse_per_min}",
        f"            per client address: {s.rate_limit_auth_fail_per_min} requests without a valid token per minute",
        "            (0 = unlimited; secured mode only)",
        "            over a limit: 429 rate_limited with Retry-After (seconds)",
    ]


def _text(settings: Settings, policy: Sequence[tuple[BaseRoute, Any]], secured: bool) -> str:
    lines = [f"Feedplane control server on http://{settings.ctrl_addr}", ""]
    for title, table in (("", _ENDPOINTS), ("accounts (control):", _ACCOUNT_ENDPOINTS),
                         ("orders (ORDERS_ENABLED=1):", _ORDER_ENDPOINTS)):
        if title:
            lines += ["", title]
        for item in endpoints(settings, policy, secured, table):
            lines.append(f"{item['method']:<6} {item['path']:<24} [{item['auth']}] {item['description']}")
            lines.append(f"       {item['curl']}")
    lines += [
        "",
        *_auth_text(settings, secured),
        f"timeframes: {' '.join(TIMEFRAME_MS)} (BitMart spellings 1H 2H 4H 1D 1W accepted)",
        f"exchanges:  {' '.join(EXCHANGES)} (default {settings.default_exchange})",
        "errors:     {\"error\": {\"code\", \"message\", \"details\", \"timestamp\"}}",
        "",
    ]
    return "\n".join(lines)


async def help_page(request: Request) -> Response:
    """200 text/plain (default) or JSON ``{"endpoints", "accounts", "auth", "timeframes", "exchanges",
    "default_exchange"}``.
    ---
    get:
      summary: every endpoint with a working curl line, the auth it needs, limits
      parameters: [{in: query, schema: HelpQuerySchema}]
      responses:
        200:
          description: text/plain by default; JSON with Accept application/json or format=json
          content:
            text/plain: {schema: {type: string}}
            application/json: {schema: {type: object}}
    """
    query = _QUERY.load(dict(request.query_params))  # ValidationError -> 400
    settings = request.app.state.settings
    policy = request.app.state.access_policy
    secured = not request.app.state.auth_open
    fmt = query.get("format")
    wants_json = fmt == "json" or (fmt is None and "application/json" in request.headers.get("accept", ""))
    if wants_json:
        return JSONResponse(
            {
                "endpoints": endpoints(settings, policy, secured),
                "accounts": endpoints(settings, policy, secured, _ACCOUNT_ENDPOINTS),
                "orders": endpoints(settings, policy, secured, _ORDER_ENDPOINTS),
                "auth": {
                    "mode": "secured" if secured else "open",
                    "header": "Authorization: Bearer <token>",
                    "query_parameter": "token or access_token (GET /sse routes and GET /ws only)",
                    "scopes": {
                        "control": "subscribe/unsubscribe, stop/start, accounts; implies read and every account",
                        "read": "status, help, public SSE",
                        "account": 'private SSE of the accounts a token lists ("exchange:account"), or control',
                        "public": "no token: /health/live, /health/ready, /openapi.json, /docs, /dashboard (page, "
                                  "assets)",
                    },
                    "rate_limits_per_min": {
                        "control": settings.rate_limit_control_per_min,
                        "read": settings.rate_limit_read_per_min,
                        "sse_connections": settings.rate_limit_sse_per_min,
                        "auth_failures_per_address": settings.rate_limit_auth_fail_per_min,
                    },
                },
                "timeframes": list(TIMEFRAME_MS),
                "exchanges": list(EXCHANGES),
                "default_exchange": settings.default_exchange,
            }
        )
    return PlainTextResponse(_text(settings, policy, secured))


ROUTES = [Route("/help", help_page, methods=["GET"])]
