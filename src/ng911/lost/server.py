"""The LoST server (ECRF) over HTTP and HTTPS: `LostEngine` behind `ng911.net.http1`.

RFC 5222 §14 binds LoST to HTTP POST; LoST errors travel in the body with HTTP 200, so HTTP
statuses are only for what is not LoST at all: 405 for a method other than POST, 415 for a
body that is not LoST XML under a Content-Type that does not say XML (`application/lost+xml`,
`application/xml`, `text/xml`, and a missing or `application/octet-stream` Content-Type are
read as LoST; any other type is read when the body is LoST XML, `protocol.looks_like_lost`,
since `curl -d @file` sends `application/x-www-form-urlencoded`; the 415 carries a LoST
`<badRequest>` saying why), 413 beyond `max_body` (a declared Content-Length beyond it is
refused before a byte of the body is read), 408 for a head or body that does not arrive in
time (`ng911.net.http1.HttpLimits`: deadlines, idle timeout and connection caps per source
and in total, enforced on every connection `serve` accepts). NENA i3 conformance tests POST to
`/lost` and `/LoST`; `/lost/`, `/LoST/` and `/` answer too. docs/lost-intake.md lists every
variant accepted and why.

Iterative answers (a non-recursive query outside our coverage, with a next server) are an
RFC 5222 §13.3 `<redirect>` by default; with `ServerConfig.redirect_status` (301, 302, 303,
307 or 308) they are that HTTP status with `Location:` the next server's URL (some i3 test
suites expect HTTP redirects), the `<redirect>` document still in the body.

Recursive queries outside our coverage are forwarded with one keep-alive client session to
the next server (RFC 5582); its answer is checked and relayed. A next server that does not
answer in `forward_timeout` gives `serverTimeout`, one that answers nonsense or cannot be
reached gives `serverError`. An exception inside the engine or the store (a PostGIS
connection gone) gives `internalError` and a log line, never a dropped request.

Observers (`ServerConfig.observers`) are called with a `LostServedEvent` (request and
answer bytes, HTTP status, peer) for every request the handler answers, after the answer is
built: how an ECRF logs its own LostQuery/LostResponse LogEvents (`ng911.node.serve` wires
the i3 Logging Service; lost/ knows nothing of it). An observer that raises is logged and
never changes the answer; none configured costs nothing.

Mutual TLS: pass an `ssl.SSLContext` with `verify_mode = CERT_REQUIRED` to `serve`. With
`allowed_peers`, only clients whose certificate names (DNS SANs, else CN) or, without TLS,
whose IP address are listed get answers; the others get `forbidden` (RFC 5222 §13.1).
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from ng911.location.civic import CivicAddress
from ng911.lost.engine import EngineConfig, Forward, LostEngine
from ng911.lost.errors import LostProtocolError
from ng911.lost.events import LostServedEvent
from ng911.lost.fast_request import parse_request_fast
from ng911.lost.protocol import (
    CONTENT_TYPE,
    LostErrorResponse,
    LostRequest,
    LostResponse,
    Redirect,
    build_request,
    build_response,
    looks_like_lost,
    parse_response,
)
from ng911.lost.store import AsyncLookups, BoundaryStore, StoreHit
from ng911.net.http1 import HttpLimits, Request, Response, RunningServer, serve_http

log = logging.getLogger("ng911.lost.server")

# RFC 5222 §17.2 registers application/lost+xml; i3 test suites send application/xml or
# text/xml; application/octet-stream is what HTTP libraries put on bytes of unstated type.
ACCEPTED_TYPES = frozenset(
    {"application/lost+xml", "application/xml", "text/xml", "application/octet-stream"}
)
PATHS = ("/lost", "/LoST", "/lost/", "/LoST/", "/")
PATH_SET = frozenset(PATHS)
#: HTTP statuses `ServerConfig.redirect_status` may name (RFC 9110 §15.4; 307/308 keep POST).
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_CT_HEADER = (("Content-Type", f"{CONTENT_TYPE}; charset=utf-8"),)
_TEXT = (("Content-Type", "text/plain; charset=utf-8"),)


@dataclass
class ServerConfig:
    engine: EngineConfig = field(default_factory=EngineConfig)
    # a findService is < 2 KB; 64 KB leaves room for a large polygon or civic address
    max_body: int = 64 * 1024
    # header/body deadlines, idle timeout, connection caps (ng911.net.http1)
    limits: HttpLimits = field(default_factory=HttpLimits)
    forward_timeout: float = 2.0
    forward_ssl: ssl.SSLContext | None = None  # for https:// next servers
    allowed_peers: frozenset[str] | None = None
    # iterative answers: None = RFC 5222 `<redirect>` (HTTP 200); 301/302/303/307/308 = that
    # HTTP status with Location: the next server's URL (the `<redirect>` still in the body)
    redirect_status: int | None = None
    # called with each answered request (module docstring); must not block
    observers: Sequence[Callable[[LostServedEvent], None]] = ()

    def __post_init__(self) -> None:
        if self.redirect_status is not None and self.redirect_status not in REDIRECT_STATUSES:
            raise ValueError(
                f"redirect_status {self.redirect_status} is not one of"
                f" {sorted(REDIRECT_STATUSES)} (or None for a LoST <redirect>)"
            )


@dataclass(frozen=True, slots=True)
class HttpRedirect:
    """An iterative answer as an HTTP redirect: `status`, `Location: location`, `body`."""

    status: int
    location: str
    body: bytes


def _event(event: str, **fields: object) -> None:
    """One structured log line (a JSON object) per notable event (STYLE: operator's view)."""
    if log.isEnabledFor(logging.INFO):
        log.info(json.dumps({"event": event, "element": "ecrf", **fields}, default=str))


def _http_event(event: str, **fields: object) -> None:
    """`ng911.net.http1`'s refusals, timeouts and malformed requests, as the ECRF's lines."""
    level = logging.WARNING if event.endswith(".bad_request") else logging.INFO
    if log.isEnabledFor(level):
        log.log(level, json.dumps({"event": event, "element": "ecrf", **fields}, default=str))


def peer_names(request: Request) -> set[str]:
    """Who the client is: certificate DNS SANs (else CN) over TLS, else its IP address."""
    names: set[str] = set()
    ssl_obj = request.ssl_object
    cert: Any = ssl_obj.getpeercert() if ssl_obj is not None else None
    if cert:
        for kind, value in cert.get("subjectAltName", ()):
            if kind in ("DNS", "URI", "IP Address"):
                names.add(str(value))
        if not names:
            for rdn in cert.get("subject", ()):
                for k, v in rdn:
                    if k == "commonName":
                        names.add(str(v))
    if request.remote != "?":
        names.add(request.remote)
    return names


class LostServer:
    """Holds the engine and the forwarding session; answers `ng911.net.http1` requests.

    `app` is the server itself (what `serve` takes); `on_cleanup` callbacks (each called
    with the server, awaited) run when it is closed.
    """

    def __init__(self, store: BoundaryStore, config: ServerConfig | None = None) -> None:
        self.config = config or ServerConfig()
        self.store = store
        self.engine = LostEngine(store, self.config.engine)
        self._session: aiohttp.ClientSession | None = None
        # a store with awaitable lookups (PostGIS): the loop never waits on a query
        self._async_store = store if isinstance(store, AsyncLookups) else None
        self.on_cleanup: list[Callable[[Any], Awaitable[None]]] = [self._cleanup]

    @property
    def app(self) -> LostServer:
        return self

    async def _cleanup(self, _app: Any) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._async_store is not None:
            await self._async_store.close_async()

    async def cleanup(self) -> None:
        """Run the `on_cleanup` callbacks (each once; an error in one is logged)."""
        callbacks, self.on_cleanup = self.on_cleanup, []
        for callback in callbacks:
            try:
                await callback(self)
            except Exception as exc:
                log.exception(json.dumps({"event": "lost.cleanup_error", "error": repr(exc)}))

    # ------------------------------------------------------------------ HTTP

    def handle(self, request: Request) -> Response | Awaitable[Response]:
        """The HTTP handler: paths, method, content type, peers; then `decide`. No await
        (and no task) unless the store's lookup or a forward needs one."""
        if request.path not in PATH_SET:
            return Response(404, b"404: Not Found\n", _TEXT)
        if request.method != "POST":
            return Response(405, b"405: Method Not Allowed\n", (*_TEXT, ("Allow", "POST")))
        config = self.config
        if not config.observers:
            if config.allowed_peers is None and self._async_store is None:
                # the common request: no peer check, a type that says XML (or none), a plain
                # point findService (`LostEngine.answer_request`); the rest as `_handle` says
                ctype = request.headers.get("content-type")
                if ctype is None or ctype in ACCEPTED_TYPES:
                    body = self._answer_hot(request.body)
                    if body is not None:
                        return Response(200, body, _CT_HEADER)
                    return self._handle(request, hot=False)
            return self._handle(request)
        ts, t0 = time.time(), time.perf_counter()
        result = self._handle(request)
        if isinstance(result, Response):
            self._observe(request, result, ts, t0)
            return result
        return self._observed(request, result, ts, t0)

    async def _observed(
        self, request: Request, pending: Awaitable[Response], ts: float, t0: float
    ) -> Response:
        resp = await pending
        self._observe(request, resp, ts, t0)
        return resp

    def _observe(self, request: Request, resp: Response, ts: float, t0: float) -> None:
        peer = request.peername
        where = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else request.remote
        ev = LostServedEvent(
            ts, time.perf_counter() - t0, request.body, resp.body, resp.status, where
        )
        for observe in self.config.observers:
            try:
                observe(ev)
            except Exception as exc:  # an observer's bug never costs the client its answer
                _event("lost.observer_error", error=f"{type(exc).__name__}: {exc}")

    def _handle(self, request: Request, hot: bool = True) -> Response | Awaitable[Response]:
        """The content type, the peer, then `decide` (`hot`: try `answer_request` first)."""
        data = request.body
        ctype = request.headers.get("content-type")
        # The header as clients send it is one of a few exact strings: a set lookup, and
        # parameter parsing only for the others ("text/xml; charset=utf-8", ...); any other
        # type is read if the body is LoST XML (module docstring).
        if (
            ctype is not None
            and ctype not in ACCEPTED_TYPES
            and request.content_type not in ACCEPTED_TYPES
            and not looks_like_lost(data)
        ):
            why = f"a {request.content_type[:60]} body that is not LoST XML ({CONTENT_TYPE})"
            _event("lost.refused", reason="content_type", peer=request.remote, ctype=ctype[:80])
            error = build_response(self.engine.error("badRequest", why))
            return Response(415, error, _CT_HEADER)
        allowed = self.config.allowed_peers
        if allowed is not None and not (peer_names(request) & allowed):
            _event("lost.forbidden", peer=sorted(peer_names(request)))
            return Response(
                200, build_response(self.engine.error("forbidden", "client not allowed")),
                _CT_HEADER,
            )  # fmt: skip
        if self._async_store is not None:
            return self._answer_async(data)
        return self._http(self.decide(data, hot))

    def _http(self, result: bytes | Forward | HttpRedirect) -> Response | Awaitable[Response]:
        if isinstance(result, bytes):
            return Response(200, result, _CT_HEADER)
        if isinstance(result, HttpRedirect):
            headers = (*_CT_HEADER, ("Location", result.location))
            return Response(result.status, result.body, headers)
        return self._forwarded(result)

    async def _forwarded(self, fwd: Forward) -> Response:
        return Response(200, await self._forward(fwd), _CT_HEADER)

    async def _answer_async(self, data: bytes) -> Response:
        result = await self.decide_async(data)
        if isinstance(result, Forward):
            return await self._forwarded(result)
        response = self._http(result)
        assert isinstance(response, Response)
        return response

    # ------------------------------------------------------------------ LoST

    async def answer(self, data: bytes) -> bytes:
        """Bytes of a request in, bytes of the response out (what `handle` serves; an HTTP
        redirect's `<redirect>` body, there being no HTTP here)."""
        if self._async_store is not None:
            result = await self.decide_async(data)
        else:
            result = self.decide(data)
        if isinstance(result, HttpRedirect):
            return result.body
        return await self._forward(result) if isinstance(result, Forward) else result

    def _parse(self, data: bytes) -> LostRequest | bytes:
        try:
            return parse_request_fast(data)  # the full lxml parser for all but the common shape
        except LostProtocolError as exc:
            _event("lost.error", kind=exc.kind, message=exc.message, bytes=len(data))
            return build_response(self.engine.error(exc.kind, exc.message or None))

    def decide(self, data: bytes, hot: bool = True) -> bytes | Forward | HttpRedirect:
        """The answer's bytes, the request to forward, or an HTTP redirect (with
        `redirect_status`): no await on the common path. `hot`: try the common query's
        own path first (`LostEngine.answer_request`: no request object)."""
        if hot:
            body = self._answer_hot(data)
            if body is not None:
                return body
        req = self._parse(data)
        if isinstance(req, bytes):
            return req
        try:
            return self._decided(req, self.engine.handle(req, time.time()))
        except Exception as exc:  # a store failing must not drop the request (module doc)
            return self._internal_error(exc)

    def _answer_hot(self, data: bytes) -> bytes | None:
        """The common query's answer (`LostEngine.answer_request`), None when it is not one;
        a store that fails answers as the full path does, never drops the request."""
        try:
            return self.engine.answer_request(data, time.time())
        except Exception as exc:
            return self._internal_error(exc)

    async def decide_async(self, data: bytes) -> bytes | Forward | HttpRedirect:
        """`decide` with a store whose lookups are awaited (`AsyncLookups`): the lookups the
        engine will make are run first on the store's pool, then the engine decides on them
        (`LostEngine.handle(hits=...)`), so no query ever blocks the loop."""
        store = self._async_store
        assert store is not None
        req = self._parse(data)
        if isinstance(req, bytes):
            return req
        try:
            hits: dict[tuple[int, str], StoreHit | None] = {}
            for value, service in self.engine.lookups(req):
                if isinstance(value, CivicAddress):
                    hit = await store.lookup_civic_async(value, service)
                else:
                    hit = await store.lookup_async(value, service)
                hits[id(value), service] = hit
            for key in self.engine.boundaries_needed(req, hits):
                self.engine.add_boundary(key, await store.boundary_async(key))
            return self._decided(req, self.engine.handle(req, time.time(), hits))
        except Exception as exc:  # a store failing must not drop the request (module doc)
            return self._internal_error(exc)

    def http_internal_error(self, exc: BaseException) -> Response:
        """What a bug below the handler's own guard gets: a LoST internalError, logged."""
        log.error(json.dumps({"event": "lost.internal_error", "error": repr(exc)}), exc_info=exc)
        body = build_response(self.engine.error("internalError", type(exc).__name__))
        return Response(200, body, _CT_HEADER, close=True)

    def _internal_error(self, exc: Exception) -> bytes:
        log.exception(json.dumps({"event": "lost.internal_error", "error": repr(exc)}))
        return build_response(self.engine.error("internalError", type(exc).__name__))

    def _decided(
        self, req: LostRequest, result: LostResponse | Forward
    ) -> bytes | Forward | HttpRedirect:
        if isinstance(result, Forward):
            _event("lost.forward", url=result.url, call_id=getattr(req, "call_id", None))
            return result
        if isinstance(result, LostErrorResponse):
            _event(
                "lost.error",
                kind=result.kind,
                message=result.message,
                call_id=getattr(req, "call_id", None),
            )
        nxt = self.engine.config.next_server
        if isinstance(result, Redirect) and self.config.redirect_status is not None and nxt:
            _event("lost.redirect", status=self.config.redirect_status, url=nxt.url)
            return HttpRedirect(self.config.redirect_status, nxt.url, build_response(result))
        return build_response(result)

    async def _forward(self, fwd: Forward) -> bytes:
        """RFC 5582 recursion: ask the next server, relay its (checked) answer."""
        if self._session is None:
            connector = aiohttp.TCPConnector(ssl=self.config.forward_ssl or True)
            self._session = aiohttp.ClientSession(connector=connector)
        body = build_request(fwd.request)
        try:
            async with asyncio.timeout(self.config.forward_timeout):
                async with self._session.post(
                    fwd.url, data=body, headers={"Content-Type": CONTENT_TYPE}
                ) as resp:
                    raw = await resp.read()
                    status = resp.status
        except TimeoutError:
            return build_response(self.engine.error("serverTimeout", f"{fwd.url} did not answer"))
        except (aiohttp.ClientError, OSError, ssl.SSLError) as exc:
            return build_response(
                self.engine.error("serverError", f"{fwd.url}: {type(exc).__name__}")
            )
        if status != 200:
            return build_response(self.engine.error("serverError", f"{fwd.url}: HTTP {status}"))
        try:
            parsed = parse_response(raw)
        except LostProtocolError:
            return build_response(self.engine.error("serverError", f"{fwd.url}: not LoST"))
        if isinstance(parsed, LostErrorResponse):
            return build_response(parsed)
        return raw


def make_app(store: BoundaryStore, config: ServerConfig | None = None) -> LostServer:
    """The LoST server over `store`, ready for `serve` (contracts.md)."""
    return LostServer(store, config)


async def serve(
    app: LostServer,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    ssl_context: ssl.SSLContext | None = None,
    limits: HttpLimits | None = None,
    path: str = "/lost",
) -> RunningServer:
    """Start the LoST server on host:port (0 = ephemeral) on `ng911.net.http1` with `limits`
    (default: its `ServerConfig.limits`) and `max_body`; returns the bound address and a
    closer. Closing stops it gracefully (requests in progress are answered) and runs its
    `on_cleanup`."""
    return await serve_http(
        app.handle,
        host,
        port,
        ssl_context=ssl_context,
        limits=limits or app.config.limits,
        max_body=app.config.max_body,
        path=path,
        event=_http_event,
        prefix="lost",
        internal_error=app.http_internal_error,
        cleanup=app.cleanup,
    )
