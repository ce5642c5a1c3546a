"""Issue 12 (lenient, exact intake), location layer: every RFC 5491 shape in either namespace,
every registered EPSG length and angle unit converted, and the CRS spellings seen in the field
read by the one canonicaliser (`ng911.location.ns.canonical_crs`)."""

from __future__ import annotations

import math

import pytest
from lxml import etree

from ng911.location.errors import LocationError
from ng911.location.geodetic import (
    CRS_2D,
    CRS_3D,
    ArcBand,
    Circle,
    Ellipse,
    Ellipsoid,
    Point,
    Polygon,
    Prism,
    Shape,
    Sphere,
)
from ng911.location.gml import SHAPE_TAGS, parse_shape, shape_to_element
from ng911.location.ns import GML, GS, canonical_crs, uom_code
from ng911.location.xml import parse_xml

SQUARE_3D = Polygon(
    tuple(
        Point(lat, lon, 3.0)
        for lat, lon in ((40.0, -74.0), (40.0, -73.0), (41.0, -73.0), (41.0, -74.0), (40.0, -74.0))
    )
)
SHAPES: list[Shape] = [
    Point(40.758, -73.9855),
    Point(40.758, -73.9855, 12.0),
    Polygon(tuple(Point(p.lat, p.lon) for p in SQUARE_3D.exterior)),
    Circle(Point(42.5463, -73.2512), 850.24),
    Ellipse(Point(42.5463, -73.2512), 1275.0, 670.0, 43.2),
    ArcBand(Point(-43.5723, 153.2176), 3594.0, 4148.0, 20.0, 20.0),
    Sphere(Point(42.5463, -73.2512, 26.3), 850.24),
    Ellipsoid(Point(42.5463, -73.2512, 26.3), 7.7156, 3.31, 28.7, 90.0),
    Prism(SQUARE_3D, 2.4),
]


def _swap(el: etree._Element, which: str) -> bytes:
    """`el` written with every gml:/gs: element moved to the other namespace ("all"), or only
    the outer shape element ("outer"), or only the children ("inner")."""
    other = {GML: GS, GS: GML}
    for i, e in enumerate(el.iter()):
        ns = etree.QName(e).namespace
        if ns in other and (which == "all" or (which == "outer") == (i == 0)):
            e.tag = f"{{{other[ns]}}}{etree.QName(e).localname}"
    return etree.tostring(el)


