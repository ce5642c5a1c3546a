"""ng911.location.gml: every RFC 5491 shape round-trips; tolerant where unambiguous."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from location_strategies import shapes
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
from ng911.location.gml import SHAPE_TAGS, is_shape_element, parse_shape, shape_to_element
from ng911.location.xml import parse_xml

E4326 = 'srsName="urn:ogc:def:crs:EPSG::4326"'
E4979 = 'srsName="urn:ogc:def:crs:EPSG::4979"'
NS = 'xmlns:gml="http://www.opengis.net/gml" xmlns:gs="http://www.opengis.net/pidflo/1.0"'
SQUARE = Polygon(
    (
        Point(40.0, -74.0),
        Point(40.0, -73.0),
        Point(41.0, -73.0),
        Point(41.0, -74.0),
        Point(40.0, -74.0),
    )
)
SQUARE_3D = Polygon(tuple(Point(p.lat, p.lon, 12.5) for p in SQUARE.exterior))

EXAMPLES: list[Shape] = [
    Point(40.758, -73.9855),
    Point(40.758, -73.9855, 12.0),
    Circle(Point(42.5463, -73.2512), 850.24),
    Ellipse(Point(42.5463, -73.2512), 1275.0, 670.0, 43.2),
    ArcBand(Point(-43.5723, 153.21760), 3594.0, 4148.0, 20.0, 20.0),
    SQUARE,
    SQUARE_3D,
    Sphere(Point(42.5463, -73.2512, 26.3), 850.24),
    Ellipsoid(Point(42.5463, -73.2512, 26.3), 7.7156, 3.31, 28.7, 90.0),
    Prism(SQUARE_3D, 2.4),
]


def _roundtrip(shape: Shape) -> Shape:
    return parse_shape(parse_xml(etree.tostring(shape_to_element(shape))))


def _parse(text: str) -> Shape:
    return parse_shape(parse_xml(text.encode()))


@pytest.mark.parametrize("shape", EXAMPLES, ids=lambda s: type(s).__name__)
def test_roundtrip_examples(shape: Shape) -> None:
    assert _roundtrip(shape) == shape
    el = shape_to_element(shape)
    assert is_shape_element(el)
    assert el.tag in SHAPE_TAGS
    assert el.get("srsName") == (CRS_3D if getattr(shape, "crs", CRS_2D) == CRS_3D else CRS_2D)


@settings(max_examples=300, deadline=None)
@given(shapes)
def test_roundtrip_property(shape: Shape) -> None:
    """parse(serialise(shape)) == shape for every valid shape (STYLE: dnspython rule)."""
    assert _roundtrip(shape) == shape


def test_rfc5491_point_example() -> None:
    shape = _parse(
        f'<gml:Point {NS} srsName="urn:ogc:def:crs:EPSG::4326">'
        "<gml:pos>-34.407 150.88001</gml:pos></gml:Point>"
    )
    assert shape == Point(-34.407, 150.88001)


def test_comma_and_whitespace_tolerated() -> None:
    for pos in (
        "40.758, -73.9855",
        " 40.758 ,-73.9855 ",
        "\n\t40.758\n-73.9855\n",
        "40.758,-73.9855",
    ):
        shape = _parse(f"<gml:Point {NS}><gml:pos>{pos}</gml:pos></gml:Point>")
        assert shape == Point(40.758, -73.9855)


def test_srsname_variants_accepted() -> None:
    for srs in (
        "urn:ogc:def:crs:EPSG::4326",
        "urn:ogc:def:crs:EPSG:6.6:4326",
        "URN:OGC:DEF:CRS:EPSG::4326",
        "EPSG:4326",
        "http://www.opengis.net/def/crs/EPSG/0/4326",
        "http://www.opengis.net/gml/srs/epsg.xml#4326",
    ):
        shape = _parse(f'<gml:Point {NS} srsName="{srs}"><gml:pos>1 2</gml:pos></gml:Point>')
        assert shape == Point(1, 2)


def test_srsname_missing_inferred_from_dimension() -> None:
    assert _parse(f"<gml:Point {NS}><gml:pos>1 2 3</gml:pos></gml:Point>") == Point(1, 2, 3)


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (
            f'<gml:Point {NS} srsName="urn:ogc:def:crs:EPSG::3857"><gml:pos>1 2</gml:pos>'
            "</gml:Point>",
            "srsName",
        ),
        (
            f"<gml:Point {NS} {E4326}><gml:pos>1 2 3</gml:pos></gml:Point>",
            "coordinates",
        ),
        (
            f"<gml:Point {NS} {E4979}><gml:pos>1 2</gml:pos></gml:Point>",
            "coordinates",
        ),
        (
            f'<gml:Point {NS} srsName="urn:ogc:def:crs:EPSG::4326">'
            '<gml:pos srsName="urn:ogc:def:crs:EPSG::4979">1 2</gml:pos></gml:Point>',
            "contradicts",
        ),
        (f"<gml:Point {NS}><gml:pos>north east</gml:pos></gml:Point>", "numbers"),
        (f"<gml:Point {NS}><gml:pos>NaN 2</gml:pos></gml:Point>", "non-finite"),
        (f"<gml:Point {NS}><gml:pos></gml:pos></gml:Point>", "empty"),
        (f"<gml:Point {NS}/>", "lacks <pos>"),
        (f"<gml:Point {NS}><gml:pos>91 2</gml:pos></gml:Point>", "latitude"),
        (
            f"<gml:LineString {NS}><gml:posList>1 2 3 4</gml:posList></gml:LineString>",
            "unsupported",
        ),
        (
            '<Point xmlns="http://www.opengis.net/gml/3.2"><pos>1 2</pos></Point>',
            "unsupported",
        ),
        (f"<gs:Circle {NS}><gml:pos>1 2</gml:pos></gs:Circle>", "lacks <radius>"),
        (
            f'<gs:Circle {NS}><gml:pos>1 2</gml:pos><gs:radius uom="urn:ogc:def:uom:EPSG::9999">'
            "5</gs:radius></gs:Circle>",
            "'urn:ogc:def:uom:EPSG::9999' is not a known length unit",
        ),
        (f"<gs:Circle {NS}><gml:pos>1 2</gml:pos><gs:radius>-5</gs:radius></gs:Circle>", "> 0"),
        (
            f"<gs:Circle {NS}><gml:pos>1 2</gml:pos><gs:radius>5 6</gs:radius></gs:Circle>",
            "one number",
        ),
        (
            f"<gs:Ellipse {NS}><gml:pos>1 2</gml:pos><gs:semiMajorAxis>5</gs:semiMajorAxis>"
            "<gs:semiMinorAxis>3</gs:semiMinorAxis>"
            '<gs:orientation uom="urn:ogc:def:uom:EPSG::9001">4</gs:orientation></gs:Ellipse>',
            "EPSG::9001' is not a known angle unit",
        ),
        (
            f"<gml:Polygon {NS}><gml:exterior><gml:LinearRing><gml:posList>1 2 3 4 5"
            "</gml:posList></gml:LinearRing></gml:exterior></gml:Polygon>",
            "multiple",
        ),
        (
            f"<gml:Polygon {NS}><gml:exterior><gml:LinearRing/></gml:exterior></gml:Polygon>",
            "neither",
        ),
        (
            f"<gml:Polygon {NS}><gml:exterior><gml:LinearRing><gml:posList>0 0 0 1 1 1 0 0"
            "</gml:posList></gml:LinearRing></gml:exterior><gml:interior/></gml:Polygon>",
            "interior",
        ),
        (f"<gml:Polygon {NS}/>", "lacks <exterior>"),
        (
            f'<gs:Sphere {NS} srsName="urn:ogc:def:crs:EPSG::4326"><gml:pos>1 2</gml:pos>'
            "<gs:radius>3</gs:radius></gs:Sphere>",
            "3D",
        ),
    ],
)
def test_bad_shapes_rejected(doc: str, message: str) -> None:
    with pytest.raises(LocationError, match=message):
        _parse(doc)


def test_radians_converted_to_degrees() -> None:
    shape = _parse(
        f"<gs:Ellipse {NS}><gml:pos>1 2</gml:pos><gs:semiMajorAxis>5</gs:semiMajorAxis>"
        "<gs:semiMinorAxis>3</gs:semiMinorAxis>"
        f'<gs:orientation uom="urn:ogc:def:uom:EPSG::9101">{math.pi / 2}</gs:orientation>'
        "</gs:Ellipse>"
    )
    assert isinstance(shape, Ellipse)
    assert shape.orientation == pytest.approx(90.0)


def test_missing_uom_means_metres_and_degrees() -> None:
    shape = _parse(
        f"<gs:ArcBand {NS}><gml:pos>1 2</gml:pos><gs:innerRadius>0</gs:innerRadius>"
        "<gs:outerRadius>10</gs:outerRadius><gs:startAngle>5</gs:startAngle>"
        "<gs:openingAngle>30</gs:openingAngle></gs:ArcBand>"
    )
    assert shape == ArcBand(Point(1, 2), 0, 10, 5, 30)


def test_polygon_poslist_and_pos_forms_agree() -> None:
    poslist = _parse(
        f'<gml:Polygon {NS} srsName="urn:ogc:def:crs:EPSG::4326"><gml:exterior><gml:LinearRing>'
        "<gml:posList>40 -74  40 -73\n 41 -73 41 -74 40 -74</gml:posList>"
        "</gml:LinearRing></gml:exterior></gml:Polygon>"
    )
    assert poslist == SQUARE
    with_dim = _parse(
        f'<gml:Polygon {NS}><gml:exterior><gml:LinearRing><gml:posList srsDimension="3">'
        "40 -74 12.5 40 -73 12.5 41 -73 12.5 41 -74 12.5 40 -74 12.5</gml:posList>"
        "</gml:LinearRing></gml:exterior></gml:Polygon>"
    )
    assert with_dim == SQUARE_3D


def test_unclosed_ring_is_closed() -> None:
    shape = _parse(
        f"<gml:Polygon {NS}><gml:exterior><gml:LinearRing>"
        "<gml:pos>40 -74</gml:pos><gml:pos>40 -73</gml:pos><gml:pos>41 -73</gml:pos>"
        "<gml:pos>41 -74</gml:pos></gml:LinearRing></gml:exterior></gml:Polygon>"
    )
    assert shape == SQUARE


def test_prism_from_rfc_style_document() -> None:
    shape = _parse(
        f'<gs:Prism {NS} srsName="urn:ogc:def:crs:EPSG::4979"><gs:base><gml:Polygon>'
        "<gml:exterior><gml:LinearRing><gml:posList>"
        "40 -74 12.5 40 -73 12.5 41 -73 12.5 41 -74 12.5 40 -74 12.5"
        "</gml:posList></gml:LinearRing></gml:exterior></gml:Polygon></gs:base>"
        '<gs:height uom="urn:ogc:def:uom:EPSG::9001">2.4</gs:height></gs:Prism>'
    )
    assert shape == Prism(SQUARE_3D, 2.4)


def test_shape_to_element_under_parent_reuses_namespaces() -> None:
    parent = etree.Element(
        "wrapper",
        nsmap={"gml": "http://www.opengis.net/gml", "gs": "http://www.opengis.net/pidflo/1.0"},
    )
    shape_to_element(Circle(Point(1, 2), 3), parent)
    text = etree.tostring(parent).decode()
    assert text.count("xmlns:gs=") == 1
    assert parse_shape(parent[0]) == Circle(Point(1, 2), 3)


def test_shape_to_element_rejects_non_shape() -> None:
    with pytest.raises(LocationError):
        shape_to_element("circle")  # type: ignore[arg-type]


def test_comment_inside_shape_is_ignored() -> None:
    shape = _parse(f"<gml:Point {NS}><!-- hi --><gml:pos>1 2</gml:pos></gml:Point>")
    assert shape == Point(1, 2)
