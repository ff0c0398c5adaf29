"""The ASGI application factory: ``create_app(settings)``.

Routes, exception handlers (``app.errors``), the lifespan (``app.lifespan``) and the request body
limit (``settings.max_body_bytes`` via Starlette's ``max_body_size``; over it -> 413 envelope).
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.types import ASGIApp

from app.errors import EXCEPTION_HANDLERS, PayloadTooLargeEnvelope
from app.lifespan import lifespan
from app.routes import all_routes
from control.settings import Settings


class FeedplaneApp(Starlette):
    """Starlette with the 413 envelope wrapper outermost (Starlette's body limit answers 413 on its own)."""

    def build_middleware_stack(self) -> ASGIApp:
        """Starlette's stack wrapped in ``PayloadTooLargeEnvelope``."""
        return PayloadTooLargeEnvelope(super().build_middleware_stack(), self.max_body_size or 0)


def create_app(settings: Settings) -> Starlette:
    """Build the control server for ``settings``; connects to nothing until lifespan startup.

    ``app.state.settings`` is set here; lifespan adds ``store``, ``dispatcher``, ``sse_redis`` and ``hub``.
    """
    app = FeedplaneApp(
        routes=all_routes(),
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
        max_body_size=settings.max_body_bytes,
    )
    app.state.settings = settings
    return app
