"""The client's address behind load balancers: ``X-Forwarded-For`` believed only from TRUSTED_PROXIES.

Behind a proxy every connection comes from the proxy's address, so per-client limits (new SSE streams per
minute, failed authentications per minute: ``app.ratelimit``) would lump all clients together: 1,000 browsers
behind one HAProxy would share one allowance of 5 new streams a minute. A client can also send any
``X-Forwarded-For`` it likes, so the header is only read when the TCP peer is a configured proxy.

Rule (as nginx ``real_ip_recursive on`` and werkzeug ``ProxyFix``): start at the TCP peer; while the current
address is trusted, step to the next address from the right of ``X-Forwarded-For`` (all such headers, in order,
joined). The first untrusted address is the client. A malformed entry stops the walk at the last trusted hop
(that proxy is then the client: never an address a client could forge). No header: the peer.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from starlette.types import Scope

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_XFF = b"x-forwarded-for"


def parse_networks(values: Iterable[str]) -> tuple[IPNetwork, ...]:
    """``["10.0.0.0/8", "127.0.0.1"]`` -> networks; raises ValueError for an entry that is not one."""
    return tuple(ipaddress.ip_network(v, strict=False) for v in values)


def _trusted(address: str, networks: tuple[IPNetwork, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


def client_address(scope: Scope, trusted: tuple[IPNetwork, ...]) -> str:
    """The client's IP address as text for an ASGI ``scope`` (``"unknown"`` without a peer); see module docstring."""
    peer = scope.get("client")
    current = str(peer[0]) if peer else "unknown"
    if not trusted or not _trusted(current, trusted):
        return current
    hops = [v.decode("latin-1") for k, v in scope.get("headers", ()) if k.lower() == _XFF]
    chain = [h.strip() for h in ",".join(hops).split(",") if h.strip()]
    for hop in reversed(chain):
        try:
            hop = str(ipaddress.ip_address(hop.strip("[]")))
        except ValueError:
            return current  # malformed: the last trusted hop is as far as we can believe
        current = hop
        if not _trusted(hop, trusted):
            return hop
    return current
