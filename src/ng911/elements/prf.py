"""The ESRP's Policy Routing Function (PRF): which rule picks the next hop after LoST.

NENA-STA-010.3 §4.2.1 (ESRP): after LoST names the call's queue (its *NormalNextHop*, a PSAP
URI), the PRF evaluates that queue's route policy (policyType `NormalNextHopRoutePolicy`,
policyQueueName = the URI, owned by the PSAP's agency) on what the ESRP knows: the queue's
QueueState and the PSAP's ServiceState (from their NOTIFYs, a `StateBoard`), the time, the
call's service URN and where it came from (i3 conditions QueueState, ServiceState, TimePeriod,
LostServiceUrn, CallSource), and runs the action of the rule that matches (i3 RouteAction:
recipient + cause). Pure: no sockets, no clock (the ESRP passes `now`), so every rule is
tested without a network.

The rule language (TOML in the ESRP's config, `EsrpConfig.policy`; README "Routing policy"):
one table per queue (the URI LoST returns, or "*" for every queue), each an ordered list of
rules; the first whose conditions all hold wins (i3 gives rules priorities, highest first:
here the order is the priority). Conditions (`when`; a list means "any of"):

- `queue_state`: i3 QueueState values (Active, Inactive, Disabled, Full, Standby) or
  "Unknown" (no fresh state); "Full" also holds when queueLength >= queueMaxLength;
- `service_state`: i3 ServiceState values (Normal, Unstaffed, Down, ...) or "Unknown";
- `time`: "HH:MM-HH:MM" local time, end excluded, wrapping midnight when end < start;
  `weekdays`: ["MO", ..., "SU"] (the day of the local time now);
- `service`: the call's service URN, exactly, or "urn:service:sos.*" for any sub-service;
- `source`: the previous hop's domain (a name or a parent domain, or an IP address).

Actions: "normal" (the queue, its alternates, the default route: the built-in plan),
"route" (to `recipient`), "overflow" (to `recipient`, else the queue's configured alternates,
skipping the queue), "default" (the default route). Every plan ends with the default route
and its alternates, so a call is never left without a PSAP to try. No rule matching means
the built-in rule set (`routing.plan_routes`): what the ESRP did before rules existed.
An action's targets are not evaluated again (another ESRP evaluates its own queues), so an
overflow cannot loop; a rule sending its queue to itself is refused at load.

The queue named "origination" holds the i3 OriginationRoutePolicy: the policy of the queue
the call arrived on (the ESRP's own), evaluated *before* LoST is asked (`originate`). Its
conditions are those known then (time, weekdays, service, source: no queue or service state,
since no queue is named yet) and its actions "normal" (ask LoST, then the queue's rules: the
NormalNextHop path above), "route" (to `recipient`, LoST not asked) and "default" (the
default route, LoST not asked). So a service or a call source can be sent somewhere fixed
(a poison-control line, a test network's PSAP) without an ECRF query.

Whatever rule chose the plan, a PSAP whose state says it cannot take the call now (by
default: queue Full, Inactive or Disabled; service Down, GoingDown, Unstaffed or
ScheduledMaintenanceDown) goes after the others, so no INVITE waits on it; when every
candidate is in that state they are all tried in plan order (a state may be stale, and a
call is never dropped on one).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Final, Protocol

from ng911.elements.i3state import (
    QUEUE_STATES,
    SERVICE_STATES,
    QueueState,
    ServiceState,
    StateBoard,
)
from ng911.elements.routing import (
    LostOutcome,
    NoLocation,
    PlanBuilder,
    RouteCandidate,
    RoutingPolicy,
    normal_next_hop,
    plan_routes,
    same_uri,
)
from ng911.errors import Ng911Error
from ng911.sip.uri import SipURI, Value, parse_uri

__all__ = [
    "ACTIONS",
    "CONDITIONS",
    "DEFAULT_SKIP_QUEUE",
    "DEFAULT_SKIP_SERVICE",
    "ORIGINATION",
    "ORIGINATION_POLICY_TYPE",
    "CallFacts",
    "Conditions",
    "Decision",
    "PolicyError",
    "Prf",
    "QueueRules",
    "QueueSpec",
    "Rule",
    "RuleSpec",
    "TimeWindow",
    "compile_policy",
    "evaluate",
    "originate",
    "parse_window",
]

ACTIONS = ("normal", "route", "overflow", "default")
CONDITIONS = ("queue_state", "service_state", "time", "weekdays", "service", "source")
WEEKDAYS = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")  # i3 TimePeriod weekdayList (RFC 5545)
UNKNOWN = "Unknown"  # no fresh state on the board
# i3 meaning: these cannot take a call now (a Standby queue, an Overloaded or Partial PSAP
# still can; their calls may still be diverted by a rule)
DEFAULT_SKIP_QUEUE = ("Full", "Inactive", "Disabled")
DEFAULT_SKIP_SERVICE = ("Down", "GoingDown", "Unstaffed", "ScheduledMaintenanceDown")
# the queue name of the rules evaluated before LoST, and their i3 policyType
ORIGINATION = "origination"
ORIGINATION_POLICY_TYPE = "OriginationRoutePolicy"
ORIGINATION_ACTIONS = ("normal", "route", "default")
ORIGINATION_CONDITIONS = ("time", "weekdays", "service", "source")
# RFC 4458 §7 cause values, for actions configured without one
DEFAULT_CAUSE = {"route": "302", "overflow": "486", "default": "404"}


class PolicyError(Ng911Error):
    """A rule set that cannot be used (the config layer reports it as a ConfigError)."""


# ---------------------------------------------------------------- conditions


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """Minutes after local midnight: [start, end); start > end wraps past midnight."""

    start: int
    end: int

    def contains(self, minute: int) -> bool:
        if self.start < self.end:
            return self.start <= minute < self.end
        return minute >= self.start or minute < self.end


_HHMM = re.compile(r"\s*([01]\d|2[0-3]):([0-5]\d)\s*")


def parse_window(text: str) -> TimeWindow:
    """A window from its "HH:MM-HH:MM" text (24-hour local time); ValueError says what is
    wrong."""
    parts = text.split("-")
    if len(parts) != 2:
        raise ValueError(f"time window {text!r} is not HH:MM-HH:MM")
    mins: list[int] = []
    for p in parts:
        m = _HHMM.fullmatch(p)
        if m is None:
            raise ValueError(f"time window {text!r}: {p.strip()!r} is not HH:MM (00:00-23:59)")
        mins.append(int(m.group(1)) * 60 + int(m.group(2)))
    if mins[0] == mins[1]:
        raise ValueError(f"time window {text!r} is empty (start = end)")
    return TimeWindow(mins[0], mins[1])


@dataclass(frozen=True, slots=True)
class Conditions:
    """All must hold (an empty one holds always); within one, any value may match."""

    queue_states: frozenset[str] = frozenset()
    service_states: frozenset[str] = frozenset()
    window: TimeWindow | None = None
    weekdays: frozenset[int] = frozenset()  # 0 = Monday (datetime.weekday)
    services: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    action: str  # one of ACTIONS
    recipient: str = ""
    cause: str = ""
    when: Conditions = field(default_factory=Conditions)


@dataclass(frozen=True, slots=True)
class QueueRules:
    """A queue's rule set: i3 NormalNextHopRoutePolicy, policyQueueName `queue`."""

    queue: str  # a PSAP URI, "*" (every queue) or "origination" (before LoST)
    owner: str  # i3 policyOwner: the agency's domain
    rules: tuple[Rule, ...]


