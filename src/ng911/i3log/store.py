"""Where the Logging Service keeps LogEvents: SQLite (default) or PostgreSQL (psycopg 3).

Each row is the JWS exactly as received (i3 §4.12: a retrieval returns the signed LogEvent,
so anyone can re-verify it) plus the members queries need, as indexed columns: id (the
logEventId we assign, a UUID named by the JWS text, so that a repeated POST is stored
once: `event_id_for`), logEventType, timestamp (text as sent, and epoch seconds for
range queries), elementId, agencyId, callId, incidentId, callIdSip.

One interface (`LogStore`), two implementations with the same SQL (placeholders differ):

- `SqliteStore(path)`: stdlib sqlite3 on ONE worker thread of its own (every call is a small
  statement run there through `run_in_executor`), so the event loop never waits on disk.
  WAL journal, `synchronous=NORMAL`. ":memory:" for tests.
- `PostgresStore(dsn)`: one psycopg 3 `AsyncConnection` (autocommit), its use serialised by
  an asyncio lock; a connection found closed is reopened once per call.

Inserts are group-committed (`GroupCommit`): while one batch is being written, the POSTs
that arrive wait and are written together, in one transaction (one thread hop and one
commit for SQLite, one round trip for PostgreSQL) instead of one each. A lone insert is
written at once (no timer, no added delay); each POST is still answered 201 only after its
own row is committed, so an acknowledged LogEvent is never lost. A batch that fails is
written again row by row, so one bad row fails only its own POST.

`open_store(target)` picks by the text: a `postgresql://` URL or a libpq `key=value` DSN
is PostgreSQL, anything else a SQLite path.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from ng911.i3log.events import IndexedEvent

__all__ = ["LogStore", "PostgresStore", "Query", "SqliteStore", "StoredEvent", "open_store"]

T = TypeVar("T")
_COLUMNS = (
    "id", "log_event_type", "timestamp", "ts", "element_id", "agency_id",
    "call_id", "incident_id", "call_id_sip", "received", "jws",
)  # fmt: skip
_TABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,40}$")
_ID_NAMESPACE = uuid.UUID("5f0c8a52-3b1e-4f7e-9a53-9c1d11e0e911")  # ng911's LogEvent ids


def event_id_for(jws: str) -> str:
    """The logEventId of a LogEvent stored as `jws`: a name-based UUID of its signed text.

    Delivery is at least once (a sender repeats a POST whose answer it never got: a
    timeout, a keep-alive connection closed under it), and a repeat is the same bytes. So
    the same text gets the same id, the insert of a repeat does nothing, and the repeat is
    answered with the id the first POST got: the store holds each LogEvent once. Two texts
    alike are one statement: ES256 signatures are randomised, and under RS256 only the
    same payload (same members, same millisecond) signs alike."""
    return uuid.uuid5(_ID_NAMESPACE, jws).hex


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One stored LogEvent: its indexed members and the JWS text as received."""

    id: str
    log_event_type: str
    timestamp: str
    ts: float
    element_id: str
    agency_id: str
    call_id: str | None
    incident_id: str | None
    call_id_sip: str | None
    received: float
    jws: str


@dataclass(frozen=True, slots=True)
class Query:
    """What a retrieval filters on (all given filters must hold); `offset`/`limit` page it.
    `start`/`end` are epoch seconds, inclusive."""

    call_id: str | None = None
    incident_id: str | None = None
    call_id_sip: str | None = None
    element_id: str | None = None
    log_event_type: str | None = None
    start: float | None = None
    end: float | None = None
    limit: int = 100
    offset: int = 0

    def where(self, ph: str) -> tuple[str, list[Any]]:
        """The WHERE clause (with placeholder `ph`) and its arguments."""
        terms: list[str] = []
        args: list[Any] = []
        for col in ("call_id", "incident_id", "call_id_sip", "element_id", "log_event_type"):
            value = getattr(self, col)
            if value is not None:
                terms.append(f"{col} = {ph}")
                args.append(value)
        if self.start is not None:
            terms.append(f"ts >= {ph}")
            args.append(self.start)
        if self.end is not None:
            terms.append(f"ts <= {ph}")
            args.append(self.end)
        return (" WHERE " + " AND ".join(terms)) if terms else "", args


class LogStore(Protocol):
    """What the server needs of a store."""

    async def add(self, event: IndexedEvent, jws: str) -> str: ...
    async def get(self, event_id: str) -> StoredEvent | None: ...
    async def query(self, q: Query) -> tuple[list[StoredEvent], int]: ...
    async def close(self) -> None: ...


