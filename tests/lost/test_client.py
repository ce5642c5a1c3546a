"""The asyncio LoST client against a real server: answers, cache by expires, typed errors."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from lost_data import BOROUGH_POINTS, OUTSIDE_POINTS, psap_uri

from ng911.location.civic import CivicAddress
from ng911.location.geodetic import Circle, Point
from ng911.lost.client import PARSED_MAX, PARSED_MAX_BYTES, LostClient
from ng911.lost.embedded import EmbeddedStore
from ng911.lost.engine import EngineConfig, NextServer
from ng911.lost.errors import (
    LostClientError,
    LostNotFound,
    LostProtocolError,
    LostResponseError,
)
from ng911.lost.events import LostQueryEvent
from ng911.lost.protocol import FindServiceResponse, LostErrorResponse, Mapping, build_response
from ng911.lost.server import LostServer, RunningServer, ServerConfig, serve
from ng911.lost.store import BoundaryStore


async def start(store: BoundaryStore, **engine_kw: object) -> RunningServer:
    cfg = ServerConfig(engine=EngineConfig(source="ecrf.test", **engine_kw))  # type: ignore[arg-type]
    return await serve(LostServer(store, cfg).app)


@pytest.fixture
async def server(store: BoundaryStore) -> AsyncIterator[RunningServer]:
    running = await start(store)
    yield running
    await running.close()


@pytest.mark.parametrize("borough", list(BOROUGH_POINTS))
async def test_find_service_each_borough(server: RunningServer, borough: str) -> None:
    async with LostClient(server.url) as client:
        lat, lon = BOROUGH_POINTS[borough]
        r = await client.find_service(
            Point(lat, lon), call_id="urn:emergency:uid:callid:abcdefghij:esrp.test"
        )
        assert r.uris == (psap_uri(borough),) and r.sip_uri == psap_uri(borough)
        assert not r.cached and r.duration > 0
        r2 = await client.find_service(Circle(Point(lat, lon), 50.0))
        assert r2.uris == (psap_uri(borough),)


async def test_civic(server: RunningServer) -> None:
    async with LostClient(server.url) as client:
        r = await client.find_service(CivicAddress.of(country="US", A1="NY", A2="Richmond"))
        assert r.uris == (psap_uri("staten-island"),)


async def test_cache_by_expires(embedded_store: EmbeddedStore) -> None:
    running = await start(embedded_store, ttl=3600)
    try:
        async with LostClient(running.url) as client:
            p = Point(*BOROUGH_POINTS["queens"])
            first = await client.find_service(p)
            second = await client.find_service(p)
            assert not first.cached and second.cached and second.duration == 0.0
            assert client.queries == 1
            # Another service is another question.
            await client.find_service(p, "urn:service:sos.police")
            assert client.queries == 2
            await client.find_service(p, use_cache=False)
            assert client.queries == 3
    finally:
        await running.close()


async def test_expired_answers_are_not_cached(embedded_store: EmbeddedStore) -> None:
    running = await start(embedded_store, ttl=0)  # expires == now: never cacheable
    try:
        async with LostClient(running.url) as client:
            p = Point(*BOROUGH_POINTS["queens"])
            await client.find_service(p)
            r = await client.find_service(p)
            assert not r.cached and client.queries == 2
    finally:
        await running.close()


async def test_boundary_cache_answers_nearby_points(server: RunningServer) -> None:
    async with LostClient(server.url, boundary="value") as client:
        r = await client.find_service(Point(*BOROUGH_POINTS["manhattan"]))
        assert r.mapping.boundary is not None
        # Another point in Manhattan: answered from the cached boundary, no query.
        near = await client.find_service(Point(40.7580, -73.9855))  # Times Square
        assert near.cached and near.uris == (psap_uri("manhattan"),)
        assert client.queries == 1
        # A point in Brooklyn is not inside it: asked.
        far = await client.find_service(Point(*BOROUGH_POINTS["brooklyn"]))
        assert not far.cached and far.uris == (psap_uri("brooklyn"),)
        assert client.queries == 2


async def test_not_found_and_other_errors(server: RunningServer) -> None:
    async with LostClient(server.url) as client:
        with pytest.raises(LostNotFound) as ei:
            await client.find_service(Point(*OUTSIDE_POINTS["atlantic"]))
        assert ei.value.kind == "notFound" and ei.value.source == "ecrf.test"
        with pytest.raises(LostResponseError) as e2:
            await client.find_service(Point(*BOROUGH_POINTS["queens"]), "urn:service:counseling")
        assert e2.value.kind == "serviceNotImplemented"


async def test_unreachable_timeout_http() -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    async with LostClient(f"http://127.0.0.1:{port}/lost", timeout=1.0) as client:
        with pytest.raises(LostClientError) as ei:
            await client.find_service(Point(40.7, -73.9))
        assert ei.value.kind == "unreachable"
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)
    try:
        async with LostClient(f"http://127.0.0.1:{silent.getsockname()[1]}/lost", timeout=0.3) as c:
            with pytest.raises(LostClientError) as ei:
                await c.find_service(Point(40.7, -73.9))
            assert ei.value.kind == "timeout"
    finally:
        silent.close()


async def test_http_error_status(server: RunningServer) -> None:
    async with LostClient(server.url.replace("/lost", "/nowhere")) as client:
        with pytest.raises(LostClientError) as ei:
            await client.find_service(Point(40.7, -73.9))
        assert ei.value.kind == "http" and ei.value.status == 404


async def test_client_follows_redirect(store: BoundaryStore, tmp_path: Path) -> None:
    p = tmp_path / "nj.geojson"
    p.write_text(
        '{"type": "FeatureCollection", "features": [{"type": "Feature", "properties":'
        ' {"name": "Newark", "uri": "sip:psap-newark@nj.example"}, "geometry": {"type":'
        ' "Polygon", "coordinates": [[[-74.25, 40.68], [-74.10, 40.68], [-74.10, 40.80],'
        " [-74.25, 40.80], [-74.25, 40.68]]]}}]}"
    )
    b = await serve(LostServer(EmbeddedStore.from_geojson(p)).app)
    a = await start(store, next_server=NextServer(b.url))
    try:
        async with LostClient(a.url, recursive=False) as client:
            r = await client.find_service(Point(*OUTSIDE_POINTS["newark"]))
            assert r.uris == ("sip:psap-newark@nj.example",)
            assert client.queries == 2  # A said "ask B", B answered
    finally:
        await a.close()
        await b.close()


async def test_observers_get_one_event_per_find_service(embedded_store: EmbeddedStore) -> None:
    running = await start(embedded_store, ttl=3600)
    events: list[LostQueryEvent] = []

    def broken(ev: object) -> None:
        raise RuntimeError("an observer must never break a query")

    cid = "urn:emergency:uid:callid:abcdefghij:esrp.test"
    try:
        async with LostClient(
            running.url, element="esrp-1", server="ecrf", observers=[broken, events.append]
        ) as client:
            p = Point(*BOROUGH_POINTS["queens"])
            await client.find_service(p, call_id=cid)
            await client.find_service(p)  # the client's default: cached
            await client.find_service(p, use_cache=False)
            with pytest.raises(LostNotFound):
                await client.find_service(Point(*OUTSIDE_POINTS["atlantic"]))
        assert [e.cached for e in events] == [False, True, False, False]
        assert [e.ok for e in events] == [True, True, True, False]
        first = events[0]
        assert first.call_id == cid and events[1].call_id is None
        assert (first.element, first.server, first.transport) == ("esrp-1", "ecrf", "http")
        assert first.result == psap_uri("queens") and first.duration > 0
        assert events[3].result == "notFound"
        # each event carries its own exchange (the query's XML and the answer's), bounded
        assert b"<findService" in first.request and b"<findServiceResponse" in first.response
        assert (first.request_bytes, first.response_bytes) == (
            len(first.request),
            len(first.response),
        )
        assert events[1].request == b"" and events[1].request_bytes == 0  # cached: none
        assert b"notFound" in events[3].response
        async with LostClient(running.url, use_cache=False) as client:
            await client.find_service(p)
            r = await client.find_service(p)
            assert not r.cached and client.queries == 2 and client.observers == []
    finally:
        await running.close()


def _answer(expires: str, uri: str = "sip:psap@example.net", name: str = "PSAP") -> bytes:
    mapping = Mapping(
        uris=(uri,), service="urn:service:sos", expires=expires,
        last_updated="2026-12-06T00:00:00Z", source="ecrf.test", source_id="b1",
        display_name=name,
    )  # fmt: skip
    return build_response(FindServiceResponse((mapping,), ("ecrf.test",), "loc1"))


async def test_repeated_answers_are_parsed_once_and_every_query_still_asked(
    server: RunningServer,
) -> None:
    """An ECRF's answers repeat byte for byte (one per PSAP and second): the client takes
    the parsed value of the same bytes, yet sends every query and uses what it got."""
    async with LostClient(server.url, use_cache=False) as client:
        p = Point(*BOROUGH_POINTS["queens"])
        got = [
            await client.find_service(p, call_id=f"urn:emergency:uid:callid:{n}:t")
            for n in range(6)
        ]
        assert client.queries == 6 and all(r.uris == (psap_uri("queens"),) for r in got)
        assert client.parsed_reused >= 4  # 6 answers, at most one `expires` rollover
        other = await client.find_service(Point(*BOROUGH_POINTS["brooklyn"]))
        assert other.uris == (psap_uri("brooklyn"),) and client.queries == 7


def test_the_parsed_answers_kept_are_bounded_and_only_small_find_service_ones() -> None:
    client = LostClient("http://127.0.0.1:9/")
    first = _answer("2026-12-06T00:00:00Z")
    a = client._parse(first)
    assert isinstance(a, FindServiceResponse) and client._parse(first) is a
    assert client.parsed_reused == 1
    # a byte apart is another answer: parsed, its own value
    b = client._parse(_answer("2026-12-06T00:00:01Z", uri="sip:other@example.net"))
    assert isinstance(b, FindServiceResponse) and b.mappings[0].uris == ("sip:other@example.net",)
    for n in range(PARSED_MAX + 10):
        client._parse(_answer(f"2026-12-07T00:{n // 60:02d}:{n % 60:02d}Z"))
    assert len(client._parsed) == PARSED_MAX and first not in client._parsed
    # too large to keep (a boundary by value is ~100 KB): parsed each time
    big = _answer("2026-12-06T00:00:00Z", name="P" * PARSED_MAX_BYTES)
    assert client._parse(big) is not client._parse(big)
    # errors are parsed each time; nonsense raises and is not kept
    err = build_response(LostErrorResponse("notFound", "ecrf.test"))
    assert isinstance(client._parse(err), LostErrorResponse) and err not in client._parsed
    with pytest.raises(LostProtocolError):
        client._parse(b"<findServiceResponse xmlns='urn:ietf:params:xml:ns:lost1'/>")
    assert all(len(k) <= PARSED_MAX_BYTES for k in client._parsed)