@dataclass(frozen=True, slots=True)
class Prf:
    """What the PRF evaluates: the routing policy, the rule sets, the states to skip."""

    routing: RoutingPolicy
    queues: tuple[QueueRules, ...] = ()
    skip_queue: frozenset[str] = frozenset(DEFAULT_SKIP_QUEUE)
    skip_service: frozenset[str] = frozenset(DEFAULT_SKIP_SERVICE)

    def rule_sets(self, queue: str) -> list[QueueRules]:
        """The queue's own rule set, then the wildcard's: evaluated in that order."""
        own = [q for q in self.queues if _is_uri_queue(q.queue) and same_uri(q.queue, queue)]
        return own + [q for q in self.queues if q.queue == "*"]

    def origination(self) -> QueueRules | None:
        """The OriginationRoutePolicy (queue "origination"), if configured."""
        return next((q for q in self.queues if q.queue == ORIGINATION), None)


def _is_uri_queue(queue: str) -> bool:
    return queue not in ("*", ORIGINATION)


# ---------------------------------------------------------------- compiling the config


def _strings(value: Any, what: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple) or not value:
        raise ValueError(f"{what}: expected a string or a non-empty list of strings")
    out = []
    for v in value:
        if not isinstance(v, str) or not v.strip():
            raise ValueError(f"{what}: {v!r} is not a non-empty string")
        out.append(v.strip())
    return tuple(out)


