"""GML 3.1.1 encoding of the RFC 5491 shapes: parse and build.

RFC 5491 §5 profiles GML down to Point and Polygon from `gml:` and Circle, Ellipse, ArcBand,
Sphere, Ellipsoid and Prism from the GeoShape schema (`gs:`, http://www.opengis.net/pidflo/1.0).
The profile fixes the CRS to EPSG 4326 / 4979 (srsName on the outermost element, §5.1) and the
units to metres (EPSG 9001) and degrees or radians (EPSG 9102 / 9101).

Receivers in the field see sloppier documents than the RFC shows, and a 9-1-1 call must not be
misrouted because of a comma, so parsing is tolerant where the meaning is unambiguous:

- `"lat, lon"` and extra whitespace inside `gml:pos` / `gml:posList`;
- srsName missing (the CRS follows from the number of coordinates), or given as a versioned
  URN (`urn:ogc:def:crs:EPSG:6.6:4326`), `EPSG:4326` or an OGC http URI;
- a missing `uom` on a length (metres) or angle (degrees);
- a polygon ring that is not closed (closed for the sender).

Everything else (an unknown CRS or unit, a wrong coordinate count, a CRS respecified
differently on a child, interior rings) raises `LocationError` with the reason.

The walk uses direct child iteration, never XPath: this runs once per call at the ESRP and once
per query at the LoST server.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import fields

from lxml import etree

from ng911.location import geodetic as geo
from ng911.location.errors import LocationError
from ng911.location.geodetic import Centred, Point, Polygon, Prism, Shape
from ng911.location.ns import (
    CRS_2D,
    CRS_3D,
    GML,
    GS,
    UOM_DEGREE,
    UOM_METRE,
    UOM_RADIAN,
    q,
)

__all__ = ["SHAPE_TAGS", "is_shape_element", "parse_shape", "shape_to_element"]

_G_POINT = q(GML, "Point")
_G_POLYGON = q(GML, "Polygon")
_G_POS = q(GML, "pos")
_G_POSLIST = q(GML, "posList")
_G_EXTERIOR = q(GML, "exterior")
_G_INTERIOR = q(GML, "interior")
_G_LINEARRING = q(GML, "LinearRing")
_S_PRISM = q(GS, "Prism")
_S_BASE = q(GS, "base")
_S_RADIUS = q(GS, "radius")
_S_SEMIMAJOR = q(GS, "semiMajorAxis")
_S_SEMIMINOR = q(GS, "semiMinorAxis")
_S_VERTICAL = q(GS, "verticalAxis")
_S_ORIENTATION = q(GS, "orientation")
_S_INNER = q(GS, "innerRadius")
_S_OUTER = q(GS, "outerRadius")
_S_START = q(GS, "startAngle")
_S_OPENING = q(GS, "openingAngle")
_S_HEIGHT = q(GS, "height")

_GML_MAP = {"gml": GML}
_GS_MAP = {"gml": GML, "gs": GS}

_CRS_RE = re.compile(
    r"^(?:urn:ogc:def:crs:epsg:[0-9.]*:|epsg:|"
    r"https?://www\.opengis\.net/def/crs/epsg/[0-9.]+/|"
    r"https?://www\.opengis\.net/gml/srs/epsg\.xml#)(4326|4979)$",
    re.IGNORECASE,
)
_CRS_BY_CODE = {"4326": CRS_2D, "4979": CRS_3D}
_DIMS = {CRS_2D: 2, CRS_3D: 3}


# --- parsing -------------------------------------------------------------------------------


def _tagname(el: etree._Element) -> str:
    tag = el.tag
    return tag if isinstance(tag, str) else "(comment or PI)"


def _crs_of(el: etree._Element, inherited: str | None) -> str | None:
    """The element's CRS: its srsName if any (checked against the outer one), else inherited."""
    name = el.get("srsName")
    if name is None:
        return inherited
    m = _CRS_RE.match(name.strip())
    if m is None:
        raise LocationError(
            f"unsupported srsName {name!r} on {_tagname(el)} (RFC 5491 §5: {CRS_2D} or {CRS_3D})"
        )
    crs = _CRS_BY_CODE[m.group(1)]
    if inherited is not None and crs != inherited:
        raise LocationError(f"srsName {name!r} on {_tagname(el)} contradicts outer {inherited}")
    return crs


def _child(el: etree._Element, tag: str, *, required: bool = True) -> etree._Element | None:
    for c in el:
        if c.tag == tag:
            return c
    if required:
        local = tag.rsplit("}", 1)[-1]
        raise LocationError(f"{_tagname(el)} lacks <{local}>")
    return None


def _req(el: etree._Element, tag: str) -> etree._Element:
    found = _child(el, tag)
    assert found is not None
    return found


