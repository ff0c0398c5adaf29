"""arq workers that own exchange WebSocket connections and publish normalized events to Redis."""