def _states(value: Any, what: str, allowed: tuple[str, ...]) -> frozenset[str]:
    vals = _strings(value, what)
    bad = [v for v in vals if v not in allowed and v != UNKNOWN]
    if bad:
        raise ValueError(
            f"{what}: {', '.join(map(repr, bad))} not one of {', '.join(allowed)}, {UNKNOWN}"
        )
    return frozenset(vals)


def _conditions(when: Mapping[str, Any]) -> Conditions:
    unknown = sorted(set(when) - set(CONDITIONS))
    if unknown:
        raise ValueError(
            f"unknown condition(s) {', '.join(unknown)} (known: {', '.join(CONDITIONS)})"
        )
    c = Conditions()
    if "queue_state" in when:
        c = replace(c, queue_states=_states(when["queue_state"], "queue_state", QUEUE_STATES))
    if "service_state" in when:
        states = _states(when["service_state"], "service_state", SERVICE_STATES)
        c = replace(c, service_states=states)
    if "time" in when:
        if not isinstance(when["time"], str):
            raise ValueError(f'time: expected "HH:MM-HH:MM", got {when["time"]!r}')
        c = replace(c, window=parse_window(when["time"]))
    if "weekdays" in when:
        days = [d.upper() for d in _strings(when["weekdays"], "weekdays")]
        bad = [d for d in days if d not in WEEKDAYS]
        if bad:
            raise ValueError(f"weekdays: {', '.join(bad)} not one of {', '.join(WEEKDAYS)}")
        c = replace(c, weekdays=frozenset(WEEKDAYS.index(d) for d in days))
    if "service" in when:
        urns = tuple(s.lower() for s in _strings(when["service"], "service"))
        bad = [u for u in urns if not u.startswith("urn:")]
        if bad:
            raise ValueError(f"service: {', '.join(bad)} is not a service URN (urn:service:...)")
        c = replace(c, services=urns)
    if "source" in when:
        c = replace(
            c, sources=tuple(s.lower().rstrip(".") for s in _strings(when["source"], "source"))
        )
    return c


def _sip_uri(uri: str, what: str) -> None:
    try:
        parsed = parse_uri(uri)
    except Ng911Error as exc:
        raise ValueError(f"{what} {uri!r} is not a URI: {exc}") from None
    if not isinstance(parsed, SipURI):
        raise ValueError(f"{what} {uri!r} is not a sip:/sips: URI")


def _host(uri: str) -> str:
    try:
        parsed = parse_uri(uri)
    except Ng911Error:
        return ""
    return parsed.host if isinstance(parsed, SipURI) else ""


class RuleSpec(Protocol):
    """A rule as configured (`config.PolicyRule`): what `compile_policy` reads of it. The
    config layer imports this module to check its rules, so this one names no config
    class, only the fields it reads."""

    @property
    def name(self) -> str: ...
    @property
    def action(self) -> str: ...
    @property
    def recipient(self) -> str: ...
    @property
    def cause(self) -> str: ...
    @property
    def when(self) -> Mapping[str, Any]: ...


