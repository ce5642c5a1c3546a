"""The findService fast path gives exactly the full parser's answer, or defers to it."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_protocol import BILLION_LAUGHS, EXTERNAL_DTD, POINT, REQUESTS, XXE, find

import ng911.lost.fast_request as fast_request
from ng911.location.geodetic import Circle, Point
from ng911.lost.errors import LostProtocolError
from ng911.lost.fast_request import parse_fast, parse_request_fast
from ng911.lost.protocol import FindServiceRequest, LostLocation, build_request, parse_request

NS = (
    'xmlns="urn:ietf:params:xml:ns:lost1" xmlns:gml="http://www.opengis.net/gml" '
    'xmlns:gs="http://www.opengis.net/pidflo/1.0"'
)
CIRCLE = (
    '<gs:Circle srsName="urn:ogc:def:crs:EPSG::4326"><gml:pos>40.7 -73.9</gml:pos>'
    '<gs:radius uom="urn:ogc:def:uom:EPSG::9001">50</gs:radius></gs:Circle>'
)


def doc(inner: str, root_attrs: str = NS, decl: str = '<?xml version="1.0"?>') -> bytes:
    return f"{decl}<findService {root_attrs}>{inner}</findService>".encode()


def loc(shape: str = POINT, attrs: str = 'id="L1" profile="geodetic-2d"') -> str:
    return f"<location {attrs}>{shape}</location>"


SVC = "<service>urn:service:sos</service>"

# Documents the fast path reads (it must equal the full parser).
ACCEPTED = [
    find(POINT),
    doc(loc(CIRCLE) + SVC),
    doc(loc() + SVC, NS + ' recursive="true" serviceBoundary=" reference " validateLocation="1"'),
    doc(loc() + SVC + '<path><via source="a.example"/><via source=" b "/></path>'),
    doc(
        loc() + SVC + '<ids:emergencyCallIncidentId xmlns:ids="urn:emergency:xml:ns:lostExt:Ids" '
        "callId='c1' incidentTrackingId='i1'/>"
    ),
    doc("\n  " + loc() + "\n  " + SVC + "\n", decl="<?xml version='1.0' encoding='utf-8' ?>\n"),
    doc(loc(POINT.replace("40.7831 -73.9712", " 40.7831,  -73.9712 ")) + SVC, decl=""),
    doc(
        loc('<p:Point srsName="EPSG:4326"><p:pos>1 2</p:pos></p:Point>') + SVC,
        NS + ' xmlns:p="http://www.opengis.net/gml"',
    ),
    doc(loc(CIRCLE.replace(' uom="urn:ogc:def:uom:EPSG::9001"', "")) + SVC),
    b'<l:findService xmlns:l="urn:ietf:params:xml:ns:lost1" xmlns:gml="http://www.opengis.net/gml">'
    b'<l:location id="x" profile="geodetic-2d"><gml:Point><gml:pos>1 2</gml:pos></gml:Point>'
    b"</l:location><l:service >urn:service:sos.police</l:service ></l:findService >\n",
]

# Documents it must leave to the full parser (which answers or raises).
DEFERRED = [
    BILLION_LAUGHS,
    XXE,
    EXTERNAL_DTD,
    doc(loc() + SVC + "<!-- c -->"),
    doc(loc() + "<service>urn:service:sos&amp;</service>"),
    doc(loc() + "<service><![CDATA[urn:service:sos]]></service>"),
    doc(loc() + SVC, NS + ' recursive="true" recursive="false"'),
    doc(loc() + SVC, NS + ' xmlns:gml="http://www.opengis.net/gml"'),
    doc(loc() + SVC, NS + ' asOf="2026-11-25T12:00:00Z"'),
    doc(loc(attrs='id="a\tb" profile="geodetic-2d"') + SVC),
    doc(loc(attrs='id="L1" profile="civic"') + SVC),
    doc(loc(POINT.replace("40.7831 -73.9712", "40.7831 -73.9712 10")) + SVC),
    doc(loc(POINT.replace("40.7831", "95")) + SVC),
    doc(loc(POINT.replace("40.7831", "nan")) + SVC),
    doc(SVC + loc()),
    doc(loc() + loc() + SVC),
    doc(loc() + SVC + SVC),
    doc(loc() + "<service>urn:service:sos</servic>"),
    doc(loc() + SVC).replace(b"<?xml", b" <?xml"),
    doc(loc() + SVC, decl='<?xml version="1.0" encoding="ISO-8859-1"?>'),
    doc(loc() + SVC, decl='<?xml version="1.0" standalone="yes"?>'),
    doc(loc() + SVC).replace(b"\n", b"\r\n") + b"\r\n",
    doc(loc() + SVC) + b"<x/>",
    doc(loc() + "<service>urn:service:s\u00f6s</service>"),
    doc(loc() + SVC).replace(b"<findService ", b"<findService\x0b"),
    doc(loc() + SVC, NS.replace("gml=", "xmlgml=")),
    doc(loc() + SVC, NS + ' xmlns:z=""'),
    doc(loc() + SVC, NS + ' xmlns:1a="http://www.opengis.net/gml"'),  # not an NCName
    doc(loc() + SVC, NS.replace("xmlns=", "xmlns:=")),
    doc(loc() + SVC, NS + ' xmlns:p=" http://www.opengis.net/gml"'),  # not a URI for libxml2
    doc(loc(POINT.replace("gml:Point", "gml:1Point")) + SVC),
    doc(loc() + SVC, NS + ' gml:id="x"'),
    doc(loc() + SVC + "text"),
    doc(loc('<gml:Point><gml:pos srsName="EPSG:4326">1 2</gml:pos></gml:Point>') + SVC),
    doc(loc(POINT.replace("EPSG::4326", "EPSG::4979")) + SVC),
    doc(loc() + "<service>not a urn</service>"),
    doc(loc() + "<service></service>"),
    doc(loc(attrs='id="" profile="geodetic-2d"') + SVC),
    doc(loc() + SVC + "<path><via/></path>"),
    b"",
    b"   ",
]


@pytest.mark.parametrize("data", ACCEPTED)
def test_common_shapes_are_read_and_equal_the_full_parser(data: bytes) -> None:
    fast = parse_fast(data)
    assert fast is not None, data
    assert fast == parse_request(data)


@pytest.mark.parametrize("data", DEFERRED)
def test_everything_else_is_left_to_the_full_parser(data: bytes) -> None:
    assert parse_fast(data) is None
    try:
        full = parse_request(data)
    except LostProtocolError as exc:
        with pytest.raises(LostProtocolError) as ei:
            parse_request_fast(data)
        assert ei.value.kind == exc.kind
    else:
        assert parse_request_fast(data) == full


@pytest.mark.parametrize("req", REQUESTS, ids=lambda r: type(r).__name__)
def test_request_corpus(req: object) -> None:
    data = build_request(req)  # type: ignore[arg-type]
    fast = parse_fast(data)
    assert fast is None or fast == parse_request(data)
    assert parse_request_fast(data) == parse_request(data)


_ID = st.from_regex(r"[A-Za-z0-9_.:-]{1,12}", fullmatch=True)


@settings(max_examples=150, deadline=None)
@given(
    lat=st.floats(-90, 90),
    lon=st.floats(-180, 180),
    radius=st.none() | st.floats(0.1, 100_000),
    loc_id=_ID,
    service=st.sampled_from(["urn:service:sos", "urn:service:sos.fire", "urn:nena:service:x"]),
    recursive=st.booleans(),
    boundary=st.sampled_from([None, "value", "reference"]),
    validate=st.booleans(),
    path=st.lists(_ID, max_size=3).map(tuple),
    call_id=st.none() | _ID,
)
def test_generated_requests_take_the_fast_path_and_agree(
    lat: float,
    lon: float,
    radius: float | None,
    loc_id: str,
    service: str,
    recursive: bool,
    boundary: str | None,
    validate: bool,
    path: tuple[str, ...],
    call_id: str | None,
) -> None:
    shape = Point(lat, lon) if radius is None else Circle(Point(lat, lon), radius)
    req = FindServiceRequest(
        locations=(LostLocation(loc_id, "geodetic-2d", shape),),
        service=service,
        recursive=recursive,
        service_boundary=boundary,
        validate_location=validate,
        path=path,
        call_id=call_id,
    )
    data = build_request(req)
    assert parse_fast(data) == req == parse_request(data)


@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_mutations_never_disagree(data: st.DataObject) -> None:
    """Any mutation the fast path still reads, the full parser reads to the same value."""
    raw = bytearray(data.draw(st.sampled_from(ACCEPTED)))
    parse_fast(bytes(raw))  # its template is the one tried first: mutations meet it
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "cut", "dup", "insert"]))
        i = data.draw(st.integers(0, max(0, len(raw) - 1)))
        if op == "flip" and raw:
            raw[i] = data.draw(st.sampled_from(b" \t\n\r<>/=\"':&!?ax019.-,\x00\xc3"))
        elif op == "cut":
            del raw[i : data.draw(st.integers(i, min(len(raw), i + 20)))]
        elif op == "dup":
            raw[i:i] = raw[i : i + data.draw(st.integers(1, 30))]
        else:
            raw[i:i] = data.draw(
                st.sampled_from([b"<", b"/>", b"&lt;", b'"', b" x='1'", b"<!--c-->", b"1e999"])
            )
    mutated = bytes(raw)
    fast = parse_fast(mutated)
    if fast is not None:
        assert parse_request(mutated) == fast


IDS_DOC = ACCEPTED[4]
CIRCLE_DOC = ACCEPTED[1]
# What may come where a read document had its coordinates, radius or i3 ids: the markup
# around them is the template's (`fast_request._Template`), these texts are not.
HOSTILE_TEXTS = [
    "1 2 3", "95 0", "nan 0", "inf 1", "1e999 0", "", "1", "1,2", "  1   2  ", "1_0 2",
    "1\u00e9 2", "1 &amp; 2", "1 2]]>", "1<x/>2", "1\r2", "1\x002", "0x1 2", "+1 -2",
]  # fmt: skip
HOSTILE_IDS = [
    "callId='c1' callId='c2'", 'callId="a/>b"', "callId='x' xmlns:ids='urn:other'",
    "callId='c\tx'", "callId='&amp;'", "callId='\u00e9'", "x='1'", "callId='c1' ",
    "callId='" + "c" * 300 + "'", "callId='c1'/><x", "callId='c1' incidentTrackingId='i1'",
]  # fmt: skip


def _agree(data: bytes) -> None:
    fast = parse_fast(data)
    try:
        full = parse_request(data)
    except LostProtocolError as exc:
        assert fast is None, data
        with pytest.raises(LostProtocolError) as ei:
            parse_request_fast(data)
        assert ei.value.kind == exc.kind
    else:
        assert fast is None or fast == full, data
        assert parse_request_fast(data) == full


@pytest.mark.parametrize("text", HOSTILE_TEXTS)
def test_a_read_markup_with_other_coordinates_is_checked_as_a_whole_document(text: str) -> None:
    for base, old in ((IDS_DOC, b"40.7831 -73.9712"), (CIRCLE_DOC, b"40.7 -73.9")):
        assert parse_fast(base) is not None  # the template of `base` is tried first now
        _agree(base.replace(old, text.encode()))
    assert parse_fast(CIRCLE_DOC) is not None
    _agree(CIRCLE_DOC.replace(b">50<", f">{text.split()[0] if text.split() else ''}<".encode()))


@pytest.mark.parametrize("attrs", HOSTILE_IDS)
def test_a_read_markup_with_other_ids_is_checked_as_a_whole_document(attrs: str) -> None:
    assert parse_fast(IDS_DOC) is not None
    _agree(IDS_DOC.replace(b"callId='c1' incidentTrackingId='i1'", attrs.encode()))


def test_same_markup_other_values_take_the_template_and_agree() -> None:
    reqs = [
        FindServiceRequest(
            (LostLocation("loc1", "geodetic-2d", Point(40 + i / 100, -73 - i / 100)),),
            recursive=True,
            call_id=f"urn:emergency:uid:callid:{i}:esrp.example",
        )
        for i in range(20)
    ]
    for req in reqs:
        data = build_request(req)
        assert parse_fast(data) == req == parse_request(data)


def test_the_markup_memos_are_bounded() -> None:
    for i in range(300):  # a client varying its markup: each a new form and template
        data = build_request(
            FindServiceRequest((LostLocation(f"l{i}", "geodetic-2d", Point(1, 2)),))
        )
        assert parse_fast(data) is not None
    assert len(fast_request._FORMS) <= fast_request._MAX_FORMS
    assert len(fast_request._TEMPLATES) <= fast_request._MAX_TEMPLATES
