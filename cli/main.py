"""feedplane: the command line of the control API (typer + rich). Talks to the control server over HTTP only.

Address CTRL_ADDR (or --addr), token FEEDPLANE_TOKEN (never an option: it would show in ps)::

    feedplane status [--state failed] [--exchange bitmart] [--topic bitmart:kline:] [--stale] [--summary] [--json]
    feedplane subscribe klines BTCUSDT 1m 5m [--exchange binanceusdm] [--wait 5]
    feedplane subscribe trades|ticker|bookticker BTCUSDT [ETHUSDT ...]    depth BTCUSDT --levels 20
    feedplane subscribe orders|positions|balances [ACCOUNT] [--exchange bitmart]
    feedplane unsubscribe <same arguments>
    feedplane stop [--clear] | start
    feedplane tail TOPIC... [--from-id CURSOR] [--pretty] [--count N]
    feedplane health
    feedplane ctl status | restart api | tail -f worker_00        (supervisorctl, see cli.ctl)

Any error answer prints the server's envelope message (error: HTTP 400 validation_error: tfs.0: ...) on
stderr and exits 1; a server that does not answer exits 2.
"""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import Coroutine
from typing import Annotated, Any, TypeVar

import orjson
import typer
from rich.console import Console

from cli import render
from cli.client import ApiClient, CliError, new_request_id
from cli.ctl import run_ctl
from cli.tail import SseEvent, tail

T = TypeVar("T")
PUBLIC = ("klines", "trades", "ticker", "bookticker", "depth")
PRIVATE = ("orders", "positions", "balances")
_TIMEFRAME = re.compile(r"\d+[mhdwMHDW]")

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Feedplane control API from the shell.")
#: Tables are not cut to 80 columns when the output goes to a file or a pipe.
console = Console(width=None if sys.stdout.isatty() else 200)
errors = Console(stderr=True, width=None if sys.stderr.isatty() else 200)
_addr: str | None = None

Exchange = Annotated[str | None, typer.Option("--exchange", "-e", help="exchange id (default: the server's)")]


@app.callback()
def _options(addr: Annotated[str | None, typer.Option(help="control server host:port (default $CTRL_ADDR)")] = None,
             ) -> None:  # fmt: skip
    global _addr
    _addr = addr


def _client() -> ApiClient:
    return ApiClient.from_env(_addr)


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run coro; a CliError prints the server's message and exits 1 (2 when nothing answered)."""
    try:
        return asyncio.run(coro)
    except CliError as exc:
        rid = f" (request id {exc.request_id})" if exc.request_id else ""
        errors.print(f"[bold red]error:[/] {exc}{rid}", markup=True, highlight=False, soft_wrap=True)
        raise typer.Exit(2 if exc.status == 0 else 1) from None


def _json(data: Any) -> None:
    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")


def request_body(channel: str, args: list[str], exchange: str | None, levels: int | None) -> dict[str, Any]:
    """The subscribe/unsubscribe body of channel for the command's arguments (see the module docstring).

    Raises typer.BadParameter for arguments the channel cannot take."""
    body: dict[str, Any] = {"exchange": exchange} if exchange else {}
    if channel in PRIVATE:
        if len(args) > 1:
            raise typer.BadParameter(f"{channel} takes at most one ACCOUNT")
        if args:
            body["account"] = args[0]
        return body
    symbols = [a for a in args if not (channel == "klines" and _TIMEFRAME.fullmatch(a))]
    if not symbols:
        raise typer.BadParameter(f"{channel} needs at least one SYMBOL")
    if channel == "klines":
        tfs = [a for a in args if _TIMEFRAME.fullmatch(a)]
        if not tfs:
            raise typer.BadParameter("klines needs at least one timeframe (1m 5m 1h ...)")
        body["tfs"] = tfs
    if channel == "depth" and levels is not None:
        body["levels"] = levels
    if len(symbols) == 1:
        body["symbol"] = symbols[0]
    else:
        body["symbols"] = symbols
    return body


def _channel(value: str) -> str:
    if value not in PUBLIC + PRIVATE:
        raise typer.BadParameter(f"one of {', '.join(PUBLIC + PRIVATE)}")
    return value


Channel = Annotated[str, typer.Argument(callback=_channel, help=f"{'|'.join(PUBLIC + PRIVATE)}")]
Args = Annotated[list[str] | None, typer.Argument(help="symbols (and timeframes for klines), or an ACCOUNT")]


@app.command()
def status(
    state: Annotated[str | None, typer.Option(help="only subscriptions in this state (pending|active|failed)")] = None,
    exchange: Exchange = None,
    topic: Annotated[str | None, typer.Option(help="only topics starting with this prefix")] = None,
    stale: Annotated[bool, typer.Option("--stale", help="only stale subscriptions")] = False,
    summary: Annotated[bool, typer.Option("--summary", help="counts by state and exchange only")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="the JSON body instead of tables")] = False,
) -> None:
    """Workers, connections and subscriptions (GET /status), as tables with coloured states."""
    params = [(k, v) for k, v in (("state", state), ("exchange", exchange), ("topic", topic)) if v]
    params += [("stale", "1")] if stale else []
    params += [("summary", "1")] if summary else []
    _, body = _run(_client().request("GET", "/status", params=params))
    records = render.filter_subscriptions(body.get("subscriptions") or [], state=state, exchange=exchange,
                                          topic=topic, stale=stale)  # fmt: skip
    if summary:
        if isinstance(body.get("summary"), dict):  # the server's own summary (/status?summary=1)
            counts = body["summary"]
        elif "subscriptions" in body:  # a server without it: counted here
            counts = render.summary_of(records)
        else:  # a summary under other keys: every mapping of counts it has
            counts = {k: v for k, v in body.items() if isinstance(v, dict)}
        _json(counts) if as_json else console.print(render.counts_table("subscriptions", counts))
        return
    if as_json:
        _json({**body, "subscriptions": records})
        return
    render.print_status(console, body, records)
    more = next((body[k] for k in ("next", "next_cursor", "next_page") if body.get(k)), None)
    if more is not None:  # a server that pages its subscription list
        errors.print(f"more subscriptions on the server (next: {more}); narrow with --state/--exchange/--topic")


