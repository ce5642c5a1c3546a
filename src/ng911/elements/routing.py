"""ESRP routing policy: where an emergency call goes, and where next when that fails.

Pure functions (no sockets, no clock), so every rule is tested without a network:

- **location** (`extract_location`): Geolocation header (RFC 6442 §4.1, with or without
  `<>`) → its `cid:` value → the `application/pidf+xml` body part with that Content-ID
  (RFC 5621 / RFC 2392) → PIDF-LO (RFC 4119 / RFC 5491). Anything missing, garbled or by
  reference (not dereferenced yet) gives a `LocationProblem` with the reason: NENA i3 says
  a bad location never stops the call, it goes to the default route.
- **default location** (`add_default_location`): the ESRP then adds its own PIDF-LO, first
  in the Geolocation header, as a new body part; the original headers and body stay.
- **route plan** (`plan_routes`): the LoST answer's SIP/SIPS URI (a mapping may list
  `xmpp:` etc. too), then the configured alternates of that PSAP, then the default route.
  Each candidate has a reason string for the log. The `sips:` policy (RFC 5630: a `sips:`
  URI means TLS on every hop) is applied here because LoST data carries plain `sip:` URIs
  while the ESInet hop may be TLS: see `apply_hop_policy`.
- **failover** (`should_fail_over`): 5xx/6xx, 480/486 (a PSAP with no free or no
  registered call taker cannot take the call; its alternate may), and no answer in time
  (408 / timeout / transport error), move to the next candidate.
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from ng911.errors import Ng911Error
from ng911.location.civic import CivicAddress
from ng911.location.conveyance import cid_of, parse_geolocation
from ng911.location.geodetic import Point, Shape
from ng911.location.pidf import PidfLo, build_pidf, parse_pidf, simple_pidf
from ng911.lost.policy import SipsPolicyError, apply_sips_policy
from ng911.sip.body import BodyPart, build_multipart, content_type_param, find_part, media_type
from ng911.sip.message import Request
from ng911.sip.uri import SipURI, Value, parse_uri

__all__ = [
    "ROUTE_POLICY_TYPE",
    "CallLocation",
    "LocationProblem",
    "LostFound",
    "LostNotFound",
    "LostOutcome",
    "LostUnreachable",
    "NoLocation",
    "PlanBuilder",
    "RouteCandidate",
    "RoutingPolicy",
    "add_default_location",
    "apply_hop_policy",
    "extract_location",
    "normal_next_hop",
    "pick_sip_uri",
    "plan_routes",
    "same_uri",
    "should_fail_over",
]

PIDF = "application/pidf+xml"


# ---------------------------------------------------------------- location extraction


class CallLocation(Value):
    """A usable location from the call: the PIDF-LO and its first location."""

    __slots__ = ("location", "pidf", "source")
    _FIELDS = ("pidf", "location", "source")

    def __init__(self, pidf: PidfLo, location: Shape | CivicAddress, source: str) -> None:
        self.pidf: Final = pidf
        self.location: Final = location
        self.source: Final = source  # the Geolocation URI it came from

    def _fields(self) -> tuple[object, ...]:
        return (self.pidf, self.location, self.source)


@dataclass(frozen=True, slots=True)
class LocationProblem:
    """Why the call's location cannot be used (for the log; routes to the default)."""

    reason: str


