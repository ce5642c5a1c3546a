"""RFC 5222 LoST messages: parse and build every request and response (sans-I/O).

Bytes in, immutable values out, and back: the server parses requests and builds responses, the
client builds requests and parses responses, and each direction round-trips (parse(build(x))
== x). No sockets, no clock: times are strings as they travel (xsd:dateTime), and whoever owns
the clock fills them in.

Every document is parsed by `ng911.location.xml.parse_xml`, which refuses DTDs, entities,
network access, huge and deeply nested documents; whatever it refuses, and whatever this module
cannot make sense of, raises `LostProtocolError` whose `kind` is the RFC 5222 §13.1 error the
server answers with (`badRequest` for malformed input, `locationInvalid` for coordinates out
of range, `locationProfileUnrecognized` when no location has a profile we know).

The i3 extension `<emergencyCallIncidentId callId=… incidentTrackingId=…>` (namespace
`urn:emergency:xml:ns:lostExt:Ids`, NENA i3) is read from and written to requests.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeAlias

from lxml import etree

from ng911.location.civic import CivicAddress, civic_to_element, parse_civic
from ng911.location.errors import LocationError, XmlError
from ng911.location.geodetic import Circle, Point, Polygon, Shape
from ng911.location.gml import parse_shape, pos_text, shape_to_element
from ng911.location.xml import parse_xml, tag_of
from ng911.lost.errors import ERROR_KINDS, LostProtocolError

NS_LOST = "urn:ietf:params:xml:ns:lost1"
NS_GML = "http://www.opengis.net/gml"
NS_GS = "http://www.opengis.net/pidflo/1.0"
NS_CIVIC = "urn:ietf:params:xml:ns:pidf:geopriv10:civicAddr"
NS_IDS = "urn:emergency:xml:ns:lostExt:Ids"
NS_XML = "http://www.w3.org/XML/1998/namespace"
CONTENT_TYPE = "application/lost+xml"

PROFILE_GEODETIC = "geodetic-2d"  # RFC 5222 §12.1
PROFILE_CIVIC = "civic"  # RFC 5222 §12.2
KNOWN_PROFILES = (PROFILE_GEODETIC, PROFILE_CIVIC)

MAX_DOCUMENT = 256 * 1024  # a findService is < 2 KB; a boundary answer can be ~100 KB
MAX_LOCATIONS = 16
MAX_PATH = 32

_XML_LANG = f"{{{NS_XML}}}lang"
_LOST_PREFIX = f"{{{NS_LOST}}}"


def _t(local: str) -> str:
    return f"{{{NS_LOST}}}{local}"


# lxml-stubs type nsmap keys as str, but None (the default namespace) is what lxml wants.
_NSMAP: Any = {None: NS_LOST}
_NSMAP_GML_ITEMS = (("gml", NS_GML), ("gs", NS_GS), ("ca", NS_CIVIC))
_NSMAP_GML: Any = {None: NS_LOST, **dict(_NSMAP_GML_ITEMS)}

# xsd:dateTime (the time zone is optional in XSD; RFC 5222 examples always carry one).
_DATETIME = re.compile(r"-?\d{4,}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})?")
_WARNING_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]{0,63}")
_URN_SERVICE = re.compile(r"urn:[A-Za-z0-9][A-Za-z0-9-]{0,31}:[!-~]+")

Location: TypeAlias = "Shape | CivicAddress"


# --------------------------------------------------------------------------- values


@dataclass(frozen=True, slots=True)
class LostLocation:
    """One `<location id=… profile=…>` of a request (RFC 5222 §6, §12).

    `value` is None when the profile is one this server does not know: the server skips such
    locations and answers `locationProfileUnrecognized` only if no usable one is left.
    """

    id: str
    profile: str
    value: Shape | CivicAddress | None


@dataclass(frozen=True, slots=True)
class FindServiceRequest:
    """`<findService>` (RFC 5222 §8)."""

    locations: tuple[LostLocation, ...]
    service: str = "urn:service:sos"
    recursive: bool = False
    service_boundary: str | None = None  # "value" | "reference" | None (= reference, §8.2)
    validate_location: bool = False
    path: tuple[str, ...] = ()
    call_id: str | None = None  # i3 emergencyCallIncidentId/@callId
    incident_id: str | None = None  # i3 emergencyCallIncidentId/@incidentTrackingId
    as_of: str | None = None  # the time the answer is asked for (`_as_of`)
    as_of_tag: str | None = None  # how it came: None = attribute, else the element's tag


@dataclass(frozen=True, slots=True)
class ListServicesRequest:
    """`<listServices>` (RFC 5222 §10)."""

    service: str | None = None
    path: tuple[str, ...] = ()
    as_of: str | None = None
    as_of_tag: str | None = None


@dataclass(frozen=True, slots=True)
class ListServicesByLocationRequest:
    """`<listServicesByLocation>` (RFC 5222 §11); `recursive` defaults to true there."""

    locations: tuple[LostLocation, ...]
    service: str | None = None
    recursive: bool = True
    path: tuple[str, ...] = ()
    as_of: str | None = None
    as_of_tag: str | None = None


@dataclass(frozen=True, slots=True)
class GetServiceBoundaryRequest:
    """`<getServiceBoundary key=…>` (RFC 5222 §9)."""

    key: str
    path: tuple[str, ...] = ()


LostRequest: TypeAlias = (
    "FindServiceRequest | ListServicesRequest | ListServicesByLocationRequest"
    " | GetServiceBoundaryRequest"
)


@dataclass(frozen=True, slots=True)
class ServiceBoundary:
    """`<serviceBoundary profile=…>` by value (RFC 5222 §5.5): geodetic shapes or civic."""

    profile: str
    items: tuple[Shape | CivicAddress, ...]


@dataclass(frozen=True, slots=True)
class ServiceBoundaryReference:
    """`<serviceBoundaryReference source=… key=…>` (RFC 5222 §5.6)."""

    source: str
    key: str


@dataclass(frozen=True, slots=True)
class Mapping:
    """`<mapping>` (RFC 5222 §5): who serves this location for this service, until when.

    `expires` is the wire value: an xsd:dateTime, "NO-CACHE" or "NO-EXPIRATION" (§5.2).
    """

    uris: tuple[str, ...]
    service: str
    expires: str
    last_updated: str
    source: str
    source_id: str
    display_name: str | None = None
    display_lang: str | None = "en"
    service_number: str | None = None
    boundary: ServiceBoundary | None = None
    boundary_ref: ServiceBoundaryReference | None = None

    @property
    def sip_uri(self) -> str | None:
        """The first sip:/sips: URI (an i3 ESRP takes the SIP one of several)."""
        for u in self.uris:
            if u[:4].lower() == "sip:" or u[:5].lower() == "sips:":
                return u
        return None


@dataclass(frozen=True, slots=True)
class LostWarning:
    """One element of `<warnings>` (RFC 5222 §13.2)."""

    kind: str
    message: str | None = None


@dataclass(frozen=True, slots=True)
class FindServiceResponse:
    """`<findServiceResponse>` (RFC 5222 §8.3): mappings, warnings, path, locationUsed."""

    mappings: tuple[Mapping, ...]
    path: tuple[str, ...]
    location_used: str | None = None
    warnings: tuple[LostWarning, ...] = ()
    warnings_source: str | None = None
    as_of: str | None = None  # the request's asOf, echoed in the form it came (`_as_of`)
    as_of_tag: str | None = None


@dataclass(frozen=True, slots=True)
class ListServicesResponse:
    """`<listServicesResponse>` (RFC 5222 §10)."""

    services: tuple[str, ...]
    path: tuple[str, ...]
    warnings: tuple[LostWarning, ...] = ()
    warnings_source: str | None = None
    as_of: str | None = None
    as_of_tag: str | None = None


@dataclass(frozen=True, slots=True)
class ListServicesByLocationResponse:
    """`<listServicesByLocationResponse>` (RFC 5222 §11)."""

    services: tuple[str, ...]
    path: tuple[str, ...]
    location_used: str | None = None
    warnings: tuple[LostWarning, ...] = ()
    warnings_source: str | None = None
    as_of: str | None = None
    as_of_tag: str | None = None


@dataclass(frozen=True, slots=True)
class GetServiceBoundaryResponse:
    """`<getServiceBoundaryResponse>` (RFC 5222 §9)."""

    boundary: ServiceBoundary
    path: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class LostErrorResponse:
    """`<errors source=…><KIND message=…/></errors>` (RFC 5222 §13.1)."""

    kind: str
    source: str
    message: str | None = None


@dataclass(frozen=True, slots=True)
class Redirect:
    """`<redirect target=… source=…>` (RFC 5222 §13.3): ask `target` instead."""

    target: str
    source: str
    message: str | None = None


LostResponse: TypeAlias = (
    "FindServiceResponse | ListServicesResponse | ListServicesByLocationResponse"
    " | GetServiceBoundaryResponse | LostErrorResponse | Redirect"
)


# --------------------------------------------------------------------------- helpers


def is_datetime(text: str) -> bool:
    """True when `text` is a valid xsd:dateTime (form and ranges)."""
    if not _DATETIME.fullmatch(text):
        return False
    try:
        datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def parse_datetime(text: str) -> datetime | None:
    """The instant an xsd:dateTime names (naive = UTC), or None if it is not one."""
    if not is_datetime(text):
        return None
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)


def _bad(message: str) -> LostProtocolError:
    return LostProtocolError("badRequest", message)


def bool_value(v: str | None, name: str, default: bool) -> bool:
    """An xsd:boolean attribute value (absent = `default`); shared with `fast_request`."""
    if v is None:
        return default
    v = v.strip()
    if v in ("true", "1"):
        return True
    if v in ("false", "0"):
        return False
    raise _bad(f"attribute {name}={v!r} is not a boolean")


def _text(el: etree._Element) -> str:
    return (el.text or "").strip()


def check_service(text: str) -> str:
    """RFC 5031 service URNs (urn:service:…, and i3's urn:nena:/urn:emergency: forms)."""
    if not _URN_SERVICE.fullmatch(text) or len(text) > 256:
        raise _bad(f"service {text[:60]!r} is not a URN")
    return text


def _as_of(el: etree._Element) -> tuple[str | None, str | None]:
    """`asOf` and how it came: (value, None) for the attribute, (value, tag) for an element.

    `asOf` is not in RFC 5222: it is the request element of the LoST planned-changes
    extension (draft-ietf-ecrit-lost-planned-changes: "validate as of this date"), which
    senders also put as an attribute; any namespace is read. It must be an xsd:dateTime.
    A request and its answer carry it (the server echoes it in the same form) so a client
    can tell which time an answer is for; our data has one version, valid now.
    """
    value, tag = el.get("asOf"), None
    for child in el:
        ctag = tag_of(child)
        if ctag == "asOf" or ctag.endswith("}asOf"):
            value, tag = _text(child), ctag
    if value is None:
        return None, None
    value = value.strip()
    if not is_datetime(value):
        raise _bad(f"asOf {value[:40]!r} is not a valid time")
    if tag is not None and len(tag) > 300:
        raise _bad("asOf element name too long")
    return value, tag


def _put_as_of(root: etree._Element, value: str | None, tag: str | None) -> None:
    """Write `asOf` as it came: the attribute, or the element (appended last)."""
    if value is None:
        return
    if tag is None:
        root.set("asOf", value)
    else:
        etree.SubElement(root, tag).text = value


def _parse_path(el: etree._Element) -> tuple[str, ...]:
    return _path_of(el.find(_t("path")))


def _path_of(path_el: etree._Element | None) -> tuple[str, ...]:
    """The `<via source=…>` of a `<path>` element (RFC 5222 §4.4), bounded."""
    if path_el is None:
        return ()
    vias = []
    for via in path_el.iterchildren(_t("via")):
        src = via.get("source")
        if not src:
            raise _bad("<via> without source")
        vias.append(src.strip())
    if len(vias) > MAX_PATH:
        raise _bad("path too long")
    return tuple(vias)


def check_range(shape: Shape) -> None:
    """RFC 5222 §13.1 locationInvalid: coordinates out of range, a radius that is no length."""
    center: Point | None = getattr(shape, "center", None)
    points: tuple[Point, ...]
    if isinstance(shape, Point):
        points = (shape,)
    elif isinstance(shape, Polygon):
        points = tuple(shape.exterior)
    elif center is not None:
        points = (center,)
    else:
        base = getattr(shape, "base", None)
        points = tuple(base.exterior) if isinstance(base, Polygon) else ()
    for p in points:
        if not (math.isfinite(p.lat) and math.isfinite(p.lon)):
            raise LostProtocolError("locationInvalid", "coordinate is not a number")
        if not (-90.0 <= p.lat <= 90.0 and -180.0 <= p.lon <= 180.0):
            raise LostProtocolError("locationInvalid", f"coordinate {p.lat} {p.lon} out of range")
    if isinstance(shape, Circle) and not (
        math.isfinite(shape.radius) and 0.0 <= shape.radius <= 1_000_000.0
    ):
        raise LostProtocolError("locationInvalid", f"radius {shape.radius} out of range")


def _parse_locations(el: etree._Element) -> tuple[LostLocation, ...]:
    out: list[LostLocation] = []
    for loc in el.iterchildren(_t("location")):
        if len(out) >= MAX_LOCATIONS:
            raise _bad("too many locations")
        loc_id = loc.get("id")
        if loc_id is None or not loc_id.strip():
            raise _bad("<location> without id")
        profile = (loc.get("profile") or "").strip()
        children = [c for c in loc if tag_of(c)]
        value: Shape | CivicAddress | None = None
        if profile == PROFILE_GEODETIC:
            if len(children) != 1:
                raise _bad("a geodetic-2d location holds exactly one shape")
            try:
                value = parse_shape(children[0])
            except LocationError as exc:
                raise LostProtocolError(exc.lost_error, str(exc)) from exc
            check_range(value)
        elif profile == PROFILE_CIVIC:
            civ = [c for c in children if etree.QName(c).localname == "civicAddress"]
            if len(civ) != 1:
                raise _bad("a civic location holds exactly one civicAddress")
            try:
                value = parse_civic(civ[0])
            except LocationError as exc:
                raise LostProtocolError(exc.lost_error, str(exc)) from exc
        out.append(LostLocation(loc_id.strip(), profile, value))
    if not out:
        raise _bad("no <location>")
    return tuple(out)


def _parse_ids(el: etree._Element) -> tuple[str | None, str | None]:
    ext = el.find(f"{{{NS_IDS}}}emergencyCallIncidentId")
    if ext is None:
        return None, None
    call_id = ext.get("callId")
    incident_id = ext.get("incidentTrackingId")
    for v in (call_id, incident_id):
        if v is not None and len(v) > 256:
            raise _bad("emergencyCallIncidentId attribute too long")
    return call_id, incident_id


def _root(data: bytes) -> etree._Element:
    if not data or not data.strip():
        raise _bad("empty body")
    try:
        root = parse_xml(data, max_size=MAX_DOCUMENT)
    except XmlError as exc:
        raise _bad(f"XML refused: {exc}") from exc
    if not tag_of(root):
        raise _bad("no root element")
    return root


_LOST_NS_BYTES = NS_LOST.encode()
_SNIFF = 4096


def looks_like_lost(data: bytes) -> bool:
    """Whether a body sent with a non-XML Content-Type is meant as LoST XML anyway.

    `curl -d @file` labels a file `application/x-www-form-urlencoded`; tools and test suites
    send `text/plain` or nothing usable. The body says what it is: markup first (after a BOM
    and blanks) and the LoST namespace name within its first 4 KB. Only a guess at which
    answer fits (a LoST one, or HTTP 415): the hardened parser still decides everything.
    """
    head = data[:_SNIFF].lstrip(b"\xef\xbb\xbf \t\r\n")
    return head[:1] == b"<" and _LOST_NS_BYTES in head


# --------------------------------------------------------------------------- requests


def parse_request(data: bytes) -> LostRequest:
    """Parse a LoST request; raises `LostProtocolError` (kind = the error to answer)."""
    root = _root(data)
    tag = tag_of(root)
    if not tag.startswith(_LOST_PREFIX):
        raise _bad(f"root element {tag[:80]!r} is not in the LoST namespace")
    name = tag[len(_LOST_PREFIX) :]
    as_of, as_of_tag = _as_of(root)
    svc_el = root.find(_t("service"))
    service = check_service(_text(svc_el)) if svc_el is not None else None
    if name == "findService":
        sb = root.get("serviceBoundary")
        if sb is not None and sb.strip() not in ("value", "reference"):
            raise _bad(f"serviceBoundary={sb!r}")
        if service is None:
            raise _bad("findService without <service>")
        call_id, incident_id = _parse_ids(root)
        return FindServiceRequest(
            locations=_parse_locations(root),
            service=service,
            recursive=bool_value(root.get("recursive"), "recursive", False),
            service_boundary=sb.strip() if sb is not None else None,
            validate_location=bool_value(root.get("validateLocation"), "validateLocation", False),
            path=_parse_path(root),
            call_id=call_id,
            incident_id=incident_id,
            as_of=as_of,
            as_of_tag=as_of_tag,
        )
    if name == "listServices":
        return ListServicesRequest(
            service=service, path=_parse_path(root), as_of=as_of, as_of_tag=as_of_tag
        )
    if name == "listServicesByLocation":
        return ListServicesByLocationRequest(
            locations=_parse_locations(root),
            service=service,
            recursive=bool_value(root.get("recursive"), "recursive", True),
            path=_parse_path(root),
            as_of=as_of,
            as_of_tag=as_of_tag,
        )
    if name == "getServiceBoundary":
        key = root.get("key")
        if key is None or not key.strip() or len(key) > 256:
            raise _bad("getServiceBoundary without a usable key")
        return GetServiceBoundaryRequest(key=key.strip(), path=_parse_path(root))
    raise _bad(f"unknown request <{name}>")


def _location_element(parent: etree._Element, loc: LostLocation) -> None:
    el = etree.SubElement(parent, _t("location"), id=loc.id, profile=loc.profile)
    if isinstance(loc.value, CivicAddress):
        civic_to_element(loc.value, el)
    elif loc.value is not None:
        shape_to_element(loc.value, el)


def _path_element(parent: etree._Element, path: tuple[str, ...]) -> None:
    p = etree.SubElement(parent, _t("path"))
    for via in path:
        etree.SubElement(p, _t("via"), source=via)


def _tostring(root: etree._Element) -> bytes:
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


# Values a request template may carry as they are: printable ASCII but the characters XML
# escapes (lxml would escape them, or refuse control characters: those take its path).
_PLAIN = re.compile(r"[ !#-%\'-;=?-~]*")
_GML_DECLS = " ".join(
    f'xmlns:{p}="{ns}"' if p else f'xmlns="{ns}"' for p, ns in ((None, NS_LOST), *_NSMAP_GML_ITEMS)
)


def _attr_text(*pairs: tuple[str, str | None]) -> str:
    """` name="value"` for each pair with a value, in order (values already checked plain)."""
    return "".join(f' {name}="{value}"' for name, value in pairs if value is not None)


def _fast_find_service_request(req: FindServiceRequest) -> bytes | None:
    """The common findService (geodetic points, `asOf` if any as the attribute) as a string
    template: what the ESRP sends per call, at a fifth of building an lxml tree. The same
    bytes as the lxml path (a test compares them); None for anything else (civic, other
    shapes, a value needing escapes), which goes the lxml way."""
    if req.as_of_tag is not None or req.validate_location:
        return None
    points: list[tuple[LostLocation, Point]] = []
    texts = [req.service, *req.path]
    for loc in req.locations:
        p = loc.value
        if type(p) is not Point:
            return None
        points.append((loc, p))
        texts += (loc.id, loc.profile, p.crs)
    optional = (req.service_boundary, req.as_of, req.call_id, req.incident_id)
    texts.extend(v for v in optional if v is not None)
    # one check for all: the class is per character, so the whole is plain iff each part is
    if not _PLAIN.fullmatch("".join(texts)):
        return None
    recursive = "true" if req.recursive else None
    attrs = _attr_text(
        ("recursive", recursive), ("serviceBoundary", req.service_boundary), ("asOf", req.as_of)
    )
    out = ["<?xml version='1.0' encoding='UTF-8'?>\n<findService ", _GML_DECLS, attrs, ">"]
    for loc, p in points:
        out.append(
            f'<location id="{loc.id}" profile="{loc.profile}"><gml:Point srsName="{p.crs}">'
            f"<gml:pos>{pos_text(p)}</gml:pos></gml:Point></location>"
        )
    out.append(f"<service>{req.service}</service>")
    if req.path:
        out.append("<path>")
        out.extend(f'<via source="{v}"/>' for v in req.path)
        out.append("</path>")
    if req.call_id is not None or req.incident_id is not None:
        ids = _attr_text(("callId", req.call_id), ("incidentTrackingId", req.incident_id))
        out.append(f'<ids:emergencyCallIncidentId xmlns:ids="{NS_IDS}"{ids}/>')
    out.append("</findService>")
    return "".join(out).encode("ascii")


def build_request(req: LostRequest, *, template: bool = True) -> bytes:
    """Serialise a request (what a client sends, and what a recursing server forwards);
    `template=False` builds every request as an lxml tree (the tests' reference)."""
    if isinstance(req, FindServiceRequest):
        fast = _fast_find_service_request(req) if template else None
        if fast is not None:
            return fast
        root = etree.Element(_t("findService"), nsmap=_NSMAP_GML)
        if req.recursive:
            root.set("recursive", "true")
        if req.service_boundary is not None:
            root.set("serviceBoundary", req.service_boundary)
        if req.validate_location:
            root.set("validateLocation", "true")
        if req.as_of_tag is None:
            _put_as_of(root, req.as_of, None)
        for loc in req.locations:
            _location_element(root, loc)
        etree.SubElement(root, _t("service")).text = req.service
        if req.path:
            _path_element(root, req.path)
        if req.call_id is not None or req.incident_id is not None:
            ext = etree.SubElement(
                root, f"{{{NS_IDS}}}emergencyCallIncidentId", nsmap={"ids": NS_IDS}
            )
            if req.call_id is not None:
                ext.set("callId", req.call_id)
            if req.incident_id is not None:
                ext.set("incidentTrackingId", req.incident_id)
        if req.as_of_tag is not None:
            _put_as_of(root, req.as_of, req.as_of_tag)
    elif isinstance(req, ListServicesRequest):
        root = etree.Element(_t("listServices"), nsmap=_NSMAP)
        if req.service is not None:
            etree.SubElement(root, _t("service")).text = req.service
        if req.path:
            _path_element(root, req.path)
        _put_as_of(root, req.as_of, req.as_of_tag)
    elif isinstance(req, ListServicesByLocationRequest):
        root = etree.Element(_t("listServicesByLocation"), nsmap=_NSMAP_GML)
        root.set("recursive", "true" if req.recursive else "false")
        for loc in req.locations:
            _location_element(root, loc)
        if req.service is not None:
            etree.SubElement(root, _t("service")).text = req.service
        if req.path:
            _path_element(root, req.path)
        _put_as_of(root, req.as_of, req.as_of_tag)
    else:
        root = etree.Element(_t("getServiceBoundary"), nsmap=_NSMAP, key=req.key)
        if req.path:
            _path_element(root, req.path)
    return _tostring(root)


def build_find_service(req: FindServiceRequest) -> bytes:
    """Alias of `build_request` for the common case (contracts.md)."""
    return build_request(req)


# --------------------------------------------------------------------------- responses


def _boundary_element(parent: etree._Element, b: ServiceBoundary) -> None:
    el = etree.SubElement(parent, _t("serviceBoundary"), profile=b.profile)
    for item in b.items:
        if isinstance(item, CivicAddress):
            civic_to_element(item, el)
        else:
            shape_to_element(item, el)


def _mapping_element(parent: etree._Element, m: Mapping) -> None:
    el = etree.SubElement(
        parent,
        _t("mapping"),
        expires=m.expires,
        lastUpdated=m.last_updated,
        source=m.source,
        sourceId=m.source_id,
    )
    if m.display_name is not None:
        dn = etree.SubElement(el, _t("displayName"))
        if m.display_lang:
            dn.set(_XML_LANG, m.display_lang)
        dn.text = m.display_name
    etree.SubElement(el, _t("service")).text = m.service
    if m.boundary is not None:
        _boundary_element(el, m.boundary)
    elif m.boundary_ref is not None:
        etree.SubElement(
            el, _t("serviceBoundaryReference"), source=m.boundary_ref.source, key=m.boundary_ref.key
        )
    for u in m.uris:
        etree.SubElement(el, _t("uri")).text = u
    if m.service_number is not None:
        etree.SubElement(el, _t("serviceNumber")).text = m.service_number


def _warnings_element(
    parent: etree._Element,
    warnings: tuple[LostWarning, ...],
    source: str | None,
    path: tuple[str, ...],
) -> None:
    if not warnings:
        return
    src = source or (path[-1] if path else "unknown")
    w = etree.SubElement(parent, _t("warnings"), source=src)
    for item in warnings:
        e = etree.SubElement(w, _t(item.kind))
        if item.message is not None:
            e.set("message", item.message)
            e.set(_XML_LANG, "en")


_SPECIAL = re.compile(r'[&<>"]')


def _x(text: str) -> str:
    """Escape for XML text and double-quoted attributes (most values need nothing)."""
    if _SPECIAL.search(text) is None:
        return text
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    )


