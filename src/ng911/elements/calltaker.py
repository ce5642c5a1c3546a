"""The call taker: registers with its psapd, rings, answers, hangs up.

For measurement runs it auto-answers: 180 Ringing after `ring_delay`, 200 OK with an SDP
answer on a real bound RTP port after `answer_delay` (never, when negative: the "call taker
does not answer" case psapd must handle), and hangs up after `hangup_after` seconds or when
the caller's BYE arrives. A UAS (RFC 3261 §8.2, §13.3): the 2xx is retransmitted over UDP
until the ACK comes (§13.3.1.4), since the transaction layer does not (RFC 6026).

Keep-alive (`keepalive` s, `elements/keepalive.py`): the taker pings psapd with OPTIONS;
when psapd answers again after not answering (it was restarted, or the path was down), the
taker registers at once instead of waiting for its refresh (up to `register_expires`), so a
restarted psapd that lost its registrations gets its takers back within seconds. A failed
REGISTER is retried the same way, on the next answered ping.

A person at a console (`attended = True`, set by `ng911.console`) turns auto-answer off: the
call rings until `answer(call_id)`, and `hangup(call_id)` declines a ringing call (486) or
ends an answered one (BYE).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ng911.elements.config import CallTakerConfig
from ng911.elements.keepalive import ping
from ng911.elements.media import MediaPorts, RtpPort, sdp
from ng911.elements.native import mypyc_attr
from ng911.elements.registration import Registration, registrar_uri, send_register
from ng911.elements.runtime import ElementError, ServerCtx, SipElement
from ng911.net.address import Source
from ng911.sip.dialog import Dialog, DialogError
from ng911.sip.headers import new_branch, new_tag, parse_via
from ng911.sip.message import Request, Response
from ng911.sip.uri import NameAddr, parse_uri

__all__ = ["CallTaker", "TakerCall"]


@dataclass(eq=False, slots=True)
class TakerCall:
    call_id: str
    server: ServerCtx
    dialog: Dialog
    rtp: RtpPort
    received: float = field(default_factory=time.time)
    state: str = "ringing"  # ringing | answered | confirmed | ended
    ok: Response | None = None
    timers: list[asyncio.TimerHandle] = field(default_factory=list)
    ended_by: str | None = None
    caller: str = ""
    location: str | None = None

    def cancel_timers(self) -> None:
        for t in self.timers:
            t.cancel()
        self.timers.clear()


@mypyc_attr(allow_interpreted_subclasses=True)
class CallTaker(SipElement):
    role = "calltaker"

    def __init__(
        self,
        config: CallTakerConfig,
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
        self.calls: dict[str, TakerCall] = {}
        self.registered = asyncio.Event()
        self.answered = 0
        self.offered = 0
        self.cancelled = 0
        self.history: list[TakerCall] = []
        self.media = MediaPorts(config.rtp_host)
        self._refresh: asyncio.TimerHandle | None = None
        self._keepalive: asyncio.TimerHandle | None = None
        self._psap_lost = False  # a keep-alive went unanswered, or a REGISTER failed
        self.attended = False  # a person answers (the console): no auto-answer
        self._closing = False
        self._registration = Registration.new(
            config.aor, self.fqdn, username=config.auth_user, password=config.auth_password
        )

    # ---------------------------------------------------------------- registration

    @property
    def transport_name(self) -> str:
        return self.locate(parse_uri(self.cfg.psap))[0].transport

    def contact(self) -> NameAddr:
        user = getattr(parse_uri(self.cfg.aor), "user", None)
        return NameAddr(self.own_uri(self.transport_name, user=user, lr=False, sips=False))

    async def started(self) -> None:
        if self.cfg.keepalive > 0:
            self._keepalive = self.call_later(self.cfg.keepalive, self._ping_psap)
        await self.register()

    async def register(self, expires: int | None = None, timeout: float = 5.0) -> int:
        """REGISTER our contact with psapd (RFC 3261 §10.2); returns the final status."""
        exp = self.cfg.register_expires if expires is None else expires
        dest, name = self.locate(parse_uri(self.cfg.psap))
        try:
            status = await send_register(
                self,
                self._registration,
                registrar_uri(self.cfg.psap),
                self.contact(),
                dest,
                name,
                expires=exp,
                timeout=timeout,
            )
        except TimeoutError:
            self._psap_lost = True  # the next answered keep-alive registers again
            raise
        if self._refresh is not None:
            self._refresh.cancel()
            self._refresh = None
        if status < 300:
            self.registered.set()
            if exp > 0:  # refresh before the binding expires (RFC 3261 §10.2.4)
                self._refresh = self.call_later(exp * 0.8, self._reregister)
        elif exp > 0:
            self._psap_lost = True
        return status

    def _reregister(self) -> None:
        self.spawn(self._register_quietly())

    async def _register_quietly(self) -> None:
        try:
            await self.register()
        except TimeoutError:
            self.log("register_failed", status="timeout", registrar=self.cfg.psap)

    def _ping_psap(self) -> None:
        """One OPTIONS keep-alive to psapd; registers at once when psapd is back."""
        self._keepalive = None
        period = self.cfg.keepalive
        if period <= 0:
            return

        def done(status: int | None, why: str) -> None:
            if status is None or status == 503:
                if not self._psap_lost:
                    self.log("psap_unreachable", psap=self.cfg.psap, reason=why)
                self._psap_lost = True
            elif self._psap_lost:
                self._psap_lost = False
                self.log("psap_back", psap=self.cfg.psap, reason=why)
                self.spawn(self._register_quietly())
            if self._keepalive is None and not self._closing:
                self._keepalive = self.call_later(period, self._ping_psap)

        try:
            uri = parse_uri(self.cfg.psap)
        except Exception as exc:
            self.log("keepalive_failed", error=str(exc)[:200])
            return
        ping(self, uri, timeout=max(0.5, min(period, 5.0)), done=done)

    # ---------------------------------------------------------------- incoming

    def on_request(self, ctx: ServerCtx) -> None:
        req = ctx.request
        if req.method == "INVITE":
            if req.to_addr.tag is not None:
                ctx.reply(488)  # no re-INVITE support: keep the session as is (§14.2)
                return
            self.spawn(self._incoming(ctx))
        elif req.method == "BYE":
            call = self.calls.get(req.call_id)
            if call is None:
                ctx.reply(481)
                return
            try:
                call.dialog.receive_request(req)
            except DialogError as exc:
                ctx.reply(exc.status, exc.reason)
                return
            ctx.reply(200)
            self._end(call, "remote")
        else:
            super().on_request(ctx)

    async def _incoming(self, ctx: ServerCtx) -> None:
        req = ctx.request
        tag = new_tag()
        ctx.to_tag = tag
        contact = self.contact()
        try:
            dialog = Dialog.uas_from_request(req, tag, local_target=contact.uri)
        except DialogError as exc:
            ctx.reply(exc.status, exc.reason)
            return
        self.offered += 1
        rtp = await self.media.take()
        call = TakerCall(req.call_id, ctx, dialog, rtp, caller=str(req.from_addr.uri))
        call.location = req.headers.get("Geolocation")
        self.calls[req.call_id] = call
        self.log("offered", call_id=req.call_id, caller=call.caller, hop=str(ctx.source.address))
        extra = (("Contact", str(contact)),)
        if self.cfg.ring_delay > 0:
            await asyncio.sleep(self.cfg.ring_delay)
        if call.state != "ringing":
            return
        ctx.reply(180, extra=extra)
        if self.cfg.answer_delay < 0 or self.attended:
            return  # never answers (psapd re-offers), or a person will: `answer()`
        call.timers.append(self.call_later(self.cfg.answer_delay, self._answer, call))

    def _answer(self, call: TakerCall) -> None:
        if call.state != "ringing":
            return
        call.state = "answered"
        self.answered += 1
        body = sdp(self.cfg.rtp_host, call.rtp.port, user=self.name)
        call.ok = call.server.reply(
            200,
            extra=(("Contact", str(self.contact())),),
            body=body,
            content_type="application/sdp",
        )
        self.log("answered", call_id=call.call_id, rtp_port=call.rtp.port)
        if not call.server.source.address.reliable:
            self._retransmit(call, self.timers.t1, 0.0)

    def _retransmit(self, call: TakerCall, interval: float, elapsed: float) -> None:
        """RFC 3261 §13.3.1.4: resend the 2xx at T1, 2T1... (at most T2 apart) until the
        ACK comes; after 64*T1 without it, give the call up with a BYE."""
        if elapsed >= 64 * self.timers.t1:
            if call.state == "answered":
                self.log("no_ack", call_id=call.call_id)
                call.state = "confirmed"  # so that the BYE goes out
                self._send_bye(call)
            return

        def again() -> None:
            if call.state != "answered" or call.ok is None:
                return
            src = call.server.source
            self.send_stateless(call.ok, src.address, connection_id=src.connection_id)
            self._retransmit(call, min(interval * 2, self.timers.t2), elapsed + interval)

        call.timers.append(self.call_later(interval, again))

    def on_ack(self, req: Request, source: Source) -> None:
        call = self.calls.get(req.call_id)
        if call is None or call.state != "answered":
            return
        call.state = "confirmed"
        call.cancel_timers()
        self.log("confirmed", call_id=call.call_id)
        if self.cfg.hangup_after > 0:
            call.timers.append(self.call_later(self.cfg.hangup_after, self._send_bye, call))

    def on_cancel(self, ctx: ServerCtx) -> None:
        call = self.calls.get(ctx.request.call_id)
        if call is not None and call.state == "ringing":
            self.cancelled += 1
            self._end(call, "cancel")
        ctx.reply(487)

    # ---------------------------------------------------------------- hanging up

    def _send_bye(self, call: TakerCall) -> None:
        if call.state in ("ended", "ringing"):
            return
        next_hop = call.dialog.next_hop()
        dest, name = self.locate(next_hop)
        template = parse_via(self.via(dest.transport, new_branch()))
        try:
            bye = call.dialog.create_request("BYE", via=template)
        except DialogError as exc:
            self.log("bye_failed", call_id=call.call_id, error=str(exc))
            return
        self.send_request(bye, dest, server_name=name)
        self.log("hangup", call_id=call.call_id)
        self._end(call, "local")

    def answer(self, call_id: str) -> None:
        """A person answers a ringing call (the console's Answer button)."""
        call = self.calls.get(call_id)
        if call is None or call.state != "ringing":
            raise ElementError(481, "no such ringing call")
        self._answer(call)

    def hangup(self, call_id: str) -> None:
        """End a call: BYE once answered; a ringing one is declined (486 Busy Here, so
        psapd offers it to another call taker or queues it)."""
        call = self.calls.get(call_id)
        if call is None:
            raise ElementError(481, "no such call")
        if call.state == "ringing":
            call.server.reply(486)
            self._end(call, "declined")
            return
        self._send_bye(call)

    def _end(self, call: TakerCall, by: str) -> None:
        if call.state == "ended":
            return
        call.state = "ended"
        call.ended_by = by
        call.cancel_timers()
        self.media.give_back(call.rtp)
        self.calls.pop(call.call_id, None)
        self.history.append(call)
        if len(self.history) > 1000:
            del self.history[:500]
        self.log("ended", call_id=call.call_id, by=by)

    async def close(self) -> None:
        self._closing = True
        if self._refresh is not None:
            self._refresh.cancel()
        if self._keepalive is not None:
            self._keepalive.cancel()
            self._keepalive = None
        for call in list(self.calls.values()):
            self._sign_off(call)
        self.media.close()
        await super().close()

    def _sign_off(self, call: TakerCall) -> None:
        """A call this taker still holds when it stops: a ringing one is declined 480, so
        psapd offers it to another taker at once (not after its `offer_timeout`); an
        answered and ACKed one is hung up (BYE: the caller hears the call end, not
        silence); one answered and not yet ACKed cannot take a BYE yet (RFC 3261 §15) and
        is left to psapd's `ack_timeout`. `close` then waits for the BYE's answer."""
        if call.state == "ringing":
            call.server.reply(480, "Call Taker Signing Off")
            self._end(call, "closing")
        elif call.state == "confirmed":
            self._send_bye(call)
        else:
            call.cancel_timers()
            call.rtp.close()