def extract_location(request: Request) -> CallLocation | LocationProblem:
    """The caller's location by value, or why there is none usable.

    RFC 6442 §4.1: Geolocation values are URIs; `cid:` ones point at a body part
    (RFC 2392). Several values may be present; the first `cid:` that yields a PIDF-LO with a
    location wins. By-reference values (http/https/sip/pres) are noted: dereferencing
    (HELD, SIP presence) is a later issue.
    """
    values = request.headers.get_all("Geolocation")
    if not values:
        return LocationProblem("no Geolocation header")
    reasons: list[str] = []
    geo: list[str] = []
    for raw in values:
        try:
            geo.extend(g.uri for g in parse_geolocation(raw))
        except Ng911Error as exc:
            reasons.append(f"unparsable Geolocation {raw[:60]!r}: {exc}")
    if not geo and not reasons:
        reasons.append("empty Geolocation header")
    ctype = request.headers.get("Content-Type")
    for uri in geo:
        cid = cid_of(uri)
        if cid is None:
            reasons.append(f"location by reference {uri} not dereferenced")
            continue
        if ctype is None or not request.body:
            reasons.append(f"Geolocation {uri} but the request has no body")
            continue
        try:
            part = find_part(ctype, request.body, content_id=cid)
        except Ng911Error as exc:
            reasons.append(f"body unparsable looking for {uri}: {exc}")
            continue
        if part is None and _bare_cid(request.headers.get("Content-ID")) == cid:
            part = BodyPart(ctype, request.body)  # the whole body is the PIDF-LO (RFC 2392)
        if part is None:
            reasons.append(f"no body part with Content-ID {cid}")
            continue
        if part.content_type.split(";", 1)[0].strip().lower() != PIDF:
            reasons.append(f"body part {cid} is {part.content_type}, not {PIDF}")
            continue
        try:
            pidf = parse_pidf(part.body)
        except Ng911Error as exc:
            reasons.append(f"garbled PIDF-LO in {cid}: {exc}")
            continue
        primary = pidf.primary
        if primary is None:
            reasons.append(f"PIDF-LO in {cid} carries no location")
            continue
        return CallLocation(pidf, primary.location, uri)
    return LocationProblem("; ".join(reasons))


