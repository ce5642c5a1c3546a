"""LoST test fixtures: both boundary stores, a throwaway PostgreSQL+PostGIS cluster, servers.

The `store` fixture is parametrised embedded|postgis, so every test that takes it runs
against both stores (the PostGIS one is skipped with the reason when PostgreSQL or PostGIS is
not installed; `make test` installs them). The cluster is created by initdb in a temporary
directory, listens only on a Unix socket in that directory, and is stopped at session end.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ng911.lost.embedded import EmbeddedStore
from ng911.lost.engine import EngineConfig
from ng911.lost.server import LostServer, RunningServer, ServerConfig, serve
from ng911.lost.store import BoundaryStore

PG_BIN = Path("/usr/lib/postgresql/15/bin")
POSTGIS_CONTROL = Path("/usr/share/postgresql/15/extension/postgis.control")


@dataclass
class PgCluster:
    datadir: Path
    sockdir: Path
    port: int
    user: str

    @property
    def dsn(self) -> str:
        return f"host={self.sockdir} port={self.port} user={self.user} dbname=postgres"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    if not (PG_BIN / "initdb").exists():
        pytest.skip(f"PostgreSQL 15 not installed ({PG_BIN}/initdb missing)")
    if not POSTGIS_CONTROL.exists():
        pytest.skip(f"PostGIS not installed ({POSTGIS_CONTROL} missing)")
    root = Path(tempfile.mkdtemp(prefix="ng911-pg-"))
    datadir, sockdir = root / "data", root / "sock"
    sockdir.mkdir()
    as_user: list[str] = []
    user = os.environ.get("USER") or "postgres"
    if os.geteuid() == 0:  # initdb refuses root: run the cluster as postgres
        import pwd

        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no postgres user to run PostgreSQL as")
        user = "postgres"
        shutil.chown(root, "postgres")
        shutil.chown(sockdir, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    else:
        import getpass

        user = getpass.getuser()
    port = _free_port()
    subprocess.run(
        [
            *as_user,
            str(PG_BIN / "initdb"),
            "-D",
            str(datadir),
            "-A",
            "trust",
            "-U",
            user,
            "--no-sync",
            "-E",
            "UTF8",
        ],
        check=True,
        capture_output=True,
    )
    opts = f"-k {sockdir} -p {port} -c listen_addresses='' -c fsync=off"
    subprocess.run(
        [
            *as_user,
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(datadir),
            "-o",
            opts,
            "-w",
            "-t",
            "30",
            "-l",
            str(root / "log"),
            "start",
        ],
        check=True,
        capture_output=True,
    )
    cluster = PgCluster(datadir, sockdir, port, user)
    try:
        import psycopg

        deadline = time.monotonic() + 20
        while True:
            try:
                with psycopg.connect(cluster.dsn, autocommit=True) as conn:
                    conn.execute("CREATE EXTENSION IF NOT EXISTS postgis")
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield cluster
    finally:
        subprocess.run(
            [*as_user, str(PG_BIN / "pg_ctl"), "-D", str(datadir), "-m", "immediate", "-w", "stop"],
            capture_output=True,
        )
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def embedded_store() -> EmbeddedStore:
    return EmbeddedStore.from_geojson()


@pytest.fixture(scope="session")
def postgis_store(pg_cluster: PgCluster) -> Iterator[Any]:
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
