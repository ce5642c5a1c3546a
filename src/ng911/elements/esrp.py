"""The ESRP: location → LoST → routing policy → PSAP, with alternates and a default route.

What NENA i3 (NENA-STA-010 §4.2) asks of the emergency services routing proxy, and how:

- intake (`intake.py`): every INVITE reaching the ESRP is routed as an emergency call. A
  dialled `sip:911@…`/`tel:911`, a malformed or unregistered `urn:service:sos…`, or any
  other URI (`sip:alice@…`, rule `non-emergency-at-esrp`) becomes `urn:service:sos` in the
  Request-URI, a missing or invalid Resource-Priority `esnet.1`, each change logged as
  `intake_corrected`; a `urn:service:test.sos` test call is routed like the emergency call
  it tests (LoST asked for the `sos` service) without priority. Only an INVITE from a
  `callbacks_from` host (a PSAP's callback) to a non-emergency URI passes through as is;
- the location is taken from the call (`routing.extract_location`); a missing, garbled or
  undereferenceable one never stops the call: the default route, a default location added
  (first Geolocation value, its own PIDF-LO part), the original headers and body kept;
- LoST (`ng911.lost.client.LostClient`, RFC 5222) maps location + service URN to the PSAP
  URI; notFound or an unreachable ECRF → the default route;
- the forwarded INVITE keeps its Request-URI (`urn:service:sos`); the PSAP URI goes into a
  `Route: <uri;lr>` pushed on top; the ESRP adds its Via and Record-Route, the Call-Info
  call/incident identifiers when absent, and `Resource-Priority: esnet.1`; every other header
  and the body pass unchanged;
- a PSAP answering 5xx/6xx, 480/486 (no call taker registered / all busy), or not
  answering (no provisional beyond 100) within `failover_timeout`, is CANCELled and the call
  goes to its alternate, then the default route (`EsrpConfig.failover_on`);
- a PSAP found down (timeout, transport failure, 503) is remembered (`elements/health.py`)
  and tried only after the routes that are up, until it answers an OPTIONS ping again
  (`elements/keepalive.py`; the ESRP pings the PSAPs LoST named, the alternates and the
  default route, as Kamailio's `dispatcher` does); when every route is down they are all
  tried anyway, in plan order: a call is never dropped on a stale "down"; a PSAP already down
  that fails one more ping (nothing heard from it in between) gives up its ringing calls to
  their next route at once (`_move_calls_off`), instead of their waiting Timer C;
- before LoST, the OriginationRoutePolicy (`prf.originate`, rules of queue "origination"):
  a rule on service, call source or time may route the call (or send it to the default
  route) with no LoST query; "normal" or no match goes on to LoST;
- after LoST, the Policy Routing Function (`elements/prf.py`) picks the plan: the first
  matching rule of the queue LoST named (or of "*"), else the built-in rules above; a PSAP
  whose i3 state (`self.states`, a `StateBoard` filled from its NOTIFYs) says it cannot take
  a call (queue Full, service Down...) is tried last, so no INVITE waits on it first;
- every decision is logged with its reason and the PRF rule (i3 policyOwner / policyType),
  and no call ends without a final answer.
"""

from __future__ import annotations

import asyncio
import ssl
import time
import zoneinfo
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, ClassVar

from ng911.elements.config import EsrpConfig, prf_of, routing_policy_of
from ng911.elements.emergency import DialPlan, is_test_service, rewrite_emergency, tested_service
from ng911.elements.health import HealthPolicy, PeerHealth, Transition
from ng911.elements.i3state import QueueState, ServiceState, StateBoard
from ng911.elements.identifiers import add_missing_ids
from ng911.elements.intake import Intake, priority_correction, take_in
from ng911.elements.keepalive import ping
from ng911.elements.native import mypyc_attr
from ng911.elements.prf import (
    CallFacts,
    Decision,
    Prf,
    evaluate,
    originate,
)
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
    apply_hop_policy,
    extract_location,
    plan_routes,
    should_fail_over,
)
from ng911.errors import Ng911Error
from ng911.lost.client import LostClient
from ng911.lost.errors import LostClientError
from ng911.lost.errors import LostNotFound as LostNotFoundError
from ng911.sip.message import Response
from ng911.sip.transaction import State
from ng911.sip.uri import SipURI, parse_uri

