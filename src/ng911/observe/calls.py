"""The trace's analysis: who is at each end of a message, which messages are one call, and the
call's measurements. Everything here runs after the run, over `Recorder`'s records.

- **hops**: each record is assigned to a hop by the pair of elements at its two ends. The
  element that emitted the event is known; the far end is found by address: every event
  says which local address its element used, so an address seen as someone's `local` belongs
  to them (this works for UDP, where each element sends from its listening socket, and for
  TCP/TLS, where the client's ephemeral port appears as `local` in its own events). Roles
  come from whoever builds the trace (the testbed passes its topology's host → role table);
  an element not in the table has no role, so its messages belong to no hop.
- **pairs**: an "out" record is paired with the "in" record of the same message at the far
  end; the difference of their `mono` clocks is the hop's transit time (one machine, one
  clock).
- **calls**: messages are grouped by Call-ID, and Call-IDs are joined when they carry the same
  NENA `emergency-CallId` (`Call-Info`), so a B2BUA that mints a new Call-ID stays one call.
- **processing time** of an element: from the "in" record that caused a message to the "out"
  record carrying it on (a forwarded request or response: same method / status, same call),
  or, for a message the element made itself (100 Trying, a UAS's 180), from the request it
  answers. RFC 3261 §16.6 / §16.7 (a proxy forwards requests and responses).
- **SRD breakdown**: walking that cause chain backwards from the caller's first 180 to its
  INVITE splits the Session Request Delay exactly into per-hop transit and per-element time.
  An element that reports nothing (a third-party proxy, announced by a `PeerEvent`) owns
  every port of its address; the walk crosses it from the message it delivered back to the
  one it was sent, so its segment (named by its role) holds its own time and both its hops'
  transit: nothing observed splits them.
"""

from __future__ import annotations

import bisect
from collections import defaultdict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ng911.observe.hops import hop_of_roles
from ng911.observe.records import MsgRecord, Recorder, transport_kind
from ng911.observe.stats import CallMeasure


@dataclass(slots=True)
class Call:
    """The messages of one call (one group), in time order."""

    key: str
    call_ids: set[str] = field(default_factory=set)
    records: list[MsgRecord] = field(default_factory=list)


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


