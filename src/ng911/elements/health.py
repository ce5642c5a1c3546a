"""Peer health: which next hops (PSAPs) are up, which are down, and when to probe them.

Why: without memory of a dead PSAP, every call after a psapd crash waits the full
`failover_timeout` on it before trying the alternate. Kamailio's `dispatcher` module keeps
a state per destination: a destination that times out is flagged "probing"/inactive and
skipped, and OPTIONS keep-alives (`ds_ping_interval`) bring it back when it answers again.
This module is that policy, without I/O: the ESRP feeds in what it saw (a call or an OPTIONS
answered, a transport error or timeout, a 503) with the time, and asks who is up and whom
to ping now. It sends nothing and keeps no clock of its own, so every rule is tested alone.

Rules:
- a peer is up until `down_after` consecutive failures (timeout, transport error, 503
  Service Unavailable: RFC 3261 §21.5.4 "temporarily unable to process") mark it down;
- a down peer is up again after `up_after` consecutive answers (any response but 503 proves
  a SIP stack is listening; a 486 or 480 is a *busy* PSAP, not a dead one);
- an up peer is pinged every `interval` seconds, a down one every `interval_down`;
- the table is bounded (`max_peers`): peers learnt from LoST answers come and go, an
  attacker steering LoST must not grow it without bound; configured peers are never evicted.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

__all__ = ["HealthPolicy", "PeerHealth", "PeerState", "Transition"]


@dataclass(frozen=True, slots=True)
class HealthPolicy:
    down_after: int = 1  # consecutive failures that mark a peer down
    up_after: int = 1  # consecutive answers that mark a down peer up
    interval: float = 10.0  # keep-alive period of an up peer (s); 0 = no pings while up
    interval_down: float = 1.0  # ping period of a down peer (s)
    max_peers: int = 256


@dataclass(frozen=True, slots=True)
class PeerState:
    up: bool = True
    failures: int = 0  # consecutive
    answers: int = 0  # consecutive
    changed: float = 0.0  # when `up` last changed
    last_ping: float = float("-inf")
    reason: str = ""  # why it is down (or came up)
    pinned: bool = False  # configured: never evicted


@dataclass(frozen=True, slots=True)
class Transition:
    """A peer changed state: what the element logs."""

    peer: str
    up: bool
    reason: str


class PeerHealth:
    """The state of every known peer; see the module docstring for the rules."""

    def __init__(self, policy: HealthPolicy | None = None) -> None:
        self.policy = policy or HealthPolicy()
        self._peers: dict[str, PeerState] = {}

    # ------------------------------------------------------------- inspection

    def is_up(self, peer: str) -> bool:
        """Unknown peers are up: a first call is never refused on a guess."""
        st = self._peers.get(peer)
        return st is None or st.up

    def state(self, peer: str) -> PeerState | None:
        return self._peers.get(peer)

    @property
    def peers(self) -> tuple[str, ...]:
        return tuple(self._peers)

    def down(self) -> tuple[str, ...]:
        return tuple(p for p, s in self._peers.items() if not s.up)

    # ------------------------------------------------------------- events

    def track(self, peer: str, *, pinned: bool = False) -> None:
        """Start watching `peer` (ping it from now on)."""
        st = self._peers.get(peer)
        if st is None:
            self._evict()
            self._peers[peer] = PeerState(pinned=pinned)
        elif pinned and not st.pinned:
            self._peers[peer] = replace(st, pinned=True)
        else:  # most recently used last: eviction takes the oldest
            self._peers[peer] = self._peers.pop(peer)

    def answered(self, peer: str, now: float, what: str = "answered") -> Transition | None:
        """The peer answered (a call's provisional/final answer but 503, an OPTIONS reply)."""
        self.track(peer)
        st = self._peers[peer]
        answers = st.answers + 1
        if not st.up and answers >= self.policy.up_after:
            self._peers[peer] = replace(
                st, up=True, failures=0, answers=answers, changed=now, reason=what
            )
            return Transition(peer, True, what)
        # every answered call comes here (its 180 and its 200): every field spelt out (keep
        # in step with PeerState), not `replace`, which inspects the fields each time
        self._peers[peer] = PeerState(
            up=st.up,
            failures=0,
            answers=answers,
            changed=st.changed,
            last_ping=st.last_ping,
            reason=st.reason,
            pinned=st.pinned,
        )
        return None

    def failed(self, peer: str, now: float, reason: str) -> Transition | None:
        """No answer in time, a transport error or a 503 from the peer."""
        self.track(peer)
        st = self._peers[peer]
        failures = st.failures + 1
        if st.up and failures >= self.policy.down_after:
            self._peers[peer] = replace(
                st, up=False, failures=failures, answers=0, changed=now, reason=reason
            )
            return Transition(peer, False, reason)
        self._peers[peer] = replace(st, failures=failures, answers=0)
        return None

    def due(self, now: float) -> list[str]:
        """The peers to ping now (and note that they were): down ones every `interval_down`,
        up ones every `interval`."""
        out: list[str] = []
        for peer, st in self._peers.items():
            period = self.policy.interval if st.up else self.policy.interval_down
            if period <= 0:
                continue
            if now - st.last_ping >= period:
                out.append(peer)
        for peer in out:
            self._peers[peer] = replace(self._peers[peer], last_ping=now)
        return out

    def order(self, peers: list[str]) -> tuple[list[str], list[str]]:
        """Split a route plan into (up peers, down peers), each in plan order: the ESRP tries
        the up ones first and the down ones only when every up one failed, so that no call
        is ever dropped because of a stale "down"."""
        up = [p for p in peers if self.is_up(p)]
        down = [p for p in peers if not self.is_up(p)]
        return up, down

    # ------------------------------------------------------------- internals

    def _evict(self) -> None:
        while len(self._peers) >= self.policy.max_peers:
            victim = next((p for p, s in self._peers.items() if not s.pinned), None)
            if victim is None:
                return
            del self._peers[victim]