@functools.lru_cache(maxsize=4096)
def _mapping_fragment(m: Mapping) -> str:
    """One `<mapping>` as text; cached, since a server answers the same few mappings."""
    out = [
        f'<mapping expires="{_x(m.expires)}" lastUpdated="{_x(m.last_updated)}" '
        f'source="{_x(m.source)}" sourceId="{_x(m.source_id)}">'
    ]
    if m.display_name is not None:
        lang = f' xml:lang="{_x(m.display_lang)}"' if m.display_lang else ""
        out.append(f"<displayName{lang}>{_x(m.display_name)}</displayName>")
    out.append(f"<service>{_x(m.service)}</service>")
    if m.boundary_ref is not None:
        out.append(
            f'<serviceBoundaryReference source="{_x(m.boundary_ref.source)}" '
            f'key="{_x(m.boundary_ref.key)}"/>'
        )
    for u in m.uris:
        out.append(f"<uri>{_x(u)}</uri>")
    if m.service_number is not None:
        out.append(f"<serviceNumber>{_x(m.service_number)}</serviceNumber>")
    out.append("</mapping>")
    return "".join(out)


#: `_mapping_fragment` by the identity of the Mapping (held, so its id is not reused): the
#: lru_cache's key hashes all of a Mapping's fields, which costs more than the lookup.
_FRAGMENTS: dict[int, tuple[Mapping, str]] = {}


