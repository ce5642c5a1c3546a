"""psapd: the PSAP's call server. Accepts calls for its PSAP, queues them, offers each to a
free call taker, re-offers on no answer, and logs every call (who, where, which taker, when).

A stateful proxy (`proxy.py`) whose targets are its registered call takers (`registrar.py`)
chosen by the ACD (`acd.py`): an offer is a branch retargeted to the taker's contact with an
`offer_timeout` timer that runs until the final answer (the taker rings, then must answer);
on expiry psapd CANCELs that branch and offers the call to another taker. A queued call gets
`182 Queued` upstream (RFC 3261 §21.1.3); only when every taker is busy and the queue is full
does the caller get 486 (480 at once when no taker is registered at all) with Retry-After,
on which the ESRP tries the alternate PSAP.

What a few packets must not wedge:
- an answered call whose ACK never comes (a spoofed INVITE) holds its taker at most
  `ack_timeout` (not 64*T1): then psapd sends BYE to the taker and upstream, frees the
  taker for the next queued call and logs `ack_timeout` in the call log;
- a restart loses no call taker: the registrations are kept in SQLite (`registrations`,
  `binding_store.py`) and the takers' OPTIONS keep-alives make them register again;
- a REGISTER may only bind an AOR this psapd is configured for (`takers`), and only from
  the host that holds the AOR's unexpired binding: a spoofed REGISTER cannot steal calls;
- a BYE frees the taker only when its tags are those of the call's dialog;
- with `calls_from` set, only those hosts (the ESRPs) may start a call at all.

Test calls (`urn:service:test.sos`, RFC 6881 §15, `testcall.py`): psapd answers them itself
as a UAS (200 with an SDP answer on a bound port and NENA's text/plain part; 2xx
retransmitted until the ACK, `sip.dialog.AckWait`; BYE answered, or sent after
`test_call_max`); they never enter the ACD, so no call taker is offered or held by one.
Each answer is logged `test_call`, each refusal (404 disabled, 486 over `test_call_limit`
or while the PSAP is busy) `test_call_refused`.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from ng911.elements.acd import (
    Acd,
    AcdAction,
    Connected,
    Offer,
    Queued,
    Reject,
    Release,
    WithdrawOffer,
)
from ng911.elements.binding_store import BindingStore
from ng911.elements.config import PsapConfig
from ng911.elements.emergency import is_test_service
from ng911.elements.i3state import QueueState, ServiceState
from ng911.elements.media import RtpPort, sdp
from ng911.elements.native import mypyc_attr
from ng911.elements.proxy import Branch, Proxy, ProxyCall, Target
from ng911.elements.registrar import Registrar, aor_key
from ng911.elements.registration import answer_register
from ng911.elements.routing import CallLocation, extract_location
from ng911.elements.runtime import ServerCtx
from ng911.elements.testcall import TestCallPolicy, answer_body, refusal
from ng911.errors import Ng911Error
from ng911.location.civic import CivicAddress
from ng911.location.geodetic import reference_point
from ng911.net.address import Source
from ng911.sip.body import find_part
from ng911.sip.dialog import AckWait, Dialog, DialogError
from ng911.sip.headers import new_branch, new_tag, parse_via
from ng911.sip.message import Request, Response
from ng911.sip.transaction import Action, CancelTimer, Send, StartTimer, Timeout
from ng911.sip.uri import URI, URN, NameAddr, parse_name_addr

__all__ = ["CallLogEntry", "Psapd"]

QUEUE_STATE = "emergency-QueueState"
SERVICE_STATE = "emergency-ServiceState"


@dataclass(eq=False, slots=True)
class CallLogEntry:
    call_id: str
    caller: str
    location: str | None
    received: float = field(default_factory=time.time)
    taker: str | None = None
    answered: float | None = None
    ended: float | None = None
    offers: list[str] = field(default_factory=list)
    outcome: str = "ringing"
    caller_tag: str | None = None
    taker_tag: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The log's fields but the dialog tags (internal, for matching a BYE)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if not f.name.endswith("_tag")}


def _describe(where: object) -> str | None:
    if isinstance(where, CallLocation):
        loc = where.location
        if isinstance(loc, CivicAddress):
            return "civic " + ", ".join(f"{k}={v}" for k, v in loc.fields)
        p = reference_point(loc)
        return f"{type(loc).__name__} {p.lat:.6f},{p.lon:.6f}"
    return None


@dataclass(eq=False, slots=True)
class _Answered:
    """A call answered by a taker whose ACK has not come yet (`ack_timeout` running)."""

    call: ProxyCall
    taker: str
    ok: Response  # the taker's 2xx, as received
    invite: Request  # the INVITE as sent to the taker
    timer: asyncio.TimerHandle


@dataclass(eq=False, slots=True)
class _TestCall:
    """A test call psapd answers itself (RFC 6881 §15)."""

    call_id: str
    source: Source
    dialog: Dialog | None = None
    rtp: RtpPort | None = None
    wait: AckWait | None = None  # the 2xx's retransmission until its ACK
    timers: dict[str, asyncio.TimerHandle] = field(default_factory=dict)


def _has_sdp(req: Request) -> bool:
    ctype = req.headers.get("Content-Type")
    if not ctype or not req.body:
        return False
    try:
        return find_part(ctype, req.body, mime="application/sdp") is not None
    except Ng911Error:
        return False


@mypyc_attr(allow_interpreted_subclasses=True)
class Psapd(Proxy):
    role: ClassVar[str] = "psap"

    def __init__(
        self,
        config: PsapConfig,
        *,
        log_keep: int = 0,
        observers: Iterable[Callable[[Any], None]] = (),
        client_tls: ssl.SSLContext | None = None,
        server_tls: ssl.SSLContext | None = None,
    ) -> None:
        # the keywords spelt out: the compiled build cannot pass `**kw` on to them
        super().__init__(
            config,
            log_keep=log_keep,
            observers=observers,
            client_tls=client_tls,
            server_tls=server_tls,
        )
        self.cfg = config
        self.registrar = Registrar((config.domain, config.fqdn))
        self.acd = Acd(
            queue_size=config.queue_size,
            offer_timeout=config.offer_timeout,
            retry_after=config.retry_after,
        )
        self.active: dict[str, ProxyCall] = {}
        self.call_log: list[CallLogEntry] = []
        self._entries: dict[str, CallLogEntry] = {}
        self._awaiting_ack: dict[str, _Answered] = {}
        self._origin: dict[str, str] = {}  # AOR -> host its binding was registered from
        self._allowed = frozenset(self._aor_of(a) for a in config.takers)
        self.tests: dict[str, _TestCall] = {}  # test calls being answered or up, by Call-ID
        self._unstaffed: asyncio.TimerHandle | None = None  # `_watch_unstaffed`
        self.test_calls_answered = 0
        self.store: BindingStore | None = None
        if config.registrations:
            self.store = BindingStore(config.registrations)
            self._reload(self.store)
        # the queue's and the service's state fields last published (`_state_changed`)
        self._published: tuple[tuple[str, int, int, str], tuple[str, str, str]] | None = None
        self._state_changed()

    @staticmethod
    def _aor_of(uri: str) -> str:
        try:
            return aor_key(parse_name_addr(uri).uri)
        except Ng911Error:
            return uri

    def _reload(self, store: BindingStore) -> None:
        """Registrations kept across a restart: back into the registrar and the ACD."""
        now = time.time()
        aors: list[str] = []
        for sb in store.load(now):
            b = sb.binding
            if self._allowed and b.aor not in self._allowed:
                continue
            self.registrar.restore(b)
            self._origin[b.aor] = sb.source_host
            if b.aor not in aors:
                aors.append(b.aor)
        for aor in aors:
            self.acd.add_taker(aor)  # no call yet: no action to carry out
        if aors:
            self.log("registrations_reloaded", takers=aors, path=str(store.path))

    # ---------------------------------------------------------------- i3 state

    def state_packages(self) -> tuple[str, ...]:
        return (*super().state_packages(), QUEUE_STATE, SERVICE_STATE)

    def queue_state(self) -> QueueState:
        """NENA-STA-010.3 QueueState of the PSAP's one queue: queueLength = calls waiting
        for a call taker (182 Queued), queueMaxLength = `queue_size`; Disabled while closing,
        Inactive with no call taker registered (a call would get 480), Full when the next
        call would get 486 (every taker busy, the queue full), else Active."""
        return QueueState(*self._queue_fields())

    def _queue_fields(self) -> tuple[str, int, int, str]:
        """`queue_state()`'s fields, which `_state_changed` compares without building it."""
        acd = self.acd
        if self.going_down:
            state = "Disabled"
        elif not acd.takers:
            state = "Inactive"
        elif not acd.free_takers() and len(acd.queue) >= acd.queue_size:
            state = "Full"
        else:
            state = "Active"
        uri = self.cfg.queue_uri or f"sip:{self.cfg.domain}"
        return (uri, len(acd.queue), acd.queue_size, state)

    def service_state(self) -> ServiceState:
        """NENA-STA-010.3 ServiceState of the PSAP service: GoingDown while closing,
        Unstaffed with no call taker registered, Overloaded while overload control sheds,
        else Normal; the security posture is the configured one."""
        state, reason, posture = self._service_fields()
        return ServiceState("PSAP", self.cfg.domain, state, reason, posture)

    def _service_fields(self) -> tuple[str, str, str]:
        """`service_state()`'s state, reason and posture (its service and domain are fixed)."""
        posture = self.config.state.posture
        if self.going_down:
            state, reason = "GoingDown", "psapd is shutting down"
        elif not self.acd.takers:
            state, reason = "Unstaffed", "no call taker registered"
        elif self.gate.enabled and self.admission.controller.overloaded:
            state, reason = "Overloaded", "overload control is shedding requests"
        else:
            state, reason = "Normal", ""
        return (state, reason, posture)

    def state_body(self, package: str) -> Any:
        if package == QUEUE_STATE:
            return self.queue_state()
        if package == SERVICE_STATE:
            return self.service_state()
        return super().state_body(package)

    def _state_changed(self) -> None:
        """After anything that may move the queue or the service state: NOTIFY the
        subscribers of what changed (coalesced by `events`), log a new service state.
        Compares the states' fields, not the i3 objects: it runs ~3 times a call, and
        building the two dataclasses each time was ~1 % of a one-process chain."""
        queue, service = self._queue_fields(), self._service_fields()
        before = self._published
        if before is not None and before == (queue, service):
            return
        self._published = (queue, service)
        if before is None or before[1][0] != service[0]:
            self.log("service_state", state=service[0], reason=service[1])
            self.events.changed(SERVICE_STATE)
            self.events.changed("emergency-ElementState")
        if before is None or before[0] != queue:
            self.events.changed(QUEUE_STATE)

    def load_changed(self) -> None:
        super().load_changed()
        self._state_changed()

    async def close(self) -> None:
        for test in list(self.tests.values()):
            self._end_test(test, "psapd closing", bye=False)
        self.going_down = True
        self._state_changed()
        if self._unstaffed is not None:
            self._unstaffed.cancel()
            self._unstaffed = None
        self._hand_back_unanswered()
        for a in self._awaiting_ack.values():
            a.timer.cancel()
        self._awaiting_ack.clear()
        if self.store is not None:
            self.store.close()
            self.store = None
        await super().close()

    def _hand_back_unanswered(self) -> None:
        """At stop, each call no taker has answered (ringing at one, or queued) gets 503 with
        Retry-After and its offer is CANCELled: the ESRP fails over to the alternate PSAP at
        once (503 is among its failover statuses). Left alone, the call would die with our
        sockets, and an ESRP that has our 180 or 182 waits on it (its failover timer stops at
        the first provisional answer). The ACD is not told: a call it ended would hand the
        freed taker the next queued call, which is being handed back too."""
        for call_id, call in list(self.active.items()):
            if call.server.final:
                continue  # answered: the caller and the taker talk on
            self._close_entry(call_id, "handed back 503")
            self.hand_back(call, "psapd closing", self.acd.retry_after)

    # ---------------------------------------------------------------- REGISTER

    def on_request(self, ctx: ServerCtx) -> None:
        req = ctx.request
        if req.method == "REGISTER" and "Route" not in req.headers:
            if not self.registrar.serves(req.uri) and not self.is_own(req.uri):
                ctx.reply(403, "Not our domain")
                return
            aor = aor_key(req.to_addr.uri)
            refusal = self._register_refusal(aor, ctx.source, req.call_id)
            if refusal is not None:
                self.log(
                    "register_refused", aor=aor[:120], hop=str(ctx.source.address), reason=refusal
                )
                ctx.reply(403, refusal)
                return
            bindings = answer_register(self, self.registrar, ctx)
            host = ctx.source.address.host
            if bindings:
                self._origin[aor] = host
            else:
                self._origin.pop(aor, None)
            if self.store is not None:
                try:
                    self.store.save(aor, bindings, host)
                except Exception as exc:  # a full disk must not stop call takers registering
                    self.log("registrations_not_saved", error=f"{type(exc).__name__}: {exc}")
            self._agent_state(aor, bool(bindings), "registered" if bindings else "unregistered")
            self._act(self.acd.add_taker(aor) if bindings else self.acd.remove_taker(aor))
            return
        test = self.tests.get(req.call_id) if req.to_addr.tag is not None else None
        if test is not None and test.dialog is not None:
            self._in_test_dialog(ctx, test)
            return
        super().on_request(ctx)

    def _register_refusal(self, aor: str, source: Source, call_id: str) -> str | None:
        """Why a REGISTER for `aor` from `source` is refused (None: accepted).

        An unauthenticated REGISTER could otherwise point a call taker's AOR at any contact
        and take its emergency calls: only configured AORs (`takers`), and only from the
        host holding the AOR's unexpired binding (a taker re-registering after its own or
        psapd's restart comes from the same host; the binding frees after it expires), or
        with the Call-ID of that binding (the same UA moved address: RFC 3261 §10.2.4 keeps
        one Call-ID for all the REGISTERs of a UA to a registrar).
        """
        if self._allowed and aor not in self._allowed:
            return "not a call taker of this PSAP"
        origin = self._origin.get(aor)
        if origin is not None and origin != source.address.host:
            bindings = self.registrar.lookup_aor(aor, time.time())
            if not bindings:
                del self._origin[aor]
            elif all(b.call_id != call_id for b in bindings):
                return "AOR bound from another host"
        return None

    # ---------------------------------------------------------------- calls

    def _calls_from(self) -> frozenset[str]:
        """`calls_from` as IP addresses (names through the static host table)."""
        return frozenset(self.hosts.get(h.lower(), h) for h in self.cfg.calls_from)

    def route(self, call: ProxyCall) -> None:
        req = call.request
        if req.method != "INVITE":
            self.reply(call, 405, extra=(("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS"),))
            return
        src = call.server.source.address.host
        if self.cfg.calls_from and src not in self._calls_from():
            self.log("call_refused", call_id=call.call_id, hop=src, reason="not from an ESRP")
            self.reply(call, 403, "Calls only from the ESRP")
            return
        if isinstance(req.uri, URN) and is_test_service(str(req.uri)):
            self._test_call(call)
            return
        entry = CallLogEntry(
            call.call_id,
            caller=str(req.from_addr.uri),
            location=_describe(extract_location(req)),
        )
        self._entries[call.call_id] = entry
        self.active[call.call_id] = call
        self.log(
            "call_received",
            call_id=call.call_id,
            caller=entry.caller,
            location=entry.location,
            hop=str(call.server.source.address),
        )
        self._act(self.acd.incoming(call.call_id))

    def _agent_state(self, taker: str, available: bool, reason: str) -> None:
        """Log a call taker joining or leaving the ACD ("agent_state", i3 primary agent
        state Available / NotAvailable), once per change (a REGISTER refresh is none)."""
        if available != (taker in self.acd.takers):
            state = "Available" if available else "NotAvailable"
            self.log("agent_state", taker=taker, state=state, reason=reason)

    def _act(self, actions: Sequence[AcdAction]) -> bool:
        """Carry out ACD actions; True when the call it concerns is still alive."""
        try:
            return self._carry_out(actions)
        finally:
            self._state_changed()  # the queue or the takers may have moved
            self._watch_unstaffed()

    def _watch_unstaffed(self) -> None:
        """Calls queued and no call taker registered: `unstaffed_wait` s for one to come
        back, then the ACD refuses them 480 (`Acd.unstaffed`). Without this a queued call
        (its 182 sent, so the ESRP's failover timer stopped) would wait for ever."""
        waiting = not self.acd.takers and bool(self.acd.queue) and not self.going_down
        if waiting and self._unstaffed is None:
            self._unstaffed = self.call_later(
                max(0.0, self.cfg.unstaffed_wait), self._unstaffed_expired
            )
        elif not waiting and self._unstaffed is not None:
            self._unstaffed.cancel()
            self._unstaffed = None

    def _unstaffed_expired(self) -> None:
        self._unstaffed = None
        actions = self.acd.unstaffed()
        if actions:
            self.log("unstaffed", calls=len(actions), waited_s=self.cfg.unstaffed_wait)
        self._act(actions)

    def _carry_out(self, actions: Sequence[AcdAction]) -> bool:
        alive = False
        for a in actions:
            call = self.active.get(a.call)
            if isinstance(a, Offer):
                if call is None:
                    self._act(self.acd.ended(a.call))
                    continue
                # the newest registration first: a restarted taker's new contact, not its old
                bindings = sorted(
                    self.registrar.lookup_aor(a.taker, time.time()),
                    key=lambda b: b.expires_at,
                    reverse=True,
                )
                entry = self._entries.get(a.call)
                if entry is not None:
                    entry.offers.append(a.taker)
                target = Target(
                    request_uri=bindings[0].contact if bindings else None,
                    timeout=a.timeout,
                    timer_until="final",
                    label=a.taker,
                    reason="offer",
                )
                if not bindings or self.forward(call, target) is None:
                    why = "unreachable" if bindings else "registration expired"
                    self._agent_state(a.taker, False, why)
                    self._act(self.acd.remove_taker(a.taker))
                    continue
                if entry is not None and len(entry.offers) > 1:
                    self.log("reoffer", call_id=a.call, taker=a.taker, offer=len(entry.offers))
                alive = True
            elif isinstance(a, WithdrawOffer):
                if call is not None:
                    self.log("withdraw_offer", call_id=a.call, taker=a.taker, reason=a.reason)
                    for b in call.branches:
                        if b.target.label == a.taker and b.pending:
                            self.cancel_branch(b, a.reason)
            elif isinstance(a, Queued):
                if call is not None and not call.server.final:
                    call.server.reply(182)
                    self.log("queued", call_id=a.call, position=a.position)
                    alive = True
            elif isinstance(a, Reject):
                if call is not None:
                    self.log("rejected", call_id=a.call, status=a.status, reason=a.reason)
                    self._close_entry(a.call, f"rejected {a.status}")
                    self.reply(call, a.status, extra=(("Retry-After", str(a.retry_after)),))
            elif isinstance(a, Connected):
                entry = self._entries.get(a.call)
                if entry is not None:
                    entry.taker, entry.answered, entry.outcome = a.taker, time.time(), "answered"
                    self.log(
                        "call_answered",
                        call_id=a.call,
                        taker=a.taker,
                        caller=entry.caller,
                        location=entry.location,
                        wait_s=round(entry.answered - entry.received, 3),
                    )
            elif isinstance(a, Release):
                self.log("late_answer", call_id=a.call, taker=a.taker)
        return alive

    def branch_response(self, branch: Branch, resp: Response) -> None:
        call = branch.call
        if not 200 <= resp.status < 300 or call.request.method != "INVITE":
            return
        if call.call_id in self._awaiting_ack:
            return  # a retransmission of the 2xx
        actions = self.acd.answered(call.call_id, branch.target.label)
        self._act(actions)
        entry = self._entries.get(call.call_id)
        client = branch.client
        if entry is None or client is None or not any(isinstance(a, Connected) for a in actions):
            return
        entry.caller_tag = call.request.from_addr.tag
        entry.taker_tag = resp.to_addr.tag
        # RFC 3261 §13.3.1.4: the caller ACKs the 2xx; until it does the call is not up
        timer = self.call_later(max(0.0, self.cfg.ack_timeout), self._ack_timeout, call.call_id)
        self._awaiting_ack[call.call_id] = _Answered(
            call, branch.target.label, resp, client.request, timer
        )

    def on_ack(self, req: Request, source: Source) -> None:
        test = self.tests.get(req.call_id)
        if test is not None and test.dialog is not None:
            if test.wait is not None and req.to_addr.tag == test.dialog.local_tag:
                self._test_actions(test, test.wait.on_ack(req))
            return  # ours: the end of the test call's 2xx, not a request to forward
        waiting = self._awaiting_ack.get(req.call_id)
        if waiting is not None and req.from_addr.tag == waiting.call.request.from_addr.tag:
            waiting.timer.cancel()
            del self._awaiting_ack[req.call_id]
        super().on_ack(req, source)

    def _ack_timeout(self, call_id: str) -> None:
        """No ACK for the 2xx in `ack_timeout`: hang up both legs, free the taker."""
        a = self._awaiting_ack.pop(call_id, None)
        if a is None:
            return
        self.log("ack_timeout", call_id=call_id, taker=a.taker, after_s=self.cfg.ack_timeout)
        self._bye_taker(a)
        self._bye_upstream(a)
        self._close_entry(call_id, "ack_timeout")
        self._act(self.acd.ended(call_id))

    def _send_bye(self, call_id: str, uri: URI, headers: list[tuple[str, str]], to: str) -> None:
        req = Request("BYE", uri, headers)
        try:
            dest, name, transport = self._next_hop(req)
            req.headers.prepend("Via", self.via(transport, new_branch()))
            self.send_request(req, dest, server_name=name)
        except Ng911Error as exc:
            self.log("bye_failed", call_id=call_id, to=to, error=str(exc)[:200])
            return
        self.log("bye_sent", call_id=call_id, to=to, reason="ack_timeout")

    def _bye_taker(self, a: _Answered) -> None:
        """BYE to the call taker on the caller's behalf (the taker's dialog: From = the
        caller, To = the taker's tag, CSeq above the INVITE's, §12.2.1.1)."""
        inv, ok = a.invite, a.ok
        contact = ok.headers.get("Contact")
        try:
            uri = parse_name_addr(contact).uri if contact else inv.uri
        except Ng911Error:
            uri = inv.uri
        headers = [
            ("Max-Forwards", "70"),
            ("From", inv.headers.get("From") or ""),
            ("To", ok.headers.get("To") or ""),
            ("Call-ID", inv.call_id),
            ("CSeq", f"{inv.cseq.seq + 1} BYE"),
            ("Reason", 'SIP;cause=408;text="no ACK for the 2xx"'),  # RFC 3326
        ]
        self._send_bye(inv.call_id, uri, headers, a.taker)

    def _bye_upstream(self, a: _Answered) -> None:
        """BYE to the caller on the taker's behalf, along the Record-Route set of the INVITE
        as we received it (§12.1.1: the callee's route set, in order)."""
        req, ok = a.call.request, a.ok
        contact = req.headers.get("Contact")
        if not contact:
            return
        try:
            uri = parse_name_addr(contact).uri
        except Ng911Error:
            return
        headers = [("Route", rr) for rr in req.headers.get_all("Record-Route")]
        headers += [
            ("Max-Forwards", "70"),
            ("From", ok.headers.get("To") or ""),
            ("To", req.headers.get("From") or ""),
            ("Call-ID", req.call_id),
            ("CSeq", "1 BYE"),
            ("Reason", 'SIP;cause=408;text="no ACK for the 2xx"'),
        ]
        self._send_bye(req.call_id, uri, headers, "caller")

    def branch_failed(self, branch: Branch, status: int | None) -> bool:
        call_id = branch.call.call_id
        taker = branch.target.label
        if status is None:
            return self._act(self.acd.no_answer(call_id, taker))
        return self._act(self.acd.declined(call_id, taker, status))

    def on_cancel(self, ctx: ServerCtx) -> None:
        call = ctx.data.get("call")
        actions: list[AcdAction] = []
        if isinstance(call, ProxyCall):
            # the branches are CANCELled by the proxy core below, not as withdrawn offers
            actions = [a for a in self.acd.ended(call.call_id) if not isinstance(a, WithdrawOffer)]
            self._close_entry(call.call_id, "abandoned")
        super().on_cancel(ctx)
        self._act(actions)

    def in_dialog(self, call: ProxyCall) -> None:
        if call.request.method != "BYE":
            return
        entry = self._entries.get(call.call_id)
        if entry is not None and entry.taker_tag is not None:
            req = call.request
            tags = {req.from_addr.tag, req.to_addr.tag}
            if tags != {entry.caller_tag, entry.taker_tag}:
                # not this call's dialog (a spoofed BYE): forwarded, the taker answers 481
                self.log("bye_foreign_dialog", call_id=call.call_id)
                return
        self._close_entry(call.call_id, "ended")
        self._act(self.acd.ended(call.call_id))

    def call_ended(self, call: ProxyCall) -> None:
        # the INVITE transaction got its final answer; a failed one frees the ACD slot
        status = call.server.final
        if status >= 300 and call.call_id in self.active:
            self._close_entry(call.call_id, f"failed {status}")
            self._act(self.acd.ended(call.call_id))

    def _close_entry(self, call_id: str, outcome: str) -> None:
        self.active.pop(call_id, None)
        waiting = self._awaiting_ack.pop(call_id, None)
        if waiting is not None:
            waiting.timer.cancel()
        entry = self._entries.pop(call_id, None)
        if entry is None:
            return
        entry.ended = time.time()
        if entry.outcome == "answered" and outcome == "ended":
            outcome = "completed"
        entry.outcome = outcome
        self.call_log.append(entry)
        if len(self.call_log) > 10000:
            del self.call_log[:5000]
        self.log(
            "call_log",
            call_id=call_id,
            **{k: v for k, v in entry.to_dict().items() if k != "call_id"},
        )

    # ---------------------------------------------------------------- test calls

    def _test_call(self, call: ProxyCall) -> None:
        """A `urn:service:test.sos` call: refused (`testcall.refusal`) or answered by
        psapd itself; the ACD never sees it."""
        cfg = self.cfg
        policy = TestCallPolicy(cfg.test_calls, cfg.test_call_limit, cfg.test_calls_when_busy)
        refused = refusal(
            policy,
            active=len(self.tests),
            queued=len(self.acd.queue),
            free_takers=len(self.acd.free_takers()),
        )
        if refused is not None:
            status, reason = refused
            self.log(
                "test_call_refused",
                call_id=call.call_id,
                service=str(call.request.uri),
                status=status,
                reason=reason,
            )
            extra = (("Retry-After", str(cfg.retry_after)),) if status == 486 else ()
            self.reply(call, status, reason, extra=extra)
            return
        test = _TestCall(call.call_id, call.server.source)
        self.tests[call.call_id] = test  # counted against the limit from now on
        self.spawn(self._answer_test(call, test))

    async def _answer_test(self, call: ProxyCall, test: _TestCall) -> None:
        req = call.request
        try:
            if _has_sdp(req):
                test.rtp = RtpPort()
                await test.rtp.open(self.cfg.rtp_host)
            if call.server.final or call.cancelled:
                self._end_test(test, "cancelled", bye=False)
                return
            tag = new_tag()
            call.server.to_tag = tag
            contact = NameAddr(self.own_uri(call.incoming_transport, lr=False, sips=False))
            test.dialog = Dialog.uas_from_request(req, tag, local_target=contact.uri)
        except (DialogError, OSError) as exc:
            self._end_test(test, f"cannot answer: {exc}", bye=False)
            self.reply(call, getattr(exc, "status", 500), "Test call not answered")
            return
        location = _describe(extract_location(req))
        answer = sdp(self.cfg.rtp_host, test.rtp.port, user=self.name) if test.rtp else None
        ctype, body = answer_body(self.name, location, answer)
        ok = call.server.reply(200, extra=(("Contact", str(contact)),), body=body,
                               content_type=ctype)  # fmt: skip
        self._finish(call)
        self.test_calls_answered += 1
        self.log(
            "test_call",
            call_id=call.call_id,
            service=str(req.uri),
            answered_by=str(contact.uri),
            caller=str(req.from_addr.uri),
            location=location,
        )
        test.wait = AckWait(ok, timers=self.timers)
        # the server transaction sent the 2xx once; AckWait resends it until the ACK
        self._test_actions(test, [a for a in test.wait.start() if not isinstance(a, Send)])
        test.timers["max"] = self.call_later(
            max(0.0, self.cfg.test_call_max), self._end_test, test, "test_call_max", True
        )

    def _test_actions(self, test: _TestCall, actions: list[Action]) -> None:
        for a in actions:
            if isinstance(a, Send):
                src = test.source
                self.send_stateless(a.message, src.address, connection_id=src.connection_id)
            elif isinstance(a, StartTimer):
                old = test.timers.pop(a.name, None)
                if old is not None:
                    old.cancel()
                test.timers[a.name] = self.call_later(a.delay, self._test_timer, test, a.name)
            elif isinstance(a, CancelTimer):
                handle = test.timers.pop(a.name, None)
                if handle is not None:
                    handle.cancel()
            elif isinstance(a, Timeout):
                self._end_test(test, "no ACK for the 2xx", bye=True)

    def _test_timer(self, test: _TestCall, name: str) -> None:
        test.timers.pop(name, None)
        if test.wait is not None:
            self._test_actions(test, test.wait.on_timer(name))

    def _in_test_dialog(self, ctx: ServerCtx, test: _TestCall) -> None:
        """A request in a test call's dialog: psapd is its UAS (RFC 3261 §12.2.2)."""
        req = ctx.request
        assert test.dialog is not None
        try:
            test.dialog.receive_request(req)
        except DialogError as exc:
            ctx.reply(exc.status, exc.reason)
            return
        if req.method == "BYE":
            ctx.reply(200)
            self._end_test(test, "caller hung up", bye=False)
        elif req.method == "INVITE":
            ctx.reply(488, "No re-INVITE on a test call")  # the session stays as it is
        else:
            ctx.reply(200)

    def _end_test(self, test: _TestCall, reason: str, bye: bool) -> None:
        if self.tests.pop(test.call_id, None) is None:
            return
        for handle in test.timers.values():
            handle.cancel()
        test.timers.clear()
        if test.rtp is not None:
            test.rtp.close()
        if bye and test.dialog is not None:
            try:
                dest, name = self.locate(test.dialog.next_hop())
                via = parse_via(self.via(dest.transport, new_branch()))
                self.send_request(test.dialog.create_request("BYE", via=via), dest,
                                  server_name=name)  # fmt: skip
            except Ng911Error as exc:
                self.log("bye_failed", call_id=test.call_id, to="caller", error=str(exc)[:200])
        self.log("test_call_ended", call_id=test.call_id, reason=reason, bye_sent=bye)