class QueueSpec(Protocol):
    """A queue's rules as configured (`config.QueuePolicy`)."""

    @property
    def queue(self) -> str: ...
    @property
    def owner(self) -> str: ...
    @property
    def rules(self) -> Sequence[RuleSpec]: ...


def compile_policy(queues: Iterable[QueueSpec], routing: RoutingPolicy) -> tuple[QueueRules, ...]:
    """The configured rule sets, checked; raises `PolicyError` naming the queue and rule.

    Refused: a queue that is not a SIP URI, "*" or "origination", a queue twice, a rule
    without a name or with a name used twice in its queue, an unknown action or condition, a
    bad time window or state value, a route without a recipient, a recipient that is the
    rule's own queue (a loop), an overflow to the alternates of a queue that has none
    configured; before LoST ("origination"), an action or a condition that needs a queue.
    """
    out: list[QueueRules] = []
    for qp in queues:
        q = qp.queue.strip()
        where = f"policy for queue {q!r}"
        if _is_uri_queue(q):
            try:
                _sip_uri(q, "queue")
            except ValueError as exc:
                raise PolicyError(f"{where}: {exc}") from None
            if any(_is_uri_queue(o.queue) and same_uri(o.queue, q) for o in out):
                raise PolicyError(f"{where}: the queue has two rule sets")
        elif any(o.queue == q for o in out):
            raise PolicyError(f"{where}: the {q} queue has two rule sets")
        rules: list[Rule] = []
        for i, r in enumerate(qp.rules):
            name = r.name.strip()
            if not name:
                raise PolicyError(f"{where}: rule #{i + 1} has no name")
            if any(x.name == name for x in rules):
                raise PolicyError(f"{where}: two rules named {name!r}")
            try:
                rules.append(
                    _rule(name, r.action, r.recipient.strip(), r.cause, r.when, q, routing)
                )
            except ValueError as exc:
                raise PolicyError(f"{where}, rule {name!r}: {exc}") from None
        owner = qp.owner.strip() or (_host(q) if _is_uri_queue(q) else routing.owner)
        out.append(QueueRules(q, owner, tuple(rules)))
    return tuple(out)


def _rule(
    name: str,
    action: str,
    recipient: str,
    cause: str,
    when: Mapping[str, Any],
    queue: str,
    routing: RoutingPolicy,
) -> Rule:
    if action not in ACTIONS:
        raise ValueError(f"action {action!r} is not one of {', '.join(ACTIONS)}")
    if queue == ORIGINATION:
        if action not in ORIGINATION_ACTIONS:
            raise ValueError(
                f"action {action!r} needs a queue; before LoST only"
                f" {', '.join(ORIGINATION_ACTIONS)}"
            )
        early = sorted(set(when) - set(ORIGINATION_CONDITIONS))
        if early:
            raise ValueError(
                f"condition(s) {', '.join(early)} need a queue; before LoST only"
                f" {', '.join(ORIGINATION_CONDITIONS)}"
            )
    if recipient:
        if action not in ("route", "overflow"):
            raise ValueError(f"a recipient is for route and overflow, not {action}")
        _sip_uri(recipient, "recipient")
        if _is_uri_queue(queue) and same_uri(recipient, queue):
            raise ValueError(f"recipient {recipient} is the rule's own queue (a loop)")
    elif action == "route":
        raise ValueError("route needs a recipient")
    elif action == "overflow" and _is_uri_queue(queue) and not routing.alternates_of(queue):
        raise ValueError(f"overflow without a recipient, and {queue} has no alternates")
    return Rule(
        name, action, recipient, cause.strip() or DEFAULT_CAUSE.get(action, ""), _conditions(when)
    )


# ---------------------------------------------------------------- evaluating