def _fast_find_service(resp: FindServiceResponse) -> bytes:
    """The common answer (boundary by reference) as a string template: the server's hot path.

    Produces the same document as the lxml path (tests compare both through `parse_response`)
    at a fifth of the cost; values are escaped for attribute and text context alike.
    """
    as_of = f' asOf="{_x(resp.as_of)}"' if resp.as_of is not None else ""
    out = [
        f"<?xml version='1.0' encoding='UTF-8'?>\n<findServiceResponse xmlns=\"{NS_LOST}\"{as_of}>"
    ]
    for m in resp.mappings:
        known = _FRAGMENTS.get(id(m))
        if known is None or known[0] is not m:  # the engine hands out one Mapping a second
            known = (m, _mapping_fragment(m))
            if len(_FRAGMENTS) >= 64:
                _FRAGMENTS.clear()
            _FRAGMENTS[id(m)] = known
        out.append(known[1])
    if resp.warnings:
        src = resp.warnings_source or (resp.path[-1] if resp.path else "unknown")
        out.append(f'<warnings source="{_x(src)}">')
        for w in resp.warnings:
            if w.message is not None:
                out.append(f'<{w.kind} message="{_x(w.message)}" xml:lang="en"/>')
            else:
                out.append(f"<{w.kind}/>")
        out.append("</warnings>")
    out.append("<path>")
    for via in resp.path:
        out.append(f'<via source="{_x(via)}"/>')
    out.append("</path>")
    if resp.location_used is not None:
        out.append(f'<locationUsed id="{_x(resp.location_used)}"/>')
    out.append("</findServiceResponse>")
    return "".join(out).encode("utf-8")


