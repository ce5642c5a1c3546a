"""The per-hop message trace: what each element sent and received, turned into measurements.

`Trace` is an observer (`SipTransportLayer.observers.append(trace)`): calling it with an event
only appends to a list, so watching costs the measured path almost nothing. Everything else
happens after the run:

- **hops**: each message event is assigned to a hop by the pair of elements at its two ends.
  The element that emitted the event is known; the far end is found by address: every event
  says which local address its element used, so an address seen as someone's `local` belongs
  to them (this works for UDP, where each element sends from its listening socket, and for
  TCP/TLS, where the client's ephemeral port appears as `local` in its own events).
- **arrows**: an "out" event is paired with the "in" event of the same bytes at the far end;
  the difference of their `mono` clocks is the hop's transit time (one process, one clock).
- **calls**: messages are grouped by Call-ID, and Call-IDs are joined when they carry the same
  NENA `emergency-CallId` (`Call-Info`), so a B2BUA that mints a new Call-ID stays one call.
- **processing time** of an element: from the "in" event that caused a message to the "out"
  event carrying it on (a forwarded request or response: same method / status, same call),
  or, for a message the element made itself (100 Trying, a UAS's 180), from the request it
  answers. RFC 3261 §16.6 / §16.7 (a proxy forwards requests and responses).
- **SRD breakdown**: walking that cause chain backwards from the caller's first 180 to its
  INVITE splits the Session Request Delay exactly into per-hop transit and per-element time.
"""

from __future__ import annotations

import bisect
import json
import re
from collections import defaultdict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ng911.observe.hops import HOPS, hop_of_roles
from ng911.observe.stats import CallMeasure, Summary, summarize

# Roles as columns of a ladder diagram, in call order.
COLUMNS: tuple[str, ...] = ("caller", "vsp", "esrp", "lost", "psap", "calltaker")
SECURE_TRANSPORTS = frozenset({"tls", "https", "wss"})
_ROLE_PREFIXES: tuple[tuple[str, str], ...] = (
    ("calltaker", "calltaker"),
    ("taker", "calltaker"),
    ("caller", "caller"),
    ("ua", "caller"),
    ("vsp", "vsp"),
    ("proxy", "vsp"),
    ("esrp", "esrp"),
    ("lost", "lost"),
    ("ecrf", "lost"),
    ("psap", "psap"),
)
_COMPACT = {"i": "call-id", "l": "content-length"}
_EMERGENCY_CALLID = re.compile(
    r"<\s*(urn:emergency:uid:callid:[^>\s]+)\s*>[^,]*purpose\s*=\s*(?:emergency-)?CallId",
    re.IGNORECASE,
)


def infer_role(element: str) -> str | None:
    """Guess an element's role from its name ("psap-bronx" → psap) when no table is given."""
    name = element.lower()
    for prefix, role in _ROLE_PREFIXES:
        if name == prefix or name.startswith(prefix + "-") or name.startswith(prefix + "_"):
            return role
    for prefix, role in _ROLE_PREFIXES:
        if name.startswith(prefix):
            return role
    return None


def _headers(data: bytes) -> dict[str, list[str]]:
    """The header fields of a SIP message we need (Call-ID, CSeq, Call-Info), unfolded.

    Deliberately tolerant and tiny: the observer must never fail on what a peer sent, and it
    does not need the full parser (RFC 3261 §7.3.1 folding, compact forms §7.3.3).
    """
    head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    lines = head.split("\r\n")[1:]
    out: dict[str, list[str]] = defaultdict(list)
    last: str | None = None
    for line in lines:
        if line[:1] in (" ", "\t") and last is not None:
            out[last][-1] += " " + line.strip()
            continue
        name, sep, value = line.partition(":")
        if not sep:
            continue
        key = name.strip().lower()
        key = _COMPACT.get(key, key)
        out[key].append(value.strip())
        last = key
    return out


