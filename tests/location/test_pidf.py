"""ng911.location.pidf: PIDF-LO parse/build, round-trips, and garbled input."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from location_strategies import civics, shapes

from ng911.location.civic import CivicAddress
from ng911.location.errors import LocationError, XmlError
from ng911.location.geodetic import Circle, Point, Polygon
from ng911.location.pidf import (
    PIDF_CONTENT_TYPE,
    LocationInfo,
    PidfLo,
    build_pidf,
    parse_pidf,
    simple_pidf,
)
from xml_noise import with_comments_everywhere

# RFC 5491 §3.4-style device location (the form an emergency caller sends).
DEVICE_DOC = b"""<?xml version="1.0" encoding="UTF-8"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf"
    xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model"
    xmlns:gp="urn:ietf:params:xml:ns:pidf:geopriv10"
    xmlns:gml="http://www.opengis.net/gml"
    xmlns:gs="http://www.opengis.net/pidflo/1.0"
    entity="pres:alice@example.com">
  <dm:device id="sg89ab">
    <gp:geopriv>
      <gp:location-info>
        <gs:Circle srsName="urn:ogc:def:crs:EPSG::4326">
          <gml:pos>40.7580, -73.9855</gml:pos>
          <gs:radius uom="urn:ogc:def:uom:EPSG::9001">30</gs:radius>
        </gs:Circle>
      </gp:location-info>
      <gp:usage-rules>
        <gbp:retransmission-allowed xmlns:gbp="urn:ietf:params:xml:ns:pidf:geopriv10:basicPolicy"
          >yes</gbp:retransmission-allowed>
      </gp:usage-rules>
      <gp:method>GPS</gp:method>
    </gp:geopriv>
    <dm:deviceID>mac:8asd7f7d6a5b</dm:deviceID>
    <dm:timestamp>2026-11-25T15:00:00Z</dm:timestamp>
  </dm:device>
</presence>"""

# RFC 4119-style tuple with a civic and a geodetic location in one location-info.
TUPLE_DOC = b"""<?xml version="1.0" encoding="UTF-8"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf"
    xmlns:gp="urn:ietf:params:xml:ns:pidf:geopriv10"
    xmlns:cl="urn:ietf:params:xml:ns:pidf:geopriv10:civicAddr"
    xmlns:gml="http://www.opengis.net/gml"
    entity="pres:geotarget@example.com">
  <tuple id="sg89ae">
    <status>
      <gp:geopriv>
        <gp:location-info>
          <cl:civicAddress>
            <cl:country>US</cl:country><cl:A1>NY</cl:A1><cl:A3>New York</cl:A3>
            <cl:RD>Broadway</cl:RD><cl:HNO>1500</cl:HNO>
          </cl:civicAddress>
          <gml:Point srsName="urn:ogc:def:crs:EPSG::4326">
            <gml:pos>40.758 -73.9855</gml:pos></gml:Point>
          <ext:unknown xmlns:ext="urn:example:ext">ignored</ext:unknown>
        </gp:location-info>
        <gp:usage-rules>
          <bp:retransmission-allowed xmlns:bp="urn:ietf:params:xml:ns:pidf:geopriv10:basicPolicy"
            >false</bp:retransmission-allowed>
          <bp:retention-expiry xmlns:bp="urn:ietf:params:xml:ns:pidf:geopriv10:basicPolicy"
            >2026-11-26T15:00:00Z</bp:retention-expiry>
        </gp:usage-rules>
        <gp:method>Manual</gp:method>
      </gp:geopriv>
    </status>
    <timestamp>2026-11-25T15:00:00Z</timestamp>
  </tuple>
  <tuple id="presence-only"><status><basic>open</basic></status></tuple>
