"""``GET /help``: every endpoint with a working curl line for the configured CTRL_ADDR.

text/plain by default (curl); JSON when ``Accept`` includes ``application/json`` or ``?format=json``.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from control.settings import Settings
from control.topics import EXCHANGES, TIMEFRAME_MS

_JSON = "-H 'Content-Type: application/json'"

#: (method, path, body or None, query suffix, description)
_ENDPOINTS: list[tuple[str, str, str | None, str, str]] = [
    ("GET", "/status", None, "", "workers, connections, subscriptions (state, stale), pause flag"),
    ("GET", "/help", None, "", "this list; JSON with -H 'Accept: application/json' or ?format=json"),
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
     "order book: sequence-checked local book, top-N snapshots + raw deltas (levels 1..100)"),
    ("POST", "/depth/unsubscribe", '{"symbol":"BTCUSDT","exchange":"binanceusdm"}', "", "unsubscribe the order book"),
    ("POST", "/orders/subscribe", '{"symbol":"BTCUSDT"}', "", "501: private order streams are not available"),
    ("POST", "/orders/unsubscribe", '{"symbol":"BTCUSDT"}', "", "501: private order streams are not available"),
    ("POST", "/positions/subscribe", '{"symbol":"BTCUSDT"}', "", "501: private position streams are not available"),
    ("POST", "/positions/unsubscribe", '{"symbol":"BTCUSDT"}', "", "501: private position streams are not available"),
    ("POST", "/stop", None, "", "pause streaming in every worker (desired state kept; POST /start resumes)"),
    ("POST", "/stop", '{"clear":true}', "", "stop and forget every subscription"),
    ("POST", "/start", None, "", "resume streaming"),
    ("GET", "/sse", None, "?topic=bitmart:kline:BTCUSDT:1m&topic=bitmart:trade:BTCUSDT",
     "Server-Sent Events for 1..50 topics; resume with Last-Event-ID; ?backlog=N sends the last N first"),
    ("GET", "/sse/klines/BTCUSDT", None, "?tf=1m&tf=5m&exchange=bitmart", "SSE shortcut for kline topics"),
    ("GET", "/sse/trades/BTCUSDT", None, "?exchange=bitmart", "SSE shortcut for a trade topic"),
]


def _curl(base: str, method: str, path: str, body: str | None, query: str) -> str:
    url = f"'{base}{path}{query}'" if query else f"{base}{path}"
    if path.startswith("/sse"):
        return f"curl -N {url}"
    if method == "GET":
        return f"curl -s {url}"
    if body is None:
        return f"curl -s -X POST {url}"
    return f"curl -s -X POST {url} {_JSON} -d '{body}'"


def endpoints(settings: Settings) -> list[dict[str, Any]]:
    """``[{"method", "path", "description", "curl"}]`` for the configured address."""
    base = f"http://{settings.ctrl_addr}"
    return [
        {"method": m, "path": p, "description": d, "curl": _curl(base, m, p, b, q)}
        for m, p, b, q, d in _ENDPOINTS
    ]


def _text(settings: Settings) -> str:
    lines = [f"Feedplane control server on http://{settings.ctrl_addr}", ""]
    for item in endpoints(settings):
        lines.append(f"{item['method']:<5} {item['path']:<24} {item['description']}")
        lines.append(f"      {item['curl']}")
    lines += [
        "",
        f"timeframes: {' '.join(TIMEFRAME_MS)} (BitMart spellings 1H 2H 4H 1D 1W accepted)",
        f"exchanges:  {' '.join(EXCHANGES)} (default {settings.default_exchange})",
        "errors:     {\"error\": {\"code\", \"message\", \"details\", \"timestamp\"}}",
        "",
    ]
    return "\n".join(lines)


async def help_page(request: Request) -> Response:
    """200 text/plain (default) or JSON ``{"endpoints", "timeframes", "exchanges", "default_exchange"}``."""
    settings = request.app.state.settings
    wants_json = request.query_params.get("format") == "json" or "application/json" in request.headers.get(
        "accept", ""
    )
    if wants_json:
        return JSONResponse(
            {
                "endpoints": endpoints(settings),
                "timeframes": list(TIMEFRAME_MS),
                "exchanges": list(EXCHANGES),
                "default_exchange": settings.default_exchange,
            }
        )
    return PlainTextResponse(_text(settings))


ROUTES = [Route("/help", help_page, methods=["GET"])]
