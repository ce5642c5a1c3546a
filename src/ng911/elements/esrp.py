"""The ESRP: location → LoST → routing policy → PSAP, with alternates and a default route.

What NENA i3 (NENA-STA-010 §4.2) asks of the emergency services routing proxy, and how:

- the location is taken from the call (`routing.extract_location`); a missing, garbled or
  undereferenceable one never stops the call: the default route, a default location added
  (first Geolocation value, its own PIDF-LO part), the original headers and body kept;
- LoST (`ng911.lost.client.LostClient`, RFC 5222) maps location + service URN to the PSAP
  URI; notFound or an unreachable ECRF → the default route;
- the forwarded INVITE keeps its Request-URI (`urn:service:sos`); the PSAP URI goes into a
  `Route: <uri;lr>` pushed on top; the ESRP adds its Via and Record-Route, the Call-Info
  call/incident identifiers when absent, and `Resource-Priority: esnet.1`; every other header
  and the body pass unchanged;
- a PSAP answering 5xx/6xx, or not answering (no provisional beyond 100) within
  `failover_timeout`, is CANCELled and the call goes to its alternate, then the default route;
- every decision is logged with its reason, and no call ends without a final answer.
"""

from __future__ import annotations

import ssl
import time
from pathlib import Path
from typing import Any

from ng911.elements.config import EsrpConfig
from ng911.elements.emergency import fix_resource_priority
from ng911.elements.identifiers import add_missing_ids
from ng911.elements.proxy import Branch, Proxy, ProxyCall, Target
from ng911.elements.routing import (
    LocationProblem,
    LostFound,
    LostNotFound,
    LostOutcome,
    LostUnreachable,
    NoLocation,
    RouteCandidate,
    RoutingPolicy,
    add_default_location,
    extract_location,
    plan_routes,
    should_fail_over,
)
from ng911.errors import Ng911Error
from ng911.lost.client import LostClient
from ng911.lost.errors import LostClientError
from ng911.lost.errors import LostNotFound as LostNotFoundError
from ng911.pki.tls import client_context
from ng911.sip.message import Request
from ng911.sip.uri import URN, SipURI, parse_uri

__all__ = ["Esrp"]


def policy_of(cfg: EsrpConfig) -> RoutingPolicy:
    return RoutingPolicy(
        default_route=cfg.default_route,
        alternates=tuple((a.psap, a.alternates) for a in cfg.alternates),
        sips_policy=cfg.sips_policy,
        hop_transport=cfg.psap_transport,
        failover_on=frozenset(cfg.failover_on),
        failover_classes=frozenset(cfg.failover_classes),
    )


