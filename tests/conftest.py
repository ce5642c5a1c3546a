"""Fixtures shared by every test directory: a throwaway PostgreSQL server.

`pg_server` (session scope) is created by initdb in a temporary directory, listens only on a
Unix socket in that directory, and is stopped at session end; tests needing PostgreSQL are
skipped with the reason when it is not installed (`make test` installs it). The LoST tests
add PostGIS to it (`tests/lost/conftest.py: pg_cluster`), the Logging Service tests use it
plain.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

PG_BIN = Path("/usr/lib/postgresql/15/bin")


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
def pg_server() -> Iterator[PgCluster]:
    if not (PG_BIN / "initdb").exists():
        pytest.skip(f"PostgreSQL 15 not installed ({PG_BIN}/initdb missing)")
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
        try:
            import psycopg
        except ImportError:
            pytest.skip("psycopg (the postgis extra) is not installed")

        deadline = time.monotonic() + 20
        while True:
            try:
                with psycopg.connect(cluster.dsn, autocommit=True) as conn:
                    conn.execute("SELECT 1")
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


if os.environ.get("NG911_TEST_LOOP") == "uvloop":
    # `NG911_TEST_LOOP=uvloop` runs every async test on uvloop (what `ng911 run` picks by
    # default, `ng911.node.loop`): the TLS tests show that mutual TLS, SNI, resumption, the
    # key log and peer checks behave the same on it
    import uvloop

    def pytest_asyncio_loop_factories(config: Any, item: Any) -> dict[str, Any]:
        return {"uvloop": uvloop.new_event_loop}
