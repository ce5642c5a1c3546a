"""The VSP proxy: registrar and outbound proxy of a voice service provider.

Emergency calls are recognised here, at the originating network's edge (NENA i3, RFC 6881
§8), by the intake rules (`intake.py`): a dialled `911`/`112` or `urn:service:sos*` becomes
`urn:service:sos` (a registered sub-service stays) in Request-URI and To,
`Resource-Priority: esnet.1` is added (`emergency.py`), each correction is logged
(`intake_corrected`), and the call goes into the ESInet (a `urn:service:test.sos` test call
too, without the priority):
to the configured ESRP by a pushed `Route: <esrp;lr>` (loose routing keeps the service URN
as Request-URI), or, with `lost_url` set, to the PSAP URI the VSP's own LoST query returns
(the ESRP stays the fallback). Any other call is a normal call, never made an emergency one:
proxied to the registered contact of a user of our domain, or towards the Request-URI's
domain; an INVITE whose user part has control characters gets 400 saying so.

With `auth` on (off by default), the registrar takes a REGISTER only with valid Digest
credentials of the AoR's own user (401 with SHA-256 and MD5 challenges, RFC 8760; 403 for
someone else's AoR), and with `auth_invites` other non-emergency out-of-dialog requests are
challenged with 407. An emergency call is never challenged: a 911 call from a device with no
account, or with wrong credentials, is routed like any other (RFC 6881 §8, NENA i3).
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

from ng911.elements.auth import Authenticator, Denied
from ng911.elements.config import VspConfig
from ng911.elements.emergency import (
    DialPlan,
    classify,
    is_test_service,
    rewrite_emergency,
    tested_service,
)
from ng911.elements.intake import priority_correction, take_in, user_part_problem
from ng911.elements.native import mypyc_attr
from ng911.elements.proxy import Proxy, ProxyCall, Target
from ng911.elements.registrar import Registrar
from ng911.elements.registration import answer_register
from ng911.elements.routing import CallLocation, extract_location, pick_sip_uri
from ng911.elements.runtime import ServerCtx
from ng911.errors import Ng911Error
from ng911.lost.client import LostClient
from ng911.sip.message import Request
from ng911.sip.uri import SipURI, parse_uri

__all__ = ["VspProxy"]


@mypyc_attr(allow_interpreted_subclasses=True)
class VspProxy(Proxy):
    role: ClassVar[str] = "vsp"

    def __init__(
        self,
        config: VspConfig,
        *,
        lost: LostClient | None = None,
        log_keep: int = 0,
        observers: Iterable[Callable[[Any], None]] = (),
        client_tls: ssl.SSLContext | None = None,
        server_tls: ssl.SSLContext | None = None,
    ) -> None:
        """`lost`: the LoST client for `lost_url` (`ng911.node.build.lost_client` makes one
        with `lost_ca`); without one, a plain client (the system's CAs for https)."""
        # the keywords spelt out: the compiled build cannot pass `**kw` on to them
        super().__init__(
            config,
            log_keep=log_keep,
            observers=observers,
            client_tls=client_tls,
            server_tls=server_tls,
        )
        self.cfg = config
        self.record_route = config.record_route
        self.registrar = Registrar((config.domain, config.fqdn), max_expires=config.max_expires)
        self.auth: Authenticator | None = None
        if config.auth:
            self.auth = Authenticator.from_config(
                config.auth_realm or config.domain,
                users=config.users,
                users_file=config.users_file,
                algorithms=config.auth_algorithms,
                nonce_ttl=config.auth_nonce_ttl,
                secret=config.auth_secret,
            )
        self.dial_plan = DialPlan.for_country(config.country, config.dial_strings)
        self.esrp = parse_uri(config.esrp)
        self.emergency_calls = 0
        if lost is None and config.lost_url:
            lost = LostClient(config.lost_url, timeout=2.0)
        self.lost = lost

    def _to_esrp(self, call: ProxyCall, reason: str) -> None:
        target = Target(route=self.esrp, label=f"esrp {self.esrp}", reason=reason)
        if self.forward(call, target) is None:
            self._maybe_finish(call)

    async def _route_by_lost(self, call: ProxyCall) -> None:
        """`lost_url` set: ask LoST ourselves and route straight to the PSAP (RFC 6881 §8
        lets the originating network do so); anything short of a SIP URI → the ESRP."""
        assert self.lost is not None
        where = extract_location(call.request)
        reason = "emergency call"
        uri: str | None = None
        if isinstance(where, CallLocation):
            try:
                service = tested_service(str(call.request.uri))
                res = await self.lost.find_service(where.location, service)
                uri = pick_sip_uri(res.uris)
                if uri is None:
                    reason = "own LoST answer has no SIP URI"
            except Ng911Error as exc:
                reason = f"own LoST query failed: {exc}"
        else:
            reason = f"no location for own LoST query: {where.reason}"
        t0 = time.thread_time()
        try:
            if call.cancelled or call.server.final:
                self.reply(call, 487)
                return
            if uri is not None:
                self.log("lost_route", call_id=call.call_id, psap=uri)
                target = Target(route=parse_uri(uri), label=uri, reason="own LoST query")
                if self.forward(call, target) is not None:
                    return
                reason = f"LoST's PSAP {uri} not routable"
            self._to_esrp(call, reason)
        finally:
            self.cpu_seconds += time.thread_time() - t0

    async def close(self) -> None:
        if self.lost is not None:
            await self.lost.close()
        await super().close()

    def on_request(self, ctx: ServerCtx) -> None:
        req = ctx.request
        # A REGISTER is ours when no Route names anyone else: UAs with an outbound proxy
        # (baresip's `outbound=`, RFC 5626) preload `Route: <our-uri;lr>` (RFC 3261 §16.4).
        if req.method == "REGISTER" and all(self.is_own(r.uri) for r in req.routes):
            if not self.registrar.serves(req.uri) and not self.is_own(req.uri):
                ctx.reply(403, "Not our domain")
                return
            answer_register(self, self.registrar, ctx, self.auth)
            return
        super().on_request(ctx)

    def recognises_emergency(self, req: Request) -> bool:
        # a dialled 911 is an emergency call for overload control before it is rewritten;
        # a test call is not (RFC 6881 §15: no emergency priority)
        service = classify(req.uri, self.dial_plan)
        return service is not None and not is_test_service(service)

    def _authorized(self, call: ProxyCall) -> bool:
        """A non-emergency out-of-dialog request needs our realm's Proxy-Authorization
        (RFC 3261 §22.3); else 407 with fresh challenges. Ours is removed before forwarding."""
        assert self.auth is not None
        who = self.auth.authenticate(call.request, time.time(), proxy=True)
        if isinstance(who, Denied):
            self.log(
                "request_challenged",
                call_id=call.call_id,
                method=call.request.method,
                status=who.status,
                reason=who.reason,
                user=who.user,
            )
            self.reply(call, who.status, None if who.status != 400 else who.reason,
                       extra=who.headers)  # fmt: skip
            return False
        self.auth.consume(call.request)
        return True

    def route(self, call: ProxyCall) -> None:
        req = call.request
        intake = take_in(req, self.dial_plan, at_esrp=False) if req.method == "INVITE" else None
        if intake is not None:
            service = intake.service
            dialled = str(req.uri)
            rp_values = req.headers.get_all("Resource-Priority")
            # call.request is our copy
            rw = rewrite_emergency(req, service, in_place=True, priority=not intake.test)
            fixes = list(intake.corrections)
            if not intake.test:
                fixes.extend(c for c in (priority_correction(rp_values)[1],) if c is not None)
            for fix in fixes:
                self.log("intake_corrected", call_id=call.call_id, **fix.fields())
            self.emergency_calls += 0 if intake.test else 1  # a test call is none
            self.log(
                "emergency_call",
                call_id=call.call_id,
                dialled=dialled,
                service=service,
                changes=list(rw.changes),
                caller=str(req.from_addr.uri),
            )
            if self.lost is not None:
                self.spawn(self._route_by_lost(call))
                return
            self._to_esrp(call, "emergency call")
            return
        problem = user_part_problem(req.uri) if req.method == "INVITE" else None
        if problem is not None:
            self.reply(call, 400, problem)
            return
        if self.auth is not None and self.cfg.auth_invites and not self._authorized(call):
            return
        uri = req.uri
        if isinstance(uri, SipURI) and self.registrar.serves(uri):
            bindings = self.registrar.lookup(uri, time.time())
            if not bindings:
                self.reply(call, 404 if uri.user else 403)
                return
            b = bindings[0]
            target = Target(request_uri=b.contact, label=str(b.aor), reason="registered contact")
            if self.forward(call, target) is None:
                self._maybe_finish(call)
            return
        super().route(call)
