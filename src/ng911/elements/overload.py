"""Overload control and per-source limits: who is admitted when an element cannot serve all.

Why a pure module: what an overloaded element sheds, and how fast it backs off and recovers,
is policy an operator tunes and a reviewer checks against RFC 7339 and NENA i3, so it is
decided here from numbers (event-loop lag, transaction count, clock) with no sockets, no
timers and no SIP parsing beyond what `classify` reads. `SipElement` feeds it and carries
out what it says.

The rules (DESIGN.md, "An element under stress"):

- **Emergency first.** A new request for `urn:service:sos*` (or `urn:emergency:service:sos*`),
  a request carrying `Resource-Priority: esnet.*` (RFC 7135), or one the element itself
  recognises as an emergency call (the VSP's dial strings) is `EMERGENCY`; requests inside a
  dialog (a To tag), CANCEL and ACK are `IN_DIALOG` (they end or complete work already
  admitted, so shedding them only makes the overload last longer); the rest is `NORMAL`.
- **Shed normal traffic, by loss.** The controller keeps a shed fraction `p` (RFC 7339's
  "loss" algorithm: the fraction of new non-priority requests refused). Each sample of the
  event loop's lag raises `p` by `step_up` while the lag is above `lag_target` and lowers it
  by `step_down` once it is below half of it (additive increase, additive decrease: it backs
  off within ~0.2 s and recovers within ~1 s, without flapping). The same goes for the UDP
  backlog, which the loop's own lag does not show: a queue that never emptied at any
  wake-up of a sample (unlike a burst read at once) whose head had waited more than
  `lag_target` in the kernel (`ng911.net.udp` reads the arrival stamp). What counts is the
  wait, as for the lag: a proxy near its capacity keeps ~100 datagrams queued, a few ms of
  waiting. Only where the socket gives no stamp does a count stand in for it (more than
  `backlog_target` datagrams). A refused request gets
  `503 Service Unavailable` with `Retry-After` (RFC 3261 §21.5.4), answered statelessly, and
  RFC 7339's `oc` parameters when the client's Via says it supports them.
- **Bounded state.** Above `max_transactions` transactions, or `max_held_mb` of request text
  held by server transactions (a flood of 60 KB datagrams is not a flood of 1 KB ones),
  every new normal request is refused whatever the lag; above the hard limits even priority
  requests are (503,
  so an upstream ESRP or VSP fails over to another route rather than waiting on us): the
  only bound on memory an attacker cannot talk its way around.
- **Per source** (Kamailio's `pike`): a token bucket per source address refills at
  `source_rate` requests/s up to `source_burst`. A normal request needs a token; a priority
  request may borrow one more burst before it is refused, so a source flooding normal
  traffic starves its own normal traffic first. Known peers (the element's host table,
  mutually authenticated TLS peers, the `trusted` networks) are not limited per source: the
  ESRP's only upstream is its VSPs, and one VSP carrying a city's calls is not a flood.
"""

from __future__ import annotations

import ipaddress
import random as _random
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ng911.elements.config import OverloadConfig
from ng911.sip.priority import Priority, classify

