"""i3 LogEvents as frozen dataclasses, with the JSON members NENA-STA-010.3 §4.12.3 names.

Sans-I/O: objects in, JSON objects out (`to_json`), and the checks a Logging Service makes
of a received payload (`parse_payload`). Member names and `logEventType` values are those of
NENA's Logging Service OpenAPI (loggingservice.yaml, the machine-readable §4.12): the common
members (`logEventType`, `timestamp`, `elementId`, `agencyId` required; `callId`,
`incidentId`, `callIdSip`, `ipAddressPort`, `clientAssignedIdentifier`, `extension`
optional) and, per type, its own (`direction` is "incoming" | "outgoing").

Python names are snake_case; `camel` turns them into the JSON names (`from_` → `from`).
`extension` (an object, allowed by i3 on every LogEvent) carries what we know beyond i3's
members (e.g. the ESRP's route plan), so nothing we log is forced into a member it does not
mean.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from dataclasses import dataclass
from typing import Any, ClassVar

from ng911.i3log.errors import BadLogEvent

__all__ = [
    "DIRECTIONS",
    "I3_LOG_EVENT_TYPES",
    "AgentStateChangeLogEvent",
    "CallEndLogEvent",
    "CallSignalingMessageLogEvent",
    "CallStartLogEvent",
    "CallStateChangeLogEvent",
    "IndexedEvent",
    "LogEvent",
    "LostQueryLogEvent",
    "LostResponseLogEvent",
    "RouteLogEvent",
    "ServiceStateChangeLogEvent",
    "from_json",
    "parse_payload",
    "parse_rfc3339",
    "rfc3339",
]

DIRECTIONS = ("incoming", "outgoing")

#: Every logEventType of the i3 LogEventType enumeration (loggingservice.yaml). A Logging
#: Service accepts all of them (it stores what others log, not only what we produce);
#: anything else is a Bad LogEvent.
I3_LOG_EVENT_TYPES = frozenset(
    (
        "CallProcessLogEvent",
        "CallStartLogEvent",
        "CallEndLogEvent",
        "RecCallStartLogEvent",
        "RecCallEndLogEvent",
        "CallTransferLogEvent",
        "RouteLogEvent",
        "MediaStartLogEvent",
        "MediaEndLogEvent",
        "RecMediaStartLogEvent",
        "RecMediaEndLogEvent",
        "RecordingFailedLogEvent",
        "MessageLogEvent",
        "AdditionalAgencyLogEvent",
        "IncidentMergeLogEvent",
        "IncidentUnMergeLogEvent",
        "IncidentLinkLogEvent",
        "IncidentUnLinkLogEvent",
        "IncidentClearLogEvent",
        "IncidentReopenLogEvent",
        "LostQueryLogEvent",
        "LostResponseLogEvent",
        "CallSignalingMessageLogEvent",
        "SipRecMetadataLogEvent",
        "NonRtpMediaMessageLogEvent",
        "AliLocationQueryLogEvent",
        "AliLocationResponseLogEvent",
        "MalformedMessageLogEvent",
        "IncidentSplitLogEvent",
        "DiscrepancyReportLogEvent",
        "ElementStateChangeLogEvent",
        "ServiceStateChangeLogEvent",
        "AdditionalDataQueryLogEvent",
        "AdditionalDataResponseLogEvent",
        "LocationQueryLogEvent",
        "LocationResponseLogEvent",
        "CallStateChangeLogEvent",
        "GatewayCallLogEvent",
        "HookflashLogEvent",
        "LegacyDigitsLogEvent",
        "AgentStateChangeLogEvent",
        "QueueStateChangeLogEvent",
        "KeepAliveFailureLogEvent",
        "RouteRuleMsgLogEvent",
        "PolicyChangeLogEvent",
        "VersionsLogEvent",
        "SubscribeLogEvent",
        "EidoLogEvent",
        "EidoDereferenceFactoryQueryLogEvent",
        "EidoDereferenceFactoryQueryResponse",
        "SubscriptionRequestedLogEvent",
        "SubscriptionRequestedResponseLogEvent",
        "SubscriptionTerminatedLogEvent",
        "EidoDeniedLogEvent",
        "EidoTransmissionErrorLogEvent",
        "WebSocketEstablishedLogEvent",
        "WebSocketTerminatedLogEvent",
    )
)

# the members the store indexes; all optional but the first three (strings when present)
_INDEXED = ("logEventType", "timestamp", "elementId", "callId", "incidentId", "callIdSip")
_REQUIRED_COMMON = ("logEventType", "timestamp", "elementId", "agencyId")
MAX_ID = 512  # an identifier longer than this is not an identifier (the index stays small)


def rfc3339(ts: float) -> str:
    """`ts` (time.time()) as RFC 3339 UTC with milliseconds: 2026-12-03T13:10:00.123Z."""
    d = dt.datetime.fromtimestamp(ts, dt.UTC)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{d.microsecond // 1000:03d}Z"


def parse_rfc3339(text: str) -> dt.datetime:
    """An RFC 3339 date-time (§5.6: `T` or space, `Z` or an offset) as an aware datetime.

    Raises ValueError for anything else, a date without time or offset included."""
    if not isinstance(text, str) or len(text) > 64 or len(text) < 20:
        raise ValueError(f"not an RFC 3339 date-time: {text!r:.80}")
    value = dt.datetime.fromisoformat(text.replace("z", "Z"))
    if value.tzinfo is None or text[10] not in "Tt ":
        raise ValueError(f"not an RFC 3339 date-time (needs a time offset): {text!r:.80}")
    return value


def camel(name: str) -> str:
    """`call_id_sip` → `callIdSip`; `from_` → `from` (a Python keyword)."""
    head, *rest = name.rstrip("_").split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


@dataclass(frozen=True, slots=True, kw_only=True)
class LogEvent:
    """The members every i3 LogEvent has. `timestamp` is RFC 3339 (`rfc3339(time.time())`);
    `call_id`/`incident_id` are the NENA emergency CallId/IncidentId URNs, `call_id_sip` the
    SIP Call-ID, `ip_address_port` the peer as `host:port`."""

    TYPE: ClassVar[str] = "CallProcessLogEvent"

    timestamp: str
    element_id: str
    agency_id: str
    call_id: str | None = None
    incident_id: str | None = None
    call_id_sip: str | None = None
    ip_address_port: str | None = None
    client_assigned_identifier: str | None = None
    agency_agent_id: str | None = None  # the call taker (agent) the event is about
    extension: dict[str, Any] | None = None

    @property
    def log_event_type(self) -> str:
        return self.TYPE

    def to_json(self) -> dict[str, Any]:
        """The LogEvent as i3 JSON: `logEventType` first, members left out when None."""
        out: dict[str, Any] = {"logEventType": self.TYPE}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is not None:
                out[camel(f.name)] = value
        return out

    def to_bytes(self) -> bytes:
        """The JSON payload a JWS signs (compact, UTF-8)."""
        return json.dumps(self.to_json(), separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True, slots=True, kw_only=True)
class _CallLogEvent(LogEvent):
    """i3 CallLogEvent members (CallStart/CallEnd): direction, call types, to, from."""

    direction: str = "incoming"
    standard_primary_call_type: str | None = None
    standard_secondary_call_type: str | None = None
    local_call_type: str | None = None
    to: str | None = None
    from_: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CallStartLogEvent(_CallLogEvent):
    """The first INVITE of a call at an element (§4.12.3: call start)."""

    TYPE: ClassVar[str] = "CallStartLogEvent"


@dataclass(frozen=True, slots=True, kw_only=True)
class CallEndLogEvent(_CallLogEvent):
    """The call ended at this element: a BYE, or a final failure of its INVITE."""

    TYPE: ClassVar[str] = "CallEndLogEvent"


@dataclass(frozen=True, slots=True, kw_only=True)
class CallSignalingMessageLogEvent(LogEvent):
    """One SIP message in or out, its whole text (`text`), `protocol` "sip"."""

    TYPE: ClassVar[str] = "CallSignalingMessageLogEvent"
    text: str = ""
    direction: str = "incoming"
    protocol: str | None = "sip"


@dataclass(frozen=True, slots=True, kw_only=True)
class LostQueryLogEvent(LogEvent):
    """A LoST query sent (outgoing) or received (incoming). `query_adapter` holds the query
    (the LoST XML when the reporter has it, else a one-line summary); `query_id` equals the
    `response_id` of its LostResponseLogEvent, which is how the two pair."""

    TYPE: ClassVar[str] = "LostQueryLogEvent"
    query_adapter: str = ""
    direction: str = "outgoing"
    query_id: str = ""
    malformed_query: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class LostResponseLogEvent(LogEvent):
    """The answer to a LoST query (or its absence: `response_status` "timeout",
    "unreachable"; an unparseable answer sets `malformed_response`)."""

    TYPE: ClassVar[str] = "LostResponseLogEvent"
    response_adapter: str = ""
    direction: str = "incoming"
    response_id: str = ""
    response_status: str | None = None
    malformed_response: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteLogEvent(LogEvent):
    """A routing decision (ESRP, PRF): where the call went and by which rule."""

    TYPE: ClassVar[str] = "RouteLogEvent"
    recipient_uri: str = ""
    rule_id: str = ""
    policy_owner: str = ""
    policy_type: str = ""
    policy_queue_name: str | None = None
    policy_id: str | None = None
    cause: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceStateChangeLogEvent(LogEvent):
    """An element's own service changed state (i3 ServiceState: Normal, Down...)."""

    TYPE: ClassVar[str] = "ServiceStateChangeLogEvent"
    new_state: str = ""
    affected_service_identifier: str = ""
    direction: str = "outgoing"
    new_security_posture: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CallStateChangeLogEvent(LogEvent):
    """A call changed state at this element (§4.12.3.7): `state` a CallStates registry
    value, e.g. "callAnswered" when a PSAP's call taker answers; `change_reason` free text."""

    TYPE: ClassVar[str] = "CallStateChangeLogEvent"
    state: str = ""
    direction: str = "incoming"
    leg_call_id: str | None = None
    target_id: str | None = None
    change_reason: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentStateChangeLogEvent(LogEvent):
    """A call taker (agent, `agency_agent_id`) became Available or NotAvailable."""

    TYPE: ClassVar[str] = "AgentStateChangeLogEvent"
    primary_agent_state: str = ""  # "Available" | "NotAvailable"
    secondary_agent_state: str | None = None
    device_id: str | None = None


