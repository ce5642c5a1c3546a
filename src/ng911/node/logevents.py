"""An element's observations → i3 LogEvents (NENA-STA-010.3 §4.12.3), for its `LogSender`.

Three inputs, all observers the element already has, so the element itself knows nothing of
the Logging Service (`elements/` never imports `ng911.i3log`):

- its transport's `MessageEvent`s (`SipTransportLayer.observers`): every SIP message in and
  out becomes a CallSignalingMessageLogEvent (the whole text, `protocol` "sip", direction);
  the first INVITE of a SIP Call-ID at this element a CallStartLogEvent; a BYE, or a final
  failure (>= 300) of the INVITE sent upstream (or received, by the element that placed the
  call), a CallEndLogEvent. OPTIONS and REGISTER (keep-alives, registrations) are not call
  signalling and are left out.
- its `LostClient`'s `LostQueryEvent`s: a LostQueryLogEvent (outgoing) and a
  LostResponseLogEvent (incoming) sharing `queryId` = `responseId`. The client reports no
  XML, so `queryAdapter`/`responseAdapter` carry a one-line summary; `responseStatus` is
  "ok" or the client's error kind ("timeout", "unreachable", "http", "protocol", a LoST
  error such as "notFound"); a "protocol" answer (not LoST) sets `malformedResponse`. An
  answer from the client's cache asked nobody: no LogEvent.
- a LoST server's `LostServedEvent`s (`lost.server.ServerConfig.observers`, the ECRF's own
  log): a LostQueryLogEvent (incoming, `queryAdapter` the query's XML) and a
  LostResponseLogEvent (outgoing, `responseAdapter` the answer's XML) sharing `queryId` =
  `responseId`, each XML cut at `MAX_ADAPTER` characters, `callId`/`incidentId` those the
  query carries (i3 emergencyCallIncidentId); `responseStatus` "ok", a LoST
  error kind, "redirect" or "http <status>"; a query the server could not read
  (`badRequest`, HTTP 415) sets `malformedQuery` to the server's reason.
- its `EventLog` records (`EventLog.sinks`): "route" → RouteLogEvent (`recipient`, `rule`,
  `policy_owner`, `policy_type`, `reason`; without them, the ESRP's `plan[0]` and `outcome`),
  "service_state" → ServiceStateChangeLogEvent (`state`, `reason`, `service`); psapd's
  "call_answered" → CallStateChangeLogEvent (state "callAnswered", `agencyAgentId` the call
  taker's AOR, the wait in `changeReason`), its "agent_state" (a call taker registered,
  unregistered or unreachable) → AgentStateChangeLogEvent (`primaryAgentState` Available |
  NotAvailable, `agencyAgentId`). psapd's other call records (queued, offers, call_log)
  stay in its log: the SIP messages already give CallStart/CallEnd.

`callId`/`incidentId` are the NENA emergency identifiers, read from Call-Info of the SIP
messages (`elements.identifiers.extract_ids`) and remembered per SIP Call-ID. The first
element of the ESInet mints them (the ESRP), so its incoming INVITE has none yet: LogEvents
of a SIP Call-ID whose identifiers are unknown are held (up to `hold` seconds, at most
`max_held` per call) and stamped when the identifiers appear; an element that never learns
them (the VSP upstream of the ESRP) sends them after `hold` with `callIdSip` only.

All of this runs in the sender's background task (`LogSender.mapper`): the observers only
queue what they are given.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import uuid
from typing import Any

from ng911.elements.identifiers import extract_ids
from ng911.i3log.events import (
    AgentStateChangeLogEvent,
    CallEndLogEvent,
    CallSignalingMessageLogEvent,
    CallStartLogEvent,
    CallStateChangeLogEvent,
    LogEvent,
    LostQueryLogEvent,
    LostResponseLogEvent,
    RouteLogEvent,
    ServiceStateChangeLogEvent,
    rfc3339,
)
from ng911.i3log.sender import LogSender
from ng911.lost.errors import LostProtocolError
from ng911.lost.events import LostQueryEvent, LostServedEvent
from ng911.lost.fast_request import parse_request_fast
from ng911.lost.protocol import FindServiceRequest, LostErrorResponse, Redirect, parse_response
from ng911.net.events import MessageEvent
from ng911.sip.message import Request, Response
from ng911.sip.parse import parse_message

__all__ = ["MAX_ADAPTER", "RECORDS", "SKIPPED_METHODS", "LogEventMapper"]

#: EventLog `what` names that become LogEvents (the others stay in the element's log).
RECORDS = frozenset({"route", "service_state", "call_answered", "agent_state"})
#: SIP methods (of requests, and of the CSeq of responses) that are not call signalling.
SKIPPED_METHODS = frozenset({"OPTIONS", "REGISTER"})
MAX_CALLS = 10_000  # SIP Call-IDs remembered (identifiers, started, ended)
#: characters of LoST XML a served query's LogEvents carry (a findService is < 2 KB; the
#: server reads up to 64 KB): the rest is cut, the cut said
MAX_ADAPTER = 16 * 1024


@dataclasses.dataclass(slots=True)
class _Call:
    call_id: str | None = None  # emergency CallId URN
    incident_id: str | None = None
    started: bool = False
    ended: bool = False
    outgoing: bool = False  # this element placed the call (its first INVITE went out)
    held: list[LogEvent] = dataclasses.field(default_factory=list)
    timer: asyncio.TimerHandle | None = None


class LogEventMapper:
    """Maps one element's observations to LogEvents and emits them through `sender`."""

    def __init__(
        self,
        sender: LogSender,
        element_id: str,
        agency_id: str,
        *,
        hold: float = 2.0,
        max_held: int = 64,
    ) -> None:
        self.sender = sender
        self.element_id = element_id
        self.agency_id = agency_id
        self.hold = hold
        self.max_held = max_held
        self.calls: collections.OrderedDict[str, _Call] = collections.OrderedDict()
        sender.mapper = self

    # -- the observers' side: queue only ---------------------------------------------------

    def observe(self, event: Any) -> None:
        """A transport or LoST client observer: SIP messages and LoST queries are queued."""
        if isinstance(event, MessageEvent | LostQueryEvent | LostServedEvent):
            self.sender.submit(event)

    def record(self, rec: dict[str, Any]) -> None:
        """An `EventLog` sink: the records that map to LogEvents are queued."""
        if rec.get("what") in RECORDS:
            self.sender.submit(rec)

    # -- the sender's background task: map -------------------------------------------------

    def map(self, item: Any) -> None:
        if isinstance(item, MessageEvent):
            self._message(item)
        elif isinstance(item, LostQueryEvent):
            self._lost(item)
        elif isinstance(item, LostServedEvent):
            self._served(item)
        elif isinstance(item, dict):
            self._record(item)

    def flush(self) -> None:
        """Emit everything held (at close)."""
        for sip_cid in list(self.calls):
            self._release(sip_cid)

    def _common(self, ts: float, sip_cid: str | None = None) -> dict[str, Any]:
        return {
            "timestamp": rfc3339(ts),
            "element_id": self.element_id,
            "agency_id": self.agency_id,
            "call_id_sip": sip_cid,
        }

    def _call(self, sip_cid: str) -> _Call:
        call = self.calls.get(sip_cid)
        if call is None:
            call = self.calls[sip_cid] = _Call()
            while len(self.calls) > MAX_CALLS:
                old_cid, _old = next(iter(self.calls.items()))
                self._release(old_cid)
                self.calls.pop(old_cid, None)
        return call

    def _emit(self, sip_cid: str | None, event: LogEvent) -> None:
        """Send `event` now if its call's identifiers are known, else hold it."""
        if sip_cid is None:
            self.sender.emit(event)
            return
        call = self._call(sip_cid)
        if call.call_id is not None:
            self.sender.emit(
                dataclasses.replace(event, call_id=call.call_id, incident_id=call.incident_id)
            )
            return
        if len(call.held) >= self.max_held:
            self.sender.emit(event)
            return
        call.held.append(event)
        if call.timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return
            call.timer = loop.call_later(self.hold, self._release, sip_cid)

    def _release(self, sip_cid: str) -> None:
        call = self.calls.get(sip_cid)
        if call is None:
            return
        if call.timer is not None:
            call.timer.cancel()
            call.timer = None
        held, call.held = call.held, []
        for ev in held:
            if call.call_id is not None:
                ev = dataclasses.replace(ev, call_id=call.call_id, incident_id=call.incident_id)
            self.sender.emit(ev)

    def _learn(self, sip_cid: str, call_id: str | None, incident_id: str | None) -> None:
        call = self._call(sip_cid)
        if call.call_id is None and call_id:
            call.call_id, call.incident_id = call_id, incident_id
            self._release(sip_cid)

    def _message(self, ev: MessageEvent) -> None:
        data = bytes(ev.data)
        try:
            msg: Request | Response | None = parse_message(data)
        except Exception:  # a hostile message still gets its LogEvent, text only
            msg = None
        method = cseq_method = None
        status = 0
        sip_cid = ev.call_id
        ids = None
        if msg is not None:
            try:
                sip_cid = sip_cid or msg.call_id
                cseq_method = msg.cseq.method.upper()
                ids = extract_ids(msg)
            except Exception:
                pass
            if isinstance(msg, Request):
                method = msg.method.upper()
            else:
                status = msg.status
        if (method or cseq_method) in SKIPPED_METHODS:
            return
        direction = "incoming" if ev.direction == "in" else "outgoing"
        common = self._common(ev.ts, sip_cid)
        common["ip_address_port"] = f"{ev.remote[0]}:{ev.remote[1]}"
        if sip_cid is not None and ids is not None and ids.call_id:
            self._learn(sip_cid, ids.call_id, ids.incident_id)
        if sip_cid is not None and msg is not None:
            self._call_events(sip_cid, msg, method, status, cseq_method, direction, common)
        self._emit(
            sip_cid,
            CallSignalingMessageLogEvent(
                **common,
                text=data.decode("utf-8", "replace"),
                direction=direction,
                protocol="sip",
            ),
        )

    def _call_events(
        self,
        sip_cid: str,
        msg: Request | Response,
        method: str | None,
        status: int,
        cseq_method: str | None,
        direction: str,
        common: dict[str, Any],
    ) -> None:
        call = self._call(sip_cid)
        ends = False
        if method == "INVITE" and not call.started:
            call.started = True
            call.outgoing = direction == "outgoing"
            to, frm = _parties(msg)
            self._emit(sip_cid, CallStartLogEvent(**common, direction=direction, to=to, from_=frm))
        elif method == "BYE":
            ends = True
        elif status >= 300 and cseq_method == "INVITE":
            # a proxy's failure is the one it sends upstream (a failed branch may be retried
            # elsewhere); the caller's is the one it receives
            ends = direction == "outgoing" or call.outgoing
        if ends and call.started and not call.ended:
            call.ended = True
            ext = {"cause": "BYE" if method == "BYE" else str(status)}
            to, frm = _parties(msg)
            end = CallEndLogEvent(**common, direction=direction, extension=ext, to=to, from_=frm)
            self._emit(sip_cid, end)

    def _lost(self, ev: LostQueryEvent) -> None:
        if ev.cached:
            return
        common = self._common(ev.ts)
        common["call_id"] = ev.call_id
        common["ip_address_port"] = ev.url
        status = "ok" if ev.ok else (ev.result or "error")
        answer = f"{status}: {ev.result}" if ev.ok else f"no mapping: {status}"
        query = {"query_adapter": f"findService from {ev.element} to {ev.url} ({ev.transport})"}
        response = {
            "response_adapter": answer,
            "response_status": status,
            "malformed_response": answer if status == "protocol" else None,
        }
        self._lost_pair(common, ev.ts + ev.duration, "outgoing", query, response)

    def _served(self, ev: LostServedEvent) -> None:
        """The ECRF's side of one LoST exchange: the query in, the answer out."""
        status, malformed = _served_status(ev)
        common = self._common(ev.ts)
        common["ip_address_port"] = ev.peer
        common["call_id"], common["incident_id"] = _query_ids(ev.request)
        query = {"query_adapter": _xml(ev.request), "malformed_query": malformed}
        response = {"response_adapter": _xml(ev.response), "response_status": status}
        self._lost_pair(common, ev.ts + ev.duration, "incoming", query, response)

    def _lost_pair(
        self,
        common: dict[str, Any],
        answered: float,
        query_direction: str,
        query: dict[str, Any],
        response: dict[str, Any],
    ) -> None:
        """A LostQuery and its LostResponse (`queryId` = `responseId`, opposite directions;
        the response stamped when the answer came)."""
        query_id = uuid.uuid4().hex
        back = "incoming" if query_direction == "outgoing" else "outgoing"
        self.sender.emit(
            LostQueryLogEvent(**common, **query, direction=query_direction, query_id=query_id)
        )
        common = {**common, "timestamp": rfc3339(answered)}
        self.sender.emit(
            LostResponseLogEvent(**common, **response, direction=back, response_id=query_id)
        )

    def _record(self, rec: dict[str, Any]) -> None:
        ts = float(rec.get("ts") or 0.0)
        sip_cid = rec.get("call_id")
        common = self._common(ts, sip_cid)
        what = rec.get("what")
        if what == "route":
            ids = rec.get("ids") or [None, None]
            if sip_cid and isinstance(ids, list | tuple) and len(ids) == 2 and ids[0]:
                self._learn(sip_cid, ids[0], ids[1])
            plan = rec.get("plan") or []
            recipient = rec.get("recipient") or (plan[0] if plan else "")
            ext: dict[str, Any] = {
                k: rec[k] for k in ("outcome", "plan", "lost_ms", "notes") if k in rec
            }
            self._emit(
                sip_cid,
                RouteLogEvent(
                    **common,
                    recipient_uri=str(recipient),
                    rule_id=str(rec.get("rule") or rec.get("outcome") or ""),
                    policy_owner=str(rec.get("policy_owner") or self.agency_id),
                    policy_type=str(rec.get("policy_type") or "OriginationPolicy"),
                    policy_queue_name=_text(rec.get("queue")),
                    cause=_text(rec.get("reason")),
                    extension=ext or None,
                ),
            )
        elif what == "call_answered":
            taker = _text(rec.get("taker"))
            wait = rec.get("wait_s")
            self._emit(
                sip_cid,
                CallStateChangeLogEvent(
                    **common,
                    state="callAnswered",
                    direction="incoming",
                    agency_agent_id=taker,
                    change_reason=f"answered by {taker} after {wait} s in the PSAP",
                ),
            )
        elif what == "agent_state":
            reason = _text(rec.get("reason"))
            self._emit(
                None,
                AgentStateChangeLogEvent(
                    **common,
                    primary_agent_state=str(rec.get("state") or ""),
                    agency_agent_id=_text(rec.get("taker")),
                    extension={"reason": reason} if reason else None,
                ),
            )
        elif what == "service_state":
            reason = _text(rec.get("reason"))
            self._emit(
                None,
                ServiceStateChangeLogEvent(
                    **common,
                    new_state=str(rec.get("state") or ""),
                    affected_service_identifier=str(rec.get("service") or self.element_id),
                    direction="outgoing",
                    extension={"reason": reason} if reason else None,
                ),
            )