def build_response(resp: LostResponse) -> bytes:
    """Serialise a response (what the server sends)."""
    if (
        isinstance(resp, FindServiceResponse)
        and all(m.boundary is None for m in resp.mappings)
        and all(_WARNING_NAME.fullmatch(w.kind) for w in resp.warnings)
        and resp.as_of_tag is None
    ):
        return _fast_find_service(resp)
    if isinstance(resp, FindServiceResponse):
        has_gml = any(m.boundary is not None for m in resp.mappings)
        root = etree.Element(_t("findServiceResponse"), nsmap=_NSMAP_GML if has_gml else _NSMAP)
        for m in resp.mappings:
            _mapping_element(root, m)
        _warnings_element(root, resp.warnings, resp.warnings_source, resp.path)
        _path_element(root, resp.path)
        if resp.location_used is not None:
            etree.SubElement(root, _t("locationUsed"), id=resp.location_used)
        _put_as_of(root, resp.as_of, resp.as_of_tag)
    elif isinstance(resp, ListServicesResponse | ListServicesByLocationResponse):
        name = (
            "listServicesResponse"
            if isinstance(resp, ListServicesResponse)
            else "listServicesByLocationResponse"
        )
        root = etree.Element(_t(name), nsmap=_NSMAP)
        etree.SubElement(root, _t("serviceList")).text = " ".join(resp.services)
        _warnings_element(root, resp.warnings, resp.warnings_source, resp.path)
        _path_element(root, resp.path)
        if isinstance(resp, ListServicesByLocationResponse) and resp.location_used is not None:
            etree.SubElement(root, _t("locationUsed"), id=resp.location_used)
        _put_as_of(root, resp.as_of, resp.as_of_tag)
    elif isinstance(resp, GetServiceBoundaryResponse):
        root = etree.Element(_t("getServiceBoundaryResponse"), nsmap=_NSMAP_GML)
        _boundary_element(root, resp.boundary)
        _path_element(root, resp.path)
    elif isinstance(resp, LostErrorResponse):
        root = etree.Element(_t("errors"), nsmap=_NSMAP, source=resp.source)
        kind = resp.kind if resp.kind in ERROR_KINDS else "internalError"
        e = etree.SubElement(root, _t(kind))
        if resp.message is not None:
            e.set("message", resp.message)
            e.set(_XML_LANG, "en")
    else:
        root = etree.Element(_t("redirect"), nsmap=_NSMAP, target=resp.target, source=resp.source)
        if resp.message is not None:
            root.set("message", resp.message)
            root.set(_XML_LANG, "en")
    return _tostring(root)


