"""Typed transport errors, each with the SIP status an element answers when it hits one.

RFC 3261 §8.1.3.1 / §16.9: a request that cannot be sent is a transport error, which the
transaction layer turns into a 503 (client) or the proxy into a 5xx/480 for the upstream.
"""

from __future__ import annotations

from ng911.errors import Ng911Error


class TransportError(Ng911Error):
    """A message could not be sent (peer unreachable, connection refused or closed...)."""

    status: int = 503
    reason: str = "Service Unavailable"

    def __init__(self, message: str, *, peer: str | None = None) -> None:
        super().__init__(message)
        self.peer = peer


class TlsError(TransportError):
    """The TLS handshake failed (untrusted CA, expired certificate, no client certificate...)."""


class IdentityMismatch(TlsError):
    """The peer's certificate does not name the SIP domain we meant to reach (RFC 5922 §7.2)."""


class InsecureTransportError(TransportError):
    """A `sips:` request was asked to leave over UDP or TCP (RFC 3261 §26.2.2, RFC 5630 §3.1.3).

    We refuse rather than downgrade. The element answers 480 Temporarily Unavailable with a
    `Warning: 399 <host> "sips target not reachable over TLS"` when it is a proxy that cannot
    reach a `sips:` target over TLS. (A UAS that receives a `sips:` Request-URI it cannot
    serve answers 416 instead: that is the element's decision, not the transport's.)
    """

    status = 480
    reason = "Temporarily Unavailable"


class MessageTooLarge(TransportError):
    """A message exceeds the configured size limit (UDP datagram, or `max_message_size`)."""

    status = 513
    reason = "Message Too Large"


class ConnectionLimit(TransportError):
    """The configured limit of open connections is reached."""
