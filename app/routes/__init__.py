"""HTTP routes of the control server, one module per concern, each paired with the auth rule it needs."""

from __future__ import annotations

from starlette.routing import BaseRoute

from app import observe
from app.auth import CONTROL_RULE, PUBLIC_RULE, READ_RULE, Rule
from app.routes import accounts, control, dashboard, docs, health, orders, seed_compat, sse, status
from app.routes import help as help_page


def access_policy() -> list[tuple[BaseRoute, Rule]]:
    """Every route with its auth rule: the one table ``all_routes`` and ``app.auth.AuthMiddleware`` share.

    status, help, metrics, health summary: ``read``; control commands and accounts: ``control``; SSE: ``read``
    (public) or ``account`` (private, checked against the account by the handler); probes and the API description
    (``/health/live``, ``/health/ready``, ``/openapi.json``, ``/docs``): ``public``, no token; the dashboard: its
    page and assets ``public``, its feed ``read`` (SSE); orders (and the seed's ``/gate/*``): ``account``;
    ``/trading/halt|resume``: ``control``.
    """
    return [
        *((route, PUBLIC_RULE) for route in health.PUBLIC_ROUTES),
        *((route, PUBLIC_RULE) for route in docs.ROUTES),
        *((route, READ_RULE) for route in health.ROUTES),
        *((route, READ_RULE) for route in status.ROUTES),
        *((route, READ_RULE) for route in help_page.ROUTES),
        *((route, READ_RULE) for route in observe.ROUTES),
        *((route, CONTROL_RULE) for route in control.ROUTES),
        *((route, CONTROL_RULE) for route in accounts.ROUTES),
        *sse.POLICY,
        *dashboard.POLICY,
        *orders.POLICY,
        *seed_compat.POLICY,
    ]


def all_routes() -> list[BaseRoute]:
    """Every route of the control server (health, docs, status, help, metrics, control commands, accounts, SSE,
    dashboard, orders)."""
    return [route for route, _ in access_policy()]
