"""HTTP routes of the control server, one module per concern."""

from __future__ import annotations

from starlette.routing import BaseRoute

from app.routes import control, sse, status
from app.routes import help as help_page


def all_routes() -> list[BaseRoute]:
    """Every route of the control server (status, help, control commands, SSE)."""
    return [*status.ROUTES, *help_page.ROUTES, *control.ROUTES, *sse.ROUTES]