def _parse_boundary(el: etree._Element) -> ServiceBoundary:
    profile = (el.get("profile") or "").strip()
    items: list[Shape | CivicAddress] = []
    try:
        for child in el:
            if not tag_of(child):
                continue
            if etree.QName(child).localname == "civicAddress":
                items.append(parse_civic(child))
            else:
                items.append(parse_shape(child))
    except LocationError as exc:
        raise _bad(f"serviceBoundary: {exc}") from exc
    return ServiceBoundary(profile, tuple(items))


_DISPLAY_NAME = _t("displayName")
_SERVICE = _t("service")
_SERVICE_BOUNDARY = _t("serviceBoundary")
_SERVICE_BOUNDARY_REF = _t("serviceBoundaryReference")
_SERVICE_NUMBER = _t("serviceNumber")
_URI = _t("uri")
_MAPPING = _t("mapping")
_PATH = _t("path")
_WARNINGS = _t("warnings")
_LOCATION_USED = _t("locationUsed")


def _parse_mapping(el: etree._Element) -> Mapping:
    attrs = {}
    for a in ("expires", "lastUpdated", "source", "sourceId"):
        v = el.get(a)
        if v is None:
            raise _bad(f"<mapping> without {a}")
        attrs[a] = v.strip()
    if attrs["expires"] not in ("NO-CACHE", "NO-EXPIRATION") and not is_datetime(attrs["expires"]):
        raise _bad(f"mapping expires={attrs['expires']!r}")
    if not is_datetime(attrs["lastUpdated"]):
        raise _bad(f"mapping lastUpdated={attrs['lastUpdated']!r}")
    # one pass over the children (the first of each kind counts, every <uri>), not a
    # `find` per kind: the ESRP reads a mapping per call
    dn = svc = sb = sbr = num = None
    uris: list[str] = []
    for child in el:
        tag = tag_of(child)
        if tag == _URI:
            uris.append(_text(child))
        elif tag == _SERVICE:
            svc = child if svc is None else svc
        elif tag == _DISPLAY_NAME:
            dn = child if dn is None else dn
        elif tag == _SERVICE_BOUNDARY_REF:
            sbr = child if sbr is None else sbr
        elif tag == _SERVICE_NUMBER:
            num = child if num is None else num
        elif tag == _SERVICE_BOUNDARY:
            sb = child if sb is None else sb
    if svc is None:
        raise _bad("<mapping> without <service>")
    ref = None
    if sbr is not None:
        ref = ServiceBoundaryReference(sbr.get("source") or "", sbr.get("key") or "")
    return Mapping(
        uris=tuple(uris),
        service=_text(svc),
        expires=attrs["expires"],
        last_updated=attrs["lastUpdated"],
        source=attrs["source"],
        source_id=attrs["sourceId"],
        display_name=_text(dn) if dn is not None else None,
        display_lang=dn.get(_XML_LANG) if dn is not None else "en",
        service_number=_text(num) if num is not None else None,
        boundary=_parse_boundary(sb) if sb is not None else None,
        boundary_ref=ref,
    )


