"""Recognising an emergency call on the originating side (the VSP proxy).

Why: a caller dials digits (`911`, `112`), or a phone puts `urn:service:sos` itself
(RFC 5031). Everything downstream (ESRP, LoST, PSAP) only understands the service URN,
so the originating network rewrites the call once, at its edge (RFC 6881 §8, NENA i3):

- Request-URI and To become `urn:service:sos` (a sub-service such as `urn:service:sos.fire`
  is kept as dialled);
- `Resource-Priority: esnet.1` is added (RFC 7135 §2 "esnet" namespace, priorities 0–4);
  an invalid esnet value is replaced, other namespaces' well-formed values are kept;
- a service URN of the `sos` family that is not a registered one (`urn:service:sos.bogus`,
  `urn:service:sos;x`) is read as `urn:service:sos`: the caller asked for help, and an
  ECRF knows no mapping for the unknown service (`service_of_urn`);
- `urn:service:test.sos` (RFC 6881 §15, the IANA `test` service) is a test call: routed like
  an emergency call, but without emergency priority.

Pure functions: no I/O, the request is copied, never changed in place.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from ng911.sip.message import Request
from ng911.sip.uri import URN, AbsoluteURI, SipURI, TelURI, Value, parse_name_addr, parse_uri

__all__ = [
    "DIAL_STRINGS",
    "SOS",
    "SOS_SUB_SERVICES",
    "TEST_SOS",
    "DialPlan",
    "EmergencyRewrite",
    "ServiceMatch",
    "classify",
    "fix_resource_priority",
    "is_test_service",
    "rewrite_emergency",
    "service_of_urn",
    "tested_service",
]

SOS = "urn:service:sos"
TEST_SOS = "urn:service:test.sos"
RESOURCE_PRIORITY = "esnet.1"

# Emergency dial strings per country (ITU-T E.161 / national numbering plans). 112 is
# accepted everywhere GSM handsets are sold; operators add more in the VSP config.
DIAL_STRINGS: dict[str, tuple[str, ...]] = {
    "US": ("911", "112"),
    "CA": ("911", "112"),
    "MX": ("911", "112"),
    "EU": ("112",),
    "DE": ("112", "110"),
    "FR": ("112", "15", "17", "18"),
    "GB": ("999", "112"),
    "IE": ("999", "112"),
    "AU": ("000", "112"),
    "NZ": ("111", "112"),
    "IN": ("112",),
    "JP": ("110", "119"),
}

# The registered sub-services of `sos` (IANA "Service URN Labels": RFC 5031 §4.2, RFC 8147).
SOS_SUB_SERVICES: frozenset[str] = frozenset(
    {
        "ambulance",
        "animal-control",
        "ecall",
        "ecall.automatic",
        "ecall.manual",
        "fire",
        "gas",
        "marine",
        "mountain",
        "physician",
        "poison",
        "police",
    }
)

_VISUAL = re.compile(r"[-.() ]")  # RFC 3966 §5.1.1 visual separators
_RP_VALUE = re.compile(r"^[A-Za-z0-9!%*_+`'~-]+\.[A-Za-z0-9!%*_+`'~-]+$")  # RFC 4412 §3.1 r-value
_ESNET = re.compile(r"^esnet\.[0-4]$", re.IGNORECASE)  # RFC 7135 §2
_SOS_FAMILY = re.compile(r"sos(?![a-z0-9-])")  # `sos`, then the end or a non-label character
_SERVICE = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*")


class ServiceMatch(Value):
    """What an emergency (or test) service URN is read as.

    `rule` names the correction made (None: the URN stands as written): "service-urn-case"
    (`urn:service:SOS`), "unknown-sub-service" (well formed but not registered),
    "invalid-service-urn" (not an RFC 5031 service name at all: `sos;x`, `sos..`).
    """

    __slots__ = ("rule", "service", "test")
    _FIELDS = ("service", "rule", "test")

    def __init__(self, service: str, rule: str | None = None, test: bool = False) -> None:
        self.service: Final = service
        self.rule: Final = rule
        self.test: Final = test

    def _fields(self) -> tuple[object, ...]:
        return (self.service, self.rule, self.test)


def _sos_family(nss: str, prefix: str) -> ServiceMatch | None:
    """`nss` (lower case) read as an `sos` service under `prefix` (`urn:service:` or
    `urn:service:test.`); None when it is not of the `sos` family."""
    if not _SOS_FAMILY.match(nss):
        return None
    test = prefix.endswith("test.")
    if nss == "sos" or (nss.startswith("sos.") and nss[4:] in SOS_SUB_SERVICES):
        return ServiceMatch(prefix + nss, None, test)
    rule = "unknown-sub-service" if _SERVICE.fullmatch(nss) else "invalid-service-urn"
    return ServiceMatch(prefix + "sos", rule, test)


def service_of_urn(uri: URN) -> ServiceMatch | None:
    """The emergency or test service a URN asks for; None for any other URN.

    `urn:service:sos` and its registered sub-services stand (lower-cased: RFC 5031 §3 URNs
    compare case-insensitively); an unregistered or malformed member of the `sos` family is
    `urn:service:sos`; `urn:service:test.sos[.sub]` is a test call (RFC 6881 §15), read the
    same way; NENA i3's `urn:emergency:service:sos*` (ESInet-internal) stands as written.
    """
    nss = uri.nss.lower()
    if uri.nid == "emergency":
        if nss.startswith("service:") and _SOS_FAMILY.match(nss[8:]):
            return ServiceMatch(str(uri))
        return None
    if uri.nid != "service":
        return None
    if nss.startswith("test."):
        match = _sos_family(nss[5:], "urn:service:test.")
    else:
        match = _sos_family(nss, "urn:service:")
    if match is not None and match.rule is None and match.service != str(uri):
        return ServiceMatch(match.service, "service-urn-case", match.test)
    return match


def is_test_service(service: str) -> bool:
    """`urn:service:test.sos` or one of its sub-services (RFC 6881 §15)."""
    return service.lower().startswith(TEST_SOS)


def tested_service(service: str) -> str:
    """The emergency service a test call tests (`urn:service:test.sos.fire` →
    `urn:service:sos.fire`), asked of LoST so that the test call reaches the PSAP the
    emergency call would; any other service as it is."""
    if is_test_service(service):
        return "urn:service:" + service.lower().removeprefix("urn:service:test.")
    return service


@dataclass(frozen=True, slots=True)
class DialPlan:
    """The digit strings that mean "emergency" for one VSP."""

    dial_strings: tuple[str, ...] = DIAL_STRINGS["US"]

    @classmethod
    def for_country(cls, country: str, extra: Iterable[str] = ()) -> DialPlan:
        """The country's dial strings (unknown country: 112 only) plus `extra`."""
        base = DIAL_STRINGS.get(country.upper(), ("112",))
        extra_t = tuple(extra)
        if extra_t:
            return cls(tuple(dict.fromkeys(extra_t)))
        return cls(base)