@app.command()
def subscribe(
    channel: Channel, args: Args = None, exchange: Exchange = None,
    wait: Annotated[float | None, typer.Option(help="wait up to S seconds until every topic is active or failed")] = None,
    levels: Annotated[int | None, typer.Option(help="depth: order-book levels")] = None,
) -> None:
    """Subscribe (POST /{channel}/subscribe); prints the answer, with each topic's state when --wait."""
    body = request_body(channel, list(args or []), exchange, levels)
    params = [("wait", f"{wait:g}")] if wait is not None else []
    timeout, rid = 15.0 + (wait or 0.0), new_request_id()
    code, answer = _run(_client().request("POST", f"/{channel}/subscribe", body=body, params=params, timeout_s=timeout,
                                          request_id=rid))  # fmt: skip
    console.print(f"accepted {len(answer.get('accepted', []))}: added {answer.get('added', [])}, "
                  f"already {answer.get('already', [])}{' (paused)' if answer.get('paused') else ''}",
                  highlight=False)  # fmt: skip
    console.print(f"request id {rid}", style="dim", highlight=False)  # in the server's and the worker's log lines
    if "subscriptions" in answer:
        console.print(render.subscriptions_table(answer["subscriptions"]))
        if any(s.get("state") == "failed" for s in answer["subscriptions"]):
            raise typer.Exit(1)
        if code == 202:
            errors.print(f"not settled within {wait:g} s (see `feedplane status`)")


@app.command()
def unsubscribe(channel: Channel, args: Args = None, exchange: Exchange = None) -> None:
    """Unsubscribe (POST /{channel}/unsubscribe): prints what was removed and what was not subscribed."""
    body = request_body(channel, list(args or []), exchange, None)
    _, answer = _run(_client().request("POST", f"/{channel}/unsubscribe", body=body))
    console.print(f"removed {answer.get('removed', [])}, not subscribed {answer.get('not_subscribed', [])}",
                  highlight=False)  # fmt: skip


@app.command()
def stop(clear: Annotated[bool, typer.Option("--clear", help="also forget every subscription")] = False) -> None:
    """Stop streaming everywhere (POST /stop); --clear forgets the desired state."""
    _, answer = _run(_client().request("POST", "/stop", body={"clear": True} if clear else None))
    console.print(f"stopped: paused={answer.get('paused')} cleared={answer.get('cleared')}", highlight=False)


@app.command()
def start() -> None:
    """Resume streaming the desired state (POST /start)."""
    _, answer = _run(_client().request("POST", "/start"))
    console.print(f"started: {answer.get('topics')} topics", highlight=False)


@app.command("tail")
def tail_command(
    topics: Annotated[list[str], typer.Argument(help="topics, e.g. bitmart:kline:BTCUSDT:1m")],
    from_id: Annotated[str | None, typer.Option("--from-id", help="resume after this event id (cursor)")] = None,
    pretty: Annotated[bool, typer.Option("--pretty", help="a compact row per event instead of JSON lines")] = False,
    count: Annotated[int | None, typer.Option(help="stop after N events")] = None,
) -> None:
    """Follow topics over SSE; one JSON line per event; resumes with Last-Event-ID after a dropped connection."""
    width = max(len(t) for t in topics)

    def emit(event: SseEvent, data: Any) -> None:
        line = render.tail_row(width, data) if pretty else orjson.dumps(data).decode()
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    def connected(n: int) -> None:
        if n > 1:
            errors.print(f"reconnected (#{n - 1}), resuming after the last event seen")

    try:
        _run(tail(_client(), topics, emit, from_id=from_id, max_events=count, on_connect=connected))
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


@app.command()
def health() -> None:
    """GET /health when the server has it, else a check built from /status; exit 1 when not healthy."""
    client = _client()

    async def check() -> tuple[bool, dict[str, Any]]:
        try:
            code, body = await client.request("GET", "/health")
            if isinstance(body, dict):
                return code == 200 and body.get("status", "ok") in ("ok", "ready", "healthy"), body
        except CliError as exc:
            if exc.status not in (404, 405):
                if exc.status == 503 and exc.code != "redis_unavailable":
                    return False, {"status": "unavailable", "reason": exc.message}
                raise
        _, body = await client.request("GET", "/status")
        alive = sum(1 for w in body.get("workers") or [] if w.get("alive"))
        states = render.summary_of(body.get("subscriptions") or [])["state"]
        ok = alive > 0
        return ok, {"status": "ok" if ok else "unavailable", "workers_alive": alive, "subscriptions": states,
                    "paused": body.get("paused"), **({} if ok else {"reason": "no live worker"})}  # fmt: skip

    ok, report = _run(check())
    console.print(render.counts_table("health", {k: v for k, v in report.items() if not isinstance(v, list)}))
    if not ok:
        raise typer.Exit(1)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def ctl(ctx: typer.Context) -> None:
    """supervisorctl for this project's supervisord: feedplane ctl status, restart api, tail -f worker_00."""
    raise typer.Exit(run_ctl(list(ctx.args)))


def main() -> None:
    """Console-script entry point (feedplane)."""
    app()


if __name__ == "__main__":
    main()
