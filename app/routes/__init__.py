"""HTTP routes of the control server, one module per concern, each paired with the auth rule it needs."""

from __future__ import annotations

from starlette.routing import BaseRoute

from app.auth import CONTROL_RULE, PUBLIC_RULE, READ_RULE, Rule
from app.routes import accounts, control, docs, health, sse, status
from app.routes import help as help_page


def access_policy() -> list[tuple[BaseRoute, Rule]]:
    """Every route with its auth rule: the one table ``all_routes`` and ``app.auth.AuthMiddleware`` share.

    status, help, health summary: ``read``; control commands and accounts: ``control``; SSE: ``read`` (public)
    or ``account`` (private, checked against the account by the handler); probes and the API description
    (``/health/live``, ``/health/ready``, ``/openapi.json``, ``/docs``): ``public``, no token.
    """
    return [
        *((route, PUBLIC_RULE) for route in health.PUBLIC_ROUTES),
        *((route, PUBLIC_RULE) for route in docs.ROUTES),
        *((route, READ_RULE) for route in health.ROUTES),
        *((route, READ_RULE) for route in status.ROUTES),
        *((route, READ_RULE) for route in help_page.ROUTES),
        *((route, CONTROL_RULE) for route in control.ROUTES),
        *((route, CONTROL_RULE) for route in accounts.ROUTES),
        *sse.POLICY,
    ]


def all_routes() -> list[BaseRoute]:
    """Every route of the control server (health, docs, status, help, control commands, accounts, SSE)."""
    return [route for route, _ in access_policy()]
