"""The WebSocket fan-out API, ``GET /ws``: one socket on which a client subscribes and unsubscribes at run time.

Modules: ``protocol`` (client messages validated with marshmallow into topics; server messages), ``access``
(tokens, scopes, connection limits), ``connection`` (send queue, batching, heartbeat, idle timeout, slow-client
cut), ``session`` (subscribe/unsubscribe: states, ``ensure``, ``since``), ``feed`` (from the shared
``app.sse_hub.SSEHub`` reader to one client), ``route`` (the endpoint). Every connection reads through the one
hub of the process: N clients on a topic cost one Redis read.
"""
