"""The transaction-user plumbing every element shares (RFC 3261 §8, §17, §18 glue).

Why one module: the sans-I/O transaction machines (`ng911.sip.transaction`) return actions
(send, start a timer, deliver, time out); the transport layer (`ng911.net`) moves bytes.
Something has to carry the actions out, own the clock (`loop.call_later`), route a received
message to its transaction or to the element, and answer what every SIP element answers the
same way. That is `SipElement`; the caller, the proxies and the call taker subclass it and
only decide what to do with a request or a response.

What it does for every element:
- requests: retransmissions absorbed by their server transaction; `100 Trying` at once for
  an INVITE (RFC 3261 §16.2 / §17.2.1); CANCEL answered 200 (or 481) and passed on to the
  element, whose INVITE then ends with 487 (§9.2); OPTIONS answered 200 with Allow and
  Accept, or 503 with Retry-After once `close()` began, as a new INVITE then is (§11.2: an
  ESRP's ping marks a stopping PSAP down before a call is sent there); an ACK for a 2xx goes
  to the element (§13.2.2.4: not a transaction);
- bad input: every `Ng911Error` a handler raises on hostile input is answered with the
  status the error carries (400 for a malformed header, 483, 416...), never a crash;
- CPU accounting: `time.thread_time()` around every handler, per element (`cpu_seconds`).

What it holds, each in its own module: its event log (`elementlog.EventLog`), its names and
next hops (`addressing.Addressing`, a base class), overload control and TLS peer checks at
its door (`admitting.Gate`). TLS contexts, clients and the process around it come from
`ng911.node`: an element takes them ready-made.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import ssl
import time
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, TextIO

from ng911.elements.addressing import (
    Addressing,
    WorkerRole,
    loop_hash,
    new_branch_with,
    via_matches,
)
from ng911.elements.admitting import Gate, check_peer
from ng911.elements.config import ElementConfig
from ng911.elements.contexts import ClientCtx, Ctx, OnFailure, OnResponse, ServerCtx
from ng911.elements.elementlog import EventLog
from ng911.elements.errors import ElementError, status_of
from ng911.elements.events import StateEvents
from ng911.elements.i3state import ElementState, SecurityPosture
from ng911.elements.native import mypyc_attr
from ng911.elements.scheduling import Scheduler, TimerHeap
from ng911.errors import Ng911Error
from ng911.net.address import Address, Source
from ng911.net.admission import ListenerLimits
from ng911.net.errors import TransportError
from ng911.net.transport import SipTransportLayer
from ng911.sip.message import Request, Response, make_response
from ng911.sip.transaction import (
    CancelTimer,
    Deliver,
    Linger,
    Send,
    StartTimer,
    State,
    Terminated,
    Timeout,
    TimerConfig,
    TransactionTable,
    client_transaction,
    server_key,
    server_transaction,
)

__all__ = [
    "ALLOW",
    "ClientCtx",
    "ElementError",
    "EventLog",
    "ServerCtx",
    "SipElement",
    "WorkerRole",
    "loop_hash",
    "new_branch_with",
    "raise_gc_threshold",
    "status_of",
    "via_matches",
]

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, SUBSCRIBE, NOTIFY"
ACCEPT = "application/sdp, application/pidf+xml, multipart/mixed"

log = logging.getLogger("ng911.elements")

# transaction states in which a request or its answer is still on its way (`in_flight`)
_WAITING = frozenset({State.CALLING, State.TRYING, State.PROCEEDING})
# ... and with no answer at all yet: sent and not answered even provisionally, or received
# (non-INVITE) and not answered (`close` waits for these; an INVITE in PROCEEDING waits for
# a person, not for the wire)
_UNANSWERED = frozenset({State.CALLING, State.TRYING})
#: s `close` waits at most for the answers to requests in flight (`_UNANSWERED`)
CLOSE_WAIT = 0.5
#: Retry-After (s) of the 503 a new call gets while the element stops (`_refuse_closing`)
CLOSING_RETRY_AFTER = 30

# Allocations between two young-generation collections of the cyclic collector (CPython's
# default: 700). An element allocates ~1,000 container objects per call, most of them freed
# by reference counting within milliseconds; at 700 the collector examines (and promotes to
# the old generation) objects that were about to die anyway, and the old generation's full
# collections then walk every live transaction. bench/proxy.py, VspProxy, 5,000 calls held
# live: 676 µs of CPU per call at 700, 514 at 10,000, 496 at 50,000, 488 with no collector.
GC_GEN0_THRESHOLD = 50_000


def raise_gc_threshold(gen0: int = GC_GEN0_THRESHOLD) -> None:
    """Raise (never lower) the collector's young-generation threshold for a SIP element
    process; cyclic garbage is still collected, just in larger, rarer batches."""
    t0, t1, t2 = gc.get_threshold()
    if 0 < t0 < gen0:
        gc.set_threshold(gen0, t1, t2)


# ------------------------------------------------------------------------------ the element


@mypyc_attr(allow_interpreted_subclasses=True)
class SipElement(Scheduler, Addressing):
    """Base of every element: listeners, transactions, timers, OPTIONS/CANCEL, logging."""

    # class variables (ClassVar: what a subclass, compiled or not, says is what the
    # compiled build reads, not a per-instance default)
    role: ClassVar[str] = "element"
    answers_options: ClassVar[bool] = True
    # overload control and per-source limits (`overload.py`): the proxies turn it on; a UA
    # serves its own few dialogs and has nothing to shed
    sheds_load: ClassVar[bool] = False

    def __init__(
        self,
        config: ElementConfig,
        *,
        log_keep: int = 0,
        observers: Iterable[Callable[[Any], None]] = (),
        client_tls: ssl.SSLContext | None = None,
        server_tls: ssl.SSLContext | None = None,
    ) -> None:
        """`client_tls`/`server_tls`: the contexts for outgoing TLS and for TLS listeners
        (`ng911.node.build.tls_contexts` makes them from `config.tls`)."""
        hosts = {h.name.lower(): h.address for h in config.hosts}
        Addressing.__init__(self, config.name, config.fqdn, hosts)
        Scheduler.__init__(self)
        self.config = config
        self.timers = TimerConfig(t1=config.t1, t2=max(config.t1, 4.0))
        stream: TextIO | None = None
        if config.log_file:
            stream = open(config.log_file, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._log_stream = stream
        self.log = EventLog(self.name, stream=stream, keep=log_keep)
        self.server_tls = server_tls
        self.transport = SipTransportLayer(
            element=self.name,
            client_tls=client_tls,
            handshake_timeout=config.handshake_timeout,
            first_message_timeout=config.first_message_timeout,
            idle_timeout=config.idle_timeout,
        )
        self.transport.on_message = self._on_message
        self.transport.observers.extend(observers)
        self.table = TransactionTable()
        self._ctxs: dict[Any, Ctx] = {}
        # every transaction timer of this element, behind one loop timer (`TimerHeap`)
        self.tx_timers = TimerHeap(self._timer)
        self.handled = 0
        self.held_bytes = 0  # request text held by server transactions
        # counters read at scrape time (`ng911.node.metrics`), plain ints and dicts so the
        # per-message path pays an increment, not a metrics library call
        self.server_transactions = 0  # started since start-up
        self.client_transactions = 0
        # calls: final status of each initial INVITE this element answered (a caller: of
        # each call it placed; 0 = none came) -> how many
        self.call_outcomes: dict[int, int] = {}
        # the process's "give freed memory back to the OS" (malloc_trim), called after a
        # flood; `ng911.node.build` sets it, a library element leaves the heap alone
        self.release_memory: Callable[[], bool] | None = None
        # the node's LogSender when its config names a logger (`ng911.node.build` sets it; an
        # attribute, not a weak mapping: a compiled element takes no weak reference)
        self.log_sender: Any = None
        self.gate = Gate(self)
        self.admission = self.gate.admission
        self.going_down = False  # close() started: ElementState GoingDown
        # i3 state notifications (RFC 6665): SUBSCRIBE/NOTIFY addressed to this element
        self.events = StateEvents(self, config.state)

    @property
    def transactions(self) -> int:
        """Live transactions (server and client): overload control's table size."""
        return len(self._ctxs)

    @property
    def in_flight(self) -> int:
        """Transactions still waiting for an answer (sent without a final response yet, or
        received and not yet answered): 0 means no request or response of this element is
        on the wire, the quiet moment at which the testbed may close its connections."""
        return sum(1 for c in self._ctxs.values() if c.tx.state in _WAITING)

    def count_call(self, status: int) -> None:
        """Count a call's outcome by its final status (`call_outcomes`)."""
        self.call_outcomes[status] = self.call_outcomes.get(status, 0) + 1

    # -------------------------------------------------------------- start/stop

    async def start(self) -> list[Address]:
        """Open every configured listener; returns the bound addresses."""
        self._loop = asyncio.get_running_loop()
        raise_gc_threshold()
        shared = self.worker is not None
        for lst in self.config.listeners:
            tls = None
            if lst.transport == "tls":
                if self.server_tls is None:
                    raise ElementError(500, f"{self.name}: a TLS listener needs a server context")
                tls = self.server_tls
            limits = ListenerLimits(lst.max_connections, lst.max_per_source, lst.allowed_peers)
            addr = await self.transport.listen(
                lst.transport, lst.host, lst.port, tls=tls, reuse_port=shared, limits=limits
            )
            self.addresses.append(addr)
            self.log("listening", transport=addr.transport, address=f"{addr.host}:{addr.port}")
        udp = next((a for a in self.addresses if a.transport == "udp"), None)
        if self.worker is not None and udp is not None:
            self.via_udp = await self.transport.listen_requests_udp(udp.host, self.worker.udp_port)
            self.log(
                "worker",
                index=self.worker.index,
                count=self.worker.count,
                via=f"{self.via_udp.host}:{self.via_udp.port}",
            )
        self.gate.start()
        await self.started()
        return list(self.addresses)

    async def started(self) -> None:
        """Hook: after the listeners are up (REGISTER, for a UA)."""

    async def close(self) -> None:
        self.going_down = True
        await self.drain()
        had = len(self.events.notifier) + len(self.events.held)
        await self.events.close()  # unsubscribe; final NOTIFYs, saying GoingDown
        await self._await_answers(CLOSE_WAIT)
        if had:
            await asyncio.sleep(0.02)  # let the last messages on a stream leave
        self.gate.stop()
        self.tx_timers.stop()
        self._ctxs.clear()
        for task in list(self._tasks):
            task.cancel()
        await self.transport.close()
        if self._log_stream is not None:
            self._log_stream.close()
            self._log_stream = None

    async def drain(self) -> None:
        """Hook, at the start of `close` (new calls are refused from now on): finish or
        hand back the calls in progress while the sockets are still open."""

    async def _await_answers(self, wait: float) -> None:
        """Wait, at most `wait` s, until no transaction is without an answer
        (`_UNANSWERED`). A keep-alive, ping or refresh sent a moment before close would
        otherwise be answered to a closed socket (the peer's log then holds a response no
        one received, a REGISTER's outcome is left unknown), and a request just received
        would go unanswered, to be retransmitted to nobody. Bounded: a peer that never
        answers delays a close by `wait` s, no more."""
        loop = self.loop
        end = loop.time() + wait
        while loop.time() < end and any(c.tx.state in _UNANSWERED for c in self._ctxs.values()):
            await asyncio.sleep(0.01)

    # -------------------------------------------------------------- sending

    def send_request(
        self,
        request: Request,
        dest: Address,
        *,
        server_name: str | None = None,
        on_response: OnResponse | None = None,
        on_failure: OnFailure | None = None,
        owner: Any = None,
    ) -> ClientCtx:
        """Send `request` in a new client transaction (its top Via must be ours). `owner`:
        what the callbacks act for (`ClientCtx.owner`)."""
        tx = client_transaction(request, reliable=dest.reliable, timers=self.timers)
        ctx = ClientCtx(self, tx, request, dest, server_name, on_response, on_failure)
        ctx.owner = owner
        self.table.add(tx)
        self._ctxs[tx.key] = ctx
        self.client_transactions += 1
        self._run(ctx, tx.start())
        return ctx

    def send_stateless(
        self,
        message: Request | Response,
        dest: Address,
        *,
        server_name: str | None = None,
        connection_id: int | None = None,
    ) -> None:
        """Send outside any transaction (ACK for a 2xx, a 2xx retransmission)."""
        self._send_now(message, dest, server_name, connection_id, None)

    def _send_now(
        self,
        message: Request | Response,
        dest: Address,
        server_name: str | None,
        connection_id: int | None,
        ctx: Ctx | None,
    ) -> None:
        """Send at once: over UDP straight into the socket, over an open TCP/TLS connection
        straight into it (no coroutine: neither waits); otherwise (a connection to open, a
        write buffer to drain) through `drive`."""
        try:
            if dest.transport == "udp":
                sent = self.transport.send_datagram(message, dest)
            else:
                sent = self.transport.send_stream(message, dest, server_name, connection_id)
        except (TransportError, OSError, ssl.SSLError) as exc:
            self._send_failed(message, dest, exc, ctx)
            return
        except Exception as exc:  # as `drive` treats a failing send: logged, not raised
            self.errors += 1
            self.log("task_failed", error=f"{type(exc).__name__}: {exc}")
            return
        if sent:
            return

        async def send() -> None:
            try:
                await self.transport.send(
                    message, dest, server_name=server_name, connection_id=connection_id
                )
            except (TransportError, OSError, ssl.SSLError) as exc:
                self._send_failed(message, dest, exc, ctx)

        self.drive(send())

    def _send_failed(
        self, message: Request | Response, dest: Address, exc: BaseException, ctx: Ctx | None
    ) -> None:
        self.log(
            "send_failed",
            call_id=message.headers.get("Call-ID"),
            first_line=message.first_line,
            dest=str(dest),
            error=str(exc),
        )
        if isinstance(ctx, ClientCtx) and not ctx.failed:
            # later, never inside the _run that is sending: no re-entrancy
            self.loop.call_soon(self._guarded, self._transport_failed, (ctx,))

    def abandon_client(self, ctx: ClientCtx) -> None:
        """Give up a client transaction whose peer will never end it (`abandon`): it
        leaves the table at once, with its timers and the call state it holds."""
        ctx.failed = True
        self._run(ctx, ctx.tx.abandon())

    def _transport_failed(self, ctx: ClientCtx) -> None:
        if not ctx.failed:
            self._run(ctx, ctx.tx.on_transport_error())

    # -------------------------------------------------------------- running actions

    def _run(self, ctx: Ctx, actions: list[Any]) -> None:
        for a in actions:
            if isinstance(a, Send):
                if isinstance(ctx, ClientCtx):
                    self._send_now(a.message, ctx.dest, ctx.server_name, None, ctx)
                else:
                    src = ctx.source
                    self._send_now(a.message, src.address, None, src.connection_id, ctx)
            elif isinstance(a, StartTimer):
                timers = self.tx_timers
                old = ctx.timers.pop(a.name, None)
                if old is not None:
                    timers.cancel(old)
                ctx.timers[a.name] = timers.start(self.loop, a.delay, ctx, a.name)
            elif isinstance(a, CancelTimer):
                seq = ctx.timers.pop(a.name, None)
                if seq is not None:
                    self.tx_timers.cancel(seq)
            elif isinstance(a, Deliver):
                if isinstance(ctx, ClientCtx):
                    if ctx.on_response is not None and isinstance(a.message, Response):
                        ctx.on_response(ctx, a.message)
                else:
                    self._server_deliver(ctx, a.message)
            elif isinstance(a, Timeout):
                if isinstance(ctx, ClientCtx):
                    ctx.failed = True
                    if ctx.on_failure is not None:
                        ctx.on_failure(ctx, a.status, a.cause)
                else:
                    self.log("server_timeout", call_id=ctx.call_id, cause=a.cause)
                    self.server_timeout(ctx)
            elif isinstance(a, Linger):
                # the transaction kept the request's essentials only: let the whole go too
                # (the handlers that still read it later, logs and late answers, need no more)
                req = ctx.tx.request
                ctx.request = req
                if isinstance(ctx, ServerCtx) and ctx.size:
                    size = req.headers.text_size()
                    self.held_bytes -= ctx.size - size
                    ctx.size = size
            elif isinstance(a, Terminated):
                self.table.remove(ctx.tx)
                if self._ctxs.pop(ctx.tx.key, None) is not None and isinstance(ctx, ServerCtx):
                    self.held_bytes -= ctx.size
                for seq in ctx.timers.values():
                    self.tx_timers.cancel(seq)
                ctx.timers.clear()
                self._release(ctx)

    def _server_deliver(self, ctx: ServerCtx, message: Request | Response) -> None:
        """A server transaction's Deliver: the request that created it goes up once (never
        twice, whatever the machine says), an ACK goes up as an ACK.

        RFC 6026 §7.1: an ACK matching an INVITE transaction in "accepted" (an RFC 2543
        client's ACK for the 2xx, §17.2.3, or one reusing the INVITE's branch) is passed to
        the TU as the ACK it is; re-delivering the INVITE would start the call again.
        """
        if message is ctx.request:
            if not ctx.delivered:
                ctx.delivered = True
                self._deliver(ctx)
                return
        elif isinstance(message, Request) and message.method == "ACK":
            self.on_ack(message, ctx.data.pop("ack_source", None) or ctx.source)
            return
        self.log("redelivery_dropped", call_id=ctx.call_id, method=ctx.request.method)

    def _release(self, ctx: Ctx) -> None:
        """Break the reference cycles of a finished transaction (callbacks, call state), so
        reference counting frees the call's objects at once. Left to the cyclic collector,
        ~100 objects per call pile up between collections and the full collections that
        free them pause the element for tens of milliseconds under load."""
        if isinstance(ctx, ClientCtx):
            ctx.on_response = None
            ctx.on_failure = None
            ctx.owner = None
        else:
            self.server_released(ctx)
        ctx.data.clear()

    def server_released(self, ctx: ServerCtx) -> None:
        """Hook: a server transaction ended; drop what refers back to it."""

    def _timer(self, ctx: Ctx, name: str) -> None:
        """A transaction timer came due (`tx_timers`): the machine's actions, guarded."""
        ctx.timers.pop(name, None)
        self._guarded(self._timer_actions, (ctx, name))

    def _timer_actions(self, ctx: Ctx, name: str) -> None:
        self._run(ctx, ctx.tx.on_timer(name))

    # -------------------------------------------------------------- receiving

    def _on_message(self, msg: Request | Response, source: Source) -> None:
        t0 = time.thread_time()
        try:
            if isinstance(msg, Response):
                self._on_response(msg, source)
            else:
                self._on_request(msg, source)
        except Ng911Error as exc:
            self._bad_input(msg, source, exc)
        except Exception as exc:  # a bug must not take the element down: answer 500, log
            self.errors += 1
            log.error("%s: handler failed on %s", self.name, msg.first_line, exc_info=exc)
            self._bad_input(msg, source, exc)
        finally:
            self.cpu_seconds += time.thread_time() - t0
            self.handled += 1

    def _bad_input(self, msg: Request | Response, source: Source, exc: BaseException) -> None:
        status, reason = status_of(exc)
        call_id = msg.headers.get("Call-ID")
        self.log(
            "bad_input",
            call_id=call_id,
            hop=str(source.address),
            first_line=msg.first_line[:120],
            status=status,
            error=reason,
        )
        if not isinstance(msg, Request) or msg.method == "ACK":
            return
        ctx = self._ctxs.get(self._server_key_or_none(msg))
        if isinstance(ctx, ServerCtx):
            if not ctx.final:
                ctx.reply(status, reason)
            return
        try:  # outside a transaction: answer directly (the request may be too broken)
            resp = make_response(msg, status, reason)
            self.send_stateless(resp, source.address, connection_id=source.connection_id)
        except Exception as inner:
            self.log("bad_input_unanswered", call_id=call_id, error=str(inner))

    @staticmethod
    def _server_key_or_none(msg: Request) -> Any:
        try:
            return server_key(msg)
        except Exception:
            return None

    def _on_response(self, resp: Response, source: Source) -> None:
        tx = self.table.match_response(resp)
        if tx is None:
            self.stray_response(resp, source)
            return
        ctx = self._ctxs.get(tx.key)
        if ctx is None:
            return
        self._run(ctx, tx.on_response(resp))

    def _on_request(self, req: Request, source: Source) -> None:
        if req.method == "ACK":
            tx = self.table.match_request(req)
            if tx is not None:
                ctx = self._ctxs.get(tx.key)
                if isinstance(ctx, ServerCtx):
                    ctx.data["ack_source"] = source  # where this ACK came from, for on_ack
                    self._run(ctx, tx.on_request(req))
                    ctx.data.pop("ack_source", None)
                return
            refused = self.admission.refused_keys
            if refused and server_key(req) in refused:
                return  # the ACK for a 503 we sent statelessly under overload
            self.on_ack(req, source)
            return
        tx = self.table.match_request(req)
        if tx is not None:  # a retransmission: the transaction resends its last response
            ctx = self._ctxs.get(tx.key)
            if ctx is not None:
                self._run(ctx, tx.on_request(req))
            return
        if self.gate.enabled and not self.gate.admit(req, source):
            return
        # RFC 3261 §16.3 item 1 / §8.2: a reasonable syntax check of what every element
        # reads (the rest is parsed, and refused with 400, where it is used)
        req.top_via  # noqa: B018
        req.from_addr  # noqa: B018
        req.to_addr  # noqa: B018
        req.max_forwards  # noqa: B018
        if req.cseq.method != req.method:
            raise ElementError(400, "CSeq method does not match the request method")
        check_peer(self.config.tls.expected_peer, source)
        stx = server_transaction(req, reliable=source.address.reliable, timers=self.timers)
        ctx = ServerCtx(self, stx, req, source)
        ctx.size = len(req.body) + req.headers.text_size()
        self.held_bytes += ctx.size
        self.table.add(stx)
        self._ctxs[stx.key] = ctx
        self.server_transactions += 1
        self._run(ctx, stx.start())

    # -------------------------------------------------------------- answering

    def _deliver(self, ctx: ServerCtx) -> None:
        """A new request reached us (the server transaction's Deliver)."""
        req = ctx.request
        try:
            if req.method == "INVITE":
                if self.going_down and req.to_addr.tag is None:
                    self._refuse_closing(ctx)
                    return
                ctx.respond(make_response(req, 100))  # RFC 3261 §16.2: at once, stop retransmits
            if req.method == "CANCEL":
                self._on_cancel(ctx)
                return
            if req.method == "OPTIONS" and self.answers_options and self.options_for_us(req):
                if self.going_down:  # §11.2: what an INVITE would get, so pingers route around
                    self._refuse_closing(ctx)
                    return
                events = ", ".join(self.state_packages())
                ctx.reply(
                    200, extra=(("Allow", ALLOW), ("Accept", ACCEPT), ("Allow-Events", events))
                )
                return
            if req.method in ("SUBSCRIBE", "NOTIFY") and self.events.handles(req):
                self.events.on_request(ctx)  # RFC 6665, to this element itself
                return
            self.on_request(ctx)
        except Ng911Error as exc:
            self._answer_error(ctx, exc)
        except Exception as exc:
            self.errors += 1
            log.error("%s: handler failed on %s", self.name, req.first_line, exc_info=exc)
            self._answer_error(ctx, exc)

    def _refuse_closing(self, ctx: ServerCtx) -> None:
        """A new call after `close()` began: 503 with Retry-After (RFC 3261 §21.5.4), so the
        previous hop tries its alternate at once (the ESRP fails over on 503), rather than a
        call taken in and then dropped when the sockets close. In-dialog requests (BYE,
        re-INVITE), CANCEL, ACK and the stop's own SUBSCRIBE/NOTIFYs are still served."""
        retry = (("Retry-After", str(CLOSING_RETRY_AFTER)),)
        self._refuse(ctx, 503, "element shutting down", phrase="Shutting Down", extra=retry)

    def _answer_error(self, ctx: ServerCtx, exc: BaseException) -> None:
        status, reason = status_of(exc)
        self._refuse(ctx, status, reason)

    def _refuse(
        self,
        ctx: ServerCtx,
        status: int,
        error: str,
        *,
        phrase: str | None = None,
        extra: tuple[tuple[str, str], ...] = (),
    ) -> None:
        """Log `request_refused` and answer `status` (reason phrase `phrase`, else `error`)
        unless the request already has its final answer."""
        self.log(
            "request_refused",
            call_id=ctx.request.headers.get("Call-ID"),
            hop=str(ctx.source.address),
            method=ctx.request.method,
            status=status,
            error=error,
        )
        if not ctx.final:
            ctx.reply(status, phrase or error, extra=extra)

    def _on_cancel(self, ctx: ServerCtx) -> None:
        """RFC 3261 §9.2: 200 to the CANCEL, then the element ends the INVITE (487)."""
        target = self.table.cancel_target(ctx.request)
        if target is None:
            ctx.reply(481)
            return
        ctx.reply(200)
        inv = self._ctxs.get(target.key)
        if isinstance(inv, ServerCtx) and not inv.final:
            self.log("cancel", call_id=inv.call_id, hop=str(ctx.source.address))
            self.on_cancel(inv)

    # -------------------------------------------------------------- i3 state

    def state_packages(self) -> tuple[str, ...]:
        """The RFC 6665 event packages this element publishes (NENA-STA-010.3 §2.4: every
        element its ElementState and SecurityPosture). Called once, from `__init__`."""
        return ("emergency-ElementState", "emergency-SecurityPosture")

    def element_state(self) -> ElementState:
        if self.going_down:
            return ElementState(self.fqdn, "GoingDown", "shutting down")
        if self.gate.enabled and self.admission.controller.overloaded:
            return ElementState(self.fqdn, "Overloaded", "shedding load")
        return ElementState(self.fqdn)

    def state_body(self, package: str) -> Any:
        """The current state of `package` (an i3state value with `to_json`), None if none."""
        if package == "emergency-ElementState":
            return self.element_state()
        if package == "emergency-SecurityPosture":
            return SecurityPosture(self.fqdn, self.config.state.posture)
        return None

    def load_changed(self) -> None:
        """Overload control started or stopped shedding (`admitting.Gate`)."""
        self.events.changed()

    # -------------------------------------------------------------- element hooks

    def recognises_emergency(self, req: Request) -> bool:
        """Hook: is this new request an emergency call by the element's own rules (the
        VSP's dial strings)? `urn:service:sos*` and `esnet.*` are recognised for all."""
        return False

    def options_for_us(self, req: Request) -> bool:
        """OPTIONS addressed to this element (a proxy forwards others)."""
        return True

    def on_request(self, ctx: ServerCtx) -> None:
        """A new request (not ACK, not CANCEL). Default: 405 (RFC 3261 §8.2.1)."""
        ctx.reply(405, extra=(("Allow", ALLOW),))

    def on_cancel(self, ctx: ServerCtx) -> None:
        """The INVITE of `ctx` was cancelled (200 to the CANCEL is sent already)."""
        ctx.reply(487)

    def on_ack(self, req: Request, source: Source) -> None:
        """An ACK for a 2xx (or a stray one)."""

    def stray_response(self, resp: Response, source: Source) -> None:
        """A response matching no transaction (RFC 3261 §17.1.3: the core's business)."""

    def server_timeout(self, ctx: ServerCtx) -> None:
        """Timer H: no ACK came for our final response."""
