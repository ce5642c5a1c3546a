"""An asyncio LoST client (what the ESRP and the VSP proxy use to ask the ECRF).

One `ng911.net.http1client.HttpClient` per client (a pool of up to `max_connections`
keep-alive connections: only the first query on each pays the TCP and TLS handshakes; the
project's TLS context passed in, mutual TLS with the element's certificate), an overall
timeout per query (waiting for a connection, connecting, the whole answer), and a cache:

- answers are kept until their mapping's `expires` (RFC 5222 §5.2; "NO-CACHE" is never kept,
  "NO-EXPIRATION" is kept until `max_cache_age`), keyed by (service, location);
- with `boundary="value"` the client asks for the service boundary (§8.2) and a later point
  query inside a cached boundary is answered from the cache without asking (the caching the
  RFC designed boundaries for).

Errors are typed: `LostClientError` (kind "unreachable", "timeout", "http", "protocol") when
the server could not be asked (an HTTP answer that is not HTTP, or too large, is "protocol";
no connection, TLS refused, or the connection dropped is "unreachable"), `LostNotFound` for
`<notFound>`, `LostResponseError` (kind = the RFC 5222 §13.1 element) for any other
`<errors>`. A `<redirect>` whose target is an http(s) URL is followed (at most
`max_redirects`, never back to a URL already asked), and so is an HTTP 3xx with a `Location`
(a server configured to answer iteratively that way, as some i3 test suites expect):
`request` turns it into the same `Redirect`, so one loop, one hop bound and one loop check
serve both.

Retries: a findService is a query that changes nothing on the server (RFC 5222 §8), so
repeating it is safe; the HTTP client repeats it once, on a fresh connection, when a reused
keep-alive connection was closed before any byte of the answer (the server's idle close
racing our request, RFC 9112 §9.3.1). No other retry: a call must not wait twice a timeout.

Observers (`observers=[...]`, each a callable) get one `LostQueryEvent` per `find_service`:
sent time, duration, outcome, cached or not, the call's emergency-CallId, named by `element`
(who asks) and `server` (whom), with the request and answer XML of the exchange (bounded,
`lost.events.MAX_XML`). Without observers nothing is timed or built. `use_cache`
(default True) is whether `find_service` uses the cache; the testbed turns it off so every
call pays the LoST round trip.

Parsing: an ECRF's answers repeat byte for byte (one `<findServiceResponse>` per PSAP
boundary, whose `expires` moves once a second; the request's ids are not echoed), and
reading one with the hardened XML parser costs an ESRP ~190 k instructions, a tenth of a
call. So the last `PARSED_MAX` findServiceResponses (each at most `PARSED_MAX_BYTES`) are
kept by their exact bytes, and an answer equal to one of them takes its parsed value (a
frozen, immutable object, the value parsing would give). Not a cache of answers: every query
is still sent, and what the server says this time is what is used; a different byte is a
new parse. `bench/esrp.py` (every call from one location): 800 answers, 2 distinct texts.
"""

from __future__ import annotations

import contextvars
import ssl
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urljoin

import shapely

from ng911.location.civic import CivicAddress
from ng911.location.geodetic import Point, Shape
from ng911.lost.errors import LostClientError, LostNotFound, LostProtocolError, LostResponseError
from ng911.lost.events import MAX_XML, LostQueryEvent
from ng911.lost.protocol import (
    CONTENT_TYPE,
    PROFILE_CIVIC,
    PROFILE_GEODETIC,
    FindServiceRequest,
    FindServiceResponse,
    LostErrorResponse,
    LostLocation,
    LostRequest,
    LostResponse,
    Mapping,
    Redirect,
    build_request,
    parse_datetime,
    parse_response,
)
from ng911.net.http1client import ClientLimits, HttpClient, HttpClientError

# The (request, response) bodies of an observed query's last exchange: set by `_observed` for
# the query's own task (a context variable: concurrent queries never see each other's), filled
# by `request`; unset (None) when nobody observes, so `request` pays one lookup.
_EXCHANGE: contextvars.ContextVar[list[bytes] | None] = contextvars.ContextVar(
    "lost_exchange", default=None
)


@dataclass(frozen=True, slots=True)
class FindServiceResult:
    """What `find_service` returns: the URIs, the whole mapping, how long it took."""

    uris: tuple[str, ...]
    mapping: Mapping
    duration: float  # seconds, 0.0 when cached
    cached: bool
    response: FindServiceResponse

    @property
    def sip_uri(self) -> str | None:
        return self.mapping.sip_uri


@dataclass(slots=True)
class _Entry:
    result: FindServiceResult
    until: float
    boundary: Any | None  # shapely geometry of the mapping's service boundary


def _expiry(mapping: Mapping, now: float, max_age: float) -> float | None:
    """Until when (epoch seconds) a mapping may be cached; None = do not cache."""
    if mapping.expires == "NO-CACHE":
        return None
    if mapping.expires == "NO-EXPIRATION":
        return now + max_age
    dt = parse_datetime(mapping.expires)
    if dt is None:
        return None
    until = dt.timestamp()
    if until <= now:
        return None
    return min(until, now + max_age)


