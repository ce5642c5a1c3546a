"""The `sips:` rule: a request for a sips URI only leaves over TLS (RFC 3261 §26.2.2).

RFC 3261 §26.2.2 and RFC 5630 §3: when the Request-URI (or, with loose routing, the top Route
that decides the next hop) is `sips:`, every hop must be TLS; an element must not downgrade to
UDP or TCP. `check_secure` raises `InsecureTransportError` instead, and the element answers
with the status it carries (480 + Warning; see `ng911.net.errors`).
"""

from __future__ import annotations

from ng911.net.address import Address
from ng911.net.errors import InsecureTransportError
from ng911.sip.message import Request, Response
from ng911.sip.uri import SipURI


def requires_tls(message: Request | Response) -> bool:
    """True for a request whose Request-URI or top Route is a sips URI."""
    if not isinstance(message, Request):
        return False
    if isinstance(message.uri, SipURI) and message.uri.secure:
        return True
    if "Route" in message.headers:
        routes = message.routes
        if routes and isinstance(routes[0].uri, SipURI) and routes[0].uri.secure:
            return True
    return False


def check_secure(message: Request | Response, dest: Address) -> None:
    if dest.transport != "tls" and requires_tls(message):
        assert isinstance(message, Request)
        raise InsecureTransportError(
            f"refusing to send {message.method} for a sips URI over {dest.transport.upper()} "
            f"to {dest} (RFC 3261 §26.2.2: sips only over TLS)",
            peer=str(dest),
        )