def _parse_warnings(root: etree._Element) -> tuple[tuple[LostWarning, ...], str | None]:
    out: list[LostWarning] = []
    source = None
    for w in root.iterchildren(_t("warnings")):
        source = w.get("source")
        for item in w:
            if tag_of(item):
                out.append(LostWarning(etree.QName(item).localname, item.get("message")))
    return tuple(out), source


def _location_used(root: etree._Element) -> str | None:
    lu = root.find(_t("locationUsed"))
    return lu.get("id") if lu is not None else None


def _lenient_as_of(root: etree._Element) -> tuple[str | None, str | None]:
    try:
        return _as_of(root)
    except LostProtocolError:  # a garbled echo must not cost the client a usable answer
        return None, None


def _find_service_response(root: etree._Element) -> FindServiceResponse:
    """`<findServiceResponse>` in one pass over its children (an ESRP reads one per call);
    then checked in the order of the elements' meaning: mappings, warnings, path."""
    mapping_els: list[etree._Element] = []
    path_el = used_el = None
    has_warnings = has_as_of = False
    for child in root:
        tag = tag_of(child)
        if tag == _MAPPING:
            mapping_els.append(child)
        elif tag == _PATH:
            path_el = child if path_el is None else path_el
        elif tag == _LOCATION_USED:
            used_el = child if used_el is None else used_el
        elif tag == _WARNINGS:
            has_warnings = True
        elif tag.endswith("asOf"):
            has_as_of = True
    as_of, as_of_tag = (
        _lenient_as_of(root) if has_as_of or root.get("asOf") is not None else (None, None)
    )
    mappings = tuple(_parse_mapping(m) for m in mapping_els)
    if not mappings:
        raise _bad("findServiceResponse without <mapping>")
    warnings, wsrc = _parse_warnings(root) if has_warnings else ((), None)
    return FindServiceResponse(
        mappings=mappings,
        path=_path_of(path_el),
        location_used=used_el.get("id") if used_el is not None else None,
        warnings=warnings,
        warnings_source=wsrc,
        as_of=as_of,
        as_of_tag=as_of_tag,
    )


