"""The i3 Logging Service over HTTP(S): a `ng911.net.http1` handler around a `LogStore`.

The interface is NENA-STA-010.3 §4.12's (NENA's loggingservice.yaml):

- `POST /LogEvents`, body a JWS in flattened JSON serialisation (`ng911.i3log.jws`): the
  signature and the signer's x5c chain are verified, the payload checked as a LogEvent
  (`events.parse_payload`), the JWS stored as received. 201 with `{"id": ID, "logEventId":
  ID}` and `Location: /LogEvents/ID` (i3's own answer is the bare logEventId; the object
  carries it under both names). The id is named by the JWS text (`store.event_id_for`):
  a POST repeated byte for byte (a sender's retry after an answer it never got) is stored
  once and answered with the same id. A refusal is HTTP 400 with an i3-style JSON body
  `{"code", "reason", "detail"}`, `code` being i3's status (434 Signature Verification
  Failure, 438 Unacceptable Algorithm, 460 Bad LogEvent); a body beyond `max_body` is 413
  (code 461 LogEvent too big). i3 lists those codes as HTTP statuses; we answer 400/413 so
  that any HTTP client sees a client error, and keep i3's code in the body.
- `GET /LogEvents/{id}`: the JWS exactly as stored (404 when unknown).
- `GET /LogEvents?...`: i3's LogEventContainerArray `{count, totalCount,
  logEventContainers: [{logEventId, logEvent}]}`, filtered by `callId`, `incidentId`,
  `callIdSip`, `elementId`, `logEventType`, `startTime`/`endTime` (RFC 3339, inclusive),
  paged by `limit` (1..`max_page`, default `page_size`) and `start` (1-based ordinal, i3's
  meaning). `start`/`end` given as RFC 3339 date-times are taken as startTime/endTime.
  Unknown parameters and bad values are 400 with the reason (i3 465 Bad Timestamp, 466
  endTime before startTime).
- `GET /LogEventIds?callId=|incidentId=`: `{count, totalCount, logEventIds}` (i3).
- `GET /Versions`: `{"versions": [{"major": 1, "minor": 1}]}`.

It runs on ng911's own HTTP/1.1 server, as the LoST server does (`ng911.net.http1.serve_http`):
head and body deadlines, idle timeout, connection caps in total and per source
(`LoggingServerConfig.limits`), 413 before reading a declared body beyond `max_body`; the
answers that server makes itself (408, 413, 400) carry the same i3-style JSON body, and its
refusals and timeouts are `logger.*` log lines. Mutual TLS: pass a server context with
`CERT_REQUIRED` (`ng911.pki.tls.server_context(..., require_client_cert=True)`), as for LoST.
"""

from __future__ import annotations

import json
import logging
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote

from ng911.i3log.errors import BadLogEvent, I3LogError
from ng911.i3log.events import IndexedEvent, parse_payload, parse_rfc3339
from ng911.i3log.jws import MAX_PAYLOAD, Verifier
from ng911.i3log.store import LogStore, Query, StoredEvent
from ng911.net.http1 import HttpLimits, Request, Response, RunningServer, serve_http
from ng911.net.log import clean

__all__ = ["LoggingServer", "LoggingServerConfig", "serve_logging"]

log = logging.getLogger("ng911.i3log.server")

# i3 POSTs application/json; RFC 7515 §9.2 registers application/jose+json; HTTP libraries
# label bytes and strings of unstated type octet-stream or text/plain
JSON_TYPES = frozenset(
    {"application/json", "application/jose+json", "application/octet-stream", "text/plain"}
)
_FILTERS = {
    "callId": "call_id",
    "incidentId": "incident_id",
    "callIdSip": "call_id_sip",
    "elementId": "element_id",
    "logEventType": "log_event_type",
}
_PARAMS = frozenset({*_FILTERS, "startTime", "endTime", "start", "end", "limit"})


@dataclass
class LoggingServerConfig:
    # a CallSignalingMessageLogEvent carries a whole SIP message (a few KB, a large
    # PIDF-LO or SDP more) plus the x5c chain; 256 KB leaves room
    max_body: int = MAX_PAYLOAD
    limits: HttpLimits = field(default_factory=lambda: HttpLimits(idle_timeout=60.0))
    page_size: int = 100  # GET without `limit`
    max_page: int = 1000  # the most a GET returns at once


