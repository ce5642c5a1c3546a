"""The trace's recording half: events in during the run, normalised records out afterwards.

`Recorder` is an observer (`SipTransportLayer.observers.append(rec)`,
`LostClient(observers=[rec])`): calling it only appends the event to a list, so watching
costs the measured path almost nothing. `collect()`, after the run, sorts the new events into
records by their shape (in-process `ng911.net.events` dataclasses and the same dataclasses
rebuilt from event files look alike; anything else is counted in `ignored`, never raised).

A message record's SIP fields (Call-ID, CSeq, NENA `emergency-CallId`) come from
`ng911.sip`'s parser, the one the elements use. Bytes it refuses (a hostile or cut message)
still make a record, with its first line only: the observer must never fail on what a peer
sent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from ng911.elements.identifiers import extract_ids
from ng911.sip.headers import CSeq
from ng911.sip.message import Request, Response
from ng911.sip.parse import parse_message

SECURE_TRANSPORTS = frozenset({"tls", "https", "wss"})
T = TypeVar("T")


def addr(value: Any) -> tuple[str, int]:
    """An address as (host, port), from a tuple, a list or an `ng911.net.Address`."""
    if value is None:
        return ("", 0)
    if hasattr(value, "host") and hasattr(value, "port"):
        return (str(value.host), int(value.port))
    return (str(value[0]), int(value[1]))


def transport_kind(transport: str) -> str:
    """Either "udp" or "stream": TCP and TLS share the port space an address is owned in."""
    return "udp" if transport.lower() == "udp" else "stream"


@dataclass(slots=True, kw_only=True)
class Record:
    """What every record has. `peer` (the element at `remote`) and `hop` are filled in by the
    analysis (`ng911.observe.calls.Trace`), which also replaces a relay's `remote` by the
    element address it stands for."""

    element: str  # who reported it
    transport: str
    local: tuple[str, int]
    remote: tuple[str, int]
    ts: float  # time.time()
    mono: float  # time.perf_counter(): one clock for every element on the machine
    peer: str | None = None
    hop: str | None = None


@dataclass(slots=True, kw_only=True)
class MsgRecord(Record):
    """One SIP message event, with what the analysis learns about it afterwards."""

    index: int
    direction: str
    sip_bytes: int
    wire_bytes: int
    data: bytes
    call_id: str | None
    first_line: str
    is_request: bool
    method: str | None  # request method
    status: int | None  # response status
    cseq_num: int | None
    cseq_method: str | None
    emergency_call_id: str | None
    partner: int | None = None  # index of the matching record at the other end
    retransmission: bool = False
    group: str | None = None

    @property
    def kind(self) -> str:
        """A request's method ("INVITE"), or a response's status and the method it answers
        ("180 INVITE", "200 BYE")."""
        if self.is_request and self.method:
            return self.method
        return f"{self.status} {self.cseq_method}" if self.cseq_method else str(self.status)

    @property
    def encrypted(self) -> bool:
        return self.transport in SECURE_TRANSPORTS

    def label(self) -> str:
        """The first line, shortened for a ladder arrow (no SIP/2.0)."""
        line = self.first_line
        if self.is_request:
            return line.rsplit(" SIP/", 1)[0]
        return line.split(" ", 1)[1] if line.startswith("SIP/") else line

    def to_json(self) -> dict[str, Any]:
        """A line of `hopN.jsonl`: what a reader needs to recompute the figures."""
        d = {name: getattr(self, name) for name in _JSON_FIELDS}
        d["local"], d["remote"] = list(self.local), list(self.remote)
        d["cseq"] = f"{self.cseq_num} {self.cseq_method}" if self.cseq_num is not None else None
        d["data"] = self.data.decode("utf-8", "replace")
        return d


_JSON_FIELDS = (
    *("index", "ts", "mono", "element", "peer", "hop", "direction", "transport"),
    *("sip_bytes", "wire_bytes", "call_id", "group", "first_line", "retransmission", "partner"),
)


@dataclass(slots=True, kw_only=True)
class HandshakeRecord(Record):
    """One TLS handshake, as one side saw it (`role` "client" or "server")."""

    role: str
    resumed: bool
    duration: float
    version: str
    cipher: str
    ok: bool
    error: str | None


@dataclass(slots=True, kw_only=True)
class WireRecord(Record):
    """One chunk written to a TCP/TLS socket (`WireEvent`): the bytes a capture replays."""

    direction: str
    data: bytes


@dataclass(frozen=True, slots=True)
class PeerEvent:
    """An element that reports no events of its own (a third-party proxy such as Kamailio):
    its name and address, so the analysis can still name the far end of every message the
    observed elements exchange with it (any port of `address` is its)."""

    element: str
    address: str
    implementation: str


def _base(ev: Any, transport: str | None = None) -> dict[str, Any]:
    """The `Record` fields, from any event that has them."""
    return {
        "ts": float(ev.ts),
        "mono": float(ev.mono),
        "element": str(ev.element),
        "transport": (transport or str(ev.transport)).lower(),
        "local": addr(ev.local),
        "remote": addr(ev.remote),
    }


def _field(fn: Callable[[], T]) -> T | None:
    """A header view of the parsed message, None when that header is missing or malformed."""
    try:
        return fn()
    except Exception:
        return None


def message_record(ev: Any, index: int) -> MsgRecord:
    """A message event as a record; its SIP fields from `ng911.sip.parse` (None if refused)."""
    data = bytes(ev.data)
    first_line = str(ev.first_line or data.split(b"\r\n", 1)[0].decode("utf-8", "replace"))
    msg: Request | Response | None = _field(lambda: parse_message(data))
    method: str | None = None
    status: int | None = None
    cseq: CSeq | None = None
    ecid: str | None = None
    call_id: str | None = getattr(ev, "call_id", None) or None
    if msg is not None:
        if isinstance(msg, Request):
            method = msg.method.upper()
        else:
            status = msg.status
        call_id = call_id or _field(lambda: msg.call_id)
        cseq = _field(lambda: msg.cseq)
        ecid = _field(lambda: extract_ids(msg).call_id)
    sip_bytes = int(getattr(ev, "sip_bytes", len(data)) or len(data))
    return MsgRecord(
        **_base(ev),
        index=index,
        direction=str(ev.direction),
        sip_bytes=sip_bytes,
        wire_bytes=int(getattr(ev, "wire_bytes", sip_bytes) or sip_bytes),
        data=data,
        call_id=call_id,
        first_line=first_line,
        is_request=not first_line.startswith("SIP/"),
        method=method,
        status=status,
        cseq_num=cseq.seq if cseq is not None else None,
        cseq_method=cseq.method.upper() if cseq is not None else None,
        emergency_call_id=ecid.lower() if ecid else None,
    )


class Recorder:
    """Appends events during the run; `collect()` turns the new ones into records."""

    def __init__(self) -> None:
        self.events: list[Any] = []
        self.messages: list[MsgRecord] = []
        self.handshakes: list[HandshakeRecord] = []
        self.wires: list[WireRecord] = []
        self.lost_queries: list[Any] = []  # ng911.lost.events.LostQueryEvent
        self.connections: list[Any] = []  # ng911.net.events.ConnectionEvent
        # (transport kind, relay address) → the element address it stands for (testbed.impair)
        self.aliases: dict[tuple[str, tuple[str, int]], tuple[str, int]] = {}
        # address → element that reports no events (`PeerEvent`): a third-party peer
        self.unobserved: dict[str, str] = {}
        self.ignored = 0
        self._done = 0  # number of events already collected

    # -- the hot path: append only -------------------------------------------------------

    def __call__(self, event: Any) -> None:
        self.events.append(event)

    def extend(self, events: Iterable[Any]) -> None:
        self.events.extend(events)

    # -- after the run -------------------------------------------------------------------

    def collect(self) -> int:
        """Classify the events appended since the last call; how many there were."""
        new = self.events[self._done :]
        for ev in new:
            self._classify(ev)
        self._done = len(self.events)
        return len(new)

    def _classify(self, ev: Any) -> None:
        if hasattr(ev, "first_line") and hasattr(ev, "data"):
            self.messages.append(message_record(ev, len(self.messages)))
        elif hasattr(ev, "resumed") and hasattr(ev, "duration"):
            self.handshakes.append(
                HandshakeRecord(
                    **_base(ev, "tls"),
                    role=str(ev.role),
                    resumed=bool(ev.resumed),
                    duration=float(ev.duration),
                    version=str(getattr(ev, "version", "")),
                    cipher=str(getattr(ev, "cipher", "")),
                    ok=bool(getattr(ev, "ok", True)),
                    error=getattr(ev, "error", None),
                )
            )
        elif hasattr(ev, "url") and hasattr(ev, "duration"):
            self.lost_queries.append(ev)
        elif hasattr(ev, "connection_id") and hasattr(ev, "data"):
            self.wires.append(
                WireRecord(**_base(ev), direction=str(ev.direction), data=bytes(ev.data))
            )
        elif hasattr(ev, "what") and hasattr(ev, "transport"):
            self.connections.append(ev)
        elif hasattr(ev, "implementation") and hasattr(ev, "address"):
            self.unobserved[str(ev.address)] = str(ev.element)
        elif hasattr(ev, "alias") and hasattr(ev, "target"):
            self.aliases[(transport_kind(str(ev.transport)), addr(ev.alias))] = addr(ev.target)
        else:
            self.ignored += 1