@dataclass(slots=True)
class MsgRecord:
    """One message event, normalised, with what the trace learns about it afterwards."""

    index: int
    ts: float
    mono: float
    element: str
    direction: str
    transport: str
    local: tuple[str, int]
    remote: tuple[str, int]
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
    peer: str | None = None
    hop: str | None = None
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
        return self.transport.lower() in SECURE_TRANSPORTS

    def label(self) -> str:
        """The first line, shortened for a ladder arrow (no SIP/2.0)."""
        line = self.first_line
        if self.is_request:
            return line.rsplit(" SIP/", 1)[0]
        return line.split(" ", 1)[1] if line.startswith("SIP/") else line

    def to_json(self, t0: float | None = None) -> dict[str, Any]:
        d: dict[str, Any] = {
            "index": self.index,
            "ts": self.ts,
            "mono": self.mono,
            "element": self.element,
            "peer": self.peer,
            "hop": self.hop,
            "direction": self.direction,
            "transport": self.transport,
            "local": list(self.local),
            "remote": list(self.remote),
            "sip_bytes": self.sip_bytes,
            "wire_bytes": self.wire_bytes,
            "call_id": self.call_id,
            "group": self.group,
            "cseq": f"{self.cseq_num} {self.cseq_method}" if self.cseq_num is not None else None,
            "first_line": self.first_line,
            "retransmission": self.retransmission,
            "partner": self.partner,
            "data": self.data.decode("utf-8", "replace"),
        }
        return d


@dataclass(slots=True)
class HandshakeRecord:
    ts: float
    mono: float
    element: str
    local: tuple[str, int]
    remote: tuple[str, int]
    role: str
    resumed: bool
    duration: float
    version: str
    cipher: str
    ok: bool
    error: str | None
    peer: str | None = None
    hop: str | None = None


@dataclass(slots=True)
class Arrow:
    """One message on a ladder diagram (times in ms from the call's first INVITE)."""

    src: str  # column (role)
    dst: str
    label: str
    t_send: float
    t_recv: float | None
    hop: str | None
    transport: str
    encrypted: bool
    sip_bytes: int
    wire_bytes: int

    def to_json(self) -> dict[str, Any]:
        return {
            "src": self.src,
            "dst": self.dst,
            "label": self.label,
            "t_send": self.t_send,
            "t_recv": self.t_recv,
            "hop": self.hop,
            "transport": self.transport,
            "encrypted": self.encrypted,
            "sip_bytes": self.sip_bytes,
            "wire_bytes": self.wire_bytes,
        }


@dataclass(slots=True)
class Call:
    """The messages of one call (one group), in time order."""

    key: str
    call_ids: set[str] = field(default_factory=set)
    records: list[MsgRecord] = field(default_factory=list)


def _addr(value: Any) -> tuple[str, int]:
    if value is None:
        return ("", 0)
    if hasattr(value, "host") and hasattr(value, "port"):  # ng911.net.Address
        return (str(value.host), int(value.port))
    host, port = value[0], value[1]
    return (str(host), int(port))


def _intervals(
    items: Iterable[tuple[str, float, float]],
) -> dict[str, tuple[list[float], list[float], float]]:
    """element → (starts, ends, longest) sorted by start: what `_overlap` searches."""
    by: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for element, a, b in items:
        by[element].append((a, b))
    out: dict[str, tuple[list[float], list[float], float]] = {}
    for element, iv in by.items():
        iv.sort()
        out[element] = ([a for a, _ in iv], [b for _, b in iv], max(b - a for a, b in iv))
    return out


def _overlap(iv: tuple[list[float], list[float], float], start: float, end: float) -> float:
    """Total overlap of [start, end] with the intervals (binary search, then a short scan)."""
    starts, ends, longest = iv
    total = 0.0
    i = bisect.bisect_right(starts, end) - 1
    while i >= 0 and starts[i] >= start - longest:
        total += max(0.0, min(ends[i], end) - max(starts[i], start))
        i -= 1
    return total


def _kind_of_transport(transport: str) -> str:
    return "udp" if transport.lower() == "udp" else "stream"


