"""Issue 12 (lenient, exact intake) at the LoST server and client, over real HTTP on loopback.

What a conformance lab saw fail, one test each (each failed before the fix):
1. a Circle/Ellipse/ArcBand (or any RFC 5491 shape) in the plain GML namespace;
2. angles in grads/arc-minutes/arc-seconds/radians, lengths in feet/km/...; an unknown unit
   is a `locationInvalid` naming it;
3. CRS URN variants (the doubled-colon typo) on the server; the client side is in
   tests/resilience/test_lost_variant_boundary.py (the ESRP routes by the answer);
4. any Content-Type whose body is LoST XML (curl -d), at /lost and /LoST; not LoST -> 415;
5. `asOf` echoed in findService and listServices answers;
6. iterative answers as HTTP 3xx + Location (`ServerConfig.redirect_status`), which the client
   follows with the `<redirect>` loop's hop bound and loop check.
Fast and full request parsers agree on every variant.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from lost_data import BOROUGH_POINTS, OUTSIDE_POINTS, psap_uri
from test_server import nj_store

from ng911.location.geodetic import Point
from ng911.lost.client import LostClient
from ng911.lost.embedded import EmbeddedStore
from ng911.lost.engine import EngineConfig, NextServer
from ng911.lost.errors import LostResponseError
from ng911.lost.fast_request import parse_fast
from ng911.lost.protocol import (
    NS_LOST,
    FindServiceResponse,
    ListServicesByLocationResponse,
    ListServicesResponse,
    LostErrorResponse,
    Redirect,
    looks_like_lost,
    parse_request,
    parse_response,
)
from ng911.lost.server import LostServer, RunningServer, ServerConfig, serve

GML = "http://www.opengis.net/gml"
GS = "http://www.opengis.net/pidflo/1.0"
LAT, LON = BOROUGH_POINTS["brooklyn"]
BROOKLYN = (psap_uri("brooklyn"),)


def find(shape: str, root_attrs: str = "", extra: str = "") -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<findService xmlns="{NS_LOST}" '
        f'xmlns:gml="{GML}" xmlns:gs="{GS}"{root_attrs}>\n'
        f'  <location id="L1" profile="geodetic-2d">{shape}</location>\n'
        f"  <service>urn:service:sos</service>{extra}\n</findService>\n"
    ).encode()


def centred(kind: str, measures: str, ns: str = "gml", srs: str = "urn:ogc:def:crs:EPSG::4326"):
    return f'<{ns}:{kind} srsName="{srs}"><gml:pos>{LAT} {LON}</gml:pos>{measures}</{ns}:{kind}>'


def m(ns: str, name: str, value: str, uom: str) -> str:
    return f'<{ns}:{name} uom="urn:ogc:def:uom:EPSG::{uom}">{value}</{ns}:{name}>'


CIRCLE_GML = centred("Circle", m("gml", "radius", "50", "9001"))
ELLIPSE_GML = centred(
    "Ellipse",
    m("gml", "semiMajorAxis", "300", "9002")
    + m("gml", "semiMinorAxis", "150", "9002")
    + m("gml", "orientation", "50", "9105"),
)
ARCBAND_GML = centred(
    "ArcBand",
    m("gml", "innerRadius", "0.1", "9036")
    + m("gml", "outerRadius", "0.2", "9036")
    + m("gml", "startAngle", "2700", "9103")
    + m("gml", "openingAngle", "108000", "9104"),
)
POINT_GS = f'<gs:Point srsName="urn:ogc:def:crs:EPSG::4326"><gs:pos>{LAT} {LON}</gs:pos></gs:Point>'
POLYGON_MIXED = (
    '<gs:Polygon srsName="urn:ogc:def:crs:EPSG::4326"><gml:exterior><gs:LinearRing><gml:posList>'
    f"{LAT - 0.001} {LON - 0.001} {LAT - 0.001} {LON + 0.001} {LAT + 0.001} {LON + 0.001} "
    f"{LAT - 0.001} {LON - 0.001}</gml:posList></gs:LinearRing></gml:exterior></gs:Polygon>"
)
SHAPES = {
    "gml:Circle": CIRCLE_GML,
    "gml:Circle km": centred("Circle", m("gml", "radius", "0.05", "9036")),
    "gs:Circle feet": centred("Circle", m("gs", "radius", "150", "9002"), ns="gs"),
    "gml:Ellipse ft+grad": ELLIPSE_GML,
    "gs:Ellipse rad": centred(
        "Ellipse",
        m("gs", "semiMajorAxis", "300", "9001")
        + m("gs", "semiMinorAxis", "150", "9001")
        + m("gs", "orientation", "0.7853981633974483", "9101"),
        ns="gs",
    ),
    "gml:ArcBand km+arcmin+arcsec": ARCBAND_GML,
    "gs:Point": POINT_GS,
    "mixed Polygon": POLYGON_MIXED,
    "gml:Sphere": centred(
        "Sphere", m("gml", "radius", "20", "9001"), srs="urn:ogc:def:crs:EPSG::4979"
    ).replace(f"{LAT} {LON}<", f"{LAT} {LON} 10<"),
    "crs typo": centred(
        "Circle", m("gs", "radius", "50", "9001"), "gs", "urn:ogc:def::crs:EPSG::4326"
    ),
    "crs versioned": centred(
        "Circle", m("gs", "radius", "50", "9001"), "gs", "urn:ogc:def:crs:EPSG:6.6:4326"
    ),
    "crs short": centred("Circle", m("gs", "radius", "50", "9001"), "gs", "EPSG:4326"),
    "crs http": centred(
        "Circle",
        m("gs", "radius", "50", "9001"),
        "gs",
        "http://www.opengis.net/def/crs/EPSG/0/4326",
    ),
    "crs 4979 typo": (
        '<gml:Point srsName="urn:ogc:def::crs:EPSG::4979">'
        f"<gml:pos>{LAT} {LON} 12</gml:pos></gml:Point>"
    ),
}


@pytest.fixture
async def server(embedded_store: EmbeddedStore) -> AsyncIterator[RunningServer]:
    running = await serve(
        LostServer(embedded_store, ServerConfig(engine=EngineConfig(source="ecrf.test"))).app
    )
    yield running
    await running.close()


async def post(
    url: str, body: bytes, ctype: str | None = "application/lost+xml", **kw: object
) -> tuple[int, bytes, aiohttp.ClientResponse]:
    headers = {"Content-Type": ctype} if ctype else {}
    skip = () if ctype else ("Content-Type",)
    async with (
        aiohttp.ClientSession() as s,
        s.post(url, data=body, headers=headers, skip_auto_headers=skip, **kw) as r,
    ):
        return r.status, await r.read(), r


# ----------------------------------------------------------------- 1-3: shapes, units, CRS


@pytest.mark.parametrize("name", list(SHAPES))
async def test_shape_variants_are_mapped(server: RunningServer, name: str) -> None:
    status, raw, _ = await post(server.url, find(SHAPES[name]))
    assert status == 200
    resp = parse_response(raw)
    assert isinstance(resp, FindServiceResponse), resp
    assert resp.mappings[0].uris == BROOKLYN


@pytest.mark.parametrize("name", list(SHAPES))
def test_fast_and_full_parsers_agree_on_variants(name: str) -> None:
    data = find(SHAPES[name])
    fast = parse_fast(data)
    assert fast is None or fast == parse_request(data)
    # the common Point/Circle shapes stay on the fast path in either namespace
    if name in ("gml:Circle", "gml:Circle km", "gs:Circle feet", "gs:Point", "crs typo"):
        assert fast is not None, name


def test_gml_circle_in_feet_reads_as_metres_on_both_paths() -> None:
    data = find(centred("Circle", m("gml", "radius", "100", "9002")))
    fast, full = parse_fast(data), parse_request(data)
    assert fast == full
    shape = full.locations[0].value  # type: ignore[union-attr]
    assert shape.radius == pytest.approx(30.48)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("shape", "named"),
    [
        (centred("Circle", m("gml", "radius", "50", "9999")), "EPSG::9999"),
        (
            centred(
                "Ellipse",
                m("gs", "semiMajorAxis", "3", "9001")
                + m("gs", "semiMinorAxis", "2", "9001")
                + m("gs", "orientation", "10.3000", "9110"),
            ),
            "EPSG::9110",
        ),
        (centred("Circle", '<gs:radius uom="furlong">5</gs:radius>'), "furlong"),
    ],
)
async def test_unknown_unit_is_location_invalid_naming_it(
    server: RunningServer, shape: str, named: str
) -> None:
    data = find(shape)
    assert parse_fast(data) is None  # the full path answers (and names the unit)
    _, raw, _ = await post(server.url, data)
    resp = parse_response(raw)
    assert isinstance(resp, LostErrorResponse) and resp.kind == "locationInvalid"
    assert named in (resp.message or "")


async def test_unknown_crs_still_refused(server: RunningServer) -> None:
    _, raw, _ = await post(
        server.url, find(centred("Circle", m("gs", "radius", "5", "9001"), "gs", "EPSG:3857"))
    )
    resp = parse_response(raw)
    assert isinstance(resp, LostErrorResponse) and resp.kind == "locationInvalid"
    assert "srsName" in (resp.message or "")


# ------------------------------------------------------------------- 4: content type, paths


@pytest.mark.parametrize("path", ["/lost", "/LoST", "/lost/", "/LoST/"])
@pytest.mark.parametrize(
    "ctype",
    ["application/x-www-form-urlencoded", "text/plain", "application/json", "foo/bar; x=y"],
)
async def test_lost_xml_under_any_content_type(
    server: RunningServer, path: str, ctype: str
) -> None:
    # `curl -d @file` also strips the file's newlines
    body = find(CIRCLE_GML).replace(b"\n", b"")
    status, raw, r = await post(f"http://127.0.0.1:{server.port}{path}", body, ctype)
    assert status == 200 and r.content_type == "application/lost+xml"
    resp = parse_response(raw)
    assert isinstance(resp, FindServiceResponse) and resp.mappings[0].uris == BROOKLYN


@pytest.mark.parametrize(
    "body",
    [b"findService=1&x=2", b'{"findService": {}}', b"<html><body>hi</body></html>", b""],
)
async def test_not_lost_under_other_type_is_415_with_bad_request(
    server: RunningServer, body: bytes
) -> None:
    status, raw, r = await post(server.url, body, "application/x-www-form-urlencoded")
    assert status == 415 and r.content_type == "application/lost+xml"
    resp = parse_response(raw)
    assert isinstance(resp, LostErrorResponse) and resp.kind == "badRequest"
    assert "x-www-form-urlencoded" in (resp.message or "")


@pytest.mark.parametrize(
    "body",
    [
        b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]>'
        b'<findService xmlns="urn:ietf:params:xml:ns:lost1">&b;</findService>',
        b'<findService xmlns="urn:ietf:params:xml:ns:lost1">'
        + b"<a>" * 300
        + b"</a>" * 300
        + b"</findService>",
        b'<findService xmlns="urn:ietf:params:xml:ns:lost1"><location',
    ],
)
async def test_hostile_lost_bodies_still_refused_under_form_type(
    server: RunningServer, body: bytes
) -> None:
    assert looks_like_lost(body)
    status, raw, _ = await post(server.url, body, "application/x-www-form-urlencoded")
    assert status == 200
    resp = parse_response(raw)
    assert isinstance(resp, LostErrorResponse) and resp.kind == "badRequest"


async def test_huge_body_under_form_type_still_413(server: RunningServer) -> None:
    big = find(CIRCLE_GML).replace(
        b"</findService>", b"<x>" + b"B" * 300_000 + b"</x></findService>"
    )
    status, _, _ = await post(server.url, big, "application/x-www-form-urlencoded")
    assert status == 413


def test_sniffer() -> None:
    assert looks_like_lost(b"\xef\xbb\xbf  \r\n" + find(CIRCLE_GML))
    assert not looks_like_lost(b"x" + find(CIRCLE_GML))
    assert not looks_like_lost(b"<findService/>")  # no LoST namespace: not LoST
    assert not looks_like_lost(b"<a>" + b" " * 5000 + NS_LOST.encode())  # beyond the head


# ----------------------------------------------------------------------------- 5: asOf


AS_OF = "2026-11-25T12:00:00Z"


@pytest.mark.parametrize(
    ("attrs", "extra", "tag"),
    [
        (f' asOf="{AS_OF}"', "", None),
        ("", f"<asOf>{AS_OF}</asOf>", f"{{{NS_LOST}}}asOf"),
        ("", f'<pc:asOf xmlns:pc="urn:example:pc">{AS_OF}</pc:asOf>', "{urn:example:pc}asOf"),
    ],
)
async def test_as_of_echoed(server: RunningServer, attrs: str, extra: str, tag: str | None) -> None:
    _, raw, _ = await post(server.url, find(CIRCLE_GML, attrs, extra))
    resp = parse_response(raw)
    assert isinstance(resp, FindServiceResponse)
    assert (resp.as_of, resp.as_of_tag) == (AS_OF, tag)
    assert AS_OF.encode() in raw
    ls = (
        f'<listServices xmlns="{NS_LOST}"{attrs}><service>urn:service:sos</service>{extra}'
        "</listServices>"
    ).encode()
    _, raw, _ = await post(server.url, ls)
    lresp = parse_response(raw)
    assert isinstance(lresp, ListServicesResponse) and (lresp.as_of, lresp.as_of_tag) == (
        AS_OF,
        tag,
    )
    lbl = (
        f'<listServicesByLocation xmlns="{NS_LOST}" xmlns:gml="{GML}"{attrs}>'
        f'<location id="x" profile="geodetic-2d">{CIRCLE_GML}</location>{extra}'
        "</listServicesByLocation>"
    ).encode()
    _, raw, _ = await post(server.url, lbl)
    bresp = parse_response(raw)
    assert isinstance(bresp, ListServicesByLocationResponse)
    assert (bresp.as_of, bresp.as_of_tag) == (AS_OF, tag)


async def test_no_as_of_no_echo(server: RunningServer) -> None:
    _, raw, _ = await post(server.url, find(CIRCLE_GML))
    assert b"asOf" not in raw


# ------------------------------------------------------------------- 6: iterative answers


NEWARK = (
    f'<gml:Point srsName="urn:ogc:def:crs:EPSG::4326"><gml:pos>{OUTSIDE_POINTS["newark"][0]} '
    f"{OUTSIDE_POINTS['newark'][1]}</gml:pos></gml:Point>"
)


async def _a_and_b(
    embedded_store: EmbeddedStore, tmp_path: Path, status: int | None
) -> tuple[RunningServer, RunningServer, LostServer]:
    b = await serve(
        LostServer(nj_store(tmp_path), ServerConfig(engine=EngineConfig(source="b.test"))).app
    )
    a_server = LostServer(
        embedded_store,
        ServerConfig(
            engine=EngineConfig(source="a.test", next_server=NextServer(b.url)),
            redirect_status=status,
        ),
    )
    return await serve(a_server.app), b, a_server


async def test_iterative_default_is_lost_redirect(
    embedded_store: EmbeddedStore, tmp_path: Path
) -> None:
    a, b, _ = await _a_and_b(embedded_store, tmp_path, None)
    try:
        status, raw, _ = await post(a.url, find(NEWARK), allow_redirects=False)
        assert status == 200
        red = parse_response(raw)
        assert isinstance(red, Redirect) and red.target == b.url
    finally:
        await a.close()
        await b.close()


@pytest.mark.parametrize("status", [307, 308, 302])
async def test_iterative_as_http_redirect_followed_by_client(
    embedded_store: EmbeddedStore, tmp_path: Path, status: int
) -> None:
    a, b, _ = await _a_and_b(embedded_store, tmp_path, status)
    try:
        got, raw, r = await post(a.url, find(NEWARK), allow_redirects=False)
        assert got == status and r.headers["Location"] == b.url
        assert isinstance(parse_response(raw), Redirect)  # the LoST redirect in the body too
        async with LostClient(a.url, recursive=False) as client:
            res = await client.find_service(Point(*OUTSIDE_POINTS["newark"]))
            assert res.uris == ("sip:psap-newark@nj.example",) and client.queries == 2
            # a covered location is answered by A itself, no redirect
            res = await client.find_service(Point(LAT, LON))
            assert res.uris == BROOKLYN and client.queries == 3
    finally:
        await a.close()
        await b.close()


async def test_http_redirect_loop_and_hop_bound(
    embedded_store: EmbeddedStore, tmp_path: Path
) -> None:
    # A and B each redirect the Atlantic (which neither covers) to the other: a loop.
    a, b, _ = await _a_and_b(embedded_store, tmp_path, 307)
    b_app = LostServer(
        nj_store(tmp_path),
        ServerConfig(
            engine=EngineConfig(source="b2.test", next_server=NextServer(a.url)),
            redirect_status=307,
        ),
    )
    b2 = await serve(b_app.app)
    a_loop = await serve(
        LostServer(
            embedded_store,
            ServerConfig(
                engine=EngineConfig(source="a2.test", next_server=NextServer(b2.url)),
                redirect_status=307,
            ),
        ).app
    )
    b_app.engine.config = EngineConfig(source="b2.test", next_server=NextServer(a_loop.url))
    try:
        async with LostClient(a_loop.url, recursive=False) as client:
            with pytest.raises(LostResponseError) as ei:
                await client.find_service(Point(*OUTSIDE_POINTS["atlantic"]))
            assert ei.value.kind == "redirect" and "cannot follow" in ei.value.message
            assert client.queries == 2  # A, B; B's Location (A) was already asked
        # a chain longer than max_redirects stops at the bound
        async with LostClient(a.url, recursive=False, max_redirects=0) as client:
            with pytest.raises(LostResponseError) as ei:
                await client.find_service(Point(*OUTSIDE_POINTS["newark"]))
            assert ei.value.kind == "redirect" and "too many" in ei.value.message
            assert client.queries == 1
    finally:
        for s in (a, b, b2, a_loop):
            await s.close()


def test_redirect_status_is_checked() -> None:
    with pytest.raises(ValueError, match="redirect_status 200"):
        ServerConfig(redirect_status=200)
