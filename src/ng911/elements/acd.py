"""Automatic call distribution for psapd: queue, round-robin offer, re-offer on no answer.

Why a pure state machine: the rules (who gets the next call, when a call is re-offered,
when the PSAP says busy) are the part of a PSAP an operator argues about, so they are
tested alone, without SIP or a clock. psapd feeds events in (a call arrives, a call
taker answers, declines, does not answer in time, hangs up) and carries out the actions
that come back (send the INVITE to a taker, CANCEL it, answer 182/486/480...). The caller
owns the clock: an `Offer` carries its timeout; psapd starts the timer and calls
`no_answer` when it fires. Events that arrive late (a timer for an offer already
answered) are ignored, so timer races need no care upstream.

Rules:
- a new call goes to a free call taker, round-robin from the one after the last chosen;
- no free taker: the call waits in a FIFO queue (182 Queued, RFC 3261 §21.1.3);
- no answer in `offer_timeout`, or a decline: the offer is withdrawn and the call offered
  to another free taker (one not yet tried for this call first; else any free one, even
  the same: an emergency call never waits while someone could ring);
- no call taker registered at all: 480 Temporarily Unavailable at once, nobody could
  ever answer a queued call (after a restart, say), while the ESRP's alternate PSAP can;
- the last taker gone (unregistered, unreachable) with calls queued: they wait for one to
  register again, but not for ever: psapd calls `unstaffed` after its `unstaffed_wait`,
  and every call still queued with no taker registered is refused 480 (the ESRP, which
  stopped its failover timer at our 182, then tries the alternate PSAP);
- when every taker is busy and the queue is full the call is refused: 486 Busy Here with
  Retry-After (RFC 3261 §20.33); the ESRP fails over to the alternate PSAP on both;
- a taker is freed as soon as its call ends, however it ends (BYE, CANCEL, the ACK for
  the 2xx never coming: psapd's `ack_timeout`), and takes the head of the queue at once.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

__all__ = [
    "Acd",
    "AcdAction",
    "Connected",
    "Offer",
    "Queued",
    "Reject",
    "Release",
    "WithdrawOffer",
]


@dataclass(frozen=True, slots=True)
class Offer:
    """Send the call to `taker`; call `no_answer(call, taker)` after `timeout` s."""

    call: str
    taker: str
    timeout: float


@dataclass(frozen=True, slots=True)
class WithdrawOffer:
    """Cancel the pending offer of `call` to `taker` (CANCEL the branch)."""

    call: str
    taker: str
    reason: str


@dataclass(frozen=True, slots=True)
class Queued:
    call: str
    position: int  # 1 = next


@dataclass(frozen=True, slots=True)
class Reject:
    call: str
    status: int
    retry_after: int
    reason: str


@dataclass(frozen=True, slots=True)
class Connected:
    call: str
    taker: str


@dataclass(frozen=True, slots=True)
class Release:
    """A taker answered an offer already withdrawn: hang that leg up (ACK + BYE)."""

    call: str
    taker: str


AcdAction = Offer | WithdrawOffer | Queued | Reject | Connected | Release


@dataclass(slots=True)
class _Call:
    call: str
    tried: set[str] = field(default_factory=set)
    offered_to: str | None = None
    taker: str | None = None  # connected


class Acd:
    """The queue and the takers of one PSAP (see the module docstring for the rules)."""

    def __init__(self, *, queue_size: int = 10, offer_timeout: float = 10.0, retry_after: int = 30):
        self.queue_size = queue_size
        self.offer_timeout = offer_timeout
        self.retry_after = retry_after
        self._takers: list[str] = []
        self._state: dict[str, str | None] = {}  # taker -> call it is offered/connected, or None
        self._calls: dict[str, _Call] = {}
        self._queue: deque[str] = deque()
        self._next = 0

    # ------------------------------------------------------------- inspection

    @property
    def takers(self) -> tuple[str, ...]:
        return tuple(self._takers)

    @property
    def queue(self) -> tuple[str, ...]:
        return tuple(self._queue)

    def taker_of(self, call: str) -> str | None:
        c = self._calls.get(call)
        return None if c is None else (c.taker or c.offered_to)

    def free_takers(self) -> list[str]:
        return [t for t in self._takers if self._state.get(t) is None]

    # ------------------------------------------------------------- events

    def add_taker(self, taker: str) -> list[AcdAction]:
        if taker not in self._state:
            self._takers.append(taker)
            self._state[taker] = None
        return self._dispatch()

    def remove_taker(self, taker: str) -> list[AcdAction]:
        if taker not in self._state:
            return []
        call = self._state.pop(taker)
        idx = self._takers.index(taker)
        self._takers.remove(taker)
        if idx < self._next:
            self._next -= 1
        actions: list[AcdAction] = []
        if call is not None:
            c = self._calls.get(call)
            if c is not None and c.offered_to == taker:
                c.offered_to = None
                actions.append(WithdrawOffer(call, taker, "call taker unregistered"))
                self._queue.appendleft(call)
        return actions + self._dispatch()

    def incoming(self, call: str) -> list[AcdAction]:
        """A new call for this PSAP."""
        if call in self._calls:
            return []
        if not self._takers:
            return [Reject(call, 480, self.retry_after, "no call taker registered")]
        self._calls[call] = _Call(call)
        taker = self._pick(self._calls[call])
        if taker is not None:
            return [self._offer(self._calls[call], taker)]
        if len(self._queue) < self.queue_size:
            self._queue.append(call)
            return [Queued(call, len(self._queue))]
        del self._calls[call]
        return [Reject(call, 486, self.retry_after, "all call takers busy, queue full")]

    def answered(self, call: str, taker: str) -> list[AcdAction]:
        c = self._calls.get(call)
        if c is None or c.offered_to != taker:
            return [Release(call, taker)]
        c.offered_to = None
        c.taker = taker
        self._state[taker] = call
        return [Connected(call, taker)]

    def declined(self, call: str, taker: str, status: int) -> list[AcdAction]:
        """The taker answered the offer with a final non-2xx (486, 480, 603, 408...)."""
        c = self._calls.get(call)
        if c is None or c.offered_to != taker:
            return []  # a late answer to a withdrawn offer
        c.offered_to = None
        self._free(taker)
        return self._requeue(c)

    def no_answer(self, call: str, taker: str) -> list[AcdAction]:
        c = self._calls.get(call)
        if c is None or c.offered_to != taker:
            return []  # answered or withdrawn meanwhile
        c.offered_to = None
        self._free(taker)
        return [
            WithdrawOffer(call, taker, f"no answer in {self.offer_timeout:g} s"),
            *self._requeue(c),
        ]

    def ended(self, call: str) -> list[AcdAction]:
        """The call is over (BYE either way) or abandoned (CANCEL): free its taker."""
        c = self._calls.pop(call, None)
        if c is None:
            return []
        actions: list[AcdAction] = []
        if call in self._queue:
            self._queue.remove(call)
        if c.offered_to is not None:
            actions.append(WithdrawOffer(call, c.offered_to, "caller abandoned"))
            self._free(c.offered_to)
        if c.taker is not None:
            self._free(c.taker)
        return actions + self._dispatch()

    def unstaffed(self) -> list[AcdAction]:
        """No call taker has registered again since the last one left: each queued call is
        refused 480 with Retry-After (nothing once a taker is back, or with none queued)."""
        if self._takers:
            return []
        actions: list[AcdAction] = []
        while self._queue:
            call = self._queue.popleft()
            self._calls.pop(call, None)
            actions.append(Reject(call, 480, self.retry_after, "no call taker registered"))
        return actions

    # ------------------------------------------------------------- internals

    def _free(self, taker: str) -> None:
        if taker in self._state:
            self._state[taker] = None

    def _requeue(self, c: _Call) -> list[AcdAction]:
        taker = self._pick(c)
        if taker is not None:
            return [self._offer(c, taker), *self._dispatch()]
        self._queue.appendleft(c.call)  # it was admitted: back to the head, never refused
        return [Queued(c.call, 1), *self._dispatch()]

    def _offer(self, c: _Call, taker: str) -> Offer:
        c.offered_to = taker
        c.tried.add(taker)
        self._state[taker] = c.call
        return Offer(c.call, taker, self.offer_timeout)

    def _pick(self, c: _Call) -> str | None:
        """Round-robin over free takers; untried ones first, tried ones when all are tried."""
        n = len(self._takers)
        if n == 0:
            return None
        order = [self._takers[(self._next + i) % n] for i in range(n)]
        free = [t for t in order if self._state.get(t) is None]
        if not free:
            return None
        untried = [t for t in free if t not in c.tried]
        # an emergency call never waits for a busy taker while a free one (even one that
        # did not answer it before) could ring: untried takers first, then anyone free
        choice = untried[0] if untried else free[0]
        self._next = (self._takers.index(choice) + 1) % n
        return choice

    def _dispatch(self) -> list[AcdAction]:
        actions: list[AcdAction] = []
        for call in list(self._queue):
            if not self.free_takers():
                break
            c = self._calls.get(call)
            if c is None:
                self._queue.remove(call)
                continue
            taker = self._pick(c)
            if taker is None:
                continue
            self._queue.remove(call)
            actions.append(self._offer(c, taker))
        return actions
