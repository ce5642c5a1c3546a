"""What a `LostClient` reports to its observers: one event per findService.

The HTTP exchange is not a SIP message, so `ng911.net` never sees it; the client reports it
itself (`LostClient(observers=[...])`), for the trace's ladder and the report's LoST column.
Event files (`ng911.observe.eventlog`) carry it as `{"type": "lost", ...}`.

The event also carries the exchange itself, the findService request and the answer as they
crossed (`request`, `response`; the last exchange when redirects were followed), each cut at
`MAX_XML` bytes, so the live console's inspector can show the query and its answer (the
client already holds both; keeping them costs two references).
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_XML = 16384  # bytes of each LoST body a LostQueryEvent keeps (a findService is ~1 KB)


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
    call_id: str | None = None  # the NENA emergency-CallId URN of the call that caused it
    request_bytes: int = 0
    response_bytes: int = 0
    result: str | None = None  # the mapped URI, or the error kind
    server: str = "lost"  # the LoST server's host name in the topology
    cached: bool = False  # answered from the client's cache (RFC 5222 §5.4 expires): no query
    request: bytes = b""  # the findService XML sent (at most MAX_XML bytes; empty if cached)
    response: bytes = b""  # the answer's XML as read (at most MAX_XML bytes)


@dataclass(frozen=True, slots=True)
class LostServedEvent:
    """One request the LoST server answered (`ServerConfig.observers`), so that the ECRF's
    own log can hold the query and its answer (NENA-STA-010.3 §4.12.3 LostQuery/LostResponse
    LogEvents; `ng911.node.logevents` maps it). The bytes are bounded by the server's
    `max_body` (in) and the answer it built (out); a request refused at the HTTP layer
    (413, 408: no LoST read) is not reported."""

    ts: float  # when the request had been read (time.time())
    duration: float  # seconds until the answer was ready
    request: bytes
    response: bytes
    status: int  # the HTTP status (200 for every LoST answer, errors included; 415; 30x)
    peer: str  # "host:port" of the client
