"""A small HTTP/1.1 server on `httptools` (llhttp), with the limits an emergency service needs.

Why our own: the LoST server (ECRF) answers one small POST per emergency call, and the HTTP
stack was most of its CPU (aiohttp: ~100 µs of server CPU per request for a fixed answer,
plus a middleware and a protocol wrapper for the deadlines below; bench/lost.py measures the
floors of aiohttp, uvicorn + httptools and this module in one run). Here one
`asyncio.Protocol` per connection feeds llhttp, calls the application's handler with the whole
request (head and body; a LoST request is < 64 KB) and writes the answer in one `write`. A
handler that answers synchronously costs no task; one that returns an awaitable (a PostGIS
lookup, a forward) gets one. It runs on any asyncio loop; uvloop is where it pays. Every
HTTP server of ng911 runs here: LoST, the i3 Logging Service (`ng911.i3log.server`),
`/metrics` (`ng911.node.metrics`) and the live console (`ng911.console.server`), each
through `serve_http`, so the limits below exist once.

A handler may also return a `StreamResponse` (the console's server-sent events): the head
without Content-Length and `Connection: close` (the body ends with the connection, RFC 9112
§6.3), then each chunk its async iterator yields, written as it comes; while the transport's
buffer is above its high-water mark the iterator is not asked for more (`pause_writing`), a
client that takes nothing for `stall_timeout` seconds is cut off (`<prefix>.stalled`), and
the iterator is closed (`aclose`) when the client goes away, the server stops or the stream
is cut off. The input of a streaming connection is read and dropped (so its close is seen)
and no deadline applies to it. The plain `Response` path does not change for it.

Limits (`HttpLimits`; a connection that breaks one gets an answer when HTTP allows it and is
closed, with one structured log line naming the peer, never the client's bytes):

- `header_timeout`: from the connection's start (after the TLS handshake, which is bounded by
  the same figure) or the first byte of a following request, the whole head within this many
  seconds: a deadline, not an inactivity timer. `408 Request Timeout` (RFC 9110 §15.5.9) if any
  byte came, else a silent close.
- `body_timeout`: once the head is in, the whole body within this many seconds, else 408.
- `idle_timeout`: a keep-alive connection with no request in progress is closed (RFC 9112 §9.8).
- `max_connections` in total and `max_per_source` per client address: a connection beyond
  either is aborted before a byte is read.
- `max_body` (413 Content Too Large, RFC 9110 §15.5.14; a declared Content-Length beyond it is
  refused before the body is read, a chunked body once it passes it), `MAX_HEAD` bytes of head
  (431, RFC 6585 §5), `MAX_HEADERS` header fields (431), malformed HTTP (400, llhttp's reason).
- Deadlines are checked by one sweep per server every `tick` seconds (a float store per
  request instead of a timer handle per phase): a deadline acts at most `tick` late.
- Pipelined requests (RFC 9112 §9.3) are answered in order; reading pauses while more than
  `PIPELINE` requests wait, or while the transport's write buffer is full (a client that
  does not read its answers stops being read).
- `Upgrade` (h2c, websocket) is ignored as RFC 9110 §7.8 allows: the request is answered as
  HTTP/1.1 and the connection closed after it.
- After an error answered before the body was read (408, 413), the rest of the input is read
  and dropped for `LINGER` seconds before the close, so the client sees the answer rather than
  a reset (RFC 9112 §9.6); a closed connection whose peer does not take its bytes is aborted
  after `ABORT_AFTER`.
- The answers the server makes itself (408, 413, 400, 431) are plain text unless the
  application gives `refuse(status, text)` (the Logging Service answers i3-style JSON).
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any, Final, cast

import httptools

log = logging.getLogger("ng911.net.http1")

#: Whole request head (request line + header fields), bytes: aiohttp's 8190 per line, 4 lines.
MAX_HEAD: Final = 32 * 1024
MAX_HEADERS: Final = 100
#: Complete requests waiting behind the one being answered before reading pauses.
PIPELINE: Final = 8
#: See the module docstring.
LINGER: Final = 1.0
ABORT_AFTER: Final = 2.0

REASONS: Final = {
    100: "Continue", 200: "OK", 201: "Created", 204: "No Content", 301: "Moved Permanently",
    302: "Found", 303: "See Other", 307: "Temporary Redirect", 308: "Permanent Redirect",
    400: "Bad Request", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    408: "Request Timeout", 413: "Content Too Large", 415: "Unsupported Media Type",
    431: "Request Header Fields Too Large", 500: "Internal Server Error",
    503: "Service Unavailable",
}  # fmt: skip
RESPONSE_408: Final = (
    b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
)


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """Deadlines (seconds) and connection caps of one HTTP server (module docstring).

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


