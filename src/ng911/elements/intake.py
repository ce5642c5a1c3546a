"""Intake rules: what the originating BCF (the VSP) and the ESRP make of a new INVITE's
Request-URI and Resource-Priority before routing it, and a record of every correction.

Why here and not in the router: an emergency call must never be refused for how it was
addressed. RFC 6881 §8 and NENA-STA-010.3 (§4.1 BCF, §4.2 ESRP) have the first ESInet-facing
element mark the call with a service URN and an `esnet` priority; a conformance lab finds
calls that were answered 400/404/416 instead. Pure functions over `ng911.sip` values; the
elements log each `Correction` as an `intake_corrected` event.

- `urn:service:sos` or a registered sub-service: an emergency call, as written (both);
- `urn:service:SOS`, `urn:service:sos.bogus`, `urn:service:sos;x`: `urn:service:sos`
  (rules service-urn-case, unknown-sub-service, invalid-service-urn; both);
- `sip:911@…`, `tel:911`, `urn:service:911` (the dial plan): `urn:service:sos`, rule
  dial-string (both);
- `urn:service:test.sos[.sub]`: a test call, routed without `esnet` priority (both);
- anything else (`sip:alice@…`, `urn:service:counseling`): a normal call at the VSP,
  untouched; at the ESRP `urn:service:sos`, rule non-emergency-at-esrp.

At the VSP a normal call stays a normal call: only the dial plan and the service URNs make
an emergency call (a VSP that turned a mistyped number into a 911 call would flood PSAPs).
The ESRP has only an emergency ingress (NENA-STA-010.3 §4.2: every call it receives is
routed as an emergency call), so whatever reaches it is one.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from ng911.elements.emergency import (
    SOS,
    DialPlan,
    classify,
    fix_resource_priority,
    is_test_service,
    service_of_urn,
)
from ng911.sip.message import Request
from ng911.sip.uri import URN, SipURI, Value

__all__ = ["Correction", "Intake", "priority_correction", "take_in", "user_part_problem"]


class Correction(Value):
    """One change an intake rule made: the `intake_corrected` event's fields."""

    __slots__ = ("field", "now", "rule", "was")
    _FIELDS = ("field", "was", "now", "rule")

    def __init__(self, field: str, was: str, now: str, rule: str) -> None:
        self.field: Final = field  # "request-uri" | "resource-priority" | "service"
        self.was: Final = was
        self.now: Final = now
        self.rule: Final = rule

    def _fields(self) -> tuple[object, ...]:
        return (self.field, self.was, self.now, self.rule)

    def fields(self) -> dict[str, str]:
        return {"field": self.field, "was": self.was, "now": self.now, "rule": self.rule}


class Intake(Value):
    """How a new INVITE is taken in: the service to route it as, and what was corrected
    (the Request-URI's only; `priority_correction` is the Resource-Priority's)."""

    __slots__ = ("corrections", "service")
    _FIELDS = ("service", "corrections")

    def __init__(self, service: str, corrections: tuple[Correction, ...] = ()) -> None:
        self.service: Final = service
        self.corrections: Final = corrections

    def _fields(self) -> tuple[object, ...]:
        return (self.service, self.corrections)

    @property
    def test(self) -> bool:
        """A test call (RFC 6881 §15): routed like an emergency call, without priority."""
        return is_test_service(self.service)

    @property
    def non_emergency(self) -> bool:
        """Taken in only because it reached the ESRP (rule `non-emergency-at-esrp`)."""
        return any(c.rule == "non-emergency-at-esrp" for c in self.corrections)


def take_in(request: Request, plan: DialPlan, *, at_esrp: bool) -> Intake | None:
    """The service a new INVITE is routed as; None (VSP only) for a normal call."""
    uri = request.uri
    was = str(uri)
    if isinstance(uri, URN):
        match = service_of_urn(uri)
        if match is not None:
            fixes = () if match.rule is None else (_uri_fix(was, match.service, match.rule),)
            return Intake(match.service, fixes)
    if classify(uri, plan) == SOS:  # a dial string of the plan (a URN was read above)
        return Intake(SOS, (_uri_fix(was, SOS, "dial-string"),))
    if not at_esrp:
        return None
    return Intake(SOS, (_uri_fix(was, SOS, "non-emergency-at-esrp"),))


def _uri_fix(was: str, now: str, rule: str) -> Correction:
    return Correction("request-uri", was[:256], now, rule)


def priority_correction(values: Iterable[str]) -> tuple[str, Correction | None]:
    """The Resource-Priority to send (`fix_resource_priority`: RFC 4412 §3.1 syntax, an
    `esnet` value 0-4 of RFC 7135 §2, else `esnet.1`) and the correction, None if kept."""
    values = list(values)
    new, note = fix_resource_priority(values)
    if note is None:
        return new, None
    was = ", ".join(v.strip() for v in values)
    if not was:
        rule = "missing-resource-priority"
    elif any(t.strip().lower().startswith("esnet.") for v in values for t in v.split(",")):
        rule = "invalid-resource-priority"
    else:
        rule = "no-esnet-resource-priority"  # only other namespaces', or garbage
    return new, Correction("resource-priority", was[:256], new, rule)


def user_part_problem(uri: object) -> str | None:
    """Why a SIP Request-URI's user part cannot be a subscriber (control characters or
    NUL, escaped or not: RFC 3261 §25.1 allows no such user), else None. The VSP answers a
    normal call so addressed 400 with this reason instead of a registrar lookup's 404."""
    if not isinstance(uri, SipURI) or uri.user is None:
        return None
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in uri.user):
        return "Request-URI user part has control characters"
    return None