def _numbers(text: str | None, what: str) -> list[float]:
    if text is None or not text.strip():
        raise LocationError(f"empty {what}")
    try:
        values = [float(tok) for tok in text.replace(",", " ").split()]
    except ValueError:
        raise LocationError(f"{what} is not a list of numbers: {text.strip()[:80]!r}") from None
    for v in values:
        if not math.isfinite(v):
            raise LocationError(f"{what} has a non-finite number: {text.strip()[:80]!r}")
    return values


def _point(values: list[float], crs: str | None, what: str) -> Point:
    n = len(values)
    if crs is None:
        crs = CRS_3D if n == 3 else CRS_2D
    if n != _DIMS[crs]:
        raise LocationError(f"{what} has {n} coordinates; {crs} needs {_DIMS[crs]}")
    if n == 3:
        return Point(values[0], values[1], values[2], CRS_3D)
    return Point(values[0], values[1])


def _pos(el: etree._Element, crs: str | None) -> Point:
    pos = _req(el, _G_POS)
    crs = _crs_of(pos, crs)
    return _point(_numbers(pos.text, "gml:pos"), crs, "gml:pos")


def _length(el: etree._Element, tag: str) -> float:
    m = _req(el, tag)
    local = tag.rsplit("}", 1)[-1]
    uom = m.get("uom")
    if uom is not None and uom.strip() != UOM_METRE:
        raise LocationError(f"<{local}> uom {uom!r} is not metres ({UOM_METRE})")
    values = _numbers(m.text, local)
    if len(values) != 1:
        raise LocationError(f"<{local}> must hold one number")
    return values[0]


def _angle(el: etree._Element, tag: str) -> float:
    m = _req(el, tag)
    local = tag.rsplit("}", 1)[-1]
    values = _numbers(m.text, local)
    if len(values) != 1:
        raise LocationError(f"<{local}> must hold one number")
    uom = (m.get("uom") or UOM_DEGREE).strip()
    if uom == UOM_DEGREE:
        return values[0]
    if uom == UOM_RADIAN:
        return math.degrees(values[0])
    raise LocationError(f"<{local}> uom {uom!r} is neither degrees nor radians")


def _parse_point(el: etree._Element, crs: str | None) -> Point:
    return _pos(el, crs)


def _ring_points(ring: etree._Element, crs: str | None) -> list[Point]:
    poslist = _child(ring, _G_POSLIST, required=False)
    if poslist is not None:
        crs = _crs_of(poslist, crs)
        values = _numbers(poslist.text, "gml:posList")
        dim_attr = poslist.get("srsDimension")
        if dim_attr is not None:
            if dim_attr.strip() not in ("2", "3"):
                raise LocationError(f"gml:posList srsDimension {dim_attr!r} is not 2 or 3")
            dims = int(dim_attr)
            if crs is not None and dims != _DIMS[crs]:
                raise LocationError(f"gml:posList srsDimension {dims} contradicts {crs}")
        else:
            dims = _DIMS[crs] if crs is not None else 2
        if len(values) % dims:
            raise LocationError(f"gml:posList has {len(values)} numbers, not a multiple of {dims}")
        return [
            _point(values[i : i + dims], crs, "gml:posList") for i in range(0, len(values), dims)
        ]
    points = []
    for c in ring:
        if c.tag == _G_POS:
            points.append(_point(_numbers(c.text, "gml:pos"), _crs_of(c, crs), "gml:pos"))
    if not points:
        raise LocationError("gml:LinearRing has neither gml:pos nor gml:posList")
    return points


def _parse_polygon(el: etree._Element, crs: str | None) -> Polygon:
    if _child(el, _G_INTERIOR, required=False) is not None:
        raise LocationError("gml:Polygon with interior rings (not allowed by RFC 5491 §5.2.2)")
    exterior = _req(el, _G_EXTERIOR)
    ring = _req(exterior, _G_LINEARRING)
    crs = _crs_of(ring, _crs_of(exterior, crs))
    points = _ring_points(ring, crs)
    if len(points) >= 3 and points[0] != points[-1]:
        points.append(points[0])  # tolerate an unclosed ring: close it
    return Polygon(tuple(points))


#: The shapes that are a centre and measures, `gs:<class name>`: their measures' tags in the
#: order of the dataclass fields after `center` (lengths in metres; `_ANGLES` in degrees).
_CENTRED: dict[type[Centred], tuple[str, ...]] = {
    geo.Circle: (_S_RADIUS,),
    geo.Ellipse: (_S_SEMIMAJOR, _S_SEMIMINOR, _S_ORIENTATION),
    geo.ArcBand: (_S_INNER, _S_OUTER, _S_START, _S_OPENING),
    geo.Sphere: (_S_RADIUS,),
    geo.Ellipsoid: (_S_SEMIMAJOR, _S_SEMIMINOR, _S_VERTICAL, _S_ORIENTATION),
}
_ANGLES = frozenset({_S_ORIENTATION, _S_START, _S_OPENING})