class Esrp(Proxy):
    role = "esrp"

    def __init__(self, config: EsrpConfig, *, lost: LostClient | None = None, **kw: Any):
        super().__init__(config, **kw)
        self.cfg = config
        self.policy = policy_of(config)
        self.lost = lost if lost is not None else self._lost_client(config)
        self.routed: dict[str, int] = {"lost": 0, "alternate": 0, "default": 0}
        self.lost_seconds = 0.0

    @staticmethod
    def _lost_client(cfg: EsrpConfig) -> LostClient:
        ctx: ssl.SSLContext | None = None
        if cfg.lost_url.startswith("https:"):
            ctx = client_context(
                [Path(p) for p in cfg.lost_ca],
                cert=Path(cfg.lost_cert) if cfg.lost_cert else None,
                key=Path(cfg.lost_key) if cfg.lost_key else None,
            )
        return LostClient(cfg.lost_url, ssl=ctx, timeout=cfg.lost_timeout)

    async def close(self) -> None:
        await self.lost.close()
        await super().close()

    def route(self, call: ProxyCall) -> None:
        uri = call.request.uri
        if call.request.method == "INVITE" and isinstance(uri, URN) and uri.is_emergency:
            self.spawn(self._route_emergency(call))
            return
        if isinstance(uri, SipURI) and not self.is_own(uri):
            super().route(call)  # e.g. a PSAP's callback passing through
            return
        self.reply(call, 404, "Not an emergency call")

    async def _route_emergency(self, call: ProxyCall) -> None:
        try:
            await self._route_emergency_inner(call)
        except Exception as exc:  # never drop a call silently: answer and log
            self.log("routing_error", call_id=call.call_id, error=f"{type(exc).__name__}: {exc}")
            if not call.server.final and not call.branches:
                self._accounted(self._fallback, call, f"routing error: {exc}")
            if not isinstance(exc, Ng911Error):
                raise  # a bug: its traceback goes to the log; hostile input is typed, logged above

    def _fallback(self, call: ProxyCall, reason: str) -> None:
        plan = plan_routes(NoLocation(reason), self.policy)
        call.data["plan"], call.data["next"] = plan, 0
        if not self._try_next(call):
            self._maybe_finish(call)

    async def _route_emergency_inner(self, call: ProxyCall) -> None:
        t0 = time.thread_time()
        req = call.request.copy()
        where = extract_location(req)
        ids, notes = add_missing_ids(req, self.fqdn)
        rp, rp_note = fix_resource_priority(req.headers.get_all("Resource-Priority"))
        if rp_note is not None:
            req.headers.set("Resource-Priority", rp)
        outcome: LostOutcome
        lost_time = 0.0
        if isinstance(where, LocationProblem):
            cid = add_default_location(req, self.cfg.default_lat, self.cfg.default_lon, self.fqdn)
            outcome = NoLocation(where.reason)
            self.log("default_location", call_id=call.call_id, reason=where.reason, added=cid)
        self.cpu_seconds += time.thread_time() - t0
        if not isinstance(where, LocationProblem):
            start = time.perf_counter()
            try:
                res = await self.lost.find_service(
                    where.location,
                    self._service(req),
                    call_id=ids.call_id,
                    incident_id=ids.incident_id,
                )
                outcome = LostFound(res.uris, res.mapping.source or "")
            except LostNotFoundError as exc:
                outcome = LostNotFound(str(exc))
            except LostClientError as exc:
                outcome = LostUnreachable(str(exc))
            except Ng911Error as exc:
                outcome = LostUnreachable(f"{type(exc).__name__}: {exc}")
            lost_time = time.perf_counter() - start
            self.lost_seconds += lost_time
        t1 = time.thread_time()
        try:
            plan = plan_routes(outcome, self.policy)
            self.log(
                "route",
                call_id=call.call_id,
                outcome=type(outcome).__name__,
                lost_ms=round(lost_time * 1000, 3),
                plan=[c.uri for c in plan],
                reason=plan[0].reason if plan else None,
                location_source=None if isinstance(where, LocationProblem) else where.source,
                ids=[ids.call_id, ids.incident_id],
                notes=notes + ([rp_note] if rp_note else []),
            )
            self.routed["lost" if isinstance(outcome, LostFound) else "default"] += 1
            if call.cancelled or call.server.final:
                self.reply(call, 487)
                return
            call.request = req
            call.data["plan"], call.data["next"] = plan, 0
            if not self._try_next(call):
                self._maybe_finish(call)
        finally:
            self.cpu_seconds += time.thread_time() - t1

    def _service(self, req: Request) -> str:
        """The service URN asked of LoST: `service` for a plain `urn:service:sos` (an
        ESInet may ask its ECRF for `urn:emergency:service:sos`), a sub-service as called."""
        uri = str(req.uri).lower()
        return self.cfg.service if uri == "urn:service:sos" else uri

    def _try_next(self, call: ProxyCall) -> bool:
        plan: list[RouteCandidate] = call.data.get("plan", [])
        while call.data.get("next", 0) < len(plan):
            i = call.data["next"]
            call.data["next"] = i + 1
            cand = plan[i]
            try:
                uri = parse_uri(cand.uri)
            except Ng911Error as exc:
                self.log("bad_route", call_id=call.call_id, uri=cand.uri, error=str(exc))
                continue
            target = Target(
                route=uri,
                timeout=self.cfg.failover_timeout,
                timer_until="provisional",
                label=cand.uri,
                reason=cand.reason,
            )
            if i > 0:
                self.routed["alternate"] += 1
            if self.forward(call, target) is not None:
                return True
        return False

    def branch_failed(self, branch: Branch, status: int | None) -> bool:
        call = branch.call
        if not should_fail_over(status, self.policy):
            return False
        plan: list[RouteCandidate] = call.data.get("plan", [])
        nxt = call.data.get("next", 0)
        if nxt >= len(plan):
            self.log(
                "no_more_routes", call_id=call.call_id, last=branch.target.label, status=status
            )
            return False
        self.log(
            "failover",
            call_id=call.call_id,
            failed=branch.target.label,
            status=status if status is not None else "no answer",
            next=plan[nxt].uri,
            reason=plan[nxt].reason,
        )
        return self._try_next(call)