def _digits(text: str) -> str:
    return _VISUAL.sub("", text)


def classify(uri: object, plan: DialPlan) -> str | None:
    """The service URN an emergency Request-URI maps to, or None for a normal call.

    Recognised: `urn:service:sos` and its sub-services (RFC 5031 §4.2, as `service_of_urn`
    reads them), the test service `urn:service:test.sos` (RFC 6881 §15), `urn:service:911`
    -style URNs naming a dial string, `tel:911` (RFC 3966), and `sip:911@any-domain` /
    `sip:911;phone-context=...@domain;user=phone` (RFC 3261 §19.1.6).
    """
    if isinstance(uri, URN):
        match = service_of_urn(uri)
        if match is not None:
            return match.service
        if uri.nid == "service" and uri.nss.lower() in plan.dial_strings:
            return SOS
        return None
    if isinstance(uri, TelURI):
        return SOS if _digits(uri.number).lstrip("+") in plan.dial_strings else None
    if isinstance(uri, SipURI):
        if uri.user is None:
            return None
        user = uri.user.split(";", 1)[0]  # drop ;phone-context= of a local number
        return SOS if _digits(user) in plan.dial_strings else None
    if isinstance(uri, AbsoluteURI):
        return None
    return None


def fix_resource_priority(values: Iterable[str]) -> tuple[str, str | None]:
    """The Resource-Priority header value to send, and why it changed (None = unchanged).

    RFC 4412 §3.1 r-values are `namespace.priority`, comma separated. A malformed token
    or an esnet value outside 0–4 is dropped; when no valid esnet value remains, `esnet.1`
    (RFC 7135 §2, the value for calls to an emergency service) is added.
    """
    kept: list[str] = []
    dropped: list[str] = []
    has_esnet = False
    for raw in values:
        for token in raw.split(","):
            token = token.strip()
            if not token:
                continue
            if not _RP_VALUE.match(token):
                dropped.append(token)
                continue
            if token.lower().startswith("esnet."):
                if not _ESNET.match(token):
                    dropped.append(token)
                    continue
                has_esnet = True
            kept.append(token)
    if not has_esnet:
        kept.insert(0, RESOURCE_PRIORITY)
    new = ", ".join(kept)
    if dropped:
        return new, f"replaced invalid Resource-Priority {', '.join(dropped)!r} by {new!r}"
    if not has_esnet:
        return new, f"added Resource-Priority {RESOURCE_PRIORITY}"
    return new, None


class EmergencyRewrite(Value):
    """The rewritten request and one log line per change."""

    __slots__ = ("changes", "request", "service")
    _FIELDS = ("request", "service", "changes")

    def __init__(self, request: Request, service: str, changes: tuple[str, ...]) -> None:
        self.request: Final = request
        self.service: Final = service
        self.changes: Final = changes

    def _fields(self) -> tuple[object, ...]:
        return (self.request, self.service, self.changes)


def rewrite_emergency(
    request: Request,
    service: str,
    *,
    in_place: bool = False,
    rewrite_to: bool = True,
    priority: bool = True,
) -> EmergencyRewrite:
    """Rewrite an INVITE recognised as an emergency call (see module docstring).

    The input is not modified (unless `in_place`: a proxy rewriting its own copy);
    every other header and the body are kept as they are. `rewrite_to=False` leaves To as
    the caller wrote it (the ESRP: only the originating network rewrites it);
    `priority=False` leaves Resource-Priority alone (a test call has no emergency priority).
    """
    out = request if in_place else request.copy()
    changes: list[str] = []
    target = parse_uri(service)
    old_uri = request.uri
    to_raw = request.headers.get("To") if rewrite_to else None
    if str(old_uri) != service:
        changes.append(f"Request-URI {old_uri} -> {service}")
        out.uri = target
    if to_raw is not None:
        to = parse_name_addr(to_raw)
        if str(to.uri) != service:
            out.headers.set("To", str(to.replace(uri=target)))
            changes.append(f"To {to.uri} -> {service}")
    if priority:
        rp, note = fix_resource_priority(request.headers.get_all("Resource-Priority"))
        if note is not None:
            out.headers.set("Resource-Priority", rp)
            changes.append(note)
    return EmergencyRewrite(out, service, tuple(changes))