def _centred_parser(
    cls: type[Centred], tags: tuple[str, ...]
) -> Callable[[etree._Element, str | None], Shape]:
    def parse(el: etree._Element, crs: str | None) -> Shape:
        center = _pos(el, crs)
        return cls(center, *(_angle(el, t) if t in _ANGLES else _length(el, t) for t in tags))

    return parse


def _parse_prism(el: etree._Element, crs: str | None) -> Prism:
    base = _req(el, _S_BASE)
    crs = _crs_of(base, crs)
    polygon = _req(base, _G_POLYGON)
    return Prism(_parse_polygon(polygon, _crs_of(polygon, crs)), _length(el, _S_HEIGHT))


_PARSERS: dict[str, Callable[[etree._Element, str | None], Shape]] = {
    _G_POINT: _parse_point,
    _G_POLYGON: _parse_polygon,
    _S_PRISM: _parse_prism,
    **{q(GS, cls.__name__): _centred_parser(cls, tags) for cls, tags in _CENTRED.items()},
}

#: Clark-notation tags `parse_shape` understands.
SHAPE_TAGS: frozenset[str] = frozenset(_PARSERS)


def is_shape_element(el: etree._Element) -> bool:
    """True if `el` is one of the RFC 5491 shape elements."""
    return el.tag in _PARSERS


def parse_shape(el: etree._Element) -> Shape:
    """Parse a gml:/gs: shape element into a `Shape`; raises `LocationError`."""
    tag = el.tag
    parser = _PARSERS.get(tag) if isinstance(tag, str) else None
    if parser is None:
        raise LocationError(f"unsupported location shape {_tagname(el)}")
    return parser(el, _crs_of(el, None))


# --- building ------------------------------------------------------------------------------


def _fmt(x: float) -> str:
    # repr() is the shortest text that reads back to the same float: exact round-trips.
    return repr(float(x))


def _pos_text(p: Point) -> str:
    if p.alt is None:
        return f"{_fmt(p.lat)} {_fmt(p.lon)}"
    return f"{_fmt(p.lat)} {_fmt(p.lon)} {_fmt(p.alt)}"


def _new(
    parent: etree._Element | None, tag: str, nsmap: dict[str, str], crs: str
) -> etree._Element:
    attrs = {"srsName": crs}
    if parent is None:
        return etree.Element(tag, attrs, nsmap=nsmap)
    return etree.SubElement(parent, tag, attrs)


def _sub(parent: etree._Element, tag: str, text: str, uom: str | None = None) -> None:
    child = etree.SubElement(parent, tag, {"uom": uom} if uom else {})
    child.text = text


def _add_pos(parent: etree._Element, p: Point) -> None:
    _sub(parent, _G_POS, _pos_text(p))


def _add_ring(parent: etree._Element, points: Iterable[Point]) -> None:
    ring = etree.SubElement(etree.SubElement(parent, _G_EXTERIOR), _G_LINEARRING)
    for p in points:
        _add_pos(ring, p)


def shape_to_element(shape: Shape, parent: etree._Element | None = None) -> etree._Element:
    """The GML element for `shape` (srsName on the outermost element, RFC 5491 §5).

    With `parent`, the element is appended to it and relies on the parent's namespace
    declarations (`gml`, `gs`) where present, so a PIDF-LO or LoST document declares them once.
    """
    if isinstance(shape, Point):
        el = _new(parent, _G_POINT, _GML_MAP, shape.crs)
        _add_pos(el, shape)
    elif isinstance(shape, Polygon):
        el = _new(parent, _G_POLYGON, _GML_MAP, shape.crs)
        _add_ring(el, shape.exterior)
    elif isinstance(shape, Centred):
        el = _new(parent, q(GS, type(shape).__name__), _GS_MAP, shape.crs)
        _add_pos(el, shape.center)
        for f, t in zip(fields(shape)[1:], _CENTRED[type(shape)], strict=True):
            _sub(el, t, _fmt(getattr(shape, f.name)), UOM_DEGREE if t in _ANGLES else UOM_METRE)
    elif isinstance(shape, Prism):
        el = _new(parent, _S_PRISM, _GS_MAP, shape.crs)
        polygon = etree.SubElement(etree.SubElement(el, _S_BASE), _G_POLYGON)
        _add_ring(polygon, shape.base.exterior)
        _sub(el, _S_HEIGHT, _fmt(shape.height), UOM_METRE)
    else:
        raise LocationError(f"not a shape: {type(shape).__name__}")
    return el