__all__ = [
    "Admission",
    "Decision",
    "LoadController",
    "LogRecord",
    "Priority",
    "RejectedRequests",
    "SourceLimiter",
    "TrustedSources",
    "classify",
    "overload_via_params",
]


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with a new request: admit it, refuse it (503 + Retry-After), or, when
    `answer` is False, drop it unanswered."""

    admit: bool
    reason: str = ""
    retry_after: int = 0
    answer: bool = True


ADMIT = Decision(True)


class LoadController:
    """RFC 7339-style loss controller fed by event-loop lag and the transaction count."""

    def __init__(
        self,
        *,
        lag_target: float = 0.05,
        backlog_target: int = 32,
        max_transactions: int = 150_000,
        hard_max_transactions: int = 300_000,
        max_bytes: int = 256 << 20,
        hard_max_bytes: int = 512 << 20,
        retry_after: int = 10,
        step_up: float = 0.1,
        step_down: float = 0.02,
        max_shed: float = 1.0,
        confirm: int = 3,
    ) -> None:
        self.lag_target = lag_target
        self.backlog_target = backlog_target
        self.max_transactions = max_transactions
        self.hard_max_transactions = hard_max_transactions
        self.max_bytes = max_bytes
        self.hard_max_bytes = hard_max_bytes
        self.retry_after = retry_after
        self.step_up = step_up
        self.step_down = step_down
        self.max_shed = max_shed
        self.confirm = max(1, confirm)
        self.shed = 0.0  # fraction of new normal requests refused
        self.lag = 0.0  # last lag sample, seconds
        self.backlog = 0  # last backlog sample, datagrams
        self.queue_wait: float | None = 0.0  # last sample's UDP queue wait, s (None: unknown)
        self._over_run = 0  # consecutive samples over target
        self.seq = 0  # RFC 7339 oc-seq: bumped on every change of `shed`
        self.refused = 0
        self.refused_priority = 0

    @property
    def overloaded(self) -> bool:
        return self.shed > 0.0

    def sample(self, lag: float, backlog: int = 0, queue_wait: float | None = None) -> bool:
        """One sample: how late a periodic timer ran (`lag`, s), the fewest datagrams found
        still queued after a wake-up since the last sample (`backlog`), and how long the
        head of that queue had waited (`queue_wait`, s; None: not measured, the count is
        judged instead). Shedding rises only when `confirm` samples in a row are over
        (`confirm`: one late timer is a pause, not an overload; a test machine's hiccups
        should not refuse anyone's REGISTER). True when the state changed between
        overloaded and not (the element logs it)."""
        self.lag = lag
        self.backlog = backlog
        self.queue_wait = queue_wait
        before = self.overloaded
        old = self.shed
        over = bool(self.signal())
        delay = max(lag, queue_wait or 0.0)
        self._over_run = self._over_run + 1 if over else 0
        if self._over_run >= self.confirm:
            self.shed = min(self.max_shed, self.shed + self.step_up)
        elif not over and delay < self.lag_target / 2 and self.shed > 0.0:
            self.shed = max(0.0, self.shed - self.step_down)
            if self.shed < 1e-9:
                self.shed = 0.0
        if self.shed != old:
            self.seq += 1
        return before != self.overloaded

    def signal(self) -> str:
        """Which signal the last sample was over on ("lag", "backlog", both, or "")."""
        over = []
        if self.lag > self.lag_target:
            over.append("lag")
        wait = self.queue_wait
        if wait > self.lag_target if wait is not None else self.backlog > self.backlog_target:
            over.append("backlog")
        return "+".join(over)

    def admit(
        self, priority: Priority, transactions: int, draw: float, held_bytes: int = 0
    ) -> Decision:
        """Admit or refuse a new request; `draw` is uniform in [0, 1) (the caller's RNG,
        so tests choose it); `held_bytes`: the text of the requests the element holds."""
        if transactions >= self.hard_max_transactions or held_bytes >= self.hard_max_bytes:
            self.refused += 1
            if priority != Priority.NORMAL:
                self.refused_priority += 1
            why = f"{transactions} transactions, {held_bytes >> 20} MB held (hard limit)"
            return Decision(False, why, self.retry_after)
        if priority != Priority.NORMAL:
            return ADMIT
        if transactions >= self.max_transactions or held_bytes >= self.max_bytes:
            self.refused += 1
            why = f"{transactions} transactions, {held_bytes >> 20} MB held"
            return Decision(False, why, self.retry_after)
        if self.shed > 0.0 and draw < self.shed:
            self.refused += 1
            return Decision(False, f"overload, shedding {self.shed:.0%}", self.retry_after)
        return ADMIT


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def overload_via_params(shed: float, seq: int, validity_ms: int = 500) -> dict[str, str | None]:
    """RFC 7339 §5.2: what a server puts in the top Via of a response to a client that
    advertised `oc`: the loss percentage asked of it, for how long, in which sequence."""
    return {
        "oc": str(round(shed * 100)),
        "oc-algo": '"loss"',
        "oc-validity": str(validity_ms if shed > 0 else 0),
        "oc-seq": str(seq),
    }


class TrustedSources:
    """Addresses never limited per source: explicit networks plus known peers' addresses."""

    def __init__(self, networks: Iterable[str] = (), addresses: Iterable[str] = ()) -> None:
        self._nets = [ipaddress.ip_network(n, strict=False) for n in networks]
        self._known = {a.lower() for a in addresses}
        self._cache: OrderedDict[str, bool] = OrderedDict()

    def __contains__(self, host: object) -> bool:
        if not isinstance(host, str):
            return False
        hit = self._cache.get(host)
        if hit is not None:
            return hit
        ok = host.lower() in self._known
        if not ok and self._nets:
            try:
                ip = ipaddress.ip_address(host.strip("[]"))
                ok = any(ip in n for n in self._nets)
            except ValueError:
                ok = False
        self._cache[host] = ok
        if len(self._cache) > 4096:
            self._cache.popitem(last=False)
        return ok


class SourceLimiter:
    """Token bucket per source address (pike-style), in bounded memory.

    Up to `max_sources` buckets are kept, least recently seen dropped first: a spoofed flood
    from random addresses evicts only other strangers' buckets, each of which starts full.
    """

    def __init__(self, rate: float, burst: float, *, max_sources: int = 65536) -> None:
        self.rate = rate
        self.burst = max(burst, 1.0)
        self.max_sources = max_sources
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()
        self.limited = 0

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def allow(self, source: str, priority: Priority, now: float) -> bool:
        b = self._buckets.get(source)
        if b is None:
            b = [self.burst, now]
            self._buckets[source] = b
            if len(self._buckets) > self.max_sources:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(source)
            b[0] = min(self.burst, b[0] + (now - b[1]) * self.rate)
            b[1] = now
        floor = 1.0 if priority == Priority.NORMAL else 1.0 - self.burst
        if b[0] < floor:
            self.limited += 1
            return False
        b[0] -= 1.0
        return True

    def __len__(self) -> int:
        return len(self._buckets)


class RejectedRequests:
    """Keys of INVITEs refused statelessly, so their ACKs (RFC 3261 §17.1.1.3: the ACK for
    a non-2xx is hop by hop) are absorbed here instead of being proxied like an ACK for a
    2xx. Bounded: the oldest keys go first."""

    def __init__(self, size: int = 65536) -> None:
        self.size = size
        self._keys: OrderedDict[object, None] = OrderedDict()

    def add(self, key: object) -> None:
        self._keys[key] = None
        if len(self._keys) > self.size:
            self._keys.popitem(last=False)

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._keys)


