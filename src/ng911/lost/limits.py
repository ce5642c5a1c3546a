"""Connection limits of the LoST server: deadlines and caps enforced on the socket.

Why: aiohttp bounds the size of a request line and of each header, but not how long a client
may take to send them or the body, nor how many connections one host may hold. 1,000
connections trickling a body a byte at a time kept an ECRF busy for minutes (issue 11, item
8), and the ESRP's queries for real calls wait behind them. An ECRF is on the path of every
emergency call: a slow client must cost it seconds, never minutes.

What is enforced, per connection, by `GuardedProtocol` (a thin wrapper around aiohttp's
protocol, so the rules hold whatever aiohttp's own timers do):

- `header_timeout`: from the connection's start (after the TLS handshake, which is bounded by
  the same figure) or from the first byte of a following request on a keep-alive connection,
  the request line and every header must have arrived within this many seconds. It is a
  deadline for the whole head, not an inactivity timer: a client that sends a byte a second
  is cut off like one that sends nothing. The answer is `408 Request Timeout` with
  `Connection: close` (RFC 9110 §15.5.9) if any byte came, and the connection is closed.
- `body_timeout`: once the head is in, the whole body within this many seconds (the same
  kind of deadline; `body_deadline`, used by the server's middleware), else 408 and close.
- `idle_timeout`: a keep-alive connection with no request in progress is closed after this
  long (RFC 9112 §9.8 lets a server close an idle connection at any time).
- `max_connections` in total and `max_per_source` per client IP address: a connection beyond
  either is closed at once, before a byte is read. Over TLS the count starts once the
  handshake is done (asyncio hands the wrapper its transport only then); the handshake itself
  is bounded by `header_timeout`.

The body size cap (`ServerConfig.max_body`, 413) lives with the server: aiohttp enforces it
while reading, and the server refuses a declared Content-Length beyond it before reading.

Every refusal and every timeout is one structured log line (`lost.refused`, `lost.timeout`)
naming the peer's address, the reason and counts: never the client's bytes.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, cast

from aiohttp import web

log = logging.getLogger("ng911.lost.server")

#: What a client whose head or body is too slow gets before the close (RFC 9110 §15.5.9).
RESPONSE_408: Final = (
    b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
)
#: A connection we closed is aborted if its buffered bytes have not drained in this long
#: (a client that does not read must not keep the socket).
ABORT_AFTER: Final = 2.0
#: After an answer given before the body was read (408, 413), how long the rest of the body
#: is read and dropped before the close, so that the client sees the answer rather than a
#: reset (RFC 9112 §9.6); aiohttp's own default is 10 s, a slow client's gift.
LINGER: Final = 1.0


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """Deadlines (seconds) and connection caps of one LoST server (module docstring).

    The defaults suit an ECRF: a findService is one small POST that a client sends in well
    under a second; 128 per source is twice the ESRP's LoST client pool (64 connections,
    `ng911.lost.client`), so one busy ESRP is never refused.
    """

    header_timeout: float = 5.0
    body_timeout: float = 10.0
    idle_timeout: float = 15.0
    max_connections: int = 1024
    max_per_source: int = 128

    def __post_init__(self) -> None:
        for name in ("header_timeout", "body_timeout", "idle_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0")
        if self.max_connections < 1 or self.max_per_source < 1:
            raise ValueError("max_connections and max_per_source must be >= 1")


def _event(event: str, **fields: object) -> None:
    if log.isEnabledFor(logging.INFO):
        log.info(json.dumps({"event": event, "element": "ecrf", **fields}, default=str))


# Where a connection is in its current request.
_HEAD, _BODY, _BUSY, _IDLE = "headers", "body", "busy", "idle"


class ConnectionTable:
    """Live connections of one site: counts in total and per source address, for the caps."""

    def __init__(self, limits: HttpLimits) -> None:
        self.limits = limits
        self.total = 0
        self.per_source: dict[str, int] = {}
        self.refused = 0
        self.timed_out = 0

    def admit(self, source: str) -> str | None:
        """Count a new connection from `source`; the reason it is refused, or None."""
        if self.total >= self.limits.max_connections:
            return "max_connections"
        if self.per_source.get(source, 0) >= self.limits.max_per_source:
            return "max_per_source"
        self.total += 1
        self.per_source[source] = self.per_source.get(source, 0) + 1
        return None

    def release(self, source: str) -> None:
        self.total -= 1
        n = self.per_source.get(source, 0) - 1
        if n > 0:
            self.per_source[source] = n
        else:
            self.per_source.pop(source, None)


def guard_of(request: web.BaseRequest) -> GuardedProtocol | None:
    """The guard of the connection a request came on (None on a site without one)."""
    transport = request.transport
    proto = transport.get_protocol() if transport is not None else None
    return proto if isinstance(proto, GuardedProtocol) else None


class GuardedProtocol(asyncio.Protocol):
    """aiohttp's protocol behind the caps and deadlines of `ConnectionTable.limits`.

    Every protocol call is passed on unchanged once the connection is admitted; the wrapper
    only counts, keeps one timer for the phase the connection is in, and closes.
    """

    def __init__(self, table: ConnectionTable, inner_factory: Callable[[], asyncio.Protocol]):
        self.table = table
        self.limits = table.limits
        self._factory = inner_factory
        self.inner: asyncio.Protocol | None = None
        self.transport: asyncio.Transport | None = None
        self.source = ""
        self.phase = _HEAD
        self.head_bytes = 0  # bytes of the current request's head seen so far (for the log)
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a stream transport (uvloop's do not subclass asyncio.Transport: no isinstance)
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.source = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        reason = self.table.admit(self.source)
        if reason is not None:
            self.table.refused += 1
            self._closed = True
            _event(
                "lost.refused",
                reason=reason,
                peer=self.source,
                connections=self.table.total,
                from_peer=self.table.per_source.get(self.source, 0),
            )
            transport.abort()  # at once: no FIN handshake held open, no byte read
            return
        self.inner = self._factory()
        self.inner.connection_made(transport)
        self._arm(self.limits.header_timeout, self._head_timeout)

    def data_received(self, data: bytes) -> None:
        if self.phase is _IDLE:  # the first byte of the next request: its head's deadline
            self.phase = _HEAD
            self.head_bytes = 0
            self._arm(self.limits.header_timeout, self._head_timeout)
        if self.phase is _HEAD:
            self.head_bytes += len(data)
        if self.inner is not None:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.inner is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        if self.inner is None:
            return
        self.table.release(self.source)
        inner, self.inner = self.inner, None
        inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()

    # -- what the request handler reports --------------------------------------------------

    def head_done(self) -> None:
        """aiohttp parsed a request's head and called the handler: the body's turn."""
        self.phase = _BODY
        self._cancel()

    def body_done(self) -> None:
        """The body is in; the answer is being computed (bounded by the server itself)."""
        self.phase = _BUSY

    def request_done(self) -> None:
        """The answer is out: the connection idles until the next request or `idle_timeout`."""
        if self._closed:
            return
        self.phase = _IDLE
        self._arm(self.limits.idle_timeout, self._idle_timeout)

    def timed_out(self, phase: str, received: int) -> None:
        """Count and log a deadline missed (by the head here, or the body in the handler)."""
        self.table.timed_out += 1
        _event("lost.timeout", phase=phase, peer=self.source, bytes=received)

    # -- timers ----------------------------------------------------------------------------

    def _arm(self, delay: float, callback: Callable[[], None]) -> None:
        self._cancel()
        self._timer = asyncio.get_running_loop().call_later(delay, callback)

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _head_timeout(self) -> None:
        self._timer = None
        if self.phase is not _HEAD or self._closed:
            return
        self.timed_out(_HEAD, self.head_bytes)
        self.close(RESPONSE_408 if self.head_bytes else b"")

    def _idle_timeout(self) -> None:
        self._timer = None
        if self.phase is _IDLE and not self._closed:
            log.debug("lost: closing idle connection from %s", self.source)
            self.close(b"")

    def close(self, last: bytes) -> None:
        """Write `last` (if any) and close; abort if the peer does not take it in time."""
        transport = self.transport
        if transport is None or self._closed:
            return
        self._closed = True
        self._cancel()
        if last:
            try:
                transport.write(last)
            except Exception:  # a transport already failing: the abort below ends it
                pass
        transport.close()
        asyncio.get_running_loop().call_later(ABORT_AFTER, transport.abort)


class GuardedSite(web.BaseSite):
    """A TCP (or TLS) site of an `AppRunner` whose connections go through `GuardedProtocol`."""

    __slots__ = ("_bound_port", "_host", "_port", "table")

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        limits: HttpLimits,
        *,
        ssl_context: Any = None,
        backlog: int = 1024,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context, backlog=backlog)
        self._host = host
        self._port = port
        self._bound_port = port
        self.table = ConnectionTable(limits)

    @property
    def name(self) -> str:
        scheme = "https" if self._ssl_context else "http"
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{scheme}://{host}:{self._bound_port}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        table = self.table
        self._server = await loop.create_server(
            lambda: GuardedProtocol(table, server),
            self._host,
            self._port,
            ssl=self._ssl_context,
            backlog=self._backlog,
            ssl_handshake_timeout=table.limits.header_timeout if self._ssl_context else None,
        )
        if self._server.sockets:
            self._bound_port = int(self._server.sockets[0].getsockname()[1])
