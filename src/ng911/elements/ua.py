"""The caller: a UA that registers with its VSP and places 911 calls with its location.

An emergency INVITE the way RFC 6881 §6 and RFC 6442 want it from a device that knows where
it is: Request-URI and To are what the user dialled (`911`, or `urn:service:sos` when the
phone recognises the call itself), `Route: <vsp;lr>` (outbound proxy), location by value:

    Geolocation: <cid:loc-...@caller>
    Geolocation-Routing: yes
    Content-Type: multipart/mixed;boundary=...   (SDP offer + application/pidf+xml)

It records, per call, when the INVITE left and when the first provisional, the 180, the 200
and the ACK happened (`time.perf_counter` for intervals, `time.time` for the log), so setup
delay is RFC 6076's Session Request Delay measured at the caller.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from ng911.elements.config import CallerConfig
from ng911.elements.media import MediaPorts, RtpPort, sdp
from ng911.elements.native import mypyc_attr
from ng911.elements.registration import Registration, registrar_uri, send_register
from ng911.elements.runtime import ClientCtx, ServerCtx, SipElement
from ng911.errors import Ng911Error
from ng911.location.geodetic import Circle, Point
from ng911.location.gml import pos_text
from ng911.location.pidf import PIDF_CONTENT_TYPE, build_pidf, simple_pidf
from ng911.net.address import Address, Source
from ng911.sip.body import BodyPart, build_multipart
from ng911.sip.dialog import Dialog, DialogError
from ng911.sip.headers import new_branch, new_call_id, new_tag, parse_via
from ng911.sip.message import Request, Response
from ng911.sip.transaction import make_cancel
from ng911.sip.uri import URI, NameAddr, SipURI, parse_uri

__all__ = ["CallRecord", "Caller"]


#: A centre whose `gml:pos` text appears nowhere else in a caller's PIDF-LO.
_PROBE: Final = Point(1.25, 2.5)


class PidfForm:
    """A caller's PIDF-LO with only the position left to fill in: the document `build(centre)`
    makes, cut once around its `gml:pos` text. Why: building the document with lxml for
    every call was ~30 µs, ~3 % of a one-process chain's instructions; filling the cut one in
    is a concatenation, and gives the same bytes (`pos_text` is what `build_pidf` writes;
    tests/elements/test_caller_pidf.py compares the two). A document the cut cannot be
    found in exactly once is built in full every time."""

    def __init__(self, build: Callable[[Point], bytes]) -> None:
        self._build = build
        doc = build(_PROBE)
        mark = f">{pos_text(_PROBE)}<".encode()
        self._head: bytes | None = None
        self._tail = b""
        if doc.count(mark) == 1:
            head, _, tail = doc.partition(mark)
            self._head, self._tail = head + b">", b"<" + tail

    def fill(self, centre: Point) -> bytes:
        if self._head is None:
            return self._build(centre)
        return b"".join((self._head, pos_text(centre).encode(), self._tail))


@dataclass(eq=False)
class CallRecord:
    """What happened to one call, with its timestamps (perf_counter seconds)."""

    call_id: str
    lat: float
    lon: float
    dialled: str
    t_invite: float = 0.0
    wall_invite: float = 0.0
    t_100: float | None = None
    t_provisional: float | None = None  # first provisional other than 100
    t_180: float | None = None
    t_183: float | None = None
    t_200: float | None = None
    t_ack: float | None = None
    t_end: float | None = None
    status: int | None = None
    reason: str = ""
    provisionals: list[int] = field(default_factory=list)
    answered_by: str | None = None  # Contact of the 200 (the call taker)
    ended_by: str | None = None  # "caller" | "remote" | "cancel" | None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def setup_180(self) -> float | None:
        """INVITE → 180 (RFC 6076 §4.2 Session Request Delay, to the 180)."""
        return None if self.t_180 is None else self.t_180 - self.t_invite

    @property
    def setup_200(self) -> float | None:
        return None if self.t_200 is None else self.t_200 - self.t_invite

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    def wall(self, t: float | None) -> float | None:
        """A perf_counter timestamp of this call as wall-clock time (time.time())."""
        return None if t is None else self.wall_invite + (t - self.t_invite)

    def to_dict(self) -> dict[str, Any]:
        """The record as JSON values: wall-clock times, setup delays, no events."""
        keys = "call_id lat lon dialled wall_invite status reason provisionals setup_180 setup_200"
        d: dict[str, Any] = {k: getattr(self, k) for k in f"{keys} answered_by ended_by".split()}
        d["wall"] = {
            name: self.wall(getattr(self, f"t_{name}"))
            for name in ("100", "provisional", "180", "183", "200", "ack", "end")
        }
        return d


@dataclass(eq=False)
class _Call:
    record: CallRecord
    invite: Request
    client: ClientCtx | None = None
    dialog: Dialog | None = None
    ack: Request | None = None
    ack_dest: tuple[Address, str | None] | None = None
    rtp: RtpPort | None = None
    hangup_after: float = 0.0
    timer: asyncio.TimerHandle | None = None


@mypyc_attr(allow_interpreted_subclasses=True)
class Caller(SipElement):
    role = "caller"

    def __init__(
        self,
        config: CallerConfig,
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
        self.proxy: URI = parse_uri(config.proxy)
        self.calls: dict[str, _Call] = {}
        self.records: list[CallRecord] = []
        self.media = MediaPorts(config.rtp_host)
        # called with each emergency INVITE, body and all, just before it is sent: how a
        # test sends an unusual or broken INVITE from the real caller (a wrong
        # Resource-Priority, a garbled PIDF-LO), as a SIPp scenario would
        self.edit_invite: Callable[[Request], None] | None = None
        self._pidf_form: PidfForm | None = None
        self._refresh: asyncio.TimerHandle | None = None
        self._registration = Registration.new(
            config.aor, self.fqdn, username=config.auth_user, password=config.auth_password
        )

    @property
    def proxy_dest(self) -> tuple[Address, str | None]:
        return self.locate(self.proxy)

    def contact(self, transport: str) -> NameAddr:
        user = getattr(parse_uri(self.cfg.aor), "user", None)
        return NameAddr(self.own_uri(transport, user=user, lr=False, sips=False))

    async def started(self) -> None:
        if self.cfg.register:
            await self.register()

    # ---------------------------------------------------------------- REGISTER

    async def register(self, timeout: float = 5.0) -> int:
        """REGISTER with the VSP (RFC 3261 §10.2); returns the final status."""
        dest, name = self.proxy_dest  # through the outbound proxy, which is the registrar
        status = await send_register(
            self,
            self._registration,
            registrar_uri(self.cfg.aor),
            self.contact(dest.transport),
            dest,
            name,
            expires=self.cfg.register_expires,
            timeout=timeout,
        )
        if status < 300 and self.cfg.register_expires > 0:  # refresh (RFC 3261 §10.2.4)
            self._refresh = self.call_later(self.cfg.register_expires * 0.8, self._reregister)
        return status

    def _reregister(self) -> None:
        self.spawn(self.register())

    # ---------------------------------------------------------------- placing calls

    def _target(self, dial: str) -> URI:
        if ":" in dial:
            return parse_uri(dial)
        domain = parse_uri(self.cfg.aor)
        host = domain.host if isinstance(domain, SipURI) else self.fqdn
        return SipURI("sip", dial, None, host, None, (("user", "phone"),))

    def build_invite(self, dial: str | None = None) -> Request:
        """The emergency INVITE's headers (see the module docstring); no body yet."""
        dest, _ = self.proxy_dest
        target = self._target(dial or self.cfg.dial)
        call_id = new_call_id(self.fqdn)
        cid = f"loc-{new_tag()}@{self.fqdn}"
        headers: list[tuple[str, str]] = [
            ("Via", self.via(dest.transport, new_branch())),
            ("Max-Forwards", "70"),
            ("Route", str(NameAddr(_lr(self.proxy)))),
            ("From", f"<{self.cfg.aor}>;tag={new_tag()}"),
            ("To", f"<{target}>"),
            ("Call-ID", call_id),
            ("CSeq", "1 INVITE"),
            ("Contact", str(self.contact(dest.transport))),
            ("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS"),
            ("Geolocation", f"<cid:{cid}>"),
            ("Geolocation-Routing", "yes"),
        ]
        return Request("INVITE", target, headers)

    async def place_call(
        self,
        lat: float | None = None,
        lon: float | None = None,
        *,
        dial: str | None = None,
        hangup_after: float | None = None,
        cancel_after: float | None = None,
        wait: bool = True,
        timeout: float | None = None,
        with_location: bool = True,
    ) -> CallRecord:
        """Place one call; returns its record once it is over (or at once, `wait=False`).

        `with_location=False` sends SDP only, no Geolocation (the ESRP's default route case).
        """
        lat = self.cfg.lat if lat is None else lat
        lon = self.cfg.lon if lon is None else lon
        invite = self.build_invite(dial)
        rtp = await self.media.take()
        offer = sdp(self.cfg.rtp_host, rtp.port, user=self.name)
        if with_location:
            cid = invite.headers.get("Geolocation") or ""
            content_id = cid.strip("<>")[4:]
            pidf_body = self._pidf_of(lat, lon)
            ctype, body = build_multipart(
                [
                    BodyPart("application/sdp", offer),
                    BodyPart(PIDF_CONTENT_TYPE, pidf_body, (("Content-ID", f"<{content_id}>"),)),
                ]
            )
        else:
            invite.headers.remove("Geolocation")
            invite.headers.remove("Geolocation-Routing")
            ctype, body = "application/sdp", offer
        invite.headers.add("Content-Type", ctype)
        invite.body = body
        if self.edit_invite is not None:
            self.edit_invite(invite)
        record = CallRecord(invite.call_id, lat, lon, dial or self.cfg.dial)
        call = _Call(record, invite, rtp=rtp)
        call.hangup_after = self.cfg.hangup_after if hangup_after is None else hangup_after
        self.calls[invite.call_id] = call
        self.records.append(record)
        dest, name = self.proxy_dest
        record.wall_invite = time.time()
        record.t_invite = time.perf_counter()
        call.client = self.send_request(
            invite,
            dest,
            server_name=name,
            on_response=lambda ctx, resp: self._invite_response(call, resp),
            on_failure=lambda ctx, status, cause: self._invite_failure(call, status, cause),
        )
        self.log(
            "invite",
            call_id=invite.call_id,
            lat=lat,
            lon=lon,
            dialled=record.dialled,
            hop=str(dest),
        )
        give_up = cancel_after if cancel_after is not None else self.cfg.answer_timeout
        if give_up > 0:
            call.timer = self.call_later(give_up, self.cancel, record)
        if wait:
            limit = timeout if timeout is not None else self.cfg.answer_timeout + 10
            async with asyncio.timeout(limit):  # no second task, as wait_for makes in 3.11
                await record.ended.wait()
        return record

    def _pidf_of(self, lat: float, lon: float) -> bytes:
        form = self._pidf_form
        if form is None:
            form = self._pidf_form = PidfForm(self._pidf_doc)
        return form.fill(Point(lat, lon))

    def _pidf_doc(self, centre: Point) -> bytes:
        """The caller's PIDF-LO at `centre`: a point, or a circle of the configured radius."""
        r = self.cfg.radius
        where = Circle(centre, r) if r > 0 else centre
        entity = f"pres:{self.cfg.aor.split(':', 1)[1]}"
        return build_pidf(simple_pidf(entity, where, method="GPS"))

    async def place_calls(
        self,
        locations: Sequence[tuple[float, float]],
        *,
        count: int,
        rate: float,
        hangup_after: float | None = None,
        timeout: float = 30.0,
    ) -> list[CallRecord]:
        """Batch mode: `count` calls at `rate` per second, cycling through `locations`."""
        tasks: list[asyncio.Task[CallRecord]] = []
        start = time.perf_counter()
        for i in range(count):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            lat, lon = locations[i % len(locations)]
            tasks.append(
                asyncio.ensure_future(
                    self.place_call(lat, lon, hangup_after=hangup_after, timeout=timeout)
                )
            )
        results = await asyncio.gather(*tasks, return_exceptions=True)
        return [r for r in results if isinstance(r, CallRecord)]

    # ---------------------------------------------------------------- responses

    def _invite_response(self, call: _Call, resp: Response) -> None:
        rec = call.record
        now = time.perf_counter()
        status = resp.status
        if status < 200:
            rec.provisionals.append(status)
            if status == 100:
                if rec.t_100 is None:
                    rec.t_100 = now
                return
            if rec.t_provisional is None:
                rec.t_provisional = now
            if status == 180 and rec.t_180 is None:
                rec.t_180 = now
            if status == 183 and rec.t_183 is None:
                rec.t_183 = now
            return
        if status < 300:
            self._on_2xx(call, resp, now)
            return
        if rec.status is None:
            rec.status, rec.reason = status, resp.reason
            rec.t_end = now
            self.log("failed", call_id=rec.call_id, status=status, reason=resp.reason)
            self._finish(call)

    def _on_2xx(self, call: _Call, resp: Response, now: float) -> None:
        rec = call.record
        if call.ack is not None and call.ack_dest is not None:
            # a retransmitted 2xx: our ACK was lost (RFC 3261 §13.2.2.4): send it again
            self.send_stateless(call.ack, call.ack_dest[0], server_name=call.ack_dest[1])
            return
        if rec.status is not None and rec.status >= 300:
            return
        rec.status, rec.reason = resp.status, resp.reason
        rec.t_200 = now
        contact = resp.headers.get("Contact")
        rec.answered_by = contact.strip("<> ") if contact else None
        try:
            dialog = Dialog.uac_from_response(call.invite, resp)
        except DialogError as exc:
            self.log("bad_2xx", call_id=rec.call_id, error=str(exc))
            rec.status = 502
            self._finish(call)
            return
        call.dialog = dialog
        try:
            dest, name = self.locate(dialog.next_hop())
        except Ng911Error as exc:
            self.log("ack_unroutable", call_id=rec.call_id, error=str(exc))
            rec.reason = f"answered, but the ACK cannot be routed: {exc}"
            self._finish(call)
            return
        template = parse_via(self.via(dest.transport, new_branch()))
        call.ack = dialog.create_ack(call.invite, via=template)
        call.ack_dest = (dest, name)
        self.send_stateless(call.ack, dest, server_name=name)
        rec.t_ack = time.perf_counter()
        rec.done.set()
        self.log(
            "answered",
            call_id=rec.call_id,
            by=rec.answered_by,
            setup_180=rec.setup_180,
            setup_200=rec.setup_200,
        )
        if call.timer is not None:
            call.timer.cancel()
            call.timer = None
        if call.hangup_after > 0:
            call.timer = self.call_later(call.hangup_after, self.hangup, rec)

    def _invite_failure(self, call: _Call, status: int, cause: str) -> None:
        rec = call.record
        if rec.status is None:
            rec.status, rec.reason = status, cause
            rec.t_end = time.perf_counter()
            self.log("failed", call_id=rec.call_id, status=status, reason=cause)
            self._finish(call)

    def _finish(self, call: _Call) -> None:
        rec = call.record
        if call.timer is not None:
            call.timer.cancel()
            call.timer = None
        if call.rtp is not None:
            self.media.give_back(call.rtp)
        if self.calls.pop(rec.call_id, None) is not None:
            self.count_call(rec.status or 0)
        rec.done.set()
        rec.ended.set()

    # ---------------------------------------------------------------- ending calls

    def cancel(self, record: CallRecord) -> None:
        """CANCEL a call not answered yet (RFC 3261 §9.1)."""
        call = self.calls.get(record.call_id)
        if call is None or call.client is None or record.status is not None:
            return
        record.ended_by = "cancel"
        cancel = make_cancel(call.invite)
        self.log("cancel", call_id=record.call_id)
        self.send_request(cancel, call.client.dest, server_name=call.client.server_name)

    def hangup(self, record: CallRecord) -> None:
        """BYE an answered call (RFC 3261 §15.1.1)."""
        call = self.calls.get(record.call_id)
        if call is None or call.dialog is None:
            return
        dest, name = self.locate(call.dialog.next_hop())
        template = parse_via(self.via(dest.transport, new_branch()))
        bye = call.dialog.create_request("BYE", via=template)
        record.ended_by = "caller"

        def done(ctx: ClientCtx, resp: Response) -> None:
            if resp.status >= 200:
                record.t_end = time.perf_counter()
                self.log("hung_up", call_id=record.call_id, status=resp.status)
                self._finish(call)

        def failed(ctx: ClientCtx, status: int, cause: str) -> None:
            record.t_end = time.perf_counter()
            self.log("bye_failed", call_id=record.call_id, status=status, cause=cause)
            self._finish(call)

        self.send_request(bye, dest, server_name=name, on_response=done, on_failure=failed)

    def on_request(self, ctx: ServerCtx) -> None:
        req = ctx.request
        if req.method == "BYE":
            call = self.calls.get(req.call_id)
            if call is None or call.dialog is None:
                ctx.reply(481)
                return
            ctx.reply(200)
            call.record.ended_by = "remote"
            call.record.t_end = time.perf_counter()
            self.log("remote_hangup", call_id=req.call_id)
            self._finish(call)
            return
        if req.method == "INVITE":
            ctx.reply(486)  # PSAP callbacks: a later issue
            return
        super().on_request(ctx)

    def on_ack(self, req: Request, source: Source) -> None:
        return

    async def close(self) -> None:
        if self._refresh is not None:
            self._refresh.cancel()
        for call in list(self.calls.values()):
            if call.rtp is not None:
                call.rtp.close()
            if call.timer is not None:
                call.timer.cancel()
        self.media.close()
        await super().close()


def _lr(uri: URI) -> URI:
    if isinstance(uri, SipURI) and not uri.has_param("lr"):
        return uri.with_params(lr=None)
    return uri