LogRecord = tuple[str, dict[str, Any]]  # (what, fields) for EventLog(what, **fields)


class Admission:
    """Everything an element decides about a new request before it costs a transaction:
    the per-source limit, then the load controller; and what to log about it, once a second.

    The element feeds it (`decide` per new request, `sample` from a periodic timer) and
    carries out the answers (a stateless 503, a log line); it holds no clock or socket.
    """

    def __init__(
        self,
        cfg: OverloadConfig,
        known_hosts: Iterable[str] = (),
        random: Callable[[], float] = _random.random,
    ) -> None:
        self.controller = LoadController(
            lag_target=cfg.lag_target,
            backlog_target=cfg.backlog_target,
            max_transactions=cfg.max_transactions,
            hard_max_transactions=cfg.hard_max_transactions,
            max_bytes=cfg.max_held_mb << 20,
            hard_max_bytes=cfg.hard_max_held_mb << 20,
            retry_after=cfg.retry_after,
        )
        self.sources = SourceLimiter(cfg.source_rate, cfg.source_burst)
        self.trusted = TrustedSources(cfg.trusted, known_hosts)
        self.refused_keys = RejectedRequests()  # INVITEs refused: absorb their ACKs
        self.retry_after = cfg.retry_after
        self._random = random
        self._logged: tuple[int, int, float] = (0, 0, 0.0)  # refused, limited, when

    def decide(
        self,
        priority: Priority,
        host: str,
        *,
        authenticated: bool,
        reliable: bool,
        transactions: int,
        now: float,
        held_bytes: int = 0,
    ) -> Decision:
        sources = self.sources
        if (
            sources.enabled
            and not authenticated  # a mutually authenticated TLS peer is a known one
            and host not in self.trusted
            and not sources.allow(host, priority, now)
        ):
            # pike-style: a datagram flood is dropped unanswered (an answer is more work and
            # feeds a reflection); a stream peer is told, so it does not wait on us
            return Decision(False, "source limit", self.retry_after, answer=reliable)
        return self.controller.admit(priority, transactions, self._random(), held_bytes)

    def spread(self, retry_after: int) -> int:
        """Retry-After spread over [n, 1.5 n], so refused clients do not all come back in
        the same second."""
        return retry_after + int(self._random() * (retry_after // 2 + 1))

    def sample(
        self,
        lag: float,
        backlog: int,
        transactions: int,
        now: float,
        queue_wait: float | None = None,
    ) -> list[LogRecord]:
        """Feed the controller one sample; the log records to write: a state change, and at
        most one `shedding` summary a second (never a line per refused request)."""
        ctl = self.controller
        out: list[LogRecord] = []
        if ctl.sample(max(0.0, lag), backlog, queue_wait):
            out.append(
                (
                    "overload" if ctl.overloaded else "overload_end",
                    {
                        "signal": ctl.signal(),
                        "lag_ms": round(ctl.lag * 1000, 1),
                        "backlog": ctl.backlog,
                        "queue_wait_ms": _ms(ctl.queue_wait),
                        "shed": round(ctl.shed, 2),
                        "transactions": transactions,
                    },
                )
            )
        refused, limited, last = self._logged
        if now - last >= 1.0 and (ctl.refused != refused or self.sources.limited != limited):
            out.append(
                (
                    "shedding",
                    {
                        "refused": ctl.refused - refused,
                        "refused_priority": ctl.refused_priority,
                        "source_limited": self.sources.limited - limited,
                        "shed": round(ctl.shed, 2),
                        "lag_ms": round(ctl.lag * 1000, 1),
                        "backlog": ctl.backlog,
                        "queue_wait_ms": _ms(ctl.queue_wait),
                        "transactions": transactions,
                    },
                )
            )
            self._logged = (ctl.refused, self.sources.limited, now)
        return out