class GroupCommit:
    """Rows written in batches by one writer task (module docstring): `await add(row)`
    returns once `row` is committed, or raises what writing it raised."""

    def __init__(
        self, write: Callable[[list[list[Any]]], Awaitable[None]], *, max_batch: int = 256
    ) -> None:
        self._write = write
        self.max_batch = max(1, max_batch)
        self._pending: list[tuple[list[Any], asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None
        self.batches = self.rows = 0  # how well it groups: rows / batches

    async def add(self, row: list[Any]) -> None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._pending.append((row, fut))
        if self._writer is None or self._writer.done():
            self._writer = loop.create_task(self._drain(), name="i3log-group-commit")
        await fut

    async def _drain(self) -> None:
        while self._pending:
            batch = self._pending[: self.max_batch]
            del self._pending[: self.max_batch]
            try:
                await self._write([row for row, _ in batch])
            except Exception as exc:
                if len(batch) == 1:
                    _settle(batch[0][1], exc)
                    continue
                for row, fut in batch:  # find the bad row: only its POST fails
                    try:
                        await self._write([row])
                    except Exception as one:
                        _settle(fut, one)
                    else:
                        _settle(fut, None)
                continue
            self.batches += 1
            self.rows += len(batch)
            for _, fut in batch:
                _settle(fut, None)

    async def wait(self) -> None:
        """Every row queued so far written (before a store closes)."""
        while self._writer is not None and not self._writer.done():
            await asyncio.shield(self._writer)


def _settle(fut: asyncio.Future[None], exc: BaseException | None) -> None:
    if fut.done():  # the POST was cancelled (its client went away): the row is written anyway
        return
    if exc is None:
        fut.set_result(None)
    else:
        fut.set_exception(exc)


class _SqlStore:
    """The statements both stores run; subclasses say how to run them."""

    ph = "?"
    serial = "INTEGER PRIMARY KEY AUTOINCREMENT"
    real = "REAL"

    def __init__(self, table: str) -> None:
        if not _TABLE.match(table):
            raise ValueError(f"bad table name {table!r}")
        self.table = table

    def schema(self) -> list[str]:
        t = self.table
        return [
            f"CREATE TABLE IF NOT EXISTS {t} (seq {self.serial}, id TEXT UNIQUE NOT NULL, "
            f"log_event_type TEXT NOT NULL, timestamp TEXT NOT NULL, ts {self.real} NOT NULL, "
            "element_id TEXT NOT NULL, agency_id TEXT NOT NULL, call_id TEXT, "
            f"incident_id TEXT, call_id_sip TEXT, received {self.real} NOT NULL, "
            "jws TEXT NOT NULL)",
            *(
                f"CREATE INDEX IF NOT EXISTS {t}_{c} ON {t} ({c})"
                for c in ("call_id", "incident_id", "call_id_sip", "ts")
            ),
        ]

    def insert(self, event: IndexedEvent, jws: str) -> tuple[str, list[Any]]:
        event_id = event_id_for(jws)
        row = [
            event_id, event.log_event_type, event.timestamp, event.ts, event.element_id,
            event.agency_id, event.call_id, event.incident_id, event.call_id_sip, time.time(), jws,
        ]  # fmt: skip
        return event_id, row

    def insert_sql(self) -> str:
        marks = ", ".join([self.ph] * len(_COLUMNS))
        return (
            f"INSERT INTO {self.table} ({', '.join(_COLUMNS)}) VALUES ({marks}) "
            "ON CONFLICT (id) DO NOTHING"
        )

    def select_one(self) -> str:
        return f"SELECT {', '.join(_COLUMNS)} FROM {self.table} WHERE id = {self.ph}"

    def select(self, q: Query) -> tuple[str, str, list[Any]]:
        where, args = q.where(self.ph)
        rows = (
            f"SELECT {', '.join(_COLUMNS)} FROM {self.table}{where} ORDER BY ts, seq "
            f"LIMIT {int(q.limit)} OFFSET {int(q.offset)}"
        )
        return rows, f"SELECT count(*) FROM {self.table}{where}", args


class SqliteStore(_SqlStore):
    """SQLite on its own thread (module docstring)."""

    def __init__(self, path: str = ":memory:", *, table: str = "log_events") -> None:
        super().__init__(table)
        self.path = path
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="i3log-sqlite")
        self._conn: sqlite3.Connection | None = None
        self.commits = GroupCommit(self._write_rows)

    async def _write_rows(self, rows: list[list[Any]]) -> None:
        sql = self.insert_sql()

        def write(c: sqlite3.Connection) -> None:
            if len(rows) == 1:
                c.execute(sql, rows[0])
                return
            c.execute("BEGIN")
            try:
                c.executemany(sql, rows)
            except BaseException:
                c.execute("ROLLBACK")
                raise
            c.execute("COMMIT")

        await self._run(write)

    def _open(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None)
            if self.path != ":memory:":
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
            for stmt in self.schema():
                conn.execute(stmt)
            self._conn = conn
        return self._conn

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: fn(self._open()))

    async def open(self) -> SqliteStore:
        """Create the file and table now (a bad path fails at start-up, not at first POST)."""
        await self._run(lambda c: None)
        return self

    async def add(self, event: IndexedEvent, jws: str) -> str:
        event_id, row = self.insert(event, jws)
        await self.commits.add(row)
        return event_id

    async def get(self, event_id: str) -> StoredEvent | None:
        sql = self.select_one()
        row = await self._run(lambda c: c.execute(sql, [event_id]).fetchone())
        return StoredEvent(*row) if row else None

    async def query(self, q: Query) -> tuple[list[StoredEvent], int]:
        rows_sql, count_sql, args = self.select(q)

        def run(c: sqlite3.Connection) -> tuple[list[Any], int]:
            rows = c.execute(rows_sql, args).fetchall()
            return rows, int(c.execute(count_sql, args).fetchone()[0])

        rows, total = await self._run(run)
        return [StoredEvent(*r) for r in rows], total

    async def close(self) -> None:
        def shut(c: sqlite3.Connection) -> None:
            c.close()

        await self.commits.wait()
        if self._conn is not None:
            await self._run(shut)
            self._conn = None
        self._pool.shutdown(wait=False)


