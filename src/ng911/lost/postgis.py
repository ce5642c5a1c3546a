"""The PostGIS boundary store: service areas in PostgreSQL, for data too large for memory.

Same protocol and same answers as `EmbeddedStore` (the LoST tests run against both). Tables
(`<prefix>_area`, `<prefix>_part`, `<prefix>_civic`) are created and filled from GeoJSON by
`load_geojson`; queries are prepared server-side by psycopg 3 (`prepare=True`) and run on one
autocommit connection.

- Every area is also stored cut into pieces of at most 128 vertices (`<prefix>_part`,
  `ST_Subdivide`): point and "which areas does it touch" tests run against those small pieces
  (GiST index), not against 1,000-vertex boroughs.
- Points: `ST_Intersects(part, point)` (a point on a boundary line belongs to the first area,
  as in the embedded store).
- Circles, ellipses, arc bands, polygons: the query shape is the same polygon the embedded
  store uses (`ng911.lost.store.query_geometry`, sent as WKB), and the overlap rule of
  `ng911.lost.store` is applied to `ST_Covers` / `ST_Area(ST_Intersection(...))` per touched
  area. Areas are compared in planar lon/lat units: the pieces compared all belong to one
  query shape a few km across, so the cos(latitude) factor a geography area would add is the
  same for each and cannot change the decision (and the planar form is ~5x cheaper).
- Civic: a rules table with one column per level (country, A1..A6, PC; NULL = any value) and
  the rule's specificity, so the most specific rule is `ORDER BY ... LIMIT 1`.

Two ways to ask: the synchronous calls (`lookup`, ...) on one autocommit connection, for
loading, tools and tests; and the awaitable ones (`lookup_async`, `lookup_civic_async`,
`boundary_async`: `ng911.lost.store.AsyncLookups`) on a `ConnectionPool` of up to
`pool_size` async connections, made on demand in the running loop, every statement prepared
server-side on each connection (`prepare=True`), one cursor per connection reused. The LoST
server uses the awaitable ones: a query never blocks its event loop, and several requests'
queries run at once on the pool's connections (bench/lost.py measures them against a raw
PostGIS loop).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import deque
from pathlib import Path
from typing import Any

import psycopg
import shapely

from ng911.location.civic import CivicAddress
from ng911.location.geodetic import Point, Shape
from ng911.lost.store import (
    CIVIC_LEVELS,
    AreaData,
    MappingConfig,
    ServiceArea,
    StoreHit,
    load_geojson,
    norm,
    query_geometry,
)

_PREFIX = re.compile(r"[a-z_][a-z0-9_]{0,40}")
_COLS = tuple(level.lower() for level in CIVIC_LEVELS)  # country, a1..a6, pc


class PostgisStore:
    """`BoundaryStore` over PostGIS tables `<prefix>_area` and `<prefix>_civic`."""

    def __init__(
        self, conn: psycopg.Connection[Any], prefix: str = "lost", *, pool_size: int = 4
    ) -> None:
        if not _PREFIX.fullmatch(prefix):
            raise ValueError(f"bad table prefix {prefix!r}")
        self.conn = conn
        self.pool_size = pool_size
        info = conn.info
        self.dsn = info.dsn + (f" password={info.password}" if info.password else "")
        self._pool: ConnectionPool | None = None
        self.prefix = prefix
        self._area_t = f"{prefix}_area"
        self._part_t = f"{prefix}_part"
        self._civic_t = f"{prefix}_civic"
        self._areas: dict[str, ServiceArea] = {}
        self._services: list[str] = []
        self._q_point = (
            f"SELECT DISTINCT ord, key FROM {self._part_t}"
            " WHERE ST_Intersects(geom, ST_SetSRID(ST_MakePoint(%s, %s), 4326))"
            " AND %s = ANY(services) ORDER BY ord"
        )
        self._q_touch = (
            f"SELECT DISTINCT ord, key FROM {self._part_t}"
            " WHERE ST_Intersects(geom, ST_GeomFromWKB(%s, 4326)) AND %s = ANY(services)"
            " ORDER BY ord"
        )
        self._q_area = (
            "SELECT a.key, ST_Covers(q.g, a.geom), ST_Area(a.geom),"
            " ST_Area(ST_Intersection(a.geom, q.g))"
            f" FROM {self._area_t} a, (SELECT ST_GeomFromWKB(%s, 4326) AS g) q"
            " WHERE ST_Intersects(a.geom, q.g) AND %s = ANY(a.services) ORDER BY a.ord"
        )
        where = " AND ".join(f"({c} IS NULL OR {c} = %s)" for c in _COLS)
        self._q_civic = (
            f"SELECT key FROM {self._civic_t} WHERE {where}"
            " ORDER BY nfields DESC, deepest DESC, ord LIMIT 1"
        )
        self._q_boundary = f"SELECT ST_AsBinary(geom) FROM {self._area_t} WHERE key = %s"
        self.refresh()

    @property
    def point_query(self) -> str:
        """The prepared point query (its parameters: lon, lat, service), for benchmarks."""
        return self._q_point

    @classmethod
    def connect(cls, dsn: str, prefix: str = "lost") -> PostgisStore:
        return cls(psycopg.connect(dsn, autocommit=True), prefix)

    @classmethod
    def from_geojson(
        cls,
        dsn: str,
        path: Path | str | None = None,
        config: MappingConfig | None = None,
        prefix: str = "lost",
    ) -> PostgisStore:
        """Connect, (re)create the tables, load the GeoJSON, return the store."""
        conn = psycopg.connect(dsn, autocommit=True)
        create_tables(conn, prefix)
        load_areas(conn, load_geojson(path, config), prefix)
        return cls(conn, prefix)

    def refresh(self) -> None:
        """Re-read the mapping data (URIs, names, services) after the tables changed."""
        rows = self.conn.execute(
            "SELECT key, name, uris, display_name, service_number, services"
            f" FROM {self._area_t} ORDER BY ord"
        ).fetchall()
        self._areas = {
            r[0]: ServiceArea(r[0], r[1], tuple(r[2]), r[3], r[4], tuple(r[5])) for r in rows
        }
        seen: dict[str, None] = {}
        for a in self._areas.values():
            for s in a.services:
                seen.setdefault(s, None)
        self._services = list(seen)

    def services(self) -> list[str]:
        return list(self._services)

    def area(self, key: str) -> ServiceArea | None:
        return self._areas.get(key)

    def boundary(self, key: str) -> Any | None:
        row = self.conn.execute(self._q_boundary, (key,), prepare=True).fetchone()
        return shapely.from_wkb(bytes(row[0])) if row else None

    def lookup(self, shape: Shape, service: str) -> StoreHit | None:
        if isinstance(shape, Point):
            rows = self.conn.execute(
                self._q_point, (shape.lon, shape.lat, service), prepare=True
            ).fetchall()
            return self._point_hit(rows)
        return self.lookup_geometry(query_geometry(shape), service)

    def _point_hit(self, rows: list[Any]) -> StoreHit | None:
        if not rows:
            return None
        area = self._areas.get(rows[0][1])
        return StoreHit(area, len(rows)) if area is not None else None

    def lookup_geometry(self, q: Any, service: str) -> StoreHit | None:
        wkb = shapely.to_wkb(q)
        # Most shapes touch one area: find out with the index alone, and only compute
        # coverage and intersection areas when there is a choice to make.
        rows = self.conn.execute(self._q_touch, (wkb, service), prepare=True).fetchall()
        if len(rows) > 1:
            rows = self.conn.execute(self._q_area, (wkb, service), prepare=True).fetchall()
            return self._area_hit(rows, ranked=True)
        return self._area_hit(rows, ranked=False)

    def _area_hit(self, rows: list[Any], ranked: bool) -> StoreHit | None:
        """The overlap rule (module docstring) over `_q_touch` rows (one area: that one) or
        `_q_area` rows (`ranked`: covered, area, intersection area per area)."""
        if not rows:
            return None
        if not ranked:
            best = rows[0][1]
        else:
            order = {r[0]: i for i, r in enumerate(rows)}
            full = [r for r in rows if r[1]]
            if full:
                best = max(full, key=lambda r: (r[2], -order[r[0]]))[0]
            else:
                best = max(rows, key=lambda r: (r[3], -order[r[0]]))[0]
        area = self._areas.get(best)
        return StoreHit(area, len(rows)) if area is not None else None

    @staticmethod
    def _civic_params(civic: CivicAddress) -> list[str | None]:
        params = []
        for level in CIVIC_LEVELS:
            v = civic.get(level)
            params.append(norm(v) if v is not None else None)
        return params

    def _civic_hit(self, row: Any, service: str) -> StoreHit | None:
        if row is None:
            return None
        area = self._areas.get(row[0])
        if area is None or service not in area.services:
            return None
        return StoreHit(area, 1)

    def lookup_civic(self, civic: CivicAddress, service: str) -> StoreHit | None:
        row = self.conn.execute(self._q_civic, self._civic_params(civic), prepare=True).fetchone()
        return self._civic_hit(row, service)

    # -- awaitable lookups on the pool (`AsyncLookups`) ------------------------------------

    @property
    def pool(self) -> ConnectionPool | None:
        """The awaited lookups' connections (None until the first one)."""
        return self._pool

    async def _rows(self, query: str, params: Any) -> list[Any]:
        if self.conn.closed:
            raise psycopg.OperationalError("the PostGIS store is closed")
        loop = asyncio.get_running_loop()
        pool = self._pool
        if pool is None or pool.loop is not loop:
            pool = self._pool = ConnectionPool(self.dsn, self.pool_size, loop)
        conn = await pool.acquire()
        try:
            cur = pool.cursor(conn)
            try:
                await cur.execute(query, params, prepare=True)
                rows: list[Any] = await cur.fetchall()
            except BaseException:
                pool.cursors.pop(conn, None)  # a fresh cursor next time
                raise
            return rows
        finally:
            pool.release(conn)

    async def lookup_async(self, shape: Shape, service: str) -> StoreHit | None:
        if isinstance(shape, Point):
            return self._point_hit(await self._rows(self._q_point, (shape.lon, shape.lat, service)))
        wkb = shapely.to_wkb(query_geometry(shape))
        rows = await self._rows(self._q_touch, (wkb, service))
        if len(rows) > 1:
            return self._area_hit(await self._rows(self._q_area, (wkb, service)), ranked=True)
        return self._area_hit(rows, ranked=False)

    async def lookup_civic_async(self, civic: CivicAddress, service: str) -> StoreHit | None:
        rows = await self._rows(self._q_civic, self._civic_params(civic))
        return self._civic_hit(rows[0] if rows else None, service)

    async def boundary_async(self, key: str) -> Any | None:
        rows = await self._rows(self._q_boundary, (key,))
        return shapely.from_wkb(bytes(rows[0][0])) if rows else None

    async def close_async(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    def close(self) -> None:
        """Close the store: its connection, and the awaited lookups with it (the pool's
        connections themselves are closed by `close_async`, which the server's cleanup runs)."""
        self.conn.close()


class ConnectionPool:
    """At most `size` autocommit `psycopg.AsyncConnection`s of one loop, made on demand.

    Why not psycopg_pool's `AsyncConnectionPool`: measured here (bench/lost.py, same run),
    taking and returning one of its connections cost ~60 µs of CPU per query (its checks
    and background workers), more than the query's own client cost (~40 µs); a lookup
    needs none of it: a free list, a queue of waiters, and a broken connection dropped
    (the next request that finds none free makes a new one).
    """

    def __init__(self, dsn: str, size: int, loop: asyncio.AbstractEventLoop) -> None:
        self.dsn = dsn
        self.size = max(1, size)
        self.loop = loop
        self.free: list[psycopg.AsyncConnection[Any]] = []
        # one cursor per connection, reused query after query: `AsyncConnection.execute`
        # makes a cursor each time, ~40k instructions of the ~150k a query costs the client
        self.cursors: dict[psycopg.AsyncConnection[Any], psycopg.AsyncCursor[Any]] = {}
        self.count = 0  # connections made (or being made) and not dropped
        self.waiters: deque[asyncio.Future[psycopg.AsyncConnection[Any]]] = deque()

    async def acquire(self) -> psycopg.AsyncConnection[Any]:
        if self.free:
            return self.free.pop()
        if self.count < self.size:
            self.count += 1
            try:
                return await psycopg.AsyncConnection.connect(self.dsn, autocommit=True)
            except BaseException:
                self.count -= 1
                raise
        waiter: asyncio.Future[psycopg.AsyncConnection[Any]] = self.loop.create_future()
        self.waiters.append(waiter)
        return await waiter

    def cursor(self, conn: psycopg.AsyncConnection[Any]) -> psycopg.AsyncCursor[Any]:
        """`conn`'s cursor (one request at a time has `conn`, so its cursor is its own)."""
        cur = self.cursors.get(conn)
        if cur is None or cur.closed:
            cur = self.cursors[conn] = conn.cursor()
        return cur

    def release(self, conn: psycopg.AsyncConnection[Any]) -> None:
        if conn.closed or conn.broken:
            self.cursors.pop(conn, None)
            self.count -= 1
            if self.waiters:  # its turn goes to a new connection
                self.loop.create_task(self._replace())
            return
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        self.free.append(conn)

    async def _replace(self) -> None:
        try:
            conn = await self.acquire()
        except Exception as exc:
            while self.waiters:
                waiter = self.waiters.popleft()
                if not waiter.done():
                    waiter.set_exception(exc)
            return
        self.release(conn)

    async def close(self) -> None:
        free, self.free = self.free, []
        self.cursors.clear()
        for conn in free:
            self.count -= 1
            await conn.close()


def create_tables(conn: psycopg.Connection[Any], prefix: str = "lost") -> None:
    """(Re)create the store's tables and indexes (drops existing ones of that prefix)."""
    if not _PREFIX.fullmatch(prefix):
        raise ValueError(f"bad table prefix {prefix!r}")
    conn.execute("CREATE EXTENSION IF NOT EXISTS postgis")
    conn.execute(f"DROP TABLE IF EXISTS {prefix}_civic, {prefix}_part, {prefix}_area")
    conn.execute(
        f"CREATE TABLE {prefix}_area ("
        " key text PRIMARY KEY, ord int NOT NULL, name text NOT NULL, uris text[] NOT NULL,"
        " display_name text NOT NULL, service_number text, services text[] NOT NULL,"
        " geom geometry(MultiPolygon, 4326) NOT NULL)"
    )
    conn.execute(f"CREATE INDEX {prefix}_area_geom ON {prefix}_area USING gist (geom)")
    # The same areas cut into pieces of at most 128 vertices (ST_Subdivide): "which areas does
    # this touch" is then a test against a few small polygons, not a 1,000-vertex borough.
    conn.execute(
        f"CREATE TABLE {prefix}_part (key text NOT NULL REFERENCES {prefix}_area(key),"
        " ord int NOT NULL, services text[] NOT NULL, geom geometry(Polygon, 4326) NOT NULL)"
    )
    conn.execute(f"CREATE INDEX {prefix}_part_geom ON {prefix}_part USING gist (geom)")
    cols = ", ".join(f"{c} text" for c in _COLS)
    conn.execute(
        f"CREATE TABLE {prefix}_civic (ord serial, key text NOT NULL REFERENCES {prefix}_area(key),"
        f" {cols}, nfields int NOT NULL, deepest int NOT NULL)"
    )


def load_areas(conn: psycopg.Connection[Any], data: list[AreaData], prefix: str = "lost") -> None:
    """Insert loaded GeoJSON areas and their civic rules (rules naming other fields are skipped)."""
    with conn.transaction():
        for i, d in enumerate(data):
            a = d.area
            conn.execute(
                f"INSERT INTO {prefix}_area"
                " (key, ord, name, uris, display_name, service_number, services, geom)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, ST_Multi(ST_CollectionExtract("
                " ST_MakeValid(ST_SetSRID(ST_GeomFromGeoJSON(%s), 4326)), 3)))",
                (
                    a.key,
                    i,
                    a.name,
                    list(a.uris),
                    a.display_name,
                    a.service_number,
                    list(a.services),
                    json.dumps(d.geometry),
                ),
            )
            conn.execute(
                f"INSERT INTO {prefix}_part (key, ord, services, geom)"
                f" SELECT key, ord, services, ST_Subdivide(geom, 128) FROM {prefix}_area"
                " WHERE key = %s",
                (a.key,),
            )
            for rule in d.civic:
                names = [f for f, _ in rule.fields]
                if any(n not in CIVIC_LEVELS for n in names):
                    continue
                values = dict(rule.fields)
                nfields, deepest = rule.specificity()
                conn.execute(
                    f"INSERT INTO {prefix}_civic (key, {', '.join(_COLS)}, nfields, deepest)"
                    f" VALUES (%s, {', '.join(['%s'] * len(_COLS))}, %s, %s)",
                    (a.key, *[values.get(level) for level in CIVIC_LEVELS], nfields, deepest),
                )
    for table in ("area", "part", "civic"):
        conn.execute(f"ANALYZE {prefix}_{table}")
