"""Bearer tokens, scopes and rate limits: one pure ASGI middleware in front of every route.

Modes:
    open     no token configured (CONTROL_TOKEN, READ_TOKEN, ACCOUNTS_FILE "tokens") and CTRL_ADDR on loopback:
             every request passes without a token and without rate limits, as before tokens existed.
    secured  any token configured: every route needs one but the ``public`` ones (the dashboard's static files);
             an unknown path needs any valid token, then 404.
    refused  no token configured and CTRL_ADDR not loopback: ``check_exposure`` raises SettingsError at start.

Per request in secured mode (``AuthMiddleware``):
    1. The route's ``Rule`` (declared with the routes, ``app.routes.access_policy``): ``read``, ``control``,
       or ``account`` (private SSE: any valid token here, the handler calls ``require_account``), or ``public``:
       no token, no rate limit, and nothing here touches Redis — the dashboard's static page and assets (no data in
       them; a browser loads the page, then a token is pasted into it; ``?access_token=`` is still cut out), the
       probes ``/health/live`` and ``/health/ready`` (a probe must not depend on Redis or on a token) and the API
       description ``/openapi.json``, ``/docs``.
    2. The token: ``Authorization: Bearer <token>``. On SSE GET routes (``Rule.stream``) the query parameter
       ``token`` (or ``access_token``) works too, because a browser ``EventSource`` cannot send headers. It is
       cut out of the query string before anything else (route, logs) sees it. Elsewhere ``?token=`` and
       ``?access_token=`` are 400 ``token_in_query``: the header is the only way there. (WebSocket requests do
       not pass here: ``app.ws.access`` checks ``GET /ws`` the same way.)
    3. Verification: the token's sha256 is compared with ``hmac.compare_digest`` to the digest of every
       configured token, with no early exit. Raw tokens are never kept or compared.
    4. Rate limit (``app.ratelimit``, one Redis round trip). A missing or unknown token is charged to the
       client address and answered 401 (``WWW-Authenticate: Bearer``), or 429 once the address is over its
       limit. A valid token is charged to its own counter, and is also refused while its address is over
       the auth-failure limit. 429 carries ``Retry-After``. Redis down gives the usual 503 envelope.
    5. Scope: ``control`` routes need ``control``; ``read`` routes need ``read`` (``control`` implies it).
       A token without the scope gets 403 ``forbidden``.
The outcome is put in the ASGI scope (``AuthContext`` under ``AUTH_SCOPE_KEY``) for handlers.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Receive, Scope, Send

from app.errors import ApiError, error_response
from app.forwarded import client_address, parse_networks
from app.ratelimit import AUTH_FAIL, CONTROL, READ, SSE, Decision, RateLimiter
from control.accounts import CONTROL as CONTROL_SCOPE
from control.accounts import READ as READ_SCOPE
from control.accounts import TokenGrant, make_grant, token_digest
from control.settings import Settings, SettingsError

logger = logging.getLogger(__name__)

AUTH_SCOPE_KEY = "feedplane.auth"
ACCESS_TOKEN_PARAM = "access_token"
#: Query parameters that carry a token (SSE routes and ``GET /ws``); both are scrubbed from the scope.
TOKEN_PARAMS = (ACCESS_TOKEN_PARAM, "token")
ACCOUNT = "account"
#: ``Rule.access`` of routes that need no token (probes, the API description, the dashboard's static files).
PUBLIC = "public"
_REALM = 'Bearer realm="feedplane"'


@dataclass(frozen=True, slots=True)
class Rule:
    """What a route needs: ``access`` = ``read`` | ``control`` | ``account`` | ``public``; ``stream`` = an SSE route
    (``?access_token=`` accepted on GET, counted as a new SSE connection)."""

    access: str
    stream: bool = False

    @property
    def limit_kind(self) -> str:
        """Rate-limit counter charged for this route (``sse``, ``control`` or ``read``)."""
        return SSE if self.stream else CONTROL if self.access == CONTROL_SCOPE else READ


READ_RULE = Rule(READ_SCOPE)
CONTROL_RULE = Rule(CONTROL_SCOPE)
SSE_RULE = Rule(READ_SCOPE, stream=True)
PRIVATE_SSE_RULE = Rule(ACCOUNT, stream=True)
#: Static files without data (the dashboard page): no token needed.
PUBLIC_RULE = Rule(PUBLIC)

Policy = Sequence[tuple[BaseRoute, Rule]]


@dataclass(frozen=True, slots=True)
class AuthContext:
    """A request's authentication: ``grant`` is None in open mode."""

    grant: TokenGrant | None

    @property
    def open(self) -> bool:
        """True in open mode (no tokens configured)."""
        return self.grant is None


