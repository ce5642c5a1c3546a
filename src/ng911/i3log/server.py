"""The i3 Logging Service over HTTP(S): an aiohttp application around a `LogStore`.

The interface is NENA-STA-010.3 §4.12's (NENA's loggingservice.yaml):

- `POST /LogEvents`, body a JWS in flattened JSON serialisation (`ng911.i3log.jws`): the
  signature and the signer's x5c chain are verified, the payload checked as a LogEvent
  (`events.parse_payload`), the JWS stored as received. 201 with `{"id": ID, "logEventId":
  ID}` and `Location: /LogEvents/ID` (i3's own answer is the bare logEventId; the object
  carries it under both names). A refusal is HTTP 400 with an i3-style JSON body
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

Connections are held to the LoST server's limits (`ng911.lost.limits`: head and body
deadlines, idle timeout, connection caps) through the same middleware and `serve`. Mutual
TLS: pass a server context with `CERT_REQUIRED` (`ng911.pki.tls.server_context(...,
require_client_cert=True)`), as for LoST.
"""

from __future__ import annotations

import json
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from ng911.i3log.errors import BadLogEvent, I3LogError
from ng911.i3log.events import parse_payload, parse_rfc3339
from ng911.i3log.jws import MAX_PAYLOAD, Verifier
from ng911.i3log.store import LogStore, Query, StoredEvent
from ng911.lost.limits import HttpLimits
from ng911.lost.server import RunningServer, request_limits, serve
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
    """One JSON log line per notable event (the LoST server's `lost.*` names become
    `logger.*`)."""
    if log.isEnabledFor(logging.INFO):
        name = "logger." + event.split(".", 1)[-1]
        log.info(json.dumps({"event": name, "element": "logger", **fields}, default=str))


_I3 = {
    400: (454, "Unspecified Error"),
    408: (454, "Request Timeout"),
    413: (461, "LogEvent too big"),
}


def _error(
    status: int, code: int, reason: str, detail: str, *, close: bool = False
) -> web.Response:
    body = {"code": code, "reason": reason, "detail": clean(detail)}
    resp = web.json_response(body, status=status)
    if close:
        resp.force_close()
    return resp


def _refuse(status: int, text: str) -> web.Response:
    """The middleware's 408/413/400, as i3-style JSON (connection closed)."""
    code, reason = _I3.get(status, (454, "Unspecified Error"))
    return _error(status, code, reason, text.strip(), close=True)


def _i3_error(exc: I3LogError) -> web.Response:
    return _error(400, exc.code, exc.reason, exc.detail)


class _BadParameter(I3LogError):
    """A retrieval parameter we cannot use (i3 465/466 for times, else 454)."""

    def __init__(self, detail: str, code: int = 454, reason: str = "Unspecified Error") -> None:
        super().__init__(detail)
        self.code, self.reason = code, reason


class LoggingServer:
    """The application (`app`) with its store, verifier and counters."""

    def __init__(
        self, store: LogStore, verifier: Verifier, config: LoggingServerConfig | None = None
    ) -> None:
        self.store = store
        self.verifier = verifier
        self.config = config or LoggingServerConfig()
        self.stored = 0
        self.refused: dict[int, int] = {}  # i3 code -> count
        mw = request_limits(self.config.max_body, self.config.limits, refuse=_refuse, event=_event)
        self.app = web.Application(client_max_size=self.config.max_body, middlewares=[mw])
        self.app.router.add_post("/LogEvents", self.post)
        self.app.router.add_get("/LogEvents", self.list_events)
        self.app.router.add_get("/LogEvents/{id}", self.get_event)
        self.app.router.add_get("/LogEventIds", self.list_ids)
        self.app.router.add_get("/Versions", self.versions)

    def _refused(self, exc: I3LogError, request: web.Request) -> web.Response:
        self.refused[exc.code] = self.refused.get(exc.code, 0) + 1
        _event("logger.refused", code=exc.code, reason=exc.detail, peer=request.remote)
        return _i3_error(exc)

    async def post(self, request: web.Request) -> web.Response:
        ctype = request.headers.get("Content-Type")
        if ctype is not None and request.content_type not in JSON_TYPES:
            return _error(415, 460, "Bad LogEvent", f"want application/json, got {ctype}")
        data = await request.read()
        try:
            text = data.decode("utf-8")
            verified = self.verifier.verify(text)
            indexed = parse_payload(verified.payload)
        except UnicodeDecodeError:
            return self._refused(BadLogEvent("body is not UTF-8"), request)
        except I3LogError as exc:
            return self._refused(exc, request)
        try:
            event_id = await self.store.add(indexed, text)
        except Exception as exc:  # a store failing is our fault, said as such
            log.exception(json.dumps({"event": "logger.store_error", "error": repr(exc)}))
            return _error(500, 454, "Unspecified Error", f"store: {type(exc).__name__}")
        self.stored += 1
        return web.json_response(
            {"id": event_id, "logEventId": event_id},
            status=201,
            headers={"Location": f"/LogEvents/{event_id}"},
        )

    async def get_event(self, request: web.Request) -> web.Response:
        event_id = request.match_info["id"]
        row = await self.store.get(event_id) if len(event_id) <= 64 else None
        if row is None:
            return _error(404, 454, "Not Found", f"no LogEvent {event_id[:64]!r}")
        return web.Response(text=row.jws, content_type="application/json")

    def _query(self, request: web.Request) -> Query:
        params = request.query
        unknown = sorted(set(params) - _PARAMS)
        if unknown:
            raise _BadParameter(f"unknown parameter(s) {', '.join(unknown)[:200]}")
        for name in params:
            if len(params.getall(name)) > 1:
                raise _BadParameter(f"parameter {name} given more than once")
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
        self, request: web.Request, key: str, item: Callable[[StoredEvent], Any]
    ) -> web.Response:
        """One page of the stored LogEvents the query names, i3's `{count, totalCount, key:
        [...]}` with `item(row)` for each."""
        try:
            q = self._query(request)
        except I3LogError as exc:
            return _i3_error(exc)
        rows, total = await self.store.query(q)
        return web.json_response(
            {"count": len(rows), "totalCount": total, key: [item(r) for r in rows]}
        )

    async def list_events(self, request: web.Request) -> web.Response:
        return await self._page(
            request,
            "logEventContainers",
            lambda r: {"logEventId": r.id, "logEvent": json.loads(r.jws)},
        )

    async def list_ids(self, request: web.Request) -> web.Response:
        return await self._page(request, "logEventIds", lambda r: r.id)

    async def versions(self, _request: web.Request) -> web.Response:
        return web.json_response({"versions": [{"major": 1, "minor": 1}]})


async def serve_logging(
    server: LoggingServer,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    ssl_context: ssl.SSLContext | None = None,
) -> RunningServer:
    """Start the Logging Service; `RunningServer.url` is its base URL (".../")."""
    return await serve(
        server.app, host, port, ssl_context=ssl_context, limits=server.config.limits, path="/"
    )
