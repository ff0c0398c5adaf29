"""The ASGI application factory: ``create_app(settings)``.

Routes with their auth rules (``app.routes.access_policy``), exception handlers (``app.errors``), the lifespan
(``app.lifespan``), the request body limit (``settings.max_body_bytes`` via Starlette's ``max_body_size``; over
it -> 413 envelope), CORS when CORS_ORIGINS is set, and ``app.auth.AuthMiddleware`` (tokens, scopes, rate limits).

Middleware order, outermost first: request id and HTTP metrics (``app.observe``), unread-body drain
read leaves the keep-alive connection usable), 413 envelope, Starlette's error and body-limit layers, CORS (a
browser's preflight is answered without a token, and error answers carry the CORS headers too), auth, exception
handlers, routes.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp

from app.auth import Authenticator, AuthMiddleware, check_exposure
from app.errors import EXCEPTION_HANDLERS, PayloadTooLargeEnvelope
from app.fanout_metrics import FanoutCollector
from app.forwarded import parse_networks
from app.keepalive import DRAIN_MIN_BYTES, DrainUnreadBody
from app.lifespan import lifespan
from app.observe import ControlMetrics, Observer
from app.ratelimit import RateLimiter
from app.routes import access_policy
from app.ws.access import Registry
from app.ws.route import ROUTES as WS_ROUTES
from control.settings import Settings

#: Browser SSE clients send Authorization and, on reconnect, Last-Event-ID.
CORS_ALLOW_HEADERS = ("Authorization", "Last-Event-ID", "Content-Type")
CORS_EXPOSE_HEADERS = ("Retry-After", "WWW-Authenticate")


class FeedplaneApp(Starlette):
    """Starlette with three pure-ASGI wrappers outside it: the 413 envelope (Starlette's body limit answers 413 on
    its own), the unread-body drain and, outermost, the request id and HTTP metrics (``app.observe``)."""

    def build_middleware_stack(self) -> ASGIApp:
        """Starlette's stack wrapped in ``PayloadTooLargeEnvelope``, that in ``DrainUnreadBody`` (which drains up
        to max(1 MiB, MAX_BODY_BYTES), so an over-limit body that is not huge still keeps the connection), that in
        ``Observer`` (every answer counted and given an ``X-Request-ID``)."""
        app: ASGIApp = PayloadTooLargeEnvelope(super().build_middleware_stack(), self.max_body_size or 0)
        app = DrainUnreadBody(app, max(DRAIN_MIN_BYTES, self.max_body_size or 0))
        return Observer(app, self.state.metrics)


def create_app(settings: Settings) -> Starlette:
    """Build the control server for ``settings``; connects to nothing until lifespan startup.

    Raises SettingsError (CTRL_ADDR) for a non-loopback address without any token. ``app.state.settings`` and
    ``app.state.access_policy``/``auth_open``/``authenticator``/``limiter``/``ws_registry`` and ``metrics``
    (``app.observe.ControlMetrics``) are set here; lifespan adds ``store``, ``dispatcher``,
    ``sse_redis`` and ``hub``.
    """
    authenticator = Authenticator.from_settings(settings)
    check_exposure(settings, authenticator)
    policy = access_policy()
    middleware = []
    if settings.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=settings.cors_origins,
                allow_methods=("GET", "POST", "DELETE"),
                allow_headers=CORS_ALLOW_HEADERS,
                expose_headers=CORS_EXPOSE_HEADERS,
            )
        )
    limiter = RateLimiter.from_settings(settings)
    middleware.append(
        Middleware(
            AuthMiddleware, policy=policy, authenticator=authenticator, limiter=limiter,
            trusted_proxies=settings.trusted_proxies,
        )
    )
    app = FeedplaneApp(
        routes=[*(route for route, _ in policy), *WS_ROUTES],  # /ws authenticates itself (app.ws.access)
        middleware=middleware,
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
        max_body_size=settings.max_body_bytes,
    )
    app.state.settings = settings
    app.state.metrics = ControlMetrics()
    app.state.metrics.registry.register(FanoutCollector(app.state))
    app.state.access_policy = policy
    app.state.auth_open = authenticator.open
    app.state.authenticator = authenticator
    app.state.limiter = limiter
    app.state.trusted_networks = parse_networks(settings.trusted_proxies)  # /ws reads X-Forwarded-For only from them
    app.state.ws_registry = Registry(settings.ws_connections_per_token)
    return app