class ConnectionTable:
    """Live connections of one server: counts in total and per source address, for the caps."""

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


class Request:
    """One request as the handler sees it: method, target path and query (the raw text after
    "?", "" if none; `urllib.parse.parse_qs` reads it), header fields (names in lower case; a
    repeated field's values joined with ", ", RFC 9110 §5.3), the whole body."""

    __slots__ = ("body", "conn", "headers", "keep_alive", "method", "path", "query")

    def __init__(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes,
        conn: Connection,
        query: str = "",
    ) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
        self.conn = conn
        self.keep_alive = True

    @property
    def remote(self) -> str:
        """The client's IP address ("?" if unknown)."""
        return self.conn.source

    @property
    def peername(self) -> Any:
        return self.conn.peername

    @property
    def ssl_object(self) -> ssl.SSLObject | None:
        t = self.conn.transport
        return t.get_extra_info("ssl_object") if t is not None else None

    @property
    def content_type(self) -> str:
        """The media type without parameters, lower case ("" if absent)."""
        return self.headers.get("content-type", "").split(";", 1)[0].strip().lower()


class Response:
    """An answer: status, body, extra header fields; `close` ends the connection after it."""

    __slots__ = ("body", "close", "headers", "status")

    def __init__(
        self,
        status: int = 200,
        body: bytes = b"",
        headers: Sequence[tuple[str, str]] = (),
        *,
        close: bool = False,
    ) -> None:
        self.status = status
        self.body = body
        self.headers = headers
        self.close = close


class StreamResponse:
    """An answer whose body is produced while it is sent (server-sent events): the head
    (no Content-Length, `Connection: close`: the body ends when the connection does, RFC
    9112 §6.3), then each chunk `body` yields, written as it comes.

    Writing respects the transport's flow control: while the client's buffers are full the
    iterator is not asked for more (a producer with its own bounded queue drops there); a
    client that takes nothing for `stall_timeout` seconds is cut off (one `<prefix>.stalled`
    log line). The iterator is closed (`aclose`) when the client goes away, the server
    stops or the stream is cut off, so its `finally` clauses run; the idle and request
    deadlines do not apply to a connection that streams.
    """

    __slots__ = ("body", "headers", "stall_timeout", "status")

    def __init__(
        self,
        body: AsyncIterator[bytes],
        status: int = 200,
        headers: Sequence[tuple[str, str]] = (),
        *,
        stall_timeout: float = 60.0,
    ) -> None:
        if not stall_timeout > 0:
            raise ValueError("stall_timeout must be > 0")
        self.body = body
        self.status = status
        self.headers = headers
        self.stall_timeout = stall_timeout


Answer = Response | StreamResponse
Handler = Callable[[Request], "Answer | Awaitable[Answer]"]
Event = Callable[..., None]
Refuse = Callable[[int, str], Response]


def log_event(event: str, **fields: object) -> None:
    """The default structured log line (a JSON object) of a refusal or timeout."""
    if log.isEnabledFor(logging.INFO):
        log.info(json.dumps({"event": event, **fields}, default=str))


class _Clock:
    """The Date header's value (RFC 9110 §6.6.1), formatted once a second."""

    __slots__ = ("sec", "value")

    def __init__(self) -> None:
        self.sec = -1
        self.value = b""

    def date(self) -> bytes:
        now = int(time.time())
        if now != self.sec:
            self.sec = now
            self.value = formatdate(now, usegmt=True).encode()
        return self.value