def _event(event: str, **fields: object) -> None:
    """One JSON log line per notable event (`logger.*`; the HTTP server's are named with
    the "logger" prefix too); a malformed request is a warning."""
    level = logging.WARNING if event.endswith(".bad_request") else logging.INFO
    if log.isEnabledFor(level):
        line = {"event": event, "element": "logger", **fields}
        log.log(level, json.dumps(line, default=str))


_I3 = {
    400: (454, "Unspecified Error"),
    408: (454, "Request Timeout"),
    413: (461, "LogEvent too big"),
}


_JSON = (("Content-Type", "application/json; charset=utf-8"),)


def _json(status: int, obj: object, headers: Sequence[tuple[str, str]] = ()) -> Response:
    return Response(status, json.dumps(obj).encode(), (*_JSON, *headers))


def _error(status: int, code: int, reason: str, detail: str) -> Response:
    return _json(status, {"code": code, "reason": reason, "detail": clean(detail)})


def _refuse(status: int, text: str) -> Response:
    """The HTTP server's own 408/413/400/431, as i3-style JSON (it closes the connection)."""
    code, reason = _I3.get(status, (454, "Unspecified Error"))
    return _error(status, code, reason, text.strip())


def _i3_error(exc: I3LogError) -> Response:
    return _error(400, exc.code, exc.reason, exc.detail)


def _internal_error(exc: BaseException) -> Response:
    """A bug below the handlers' own guards: i3's 454 as JSON, logged with its traceback."""
    log.error(json.dumps({"event": "logger.internal_error", "error": repr(exc)}), exc_info=exc)
    resp = _error(500, 454, "Unspecified Error", type(exc).__name__)
    resp.close = True
    return resp


_METHOD_NOT_ALLOWED = b'{"code": 454, "reason": "Method Not Allowed", "detail": ""}'


class _BadParameter(I3LogError):
    """A retrieval parameter we cannot use (i3 465/466 for times, else 454)."""

    def __init__(self, detail: str, code: int = 454, reason: str = "Unspecified Error") -> None:
        super().__init__(detail)
        self.code, self.reason = code, reason


