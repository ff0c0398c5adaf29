"""Feedplane HTTP control server: desired subscriptions in, Server-Sent Events out.

Imports ``control`` (the contract), starlette, sse-starlette, hypercorn, marshmallow, redis and
arq (enqueue only); never ``workers``. Build the ASGI app with ``app.main.create_app(settings)``;
run it with ``python -m app.serve``.
"""