class Trace:
    """Collects net events during a run; measures calls, hops and elements afterwards.

    `roles` maps element names to roles (caller, vsp, esrp, lost, psap, calltaker); names not
    in it are guessed from their prefix (`infer_role`).
    """

    def __init__(self, roles: Mapping[str, str] | None = None) -> None:
        self.roles: dict[str, str] = dict(roles or {})
        self.events: list[Any] = []
        self.messages: list[MsgRecord] = []
        self.handshakes: list[HandshakeRecord] = []
        self.wires: list[Any] = []
        self.lost_queries: list[Any] = []
        self.connections: list[Any] = []  # ng911.net.events.ConnectionEvent
        # relay address → the element address it stands for (ng911.testbed.impair)
        self._aliases: dict[tuple[str, tuple[str, int]], tuple[str, int]] = {}
        self.ignored = 0
        self._done = 0  # number of events already analysed
        self._calls: dict[str, Call] = {}
        self._owner: dict[tuple[str, str, int], str] = {}
        self._owner_port: dict[tuple[str, int], set[str]] = {}
        self._monos: dict[str, list[float]] = {}
        self._lost_iv: dict[str, tuple[list[float], list[float], float]] = {}
        self._hs_iv: dict[str, tuple[list[float], list[float], float]] = {}

    # -- collection (hot path: append only) ---------------------------------------------------

    def __call__(self, event: Any) -> None:
        self.events.append(event)

    def extend(self, events: Iterable[Any]) -> None:
        self.events.extend(events)

    # -- analysis ----------------------------------------------------------------------------

    def role(self, element: str | None) -> str | None:
        if element is None:
            return None
        r = self.roles.get(element)
        return r if r is not None else infer_role(element)

    def finalize(self) -> Trace:
        """Classify new events, then (re)compute owners, hops, pairs and calls. Idempotent."""
        if self._done == len(self.events) and self._done:
            return self
        for ev in self.events[self._done :]:
            self._classify(ev)
        self._done = len(self.events)
        self._resolve()
        return self

    def _classify(self, ev: Any) -> None:
        if hasattr(ev, "first_line") and hasattr(ev, "data"):
            self._add_message(ev)
        elif hasattr(ev, "resumed") and hasattr(ev, "duration"):
            self.handshakes.append(
                HandshakeRecord(
                    ts=float(ev.ts),
                    mono=float(ev.mono),
                    element=str(ev.element),
                    local=_addr(ev.local),
                    remote=_addr(ev.remote),
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
            self.wires.append(ev)
        elif hasattr(ev, "what") and hasattr(ev, "transport"):
            self.connections.append(ev)
        elif hasattr(ev, "alias") and hasattr(ev, "target"):
            kind = _kind_of_transport(str(ev.transport))
            self._aliases[(kind, _addr(ev.alias))] = _addr(ev.target)
        else:
            self.ignored += 1

    def _add_message(self, ev: Any) -> None:
        data = bytes(ev.data)
        first_line = str(ev.first_line or data.split(b"\r\n", 1)[0].decode("utf-8", "replace"))
        hdrs = _headers(data)
        is_request = not first_line.startswith("SIP/")
        method: str | None = None
        status: int | None = None
        if is_request:
            method = first_line.split(" ", 1)[0].upper() or None
        else:
            parts = first_line.split(" ", 2)
            try:
                status = int(parts[1])
            except (IndexError, ValueError):
                status = None
        cseq_num: int | None = None
        cseq_method: str | None = None
        if hdrs.get("cseq"):
            num, _, meth = hdrs["cseq"][0].partition(" ")
            try:
                cseq_num = int(num)
                cseq_method = meth.strip().upper() or None
            except ValueError:
                pass
        call_id = ev.call_id if getattr(ev, "call_id", None) else None
        if call_id is None and hdrs.get("call-id"):
            call_id = hdrs["call-id"][0]
        ecid = None
        for v in hdrs.get("call-info", []):
            m = _EMERGENCY_CALLID.search(v)
            if m:
                ecid = m.group(1).lower()
                break
        sip_bytes = int(getattr(ev, "sip_bytes", len(data)) or len(data))
        self.messages.append(
            MsgRecord(
                index=len(self.messages),
                ts=float(ev.ts),
                mono=float(ev.mono),
                element=str(ev.element),
                direction=str(ev.direction),
                transport=str(ev.transport).lower(),
                local=_addr(ev.local),
                remote=_addr(ev.remote),
                sip_bytes=sip_bytes,
                wire_bytes=int(getattr(ev, "wire_bytes", sip_bytes) or sip_bytes),
                data=data,
                call_id=call_id,
                first_line=first_line,
                is_request=is_request,
                method=method,
                status=status,
                cseq_num=cseq_num,
                cseq_method=cseq_method,
                emergency_call_id=ecid,
            )
        )

    def _learn(self, element: str, transport: str, local: tuple[str, int]) -> None:
        kind = _kind_of_transport(transport)
        self._owner.setdefault((kind, local[0], local[1]), element)
        self._owner_port.setdefault((kind, local[1]), set()).add(element)

    def canonical(self, transport: str, addr: tuple[str, int]) -> tuple[str, int]:
        """The element address behind `addr` when `addr` is an impairment relay's."""
        kind = _kind_of_transport(transport)
        for _ in range(4):  # relays never chain deeper; bounded anyway
            nxt = self._aliases.get((kind, addr))
            if nxt is None:
                return addr
            addr = nxt
        return addr

    def owner(self, transport: str, addr: tuple[str, int]) -> str | None:
        """The element that uses `addr` as a local address (None if never seen)."""
        kind = _kind_of_transport(transport)
        hit = self._owner.get((kind, addr[0], addr[1]))
        if hit is None:  # a socket bound to 0.0.0.0 reports that: match the port if unique
            owners = self._owner_port.get((kind, addr[1]))
            if owners is not None and len(owners) == 1:
                hit = next(iter(owners))
        return hit

    def hop_between(self, a: str | None, b: str | None) -> str | None:
        ra, rb = self.role(a), self.role(b)
        if ra is None or rb is None:
            return None
        return hop_of_roles(ra, rb)

    def _resolve(self) -> None:
        self._owner.clear()
        self._owner_port.clear()
        for m in self.messages:
            self._learn(m.element, m.transport, m.local)
        for h in self.handshakes:
            self._learn(h.element, "tls", h.local)
        for w in self.wires:
            self._learn(str(w.element), str(w.transport), _addr(w.local))
        for m in self.messages:
            m.remote = self.canonical(m.transport, m.remote)
            m.peer = self.owner(m.transport, m.remote)
            m.hop = self.hop_between(m.element, m.peer)
            m.partner = None
            m.retransmission = False
        for h in self.handshakes:
            h.remote = self.canonical("tls", h.remote)
            h.peer = self.owner("tls", h.remote)
            h.hop = self.hop_between(h.element, h.peer)
        self._pair()
        self._mark_retransmissions()
        self._group()
        self._monos = defaultdict(list)
        for m in sorted(self.messages, key=lambda r: r.mono):
            self._monos[m.element].append(m.mono)
        # keyed by element and the query's emergency-CallId (None: unknown), so a call's
        # processing time only excludes its own LoST query, not a concurrent call's
        self._lost_iv = _intervals(
            (
                f"{q.element}|{(getattr(q, 'call_id', None) or '').lower()}",
                float(q.mono),
                float(q.mono) + float(q.duration),
            )
            for q in self.lost_queries
        )
        self._hs_iv = _intervals(
            (h.element, h.mono - h.duration, h.mono) for h in self.handshakes if h.role == "client"
        )

    def _pair(self) -> None:
        # Keyed by ports and the message's identity, not its bytes: the receiving transport
        # fills in Via `received`/`rport` (RFC 3261 §18.2.1, RFC 3581 §4) before reporting,
        # and a socket bound to 0.0.0.0 reports that rather than 127.0.0.1.
        pending: dict[tuple[Any, ...], deque[MsgRecord]] = defaultdict(deque)
        for m in sorted(self.messages, key=lambda r: r.mono):
            if m.direction == "in":
                key = (
                    m.element,
                    _kind_of_transport(m.transport),
                    m.remote[1],
                    m.local[1],
                    m.first_line,
                    m.call_id,
                    m.cseq_num,
                    m.cseq_method,
                )
                pending[key].append(m)
        for m in sorted(self.messages, key=lambda r: r.mono):
            if m.direction != "out" or m.peer is None:
                continue
            key = (
                m.peer,
                _kind_of_transport(m.transport),
                m.local[1],
                m.remote[1],
                m.first_line,
                m.call_id,
                m.cseq_num,
                m.cseq_method,
            )
            q = pending.get(key)
            while q:
                cand = q.popleft()
                if cand.partner is None:
                    cand.partner = m.index
                    m.partner = cand.index
                    break

    def _mark_retransmissions(self) -> None:
        seen: set[tuple[Any, ...]] = set()
        for m in sorted(self.messages, key=lambda r: r.mono):
            key = (m.element, m.direction, m.remote, m.data)
            if key in seen:
                m.retransmission = True
            seen.add(key)

    def _group(self) -> None:
        parent: dict[str, str] = {}

        def find(x: str) -> str:
            parent.setdefault(x, x)
            while parent[x] != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x

        first_seen: dict[str, float] = {}
        by_ecid: dict[str, str] = {}
        for m in sorted(self.messages, key=lambda r: r.mono):
            if m.call_id is None:
                continue
            first_seen.setdefault(m.call_id, m.mono)
            find(m.call_id)
            if m.emergency_call_id is not None:
                other = by_ecid.setdefault(m.emergency_call_id, m.call_id)
                ra, rb = find(other), find(m.call_id)
                if ra != rb:
                    # the root is the Call-ID seen first: the caller's
                    if first_seen[ra] <= first_seen[rb]:
                        parent[rb] = ra
                    else:
                        parent[ra] = rb
        self._calls = {}
        for m in sorted(self.messages, key=lambda r: r.mono):
            if m.call_id is None:
                continue
            key = find(m.call_id)
            m.group = key
            call = self._calls.setdefault(key, Call(key))
            call.call_ids.add(m.call_id)
            call.records.append(m)

    # -- per call ----------------------------------------------------------------------------

    def calls(self) -> list[Call]:
        """Calls that contain an INVITE, ordered by their first message."""
        self.finalize()
        out = [c for c in self._calls.values() if any(r.method == "INVITE" for r in c.records)]
        out.sort(key=lambda c: c.records[0].mono)
        return out

    def call(self, call_id: str) -> Call | None:
        self.finalize()
        for c in self._calls.values():
            if call_id in c.call_ids:
                return c
        return None

    def _initial_invite(self, call: Call) -> MsgRecord | None:
        for r in call.records:
            if r.direction == "out" and r.method == "INVITE" and self.role(r.element) == "caller":
                return r
        for r in call.records:  # no caller role known: the first INVITE anyone sent
            if r.direction == "out" and r.method == "INVITE":
                return r
        return None

    def _setup_before(self, inv: MsgRecord) -> float:
        """When the caller started sending `inv`: earlier than its "out" event when it first
        had to open the connection (TCP connect, TLS handshake), which the transport does
        before it reports the message. Connection set-up the caller did between its previous
        event and this INVITE belongs to this call's SRD (RFC 6076 §4.2 starts the SRD when
        the INVITE is sent by the user agent, not when the socket accepts it)."""
        monos = self._monos.get(inv.element, [])
        i = bisect.bisect_left(monos, inv.mono)
        prev = monos[i - 1] if i > 0 else float("-inf")
        start = inv.mono
        for h in self.handshakes:
            if h.element == inv.element and h.role == "client" and prev < h.mono <= inv.mono:
                start = min(start, h.mono - h.duration)
        for c in self.connections:
            if (
                str(c.element) == inv.element
                and str(c.what) == "open"
                and prev < float(c.mono) <= inv.mono
            ):
                start = min(start, float(c.mono))
        return start

    def measure(self, call: Call, *, cold: bool = False) -> CallMeasure:
        """SRD, INVITE→200 and SDD of one call, from the caller's own events (RFC 6076 §4)."""
        inv = self._initial_invite(call)
        if inv is None:
            return CallMeasure(call.key, ok=False, cold=cold, reason="no INVITE sent")
        caller = inv.element
        t0 = self._setup_before(inv)
        ringing = final = None
        for r in call.records:
            if r.element != caller or r.direction != "in" or r.status is None:
                continue
            if r.cseq_method != "INVITE" or r.mono < inv.mono:
                continue
            if ringing is None and 180 <= r.status <= 199:
                ringing = r
            if final is None and r.status >= 200:
                final = r
        ok = final is not None and final.status is not None and 200 <= final.status < 300
        to200 = (final.mono - t0) * 1000.0 if ok and final is not None else None
        if ringing is not None and (final is None or ringing.mono <= final.mono):
            srd: float | None = (ringing.mono - t0) * 1000.0
        else:
            srd = to200  # RFC 6076 §4.2.1: no provisional → the 2xx ends the SRD
        sdd = None
        bye = next((r for r in call.records if r.direction == "out" and r.method == "BYE"), None)
        if bye is not None:
            bye_ok = next(
                (
                    r
                    for r in call.records
                    if r.element == bye.element
                    and r.direction == "in"
                    and r.cseq_method == "BYE"
                    and r.status is not None
                    and r.status >= 200
                    and r.mono >= bye.mono
                ),
                None,
            )
            if bye_ok is not None:
                sdd = (bye_ok.mono - bye.mono) * 1000.0
        reason = None
        if not ok:
            reason = (
                f"final response {final.first_line!r}" if final is not None else "no final response"
            )
        return CallMeasure(
            call_id=inv.call_id or call.key,
            ok=ok,
            srd=srd,
            invite_to_200=to200,
            sdd=sdd,
            cold=cold,
            final_status=final.status if final is not None else None,
            reason=reason,
        )

    def call_measures(self, cold_calls: int = 1) -> list[CallMeasure]:
        """Every call's measures, the first `cold_calls` (by INVITE time) marked cold."""
        return [self.measure(c, cold=i < cold_calls) for i, c in enumerate(self.calls())]

    def _cause(self, call: Call, out: MsgRecord) -> MsgRecord | None:
        """The "in" record at `out`'s element that `out` was made from (see module docstring)."""
        same = [
            r
            for r in call.records
            if r.element == out.element and r.direction == "in" and r.mono <= out.mono
        ]
        if out.is_request:
            for r in same:
                if r.is_request and r.method == out.method:
                    return r
            return None
        for r in same:  # a forwarded response: same status, same CSeq method
            if not r.is_request and r.status == out.status and r.cseq_method == out.cseq_method:
                return r
        for r in same:  # a response the element made itself: answers this request
            if r.is_request and r.method == out.cseq_method:
                return r
        return None

    def _lost_overlap(self, element: str, start: float, end: float, call: Call) -> float:
        """Time within [start, end] that `element` waited for this call's LoST queries
        (queries that name no call count for every call)."""
        keys = {f"{element}|"} | {f"{element}|{c.lower()}" for c in call.call_ids}
        keys |= {f"{element}|{r.emergency_call_id}" for r in call.records if r.emergency_call_id}
        return sum(_overlap(self._lost_iv[k], start, end) for k in keys if k in self._lost_iv)

    def _handshake_overlap(self, element: str, start: float, end: float) -> float:
        """Time within [start, end] that `element` spent in TLS handshakes it started.

        The transport reports a message "out" only after the connection is up, so a cold
        call's handshake would otherwise count as the element's processing time.
        """
        return _overlap(self._hs_iv.get(element, ([], [], 0.0)), start, end)

    def breakdown(self, call: Call) -> dict[str, float] | None:
        """The caller's SRD split into hop transit (hop1..hop4), element time and LoST (ms).

        Segments: `hop1`..`hop4` (both directions), each role's own time (`vsp`, `esrp`,
        `psap`, `calltaker`), `lost` (the ESRP's LoST query, taken out of `esrp`) and
        `handshake` (TLS handshakes an element waited for before it could send). They sum
        to the SRD. None when the chain of events is incomplete (a message was not observed).
        """
        inv = self._initial_invite(call)
        if inv is None:
            return None
        end = None
        for r in call.records:
            if (
                r.element == inv.element
                and r.direction == "in"
                and r.cseq_method == "INVITE"
                and r.status is not None
                and 180 <= r.status < 300
            ):
                end = r
                break
        if end is None:
            return None
        seg: dict[str, float] = defaultdict(float)
        cur = end
        for _ in range(64):  # a call chain has a handful of hops; bounded anyway
            if cur.partner is None:
                return None
            out = self.messages[cur.partner]
            seg[cur.hop or "other"] += (cur.mono - out.mono) * 1000.0
            if out.index == inv.index:
                seg["handshake"] += (inv.mono - self._setup_before(inv)) * 1000.0
                return dict(seg)
            cause = self._cause(call, out)
            if cause is None:
                return None
            lost = self._lost_overlap(out.element, cause.mono, out.mono, call)
            hs = self._handshake_overlap(out.element, cause.mono, out.mono)
            seg["lost"] += lost * 1000.0
            seg["handshake"] += hs * 1000.0
            own = out.mono - cause.mono - lost - hs
            seg[self.role(out.element) or out.element] += own * 1000.0
            cur = cause
        return None

    def processing(self) -> dict[str, dict[str, list[float]]]:
        """Each role's own processing times (ms) by message kind, over all calls.

        Keys: role → kind ("INVITE", "100 INVITE", "180 INVITE", "200 BYE", "ACK", ...); a
        call taker's "180 INVITE" is its ring time, its "200 INVITE" its (configured) answer
        delay. The element's own
        time excludes what it waited for: LoST queries and TLS handshakes it started (the
        ESRP's INVITE with its LoST query is also given as "INVITE+LoST"). Retransmissions
        are left out (they are timers, not processing).
        """
        out: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        for call in self.calls():
            for r in call.records:
                if r.direction != "out" or r.retransmission:
                    continue
                role = self.role(r.element)
                if role == "caller":
                    continue
                cause = self._cause(call, r)
                if cause is None:
                    continue
                lost = self._lost_overlap(r.element, cause.mono, r.mono, call)
                hs = self._handshake_overlap(r.element, cause.mono, r.mono)
                dt = (r.mono - cause.mono - lost - hs) * 1000.0
                out[role or r.element][r.kind].append(dt)
                if lost > 0:
                    out[role or r.element][f"{r.kind}+LoST"].append(dt + lost * 1000.0)
        return {k: dict(v) for k, v in out.items()}

    def ladder(self, call: Call, *, include_retransmissions: bool = True) -> list[Arrow]:
        """The arrows of one call's ladder diagram, LoST queries included, in send order."""
        inv = self._initial_invite(call)
        t0 = inv.mono if inv is not None else (call.records[0].mono if call.records else 0.0)
        arrows: list[Arrow] = []
        for r in call.records:
            if r.direction != "out" or (r.retransmission and not include_retransmissions):
                continue
            recv = self.messages[r.partner].mono if r.partner is not None else None
            arrows.append(
                Arrow(
                    src=self.role(r.element) or r.element,
                    dst=(self.role(r.peer) or r.peer or "?"),
                    label=r.label() + (" (retransmission)" if r.retransmission else ""),
                    t_send=(r.mono - t0) * 1000.0,
                    t_recv=(recv - t0) * 1000.0 if recv is not None else None,
                    hop=r.hop,
                    transport=r.transport,
                    encrypted=r.encrypted,
                    sip_bytes=r.sip_bytes,
                    wire_bytes=r.wire_bytes,
                )
            )
        end = call.records[-1].mono if call.records else t0
        ecids = {r.emergency_call_id for r in call.records if r.emergency_call_id}
        for q in self.lost_queries:
            qcid = getattr(q, "call_id", None)
            start = float(q.mono)
            if getattr(q, "cached", False):
                continue  # answered from the ESRP's cache: nothing crossed
            if qcid is not None and qcid not in call.call_ids and qcid.lower() not in ecids:
                continue
            if qcid is None and not (t0 <= start <= end):
                continue
            transport = str(getattr(q, "transport", "http"))
            src = self.role(str(q.element)) or str(q.element)
            enc = transport in SECURE_TRANSPORTS
            rq, rs = int(getattr(q, "request_bytes", 0)), int(getattr(q, "response_bytes", 0))
            t_send = (start - t0) * 1000.0
            t_back = (start + float(q.duration) - t0) * 1000.0
            arrows.append(
                Arrow(src, "lost", "LoST findService", t_send, t_send, None, transport, enc, rq, rq)
            )
            label = "LoST response" if getattr(q, "ok", True) else "LoST error"
            arrows.append(Arrow("lost", src, label, t_back, t_back, None, transport, enc, rs, rs))
        arrows.sort(key=lambda a: a.t_send)
        return arrows

    # -- per hop -----------------------------------------------------------------------------

    def hop_bytes(self) -> dict[str, dict[str, float | int]]:
        """Per hop: messages, mean SIP bytes and mean wire bytes per message, totals.

        Counted on the sending side only, so each message crossing the hop counts once.
        `wire_total` adds every wire chunk of the hop when the transport reported them
        (TLS handshakes and alerts included), otherwise it is the sum of per-message wire bytes.
        """
        self.finalize()
        acc: dict[str, dict[str, float | int]] = {}
        for m in self.messages:
            if m.direction != "out":
                continue
            hop = m.hop or "other"
            a = acc.setdefault(hop, {"messages": 0, "sip_total": 0, "wire_msg_total": 0})
            a["messages"] += 1
            a["sip_total"] += m.sip_bytes
            a["wire_msg_total"] += m.wire_bytes
        chunks: dict[str, int] = defaultdict(int)
        for w in self.wires:
            if str(w.direction) != "out":
                continue
            remote = self.canonical(str(w.transport), _addr(w.remote))
            peer = self.owner(str(w.transport), remote)
            hop = self.hop_between(str(w.element), peer) or "other"
            chunks[hop] += len(w.data)
        for hop, a in acc.items():
            n = int(a["messages"]) or 1
            a["sip_mean"] = a["sip_total"] / n
            a["wire_mean"] = a["wire_msg_total"] / n
            a["wire_total"] = chunks.get(hop, int(a["wire_msg_total"]))
            a["overhead_pct"] = (
                (a["wire_mean"] - a["sip_mean"]) / a["sip_mean"] * 100.0 if a["sip_mean"] else 0.0
            )
        return acc

    def handshake_stats(self) -> dict[str, dict[str, Any]]:
        """Per hop: TLS handshakes seen by the client side, full vs resumed, mean times (ms)."""
        self.finalize()
        out: dict[str, dict[str, Any]] = {}
        for hop in (*HOPS, "other"):
            hs = [h for h in self.handshakes if (h.hop or "other") == hop and h.role == "client"]
            if not hs:
                continue
            full = [h.duration * 1000.0 for h in hs if h.ok and not h.resumed]
            resumed = [h.duration * 1000.0 for h in hs if h.ok and h.resumed]
            out[hop] = {
                "handshakes": len(hs),
                "full": len(full),
                "resumed": len(resumed),
                "failed": sum(1 for h in hs if not h.ok),
                "full_mean_ms": sum(full) / len(full) if full else None,
                "resumed_mean_ms": sum(resumed) / len(resumed) if resumed else None,
                "versions": sorted({h.version for h in hs if h.ok}),
                "ciphers": sorted({h.cipher for h in hs if h.ok}),
                "errors": sorted({h.error for h in hs if h.error}),
            }
        return out

    def lost_summary(self) -> Summary | None:
        """LoST query times (ms) as the querying element saw them."""
        return summarize(
            float(q.duration) * 1000.0
            for q in self.lost_queries
            if q.ok and not getattr(q, "cached", False)
        )

    def hop_transports(self) -> dict[str, str]:
        """The transport each hop actually used (from the messages: the ground truth)."""
        self.finalize()
        seen: dict[str, set[str]] = defaultdict(set)
        for m in self.messages:
            if m.hop is not None:
                seen[m.hop].add(m.transport)
        return {h: ",".join(sorted(t)) for h, t in seen.items()}

    # -- output ------------------------------------------------------------------------------

    def write_logs(self, out_dir: Path) -> dict[str, Path]:
        """One JSON-lines file per hop (`hop1.jsonl`...; `other.jsonl`), plus `lost.jsonl`.

        Every message event is one line with its hop, both ends, clocks, sizes and text, so a
        reader can recompute any figure of the report from these files alone.
        """
        self.finalize()
        out_dir.mkdir(parents=True, exist_ok=True)
        files: dict[str, Path] = {}
        handles: dict[str, Any] = {}
        try:
            for m in sorted(self.messages, key=lambda r: r.mono):
                hop = m.hop or "other"
                if hop not in handles:
                    files[hop] = out_dir / f"{hop}.jsonl"
                    handles[hop] = files[hop].open("w", encoding="utf-8")
                handles[hop].write(json.dumps(m.to_json()) + "\n")
        finally:
            for fh in handles.values():
                fh.close()
        if self.lost_queries:
            files["lost"] = out_dir / "lost.jsonl"
            with files["lost"].open("w", encoding="utf-8") as fh:
                for q in self.lost_queries:
                    fh.write(
                        json.dumps(
                            {
                                "ts": float(q.ts),
                                "mono": float(q.mono),
                                "duration": float(q.duration),
                                "element": str(q.element),
                                "url": str(q.url),
                                "transport": str(getattr(q, "transport", "")),
                                "ok": bool(q.ok),
                                "call_id": getattr(q, "call_id", None),
                                "result": getattr(q, "result", None),
                            }
                        )
                        + "\n"
                    )
        return files