@pytest.mark.parametrize("which", ["all", "outer", "inner"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: type(s).__name__)
def test_every_shape_in_either_namespace(shape: Shape, which: str) -> None:
    doc = _swap(shape_to_element(shape), which)
    assert parse_shape(parse_xml(doc)) == shape


def test_circle_in_plain_gml_namespace_as_the_lab_sent_it() -> None:
    doc = (
        b'<gml:Circle xmlns:gml="http://www.opengis.net/gml" srsName="urn:ogc:def:crs:EPSG::4326">'
        b"<gml:pos>40.7128 -74.0060</gml:pos>"
        b'<gml:radius uom="urn:ogc:def:uom:EPSG::9001">50</gml:radius></gml:Circle>'
    )
    assert parse_shape(parse_xml(doc)) == Circle(Point(40.7128, -74.006), 50.0)
    assert f"{{{GML}}}Circle" in SHAPE_TAGS and f"{{{GS}}}Point" in SHAPE_TAGS


def _ellipse(orientation: str, uom: str, axis_uom: str = "urn:ogc:def:uom:EPSG::9001") -> Shape:
    return parse_shape(
        parse_xml(
            '<gs:Ellipse xmlns:gml="http://www.opengis.net/gml" '
            'xmlns:gs="http://www.opengis.net/pidflo/1.0" srsName="urn:ogc:def:crs:EPSG::4326">'
            "<gml:pos>40 -74</gml:pos>"
            f'<gs:semiMajorAxis uom="{axis_uom}">100</gs:semiMajorAxis>'
            f'<gs:semiMinorAxis uom="{axis_uom}">50</gs:semiMinorAxis>'
            f'<gs:orientation uom="{uom}">{orientation}</gs:orientation></gs:Ellipse>'
        )
    )


@pytest.mark.parametrize(
    ("value", "uom", "degrees"),
    [
        ("45", "urn:ogc:def:uom:EPSG::9102", 45.0),
        (repr(math.pi / 4), "urn:ogc:def:uom:EPSG::9101", 45.0),
        ("50", "urn:ogc:def:uom:EPSG::9105", 45.0),  # grad
        ("50", "urn:ogc:def:uom:EPSG::9106", 45.0),  # gon
        ("2700", "urn:ogc:def:uom:EPSG::9103", 45.0),  # arc-minute
        ("162000", "urn:ogc:def:uom:EPSG::9104", 45.0),  # arc-second
        ("800", "urn:ogc:def:uom:EPSG::9114", 45.0),  # mil_6400
        (repr(math.pi / 4 * 1e6), "urn:ogc:def:uom:EPSG::9109", 45.0),  # microradian
        ("45", "urn:ogc:def:uom:EPSG:6.6:9102", 45.0),  # versioned URN
        ("50", "http://www.opengis.net/def/uom/EPSG/0/9105", 45.0),  # OGC http URI
        ("45", "EPSG:9102", 45.0),
    ],
)
def test_angle_units_converted_to_degrees(value: str, uom: str, degrees: float) -> None:
    shape = _ellipse(value, uom)
    assert isinstance(shape, Ellipse)
    assert shape.orientation == pytest.approx(degrees)


@pytest.mark.parametrize(
    ("uom", "metres_per_unit"),
    [
        ("urn:ogc:def:uom:EPSG::9001", 1.0),
        ("urn:ogc:def:uom:EPSG::9002", 0.3048),  # foot
        ("urn:ogc:def:uom:EPSG::9003", 1200 / 3937),  # US survey foot
        ("urn:ogc:def:uom:EPSG::9036", 1000.0),  # kilometre
        ("urn:ogc:def:uom:EPSG::9030", 1852.0),  # nautical mile
        ("urn:ogc:def:uom:EPSG::9093", 1609.344),  # statute mile
        ("urn:ogc:def:uom:EPSG::9096", 0.9144),  # yard
        ("http://www.opengis.net/def/uom/EPSG/0/9002", 0.3048),
    ],
)
def test_length_units_converted_to_metres(uom: str, metres_per_unit: float) -> None:
    shape = _ellipse("10", "urn:ogc:def:uom:EPSG::9102", axis_uom=uom)
    assert isinstance(shape, Ellipse)
    assert shape.semi_major == pytest.approx(100 * metres_per_unit)
    assert shape.semi_minor == pytest.approx(50 * metres_per_unit)


def test_arcband_in_feet_and_grads() -> None:
    doc = (
        '<gml:ArcBand xmlns:gml="http://www.opengis.net/gml" srsName="EPSG:4326">'
        "<gml:pos>-43.5723 153.2176</gml:pos>"
        '<gml:innerRadius uom="urn:ogc:def:uom:EPSG::9002">1000</gml:innerRadius>'
        '<gml:outerRadius uom="urn:ogc:def:uom:EPSG::9002">2000</gml:outerRadius>'
        '<gml:startAngle uom="urn:ogc:def:uom:EPSG::9105">100</gml:startAngle>'
        '<gml:openingAngle uom="urn:ogc:def:uom:EPSG::9105">20</gml:openingAngle></gml:ArcBand>'
    )
    shape = parse_shape(parse_xml(doc))
    assert isinstance(shape, ArcBand)
    assert shape.inner_radius == pytest.approx(304.8) and shape.outer_radius == pytest.approx(609.6)
    assert shape.start_angle == pytest.approx(90.0) and shape.opening_angle == pytest.approx(18.0)


@pytest.mark.parametrize(
    ("uom", "axis_uom", "named"),
    [
        ("urn:ogc:def:uom:EPSG::9110", "urn:ogc:def:uom:EPSG::9001", "EPSG::9110"),  # DDD.MMSS
        ("urn:ogc:def:uom:EPSG::9102", "urn:ogc:def:uom:EPSG::9102", "EPSG::9102"),  # angle
        ("furlongs", "urn:ogc:def:uom:EPSG::9001", "furlongs"),
        ("urn:ogc:def:uom:EPSG::9102", "urn:ogc:def:uom:UCUM::m", "UCUM::m"),
    ],
)
def test_unknown_unit_is_refused_naming_it(uom: str, axis_uom: str, named: str) -> None:
    with pytest.raises(LocationError, match=f"uom '.*{named}' is not a known") as info:
        _ellipse("10", uom, axis_uom)
    assert info.value.lost_error == "locationInvalid"


CRS_2D_FORMS = [
    "urn:ogc:def:crs:EPSG::4326",
    "urn:ogc:def:crs:EPSG:6.6:4326",
    "urn:ogc:def::crs:EPSG::4326",  # the doubled colon seen in the field
    "EPSG:4326",
    "epsg:4326",
    " http://www.opengis.net/def/crs/EPSG/0/4326 ",
    "https://www.opengis.net/def/crs/EPSG/0/4326",
    "http://www.opengis.net/gml/srs/epsg.xml#4326",
]
CRS_3D_FORMS = [f.replace("4326", "4979") for f in CRS_2D_FORMS]


@pytest.mark.parametrize("name", CRS_2D_FORMS + CRS_3D_FORMS)
def test_crs_forms_canonical(name: str) -> None:
    assert canonical_crs(name) == (CRS_3D if "4979" in name else CRS_2D)
    dims = "1 2 3" if "4979" in name else "1 2"
    doc = f'<gml:Point xmlns:gml="{GML}" srsName="{name}"><gml:pos>{dims}</gml:pos></gml:Point>'
    shape = parse_shape(parse_xml(doc))
    assert shape == (Point(1, 2, 3) if "4979" in name else Point(1, 2))


@pytest.mark.parametrize(
    "name",
    [
        "urn:ogc:def:crs:EPSG::3857",
        "urn:ogc:def:crs:OGC::CRS84",  # lon/lat order: reading it as lat/lon would misplace
        "urn:ogc:def:crs:EPSG::43260",
        "urn:ogc:def:::crs:EPSG::4326",
        "EPSG::4326x",
        "",
    ],
)
def test_other_crs_refused(name: str) -> None:
    assert canonical_crs(name) is None
    doc = f'<gml:Point xmlns:gml="{GML}" srsName="{name}"><gml:pos>1 2</gml:pos></gml:Point>'
    with pytest.raises(LocationError, match="unsupported srsName"):
        parse_shape(parse_xml(doc))


def test_uom_code_forms() -> None:
    assert uom_code("urn:ogc:def:uom:EPSG::9001") == 9001
    assert uom_code("urn:ogc:def::uom:EPSG::9002") == 9002
    assert uom_code("urn:ogc:def:crs:EPSG::9001") is None  # a CRS name is no unit
    assert uom_code("m") is None
