"""PIDF-LO documents (RFC 4119, with the RFC 5491 usage rules): parse and build.

A PIDF-LO is a presence document (RFC 3863) whose elements carry a `gp:geopriv` object:
the location (`gp:location-info`: one GML shape and/or one civic address), the usage rules
the Target set (`gp:usage-rules`: may it be passed on, until when may it be kept), and how
it was determined (`gp:method`).

Where the geopriv sits: RFC 4119 put it in `<tuple><status>`; RFC 4479 added `dm:device`
and `dm:person`, and RFC 5491 §3.4 says location of a device SHOULD go in a `dm:device`
element, as an emergency caller's location is the location of the calling device. So we
accept all three on parse and build `dm:device` unless told otherwise (`LocationInfo.kind`).

Each location in a document becomes one `LocationInfo`; when one `location-info` holds two
(a point and a civic address describing the same place, RFC 5491 §3.2), both share the
element's id and usage rules. A document that is not a PIDF, or carries no location we can
read, raises `LocationError` so the ESRP can route by default and log why (NENA i3).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal, cast

from lxml import etree

from ng911.location.civic import CivicAddress, civic_to_element, is_civic_element, parse_civic
from ng911.location.errors import LocationError
from ng911.location.geodetic import SHAPE_TYPES, Shape
from ng911.location.gml import is_shape_element, parse_shape, shape_to_element
from ng911.location.ns import DM, GBP, GP, NSMAP, PIDF, q
from ng911.location.xml import DEFAULT_MAX_SIZE, parse_xml, tag_of, to_bytes

__all__ = [
    "PIDF_CONTENT_TYPE",
    "LocationInfo",
    "PidfLo",
    "build_pidf",
    "parse_pidf",
    "parse_pidf_element",
    "simple_pidf",
]

#: RFC 4119 §6 / RFC 3863 §6.1: the MIME type of a PIDF-LO body part.
PIDF_CONTENT_TYPE = "application/pidf+xml"

Kind = Literal["device", "tuple", "person"]

_PRESENCE = q(PIDF, "presence")
_TUPLE = q(PIDF, "tuple")
_STATUS = q(PIDF, "status")
_TIMESTAMP = q(PIDF, "timestamp")
_DEVICE = q(DM, "device")
_PERSON = q(DM, "person")
_DEVICE_ID = q(DM, "deviceID")
_DM_TIMESTAMP = q(DM, "timestamp")
_GEOPRIV = q(GP, "geopriv")
_LOCATION_INFO = q(GP, "location-info")
_USAGE_RULES = q(GP, "usage-rules")
_METHOD = q(GP, "method")
_RETRANSMISSION = q(GBP, "retransmission-allowed")
_RETENTION = q(GBP, "retention-expiry")

# xs:boolean is "true"/"false"/"1"/"0"; several RFC examples wrote "yes"/"no", so accept them.
_TRUE = frozenset({"true", "1", "yes"})

_LOCATION_TYPES: tuple[type, ...] = (CivicAddress, *SHAPE_TYPES)


@dataclass(frozen=True, slots=True)
class LocationInfo:
    """One location from a PIDF-LO with the geopriv data that travels with it.

    `element_id` is the id of the carrying tuple/device/person (an xs:ID; `build_pidf`
    makes one up if None). `retransmission_allowed` defaults to False, the RFC 4119 §2.2.2
    default when the rule is absent.
    """

    location: Shape | CivicAddress
    method: str | None = None
    retransmission_allowed: bool = False
    retention_expiry: str | None = None
    element_id: str | None = None
    timestamp: str | None = None
    kind: Kind = "device"
    device_id: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.location, _LOCATION_TYPES):
            raise LocationError(f"not a location: {type(self.location).__name__}")
        if self.kind not in ("device", "tuple", "person"):
            raise LocationError(f"unknown PIDF element kind {self.kind!r}")

    @property
    def is_civic(self) -> bool:
        return isinstance(self.location, CivicAddress)


@dataclass(frozen=True, slots=True)
class PidfLo:
    """A PIDF-LO document: the presentity (`entity`, e.g. "pres:alice@example.com") and
    its locations in document order."""

    entity: str
    locations: tuple[LocationInfo, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.locations, tuple):
            object.__setattr__(self, "locations", tuple(self.locations))

    def __iter__(self) -> Iterator[LocationInfo]:
        return iter(self.locations)

    @property
    def geodetic(self) -> tuple[LocationInfo, ...]:
        return tuple(li for li in self.locations if not li.is_civic)

    @property
    def civic(self) -> tuple[LocationInfo, ...]:
        return tuple(li for li in self.locations if li.is_civic)

    @property
    def primary(self) -> LocationInfo | None:
        """The location to route on: the first geodetic one, else the first civic one.

        Geodetic first because a device-measured position is what LoST maps most reliably
        and what the NENA i3 ECRF tests exercise; either is acceptable to RFC 5222.
        """
        geo = self.geodetic
        if geo:
            return geo[0]
        return self.locations[0] if self.locations else None


def simple_pidf(
    entity: str,
    location: Shape | CivicAddress,
    *,
    method: str | None = None,
    element_id: str = "loc1",
    timestamp: str | None = None,
    retransmission_allowed: bool = True,
    kind: Kind = "device",
    device_id: str | None = None,
) -> PidfLo:
    """A one-location PIDF-LO, as a caller attaches to an emergency call.

    Retransmission defaults to allowed here: an emergency caller's location must be passed on
    by the ESRP to the PSAP, and a "false" would forbid that (RFC 4119 §2.2.2).
    """
    return PidfLo(
        entity,
        (
            LocationInfo(
                location,
                method=method,
                retransmission_allowed=retransmission_allowed,
                element_id=element_id,
                timestamp=timestamp,
                kind=kind,
                device_id=device_id,
            ),
        ),
    )


# --- parsing -------------------------------------------------------------------------------


def _text(el: etree._Element | None) -> str | None:
    if el is None or el.text is None:
        return None
    text = el.text.strip()
    return text or None


def parse_pidf(
    data: bytes | bytearray | memoryview | str, *, max_size: int = DEFAULT_MAX_SIZE
) -> PidfLo:
    """Parse a PIDF-LO body; raises `XmlError` (hostile/malformed) or `LocationError`."""
    return parse_pidf_element(parse_xml(data, max_size=max_size))


def parse_pidf_element(root: etree._Element) -> PidfLo:
    """Parse an already (safely) parsed `<presence>` element.

    Each element's children are read in one pass (the first of each kind counts, as a
    search per kind would find it): lxml makes a Python object per child visited, and the
    ESRP reads a PIDF-LO per call."""
    if tag_of(root) != _PRESENCE:
        raise LocationError(f"not a PIDF document: root element is {tag_of(root)!r}")
    entity = (root.get("entity") or "").strip()
    found: list[LocationInfo] = []
    seen: list[str] = []
    for el in root:
        tag = tag_of(el)
        if tag == _DEVICE:
            kind: Kind = "device"
            ts_tag, id_tag, holder_tag = _DM_TIMESTAMP, _DEVICE_ID, None
        elif tag == _TUPLE:
            kind = "tuple"
            ts_tag, id_tag, holder_tag = _TIMESTAMP, None, _STATUS
        elif tag == _PERSON:
            kind = "person"
            ts_tag, id_tag, holder_tag = _DM_TIMESTAMP, None, None
        else:
            continue  # notes, extensions: not ours
        ts_el = id_el = holder = None
        geoprivs: list[etree._Element] = []
        for c in el:
            ctag = tag_of(c)
            if ctag == ts_tag:
                ts_el = c if ts_el is None else ts_el
            elif ctag == id_tag:
                id_el = c if id_el is None else id_el
            elif ctag == holder_tag:
                holder = c if holder is None else holder
            elif ctag == _GEOPRIV and holder_tag is None:
                geoprivs.append(c)  # device and person carry their geopriv themselves
        if holder is not None:
            geoprivs = [g for g in holder if tag_of(g) == _GEOPRIV]
        elif holder_tag is not None:
            continue  # a tuple without status
        ts = _text(ts_el)
        device_id = _text(id_el)
        for geopriv in geoprivs:
            found.extend(_parse_geopriv(geopriv, el.get("id"), kind, ts, device_id, seen))
    if not found:
        detail = f" (unsupported: {', '.join(sorted(set(seen)))})" if seen else ""
        raise LocationError(f"PIDF-LO carries no usable location{detail}")
    return PidfLo(entity, tuple(found))


def _parse_geopriv(
    geopriv: etree._Element,
    element_id: str | None,
    kind: Kind,
    timestamp: str | None,
    device_id: str | None,
    seen: list[str],
) -> list[LocationInfo]:
    info = method_el = rules = None
    for c in geopriv:
        tag = tag_of(c)
        if tag == _LOCATION_INFO:
            info = c if info is None else info
        elif tag == _METHOD:
            method_el = c if method_el is None else method_el
        elif tag == _USAGE_RULES:
            rules = c if rules is None else rules
    if info is None:
        raise LocationError("gp:geopriv without gp:location-info (RFC 4119 §2.2)")
    method = _text(method_el)
    retransmission = False
    retention: str | None = None
    if rules is not None:
        re_el = ret_el = None
        for c in rules:
            tag = tag_of(c)
            if tag == _RETRANSMISSION:
                re_el = c if re_el is None else re_el
            elif tag == _RETENTION:
                ret_el = c if ret_el is None else ret_el
        value = _text(re_el)
        retransmission = value is not None and value.lower() in _TRUE
        retention = _text(ret_el)
    out: list[LocationInfo] = []
    for loc in info:
        location: Shape | CivicAddress
        if is_shape_element(loc):
            location = parse_shape(loc)
        elif is_civic_element(loc):
            location = parse_civic(loc)
        else:
            if tag := tag_of(loc):
                seen.append(tag)
            continue
        out.append(
            LocationInfo(
                location,
                method=method,
                retransmission_allowed=retransmission,
                retention_expiry=retention,
                element_id=element_id,
                timestamp=timestamp,
                kind=kind,
                device_id=device_id,
            )
        )
    return out


# --- building ------------------------------------------------------------------------------


def build_pidf(p: PidfLo) -> bytes:
    """Serialise `p` as a UTF-8 PIDF-LO document (one element per `LocationInfo`)."""
    return to_bytes(build_pidf_element(p))


def build_pidf_element(p: PidfLo) -> etree._Element:
    # lxml-stubs type nsmap keys as str, but None (the default namespace) is what lxml wants.
    root = etree.Element(_PRESENCE, {"entity": p.entity}, nsmap=cast(Any, NSMAP))
    for i, li in enumerate(p.locations, 1):
        element_id = li.element_id or f"loc{i}"
        if li.kind == "tuple":
            holder = etree.SubElement(root, _TUPLE, {"id": element_id})
            geopriv_parent = etree.SubElement(holder, _STATUS)
        else:
            holder = etree.SubElement(root, _DEVICE if li.kind == "device" else _PERSON)
            holder.set("id", element_id)
            geopriv_parent = holder
        geopriv = etree.SubElement(geopriv_parent, _GEOPRIV)
        info = etree.SubElement(geopriv, _LOCATION_INFO)
        if isinstance(li.location, CivicAddress):
            civic_to_element(li.location, info)
        else:
            shape_to_element(li.location, info)
        rules = etree.SubElement(geopriv, _USAGE_RULES)
        etree.SubElement(rules, _RETRANSMISSION).text = (
            "true" if li.retransmission_allowed else "false"
        )
        if li.retention_expiry is not None:
            etree.SubElement(rules, _RETENTION).text = li.retention_expiry
        if li.method is not None:
            etree.SubElement(geopriv, _METHOD).text = li.method
        if li.kind == "device" and li.device_id is not None:
            etree.SubElement(holder, _DEVICE_ID).text = li.device_id
        if li.timestamp is not None:
            ts_tag = _TIMESTAMP if li.kind == "tuple" else _DM_TIMESTAMP
            etree.SubElement(holder, ts_tag).text = li.timestamp
    return root
