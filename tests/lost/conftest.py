"""LoST test fixtures: both boundary stores, PostGIS on the throwaway PostgreSQL, servers.

The `store` fixture is parametrised embedded|postgis, so every test that takes it runs
against both stores (the PostGIS one is skipped with the reason when PostgreSQL or PostGIS is
not installed; `make test` installs them). The cluster is `pg_server` of tests/conftest.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from ng911.lost.embedded import EmbeddedStore
from ng911.lost.engine import EngineConfig
from ng911.lost.server import LostServer, RunningServer, ServerConfig, serve
from ng911.lost.store import BoundaryStore

POSTGIS_CONTROL = Path("/usr/share/postgresql/15/extension/postgis.control")


@pytest.fixture(scope="session")
def pg_cluster(pg_server: Any) -> Any:
    """The session's throwaway PostgreSQL (tests/conftest.py), with PostGIS."""
    if not POSTGIS_CONTROL.exists():
        pytest.skip(f"PostGIS not installed ({POSTGIS_CONTROL} missing)")
    import psycopg

    with psycopg.connect(pg_server.dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS postgis")
    return pg_server


@pytest.fixture(scope="session")
def embedded_store() -> EmbeddedStore:
    return EmbeddedStore.from_geojson()


@pytest.fixture(scope="session")
def postgis_store(pg_cluster: Any) -> Iterator[Any]:
    from ng911.lost.postgis import PostgisStore

    store = PostgisStore.from_geojson(pg_cluster.dsn, prefix="lost_test")
    yield store
    store.close()


@pytest.fixture(params=["embedded", "postgis"])
def store(request: pytest.FixtureRequest) -> BoundaryStore:
    if request.param == "embedded":
        s: BoundaryStore = request.getfixturevalue("embedded_store")
    else:
        s = request.getfixturevalue("postgis_store")
    return s


@pytest.fixture
async def lost_server(store: BoundaryStore) -> AsyncIterator[RunningServer]:
    server = LostServer(store, ServerConfig(engine=EngineConfig(source="ecrf.test")))
    running = await serve(server.app, "127.0.0.1", 0)
    yield running
    await running.close()
