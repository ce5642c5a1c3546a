"""The server's hot path for a point findService (`read_point`, `LostEngine.answer_point`,
`EmbeddedStore.point_area`) answers byte for byte what the full way answers (`parse_request`,
`LostEngine.handle`, `build_response`), and leaves everything else to it."""

from __future__ import annotations

import random

import pytest
from test_fast_request import ACCEPTED, DEFERRED, NS, SVC, doc, loc

from ng911.location.geodetic import Point
from ng911.lost.embedded import EmbeddedStore
from ng911.lost.engine import EngineConfig, LostEngine, NextServer
from ng911.lost.fast_request import parse_fast, read_point
from ng911.lost.protocol import (
    FindServiceRequest,
    LostLocation,
    build_request,
    build_response,
    parse_request,
)
from ng911.lost.server import LostServer, ServerConfig
from ng911.lost.store import SOS_SERVICES

NOW = 1.8e9
SOURCE = "ecrf.esinet.example"


def point_doc(lat: float, lon: float, **fields: object) -> bytes:
    return build_request(
        FindServiceRequest((LostLocation("loc1", "geodetic-2d", Point(lat, lon)),), **fields)  # type: ignore[arg-type]
    )


def full_answer(engine: LostEngine, data: bytes) -> bytes:
    resp = engine.handle(parse_request(data), NOW)
    assert not hasattr(resp, "url"), "a Forward is not an answer"
    return build_response(resp)  # type: ignore[arg-type]


def fast_answer(engine: LostEngine, data: bytes) -> bytes | None:
    return engine.answer_request(data, NOW)


def points(store: EmbeddedStore, n: int, seed: int = 5222) -> list[tuple[float, float]]:
    """Random points over and around the five boroughs, every 50th boundary vertex (on a
    line), and points a hair off those vertices."""
    rng = random.Random(seed)
    out = [(rng.uniform(40.40, 41.00), rng.uniform(-74.35, -73.60)) for _ in range(n)]
    for g in store._geoms:
        for part in getattr(g, "geoms", [g]):
            for x, y in list(part.exterior.coords)[::50]:
                out.append((float(y), float(x)))
                out.append((float(y) + 1e-9, float(x) - 1e-9))
    return out


def test_point_area_is_the_lookups_area() -> None:
    store = EmbeddedStore.from_geojson()
    for lat, lon in points(store, 3000):
        for service in (SOS_SERVICES[0], SOS_SERVICES[-1], "urn:service:nowhere"):
            hit = store.lookup(Point(lat, lon), service)
            assert store.point_area(lon, lat, service) == (hit.area if hit else None), (lat, lon)


@pytest.mark.parametrize(
    ("fields", "hot"),
    [
        ({}, True),
        ({"recursive": True}, True),
        ({"service": "urn:service:sos.police"}, True),
        ({"service": "urn:service:sos.police.k9"}, False),  # a substitution: the full way
        ({"service": "urn:service:counselling"}, False),  # not served: the full way
        ({"path": ("a.example", "b.example")}, True),
        ({"path": ("a.example", SOURCE)}, False),  # a loop: the full way
        ({"validate_location": True}, False),  # the caller leaves it to the full way
        ({"service_boundary": "reference"}, True),
        ({"service_boundary": "value"}, False),
        ({"call_id": "c1", "incident_id": "i1"}, True),
        ({"call_id": "c" * 300}, False),  # too long: the full way (which refuses it)
    ],
)
def test_answers_equal_the_full_way(fields: dict[str, object], hot: bool) -> None:
    """Same bytes for every point where the hot path answers; where it does not (outside
    every area, a loop, a substitution...), the full way answers, with or without a default
    mapping or a next server."""
    store = EmbeddedStore.from_geojson()
    default = store.area("nyc-boro-1")
    configs = [
        EngineConfig(source=SOURCE),
        EngineConfig(source=SOURCE, default_area=default),
        EngineConfig(source=SOURCE, next_server=NextServer("http://next.example/lost")),
    ]
    answered = 0
    for config in configs:
        engine = LostEngine(store, config)
        for lat, lon in points(store, 400):
            data = point_doc(lat, lon, **fields)
            fast = fast_answer(engine, data)
            if fast is None:
                continue
            answered += 1
            assert fast == full_answer(engine, data), (lat, lon, fields)
            assert fast_answer(engine, data) is fast  # built once per markup, area, second
    if hot:
        assert answered > 300  # most points lie inside an area
    else:
        assert answered == 0