OPEN = AuthContext(None)


class Authenticator:
    """The configured tokens, as digests; ``verify`` is constant-time."""

    def __init__(self, grants: Sequence[TokenGrant]) -> None:
        merged: dict[bytes, TokenGrant] = {}
        for grant in grants:  # one token configured twice (CONTROL_TOKEN == READ_TOKEN): union of its grants
            if (seen := merged.get(grant.digest)) is not None:
                grant = TokenGrant(seen.id, seen.digest, seen.scopes | grant.scopes, seen.accounts | grant.accounts)
            merged[grant.digest] = grant
        self.grants: tuple[TokenGrant, ...] = tuple(merged.values())

    @classmethod
    def from_settings(cls, settings: Settings) -> Authenticator:
        """Tokens from CONTROL_TOKEN (control + read), READ_TOKEN (read) and ACCOUNTS_FILE ``tokens``."""
        grants = []
        if settings.control_token:
            grants.append(make_grant("env:control", settings.control_token, (CONTROL_SCOPE, READ_SCOPE)))
        if settings.read_token:
            grants.append(make_grant("env:read", settings.read_token, (READ_SCOPE,)))
        if settings.secrets_file is not None:
            grants.extend(settings.secrets_file.tokens)
        return cls(grants)

    @property
    def open(self) -> bool:
        """True when no token is configured."""
        return not self.grants

    def verify(self, token: str) -> TokenGrant | None:
        """The grant of ``token``, or None. Compares sha256 digests with ``hmac.compare_digest`` against every
        configured token (no early exit), so the time taken does not depend on which one matched."""
        digest = token_digest(token)
        found = None
        for grant in self.grants:
            if hmac.compare_digest(digest, grant.digest):
                found = grant
        return found


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IP literals (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(settings: Settings, authenticator: Authenticator) -> None:
    """Refuse (SettingsError naming CTRL_ADDR) to serve a non-loopback address without any token."""
    if authenticator.open and not is_loopback(settings.ctrl_host):
        raise SettingsError(
            "CTRL_ADDR",
            f"{settings.ctrl_addr} is not a loopback address; refusing to serve without CONTROL_TOKEN/READ_TOKEN "
            "(or tokens in ACCOUNTS_FILE). Set a token, or bind 127.0.0.1 for open local use.",
        )


def auth_context(request: Request) -> AuthContext | None:
    """The AuthContext the middleware stored for ``request`` (None when the middleware did not run)."""
    ctx: AuthContext | None = request.scope.get(AUTH_SCOPE_KEY)
    return ctx


def require_account(request: Request, exchange: str, account: str) -> None:
    """Allow a private stream of ``exchange:account`` in open mode, to a control token, or to a token listing
    that account; otherwise raise ApiError 403 ``forbidden``. Fails closed when no AuthContext is present."""
    ctx = auth_context(request)
    if ctx is not None and (ctx.grant is None or ctx.grant.can_read_account(exchange, account)):
        return
    raise ApiError(403, "forbidden", f"this token may not read the private streams of {exchange}:{account}")


def scrub_access_token(scope: Scope) -> tuple[list[str], bool]:
    """Remove every ``token`` and ``access_token`` parameter from ``scope["query_string"]`` in place.

    Returns the removed values (decoded) and whether any was present. The other parameters keep their exact bytes.
    """
    raw: bytes = scope.get("query_string", b"")
    if b"token" not in raw and b"%" not in raw:  # fast path; names may be percent-encoded: decoded below
        return [], False
    kept, found = [], []
    for part in raw.split(b"&"):
        name, _, value = part.partition(b"=")
        if unquote_plus(name.decode("latin-1")) in TOKEN_PARAMS:
            found.append(unquote_plus(value.decode("latin-1")))
        else:
            kept.append(part)
    if found:
        scope["query_string"] = b"&".join(kept)
    return found, bool(found)


class AuthMiddleware:
    """Pure ASGI: authenticate, rate-limit and authorize every HTTP request (see module docstring).

    ``policy`` pairs each route with its Rule (the same route objects the app routes with).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        policy: Policy,
        authenticator: Authenticator,
        limiter: RateLimiter,
        trusted_proxies: Sequence[str] = (),
    ) -> None:
        self.app = app
        self.policy = list(policy)
        self.authenticator = authenticator
        self.limiter = limiter
        self.trusted = parse_networks(trusted_proxies)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rule = self.rule_for(scope)
        query_tokens, in_query = scrub_access_token(scope)
        if rule is not None and rule.access == PUBLIC:
            await self.app(scope, receive, send)
            return
        if self.authenticator.open:
            scope[AUTH_SCOPE_KEY] = OPEN
            await self.app(scope, receive, send)
            return
        header = Headers(scope=scope).get("authorization")
        if in_query:
            problem = _query_token_problem(scope, rule, header, query_tokens)
            if problem:
                await error_response(400, "token_in_query", problem)(scope, receive, send)
                return
        token = query_tokens[0] if in_query else _bearer(header)
        grant = self.authenticator.verify(token) if token else None
        response = await self._check(scope, rule, grant, missing=header is None and not in_query)
        if response is not None:
            await response(scope, receive, send)
            return
        scope[AUTH_SCOPE_KEY] = AuthContext(grant)
        await self.app(scope, receive, send)

    def rule_for(self, scope: Scope) -> Rule | None:
        """The Rule of the route that will handle ``scope`` (a method mismatch counts); None for unknown paths."""
        partial = None
        for route, rule in self.policy:
            match, _ = route.matches(scope)
            if match == Match.FULL:
                return rule
            if match == Match.PARTIAL and partial is None:
                partial = rule
        return partial

    async def _check(self, scope: Scope, rule: Rule | None, grant: TokenGrant | None, missing: bool) -> Any:
        """None when the request may proceed, else the error response (429, 401, 403, 503)."""
        address = client_address(scope, self.trusted)  # X-Forwarded-For only from TRUSTED_PROXIES
        redis = scope["app"].state.store.redis
        try:
            if grant is None:
                decision = await self.limiter.fail(redis, address)
            else:
                decision = await self.limiter.hit(redis, (rule or READ_RULE).limit_kind, grant.id, address)
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            if (metrics := getattr(scope["app"].state, "metrics", None)) is not None:
                metrics.redis_error("rate_limit")
            logger.warning("redis unavailable for %s %s (rate limit): %s: %s", scope["method"], scope["path"],
                           type(exc).__name__, exc)  # fmt: skip
            return error_response(503, "redis_unavailable", "Redis is unreachable; try again shortly")
        if not decision.allowed:
            return _rate_limited(decision)
        if grant is None:
            if missing:
                hint = " or ?token=<token> (alias ?access_token=)" if rule is not None and rule.stream else ""
                message = f"authentication required: send Authorization: Bearer <token>{hint}"
                return error_response(401, "unauthorized", message, headers={"WWW-Authenticate": _REALM})
            logger.info("rejected invalid token from %s on %s %s", address, scope["method"], scope["path"])
            challenge = f'{_REALM}, error="invalid_token"'
            return error_response(401, "unauthorized", "invalid token", headers={"WWW-Authenticate": challenge})
        needed = rule.access if rule is not None else None
        if needed in (CONTROL_SCOPE, READ_SCOPE) and not grant.has(needed):
            challenge = f'{_REALM}, error="insufficient_scope", scope="{needed}"'
            return error_response(
                403, "forbidden", f"this token lacks the {needed!r} scope", {"required_scope": needed},
                headers={"WWW-Authenticate": challenge},
            )  # fmt: skip
        return None


def _bearer(header: str | None) -> str:
    """The token of ``Authorization: Bearer <token>``; "" when absent or another scheme."""
    if not header:
        return ""
    scheme, _, value = header.strip().partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


def _query_token_problem(scope: Scope, rule: Rule | None, header: str | None, values: list[str]) -> str | None:
    if rule is None or not rule.stream or scope["method"] not in ("GET", "HEAD"):
        return "?token= (or ?access_token=) is accepted only on GET /sse routes; send Authorization: Bearer <token>"
    if header is not None or len(values) != 1:
        return "give the token once: either Authorization: Bearer <token> or one ?token="
    return None


def _rate_limited(decision: Decision) -> Any:
    if decision.kind == AUTH_FAIL:
        what = f"too many requests without a valid token from this address ({decision.limit} per minute)"
    else:
        noun = "new SSE connections" if decision.kind == SSE else f"{decision.kind} requests"
        who = "this token from this address" if decision.kind == SSE else "this token"
        what = f"rate limit of {decision.limit} {noun} per minute reached for {who}"
    details = {"retry_after_s": decision.retry_after_s, "limit_per_min": decision.limit, "counter": decision.kind}
    return error_response(
        429, "rate_limited", f"{what}; retry in {decision.retry_after_s} s", details,
        headers={"Retry-After": str(decision.retry_after_s)},
    )  # fmt: skip
