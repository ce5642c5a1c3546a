"""Who may hold a connection to a stream listener, and for how long: pure policy, no I/O.

Why per listener: one shared connection table lets a host that opens idle plain-TCP
connections (no certificate, no handshake, not even a byte) fill the table and lock out the
mutual-TLS peer the element exists to serve (issue 11, item 2). Each listener therefore has
its own cap, and a cap per source address inside it (Kamailio's `tcp_max_connections` per
socket plus pike-style per-source limits), so plain TCP cannot starve TLS and one source
cannot take a listener. Outgoing connections are bounded separately by the transport layer.

Why timeouts from the accept: a connection that never finishes its TLS handshake, or never
delivers one complete SIP message, costs a socket and buys nothing; it is reclaimed in
seconds (the transport layer's `handshake_timeout` and `first_message_timeout`). A
connection that has carried a message is a peer's: it is kept until idle for `idle_timeout`
(RFC 5923 reuse wants it alive; RFC 5626 keep-alives refresh it).

Peer authorisation (RFC 5922 §7.3): a mutual-TLS listener names the SIP domains allowed to
connect to it; a certificate from a trusted CA that names none of them is refused at the
handshake, before any SIP is read. An empty list admits any peer the CAs vouch for.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ng911.pki.tls import matches_domain

__all__ = ["ListenerLimits", "peer_allowed", "refusal"]


@dataclass(frozen=True, slots=True)
class ListenerLimits:
    """Connection caps and allowed peers of one TCP or TLS listener.

    `max_connections`: connections accepted on this listener at once (0: refuse all).
    `max_per_source`: of those, from one source IP address.
    `allowed_peers`: SIP domains (RFC 5922) a TLS client's certificate must name one of;
    empty: any certificate the CAs vouch for (and no certificate, unless the server
    context requires one). Meaningless on plain TCP.
    """

    max_connections: int = 1024
    max_per_source: int = 256
    allowed_peers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.max_connections < 0 or self.max_per_source < 0:
            raise ValueError("connection limits must be >= 0")


def refusal(limits: ListenerLimits, open_here: int, open_from_source: int) -> str | None:
    """Why a new connection must be refused (None: admit it).

    `open_here`: connections this listener holds now; `open_from_source`: of those, from
    the new connection's source address.
    """
    if open_here >= limits.max_connections:
        return f"listener limit {limits.max_connections} reached"
    if open_from_source >= limits.max_per_source:
        return f"per-source limit {limits.max_per_source} reached"
    return None


def peer_allowed(identities: Iterable[str], allowed: Iterable[str]) -> bool:
    """RFC 5922 §7.3: does the certificate name one of the allowed SIP domains?

    An empty `allowed` admits everyone (the CA check has been done by TLS already).
    """
    wanted = [d for d in allowed if d]
    if not wanted:
        return True
    ids = list(identities)
    return any(matches_domain(ids, d) for d in wanted)