class CallFacts(Value):
    """What the PRF knows of one call besides the board and the clock."""

    __slots__ = ("outcome", "service", "sources")
    _FIELDS = ("outcome", "service", "sources")

    def __init__(
        self, outcome: LostOutcome, service: str, sources: frozenset[str] = frozenset()
    ) -> None:
        self.outcome: Final = outcome
        self.service: Final = service  # the call's service URN (Request-URI), urn:service:sos...
        # the previous hop: its TLS identities, else its host-table names, and its IP address
        self.sources: Final = sources

    def _fields(self) -> tuple[object, ...]:
        return (self.outcome, self.service, self.sources)


class Decision(Value):
    """The ordered plan, the queue whose rules were evaluated and the rule that matched."""

    __slots__ = ("all_unavailable", "deferred", "owner", "plan", "queue", "rule")
    _FIELDS = ("plan", "queue", "rule", "owner", "deferred", "all_unavailable")

    def __init__(
        self,
        plan: list[RouteCandidate],
        queue: str,
        rule: str,
        owner: str,
        deferred: list[tuple[str, str]],
        all_unavailable: bool = False,
    ) -> None:
        self.plan: Final = plan
        self.queue: Final = queue
        self.rule: Final = rule
        self.owner: Final = owner
        self.deferred: Final = deferred  # (uri, state) put after the others
        # every candidate's state said no: tried in plan order
        self.all_unavailable: Final = all_unavailable

    def _fields(self) -> tuple[object, ...]:
        return (self.plan, self.queue, self.rule, self.owner, self.deferred, self.all_unavailable)


def _states_of(
    board: StateBoard, uri: str, mono: float | None
) -> tuple[QueueState | None, ServiceState | None]:
    """The board's fresh states of a PSAP, its key the URI as LoST or the config names it
    (the plan's may differ in scheme or transport)."""
    q, s = board.queue(uri, mono), board.service(uri, mono)
    if q is None:
        key = next((k for k in board.queues if same_uri(k, uri)), None)
        q = board.queue(key, mono) if key is not None else None
    if s is None:
        key = next((k for k in board.services if same_uri(k, uri)), None)
        s = board.service(key, mono) if key is not None else None
    return q, s


def _queue_matches(states: frozenset[str], q: QueueState | None) -> bool:
    if q is None:
        return UNKNOWN in states
    return q.state in states or ("Full" in states and q.full)


def _service_matches(wanted: tuple[str, ...], service: str) -> bool:
    for w in wanted:
        if w.endswith(".*"):
            if service.startswith(w[:-1]):
                return True
        elif service == w:
            return True
    return False


def _source_matches(wanted: tuple[str, ...], sources: frozenset[str]) -> bool:
    return any(s == w or s.endswith("." + w) for w in wanted for s in sources)


def _holds(
    c: Conditions,
    facts: CallFacts,
    q: QueueState | None,
    s: ServiceState | None,
    now: datetime,
) -> bool:
    if c.queue_states and not _queue_matches(c.queue_states, q):
        return False
    if c.service_states and (s.state if s is not None else UNKNOWN) not in c.service_states:
        return False
    if c.window is not None and not c.window.contains(now.hour * 60 + now.minute):
        return False
    if c.weekdays and now.weekday() not in c.weekdays:
        return False
    if c.services and not _service_matches(c.services, facts.service.lower()):
        return False
    return not (c.sources and not _source_matches(c.sources, facts.sources))


def _unavailable(prf: Prf, q: QueueState | None, s: ServiceState | None) -> str | None:
    """Why a PSAP cannot take a call now by its last state, or None."""
    if q is not None and _queue_matches(prf.skip_queue, q):
        full = q.full and q.state != "Full"
        return (
            f"QueueState {q.state} {q.length}/{q.max_length}" if full else f"QueueState {q.state}"
        )
    if s is not None and s.state in prf.skip_service:
        return f"ServiceState {s.state}"
    return None