#: The LogEvent classes we produce, by logEventType.
CLASSES: dict[str, type[LogEvent]] = {
    c.TYPE: c
    for c in (
        CallStartLogEvent,
        CallEndLogEvent,
        CallSignalingMessageLogEvent,
        LostQueryLogEvent,
        LostResponseLogEvent,
        RouteLogEvent,
        ServiceStateChangeLogEvent,
        CallStateChangeLogEvent,
        AgentStateChangeLogEvent,
    )
}

# members each type requires beyond the common ones (loggingservice.yaml `required`)
_REQUIRED: dict[str, tuple[str, ...]] = {
    "CallStartLogEvent": ("direction",),
    "CallEndLogEvent": ("direction",),
    "CallSignalingMessageLogEvent": ("text", "direction"),
    "LostQueryLogEvent": ("queryAdapter", "direction", "queryId"),
    "LostResponseLogEvent": ("responseAdapter", "direction", "responseId"),
    "RouteLogEvent": ("recipientUri", "ruleId", "policyOwner", "policyType"),
    "ServiceStateChangeLogEvent": ("newState", "affectedServiceIdentifier", "direction"),
    "CallStateChangeLogEvent": ("state", "direction"),
    "AgentStateChangeLogEvent": ("primaryAgentState",),
}


def from_json(data: dict[str, Any]) -> LogEvent:
    """A LogEvent object from i3 JSON of one of the types in `CLASSES` (checked first)."""
    parse_payload(data)
    cls = CLASSES.get(data["logEventType"])
    if cls is None:
        raise BadLogEvent(f"no class for logEventType {data['logEventType']}")
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        key = camel(f.name)
        if key in data:
            kwargs[f.name] = data[key]
    return cls(**kwargs)


