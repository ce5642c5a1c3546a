"""psapd: the PSAP's call server. Accepts calls for its PSAP, queues them, offers each to a
free call taker, re-offers on no answer, and logs every call (who, where, which taker, when).

A stateful proxy (`proxy.py`) whose targets are its registered call takers (`registrar.py`)
chosen by the ACD (`acd.py`): an offer is a branch retargeted to the taker's contact with an
`offer_timeout` timer that runs until the final answer (the taker rings, then must answer);
on expiry psapd CANCELs that branch and offers the call to another taker. A queued call gets
`182 Queued` upstream (RFC 3261 §21.1.3); only when every taker is busy and the queue is full
does the caller get 486 (480 when no taker is registered at all) with Retry-After.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

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
from ng911.elements.config import PsapConfig
from ng911.elements.proxy import Branch, Proxy, ProxyCall, Target
from ng911.elements.registrar import Registrar, aor_key
from ng911.elements.registration import answer_register
from ng911.elements.routing import CallLocation, extract_location
from ng911.elements.runtime import ServerCtx
from ng911.location.civic import CivicAddress
from ng911.location.geodetic import reference_point
from ng911.sip.message import Response

__all__ = ["CallLogEntry", "Psapd"]


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

    def to_dict(self) -> dict[str, Any]:
        return {
            "call_id": self.call_id,
            "caller": self.caller,
            "location": self.location,
            "received": self.received,
            "taker": self.taker,
            "answered": self.answered,
            "ended": self.ended,
            "offers": self.offers,
            "outcome": self.outcome,
        }


def _describe(where: object) -> str | None:
    if isinstance(where, CallLocation):
        loc = where.location
        if isinstance(loc, CivicAddress):
            return "civic " + ", ".join(f"{k}={v}" for k, v in loc.fields)
        p = reference_point(loc)
        return f"{type(loc).__name__} {p.lat:.6f},{p.lon:.6f}"
    return None


class Psapd(Proxy):
    role = "psap"

    def __init__(self, config: PsapConfig, **kw: Any) -> None:
        super().__init__(config, **kw)
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

    # ---------------------------------------------------------------- REGISTER

    def on_request(self, ctx: ServerCtx) -> None:
        req = ctx.request
        if req.method == "REGISTER" and "Route" not in req.headers:
            if not self.registrar.serves(req.uri) and not self.is_own(req.uri):
                ctx.reply(403, "Not our domain")
                return
            aor = aor_key(req.to_addr.uri)
            bindings = answer_register(self, self.registrar, ctx)
            self._act(self.acd.add_taker(aor) if bindings else self.acd.remove_taker(aor))
            return
        super().on_request(ctx)

    # ---------------------------------------------------------------- calls

    def route(self, call: ProxyCall) -> None:
        req = call.request
        if req.method != "INVITE":
            self.reply(call, 405, extra=(("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS"),))
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

    def _act(self, actions: Sequence[AcdAction]) -> bool:
        """Carry out ACD actions; True when the call it concerns is still alive."""
        alive = False
        for a in actions:
            call = self.active.get(a.call)
            if isinstance(a, Offer):
                if call is None:
                    self._act(self.acd.ended(a.call))
                    continue
                bindings = self.registrar.lookup_aor(a.taker, time.time())
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
        if 200 <= resp.status < 300:
            self._act(self.acd.answered(branch.call.call_id, branch.target.label))

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
        if call.request.method == "BYE":
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
