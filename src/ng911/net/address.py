"""Transport addresses and the source of a received message."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Final

from ng911.sip.uri import Value

TRANSPORTS: tuple[str, ...] = ("udp", "tcp", "tls")


def is_ip_literal(host: str) -> bool:
    """True for an IPv4 address or an IPv6 reference (`[::1]` or bare): RFC 3263 §4 skips
    NAPTR/SRV for these, and RFC 5922 has no domain to check a certificate against."""
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


DEFAULT_PORTS: dict[str, int] = {"udp": 5060, "tcp": 5060, "tls": 5061}  # RFC 3261 §19.1.2


@dataclass(frozen=True, slots=True)
class Address:
    """Where to send: transport ("udp" | "tcp" | "tls"), host (IP or name), port."""

    transport: str
    host: str
    port: int

    def __post_init__(self) -> None:
        if self.transport not in TRANSPORTS:
            raise ValueError(f"unknown transport {self.transport!r} (one of {TRANSPORTS})")

    @property
    def reliable(self) -> bool:
        """TCP and TLS are reliable: no retransmission timers (RFC 3261 §17.1.1.2)."""
        return self.transport != "udp"

    @property
    def hostport(self) -> tuple[str, int]:
        return (self.host, self.port)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport}:{host}:{self.port}"


class Source(Value):
    """Where a message came from: remote and local address, the connection it arrived on
    (None for UDP), and the SIP identities the peer proved with its certificate (TLS, mutual
    or not; empty when it presented none). Responses go back over `connection_id`
    (RFC 3261 §18.2.2).

    A plain class on `Value` rather than a frozen dataclass: one is made per message read
    from a stream, and a dataclass's generated `__init__` runs interpreted (~6 k instructions
    each, 1.6 % of the one-process chain's instructions under callgrind)."""

    __slots__ = ("address", "connection_id", "local", "peer_identities")
    _FIELDS = ("address", "local", "peer_identities", "connection_id")

    def __init__(
        self,
        address: Address,
        local: Address,
        peer_identities: frozenset[str] = frozenset(),
        connection_id: int | None = None,
    ) -> None:
        self.address: Final = address
        self.local: Final = local
        self.peer_identities: Final = peer_identities
        self.connection_id: Final = connection_id

    def _fields(self) -> tuple[object, ...]:
        return (self.address, self.local, self.peer_identities, self.connection_id)

    @property
    def transport(self) -> str:
        return self.address.transport

    @property
    def secure(self) -> bool:
        return self.address.transport == "tls"