def _act(
    prf: Prf, rule: Rule, owner: str, queue: str, outcome: LostOutcome
) -> list[RouteCandidate]:
    label = f"rule {rule.name}"
    if rule.action == "normal":  # the built-in plan, the queue's entries under this rule
        return [
            c.replace(reason=f"{label}: {c.reason}", rule=rule.name, owner=owner)
            if c.rule == "normal"
            else c
            for c in plan_routes(outcome, prf.routing)
        ]
    b = PlanBuilder(prf.routing)
    if rule.action == "route" or (rule.action == "overflow" and rule.recipient):
        b.add(
            rule.recipient,
            f"{label}: {rule.action} {queue} to {rule.recipient}",
            rule.name,
            owner=owner,
            cause=rule.cause,
        )
        b.add_alternates(rule.recipient, "alternate of")
    elif rule.action == "overflow":
        for alt in prf.routing.alternates_of(queue):
            b.add(
                alt,
                f"{label}: overflow {queue} to its alternate",
                rule.name,
                owner=owner,
                cause=rule.cause,
            )
    else:  # default
        b.add(
            prf.routing.default_route,
            f"{label}: default route",
            rule.name,
            owner=owner,
            cause=rule.cause,
        )
    b.add_default(f"default route after rule {rule.name}")
    return b.plan()


def evaluate(
    prf: Prf, facts: CallFacts, board: StateBoard, now: datetime, mono: float | None = None
) -> Decision:
    """The plan for one call: the first matching rule of the queue's set, then of "*", else
    the built-in set; then PSAPs whose state says no moved last. `now` is local time (the
    ESRP's clock, injectable); `mono` the monotonic time the board's ages are counted in."""
    queue = normal_next_hop(facts.outcome, prf.routing) or prf.routing.default_route
    q, s = _states_of(board, queue, mono)
    plan: list[RouteCandidate] | None = None
    rule_name, owner = "", prf.routing.owner
    for rs in prf.rule_sets(queue):
        rule = next((r for r in rs.rules if _holds(r.when, facts, q, s, now)), None)
        if rule is not None:
            plan = _act(prf, rule, rs.owner, queue, facts.outcome)
            rule_name, owner = rule.name, rs.owner
            break
    if plan is None:
        plan = plan_routes(facts.outcome, prf.routing)
        rule_name = plan[0].rule if plan else ""
    return _by_state(prf, plan, queue, rule_name, owner, board, mono)


def originate(
    prf: Prf,
    service: str,
    sources: frozenset[str],
    board: StateBoard,
    now: datetime,
    mono: float | None = None,
) -> Decision | None:
    """The OriginationRoutePolicy, before LoST: the plan of its first matching "route" or
    "default" rule (each entry's policy_type OriginationRoutePolicy, then the default route
    as every plan ends), or None when no rule matches or the one that does says "normal"
    (ask LoST). PSAPs whose state says no are moved last, as after LoST."""
    rs = prf.origination()
    if rs is None:
        return None
    facts = CallFacts(NoLocation("not asked: origination policy"), service, sources)
    rule = next((r for r in rs.rules if _holds(r.when, facts, None, None, now)), None)
    if rule is None or rule.action == "normal":
        return None
    plan = [
        c.replace(policy_type=ORIGINATION_POLICY_TYPE) if c.rule == rule.name else c
        for c in _act(prf, rule, rs.owner, ORIGINATION, facts.outcome)
    ]
    return _by_state(prf, plan, ORIGINATION, rule.name, rs.owner, board, mono)


def _by_state(
    prf: Prf,
    plan: list[RouteCandidate],
    queue: str,
    rule_name: str,
    owner: str,
    board: StateBoard,
    mono: float | None,
) -> Decision:
    """The plan with the PSAPs whose state says no moved last (all in plan order when every
    one says no: a state may be stale, and a call is never dropped on one)."""
    ready: list[RouteCandidate] = []
    later: list[RouteCandidate] = []
    deferred: list[tuple[str, str]] = []
    for c in plan:
        why = _unavailable(prf, *_states_of(board, c.uri, mono))
        if why is None:
            ready.append(c)
        else:
            later.append(c.replace(reason=f"{c.reason}; deferred: {why}"))
            deferred.append((c.uri, why))
    if not ready and later:
        return Decision(plan, queue, rule_name, owner, deferred, all_unavailable=True)
    return Decision(ready + later, queue, rule_name, owner, deferred)