class Trace(Recorder):
    """A `Recorder` that measures calls, hops and elements once the run is over.

    `roles` maps element names to roles (caller, vsp, esrp, lost, psap, calltaker).
    """

    def __init__(self, roles: Mapping[str, str]) -> None:
        super().__init__()
        self.roles: dict[str, str] = dict(roles)
        self._calls: dict[str, Call] = {}
        self._owner: dict[tuple[str, str, int], str] = {}
        self._owner_port: dict[tuple[str, int], set[str]] = {}
        self._monos: dict[str, list[float]] = {}
        self._lost_iv: dict[str, tuple[list[float], list[float], float]] = {}
        self._hs_iv: dict[str, tuple[list[float], list[float], float]] = {}

    def role(self, element: str | None) -> str | None:
        return None if element is None else self.roles.get(element)

    def finalize(self) -> Trace:
        """Collect new events, then (re)compute owners, hops, pairs and calls. Idempotent."""
        if not self.collect() and self.events:
            return self
        self._resolve()
        return self

    def _learn(self, element: str, transport: str, local: tuple[str, int]) -> None:
        kind = transport_kind(transport)
        self._owner.setdefault((kind, local[0], local[1]), element)
        self._owner_port.setdefault((kind, local[1]), set()).add(element)

    def canonical(self, transport: str, addr: tuple[str, int]) -> tuple[str, int]:
        """The element address behind `addr` when `addr` is an impairment relay's."""
        kind = transport_kind(transport)
        for _ in range(4):  # relays never chain deeper; bounded anyway
            nxt = self.aliases.get((kind, addr))
            if nxt is None:
                return addr
            addr = nxt
        return addr

    def owner(self, transport: str, addr: tuple[str, int]) -> str | None:
        """The element that uses `addr` as a local address (None if never seen)."""
        kind = transport_kind(transport)
        hit = self._owner.get((kind, addr[0], addr[1]))
        if hit is None:  # a socket bound to 0.0.0.0 reports that: match the port if unique
            owners = self._owner_port.get((kind, addr[1]))
            if owners is not None and len(owners) == 1:
                hit = next(iter(owners))
        if hit is None:  # an element that reports nothing (`PeerEvent`) owns its address
            hit = self.unobserved.get(addr[0])
        return hit

    def hop_between(self, a: str | None, b: str | None) -> str | None:
        ra, rb = self.role(a), self.role(b)
        if ra is None or rb is None:
            return None
        return hop_of_roles(ra, rb)

    def _resolve(self) -> None:
        self._owner.clear()
        self._owner_port.clear()
        records = [*self.messages, *self.handshakes, *self.wires]
        # A connection's two ends name each other exactly: (local, remote) at one end is
        # (remote, local) at the other. That settles the peer even when one source address
        # and port served two elements one after the other within the run, which the
        # address owner alone cannot tell apart.
        ends: dict[tuple[str, str, int, str, int], str] = {}
        for r in records:
            self._learn(r.element, r.transport, r.local)
            if transport_kind(r.transport) == "stream":
                key = ("stream", r.local[0], r.local[1], r.remote[0], r.remote[1])
                ends.setdefault(key, r.element)
        for r in records:
            mirror = None
            if transport_kind(r.transport) == "stream":
                mirror = ends.get(("stream", r.remote[0], r.remote[1], r.local[0], r.local[1]))
            r.remote = self.canonical(r.transport, r.remote)
            r.peer = mirror or self.owner(r.transport, r.remote)
            r.hop = self.hop_between(r.element, r.peer)
        for m in self.messages:
            m.partner = None
            m.retransmission = False
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
                    transport_kind(m.transport),
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
                transport_kind(m.transport),
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

    def initial_invite(self, call: Call) -> MsgRecord | None:
        for r in call.records:
            if r.direction == "out" and r.method == "INVITE" and self.role(r.element) == "caller":
                return r
        for r in call.records:  # no caller role known: the first INVITE anyone sent
            if r.direction == "out" and r.method == "INVITE":
                return r
        return None

    def setup_start(self, inv: MsgRecord) -> float:
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
        inv = self.initial_invite(call)
        if inv is None:
            return CallMeasure(call.key, ok=False, cold=cold, reason="no INVITE sent")
        caller = inv.element
        t0 = self.setup_start(inv)
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
        Through an element that reports nothing, its role's segment is the whole transit
        (in-hop, its time, out-hop), and those two hops count none of it.
        """
        inv = self.initial_invite(call)
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
            if cur.partner is not None:
                out = self.messages[cur.partner]
                seg[cur.hop or "other"] += (cur.mono - out.mono) * 1000.0
            else:  # from an element that reports nothing: its hops and time as one segment
                bridged = self._through_unobserved(call, cur)
                if bridged is None:
                    return None
                out = bridged
                seg[self.role(cur.peer) or "other"] += (cur.mono - out.mono) * 1000.0
            if out.index == inv.index:
                seg["handshake"] += (inv.mono - self.setup_start(inv)) * 1000.0
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

    def _through_unobserved(self, call: Call, rec: MsgRecord) -> MsgRecord | None:
        """For `rec`, received from an element that reports nothing (`PeerEvent`): the
        message an observed element sent that element last before, which it forwarded as
        `rec` (the same request, or the same response; a proxy keeps the CSeq)."""
        if rec.peer is None or rec.peer not in self.unobserved.values():
            return None
        best: MsgRecord | None = None
        for r in call.records:
            if (
                r.direction != "out"
                or r.peer != rec.peer
                or r.element == rec.element
                or r.mono > rec.mono
                or r.cseq_num != rec.cseq_num
                or r.cseq_method != rec.cseq_method
            ):
                continue
            same = r.method == rec.method if rec.is_request else r.status == rec.status
            if same and r.is_request == rec.is_request and (best is None or r.mono > best.mono):
                best = r
        return best

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