_CLOCK = _Clock()
_STATUS_LINES: dict[int, bytes] = {}


def _head(
    status: int, headers: Sequence[tuple[str, str]], keep_alive: bool, length: int | None
) -> list[bytes]:
    """The parts of a response head (status line, Date, Content-Length unless `length` is
    None, fields, the blank line): `encode` appends the body, a stream sends it alone."""
    line = _STATUS_LINES.get(status)
    if line is None:
        line = f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}\r\n".encode()
        _STATUS_LINES[status] = line
    if length is None:
        parts = [line, b"Date: ", _CLOCK.date()]
    else:
        parts = [line, b"Date: ", _CLOCK.date(), b"\r\nContent-Length: ", b"%d" % length]
    for name, value in headers:
        parts.append(f"\r\n{name}: {value}".encode("latin-1"))
    if not keep_alive:
        parts.append(b"\r\nConnection: close")
    parts.append(b"\r\n\r\n")
    return parts


def encode(resp: Response, keep_alive: bool) -> bytes:
    """The bytes of `resp` on the wire (status line, Date, Content-Length, fields, body)."""
    parts = _head(resp.status, resp.headers, keep_alive, len(resp.body))
    parts.append(resp.body)
    return b"".join(parts)


def encode_stream_head(resp: StreamResponse) -> bytes:
    """The head of a streamed answer: no Content-Length, the body ends with the connection."""
    return b"".join(_head(resp.status, resp.headers, False, None))


