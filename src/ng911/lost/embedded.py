"""The embedded boundary store: GeoJSON in memory, shapely STRtree + prepared geometries.

The default store: no server to run, ~100k point lookups/s per core. A point is looked up with
the STRtree's bounding boxes, then `contains_xy` on the prepared candidate (no shapely Point
is built for the exact test); a point exactly on a boundary line falls back to `intersects`.
Areas (circles, ellipses, polygons...) follow the overlap rule of `ng911.lost.store`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import shapely
from shapely.geometry import shape as geojson_shape
from shapely.strtree import STRtree

from ng911.location.civic import CivicAddress
from ng911.location.geodetic import Point, Shape
from ng911.lost.store import (
    AreaData,
    MappingConfig,
    ServiceArea,
    StoreHit,
    load_geojson,
    match_civic,
    query_geometry,
)


class EmbeddedStore:
    """`BoundaryStore` over shapely geometries held in memory."""

    def __init__(self, data: list[AreaData]) -> None:
        self._areas: list[ServiceArea] = [d.area for d in data]
        self._geoms: list[Any] = [shapely.make_valid(geojson_shape(d.geometry)) for d in data]
        for g in self._geoms:
            shapely.prepare(g)
        self._tree = STRtree(self._geoms)
        # With few areas a pure-Python bounding-box scan beats building a shapely Point for
        # the tree query (the point path is the hot one: no shapely object per lookup).
        self._bboxes = [(i, *g.bounds) for i, g in enumerate(self._geoms)]
        self._scan = len(self._geoms) <= 64
        self._by_key = {a.key: i for i, a in enumerate(self._areas)}
        self._rules = [r for d in data for r in d.civic]
        seen: dict[str, None] = {}
        for a in self._areas:
            for s in a.services:
                seen.setdefault(s, None)
        self._services = list(seen)

    @classmethod
    def from_geojson(
        cls, path: Path | str | None = None, config: MappingConfig | None = None
    ) -> EmbeddedStore:
        return cls(load_geojson(path, config))

    def services(self) -> list[str]:
        return list(self._services)

    def area(self, key: str) -> ServiceArea | None:
        i = self._by_key.get(key)
        return self._areas[i] if i is not None else None

    def boundary(self, key: str) -> Any | None:
        i = self._by_key.get(key)
        return self._geoms[i] if i is not None else None

    def lookup(self, shape: Shape, service: str) -> StoreHit | None:
        if isinstance(shape, Point):
            return self._lookup_point(shape.lon, shape.lat, service)
        return self.lookup_geometry(query_geometry(shape), service)

    def _lookup_point(self, lon: float, lat: float, service: str) -> StoreHit | None:
        if self._scan:
            idx: Any = [
                i for i, x0, y0, x1, y1 in self._bboxes if x0 <= lon <= x1 and y0 <= lat <= y1
            ]
        else:
            idx = self._tree.query(shapely.Point(lon, lat))
        if len(idx) == 0:
            return None
        geoms, areas = self._geoms, self._areas
        for i in idx:
            if shapely.contains_xy(geoms[i], lon, lat) and service in areas[i].services:
                return StoreHit(areas[i], 1)
        # On a boundary line: contains() is false on the boundary, intersects() is not.
        on_line = [i for i in idx if geoms[i].intersects(shapely.Point(lon, lat))]
        on_line = [i for i in on_line if service in areas[i].services]
        if on_line:
            return StoreHit(areas[int(min(on_line))], len(on_line))
        return None

    def lookup_geometry(self, q: Any, service: str) -> StoreHit | None:
        """The overlap rule (`ng911.lost.store`) for any shapely geometry."""
        # Bounding boxes first, then the exact test on the prepared area geometry (the
        # STRtree's own predicate query does not use our prepared geometries: 50x slower).
        if self._scan:
            x0, y0, x1, y1 = q.bounds
            boxed = [
                i for i, a, b, c, d in self._bboxes if a <= x1 and x0 <= c and b <= y1 and y0 <= d
            ]
        else:
            boxed = [int(i) for i in self._tree.query(q)]
        geoms, areas = self._geoms, self._areas
        idx = [i for i in boxed if service in areas[i].services and geoms[i].intersects(q)]
        if not idx:
            return None
        if len(idx) == 1:
            return StoreHit(self._areas[idx[0]], 1)
        full = [i for i in idx if q.covers(self._geoms[i])]
        if full:
            best = max(full, key=lambda i: (self._geoms[i].area, -i))
        else:
            best = max(idx, key=lambda i: (q.intersection(self._geoms[i]).area, -i))
        return StoreHit(self._areas[best], len(idx))

    def lookup_civic(self, civic: CivicAddress, service: str) -> StoreHit | None:
        rule = match_civic(self._rules, civic)
        if rule is None:
            return None
        area = self.area(rule.key)
        if area is None or service not in area.services:
            return None
        return StoreHit(area, 1)

    def close(self) -> None:
        return None
