"""Logging Service fixtures: a test PKI, both stores, a running Logging Service."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from ng911.i3log.jws import Signer, Verifier
from ng911.i3log.server import LoggingServer, LoggingServerConfig, serve_logging
from ng911.i3log.store import PostgresStore, SqliteStore
from ng911.net.http1 import RunningServer
from ng911.pki.testpki import TestPki, build_test_pki

_TABLES = itertools.count()


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    return build_test_pki(tmp_path_factory.mktemp("i3log-pki"))


@pytest.fixture(scope="session")
def rsa_pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    return build_test_pki(tmp_path_factory.mktemp("i3log-rsa"), key_type="rsa", cas=("esinet",))


@pytest.fixture
def signer(pki: TestPki) -> Signer:
    c = pki.cert("esrp")
    return Signer.from_files(c.chain_path, c.key_path)


@pytest.fixture
def verifier(pki: TestPki) -> Verifier:
    return Verifier.from_files(pki.ca_files())


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    """Each test that takes it runs against both stores (PostgreSQL skipped with the reason
    when it is not installed: tests/conftest.py `pg_server`)."""
    if request.param == "sqlite":
        s: Any = await SqliteStore(str(tmp_path / "log.sqlite")).open()
    else:
        pg = request.getfixturevalue("pg_server")
        s = await PostgresStore(pg.dsn, table=f"log_events_{next(_TABLES)}").open()
    yield s
    await s.close()


@pytest.fixture
async def logger(
    store: Any, verifier: Verifier
) -> AsyncIterator[tuple[LoggingServer, RunningServer]]:
    server = LoggingServer(store, verifier, LoggingServerConfig(max_body=64 * 1024, max_page=50))
    running = await serve_logging(server)
    yield server, running
    await running.close()
