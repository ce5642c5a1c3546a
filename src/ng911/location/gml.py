"""GML 3.1.1 encoding of the RFC 5491 shapes: parse and build.

RFC 5491 §5 profiles GML down to Point and Polygon from `gml:` and Circle, Ellipse, ArcBand,
Sphere, Ellipsoid and Prism from the GeoShape schema (`gs:`, http://www.opengis.net/pidflo/1.0).
The profile fixes the CRS to EPSG 4326 / 4979 (srsName on the outermost element, §5.1) and the
units to metres (EPSG 9001) and degrees or radians (EPSG 9102 / 9101). We always write that.

Receivers in the field see sloppier documents than the RFC shows, and a 9-1-1 call must not be
misrouted because of a comma, so parsing is tolerant where the meaning is unambiguous:

- `"lat, lon"` and extra whitespace inside `gml:pos` / `gml:posList`;
- srsName missing (the CRS follows from the number of coordinates), or any spelling
  `ns.canonical_crs` reads (versioned URN, `urn:ogc:def::crs:`, `EPSG:4326`, OGC http URI);
- any element of a shape in either namespace: `gs:Circle` or `gml:Circle`, `gml:pos` or
  `gs:pos` (RFC 5491 §5 says which is which; field equipment mixes them, and no two of the
  shapes' element names clash across the two namespaces, so the local name decides);
- a missing `uom` on a length (metres) or angle (degrees); any EPSG length unit in
  `ns.LENGTH_UNITS` converted to metres, any angle unit in `ns.ANGLE_UNITS` to degrees;
- a polygon ring that is not closed (closed for the sender).

Everything else (an unknown CRS or unit, a wrong coordinate count, a CRS respecified
differently on a child, interior rings) raises `LocationError` with the reason (an unknown
unit is named in it).

The walk uses direct child iteration, never XPath: this runs once per call at the ESRP and once
per query at the LoST server.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import fields

from lxml import etree

from ng911.location import geodetic as geo
from ng911.location.errors import LocationError
from ng911.location.geodetic import Centred, Point, Polygon, Prism, Shape
from ng911.location.ns import (
    ANGLE_UNITS,
    CRS_2D,
    CRS_3D,
    GML,
    GS,
    LENGTH_UNITS,
    UOM_DEGREE,
    UOM_METRE,
    canonical_crs,
    q,
    uom_code,
)
from ng911.location.xml import tag_of

__all__ = [
    "SHAPE_TAGS",
    "angle_in_degrees",
    "is_shape_element",
    "length_in_metres",
    "parse_shape",
    "pos_text",
    "shape_to_element",
]

_G_POINT = q(GML, "Point")
_G_POLYGON = q(GML, "Polygon")
_G_POS = q(GML, "pos")
_S_POS = q(GS, "pos")
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

_DIMS = {CRS_2D: 2, CRS_3D: 3}

#: Every tag a shape reads, in the namespace RFC 5491 §5 gives it, mapped to the same local
#: name in the other namespace: `_child` takes either (see the module docstring).
_TWIN: dict[str, str] = {}
for _local in ("Point", "Polygon", "pos", "posList", "exterior", "interior", "LinearRing"):
    _TWIN[q(GML, _local)] = q(GS, _local)
for _local in (
    "Circle", "Ellipse", "ArcBand", "Sphere", "Ellipsoid", "Prism", "base", "radius",
    "semiMajorAxis", "semiMinorAxis", "verticalAxis", "orientation", "innerRadius",
    "outerRadius", "startAngle", "openingAngle", "height",
):  # fmt: skip
    _TWIN[q(GS, _local)] = q(GML, _local)


# --- parsing -------------------------------------------------------------------------------


def _tagname(el: etree._Element) -> str:
    return tag_of(el) or "(comment or PI)"


def _crs_of(el: etree._Element, inherited: str | None) -> str | None:
    """The element's CRS: its srsName if any (checked against the outer one), else inherited."""
    name = el.get("srsName")
    if name is None:
        return inherited
    crs = canonical_crs(name)
    if crs is None:
        raise LocationError(
            f"unsupported srsName {name[:100]!r} on {_tagname(el)}"
            f" (RFC 5491 §5: {CRS_2D} or {CRS_3D})"
        )
    if inherited is not None and crs != inherited:
        raise LocationError(f"srsName {name!r} on {_tagname(el)} contradicts outer {inherited}")
    return crs