def _xml(data: bytes) -> str:
    """LoST XML as a LogEvent member: text, at most `MAX_ADAPTER` characters."""
    text = data.decode("utf-8", "replace")
    if len(text) <= MAX_ADAPTER:
        return text
    return f"{text[:MAX_ADAPTER]}... [{len(text) - MAX_ADAPTER} characters cut]"


def _query_ids(data: bytes) -> tuple[str | None, str | None]:
    """The i3 callId/incidentId a findService carries (emergencyCallIncidentId), if any."""
    try:
        req = parse_request_fast(data)
    except Exception:  # a malformed query: logged as such, without identifiers
        return None, None
    if isinstance(req, FindServiceRequest):
        return req.call_id, req.incident_id
    return None, None


def _served_status(ev: LostServedEvent) -> tuple[str, str | None]:
    """(responseStatus, malformedQuery) of an answer the server built itself."""
    try:
        answer = parse_response(ev.response)
    except LostProtocolError:
        answer = None
    malformed = None
    if isinstance(answer, LostErrorResponse) and answer.kind == "badRequest":
        malformed = answer.message or "badRequest"
    if ev.status != 200 and not isinstance(answer, Redirect):
        return f"http {ev.status}", malformed
    if isinstance(answer, LostErrorResponse):
        return answer.kind, malformed
    if isinstance(answer, Redirect):
        return "redirect", None
    return ("ok" if answer is not None else "unknown"), None


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _parties(msg: Request | Response) -> tuple[str | None, str | None]:
    """To and From header values (as received) of a message, for CallStart/CallEnd."""
    return msg.headers.get("To"), msg.headers.get("From")
