"""A small HTTP/1.1 client on `httptools` (llhttp), for the elements' own HTTP traffic.

Why our own: an ESRP asks LoST once per call (`ng911.lost.client`) and every element POSTs
dozens of signed LogEvents per call (`ng911.i3log.sender`); aiohttp's client machinery
(request and response objects, a connector, a timer context and a task-safe stream reader per
request) was most of that CPU. Here a request is one prepared `bytes` write on a pooled
connection, the answer is parsed by llhttp's callbacks straight into one `HttpResponse`, and a
request costs one future and one timer handle. The server side is `ng911.net.http1`.

What it does (RFC 9112):

- Persistent connections (§9.3): a small pool per origin (scheme, host, port), at most
  `ClientLimits.max_per_origin` connections; a request beyond it waits for one to come back
  (bounded by its own deadline). Idle connections are reused most-recent first and dropped
  after `idle_timeout` (shorter than our server's 15 s, so we rarely race its close).
- http and https: an `ssl.SSLContext` is passed in (the project's contexts from
  `ng911.pki.tls.client_context`, mutual TLS with the element's certificate); https without
  one uses `ssl.create_default_context()`. The context decides the checks: the project's
  contexts verify the chain and leave the name check to the caller (`check_hostname` off,
  RFC 5922 identity checks are done where a peer's name matters).
- Deadlines: `connect_timeout` (TCP connect plus TLS handshake) and the request's total
  `timeout` (waiting for a pooled connection, connecting, sending, the whole answer).
- Request bodies with Content-Length; answers with Content-Length, chunked (§7.1) or
  delimited by the close (§6.3); 1xx interim answers skipped.
- Limits: answer head `MAX_HEAD` bytes and `MAX_HEADERS` fields, body `max_body` (a declared
  Content-Length beyond it fails before the body is read); the connection is dropped.
- Retries: a connection the server closed before sending any byte of the answer, when that
  connection had carried an earlier request (the keep-alive race of §9.3.1: the server timed
  the idle connection out as our request went out), is retried ONCE on a fresh connection,
  and only when the caller says the request is safe to repeat (`retry=True`; default: the
  idempotent methods of RFC 9110 §9.2.2). Never for a fresh connection, never once an answer
  byte came, never twice.
- Errors: `HttpClientError` with a `kind` ("url", "unreachable", "tls", "timeout", "closed",
  "protocol", "too_large"); a hostile or broken server costs a request an error, never a
  crash or a hang.

Pipelining (§9.3.2), for the LogSender's batches: `post_many` writes several POSTs in one
write on one connection and reads the answers in order (one send and far fewer wake-ups per
request instead of one each); nothing pipelined is retried by the client.

Not done: HEAD requests (no body would be expected), `Expect: 100-continue`, proxies,
cookies, redirects (callers that follow redirects do it themselves, bounded).
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from dataclasses import dataclass
from typing import Final, cast
from urllib.parse import urlsplit

import httptools

from ng911.net.errors import TransportError

__all__ = ["ClientLimits", "HttpClient", "HttpClientError", "HttpResponse"]

#: Whole answer head (status line + header fields), bytes.
MAX_HEAD: Final = 64 * 1024
MAX_HEADERS: Final = 100
#: Origins a client keeps pools for; an idle pool beyond it is dropped.
MAX_ORIGINS: Final = 16
#: Prepared request heads kept per client (method, URL, content type).
MAX_HEADS: Final = 64
#: RFC 9110 §9.2.2.
IDEMPOTENT: Final = frozenset({"GET", "PUT", "DELETE", "OPTIONS", "TRACE"})


class HttpClientError(TransportError):
    """A request got no usable answer; `kind` says why (module docstring), `url` whose."""

    def __init__(self, kind: str, message: str, *, url: str = "") -> None:
        super().__init__(message, peer=url or None)
        self.kind = kind
        self.url = url


class _Stale(HttpClientError):
    """The server closed a connection before any byte of the answer (retry may apply)."""


@dataclass(frozen=True, slots=True)
class ClientLimits:
    """Pool size, deadlines (seconds) and answer size cap of one `HttpClient`."""

    max_per_origin: int = 8
    connect_timeout: float = 2.0
    idle_timeout: float = 10.0
    max_body: int = 4 * 1024 * 1024

    def __post_init__(self) -> None:
        if self.max_per_origin < 1:
            raise ValueError("max_per_origin must be >= 1")
        if not (self.connect_timeout > 0 and self.idle_timeout > 0 and self.max_body > 0):
            raise ValueError("connect_timeout, idle_timeout and max_body must be > 0")


class HttpResponse:
    """An answer: status, header fields (names in lower case, repeated fields joined with
    ", ", RFC 9110 §5.3), the whole body."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def __repr__(self) -> str:
        return f"HttpResponse({self.status}, {len(self.body)} bytes)"


