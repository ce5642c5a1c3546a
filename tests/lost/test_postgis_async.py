"""The PostGIS store's awaited lookups (what the LoST server uses): many requests share a
small pool without blocking the loop, and a connection the database dropped costs one
request an `internalError`, not the server its store."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest
from lost_data import BOROUGH_POINTS

from ng911.location.geodetic import Point
from ng911.lost.engine import EngineConfig
from ng911.lost.protocol import (
    FindServiceRequest,
    FindServiceResponse,
    LostErrorResponse,
    LostLocation,
    build_request,
    parse_response,
)
from ng911.lost.server import LostServer, ServerConfig

SOS = "urn:service:sos"


@pytest.fixture
def small_pool_store(pg_cluster: Any) -> Any:
    from ng911.lost.postgis import PostgisStore

    store = PostgisStore.from_geojson(pg_cluster.dsn, prefix="lost_async")
    store.pool_size = 2
    yield store
    store.close()


async def test_concurrent_lookups_share_the_pool(small_pool_store: Any) -> None:
    store = small_pool_store
    expected = {b: store.lookup(Point(*p), SOS).area.key for b, p in BOROUGH_POINTS.items()}
    names = list(BOROUGH_POINTS) * 8
    hits = await asyncio.gather(
        *(store.lookup_async(Point(*BOROUGH_POINTS[b]), SOS) for b in names)
    )
    assert [h.area.key for h in hits] == [expected[b] for b in names]
    assert store.pool.count <= 2 and not store.pool.waiters
    await store.close_async()


async def test_a_dropped_connection_costs_one_request(
    small_pool_store: Any, pg_cluster: Any
) -> None:
    store = small_pool_store
    server = LostServer(store, ServerConfig(engine=EngineConfig(source="ecrf.test")))
    lat, lon = BOROUGH_POINTS["queens"]
    body = build_request(
        FindServiceRequest(locations=(LostLocation("L1", "geodetic-2d", Point(lat, lon)),))
    )
    assert isinstance(parse_response(await server.answer(body)), FindServiceResponse)
    pids = [c.info.backend_pid for c in store.pool.free]
    assert pids
    with psycopg.connect(pg_cluster.dsn, autocommit=True) as admin:
        for pid in pids:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    await asyncio.sleep(0.3)  # the backend's exit
    answers = [parse_response(await server.answer(body)) for _ in range(3)]
    errors = [a for a in answers if isinstance(a, LostErrorResponse)]
    assert len(errors) == 1 and all(e.kind == "internalError" for e in errors)
    assert isinstance(answers[-1], FindServiceResponse)
    await server.cleanup()
