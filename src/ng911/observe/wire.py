"""Events the observer needs beyond `ng911.net.events`: raw wire chunks and LoST queries.

`ng911.net` reports each SIP message (`MessageEvent`) and each TLS handshake
(`HandshakeEvent`). A capture of a TLS hop needs more: the TLS *records* exactly as they
crossed the socket (handshake and application data, ciphertext), which only the transport
sees (it runs TLS over `ssl.MemoryBIO`). `WireEvent` is that: one chunk written to or read
from a stream socket. `LostQueryEvent` is one LoST request/response exchange as seen by its
client (the ESRP), for the ladder diagram and the LoST column of the report.

These are plain values; any object with the same attributes works (the trace is duck-typed),
so `ng911.net` may define its own with the same fields.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class WireEvent:
    """One chunk of bytes written to ("out") or read from ("in") a TCP/TLS socket."""

    ts: float  # time.time()
    mono: float  # time.perf_counter()
    element: str
    transport: str  # "tcp" | "tls" (or "http"/"https" for LoST)
    connection_id: int
    direction: str  # "in" | "out"
    local: tuple[str, int]
    remote: tuple[str, int]
    data: bytes


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
