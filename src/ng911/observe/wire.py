"""The event the observer needs beyond `ng911.net.events`: LoST queries.

`ng911.net` reports each SIP message (`MessageEvent`), each TLS handshake (`HandshakeEvent`)
and the raw bytes of each stream write (`WireEvent`, the TLS records a capture needs).
`LostQueryEvent` is one LoST request/response exchange as seen by its client (the ESRP), for
the ladder diagram and the LoST column of the report.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LostQueryEvent:
    """A LoST findService exchange, timed by its client (RFC 5222 §8)."""

    ts: float  # when the request was sent (time.time())
    mono: float  # same, time.perf_counter()
    duration: float  # seconds until the response was read
    element: str  # the querying element (the ESRP, or the VSP when it asks LoST itself)
    url: str
    transport: str  # "http" | "https"
    ok: bool
    call_id: str | None = None  # SIP Call-ID of the call that caused the query
    request_bytes: int = 0
    response_bytes: int = 0
    result: str | None = None  # the mapped URI, or the error kind
    server: str = "lost"  # the LoST server's host name in the topology
    cached: bool = False  # answered from the client's cache (RFC 5222 §5.4 expires): no query
