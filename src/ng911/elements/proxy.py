"""Stateful proxy core (RFC 3261 §16), shared by the VSP proxy, the ESRP and psapd.

Why one core: the three proxies differ only in *where* a request goes (registered contact,
ESRP, LoST answer, free call taker) and in what they do when a branch fails (alternate
PSAP, next call taker). Everything else is RFC 3261 §16 and must be identical:

- §16.3 request validation: Max-Forwards 0 → 483 (OPTIONS answered instead, §16.3 item 3),
  loop detection → 482 (our Via carrying the same loop hash, §16.3 item 4 / §16.6 item 8);
- §16.4 route preprocessing: our own URI(s) on top of Route removed (both, when we double
  record-routed, RFC 5658);
- §16.6 forwarding: copy, Request-URI retarget, Max-Forwards decremented, Record-Route
  (`sips:` for a sips request, `sip:…;transport=tls` for another one on a TLS interface;
  two entries when the two sides differ in transport, RFC 5658 §4), a Route pushed on
  top (loose routing, `;lr`), our Via with a new branch; next hop = top Route, else the
  Request-URI;
- §16.7 responses: our Via popped, 1xx forwarded at once (not 100), 2xx forwarded (all of
  them; other branches cancelled), 3xx–6xx collected until no branch is pending, then the
  best one forwarded (487 once cancelled);
- §16.10 CANCEL: pending branches cancelled; the 487 they answer goes upstream;
- §16.8 Timer C: an INVITE branch with no final answer `timer_c` s (180) after its request
  or its last provisional answer is CANCELled and counts as a 408 (so the ESRP tries the
  alternate PSAP); and, §9.1, a branch with no final answer 64*T1 after our CANCEL (a next
  hop that died mid-call) is given up, its transaction destroyed, a 487 or 408 sent up:
  without it the call would ring upstream, and be held here, for ever;
- in-dialog requests (BYE, re-INVITE) and the ACK for a 2xx follow the Route headers
  (the ACK statelessly, it is not a transaction); one with no Route and a Request-URI we
  cannot route (`urn:service:sos`) is routed by the dialog it belongs to (`dialogs.py`),
  481 when it belongs to none (§12.2.2).

A branch can carry a timer: "no answer in N s" → the branch is CANCELled and treated as
failed (the ESRP's alternate-PSAP rule, psapd's re-offer rule). The subclass hooks are
`route` (where does a new request go), `branch_failed` (try another?), `branch_response`.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable, Iterable
from typing import Any, Final

from ng911.elements.contexts import OnFailure, OnResponse
from ng911.elements.dialogs import DialogTable, path_of, reroute
from ng911.elements.native import mypyc_attr
from ng911.elements.runtime import (
    CLOSING_RETRY_AFTER,
    ClientCtx,
    ElementError,
    ServerCtx,
    SipElement,
    loop_hash,
    new_branch_with,
    via_matches,
)
from ng911.elements.scheduling import LoopTimer, TimerHeap
from ng911.errors import Ng911Error
from ng911.net.address import Address, Source
from ng911.net.sips import requires_tls
from ng911.sip.message import Request, Response, make_response
from ng911.sip.transaction import make_cancel
from ng911.sip.uri import URI, NameAddr, SipURI, bounded_int, parse_name_addr

__all__ = ["Branch", "Proxy", "ProxyCall", "Target"]

DIALOG_CREATING = frozenset({"INVITE", "SUBSCRIBE", "REFER"})


class Target:
    """Where one branch goes: a new Request-URI and/or a Route pushed on top. Read-only by
    convention; a plain class like `Branch` (one or more per call)."""

    __slots__ = ("label", "reason", "request_uri", "route", "timeout", "timer_until")

    def __init__(
        self,
        request_uri: URI | None = None,
        route: URI | None = None,  # pushed as `Route: <uri;lr>` (loose routing)
        timeout: float | None = None,  # "no answer" timer of this branch
        # the timer stops at the first "provisional" or "final"
        timer_until: str = "provisional",
        label: str = "",  # what the log calls this branch (PSAP URI, taker AOR...)
        reason: str = "",
    ) -> None:
        self.request_uri = request_uri
        self.route = route
        self.timeout = timeout
        self.timer_until = timer_until
        self.label = label
        self.reason = reason

    def __repr__(self) -> str:
        return (
            f"Target(request_uri={self.request_uri!r}, route={self.route!r}, "
            f"timeout={self.timeout!r}, timer_until={self.timer_until!r}, "
            f"label={self.label!r}, reason={self.reason!r})"
        )


class Branch:
    """One forwarded copy of a `ProxyCall`'s request (plain classes, these two, not
    dataclasses: the compiled build runs a written `__init__` natively)."""

    __slots__ = (
        "abandoned",
        "c_deadline",
        "call",
        "cancel_sent",
        "client",
        "final",
        "provisional",
        "target",
        "timer",
        "timer_c",
    )  # fmt: skip

    def __init__(self, call: ProxyCall, target: Target) -> None:
        self.call = call
        self.target = target
        self.client: ClientCtx | None = None
        self.provisional = False
        self.final = 0
        # cancelled by us (timer, other branch answered, upstream CANCEL)
        self.abandoned = False
        self.timer: LoopTimer = None  # asyncio's or uvloop's TimerHandle, or None
        self.cancel_sent = False
        # RFC 3261 §16.8 Timer C of an INVITE branch, then §9.1's wait for the answer to
        # our CANCEL: its number in `Proxy.c_timers` (0: none), and the loop time it is due
        # (a provisional answer moves the time on; the timer re-arms when it fires early)
        self.timer_c = 0
        self.c_deadline = 0.0

    @property
    def pending(self) -> bool:
        return not self.final and not self.abandoned


class ProxyCall:
    """One proxied request: the server side, its branches, the best final answer so far."""

    __slots__ = (
        "answered", "best", "branches", "cancelled", "data", "incoming_transport", "initial",
        "loop_hash", "request", "server",
    )  # fmt: skip

    def __init__(
        self,
        server: ServerCtx,
        request: Request,
        incoming_transport: str,
        initial: bool = True,
        loop_hash: str = "",
    ) -> None:
        self.server = server
        self.request = request  # as received, after route preprocessing
        self.incoming_transport = incoming_transport
        self.initial = initial  # out of dialog (no To tag)
        self.loop_hash = loop_hash  # §16.6 item 8, of the request as received
        self.branches: list[Branch] = []
        self.best: Response | None = None
        self.cancelled = False
        self.answered = False  # a 2xx went upstream
        self.data: dict[str, Any] = {}

    @property
    def call_id(self) -> str:
        return self.request.call_id

    @property
    def pending(self) -> list[Branch]:
        return [b for b in self.branches if b.pending]


# what a finished call's request keeps beyond `Request.essentials`: the dialog's fields
# (the caller's Contact and the Record-Route set, RFC 3261 §12.1.1)
_DIALOG_FIELDS: Final = frozenset({"contact", "record-route"})


def _rank(status: int) -> int:
    """RFC 3261 §16.7 item 6: prefer 6xx, then the lowest class, 503 mapped to 500."""
    if status >= 600:
        return 0
    return status if status != 503 else 500


@mypyc_attr(allow_interpreted_subclasses=True)
class Proxy(SipElement):
    """The RFC 3261 §16 machinery; subclasses say where requests go."""

    role = "proxy"
    record_route = True
    sheds_load = True

    def __init__(
        self,
        config: Any,
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
        self.calls: dict[Any, ProxyCall] = {}
        self.dialogs = DialogTable()  # dialog paths, for in-dialog requests without a route
        self._marks: tuple[str, ...] | None = None
        self._marks_for = -1
        # the branches' transaction callbacks, bound once: a branch is the ctx's `owner`, so
        # no closure (function and cells) is made per branch
        self._branch_response_cb: OnResponse = self._branch_response
        self._branch_failure_cb: OnFailure = self._branch_failure
        # the branches' Timer C: one heap behind one loop timer, forgotten at close
        self.c_timers = TimerHeap(self._c_timer_due)

    async def close(self) -> None:
        await super().close()
        self.c_timers.stop()

    async def drain(self) -> None:
        """At stop, the calls being set up get `stop_drain` s to be answered (a new one gets
        503 meanwhile); each one still unanswered then is handed back: its branches are
        CANCELled and it gets 503 with Retry-After, so the previous hop tries another route
        at once. Why: closed under them, such a call would ring on upstream until that hop's
        Timer C (3 minutes), then fail, and the next hop would ring a phone no one can
        answer through us."""
        loop = self.loop
        end = loop.time() + self.config.stop_drain
        while self._in_setup() and loop.time() < end:
            await asyncio.sleep(0.02)
        for call in self._in_setup():
            self.hand_back(call, "closing", CLOSING_RETRY_AFTER)

    def hand_back(self, call: ProxyCall, reason: str, retry_after: int) -> None:
        """Give an unanswered call back to the previous hop at stop: its pending branches
        CANCELled, 503 with Retry-After upstream (the previous hop tries another route)."""
        for b in call.branches:
            if b.pending:
                self.cancel_branch(b, reason)
        self.log("handed_back", call_id=call.call_id, status=503, reason=reason)
        retry = (("Retry-After", str(retry_after)),)
        self.reply(call, 503, "Service Unavailable", extra=retry)

    def _in_setup(self) -> list[ProxyCall]:
        """The new calls (INVITEs out of dialog) not answered yet."""
        return [
            c
            for c in self.calls.values()
            if c.initial and not c.server.final and c.request.method == "INVITE"
        ]

    # ------------------------------------------------------------------ receiving

    def options_for_us(self, req: Request) -> bool:
        # RFC 3261 §11: OPTIONS to us (no user part, or our own URI, or hops exhausted)
        if req.max_forwards == 0 or "Route" not in req.headers:
            uri = req.uri
            return not isinstance(uri, SipURI) or uri.user is None or self.is_own(uri)
        return False

    def on_request(self, ctx: ServerCtx) -> None:
        received = ctx.request  # parsed and checked by the runtime: its header cache is warm
        mf = received.max_forwards
        if mf is not None and mf <= 0:
            raise ElementError(483, "Too Many Hops")
        initial = received.to_addr.tag is None
        # RFC 3261 §16.6 item 8: the loop hash is over the request as received; an
        # in-dialog request follows a route set that cannot loop back (§16.3 item 4 is a MAY)
        lhash = loop_hash(received) if initial else ""
        if initial and self._is_loop(received, lhash):
            raise ElementError(482, "Loop Detected")
        req = received.copy()
        self._strip_own_routes(req)
        call = ProxyCall(ctx, req, ctx.source.transport, initial=initial, loop_hash=lhash)
        self.calls[ctx.tx.key] = call
        ctx.data["call"] = call
        if not initial:
            # in-dialog: follow the Route set (§16.4, §16.6 item 6)
            self._route_in_dialog(req)
            self.in_dialog(call)
            if self.forward(call, Target(label="in-dialog")) is None:
                self._maybe_finish(call)
            return
        self.route(call)

    def _strip_own_routes(self, req: Request) -> None:
        """RFC 3261 §16.4: remove our URI from the top of Route (twice if double-RR'd)."""
        while "Route" in req.headers:
            top = req.headers.get("Route")
            if top is None:
                return
            if not any(m in top for m in self._route_marks()):
                return  # cheap: neither our name nor our address is in it
            try:
                uri = parse_name_addr(top).uri
            except Ng911Error:
                raise ElementError(400, "malformed Route header") from None
            if not self.is_own(uri):
                return
            req.headers.remove_first("Route")

    def _route_in_dialog(self, req: Request) -> None:
        """An in-dialog request with no Route left and a Request-URI we cannot route (the
        dialled `urn:service:sos`, or our own URI): route it by its dialog (`dialogs.py`);
        481 when it belongs to no dialog we know (RFC 3261 §12.2.2), not 416."""
        if "Route" in req.headers:
            return
        uri = req.uri
        if isinstance(uri, SipURI) and not self.is_own(uri):
            return  # routable as it stands: the hot path never looks the dialog up
        found = self.dialogs.lookup(req, time.monotonic())
        if found is None:
            raise ElementError(481, "Call/Transaction Does Not Exist")
        path, downstream = found
        reroute(req, path, downstream=downstream, is_own=self.is_own)
        if self.log.enabled:
            self.log(
                "dialog_route",
                call_id=req.call_id,
                method=req.method,
                direction="downstream" if downstream else "upstream",
                ruri=str(req.uri),
            )

    def _remember_dialog(self, branch: Branch, resp: Response) -> None:
        """The 2xx of an INVITE passed: remember the dialog's path (`dialogs.py`)."""
        call = branch.call
        client = branch.client
        caller_tag, callee_tag = call.request.from_addr.tag, resp.to_addr.tag
        if client is None or not caller_tag or not callee_tag:
            return
        src = call.server.source.address
        up = f"sip:{src.host}:{src.port};transport={src.transport};lr"
        path = path_of(call.request, client.request, resp, up_uri=up)
        self.dialogs.remember(call.call_id, caller_tag, callee_tag, path, time.monotonic())

    def _route_marks(self) -> tuple[str, ...]:
        """Substrings one of which any URI naming us contains: each of our names (FQDN, IPs,
        host-table aliases of our IPs) followed by ':', ';' or '>'."""
        if self._marks is None or self._marks_for != len(self.addresses):
            ips = {a.host for a in self.addresses}
            names = {self.fqdn.lower(), *ips}
            names.update(n for n, ip in self.hosts.items() if ip in ips)
            self._marks = tuple(f"{n}{c}" for n in names for c in (":", ";", ">"))
            self._marks_for = len(self.addresses)
        return self._marks

    def _is_loop(self, req: Request, lhash: str) -> bool:
        """RFC 3261 §16.3 item 4: our Via with the same loop hash = the request came back."""
        prefix = "z9hG4bK" + lhash + "."
        if not any(prefix in v for v in req.headers.get_all("Via")):
            return False  # cheap: no Via carries our hash (string search, nothing parsed)
        return any((v.branch or "").startswith(prefix) and via_matches(v, self) for v in req.vias)

    def on_ack(self, req: Request, source: Source) -> None:
        """ACK for a 2xx: forwarded statelessly along the Route set (§16.6, §13.2.2.4)."""
        fwd = req.copy()
        self._strip_own_routes(fwd)
        self._route_in_dialog(fwd)
        mf = fwd.max_forwards
        if mf is not None and mf <= 0:
            return
        fwd.headers.set("Max-Forwards", str((mf if mf is not None else 70) - 1))
        dest, name, transport = self._next_hop(fwd)
        self.push_via(fwd, transport, new_branch_with())
        self.send_stateless(fwd, dest, server_name=name)

    def stray_response(self, resp: Response, source: Source) -> None:
        """A 2xx retransmission after the client transaction ended: forward statelessly."""
        if not (200 <= resp.status < 300) or resp.cseq.method != "INVITE":
            return
        vias = resp.vias
        if len(vias) < 2 or not via_matches(vias[0], self):
            return
        fwd = resp.copy()
        fwd.headers.remove_first("Via")
        nxt = vias[1]
        host = nxt.received or nxt.host
        rport = bounded_int(nxt.rport, 65535) if nxt.rport else None
        port = rport if rport is not None else (nxt.port or 5060)
        transport = nxt.transport.lower()
        if transport not in ("udp", "tcp", "tls"):
            return
        self.send_stateless(fwd, Address(transport, host, port))

    # ------------------------------------------------------------------ hooks

    def route(self, call: ProxyCall) -> None:
        """Decide where a new (out-of-dialog) request goes: call `forward` or `reply`."""
        if self.forward(call, Target(label="request-uri")) is None:
            self._maybe_finish(call)

    def in_dialog(self, call: ProxyCall) -> None:
        """Seen an in-dialog request (psapd watches BYEs)."""

    def branch_response(self, branch: Branch, resp: Response) -> None:
        """A provisional or 2xx answer of a branch (before it goes upstream)."""

    def branch_failed(self, branch: Branch, status: int | None) -> bool:
        """A branch ended without success (`status` None: no answer in time). Return True
        when another branch was started; False forwards the best answer upstream."""
        return False

    def call_ended(self, call: ProxyCall) -> None:
        """The proxied transaction got its final answer upstream."""

    # ------------------------------------------------------------------ forwarding

    def reply(self, call: ProxyCall, status: int, reason: str | None = None, **kw: Any) -> None:
        if call.server.final:
            return
        call.server.reply(status, reason, **kw)
        if status >= 200:
            self._finish(call)

    def _next_hop(self, req: Request) -> tuple[Address, str | None, str]:
        routes = req.headers.get("Route")
        uri = parse_name_addr(routes).uri if routes is not None else req.uri
        dest, name = self.locate(uri)
        return dest, name, dest.transport

    def forward(self, call: ProxyCall, target: Target) -> Branch | None:
        """RFC 3261 §16.6: build and send one branch; returns it (None if it failed)."""
        if call.cancelled:
            self.reply(call, 487)
            return None
        req = call.request.copy()
        if target.request_uri is not None:
            req.uri = target.request_uri
        mf = req.max_forwards
        req.headers.set("Max-Forwards", str((mf if mf is not None else 70) - 1))
        if target.route is not None:
            route_uri = target.route
            if isinstance(route_uri, SipURI) and not route_uri.has_param("lr"):
                route_uri = route_uri.with_params(lr=None)
            req.headers.prepend("Route", str(NameAddr(route_uri)))
        branch = Branch(call, target)
        try:
            if target.route is not None:  # we just pushed it: no need to parse it back
                dest, name = self.locate(target.route)
                transport = dest.transport
            else:
                dest, name, transport = self._next_hop(req)
        except Ng911Error as exc:
            # no branch: the caller tries another target or ends the call (`_maybe_finish`)
            status = getattr(exc, "status", 503)
            self.log("route_failed", call_id=call.call_id, target=target.label, error=str(exc))
            resp = make_response(call.request, status if isinstance(status, int) else 503)
            if call.best is None or _rank(resp.status) < _rank(call.best.status):
                call.best = resp
            return None
        if call.initial and req.method in DIALOG_CREATING and self.record_route:
            self._add_record_route(req, call.incoming_transport, transport)
        self.push_via(req, transport, new_branch_with(call.loop_hash))
        call.branches.append(branch)
        if self.log.enabled:  # not a string formatted per call when nobody reads it
            self.log(
                "forward",
                call_id=call.call_id,
                method=req.method,
                hop=f"{transport}:{dest.host}:{dest.port}",
                target=target.label or str(req.uri),
                ruri=str(req.uri),
                reason=target.reason or None,
            )
        branch.client = self.send_request(
            req,
            dest,
            server_name=name,
            on_response=self._branch_response_cb,
            on_failure=self._branch_failure_cb,
            owner=branch,
        )
        if req.method == "INVITE":
            if target.timeout is not None:
                branch.timer = self.call_later(target.timeout, self._branch_timeout, branch)
            self._arm_timer_c(branch, self.config.timer_c)
        return branch

    # ------------------------------------------------------------------ Timer C

    def _arm_timer_c(self, branch: Branch, delay: float) -> None:
        """(Re)start the branch's Timer C `delay` s from now. Why a proxy needs it: a next
        hop that answered 180 and then died (a crashed PSAP, a lost TLS connection) would
        leave the call ringing upstream for ever, its transactions held for ever."""
        branch.c_deadline = self.loop.time() + delay
        if branch.timer_c:
            self.c_timers.cancel(branch.timer_c)
        branch.timer_c = self.c_timers.start(self.loop, delay, branch, "C")

    def _stop_timer_c(self, branch: Branch) -> None:
        if branch.timer_c:
            self.c_timers.cancel(branch.timer_c)
            branch.timer_c = 0

    def _c_timer_due(self, branch: Any, name: str) -> None:
        self._guarded(self._timer_c, (branch,))

    def _timer_c(self, branch: Branch) -> None:
        branch.timer_c = 0
        if branch.final:
            return
        left = branch.c_deadline - self.loop.time()
        if left > 0.01:  # a provisional answer moved it on (§16.7 item 2)
            self._arm_timer_c(branch, left)
            return
        call = branch.call
        client = branch.client
        if branch.cancel_sent:
            # §9.1: no final answer 64*T1 after our CANCEL: the next hop is gone. Destroy
            # the transaction; a branch the call still waits on counts as a 408
            self.log("branch_given_up", call_id=call.call_id, target=branch.target.label)
            if client is not None:
                self.abandon_client(client)
            self._on_branch_failure(branch, 408, "no final answer to our CANCEL")
            return
        self.log("timer_c", call_id=call.call_id, target=branch.target.label)
        if not branch.provisional:  # §16.8: as if the transaction had got a 408
            self._on_branch_failure(branch, 408, "timer C")
            return
        self.give_up_branch(branch, "timer C: no final answer", 408)  # §16.8: CANCEL it

    def _cancel_sent(self, branch: Branch) -> None:
        """Our CANCEL for the branch went out: its INVITE gets 64*T1 to end (§9.1)."""
        branch.cancel_sent = True
        self._arm_timer_c(branch, 64 * self.timers.t1)

    def _add_record_route(self, req: Request, in_t: str, out_t: str) -> None:
        """Record-Route (§16.6 item 4); doubled when the interfaces differ (RFC 5658).

        `sips:` when the Request-URI or the top Route is `sips:` (§16.6 item 4: MUST);
        otherwise a TLS interface is recorded as `sip:…;transport=tls`, as Kamailio does:
        user agents such as baresip cannot send a non-sips dialog's requests to a `sips:`
        route (RFC 5630 §3.1.3 deprecates `transport=tls`, but a `sip:` route must keep
        the hop on TLS somehow).
        """
        secure = requires_tls(req)
        out_uri = self.own_uri(out_t, sips=secure)
        if in_t != out_t:
            # top entry faces the callee (out), the second faces the caller (in)
            req.headers.prepend("Record-Route", str(NameAddr(self.own_uri(in_t, sips=secure))))
            req.headers.prepend("Record-Route", str(NameAddr(out_uri)))
        else:
            req.headers.prepend("Record-Route", str(NameAddr(out_uri)))

    def cancel_branch(self, branch: Branch, reason: str) -> None:
        """CANCEL a pending INVITE branch (§16.10); its final answer will be ignored."""
        if branch.abandoned or branch.final:
            return
        branch.abandoned = True
        if branch.timer is not None:
            branch.timer.cancel()
            branch.timer = None
        client = branch.client
        if client is None or client.request.method != "INVITE" or branch.cancel_sent:
            return
        self._cancel_sent(branch)
        cancel = make_cancel(client.request)
        self.log(
            "cancel_branch", call_id=branch.call.call_id, target=branch.target.label, reason=reason
        )
        self.send_request(cancel, client.dest, server_name=client.server_name)

    # ------------------------------------------------------------------ branch events

    def _branch_response(self, ctx: ClientCtx, resp: Response) -> None:
        if isinstance(ctx.owner, Branch):
            self._on_branch_response(ctx.owner, resp)

    def _branch_failure(self, ctx: ClientCtx, status: int, cause: str) -> None:
        if isinstance(ctx.owner, Branch):
            self._on_branch_failure(ctx.owner, status, cause)

    def _branch_timeout(self, branch: Branch) -> None:
        if not branch.pending:
            return
        call = branch.call
        self.log(
            "branch_no_answer",
            call_id=call.call_id,
            target=branch.target.label,
            timeout=branch.target.timeout,
        )
        self.give_up_branch(branch, f"no answer in {branch.target.timeout} s", None)

    def give_up_branch(self, branch: Branch, reason: str, status: int | None) -> None:
        """CANCEL a branch still waiting and let its call go on without it: to the next
        target (`branch_failed`, given `status`; None: no answer in time), else the best
        answer so far upstream."""
        self.cancel_branch(branch, reason)
        call = branch.call
        if call.server.final:
            return
        if not self.branch_failed(branch, status):
            self._maybe_finish(call)

    def _on_branch_failure(self, branch: Branch, status: int, cause: str) -> None:
        if branch.final:
            return
        self.log(
            "branch_failed",
            call_id=branch.call.call_id,
            target=branch.target.label,
            status=status,
            cause=cause,
        )
        resp = make_response(
            branch.call.request,
            status,
            "Request Timeout" if status == 408 else "Service Unavailable",
        )
        self._branch_done(branch, resp, None)

    def _on_branch_response(self, branch: Branch, resp: Response) -> None:
        call = branch.call
        status = resp.status
        if status == 100:
            return
        if status < 200:
            if branch.abandoned:
                return
            if not branch.cancel_sent:  # §16.7 item 2: a provisional answer resets Timer C
                branch.c_deadline = self.loop.time() + self.config.timer_c
            branch.provisional = True
            if branch.timer is not None and branch.target.timer_until == "provisional":
                branch.timer.cancel()
                branch.timer = None
            self.branch_response(branch, resp)
            if not call.server.final:
                self._upstream(call, resp)
            return
        if status < 300:
            retransmitted = branch.final != 0  # the dialog is remembered at its first 2xx
            branch.final = status
            self._stop_timer_c(branch)
            if branch.timer is not None:
                branch.timer.cancel()
                branch.timer = None
            self.branch_response(branch, resp)
            if call.initial and call.request.method == "INVITE" and not retransmitted:
                self._remember_dialog(branch, resp)
            first = not call.answered
            call.answered = True
            self._upstream(call, resp)  # every 2xx goes upstream (§16.7 item 9)
            if first:
                for other in call.branches:
                    if other is not branch and other.pending:
                        self.cancel_branch(other, "answered elsewhere")
                self._finish(call)
            return
        self._branch_done(branch, resp, status)

    def _branch_done(self, branch: Branch, resp: Response, status: int | None) -> None:
        """A branch ended with a 3xx–6xx (or a synthetic 408/503)."""
        call = branch.call
        was_abandoned = branch.abandoned
        branch.final = resp.status
        self._stop_timer_c(branch)
        if branch.timer is not None:
            branch.timer.cancel()
            branch.timer = None
        if call.best is None or _rank(resp.status) < _rank(call.best.status):
            call.best = resp
        if call.server.final or was_abandoned:
            self._maybe_finish(call)
            return
        if call.cancelled:
            self._maybe_finish(call)
            return
        retried = self.branch_failed(branch, resp.status if status is not None else None)
        if not retried:
            self._maybe_finish(call)

    def _maybe_finish(self, call: ProxyCall) -> None:
        if call.server.final or call.pending:
            return
        if call.cancelled:
            self.reply(call, 487)
            return
        if call.best is None:
            self.reply(call, 408)
            return
        self._upstream(call, call.best)

    def _upstream(self, call: ProxyCall, resp: Response) -> None:
        """§16.7 item 3/9: our Via off, then out through the server transaction."""
        fwd = resp.copy()
        if len(fwd.headers.get_all("Via")) > len(call.request.headers.get_all("Via")):
            fwd.headers.remove_first("Via")
        if fwd.status >= 200 and call.server.final and fwd.status >= 300:
            return
        if 200 <= fwd.status < 300 and call.server.final:
            # a further 2xx (retransmission or another branch): resend through the tx
            self._run_2xx(call, fwd)
            return
        call.server.respond(fwd)
        if fwd.status >= 200:
            self._finish(call)

    def _run_2xx(self, call: ProxyCall, resp: Response) -> None:
        self._run(call.server, call.server.tx.send_response(resp))

    def _finish(self, call: ProxyCall) -> None:
        if call.data.get("finished"):
            return
        call.data["finished"] = True
        if call.request.method == "BYE" and not call.initial:
            self.dialogs.forget(call.request)  # the dialog ends, whatever the answer (§15.1.2)
        self.call_ended(call)
        # the transactions keep what 2xx retransmissions and late responses still need
        self.calls.pop(call.server.tx.key, None)
        # and so does the call: what a late 2xx of another branch (§16.7 item 9) or a BYE
        # on the callee's behalf (psapd's ACK timeout) reads, not the body (`essentials`)
        call.request = call.request.essentials(_DIALOG_FIELDS)

    def server_released(self, ctx: ServerCtx) -> None:
        call = ctx.data.get("call")
        if isinstance(call, ProxyCall):
            for b in call.branches:
                if b.timer is not None:
                    b.timer.cancel()
                    b.timer = None
                if b.final:  # an unfinished one keeps its Timer C: it ends the transaction
                    self._stop_timer_c(b)
            call.branches.clear()  # Branch.call <-> ProxyCall.branches: the last cycle
            call.data.clear()

    def on_cancel(self, ctx: ServerCtx) -> None:
        call = ctx.data.get("call")
        if not isinstance(call, ProxyCall):
            ctx.reply(487)
            return
        call.cancelled = True
        pending = call.pending
        for b in pending:
            self._send_cancel(b)  # not abandoned: their 487 ends the transaction
        if not pending:
            self.reply(call, 487)

    def _send_cancel(self, branch: Branch) -> None:
        if branch.timer is not None:
            branch.timer.cancel()
            branch.timer = None
        client = branch.client
        if client is None or branch.cancel_sent or client.request.method != "INVITE":
            return
        self._cancel_sent(branch)
        self.send_request(make_cancel(client.request), client.dest, server_name=client.server_name)