class PostgresStore(_SqlStore):
    """PostgreSQL through one psycopg 3 async connection (module docstring)."""

    ph = "%s"
    serial = "BIGSERIAL PRIMARY KEY"
    real = "DOUBLE PRECISION"

    def __init__(self, dsn: str, *, table: str = "log_events") -> None:
        super().__init__(table)
        self.dsn = dsn
        self._conn: Any = None
        self._lock = asyncio.Lock()
        self.commits = GroupCommit(self._write_rows)

    async def _write_rows(self, rows: list[list[Any]]) -> None:
        if len(rows) == 1:
            await self._run(self.insert_sql(), rows[0])
            return
        async with self._lock:
            conn = await self._connection()
            async with conn.transaction(), conn.cursor() as cur:
                await cur.executemany(self.insert_sql(), rows)

    async def _connection(self) -> Any:
        if self._conn is None or self._conn.closed:
            import psycopg  # optional dependency (the `postgis` extra)

            self._conn = await psycopg.AsyncConnection.connect(self.dsn, autocommit=True)
            for stmt in self.schema():
                await self._conn.execute(stmt)
        return self._conn

    async def _run(self, sql: str, args: list[Any], fetch: str = "") -> Any:
        import psycopg

        async with self._lock:
            for attempt in (0, 1):
                conn = await self._connection()
                try:
                    cur = await conn.execute(sql, args)
                    if fetch == "one":
                        return await cur.fetchone()
                    if fetch == "all":
                        return await cur.fetchall()
                    return None
                except psycopg.OperationalError:
                    if attempt or not conn.closed:
                        raise
                    self._conn = None  # the server went away: reconnect once
        return None

    async def open(self) -> PostgresStore:
        async with self._lock:
            await self._connection()
        return self

    async def add(self, event: IndexedEvent, jws: str) -> str:
        event_id, row = self.insert(event, jws)
        await self.commits.add(row)
        return event_id

    async def get(self, event_id: str) -> StoredEvent | None:
        row = await self._run(self.select_one(), [event_id], "one")
        return StoredEvent(*row) if row else None

    async def query(self, q: Query) -> tuple[list[StoredEvent], int]:
        rows_sql, count_sql, args = self.select(q)
        rows = await self._run(rows_sql, args, "all")
        total = await self._run(count_sql, args, "one")
        return [StoredEvent(*r) for r in rows], int(total[0])

    async def close(self) -> None:
        await self.commits.wait()
        async with self._lock:
            if self._conn is not None:
                await self._conn.close()
                self._conn = None


def is_dsn(target: str) -> bool:
    """A PostgreSQL URL or a libpq `key=value` connection string, not a file path."""
    return target.startswith(("postgresql://", "postgres://")) or "=" in target.split("/")[0]


async def open_store(target: str = "", *, table: str = "log_events") -> SqliteStore | PostgresStore:
    """The store `target` names (module docstring), opened: errors surface here."""
    if is_dsn(target):
        return await PostgresStore(target, table=table).open()
    return await SqliteStore(target or ":memory:", table=table).open()