def parse_response(data: bytes) -> LostResponse:
    """Parse a LoST response (client side); raises `LostProtocolError` on nonsense."""
    root = _root(data)
    tag = tag_of(root)
    if tag.startswith(_LOST_PREFIX):
        name = tag[len(_LOST_PREFIX) :]
    else:
        raise _bad(f"root element {etree.QName(root).localname!r} is not in the LoST namespace")
    if name == "findServiceResponse":
        return _find_service_response(root)
    as_of, as_of_tag = _lenient_as_of(root)
    if name in ("listServicesResponse", "listServicesByLocationResponse"):
        sl = root.find(_t("serviceList"))
        services = tuple(_text(sl).split()) if sl is not None else ()
        warnings, wsrc = _parse_warnings(root)
        if name == "listServicesResponse":
            return ListServicesResponse(
                services, _parse_path(root), warnings, wsrc, as_of, as_of_tag
            )
        return ListServicesByLocationResponse(
            services, _parse_path(root), _location_used(root), warnings, wsrc, as_of, as_of_tag
        )
    if name == "getServiceBoundaryResponse":
        sb = root.find(_t("serviceBoundary"))
        if sb is None:
            raise _bad("getServiceBoundaryResponse without serviceBoundary")
        return GetServiceBoundaryResponse(_parse_boundary(sb), _parse_path(root))
    if name == "errors":
        items = [c for c in root if tag_of(c)]
        if not items:
            raise _bad("<errors> without an error")
        first = items[0]
        return LostErrorResponse(
            kind=etree.QName(first).localname,
            source=root.get("source") or "",
            message=first.get("message"),
        )
    if name == "redirect":
        target = root.get("target")
        if not target:
            raise _bad("<redirect> without target")
        return Redirect(target=target, source=root.get("source") or "", message=root.get("message"))
    raise _bad(f"unknown response <{name}>")