</presence>"""


def test_parse_device_document() -> None:
    p = parse_pidf(DEVICE_DOC)
    assert p.entity == "pres:alice@example.com"
    (li,) = p.locations
    assert li.location == Circle(Point(40.758, -73.9855), 30.0)
    assert li.kind == "device"
    assert li.element_id == "sg89ab"
    assert li.method == "GPS"
    assert li.retransmission_allowed is True  # "yes" as some RFC examples wrote it
    assert li.device_id == "mac:8asd7f7d6a5b"
    assert li.timestamp == "2026-11-25T15:00:00Z"
    assert p.primary == li
    assert parse_pidf(build_pidf(p)) == p


def test_parse_tuple_document_with_two_locations() -> None:
    p = parse_pidf(TUPLE_DOC)
    assert len(p.locations) == 2
    civic, point = p.locations
    assert isinstance(civic.location, CivicAddress)
    assert civic.location.get("RD") == "Broadway"
    assert point.location == Point(40.758, -73.9855)
    for li in p.locations:
        assert li.kind == "tuple"
        assert li.element_id == "sg89ae"
        assert li.retransmission_allowed is False
        assert li.retention_expiry == "2026-11-26T15:00:00Z"
        assert li.method == "Manual"
        assert li.timestamp == "2026-11-25T15:00:00Z"
    assert p.primary == point  # geodetic first
    assert p.civic == (civic,)
    assert p.geodetic == (point,)
    assert list(p) == list(p.locations)
    assert parse_pidf(build_pidf(p)) == p


def test_build_defaults_to_device_and_makes_ids() -> None:
    p = PidfLo("pres:x@y", (LocationInfo(Point(1, 2)), LocationInfo(Point(3, 4), kind="person")))
    data = build_pidf(p)
    assert b"<dm:device" in data
    assert b"<dm:person" in data
    assert data.startswith(b"<?xml")
    back = parse_pidf(data)
    assert [li.element_id for li in back] == ["loc1", "loc2"]
    assert parse_pidf(build_pidf(back)) == back


def test_simple_pidf() -> None:
    p = simple_pidf("pres:caller@example.com", Point(40.758, -73.9855), method="GPS")
    assert p.locations[0].retransmission_allowed
    assert parse_pidf(build_pidf(p)) == p
    assert PIDF_CONTENT_TYPE == "application/pidf+xml"


def test_primary_civic_only_and_empty() -> None:
    civic = LocationInfo(CivicAddress.of(country="US"))
    assert PidfLo("e", (civic,)).primary == civic
    assert PidfLo("e", ()).primary is None


def test_location_info_validation() -> None:
    with pytest.raises(LocationError):
        LocationInfo("somewhere")  # type: ignore[arg-type]
    with pytest.raises(LocationError):
        LocationInfo(Point(1, 2), kind="car")  # type: ignore[arg-type]


def test_bytes_without_newlines_and_str_accepted() -> None:
    one_line = b" ".join(DEVICE_DOC.split())
    assert parse_pidf(one_line) == parse_pidf(DEVICE_DOC)
    assert parse_pidf(DEVICE_DOC.decode()) == parse_pidf(DEVICE_DOC)


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (b"<presence xmlns='urn:wrong' entity='x'/>", "not a PIDF"),
        (b"<foo/>", "not a PIDF"),
        (b"<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='x'/>", "no usable location"),
        (
            b"<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='x'>"
            b"<tuple id='a'><status><basic>open</basic></status></tuple></presence>",
            "no usable location",
        ),
        (
            b"<presence xmlns='urn:ietf:params:xml:ns:pidf' "
            b"xmlns:gp='urn:ietf:params:xml:ns:pidf:geopriv10' entity='x'>"
            b"<tuple id='a'><status><gp:geopriv/></status></tuple></presence>",
            "location-info",
        ),
        (
            b"<presence xmlns='urn:ietf:params:xml:ns:pidf' "
            b"xmlns:gp='urn:ietf:params:xml:ns:pidf:geopriv10' "
            b"xmlns:gml='http://www.opengis.net/gml/3.2' entity='x'>"
            b"<tuple id='a'><status><gp:geopriv><gp:location-info>"
            b"<gml:Point><gml:pos>1 2</gml:pos></gml:Point>"
            b"</gp:location-info></gp:geopriv></status></tuple></presence>",
            r"unsupported: \{http://www.opengis.net/gml/3.2\}Point",
        ),
        (
            DEVICE_DOC.replace(b"40.7580, -73.9855", b"400.7580, -73.9855"),
            "latitude",
        ),
        (DEVICE_DOC.replace(b">30<", b">-30<"), "radius"),
    ],
)
def test_garbled_documents(doc: bytes, message: str) -> None:
    with pytest.raises(LocationError, match=message):
        parse_pidf(doc)


@pytest.mark.parametrize(
    "doc",
    [
        b"",
        b"not xml at all",
        DEVICE_DOC[: len(DEVICE_DOC) // 2],
        b'<!DOCTYPE p [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        b"<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='&x;'/>",
        b"<presence>" * 10_000,
        b"<presence xmlns='urn:ietf:params:xml:ns:pidf'>" + b" " * 2_000_000 + b"</presence>",
    ],
    ids=["empty", "garbage", "truncated", "xxe", "deep", "huge"],
)
def test_hostile_documents_are_xml_errors(doc: bytes) -> None:
    with pytest.raises(XmlError):
        parse_pidf(doc)


def test_max_size_passthrough() -> None:
    with pytest.raises(XmlError, match="too large"):
        parse_pidf(DEVICE_DOC, max_size=100)


location_infos = st.builds(
    LocationInfo,
    location=st.one_of(shapes, civics()),
    method=st.sampled_from([None, "GPS", "Cell", "Manual", "DHCP"]),
    retransmission_allowed=st.booleans(),
    retention_expiry=st.sampled_from([None, "2026-12-01T00:00:00Z"]),
    element_id=st.from_regex(r"[a-z][a-z0-9]{0,8}", fullmatch=True),
    timestamp=st.sampled_from([None, "2026-11-25T15:00:00.123Z"]),
    kind=st.sampled_from(["device", "tuple", "person"]),
    device_id=st.none(),
)


@settings(max_examples=150, deadline=None)
@given(
    entity=st.sampled_from(["pres:alice@example.com", "sip:bob@example.net", ""]),
    infos=st.lists(location_infos, min_size=1, max_size=4),
)
def test_roundtrip_property(entity: str, infos: list[LocationInfo]) -> None:
    p = PidfLo(entity, tuple(infos))
    assert parse_pidf(build_pidf(p)) == p


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_documents_never_crash(data: st.DataObject) -> None:
    """Byte flips, cuts and splices of a valid PIDF-LO give a PidfLo or a LocationError."""
    doc = bytearray(TUPLE_DOC)
    for _ in range(data.draw(st.integers(1, 5))):
        op = data.draw(st.sampled_from(["flip", "cut", "dup"]))
        i = data.draw(st.integers(0, len(doc) - 1))
        if op == "flip":
            doc[i] = data.draw(st.integers(0, 255))
        elif op == "cut":
            j = data.draw(st.integers(i, min(len(doc), i + 40)))
            del doc[i:j]
        else:
            doc[i:i] = doc[i : i + data.draw(st.integers(1, 40))]
        if not doc:
            break
    try:
        result = parse_pidf(bytes(doc))
    except LocationError:
        return
    assert isinstance(result, PidfLo)
    assert result.locations


def test_polygon_document_roundtrip() -> None:
    ring = (Point(40.7, -74.0), Point(40.7, -73.9), Point(40.8, -73.9), Point(40.7, -74.0))
    p = simple_pidf("pres:x@y", Polygon(ring), kind="tuple", timestamp="2026-11-25T15:00:00Z")
    assert parse_pidf(build_pidf(p)) == p


@pytest.mark.parametrize("kind", ["device", "tuple", "polygon", "civic"])
def test_comments_and_processing_instructions_anywhere(kind: str) -> None:
    """A comment's or PI's `.tag` is a function, not a string: every walk of the document
    must pass over them, in the compiled build too (which checks what it reads against
    lxml's stubs, where `.tag` is a str), and read the same location."""
    ring = (Point(40.7, -74.0), Point(40.7, -73.9), Point(40.8, -73.9), Point(40.7, -74.0))
    doc = {
        "device": DEVICE_DOC,
        "tuple": TUPLE_DOC,
        "polygon": build_pidf(simple_pidf("pres:x@y", Polygon(ring), kind="tuple")),
        "civic": build_pidf(
            simple_pidf("pres:x@y", CivicAddress.of(country="US", A1="NY", RD="Broadway"))
        ),
    }[kind]
    noisy = with_comments_everywhere(doc)
    assert noisy.count(b"<!-- note -->") > 5
    assert parse_pidf(noisy) == parse_pidf(doc)