class LoggingServer:
    """The handler (`handle`, for `ng911.net.http1`) with its store, verifier and counters."""

    def __init__(
        self, store: LogStore, verifier: Verifier, config: LoggingServerConfig | None = None
    ) -> None:
        self.store = store
        self.verifier = verifier
        self.config = config or LoggingServerConfig()
        self.stored = 0
        self.refused: dict[int, int] = {}  # i3 code -> count

    def handle(self, request: Request) -> Response | Awaitable[Response]:
        """Route by path and method (405 with `Allow` for a known path, else 404)."""
        path, method = request.path, request.method
        if path == "/LogEvents":
            if method == "POST":
                return self.post(request)
            if method == "GET":
                return self._page(request, "logEventContainers", _container)
            return _not_allowed("GET, POST")
        if path.startswith("/LogEvents/") and path.count("/") == 2:
            if method != "GET":
                return _not_allowed("GET")
            return self.get_event(unquote(path[len("/LogEvents/") :]))
        if path == "/LogEventIds":
            if method != "GET":
                return _not_allowed("GET")
            return self._page(request, "logEventIds", _event_id)
        if path == "/Versions":
            if method != "GET":
                return _not_allowed("GET")
            return _json(200, {"versions": [{"major": 1, "minor": 1}]})
        return _error(404, 454, "Not Found", f"no resource {path[:64]!r}")

    def _refused(self, exc: I3LogError, request: Request) -> Response:
        self.refused[exc.code] = self.refused.get(exc.code, 0) + 1
        _event("logger.refused", code=exc.code, reason=exc.detail, peer=request.remote)
        return _i3_error(exc)

    def post(self, request: Request) -> Response | Awaitable[Response]:
        """Verify and check synchronously; only the store is awaited."""
        ctype = request.headers.get("content-type")
        if ctype is not None and request.content_type not in JSON_TYPES:
            return _error(415, 460, "Bad LogEvent", f"want application/json, got {ctype}")
        try:
            text = request.body.decode("utf-8")
            verified = self.verifier.verify(text)
            indexed = parse_payload(verified.payload)
        except UnicodeDecodeError:
            return self._refused(BadLogEvent("body is not UTF-8"), request)
        except I3LogError as exc:
            return self._refused(exc, request)
        return self._store(indexed, text)

    async def _store(self, indexed: IndexedEvent, text: str) -> Response:
        try:
            event_id = await self.store.add(indexed, text)
        except Exception as exc:  # a store failing is our fault, said as such
            log.exception(json.dumps({"event": "logger.store_error", "error": repr(exc)}))
            return _error(500, 454, "Unspecified Error", f"store: {type(exc).__name__}")
        self.stored += 1
        return _json(
            201, {"id": event_id, "logEventId": event_id}, (("Location", f"/LogEvents/{event_id}"),)
        )

    async def get_event(self, event_id: str) -> Response:
        row = await self.store.get(event_id) if len(event_id) <= 64 else None
        if row is None:
            return _error(404, 454, "Not Found", f"no LogEvent {event_id[:64]!r}")
        return Response(200, row.jws.encode(), _JSON)

    def _query(self, request: Request) -> Query:
        try:
            given = parse_qs(
                request.query, keep_blank_values=True, errors="strict", max_num_fields=32
            )
        except ValueError as exc:  # not UTF-8 (UnicodeDecodeError), too many fields
            raise _BadParameter(f"bad query string: {type(exc).__name__}") from None
        unknown = sorted(set(given) - _PARAMS)
        if unknown:
            raise _BadParameter(f"unknown parameter(s) {', '.join(unknown)[:200]}")
        for name, values in given.items():
            if len(values) > 1:
                raise _BadParameter(f"parameter {name} given more than once")
        params = {name: values[0] for name, values in given.items()}
        kw: dict[str, Any] = {col: params[p] for p, col in _FILTERS.items() if p in params}
        start_time, end_time = params.get("startTime"), params.get("endTime")
        offset = 0
        start = params.get("start")
        if start is not None:
            if start.isdigit():
                offset = int(start) - 1
                if offset < 0:
                    raise _BadParameter("start is 1-based (the first item is 1)")
            elif start_time is None:
                start_time = start
            else:
                raise _BadParameter("start is a date-time and startTime is given too")
        end_time = end_time if end_time is not None else params.get("end")
        for key, value in (("start", start_time), ("end", end_time)):
            if value is not None:
                try:
                    kw[key] = parse_rfc3339(value).timestamp()
                except ValueError as exc:
                    raise _BadParameter(str(exc), 465, "Bad Timestamp") from None
        if "start" in kw and "end" in kw and kw["end"] < kw["start"]:
            raise _BadParameter("endTime occurs before startTime", 466, "Bad Timestamp")
        limit = self.config.page_size
        if "limit" in params:
            raw = params["limit"]
            if not raw.isdigit() or not 1 <= int(raw) <= self.config.max_page:
                raise _BadParameter(f"limit must be an integer from 1 to {self.config.max_page}")
            limit = int(raw)
        return Query(limit=limit, offset=offset, **kw)

    async def _page(
        self, request: Request, key: str, item: Callable[[StoredEvent], Any]
    ) -> Response:
        """One page of the stored LogEvents the query names, i3's `{count, totalCount, key:
        [...]}` with `item(row)` for each."""
        try:
            q = self._query(request)
        except I3LogError as exc:
            return _i3_error(exc)
        rows, total = await self.store.query(q)
        return _json(200, {"count": len(rows), "totalCount": total, key: [item(r) for r in rows]})


def _container(row: StoredEvent) -> dict[str, Any]:
    return {"logEventId": row.id, "logEvent": json.loads(row.jws)}


def _event_id(row: StoredEvent) -> str:
    return row.id


def _not_allowed(allow: str) -> Response:
    return Response(405, _METHOD_NOT_ALLOWED, (*_JSON, ("Allow", allow)))


async def serve_logging(
    server: LoggingServer,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    ssl_context: ssl.SSLContext | None = None,
    cleanup: Callable[[], Awaitable[None]] | None = None,
) -> RunningServer:
    """Start the Logging Service; `RunningServer.url` is its base URL (".../"). Closing it
    answers the requests in progress, then awaits `cleanup` (`ng911.node.serve` closes the
    store there)."""
    return await serve_http(
        server.handle,
        host,
        port,
        ssl_context=ssl_context,
        limits=server.config.limits,
        max_body=server.config.max_body,
        event=_event,
        prefix="logger",
        internal_error=_internal_error,
        refuse=_refuse,
        cleanup=cleanup,
    )