class _Conn(asyncio.Protocol):
    """One connection: writes a prepared request, feeds llhttp, resolves the waiting future."""

    def __init__(self, pool: _Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        # the answers awaited, in request order (more than one: pipelined, `post_many`)
        self.pending: deque[asyncio.Future[HttpResponse]] = deque()
        self.timer: asyncio.TimerHandle | None = None
        self.dead = False  # closed, or not reusable: its pool slot is free
        self.used = False  # carried a request before the current one
        self.got = False  # a byte of the first awaited answer came
        self.idle_since = 0.0
        self.keep = True
        self.head_bytes = 0
        self._reset()

    def _reset(self) -> None:
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.body_len = 0
        self.head_size = 0
        self.nheaders = 0
        self.status = 0
        self.until_eof = False
        self.head_done = False

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        if not self.pending:
            # bytes nobody asked for (a 408 before an idle close, garbage): not reusable
            self.abort()
            return
        self.got = True
        if not self.head_done:
            self.head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.fail(HttpClientError("protocol", "unexpected protocol switch", url=self.pool.name))
        except httptools.HttpParserError as exc:
            cause = exc.__context__
            if isinstance(cause, HttpClientError):
                self.fail(cause)
            else:
                self.fail(HttpClientError("protocol", f"malformed answer: {str(exc)[:120]}"))
            return
        # a head that never ends (llhttp holds a field until it is complete)
        if not self.head_done and self.head_bytes > MAX_HEAD + 1024:
            self.fail(HttpClientError("too_large", f"answer head over {MAX_HEAD} bytes"))

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.release_slot()
        if not self.pending:
            return
        if self.until_eof and self.head_done:  # a body delimited by the close (§6.3)
            self.keep = False
            self.on_message_complete()
            if not self.pending:
                return
            self.got = False
        if not self.got:
            self.fail(_Stale("closed", "connection closed before any answer", url=self.pool.name))
        else:
            self.fail(HttpClientError("closed", "connection closed mid-answer", url=self.pool.name))

    # -- llhttp callbacks ------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if not self.pending:  # bytes after the answer, in the same read
            raise HttpClientError("protocol", "bytes after the answer", url=self.pool.name)
        self._reset()

    def on_status(self, status: bytes) -> None:
        self.head_size += len(status)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.nheaders += 1
        self.head_size += len(name) + len(value) + 4
        if self.nheaders > MAX_HEADERS or self.head_size > MAX_HEAD:
            raise HttpClientError(
                "too_large", f"answer head over {MAX_HEADERS} fields or {MAX_HEAD} bytes",
                url=self.pool.name,
            )  # fmt: skip
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        old = self.headers.get(key)
        self.headers[key] = text if old is None else f"{old}, {text}"

    def on_headers_complete(self) -> None:
        self.head_done = True
        self.status = status = self.parser.get_status_code()
        h = self.headers
        declared = h.get("content-length")
        max_body = self.pool.client.limits.max_body
        if declared is not None and declared.isdigit() and int(declared) > max_body:
            raise HttpClientError(
                "too_large", f"answer body of {declared} bytes over {max_body}", url=self.pool.name
            )
        self.until_eof = (
            declared is None
            and "chunked" not in h.get("transfer-encoding", "").lower()
            and status >= 200
            and status not in (204, 304)
        )

    def on_body(self, body: bytes) -> None:
        self.body_len += len(body)
        if self.body_len > self.pool.client.limits.max_body:
            raise HttpClientError(
                "too_large", f"answer body over {self.pool.client.limits.max_body} bytes",
                url=self.pool.name,
            )  # fmt: skip
        self.body.append(body)

    def on_message_complete(self) -> None:
        if 100 <= self.status < 200:
            return  # an interim answer (RFC 9110 §15.2): the final one follows
        if not self.pending:
            return
        w = self.pending.popleft()
        self.got = False
        if not self.until_eof:
            self.keep = self.keep and self.parser.should_keep_alive()
        body = self.body[0] if len(self.body) == 1 else b"".join(self.body)
        if not self.pending:
            self._settle()
        if not w.done():
            w.set_result(HttpResponse(self.status, self.headers, body))

    # -- requests --------------------------------------------------------------------------

    def send(self, data: bytes, deadline: float, n: int = 1) -> asyncio.Future[HttpResponse]:
        """Write `data` (one request, or `n` pipelined ones in one write); the future gets
        the first answer (or an `HttpClientError`), `pending` holds the others'."""
        t = self.transport
        assert t is not None
        loop = self.pool.loop
        create = loop.create_future
        fut: asyncio.Future[HttpResponse] = create()
        self.pending.append(fut)
        for _ in range(n - 1):
            self.pending.append(create())
        self.got = False
        self.head_bytes = 0
        self._reset()
        self.timer = loop.call_at(deadline, self._timed_out)
        t.write(data)
        return fut

    def _settle(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _timed_out(self) -> None:
        self.timer = None
        self.fail(HttpClientError("timeout", "no answer in time", url=self.pool.name))

    def fail(self, err: HttpClientError) -> None:
        """The requests awaiting an answer fail (the first with `err`, any pipelined after
        it as closed before their answer); the connection is dropped."""
        pending, self.pending = self.pending, deque()
        self._settle()
        self.abort()
        for w in pending:
            if not w.done():
                w.set_exception(err)
            err = _Stale("closed", "connection dropped before this answer", url=self.pool.name)

    def release_slot(self) -> None:
        if not self.dead:
            self.dead = True
            self.pool.lost(self)

    def abort(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.release_slot()
        if self.transport is not None:
            self.transport.abort()


class _Pool:
    """The connections to one origin: idle ones (a stack), a count, requests waiting for one."""

    __slots__ = (
        "client", "conns", "count", "host", "idle", "loop", "name", "port", "ssl", "waiters",
    )  # fmt: skip

    def __init__(
        self,
        client: HttpClient,
        loop: asyncio.AbstractEventLoop,
        name: str,
        host: str,
        port: int,
        ctx: ssl.SSLContext | None,
    ) -> None:
        self.client = client
        self.loop = loop
        self.name = name  # scheme://host:port, for errors
        self.host = host
        self.port = port
        self.ssl = ctx
        self.idle: list[_Conn] = []
        self.conns: set[_Conn] = set()
        self.count = 0  # connections open or being opened
        self.waiters: deque[asyncio.Future[_Conn | None]] = deque()

    async def acquire(self, deadline: float, fresh: bool = False) -> _Conn:
        """A connection for one request: an idle one (unless `fresh`), a new one while the
        pool has room, else the next one given back (or the next free slot)."""
        limits = self.client.limits
        while True:
            now = self.loop.time()
            if self.client.closed:
                raise HttpClientError("closed", "client closed", url=self.name)
            while self.idle and not fresh:
                c = self.idle.pop()
                t = c.transport
                if c.dead or t is None or t.is_closing():
                    continue
                if now - c.idle_since > limits.idle_timeout:
                    t.close()
                    c.release_slot()
                    continue
                return c
            if self.count < limits.max_per_origin:
                return await self._open(deadline)
            got = await self._wait(deadline)
            if got is not None:
                return got

    async def _wait(self, deadline: float) -> _Conn | None:
        fut: asyncio.Future[_Conn | None] = self.loop.create_future()
        self.waiters.append(fut)
        timer = self.loop.call_at(deadline, self._expire, fut)
        try:
            return await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():  # handed one just as we were cancelled
                got = fut.result()
                if got is not None:
                    self.release(got, True)
                else:
                    self._wake()
            raise
        finally:
            timer.cancel()
            try:
                self.waiters.remove(fut)
            except ValueError:
                pass

    def _expire(self, fut: asyncio.Future[_Conn | None]) -> None:
        if not fut.done():
            fut.set_exception(HttpClientError("timeout", "no connection free in time"))

    async def _open(self, deadline: float) -> _Conn:
        self.count += 1
        made: list[_Conn] = []

        def factory() -> _Conn:
            c = _Conn(self)
            made.append(c)
            return c

        limit = min(self.client.limits.connect_timeout, deadline - self.loop.time())
        try:
            if limit <= 0:
                raise TimeoutError
            async with asyncio.timeout(limit):
                _, conn = await self.loop.create_connection(
                    factory,
                    self.host,
                    self.port,
                    ssl=self.ssl,
                    server_hostname=self.host if self.ssl is not None else None,
                    ssl_handshake_timeout=limit if self.ssl is not None else None,
                )
        except BaseException as exc:
            if not (made and made[0].dead):
                self.count -= 1
                self._wake()
            if made:
                made[0].dead = True
            if isinstance(exc, TimeoutError):
                raise HttpClientError(
                    "timeout", f"{self.name}: no connection in {limit:.3g}s", url=self.name
                ) from exc
            if isinstance(exc, ssl.SSLError | ssl.CertificateError):
                reason = getattr(exc, "reason", None) or exc
                raise HttpClientError("tls", f"{self.name}: TLS: {reason}", url=self.name) from exc
            if isinstance(exc, OSError):
                why = exc.strerror or str(exc) or type(exc).__name__
                raise HttpClientError("unreachable", f"{self.name}: {why}", url=self.name) from exc
            raise
        if conn.dead:  # closed by the server before we got it
            raise _Stale("closed", f"{self.name}: closed at once", url=self.name)
        self.conns.add(conn)
        return conn

    def release(self, conn: _Conn, keep: bool) -> None:
        """`conn` has finished its request: to a waiting request, to the idle stack, or
        closed (the answer said close, or the connection failed)."""
        if conn.dead:
            return
        t = conn.transport
        if not keep or t is None or t.is_closing() or self.client.closed:
            conn.release_slot()
            if t is not None:
                t.close()
            return
        conn.used = True
        while self.waiters:
            w = self.waiters.popleft()
            if not w.done():
                w.set_result(conn)
                return
        conn.idle_since = self.loop.time()
        self.idle.append(conn)

    def lost(self, conn: _Conn) -> None:
        """`conn` is gone (closed by either side, or failed): its slot is free."""
        self.count -= 1
        self.conns.discard(conn)
        if conn in self.idle:
            self.idle.remove(conn)
        self._wake()

    def _wake(self) -> None:
        while self.waiters:
            w = self.waiters.popleft()
            if not w.done():
                w.set_result(None)  # a slot is free: the waiter opens a connection
                return

    def close(self) -> None:
        waiters, self.waiters = self.waiters, deque()
        for w in waiters:
            if not w.done():
                w.set_exception(HttpClientError("closed", "client closed", url=self.name))
        for c in list(self.conns):
            c.fail(HttpClientError("closed", "client closed", url=self.name))
        self.idle.clear()


class HttpClient:
    """Pooled keep-alive HTTP/1.1 requests (module docstring). One event loop at a time:
    pools made on another loop (a closed one) are forgotten, not reused."""

    def __init__(
        self, ssl_context: ssl.SSLContext | None = None, limits: ClientLimits | None = None
    ) -> None:
        self.ssl = ssl_context
        self.limits = limits or ClientLimits()
        self.closed = False
        self._pools: dict[tuple[str, str, int], _Pool] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._heads: dict[tuple[str, str, str, bool], tuple[tuple[str, str, int], bytes]] = {}
        self._default_ssl: ssl.SSLContext | None = None

    async def post(
        self,
        url: str,
        body: bytes,
        content_type: str,
        *,
        timeout: float,
        retry: bool = False,
    ) -> HttpResponse:
        """POST `body` to `url`. `retry=True`: the request may be repeated once on a fresh
        connection if a reused one was closed before any answer (module docstring)."""
        return await self.request("POST", url, body, content_type, timeout=timeout, retry=retry)

    async def post_many(
        self,
        url: str,
        bodies: list[bytes],
        content_type: str,
        *,
        timeout: float,
        retry: bool = False,
    ) -> list[HttpResponse | HttpClientError]:
        """POST each of `bodies` to `url`, pipelined on one connection (RFC 9112 §9.3.2): all
        requests in one write, the answers read in order, one deadline for all. Each request
        gets its answer or its `HttpClientError`, never raised. `retry=True`: when a reused
        connection was closed before any byte of the first answer, the whole batch is sent
        once more on a fresh connection (as `post` does for one request); nothing else is
        repeated, and a connection that fails fails the requests still waiting."""
        if len(bodies) <= 1:
            try:
                return [
                    await self.post(url, b, content_type, timeout=timeout, retry=retry)
                    for b in bodies
                ]
            except HttpClientError as exc:
                return [exc]
        if self.closed:
            return [HttpClientError("closed", "client closed", url=url)] * len(bodies)
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._pools.clear()
            self._loop = loop
        try:
            key, head = self._head("POST", url, content_type, True)
        except HttpClientError as exc:
            return [exc] * len(bodies)
        pool = self._pools.get(key) or self._pool(loop, key)
        data = b"".join([head + b"%d\r\n\r\n%b" % (len(b), b) for b in bodies])
        deadline = loop.time() + timeout
        fresh = False
        while True:
            try:
                conn = await pool.acquire(deadline, fresh)
            except HttpClientError as exc:
                return [exc] * len(bodies)
            conn.send(data, deadline, len(bodies))
            futs = list(conn.pending)
            out: list[HttpResponse | HttpClientError] = []
            try:
                for f in futs:
                    try:
                        out.append(await f)
                    except HttpClientError as exc:
                        out.append(exc)
            except BaseException:  # cancelled: the connection's state is unknown
                conn.abort()
                for f in futs:
                    f.cancel()
                raise
            if isinstance(out[0], _Stale) and retry and conn.used and not fresh:
                fresh = True
                continue
            pool.release(conn, conn.keep)
            return [
                r
                if isinstance(r, HttpResponse)
                else HttpClientError(r.kind, f"{url}: {r}", url=url)
                for r in out
            ]

    async def request(
        self,
        method: str,
        url: str,
        body: bytes | None = None,
        content_type: str = "",
        *,
        timeout: float,
        retry: bool | None = None,
    ) -> HttpResponse:
        """One request; the answer whatever its status, or an `HttpClientError`."""
        if self.closed:
            raise HttpClientError("closed", "client closed", url=url)
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._pools.clear()  # connections of another loop are not ours to use
            self._loop = loop
        key, head = self._head(method, url, content_type, body is not None)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pool(loop, key)
        data = head + (b"%d\r\n\r\n%b" % (len(body), body) if body is not None else b"\r\n")
        deadline = loop.time() + timeout
        if retry is None:
            retry = method in IDEMPOTENT
        conn = await pool.acquire(deadline)
        try:
            try:
                resp = await conn.send(data, deadline)
            except _Stale:
                if not (retry and conn.used):
                    raise
                conn = await pool.acquire(deadline, fresh=True)
                resp = await conn.send(data, deadline)
        except _Stale as stale:  # its own name: mypyc gives a name one type per function
            raise HttpClientError(stale.kind, f"{url}: {stale}", url=url) from None
        except HttpClientError as exc:
            if exc.kind == "timeout":
                raise HttpClientError(
                    "timeout", f"{url}: no answer in {timeout}s", url=url
                ) from None
            raise HttpClientError(exc.kind, f"{url}: {exc}", url=url) from None
        except BaseException:  # cancelled mid-request: the connection's state is unknown
            conn.abort()
            raise
        pool.release(conn, conn.keep)
        return resp

    def _head(
        self, method: str, url: str, content_type: str, has_body: bool
    ) -> tuple[tuple[str, str, int], bytes]:
        """The origin of `url` and the request's bytes up to the Content-Length value (cached)."""
        cache_key = (method, url, content_type, has_body)
        got = self._heads.get(cache_key)
        if got is not None:
            return got
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise HttpClientError("url", f"bad URL {url!r}: {exc}", url=url) from None
        scheme, host = parts.scheme.lower(), parts.hostname
        if scheme not in ("http", "https") or not host:
            raise HttpClientError("url", f"not an http(s) URL: {url!r}", url=url)
        if port is None:
            port = 443 if scheme == "https" else 80
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        hostport = parts.netloc.rsplit("@", 1)[-1]
        lines = [f"{method} {target} HTTP/1.1", f"Host: {hostport}", "User-Agent: ng911"]
        if content_type:
            lines.append(f"Content-Type: {content_type}")
        text = "\r\n".join(lines) + ("\r\nContent-Length: " if has_body else "\r\n")
        try:
            head = text.encode("ascii")
        except UnicodeEncodeError:
            raise HttpClientError("url", f"not an ASCII URL: {url!r}", url=url) from None
        if any(ord(c) <= 32 or ord(c) == 127 for c in target + hostport):
            raise HttpClientError("url", f"bad characters in URL {url!r}", url=url)
        got = ((scheme, host, port), head)
        if len(self._heads) >= MAX_HEADS:
            self._heads.clear()
        self._heads[cache_key] = got
        return got

    def _pool(self, loop: asyncio.AbstractEventLoop, key: tuple[str, str, int]) -> _Pool:
        scheme, host, port = key
        ctx = None
        if scheme == "https":
            ctx = self.ssl
            if ctx is None:
                if self._default_ssl is None:
                    self._default_ssl = ssl.create_default_context()
                ctx = self._default_ssl
        if len(self._pools) >= MAX_ORIGINS:
            for k, p in list(self._pools.items()):
                if not p.conns and not p.waiters and p.count == 0:
                    del self._pools[k]
        pool = _Pool(self, loop, f"{scheme}://{host}:{port}", host, port, ctx)
        self._pools[key] = pool
        return pool

    @property
    def connections(self) -> int:
        """Connections open now (all origins)."""
        return sum(len(p.conns) for p in self._pools.values())

    async def close(self) -> None:
        """Close every connection; requests in progress fail with kind "closed"."""
        self.closed = True
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        for pool in self._pools.values():
            if pool.loop is running:
                pool.close()
        self._pools.clear()
        if running is not None:
            await asyncio.sleep(0)  # let the transports' connection_lost run
