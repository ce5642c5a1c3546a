"""NENA i3 state (NENA-STA-010.3 §2.4): what an element says about itself and its queues.

Four event packages carry these as JSON bodies of RFC 6665 NOTIFYs: `emergency-ElementState`,
`emergency-ServiceState`, `emergency-QueueState`, `emergency-SecurityPosture`. The types live
here, sans-I/O, because three parts meet on them: psapd publishes them, the ESRP subscribes
and keeps a `StateBoard` of its PSAPs, and the Policy Routing Function decides on the board.
The JSON member names are i3's own (camelCase), so any i3 subscriber can read ng911's NOTIFYs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, TypeVar

S = TypeVar("S")

__all__ = [
    "ELEMENT_STATES",
    "EVENT_PACKAGES",
    "QUEUE_STATES",
    "SECURITY_POSTURES",
    "SERVICE_STATES",
    "ElementState",
    "QueueState",
    "SecurityPosture",
    "ServiceState",
    "StateBoard",
]

EVENT_PACKAGES = (
    "emergency-ElementState",
    "emergency-ServiceState",
    "emergency-QueueState",
    "emergency-SecurityPosture",
)
ELEMENT_STATES = (
    "Normal",
    "ScheduledMaintenance",
    "ServiceDisruption",
    "Overloaded",
    "GoingDown",
    "Down",
)
SERVICE_STATES = (
    "Normal",
    "Unstaffed",
    "ScheduledMaintenanceDown",
    "ScheduledMaintenanceAvailable",
    "MajorIncidentInProgress",
    "Partial",
    "Overloaded",
    "GoingDown",
    "Down",
)
QUEUE_STATES = ("Active", "Inactive", "Disabled", "Full", "Standby")
SECURITY_POSTURES = ("Green", "Yellow", "Orange", "Red")


def _pick(value: Any, allowed: tuple[str, ...], what: str) -> str:
    """i3 values are an enumeration: an unknown one is refused, not guessed at."""
    if value not in allowed:
        raise ValueError(f"{what} {value!r} is not one of {', '.join(allowed)}")
    return str(value)


@dataclass(frozen=True, slots=True)
class ElementState:
    element_id: str
    state: str = "Normal"
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"elementDomain": self.element_id, "state": self.state, "reason": self.reason}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ElementState:
        return cls(
            str(d["elementDomain"]),
            _pick(d["state"], ELEMENT_STATES, "state"),
            str(d.get("reason", "")),
        )


@dataclass(frozen=True, slots=True)
class ServiceState:
    service: str  # "PSAP", "ESRP", "ECRF", ...
    domain: str
    state: str = "Normal"
    reason: str = ""
    posture: str = "Green"

    def to_json(self) -> dict[str, Any]:
        return {
            "service": {"name": self.service, "domain": self.domain},
            "serviceState": {"state": self.state, "reason": self.reason},
            "securityPosture": {"posture": self.posture},
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ServiceState:
        svc, st = d["service"], d["serviceState"]
        posture = (d.get("securityPosture") or {}).get("posture", "Green")
        return cls(
            str(svc["name"]),
            str(svc["domain"]),
            _pick(st["state"], SERVICE_STATES, "serviceState"),
            str(st.get("reason", "")),
            _pick(posture, SECURITY_POSTURES, "posture"),
        )


@dataclass(frozen=True, slots=True)
class QueueState:
    queue_uri: str
    length: int
    max_length: int
    state: str = "Active"

    @property
    def full(self) -> bool:
        return self.state == "Full" or (self.max_length > 0 and self.length >= self.max_length)

    def to_json(self) -> dict[str, Any]:
        return {
            "queueUri": self.queue_uri,
            "queueLength": self.length,
            "queueMaxLength": self.max_length,
            "state": self.state,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> QueueState:
        length, most = int(d["queueLength"]), int(d["queueMaxLength"])
        if length < 0 or most < 0:
            raise ValueError("queueLength and queueMaxLength are counts, not negative")
        return cls(str(d["queueUri"]), length, most, _pick(d["state"], QUEUE_STATES, "state"))


@dataclass(frozen=True, slots=True)
class SecurityPosture:
    element_id: str
    posture: str = "Green"

    def to_json(self) -> dict[str, Any]:
        return {"elementDomain": self.element_id, "posture": self.posture}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> SecurityPosture:
        return cls(
            str(d.get("elementDomain", "")), _pick(d["posture"], SECURITY_POSTURES, "posture")
        )


@dataclass
class StateBoard:
    """The last state each peer (keyed by its SIP URI as LoST or the config names it) sent.

    A state older than `max_age` seconds counts as unknown: a subscription that stopped being
    refreshed must not keep a PSAP marked full (or normal) for ever.
    """

    max_age: float = 120.0
    queues: dict[str, tuple[float, QueueState]] = field(default_factory=dict)
    services: dict[str, tuple[float, ServiceState]] = field(default_factory=dict)

    def update_queue(self, peer: str, state: QueueState, now: float | None = None) -> None:
        self.queues[peer] = (time.monotonic() if now is None else now, state)

    def update_service(self, peer: str, state: ServiceState, now: float | None = None) -> None:
        self.services[peer] = (time.monotonic() if now is None else now, state)

    def forget(self, peer: str) -> None:
        self.queues.pop(peer, None)
        self.services.pop(peer, None)

    def queue(self, peer: str, now: float | None = None) -> QueueState | None:
        return self._fresh(self.queues.get(peer), now)

    def service(self, peer: str, now: float | None = None) -> ServiceState | None:
        return self._fresh(self.services.get(peer), now)

    def _fresh(self, entry: tuple[float, S] | None, now: float | None) -> S | None:
        if entry is None:
            return None
        at, state = entry
        return state if (time.monotonic() if now is None else now) - at <= self.max_age else None