def _bare_cid(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    return value[1:-1] if value.startswith("<") and value.endswith(">") else value


def default_pidf(lat: float, lon: float, fqdn: str) -> PidfLo:
    """The ESRP's own PIDF-LO for a call without a usable one (method "Default")."""
    return simple_pidf(f"pres:esrp@{fqdn}", Point(lat, lon), method="Default")


# RFC 2046 §5.1.1: a boundary is 1-70 of these characters ("bchars"), not ending in a space.
_BCHARS = frozenset("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ'()+_,-./:=? ")


def usable_boundary(boundary: str | None) -> bool:
    """Is `boundary` one RFC 2046 §5.1.1 allows? Anything else (non-ASCII, control
    characters, too long) is hostile or garbled: never encoded to bytes, never searched for."""
    return (
        boundary is not None
        and 0 < len(boundary) <= 70
        and not boundary.endswith(" ")
        and all(c in _BCHARS for c in boundary)
    )


def _insert_part(ctype: str, body: bytes, part: BodyPart) -> tuple[str, bytes] | None:
    """Append `part` to a multipart/mixed body byte-for-byte (the original parts unchanged).

    Returns None when the body cannot be extended in place: not multipart/mixed, a boundary
    RFC 2046 does not allow (a non-ASCII one arrives from hostile or broken senders), or a
    closing delimiter that cannot be found. The caller then wraps the whole body.
    """
    if media_type(ctype) != "multipart/mixed":
        return None
    boundary = content_type_param(ctype, "boundary")
    if boundary is None or not usable_boundary(boundary):
        return None
    delim = b"--" + boundary.encode("ascii")  # checked above: only bchars
    close = delim + b"--"
    at = body.rfind(close)
    if at < 0:
        return None
    # a delimiter is CRLF + "--" + boundary (RFC 2046 §5.1.1): the CRLF before it belongs to
    # it (a bare LF from lenient senders too); our part ends with the same line break
    if body[at - 2 : at] == b"\r\n":
        pre = b"\r\n"
    elif body[at - 1 : at] == b"\n":
        pre = b"\n"
    else:
        pre = b""
    start = at - len(pre)
    headers = [f"Content-Type: {part.content_type}"]
    headers.extend(f"{n}: {v}" for n, v in part.headers)
    chunk = (
        b"\r\n"
        + delim
        + b"\r\n"
        + "\r\n".join(headers).encode("utf-8", "surrogateescape")
        + b"\r\n\r\n"
        + part.body
    )
    return ctype, body[:start] + chunk + (pre or b"\r\n") + body[at:]


def _walks(ctype: str, body: bytes) -> bool:
    """Does a reader get through every part of this multipart, nested ones included?

    A part appended to a body that a reader cannot walk (a garbled part header, nesting
    deeper than the SIP layer allows) would never be found: such a body is wrapped instead.
    """
    try:
        find_part(ctype, body, content_id="\x00")  # matches nothing: walks the whole tree
    except Ng911Error:
        return False
    return True


def _finds(body: tuple[str, bytes], cid: str) -> bool:
    try:
        return find_part(body[0], body[1], content_id=cid) is not None
    except Ng911Error:
        return False


def add_default_location(request: Request, lat: float, lon: float, fqdn: str) -> str:
    """Add the ESRP's default location to `request` (in place); return the cid: URI used.

    NENA i3: the default location's Geolocation value comes first; the original headers
    and body stay. A multipart/mixed body gets one more part; any other body becomes the
    first part of a new multipart/mixed (RFC 5621 §3), so nothing is dropped.
    """
    cid = f"default-{secrets.token_hex(6)}@{fqdn}"
    uri = f"cid:{cid}"
    part = BodyPart(PIDF, build_pidf(default_pidf(lat, lon, fqdn)), (("Content-ID", f"<{cid}>"),))
    ctype = request.headers.get("Content-Type")
    new: tuple[str, bytes] | None = None
    if ctype is not None and request.body:
        garbled = media_type(ctype).startswith("multipart/") and not _walks(ctype, request.body)
        new = None if garbled else _insert_part(ctype, request.body, part)
        if new is not None and not _finds(new, cid):
            new = None  # appended, but a reader would not find it: wrap instead
        if new is None:
            # wrap the original body (whatever it is, even garbled) as a part of a new
            # multipart/mixed; a garbled multipart goes after ours, so that a reader finds
            # our location before it trips over the broken part
            original = BodyPart(ctype, request.body)
            garbled = garbled or media_type(ctype).startswith("multipart/")
            new = build_multipart([part, original] if garbled else [original, part])
    else:
        new = build_multipart([part])
    request.headers.set("Content-Type", new[0])
    request.body = new[1]
    old = request.headers.get_all("Geolocation")
    value = ", ".join([f"<{uri}>", *old])
    request.headers.set("Geolocation", value)
    return uri


# ---------------------------------------------------------------- LoST outcome → routes


class LostFound(Value):
    __slots__ = ("source", "uris")
    _FIELDS = ("uris", "source")

    def __init__(self, uris: tuple[str, ...], source: str = "") -> None:
        self.uris: Final = uris
        self.source: Final = source

    def _fields(self) -> tuple[object, ...]:
        return (self.uris, self.source)


@dataclass(frozen=True, slots=True)
class LostNotFound:
    reason: str


@dataclass(frozen=True, slots=True)
class LostUnreachable:
    reason: str


@dataclass(frozen=True, slots=True)
class NoLocation:
    """No LoST query was made: the call has no usable location."""

    reason: str


LostOutcome = LostFound | LostNotFound | LostUnreachable | NoLocation


# the i3 Policy Store's policyType of the rules evaluated after LoST, per queue
# (NENA-STA-010.3 Policy Type registry; policyQueueName = the NormalNextHop's URI)
ROUTE_POLICY_TYPE = "NormalNextHopRoutePolicy"


@dataclass(frozen=True, slots=True)
class RoutingPolicy:
    """The ESRP's routing configuration (built from `EsrpConfig`)."""

    default_route: str
    alternates: tuple[tuple[str, tuple[str, ...]], ...] = ()
    sips_policy: str = "hop"  # "hop" | "upgrade" | "require" | "keep"
    hop_transport: str = ""  # "" (as the URI says) | "udp" | "tcp" | "tls"
    failover_on: frozenset[int] = frozenset({408, 480, 486})
    failover_classes: frozenset[int] = frozenset({5, 6})
    owner: str = ""  # i3 policyOwner of the built-in rules: the ESRP's domain

    def alternates_of(self, uri: str) -> tuple[str, ...]:
        for psap, alts in self.alternates:
            if same_uri(psap, uri):
                return alts
        return ()


class RouteCandidate(Value):
    """One next hop of a plan: why it is there, and the PRF rule (`elements/prf.py`) that put
    it there with that rule's i3 policyOwner / policyType and cause (for the log)."""

    __slots__ = ("cause", "owner", "policy_type", "reason", "rule", "uri")
    _FIELDS = ("uri", "reason", "rule", "owner", "policy_type", "cause")

    def __init__(
        self,
        uri: str,
        reason: str,
        rule: str = "",
        owner: str = "",
        policy_type: str = ROUTE_POLICY_TYPE,
        cause: str = "",
    ) -> None:
        self.uri: Final = uri
        self.reason: Final = reason
        self.rule: Final = rule
        self.owner: Final = owner
        self.policy_type: Final = policy_type
        self.cause: Final = cause

    def _fields(self) -> tuple[object, ...]:
        return (self.uri, self.reason, self.rule, self.owner, self.policy_type, self.cause)

    def replace(
        self,
        *,
        reason: str | None = None,
        rule: str | None = None,
        owner: str | None = None,
        policy_type: str | None = None,
    ) -> RouteCandidate:
        """A copy with the given fields changed (None: kept; every field is a string)."""
        return RouteCandidate(
            self.uri,
            self.reason if reason is None else reason,
            self.rule if rule is None else rule,
            self.owner if owner is None else owner,
            self.policy_type if policy_type is None else policy_type,
            self.cause,
        )


def same_uri(a: str, b: str) -> bool:
    """One PSAP named two ways? Compared ignoring scheme and transport, which the hop policy
    may have changed (LoST and the config say `sip:`, the plan may say `sips:`)."""
    ka, kb = _psap_key(a), _psap_key(b)
    if ka is None or kb is None:
        return a == b
    return ka == kb


@functools.lru_cache(maxsize=1024)
def _psap_key(uri: str) -> tuple[str | None, str, int | None] | None:
    """(user, host, port) of a SIP URI, None for anything else. Cached: a plan compares the
    same few PSAP URIs (LoST's answers, the configured alternates) on every call."""
    try:
        u = parse_uri(uri)
    except Ng911Error:
        return None
    return (u.user, u.host, u.port) if isinstance(u, SipURI) else None


def pick_sip_uri(uris: Iterable[str], *, prefer_secure: bool = False) -> str | None:
    """The SIP URI of a LoST mapping (RFC 5222 §8.6 allows several `<uri>`s: sip, xmpp...)."""
    sip: list[str] = []
    for u in uris:
        scheme = u.split(":", 1)[0].strip().lower()
        if scheme in ("sip", "sips"):
            sip.append(u.strip())
    if not sip:
        return None
    if prefer_secure:
        for u in sip:
            if u.lower().startswith("sips:"):
                return u
    return sip[0]


def normal_next_hop(outcome: LostOutcome, policy: RoutingPolicy) -> str | None:
    """The SIP URI LoST mapped the call to (i3's NormalNextHop), None when LoST gave none."""
    if not isinstance(outcome, LostFound):
        return None
    return pick_sip_uri(outcome.uris, prefer_secure=policy.hop_transport == "tls")


@functools.lru_cache(maxsize=1024)
def apply_hop_policy(uri: str, policy: RoutingPolicy) -> tuple[str, str | None]:
    """Apply the sips policy and hop transport to a next-hop URI; say what changed.

    LoST data holds `sip:` URIs, but an ESInet hop may be TLS. RFC 5630 §3.1.3: `sips:`
    asks for TLS on every hop up to the target's domain; `transport=tls` is deprecated
    (RFC 5630 §3.1.4). Policies (`ng911.lost.policy` does the rewriting):
    "hop" (default) upgrades `sip:` to `sips:` when this ESRP's hop to PSAPs is TLS;
    "upgrade" always; "require" refuses a non-`sips:` URI (`SipsPolicyError`: the caller
    skips to the next candidate); "keep" leaves it. On a udp/tcp hop a `sip:` URI gets the
    hop's `transport=` parameter.
    Raises `SipsPolicyError` under "require". Cached (a pure function of two immutable
    values): every call's plan applies it to the same few PSAP URIs.
    """
    mode = policy.sips_policy
    if mode == "hop":
        mode = "upgrade" if policy.hop_transport == "tls" else "keep"
    new = apply_sips_policy(uri, mode)
    notes: list[str] = []
    if new != uri:
        notes.append(f"sips policy {policy.sips_policy}: {uri} -> {new}")
    try:
        parsed = parse_uri(new)
    except Ng911Error:
        return new, "; ".join(notes) or None
    if (
        isinstance(parsed, SipURI)
        and policy.hop_transport in ("udp", "tcp")
        and parsed.scheme == "sip"
        and parsed.transport != policy.hop_transport
    ):
        new = str(parsed.with_params(transport=policy.hop_transport))
        notes.append(f"transport={policy.hop_transport} for this hop")
    return new, "; ".join(notes) or None


class PlanBuilder:
    """Collects a plan's candidates: hop policy applied, duplicates dropped (a PSAP is tried
    once per call), URIs the sips policy refuses noted on the first candidate."""

    def __init__(self, policy: RoutingPolicy) -> None:
        self.policy = policy
        self.out: list[RouteCandidate] = []
        self.skipped: list[str] = []

    def add(self, uri: str, reason: str, rule: str, *, owner: str = "", cause: str = "") -> None:
        try:
            new, note = apply_hop_policy(uri, self.policy)
        except SipsPolicyError as exc:
            self.skipped.append(f"{uri} skipped: {exc}")
            return
        if any(same_uri(c.uri, new) for c in self.out):
            return
        why = f"{reason}; {note}" if note else reason
        self.out.append(
            RouteCandidate(new, why, rule, owner or self.policy.owner, ROUTE_POLICY_TYPE, cause)
        )

    def add_alternates(self, uri: str, reason: str) -> None:
        """`uri`'s configured alternates, in order (built-in rule "alternate")."""
        for alt in self.policy.alternates_of(uri):
            self.add(alt, f"{reason} {uri}", "alternate")

    def add_default(self, reason: str) -> None:
        """The default route and its alternates: the end of every plan (rule "default-route"),
        so that no call is left without a PSAP to try."""
        default = self.policy.default_route
        self.add(default, reason, "default-route")
        self.add_alternates(default, "alternate of default route")

    def plan(self) -> list[RouteCandidate]:
        out = list(self.out)
        if self.skipped and out:
            first = out[0]
            out[0] = first.replace(reason=f"{first.reason}; {'; '.join(self.skipped)}")
        return out


def plan_routes(outcome: LostOutcome, policy: RoutingPolicy) -> list[RouteCandidate]:
    """The ordered next hops to try for one call, each with its reason: the built-in rule set
    of the PRF (what an ESRP does with no rules configured). Rules "normal" (the LoST URI),
    "alternate" (its alternates), "default-route" (the default route, then its alternates)."""
    b = PlanBuilder(policy)
    if isinstance(outcome, LostFound):
        uri = normal_next_hop(outcome, policy)
        if uri is None:
            b.add_default(f"LoST mapping has no SIP URI ({', '.join(outcome.uris)})")
        else:
            src = f" from {outcome.source}" if outcome.source else ""
            b.add(uri, f"LoST mapping{src}", "normal")
            b.add_alternates(uri, "alternate of")
            b.add_default("default route after alternates")
    elif isinstance(outcome, LostNotFound):
        b.add_default(f"LoST notFound: {outcome.reason}")
    elif isinstance(outcome, LostUnreachable):
        b.add_default(f"LoST unreachable: {outcome.reason}")
    else:
        b.add_default(f"no usable location: {outcome.reason}")
    return b.plan()


def should_fail_over(status: int | None, policy: RoutingPolicy) -> bool:
    """True when a branch's outcome means "try the next candidate".

    `status` None means no answer in the failover time, a transaction timeout (Timer B,
    RFC 3261 §17.1.1.2) or a transport error: all treated as "PSAP not reachable".
    """
    if status is None:
        return True
    if status < 300:
        return False
    return status in policy.failover_on or status // 100 in policy.failover_classes