class LostClient:
    """Ask one LoST server (see the module docstring)."""

    def __init__(
        self,
        url: str,
        *,
        ssl: ssl.SSLContext | None = None,
        timeout: float = 2.0,
        boundary: str | None = None,
        recursive: bool = True,
        max_cache_age: float = 86400.0,
        max_cache_entries: int = 10_000,
        max_redirects: int = 3,
        use_cache: bool = True,
        observers: list[Callable[[Any], None]] | None = None,
        element: str = "esrp",
        server: str = "lost",
        max_connections: int = 64,
    ) -> None:
        self.url = url
        self.ssl = ssl
        self.timeout = timeout
        self.boundary = boundary
        self.recursive = recursive
        self.max_cache_age = max_cache_age
        self.max_cache_entries = max_cache_entries
        self.max_redirects = max_redirects
        self.use_cache = use_cache
        self.observers: list[Callable[[Any], None]] = observers if observers is not None else []
        self.element = element
        self.server = server
        self.max_connections = max_connections
        self._http: HttpClient | None = None
        self._cache: dict[tuple[str, Shape | CivicAddress], _Entry] = {}
        self._areas: list[tuple[str, _Entry]] = []
        self.queries = 0  # requests actually sent (cache hits do not count)
        self._parsed: dict[bytes, FindServiceResponse] = {}  # "Parsing" above
        self.parsed_reused = 0  # answers whose bytes matched one parsed before

    async def __aenter__(self) -> LostClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    def clear_cache(self) -> None:
        self._cache.clear()
        self._areas.clear()

    def _get_http(self) -> HttpClient:
        if self._http is None:
            limits = ClientLimits(max_per_origin=self.max_connections, connect_timeout=self.timeout)
            self._http = HttpClient(self.ssl, limits)
        return self._http

    async def request(self, req: LostRequest, url: str | None = None) -> LostResponse:
        """Send one request, return the parsed response (errors and redirects included)."""
        target = url or self.url
        body = build_request(req)
        self.queries += 1
        seen = _EXCHANGE.get()
        try:
            # redirects are followed by `_find_service`, bounded and loop-checked
            resp = await self._get_http().post(
                target, body, CONTENT_TYPE, timeout=self.timeout, retry=True
            )
        except HttpClientError as exc:
            kind = _KINDS.get(exc.kind, "unreachable")
            if kind == "timeout":
                raise LostClientError(kind, f"{target}: no answer in {self.timeout}s") from exc
            raise LostClientError(kind, str(exc)) from exc
        raw, status = resp.body, resp.status
        location = resp.headers.get("location")
        if seen is not None:  # an observed query: its event shows the exchange
            seen[:] = (body, raw)
        if 300 <= status < 400 and location:
            return Redirect(target=_resolve(target, location), source=f"HTTP {status}")
        if status != 200:
            raise LostClientError("http", f"{target}: HTTP {status}", status=status)
        try:
            return self._parse(raw)
        except LostProtocolError as exc:
            raise LostClientError("protocol", f"{target}: {exc.message}") from exc

    def _parse(self, raw: bytes) -> LostResponse:
        """`parse_response`, or the value of the same bytes parsed before ("Parsing")."""
        memo = self._parsed
        hit = memo.get(raw)
        if hit is not None:
            self.parsed_reused += 1
            return hit
        resp = parse_response(raw)
        if isinstance(resp, FindServiceResponse) and len(raw) <= PARSED_MAX_BYTES:
            if len(memo) >= PARSED_MAX:
                del memo[next(iter(memo))]  # the oldest: an expires a second ago, mostly
            memo[raw] = resp
        return resp

    def _from_cache(
        self, service: str, location: Shape | CivicAddress, now: float
    ) -> FindServiceResult | None:
        entry = self._cache.get((service, location))
        if entry is not None:
            if entry.until > now:
                return _cached(entry.result)
            del self._cache[(service, location)]
        if isinstance(location, Point) and self._areas:
            keep: list[tuple[str, _Entry]] = []
            found: FindServiceResult | None = None
            for svc, e in self._areas:
                if e.until <= now:
                    continue
                keep.append((svc, e))
                if (
                    found is None
                    and svc == service
                    and shapely.contains_xy(e.boundary, location.lon, location.lat)
                ):
                    found = _cached(e.result)
            self._areas = keep
            return found
        return None

    def _store(
        self, service: str, location: Shape | CivicAddress, result: FindServiceResult, now: float
    ) -> None:
        until = _expiry(result.mapping, now, self.max_cache_age)
        if until is None:
            return
        if len(self._cache) >= self.max_cache_entries:
            self._cache.pop(next(iter(self._cache)))
        boundary = None
        b = result.mapping.boundary
        if b is not None and b.profile == PROFILE_GEODETIC and b.items:
            from ng911.location.geodetic import to_shapely

            try:
                boundary = shapely.union_all(
                    [to_shapely(s) for s in b.items if not isinstance(s, CivicAddress)]
                )
                shapely.prepare(boundary)
            except Exception:  # a boundary we cannot use just means no area caching
                boundary = None
        entry = _Entry(result, until, boundary)
        self._cache[(service, location)] = entry
        if boundary is not None:
            self._areas.append((service, entry))

    def find_service(
        self,
        location: Shape | CivicAddress,
        service: str = "urn:service:sos",
        *,
        call_id: str | None = None,
        incident_id: str | None = None,
        location_id: str = "loc1",
        use_cache: bool | None = None,
    ) -> Coroutine[Any, Any, FindServiceResult]:
        """Map `location` + `service` to a mapping (RFC 5222 §8); cached by `expires` unless
        `use_cache` (default: the client's) is False. A plain function returning the query's
        coroutine, so that without observers awaiting it costs no extra frame."""
        find = self._find_service(
            location,
            service,
            call_id,
            incident_id,
            location_id,
            self.use_cache if use_cache is None else use_cache,
        )
        return self._observed(find, call_id) if self.observers else find

    async def _observed(
        self, find: Coroutine[Any, Any, FindServiceResult], call_id: str | None
    ) -> FindServiceResult:
        """Await `find`, then report it to every observer (an observer never breaks a call)."""
        ts, mono, queries = time.time(), time.perf_counter(), self.queries
        ok, result = False, None
        exchange: list[bytes] = []
        token = _EXCHANGE.set(exchange)  # `find` runs in this task: `request` fills it
        try:
            res = await find
            ok, result = True, res.sip_uri or (res.uris[0] if res.uris else None)
            return res
        except Exception as exc:
            result = getattr(exc, "kind", None) or type(exc).__name__
            raise
        finally:
            _EXCHANGE.reset(token)
            sent, got = exchange if exchange else (b"", b"")
            ev = LostQueryEvent(
                ts=ts,
                mono=mono,
                duration=time.perf_counter() - mono,
                element=self.element,
                url=self.url,
                transport="https" if self.url.startswith("https:") else "http",
                ok=ok,
                call_id=call_id,
                result=result,
                server=self.server,
                cached=self.queries == queries,
                request_bytes=len(sent),
                response_bytes=len(got),
                request=sent[:MAX_XML],
                response=got[:MAX_XML],
            )
            for obs in list(self.observers):
                try:
                    obs(ev)
                except Exception:
                    pass

    async def _find_service(
        self,
        location: Shape | CivicAddress,
        service: str,
        call_id: str | None,
        incident_id: str | None,
        location_id: str,
        use_cache: bool,
    ) -> FindServiceResult:
        now = time.time()
        if use_cache:
            hit = self._from_cache(service, location, now)
            if hit is not None:
                return hit
        profile = PROFILE_CIVIC if isinstance(location, CivicAddress) else PROFILE_GEODETIC
        req = FindServiceRequest(
            locations=(LostLocation(location_id, profile, location),),
            service=service,
            recursive=self.recursive,
            service_boundary=self.boundary,
            call_id=call_id,
            incident_id=incident_id,
        )
        start = time.perf_counter()
        url = self.url
        asked = {url}
        for _ in range(self.max_redirects + 1):
            resp = await self.request(req, url)
            if isinstance(resp, Redirect):
                nxt = resp.target
                if not nxt.startswith(("http://", "https://")) or nxt in asked:
                    raise LostResponseError(
                        "redirect", f"cannot follow redirect to {nxt}", source=resp.source
                    )
                asked.add(nxt)
                url = nxt
                continue
            break
        else:
            raise LostResponseError("redirect", "too many redirects")
        if isinstance(resp, LostErrorResponse):
            cls = LostNotFound if resp.kind == "notFound" else LostResponseError
            raise cls(resp.kind, resp.message or "", source=resp.source)
        if not isinstance(resp, FindServiceResponse):
            raise LostClientError("protocol", f"unexpected answer {type(resp).__name__}")
        mapping = resp.mappings[0]
        result = FindServiceResult(mapping.uris, mapping, time.perf_counter() - start, False, resp)
        if use_cache:
            self._store(service, location, result, now)
        return result


#: findServiceResponse bodies kept parsed, by their exact bytes (module docstring, "Parsing")
PARSED_MAX: Final = 128
#: larger bodies (a boundary by value, ~100 KB) are parsed each time and never kept
PARSED_MAX_BYTES: Final = 8192

#: `HttpClientError.kind` -> `LostClientError.kind` (anything else is "unreachable").
_KINDS = {"timeout": "timeout", "protocol": "protocol", "too_large": "protocol"}


def _resolve(base: str, location: str) -> str:
    """A `Location` header as an absolute URL (RFC 9110 §10.2.2: it may be relative)."""
    try:
        return urljoin(base, location.strip())
    except ValueError:  # a malformed URL: left as sent, and refused as a target
        return location


def _cached(r: FindServiceResult) -> FindServiceResult:
    return FindServiceResult(r.uris, r.mapping, 0.0, True, r.response)
