"""asyncio bindings of the SIP core: UDP, TCP and TLS transports, connection reuse, RFC 3263."""

from ng911.net.address import Address, Source
from ng911.net.admission import ListenerLimits
from ng911.net.errors import (
    ConnectionLimit,
    IdentityMismatch,
    InsecureTransportError,
    MessageTooLarge,
    TlsError,
    TransportError,
)
from ng911.net.events import ConnectionEvent, HandshakeEvent, MessageEvent, NetEvent
from ng911.net.transport import SipTransportLayer, TransportStats

__all__ = [
    "Address",
    "ConnectionEvent",
    "ConnectionLimit",
    "HandshakeEvent",
    "IdentityMismatch",
    "InsecureTransportError",
    "ListenerLimits",
    "MessageEvent",
    "MessageTooLarge",
    "NetEvent",
    "SipTransportLayer",
    "Source",
    "TlsError",
    "TransportError",
    "TransportStats",
]