def test_the_answer_follows_the_second_and_the_area() -> None:
    store = EmbeddedStore.from_geojson()
    engine = LostEngine(store, EngineConfig(source=SOURCE))
    manhattan, brooklyn = point_doc(40.7831, -73.9712), point_doc(40.6501, -73.9496)
    for data in (manhattan, brooklyn, manhattan):
        for now in (NOW, NOW + 1, NOW + 3600):
            point = read_point(data)
            assert point is not None
            form, lat, lon = point
            got = engine.answer_point(form, form.service, form.path, form.loc_id, lat, lon, now)
            resp = engine.handle(parse_request(data), now)
            assert got == build_response(resp)  # type: ignore[arg-type]


def test_read_point_agrees_with_parse_fast() -> None:
    """Wherever `read_point` reads a point, `parse_fast` reads the same one; a circle, a
    3D point, a coordinate out of range and the deferred documents give None."""
    for data in ACCEPTED + DEFERRED:
        got = read_point(data)
        req = parse_fast(data)
        if got is None:
            continue
        assert req is not None
        form, lat, lon = got
        value = req.locations[0].value
        assert value == Point(lat, lon)
        assert (form.service, form.path, form.loc_id) == (
            req.service,
            req.path,
            req.locations[0].id,
        )
    odd = [
        doc(loc("<gml:Point><gml:pos>91 2</gml:pos></gml:Point>") + SVC, NS),
        doc(loc("<gml:Point><gml:pos>1 2 3</gml:pos></gml:Point>") + SVC, NS),
        doc(loc("<gml:Point><gml:pos>1</gml:pos></gml:Point>") + SVC, NS),
        doc(loc("<gml:Point><gml:pos>1 inf</gml:pos></gml:Point>") + SVC, NS),
        doc(loc("<gml:Point><gml:pos>1 nan</gml:pos></gml:Point>") + SVC, NS),
    ]
    for data in odd:
        assert read_point(data) is None


async def test_the_server_answers_as_the_full_way() -> None:
    """`LostServer.decide` (hot path first) gives the full way's bytes; expires aside, which
    follow the clock."""
    import re

    store = EmbeddedStore.from_geojson()
    server = LostServer(store, ServerConfig(engine=EngineConfig(source=SOURCE)))
    stamp = re.compile(rb'expires="[^"]*"')
    for lat, lon in points(store, 200):
        data = point_doc(lat, lon)
        got = server.decide(data)
        assert isinstance(got, bytes)
        assert stamp.sub(b"", got) == stamp.sub(b"", full_answer(server.engine, data))


@pytest.mark.parametrize(
    "text",
    [
        b"40.7\t-73.9",
        b"\n40.7 -73.9\n",
        b"40.7\r-73.9",
        b"40.7\x0c-73.9",
        "40.7\u00a0-73.9".encode(),
        b"40.7 -73.9]]>",
        b"4_0.7 -73.9",
        b"nan 1",
        b"40.7&#32;-73.9",
        b"40.7,-73.9",
        b"1e400 2",
        b"+40.7 -7.39e1",
        b"40.7 -73.9</gml:pos><gml:pos>1 2",
    ],
)
def test_odd_coordinate_texts_on_a_template(text: bytes) -> None:
    """On a template (the document read before differs only in its coordinates), whatever
    `read_point` reads is what the full parser reads; the rest it leaves to it."""
    base = point_doc(40.7, -73.9)
    assert read_point(base) is not None  # the template of `base` is tried first now
    data = base.replace(b"40.7 -73.9", text)
    got = read_point(data)
    fast = parse_fast(data)
    if got is None:
        return
    assert fast is not None
    assert (
        Point(got[1], got[2]) == fast.locations[0].value == parse_request(data).locations[0].value
    )  # type: ignore[union-attr]
