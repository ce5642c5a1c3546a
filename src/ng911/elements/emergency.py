"""Recognising an emergency call on the originating side (the VSP proxy).

Why: a caller dials digits (`911`, `112`), or a phone puts `urn:service:sos` itself
(RFC 5031). Everything downstream (ESRP, LoST, PSAP) only understands the service URN,
so the originating network rewrites the call once, at its edge (RFC 6881 §8, NENA i3):

- Request-URI and To become `urn:service:sos` (a sub-service such as `urn:service:sos.fire`
  is kept as dialled);
- `Resource-Priority: esnet.1` is added (RFC 7135 §2 "esnet" namespace, priorities 0–4);
  an invalid esnet value is replaced, other namespaces' well-formed values are kept.

Pure functions: no I/O, the request is copied, never changed in place.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from dataclasses import dataclass

from ng911.sip.message import Request
from ng911.sip.uri import URN, AbsoluteURI, SipURI, TelURI, parse_name_addr

__all__ = [
    "DIAL_STRINGS",
    "SOS",
    "DialPlan",
    "EmergencyRewrite",
    "classify",
    "fix_resource_priority",
    "rewrite_emergency",
]

SOS = "urn:service:sos"
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

_VISUAL = re.compile(r"[-.() ]")  # RFC 3966 §5.1.1 visual separators
_RP_VALUE = re.compile(r"^[A-Za-z0-9!%*_+`'~-]+\.[A-Za-z0-9!%*_+`'~-]+$")  # RFC 4412 §3.1 r-value
_ESNET = re.compile(r"^esnet\.[0-4]$", re.IGNORECASE)  # RFC 7135 §2


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

    Recognised: `urn:service:sos` and its sub-services (RFC 5031 §4.2, kept as dialled),
    `urn:service:911`-style URNs naming a dial string, `tel:911` (RFC 3966), and
    `sip:911@any-domain` / `sip:911;phone-context=...@domain;user=phone` (RFC 3261 §19.1.6).
    """
    if isinstance(uri, URN):
        if uri.nid.lower() != "service":
            return None
        nss = uri.nss.lower()
        if nss == "sos" or nss.startswith("sos."):
            return f"urn:service:{nss}"
        if nss in plan.dial_strings:
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


@dataclass(frozen=True, slots=True)
class EmergencyRewrite:
    """The rewritten request and one log line per change."""

    request: Request
    service: str
    changes: tuple[str, ...]


def rewrite_emergency(
    request: Request, service: str, *, in_place: bool = False
) -> EmergencyRewrite:
    """Rewrite an INVITE recognised as an emergency call (see module docstring).

    The input is not modified (unless `in_place`: a proxy rewriting its own copy);
    every other header and the body are kept as they are.
    """
    out = request if in_place else request.copy()
    changes: list[str] = []
    target = URN("service", service.split(":", 2)[2])
    old_uri = request.uri
    to_raw = request.headers.get("To")
    if str(old_uri) != service:
        changes.append(f"Request-URI {old_uri} -> {service}")
        out.uri = target
    if to_raw is not None:
        to = parse_name_addr(to_raw)
        if str(to.uri) != service:
            out.headers.set("To", str(dataclasses.replace(to, uri=target)))
            changes.append(f"To {to.uri} -> {service}")
    rp, note = fix_resource_priority(request.headers.get_all("Resource-Priority"))
    if note is not None:
        out.headers.set("Resource-Priority", rp)
        changes.append(note)
    return EmergencyRewrite(out, service, tuple(changes))
