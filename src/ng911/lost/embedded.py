"""The embedded boundary store: GeoJSON in memory, shapely STRtree + prepared geometries.

The default store: no server to run, several 100k point lookups/s per core. A point is looked
up in a grid laid over the areas at load time (`GRID` cells along the longer side): each cell
lists, in area order, the areas that touch it and whether the cell lies wholly inside an
area's interior (`contains_properly`, on a cell grown by a hair so rounding at its edges
cannot matter); a cell an area's boundary crosses is split the same way into `SUB` x `SUB`
fine cells. Most points land in an inside cell and are answered by a list lookup; in a
(fine) cell an area's boundary crosses, `contains_xy` decides on the prepared candidate (no
shapely Point is built). Both give exactly what testing every area in order would: an area
that does not touch the cell cannot hold the point. A point exactly on a boundary line falls
back to `intersects`. Areas (circles, ellipses, polygons...) follow the overlap rule of
`ng911.lost.store`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from shapely.geometry import shape as geojson_shape
from shapely.strtree import STRtree

from ng911.location.civic import CivicAddress
from ng911.location.geodetic import Circle, Point, Shape
from ng911.lost.errors import BoundaryDataError
from ng911.lost.store import (
    AreaData,
    MappingConfig,
    ServiceArea,
    StoreHit,
    load_geojson,
    match_civic,
    query_geometry,
)

_contains_xy = shapely.lib.contains_xy
# Smallest meridional (M, at the equator) and prime-vertical (N) radii of WGS 84, in metres:
# a distance spans at most this many radians of latitude / of longitude times cos(lat).
_M_MIN = 6_335_439.0
_N_MIN = 6_378_137.0

_NONE, _EXACT = -1, -2  # `EmbeddedStore._grid_index`: no area, or ask the exact scan
#: Grid cells along the longer side of the areas' bounding box (about 0.02 s to build for the
#: five boroughs; built when there are few areas, as the bounding-box scan is).
GRID = 128
#: Each cell an area's boundary crosses is split into SUB x SUB fine cells (a power of 2), so
#: fewer points need the exact test (5 % of the bench's points, not 19 %; 0.1 s to build).
SUB = 4


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
        self._build_grid()
        self._by_key = {a.key: i for i, a in enumerate(self._areas)}
        self._rules = [r for d in data for r in d.civic]
        seen: dict[str, None] = {}
        for a in self._areas:
            for s in a.services:
                seen.setdefault(s, None)
        self._services = list(seen)

    def _build_grid(self) -> None:
        """The point grid of the module docstring: per cell, ((area index, inside), ...);
        each cell an area's boundary crosses split again into `SUB` x `SUB` cells."""
        self._cells: list[tuple[tuple[int, bool], ...]] = []
        self._fine: dict[int, tuple[tuple[tuple[int, bool], ...], ...]] = {}
        self._grid = (0.0, 0.0, 0.0, 0, 0)
        self._finv = 0.0
        if not self._geoms or not self._scan:  # many areas: the STRtree path instead
            return
        x0, y0, x1, y1 = (float(v) for v in shapely.total_bounds(self._geoms))
        side = max(x1 - x0, y1 - y0)
        if not side > 0:
            return
        size = side / GRID
        nx = max(1, int((x1 - x0) / size) + 1)
        ny = max(1, int((y1 - y0) / size) + 1)
        ix, iy = np.meshgrid(np.arange(nx), np.arange(ny))
        self._cells = self._cell_lists(x0 + ix.ravel() * size, y0 + iy.ravel() * size, size)
        self._grid = (x0, y0, 1.0 / size, nx, ny)
        # SUB is a power of 2: the fine cell size and its inverse are exact scalings
        self._finv = SUB / size
        edge = [c for c, cell in enumerate(self._cells) if any(not inside for _, inside in cell)]
        if not edge:
            return
        e = np.array(edge)
        sx, sy = np.meshgrid(np.arange(SUB), np.arange(SUB))  # fine cell sy * SUB + sx
        fx = (e % nx * SUB)[:, None] + sx.ravel()[None, :]
        fy = (e // nx * SUB)[:, None] + sy.ravel()[None, :]
        fine = self._cell_lists(
            x0 + fx.ravel() * (size / SUB), y0 + fy.ravel() * (size / SUB), size / SUB
        )
        n = SUB * SUB
        self._fine = {c: tuple(fine[k * n : (k + 1) * n]) for k, c in enumerate(edge)}

    def _cell_lists(self, bx: Any, by: Any, size: float) -> list[tuple[tuple[int, bool], ...]]:
        """Per cell of lower-left corner (bx, by) and side `size`: the areas touching it,
        in order, and whether it lies in the area's interior; judged on the cell grown by
        a hair, so rounding at its edges cannot matter. Equal lists are one object."""
        hair = size * 1e-6
        boxes = shapely.box(bx - hair, by - hair, bx + size + hair, by + size + hair)
        # as lists: indexing one gives a bool, not a numpy scalar
        touch = [shapely.intersects(g, boxes).tolist() for g in self._geoms]
        inside = [shapely.contains_properly(g, boxes).tolist() for g in self._geoms]
        n = len(self._geoms)
        same: dict[tuple[tuple[int, bool], ...], tuple[tuple[int, bool], ...]] = {}
        out = []
        for c in range(len(boxes)):
            cell = tuple((i, bool(inside[i][c])) for i in range(n) if touch[i][c])
            out.append(same.setdefault(cell, cell))
        return out

    @classmethod
    def from_geojson(
        cls, path: Path | str | None = None, config: MappingConfig | None = None
    ) -> EmbeddedStore:
        areas = load_geojson(path, config)
        try:
            return cls(areas)
        except (ValueError, TypeError, AttributeError, shapely.errors.ShapelyError) as exc:
            where = path if path is not None else "the packaged boundaries"
            raise BoundaryDataError(f"{where}: bad geometry: {exc}") from None

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
        if isinstance(shape, Circle):
            inside = self._circle_inside(shape)
            if inside is not None:
                area = self._areas[inside]
                return StoreHit(area, 1) if service in area.services else None
        return self.lookup_geometry(query_geometry(shape), service)

    def _circle_inside(self, circle: Circle) -> int | None:
        """The one area whose interior holds the whole circle, judged from the grid alone.

        A conservative bounding box of the circle (its polygon, `query_geometry`, lies
        within the circle) is laid on the grid; if every cell it covers lies inside area i
        and touches no other area, the polygon meets area i and no other, and the overlap
        rule answers i without building the polygon. Otherwise (None) the exact path runs.
        Limited to radii of 1 m - 10 km below 70° latitude, where the 5% margin on the box
        exceeds the second-order terms of `destination` many times over.
        """
        lat, lon, radius = circle.center.lat, circle.center.lon, circle.radius
        if not self._cells or not (1.0 <= radius <= 10_000.0) or abs(lat) > 70.0:
            return None
        dlat = math.degrees(radius / _M_MIN) * 1.05
        dlon = math.degrees(radius / (_N_MIN * math.cos(math.radians(abs(lat) + 1.0)))) * 1.05
        x0, y0, inv, nx, ny = self._grid
        if lon - dlon < x0 or lat - dlat < y0:
            return None
        gx0, gx1 = int((lon - dlon - x0) * inv), int((lon + dlon - x0) * inv)
        gy0, gy1 = int((lat - dlat - y0) * inv), int((lat + dlat - y0) * inv)
        if gx1 >= nx or gy1 >= ny:
            return None
        cells = self._cells
        only = cells[gy0 * nx + gx0]
        if len(only) != 1 or not only[0][1]:
            return None
        for gy in range(gy0, gy1 + 1):
            for gx in range(gx0, gx1 + 1):
                if cells[gy * nx + gx] != only:
                    return None
        return only[0][0]

    def _lookup_point(self, lon: float, lat: float, service: str) -> StoreHit | None:
        i = self._grid_index(lon, lat, service)
        if i >= 0:
            return StoreHit(self._areas[i], 1)
        return None if i == _NONE else self._lookup_point_exact(lon, lat, service)

    def point_area(self, lon: float, lat: float, service: str) -> ServiceArea | None:
        """The area a point lookup answers (`lookup`'s `StoreHit.area`), without the hit:
        the LoST server's hot path (`LostEngine.answer_point`)."""
        i = self._grid_index(lon, lat, service)
        if i >= 0:
            return self._areas[i]
        if i == _NONE:
            return None
        hit = self._lookup_point_exact(lon, lat, service)
        return hit.area if hit is not None else None

    def _grid_index(self, lon: float, lat: float, service: str) -> int:
        """The area holding the point by the grid alone; `_NONE` when the grid knows no area
        holds it (or has it on a line), `_EXACT` when the exact scan must decide."""
        x0, y0, _inv, nx, ny = self._grid
        finv = self._finv
        # the fine cell first, its cell from it: the two always agree
        fx = int((lon - x0) * finv) if lon >= x0 else -SUB
        fy = int((lat - y0) * finv) if lat >= y0 else -SUB
        gx, gy = fx // SUB, fy // SUB
        if 0 <= gx < nx and 0 <= gy < ny:
            c = gy * nx + gx
            cell = self._cells[c]
            if not cell:  # no area touches this cell: none holds the point, or has it on a line
                return _NONE
            fine = self._fine.get(c)
            if fine is not None:  # an area's boundary crosses the cell: its fine cell
                cell = fine[(fy - gy * SUB) * SUB + fx - gx * SUB]
                if not cell:
                    return _NONE
            geoms, areas = self._geoms, self._areas
            for i, inside in cell:
                if service in areas[i].services and (inside or _contains_xy(geoms[i], lon, lat)):
                    return i
        return _EXACT

    def _lookup_point_exact(self, lon: float, lat: float, service: str) -> StoreHit | None:
        """Every candidate area in order (outside the grid, and for points on a line)."""
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
            # The ufunc itself: shapely.contains_xy's Python wrapper costs as much again.
            if _contains_xy(geoms[i], lon, lat) and service in areas[i].services:
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