__all__ = ["Esrp"]

# what the PRF is given as the time when it has no rules (so nothing reads it)
_NO_RULES = datetime(2000, 1, 1)


def policy_of(cfg: EsrpConfig) -> RoutingPolicy:
    return routing_policy_of(cfg)


@mypyc_attr(allow_interpreted_subclasses=True)
class Esrp(Proxy):
    role: ClassVar[str] = "esrp"

    def __init__(
        self,
        config: EsrpConfig,
        *,
        lost: LostClient,
        log_keep: int = 0,
        observers: Iterable[Callable[[Any], None]] = (),
        client_tls: ssl.SSLContext | None = None,
        server_tls: ssl.SSLContext | None = None,
    ) -> None:
        """`lost`: the LoST client (`ng911.node.build.lost_client` makes one from `config`)."""
        # the keywords spelt out: the compiled build cannot pass `**kw` on to them
        super().__init__(
            config,
            log_keep=log_keep,
            observers=observers,
            client_tls=client_tls,
            server_tls=server_tls,
        )
        self.cfg = config
        self.policy = policy_of(config)
        self.dial_plan = DialPlan.for_country(config.country, config.dial_strings)
        self.lost = lost
        # "origination": routed by an OriginationRoutePolicy rule, LoST not asked
        self.routed: dict[str, int] = {"lost": 0, "alternate": 0, "default": 0, "origination": 0}
        self.lost_seconds = 0.0
        self.health = PeerHealth(self._health_policy())
        self._pinger: asyncio.TimerHandle | None = None
        # the PSAPs' i3 queue and service states (RFC 6665 subscriptions, `_watch_states`),
        # for the routing policy; a state not refreshed for two subscription periods is
        # unknown again, and one whose subscription ended is forgotten at once
        self.states = StateBoard(max_age=2.0 * config.state.subscribe_expires)
        # local time of the PRF's time windows (tests replace it)
        self.clock: Callable[[], datetime] = self._local_now
        self._prf: tuple[EsrpConfig, Prf] = (config, prf_of(config))

    async def close(self) -> None:
        if self._pinger is not None:
            self._pinger.cancel()
            self._pinger = None
        await self.lost.close()
        await super().close()

    def _local_now(self) -> datetime:
        tz = self.cfg.policy_timezone
        return datetime.now(zoneinfo.ZoneInfo(tz)) if tz else datetime.now().astimezone()

    @property
    def prf(self) -> Prf:
        """The Policy Routing Function of the current config (recompiled when it changes)."""
        if self._prf[0] is not self.cfg:
            self._prf = (self.cfg, prf_of(self.cfg))
        return self._prf[1]

    def call_source(self, call: ProxyCall) -> frozenset[str]:
        """Who handed us the call (i3 CallSource: the last network before the ESInet).

        A certificate's SIP identities when the hop is TLS with one (RFC 5922: proven);
        else the static host table's names of the source address (the configured peers);
        and the address itself. Not the From domain: the caller writes it, so any caller
        could claim any network. Host-table names are only as good as the table: several
        names on one address all match.
        """
        src = call.server.source
        ip = src.address.host
        names = {n.lower() for n in src.peer_identities}
        if not names:
            names = {name for name, addr in self.hosts.items() if addr == ip}
        names.add(ip.lower())
        return frozenset(names)

    # ---------------------------------------------------------------- PSAP health

    def _health_policy(self) -> HealthPolicy:
        c = self.cfg
        return HealthPolicy(
            down_after=max(1, c.down_after),
            up_after=max(1, c.up_after),
            interval=c.ping_interval,
            interval_down=c.ping_interval_down,
        )

    def _hop_uri(self, uri: str) -> str | None:
        """A configured route as the plan names it (after the sips/transport hop policy)."""
        try:
            return apply_hop_policy(uri, self.policy)[0]
        except Ng911Error:
            return None

    async def started(self) -> None:
        await super().started()
        configured = [self.cfg.default_route]
        for alt in self.cfg.alternates:
            configured.extend((alt.psap, *alt.alternates))
        for uri in configured:
            hop = self._hop_uri(uri)
            if hop is not None:
                self.health.track(hop, pinned=True)
        self._ping_tick()
        if self.cfg.state.subscribe:
            for uri in dict.fromkeys(configured):
                self._watch_states(uri)

    # ---------------------------------------------------------------- PSAP i3 states

    def _watch_states(self, uri: str) -> None:
        """Subscribe to a PSAP's emergency-QueueState and emergency-ServiceState
        (NENA-STA-010.3 §2.4) over the hop the calls take (the sips/transport hop policy
        applied, so TLS where the ESRP→PSAP hop is TLS); kept up by `events` (refreshed,
        renewed with backoff after a failure). The board holds each state under the URI as
        configured and as the hop names it (what `plan_routes` candidates carry)."""
        hop = self._hop_uri(uri)
        if hop is None:
            return
        keys = tuple(dict.fromkeys((uri, hop)))

        def queue(state: QueueState | None) -> None:
            for k in keys:
                if state is None:
                    self.states.queues.pop(k, None)
                else:
                    self.states.update_queue(k, state)
            if state is not None:
                self.log("peer_queue_state", peer=hop, state=state.state, length=state.length)

        def service(state: ServiceState | None) -> None:
            for k in keys:
                if state is None:
                    self.states.services.pop(k, None)
                else:
                    self.states.update_service(k, state)
            if state is not None:
                self.log("peer_service_state", peer=hop, state=state.state, reason=state.reason)

        self.events.subscribe(hop, "emergency-QueueState", queue)
        self.events.subscribe(hop, "emergency-ServiceState", service)

    def _ping_tick(self) -> None:
        """Ping the PSAPs that are due (health.due), then come back in the shorter period."""
        self._pinger = None
        self.health.policy = self._health_policy()  # the config may be replaced at run time
        now = time.monotonic()
        for peer in self.health.due(now):
            self._ping(peer)
        periods = [p for p in (self.cfg.ping_interval, self.cfg.ping_interval_down) if p > 0]
        if periods:
            self._pinger = self.call_later(max(0.05, min(periods)), self._ping_tick)

    def _ping(self, peer: str) -> None:
        try:
            uri = parse_uri(peer)
        except Ng911Error:
            return

        def done(status: int | None, why: str) -> None:
            self.ping_done(peer, status, why)

        ping(self, uri, timeout=self.cfg.ping_timeout, done=done)

    def ping_done(self, peer: str, status: int | None, why: str) -> None:
        """What an OPTIONS ping to `peer` got: a status, or None (no answer, transport
        failure). Health first; then the calls ringing at a PSAP that stays down move on."""
        now = time.monotonic()
        if status is None or status == 503:
            was_down = not self.health.is_up(peer)
            self._health_changed(self.health.failed(peer, now, why))
            if status is None and was_down:
                self._move_calls_off(peer)
        else:
            self._health_changed(self.health.answered(peer, now, why))

    def _health_changed(self, t: Transition | None) -> None:
        if t is not None:
            self.log("peer_up" if t.up else "peer_down", peer=t.peer, reason=t.reason)

    def _move_calls_off(self, peer: str) -> None:
        """A PSAP already down fails one more OPTIONS ping (no response at all, or the
        transport failed), and nothing else came from it in between (an answer to a call
        would have marked it up): each call ringing there is CANCELled there and goes on to
        its next route at once (alternate, then default route), as on its
        `failover_timeout`. Why: the ringing call's 200 can never come from a dead PSAP, and
        the failover timer stopped at its 180; only Timer C (3 minutes) would end it. Not at
        the first failed ping: a PSAP that lets an OPTIONS go unanswered while its calls
        flow (`bench/load.py`'s SIPp callee does) is alive. A 503 does not move calls: a PSAP
        that answers is alive, and psapd hands back its own unanswered calls when it stops."""
        for call in list(self.calls.values()):
            if call.server.final or "plan" not in call.data:
                continue
            for b in list(call.branches):
                if not b.pending or b.target.label != peer:
                    continue
                self.log("moved_off_down_psap", call_id=call.call_id, psap=peer)
                self.give_up_branch(b, f"PSAP {peer} down", None)

    def _order_plan(self, call: ProxyCall, plan: list[RouteCandidate]) -> list[RouteCandidate]:
        """Routes marked down go after the ones that are up (each group in plan order); when
        all are down, the plan is tried as it is: never drop a call on a stale "down"."""
        for c in plan:
            self.health.track(c.uri)
        up, down = self.health.order([c.uri for c in plan])
        if not down:
            return plan
        if not up:
            self.log("all_routes_down", call_id=call.call_id, plan=[c.uri for c in plan])
            return plan
        self.log("skip_down", call_id=call.call_id, down=down, first=up[0])
        rank = {uri: i for i, uri in enumerate(up + down)}
        return sorted(plan, key=lambda c: rank[c.uri])

    def branch_response(self, branch: Branch, resp: Response) -> None:
        if "plan" in branch.call.data:
            self._health_changed(self.health.answered(branch.target.label, time.monotonic()))

    def _note_failure(self, branch: Branch, status: int | None) -> None:
        """Health of the PSAP a branch went to: down on no answer / transport failure / 503,
        alive on any other answer (480/486 are a busy PSAP, not a dead one)."""
        if "plan" not in branch.call.data:
            return
        peer, now = branch.target.label, time.monotonic()
        client = branch.client
        if status is None and client is not None and client.tx.state is State.PROCEEDING:
            return  # a 100 Trying came: alive, only slow to ring
        if status is None or status == 503:
            why = "no answer" if status is None else "503"
            self._health_changed(self.health.failed(peer, now, f"INVITE {why}"))
        else:
            self._health_changed(self.health.answered(peer, now, f"INVITE answered {status}"))

    def route(self, call: ProxyCall) -> None:
        uri = call.request.uri
        if call.request.method == "INVITE":
            intake = take_in(call.request, self.dial_plan, at_esrp=True)
            if intake is not None and not (intake.non_emergency and self._is_callback(call)):
                self._take_in(call, intake)
                self.spawn(self._route_emergency(call))
                return
        if isinstance(uri, SipURI) and not self.is_own(uri):
            super().route(call)  # a PSAP's callback passing through, a non-INVITE
            return
        self.reply(call, 404, "Not an emergency call")

    def _take_in(self, call: ProxyCall, intake: Intake) -> None:
        """Apply the intake rules to our copy of the request (Request-URI; Resource-Priority
        but on a test call) and log each correction (`intake_corrected`)."""
        req = call.request
        fixes = list(intake.corrections)
        if not intake.test:
            rp, fix = priority_correction(req.headers.get_all("Resource-Priority"))
            if fix is not None:
                req.headers.set("Resource-Priority", rp)
                fixes.append(fix)
        rewrite_emergency(req, intake.service, in_place=True, rewrite_to=False, priority=False)
        if self.log.enabled:  # a call without Resource-Priority corrects one: every call
            for fix in fixes:
                self.log("intake_corrected", call_id=call.call_id, **fix.fields())

    def _is_callback(self, call: ProxyCall) -> bool:
        """An INVITE from a `callbacks_from` host (by name in `hosts`, or address)."""
        allowed = {self.hosts.get(h.lower(), h) for h in self.cfg.callbacks_from}
        return call.server.source.address.host in allowed

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
        plan = self._order_plan(call, plan_routes(NoLocation(reason), self.policy))
        call.data["plan"], call.data["next"] = plan, 0
        if not self._try_next(call):
            self._maybe_finish(call)

    async def _route_emergency_inner(self, call: ProxyCall) -> None:
        t0 = time.thread_time()
        req = call.request.copy()
        where = extract_location(req)
        ids, notes = add_missing_ids(req, self.fqdn)
        outcome: LostOutcome
        lost_time = 0.0
        if isinstance(where, LocationProblem):
            cid = add_default_location(req, self.cfg.default_lat, self.cfg.default_lon, self.fqdn)
            outcome = NoLocation(where.reason)
            self.log("default_location", call_id=call.call_id, reason=where.reason, added=cid)
        sources = self.call_source(call)
        service = str(req.uri).lower()
        prf = self.prf
        # local time for the rules' time windows: read once per call, and only when there
        # are rules to read it (it costs two time-zone conversions)
        now = self.clock() if prf.queues else _NO_RULES
        early = originate(prf, service, sources, self.states, now)
        if early is not None:  # the OriginationRoutePolicy routed it: LoST is not asked
            outcome = NoLocation("LoST not asked: origination policy")
        self.cpu_seconds += time.thread_time() - t0
        if early is None and not isinstance(where, LocationProblem):
            start = time.perf_counter()
            try:
                res = await self.lost.find_service(
                    where.location,
                    self._service(service),
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
            facts = CallFacts(outcome, service, sources)
            decision = early or evaluate(prf, facts, self.states, now)
            self._log_states(call, decision)
            plan = decision.plan
            ordered = self._order_plan(call, plan)
            first = ordered[0] if ordered else None
            if self.log.enabled:  # its fields are not built per call when nobody reads them
                self.log(
                    "route",
                    call_id=call.call_id,
                    outcome="NotAsked" if early is not None else type(outcome).__name__,
                    lost_ms=round(lost_time * 1000, 3),
                    plan=[c.uri for c in plan],
                    reason=plan[0].reason if plan else None,
                    location_source=None if isinstance(where, LocationProblem) else where.source,
                    ids=[ids.call_id, ids.incident_id],
                    notes=notes,
                    recipient=first.uri if first else None,
                    rule=first.rule if first else decision.rule,
                    policy_owner=first.owner if first else decision.owner,
                    policy_type=first.policy_type if first else None,
                    cause=first.cause if first else "",
                    queue=decision.queue,
                    matched=decision.rule,
                    source=sorted(facts.sources),
                )
            if early is not None:
                self.routed["origination"] += 1
            else:
                self.routed["lost" if isinstance(outcome, LostFound) else "default"] += 1
            if call.cancelled or call.server.final:
                self.reply(call, 487)
                return
            call.request = req
            call.data["plan"], call.data["next"] = ordered, 0
            if not self._try_next(call):
                self._maybe_finish(call)
        finally:
            self.cpu_seconds += time.thread_time() - t1

    def _log_states(self, call: ProxyCall, decision: Decision) -> None:
        """What the PSAPs' i3 states did to the plan (the twin of "skip_down" for health)."""
        if decision.all_unavailable:
            self.log(
                "all_routes_unavailable",
                call_id=call.call_id,
                states=[f"{uri}: {why}" for uri, why in decision.deferred],
            )
        elif decision.deferred:
            self.log(
                "skip_state",
                call_id=call.call_id,
                skipped=[uri for uri, _ in decision.deferred],
                states=[why for _, why in decision.deferred],
                first=decision.plan[0].uri,
            )

    def _service(self, uri: str) -> str:
        """The service URN asked of LoST: `service` for a plain `urn:service:sos` (an
        ESInet may ask its ECRF for `urn:emergency:service:sos`), a sub-service as called;
        a test call's (`urn:service:test.sos[.sub]`) is the emergency service it tests,
        so that it reaches the PSAP the emergency call would (RFC 6881 §15)."""
        tested = tested_service(uri)
        return self.cfg.service if tested == "urn:service:sos" else tested

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
        self._note_failure(branch, status)
        if not should_fail_over(status, self.policy):
            return False
        if status is not None and status < 500 and is_test_service(str(call.request.uri)):
            # a PSAP that refuses a test call (486 over its limit, 404 test calls off) has
            # answered the test (RFC 6881 §15); trying its alternates would only spread the
            # test load to PSAPs the caller's location does not belong to
            self.log(
                "test_call_refused", call_id=call.call_id, psap=branch.target.label, status=status
            )
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
            rule=plan[nxt].rule,
            policy_owner=plan[nxt].owner,
            cause=plan[nxt].cause,
        )
        return self._try_next(call)