class _Refused(Exception):
    """Raised from a parser callback: stop parsing, answer `status` and close."""

    def __init__(self, status: int, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.reason, self.detail = status, reason, detail


# Where a connection is.
_HEAD, _BODY, _BUSY, _IDLE, _CLOSED = range(5)


class Connection(asyncio.Protocol):
    """One client connection: llhttp callbacks, the request queue, deadlines (module doc)."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.limits = server.limits
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.source = "?"
        self.peername: Any = None
        self.phase = _HEAD
        self.deadline = 0.0  # loop time the current phase must end by (0: none)
        self.head_bytes = 0
        self.admitted = False
        # the request being parsed
        self._url = b""
        self._headers: dict[str, str] = {}
        self._nheaders = 0
        self._head_size = 0
        self._body: list[bytes] = []
        self._body_len = 0
        self._refused = False  # the current message was answered early (413): drop it
        # requests parsed and waiting, and whether one is being answered
        self.queue: deque[Request] = deque()
        self.busy = False
        self.in_message = False
        self._paused_reading = False
        self._write_paused = False
        self._closing = False
        self.upgraded = False  # a request asked for an Upgrade: close after the answers
        # a streamed answer (StreamResponse) being written, and its wait for the client
        self.stream_task: asyncio.Task[None] | None = None
        self._drain_waiter: asyncio.Future[None] | None = None

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's is no asyncio.Transport subclass
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peername = peer
        self.source = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        table = self.server.table
        reason = table.admit(self.source)
        if reason is not None:
            table.refused += 1
            self.phase = _CLOSED
            self.server.event(
                f"{self.server.prefix}.refused",
                reason=reason,
                peer=self.source,
                connections=table.total,
                from_peer=table.per_source.get(self.source, 0),
            )
            transport.abort()  # at once: no FIN handshake held open, no byte read
            return
        self.admitted = True
        self.server.connections.add(self)
        self.deadline = self.server.now() + self.limits.header_timeout

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return  # lingering after an early answer: read and drop
        if self.phase is _IDLE or (self.phase is _BUSY and not self.in_message):
            self.phase = _HEAD
            self.head_bytes = 0
            self.deadline = self.server.now() + self.limits.header_timeout
        if self.phase is _HEAD:
            self.head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # RFC 9110 §7.8: the Upgrade is ignored, the request answered as HTTP/1.1; llhttp
            # parses no further on this connection, so it closes after the answers due
            self.upgraded = True
            if not self.busy and not self.queue:
                self.close()
        except httptools.HttpParserError as exc:
            # httptools wraps what a callback raised (a `_Refused`) in a callback error
            cause = exc.__context__
            if isinstance(cause, _Refused):
                self.fail(cause.status, cause.reason, cause.detail)
            elif cause is not None and not isinstance(cause, httptools.HttpParserError):
                log.error("http: parser callback failed: %r", cause, exc_info=cause)
                self.fail(500, "internal", type(cause).__name__)
            elif not self._closing:
                self.fail(400, "malformed", str(exc)[:120])
            return
        # a head that never ends (llhttp holds a field until it is complete)
        if self.phase is _HEAD and self.head_bytes > MAX_HEAD and not self._closing:
            self.fail(431, "head_too_large", f"request head over {MAX_HEAD} bytes")

    def eof_received(self) -> bool | None:
        return None  # close our side too (a half-closed client gets its pending answers)

    def connection_lost(self, exc: Exception | None) -> None:
        self.phase = _CLOSED
        self._closing = True
        if self.admitted:
            self.admitted = False
            self.server.table.release(self.source)
            self.server.connections.discard(self)
        self.queue.clear()
        if self.stream_task is not None:
            self.stream_task.cancel()  # the client went away: the stream's iterator is closed

    def pause_writing(self) -> None:
        self._write_paused = True
        self._flow()

    def resume_writing(self) -> None:
        self._write_paused = False
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        self._flow()

    def _flow(self) -> None:
        want_pause = self._write_paused or len(self.queue) > PIPELINE
        t = self.transport
        if t is None or self._closing or want_pause == self._paused_reading:
            return
        self._paused_reading = want_pause
        if want_pause:
            t.pause_reading()
        else:
            t.resume_reading()

    # -- llhttp callbacks ------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.in_message = True
        self._url = b""
        self._headers = {}
        self._nheaders = 0
        self._head_size = 0
        self._body = []
        self._body_len = 0
        self._refused = False

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_size += len(url)
        if self._head_size > MAX_HEAD:
            raise _Refused(431, "head_too_large", f"request target over {MAX_HEAD} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._nheaders += 1
        self._head_size += len(name) + len(value) + 4
        if self._nheaders > MAX_HEADERS:
            raise _Refused(431, "too_many_headers", f"more than {MAX_HEADERS} header fields")
        if self._head_size > MAX_HEAD:
            raise _Refused(431, "head_too_large", f"request head over {MAX_HEAD} bytes")
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        old = self._headers.get(key)
        self._headers[key] = text if old is None else f"{old}, {text}"

    def on_headers_complete(self) -> None:
        if self.parser.should_upgrade():
            self.upgraded = True  # answered with Connection: close (module docstring)
        self.phase = _BODY
        self.deadline = self.server.now() + self.limits.body_timeout
        declared = self._headers.get("content-length")
        max_body = self.server.max_body
        if declared is not None and declared.isdigit() and int(declared) > max_body:
            self.server.event(
                f"{self.server.prefix}.refused", reason="max_body", peer=self.source,
                bytes=int(declared),
            )  # fmt: skip
            self.answer_early(413, f"body larger than {max_body} bytes\n")
            return
        if self._headers.get("expect", "").lower() == "100-continue":
            assert self.transport is not None
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        if self._refused:
            return
        self._body_len += len(body)
        if self._body_len > self.server.max_body:
            self.server.event(f"{self.server.prefix}.refused", reason="max_body", peer=self.source)
            self.answer_early(413, f"body larger than {self.server.max_body} bytes\n")
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        self.in_message = False
        if self._refused or self._closing:
            return
        self.phase = _BUSY
        self.deadline = 0.0
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        method = self.parser.get_method().decode("ascii", "replace")
        url = self._url.decode("latin-1")
        if "?" in url:
            path, query = url.split("?", 1)
            req = Request(method, path, self._headers, body, self, query)
        else:
            req = Request(method, url, self._headers, body, self)
        req.keep_alive = self.parser.should_keep_alive()
        if self.busy:
            self.queue.append(req)
            self._flow()
        else:
            self._dispatch(req)

    # -- answering -------------------------------------------------------------------------

    def _dispatch(self, req: Request) -> None:
        self.busy = True
        try:
            result = self.server.handler(req)
        except Exception as exc:
            result = self.server.internal_error(exc)
        if isinstance(result, Response):
            self._respond(req, result)
            return
        if isinstance(result, StreamResponse):
            self._stream(result)
            return
        task = asyncio.ensure_future(result)
        task.add_done_callback(lambda t: self._done(req, t))

    def _done(self, req: Request, task: asyncio.Future[Answer]) -> None:
        resp: Answer
        if task.cancelled():
            resp = Response(503, b"shutting down\n", close=True)
        elif (exc := task.exception()) is not None:
            resp = self.server.internal_error(exc)
        else:
            resp = task.result()
            if isinstance(resp, StreamResponse):
                self._stream(resp)
                return
        self._respond(req, resp)

    def _respond(self, req: Request, resp: Response) -> None:
        t = self.transport
        if self.phase is _CLOSED or t is None or t.is_closing():
            self.busy = False
            return
        keep = req.keep_alive and not resp.close and not self.server.stopping
        keep = keep and not (self.upgraded and not self.queue)
        t.write(encode(resp, keep))
        if not keep:
            self.busy = False
            self.close()
            return
        if self.queue:
            nxt = self.queue.popleft()
            self._flow()
            self._dispatch(nxt)
            return
        self.busy = False
        if not self.in_message:
            self.phase = _IDLE
            self.deadline = self.server.now() + self.limits.idle_timeout

    # -- streamed answers ------------------------------------------------------------------

    def _stream(self, resp: StreamResponse) -> None:
        """Answer with `resp` (the connection's last answer): requests pipelined behind it
        are dropped; from now on the input is read and dropped (so the client's close is
        seen) and no deadline applies."""
        t = self.transport
        if self.phase is _CLOSED or t is None or t.is_closing() or self.server.stopping:
            self.busy = False
            closing = asyncio.ensure_future(_aclose(resp.body))  # its finally clauses run
            _CLOSING_STREAMS.add(closing)
            closing.add_done_callback(_CLOSING_STREAMS.discard)
            if t is not None and self.phase is not _CLOSED:
                self.close(encode(Response(503, b"shutting down\n"), False))
            return
        self.queue.clear()
        self._closing = True  # data_received drops, the sweep and `_flow` leave it alone
        self.phase = _BUSY
        self.deadline = 0.0
        if self._paused_reading:
            self._paused_reading = False
            t.resume_reading()
        self.stream_task = asyncio.ensure_future(self._write_stream(t, resp))

    async def _write_stream(self, t: asyncio.Transport, resp: StreamResponse) -> None:
        body = resp.body
        cut = False
        try:
            t.write(encode_stream_head(resp))
            async for chunk in body:
                if t.is_closing():
                    break
                if chunk:
                    t.write(chunk)
                if self._write_paused and not await self._drained(resp.stall_timeout):
                    cut = True
                    self.server.event(
                        f"{self.server.prefix}.stalled", peer=self.source,
                        seconds=resp.stall_timeout, buffered=t.get_write_buffer_size(),
                    )  # fmt: skip
                    break
        except asyncio.CancelledError:
            pass  # the client went away or the server stops
        except Exception as exc:  # the producer failed: the stream ends, the server lives
            log.error("http: stream failed: %r", exc, exc_info=exc)
        finally:
            self.stream_task = None
            self.busy = False
            await _aclose(body)
            if cut:
                t.abort()  # its buffer will not drain: no FIN handshake held open
            elif not t.is_closing():
                t.close()
                asyncio.get_running_loop().call_later(ABORT_AFTER, t.abort)

    async def _drained(self, timeout: float) -> bool:
        """Wait until the transport's buffer drained below its low-water mark (False: it did
        not within `timeout`); the connection's loss cancels the waiting task."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._drain_waiter = waiter
        try:
            async with asyncio.timeout(timeout):
                await waiter
            return True
        except TimeoutError:
            return False
        finally:
            self._drain_waiter = None

    def answer_early(self, status: int, text: str) -> None:
        """Answer before the request is complete (413, 408), then linger and close."""
        self._refused = True
        t = self.transport
        if t is None or self._closing:
            return
        self.queue.clear()
        t.write(encode(self.server.refuse(status, text), False))
        self._linger()

    def fail(self, status: int, reason: str, detail: str) -> None:
        """A request we cannot parse or accept: one log line, the answer, then the close."""
        self.server.event(
            f"{self.server.prefix}.bad_request", peer=self.source, reason=reason, error=detail
        )
        self.answer_early(status, f"{REASONS.get(status, 'error')}: {detail}\n")

    def _linger(self) -> None:
        t = self.transport
        if t is None or self._closing:
            return
        self._closing = True
        self.phase = _CLOSED
        if self._paused_reading:
            t.resume_reading()  # drain what the client still sends
        if t.can_write_eof():
            try:
                t.write_eof()
            except OSError:
                pass
        loop = asyncio.get_running_loop()
        loop.call_later(LINGER, t.close)
        loop.call_later(LINGER + ABORT_AFTER, t.abort)

    def close(self, last: bytes = b"") -> None:
        """Write `last` (if any) and close; abort if the peer does not take it in time."""
        t = self.transport
        if t is None or self._closing:
            return
        self._closing = True
        self.phase = _CLOSED
        if last:
            try:
                t.write(last)
            except Exception:  # a transport already failing: the abort below ends it
                pass
        t.close()
        asyncio.get_running_loop().call_later(ABORT_AFTER, t.abort)

    # -- deadlines (the server's sweep calls this) -----------------------------------------

    def expire(self, now: float) -> None:
        if self.deadline == 0.0 or now < self.deadline or self._closing:
            return
        self.deadline = 0.0
        table = self.server.table
        if self.phase is _IDLE:
            log.debug("http: closing idle connection from %s", self.source)
            self.close()
        elif self.phase is _HEAD or self.phase is _BODY:
            head = self.phase is _HEAD
            table.timed_out += 1
            self.server.event(
                f"{self.server.prefix}.timeout", phase="headers" if head else "body",
                peer=self.source, bytes=self.head_bytes if head else self._body_len,
            )  # fmt: skip
            if head and not self.head_bytes:
                self.close()
            elif self.server.refuse is plain_refusal:
                self.close(RESPONSE_408)
            else:
                why = "request head too slow\n" if head else "request body too slow\n"
                self.close(encode(self.server.refuse(408, why), False))


class HttpServer:
    """A listening HTTP/1.1 server: `handler` answers every complete request.

    `event(name, **fields)` logs refusals and timeouts (names `<prefix>.refused`,
    `<prefix>.timeout`, `<prefix>.bad_request`); `internal_error(exc)` turns a handler's
    exception into an answer (default: 500, logged with its traceback); `refuse(status,
    text)` builds the answers the server makes itself (default: plain text).
    """

    def __init__(
        self,
        handler: Handler,
        limits: HttpLimits | None = None,
        *,
        max_body: int = 64 * 1024,
        event: Event | None = None,
        prefix: str = "http",
        internal_error: Callable[[BaseException], Response] | None = None,
        refuse: Refuse | None = None,
    ) -> None:
        self.handler = handler
        self.refuse: Refuse = refuse or plain_refusal
        self.limits = limits or HttpLimits()
        self.max_body = max_body
        self.event: Event = event or log_event
        self.prefix = prefix
        self.internal_error = internal_error or _internal_error
        self.table = ConnectionTable(self.limits)
        self.connections: set[Connection] = set()
        self.stopping = False
        self.port = 0
        self._server: asyncio.AbstractServer | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        lim = self.limits
        self.tick = min(0.5, lim.header_timeout / 4, lim.body_timeout / 4, lim.idle_timeout / 4)

    def now(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    async def start(
        self, host: str, port: int, ssl_context: ssl.SSLContext | None = None, backlog: int = 1024
    ) -> int:
        """Listen on host:port (0 = ephemeral); returns the bound port."""
        self._loop = asyncio.get_running_loop()
        self._server = await self._loop.create_server(
            lambda: Connection(self),
            host,
            port,
            ssl=ssl_context,
            backlog=backlog,
            ssl_handshake_timeout=self.limits.header_timeout if ssl_context else None,
        )
        sockets = self._server.sockets
        self.port = int(sockets[0].getsockname()[1]) if sockets else port
        self._sweeper = self._loop.call_later(self.tick, self._sweep)
        return self.port

    def _sweep(self) -> None:
        assert self._loop is not None
        now = self._loop.time()
        for conn in list(self.connections):
            conn.expire(now)
        self._sweeper = self._loop.call_later(self.tick, self._sweep)

    async def stop(self, grace: float = 2.0) -> None:
        """Stop accepting; close idle connections; let requests in progress finish (answered
        with `Connection: close`) for up to `grace` seconds; abort what is left."""
        self.stopping = True
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            if conn.stream_task is not None:
                conn.stream_task.cancel()  # a stream has no end to wait for
            elif not conn.busy and not conn.in_message:
                conn.close()
        deadline = time.monotonic() + grace
        while any(c.busy for c in self.connections) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None


_CLOSING_STREAMS: set[asyncio.Future[None]] = set()  # strong references while they run


async def _aclose(body: AsyncIterator[bytes]) -> None:
    """Close a stream's iterator (an async generator's `finally` runs); one that fails to
    close is logged, never raised into the connection."""
    aclose = getattr(body, "aclose", None)
    if aclose is None:
        return
    try:
        await aclose()
    except Exception as exc:
        log.error("http: closing a stream failed: %r", exc, exc_info=exc)


def plain_refusal(status: int, text: str) -> Response:
    """The default answer of a request the server refuses itself (413, 408, 400, 431)."""
    return Response(status, text.encode(), (("Content-Type", "text/plain"),))


@dataclass
class RunningServer:
    """A started server: its address, live connection counts, and how to stop it."""

    closer: Callable[[], Awaitable[None]]
    host: str
    port: int
    scheme: str
    connections: ConnectionTable | None = None  # live counts, refusals, timeouts
    path: str = "/"  # what `url` ends with ("/lost", "/metrics", the Logging Service's "/")
    server: HttpServer | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}{self.path}"

    async def close(self) -> None:
        await self.closer()


async def serve_http(
    handler: Handler,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    ssl_context: ssl.SSLContext | None = None,
    limits: HttpLimits | None = None,
    max_body: int = 64 * 1024,
    path: str = "/",
    event: Event | None = None,
    prefix: str = "http",
    internal_error: Callable[[BaseException], Response] | None = None,
    refuse: Refuse | None = None,
    cleanup: Callable[[], Awaitable[None]] | None = None,
) -> RunningServer:
    """Start an `HttpServer` for `handler` on host:port (0 = ephemeral; HTTPS with
    `ssl_context`, mutual TLS when it has `CERT_REQUIRED`). Closing it stops it gracefully
    (requests in progress are answered), then awaits `cleanup`."""
    server = HttpServer(
        handler, limits, max_body=max_body, event=event, prefix=prefix,
        internal_error=internal_error, refuse=refuse,
    )  # fmt: skip
    bound = await server.start(host, port, ssl_context)

    async def close() -> None:
        await server.stop()
        if cleanup is not None:
            await cleanup()

    scheme = "https" if ssl_context else "http"
    return RunningServer(close, host, bound, scheme, server.table, path, server)


def _internal_error(exc: BaseException) -> Response:
    log.error("http handler failed: %r", exc, exc_info=exc)
    return Response(500, b"internal error\n", close=True)