def _child(el: etree._Element, tag: str, *, required: bool = True) -> etree._Element | None:
    """The first child named `tag`, in its RFC 5491 namespace or the other one."""
    twin = _TWIN[tag]
    for c in el:
        ctag = tag_of(c)
        if ctag in (tag, twin):
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


def _unit_factor(
    uom: str | None, base: str, units: dict[int, tuple[str, float]], what: str
) -> float:
    if uom is None or uom == base:
        return 1.0  # absent: the RFC 5491 unit; its RFC spelling skips the lookup
    code = uom_code(uom)
    known = units.get(code) if code is not None else None
    if known is None:
        kind = "length" if units is LENGTH_UNITS else "angle"
        raise LocationError(
            f"{what} uom {uom.strip()[:100]!r} is not a known {kind} unit"
            f" (EPSG {', '.join(map(str, units))})"
        )
    return known[1]


def length_in_metres(value: float, uom: str | None, what: str = "length") -> float:
    """`value` in `uom` (any name `ns.uom_code` reads; None = metres) as metres."""
    factor = _unit_factor(uom, UOM_METRE, LENGTH_UNITS, what)
    return value if factor == 1.0 else value * factor


def angle_in_degrees(value: float, uom: str | None, what: str = "angle") -> float:
    """`value` in `uom` (any name `ns.uom_code` reads; None = degrees) as degrees."""
    factor = _unit_factor(uom, UOM_DEGREE, ANGLE_UNITS, what)
    return value if factor == 1.0 else value * factor


def _measure(
    el: etree._Element, tag: str, convert: Callable[[float, str | None, str], float]
) -> float:
    m = _req(el, tag)
    local = tag.rsplit("}", 1)[-1]
    values = _numbers(m.text, local)
    if len(values) != 1:
        raise LocationError(f"<{local}> must hold one number")
    return convert(values[0], m.get("uom"), f"<{local}>")


def _length(el: etree._Element, tag: str) -> float:
    return _measure(el, tag, length_in_metres)


def _angle(el: etree._Element, tag: str) -> float:
    return _measure(el, tag, angle_in_degrees)


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
        ctag = tag_of(c)
        if ctag in (_G_POS, _S_POS):
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
# ... and each shape in the other namespace too (`gml:Circle`, `gs:Point`: module docstring)
_PARSERS.update({_TWIN[tag]: parser for tag, parser in list(_PARSERS.items())})

#: Clark-notation tags `parse_shape` understands.
SHAPE_TAGS: frozenset[str] = frozenset(_PARSERS)


def is_shape_element(el: etree._Element) -> bool:
    """True if `el` is one of the RFC 5491 shape elements."""
    return tag_of(el) in _PARSERS


def parse_shape(el: etree._Element) -> Shape:
    """Parse a gml:/gs: shape element into a `Shape`; raises `LocationError`."""
    parser = _PARSERS.get(tag_of(el))
    if parser is None:
        raise LocationError(f"unsupported location shape {_tagname(el)}")
    return parser(el, _crs_of(el, None))


# --- building ------------------------------------------------------------------------------


def _fmt(x: float) -> str:
    # repr() is the shortest text that reads back to the same float: exact round-trips.
    return repr(float(x))


def pos_text(p: Point) -> str:
    """A point's `gml:pos` text: "lat lon" (or "lat lon alt"), each float's shortest repr."""
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
    _sub(parent, _G_POS, pos_text(p))


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