@dataclass(frozen=True, slots=True)
class IndexedEvent:
    """What the store indexes of a checked payload."""

    log_event_type: str
    timestamp: str
    ts: float  # the timestamp as epoch seconds (range queries)
    element_id: str
    agency_id: str
    call_id: str | None
    incident_id: str | None
    call_id_sip: str | None


def parse_payload(data: Any) -> IndexedEvent:
    """Check a received LogEvent (bytes of JSON, or the decoded object) the way a Logging
    Service must before storing it; `BadLogEvent` says what is wrong."""
    if isinstance(data, bytes | str):
        try:
            data = json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise BadLogEvent(f"payload is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadLogEvent(f"payload is a JSON {type(data).__name__}, not an object")
    for key in _REQUIRED_COMMON:
        if not isinstance(data.get(key), str) or not data[key]:
            raise BadLogEvent(f"{key} is required (a non-empty string)")
    kind = data["logEventType"]
    if kind not in I3_LOG_EVENT_TYPES:
        raise BadLogEvent(f"unknown logEventType {kind[:80]!r}")
    for key in _INDEXED:
        value = data.get(key)
        if value is not None and (not isinstance(value, str) or len(value) > MAX_ID):
            raise BadLogEvent(f"{key} must be a string of at most {MAX_ID} characters")
    for key in _REQUIRED.get(kind, ()):
        if key not in data:
            raise BadLogEvent(f"{kind} requires {key}")
    direction = data.get("direction")
    if direction is not None and direction not in DIRECTIONS:
        raise BadLogEvent(f"direction must be one of {DIRECTIONS}, not {str(direction)[:40]!r}")
    try:
        ts = parse_rfc3339(data["timestamp"]).timestamp()
    except ValueError as exc:
        raise BadLogEvent(f"timestamp: {exc}") from None
    return IndexedEvent(
        log_event_type=kind,
        timestamp=data["timestamp"],
        ts=ts,
        element_id=data["elementId"],
        agency_id=data["agencyId"],
        call_id=data.get("callId"),
        incident_id=data.get("incidentId"),
        call_id_sip=data.get("callIdSip"),
    )
