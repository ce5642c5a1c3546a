"""Boundary stores (embedded and PostGIS, the same tests): points, circles, polygons, civic."""

from __future__ import annotations

import pytest
import shapely
from lost_data import BOROUGH_POINTS, OUTSIDE_POINTS, psap_uri

from ng911.location.civic import CivicAddress
from ng911.location.geodetic import Circle, Ellipse, Point, Polygon
from ng911.lost.embedded import EmbeddedStore
from ng911.lost.store import BoundaryStore, MappingConfig, load_geojson, slug

SOS = "urn:service:sos"


def square(lat: float, lon: float, half: float = 0.001) -> Polygon:
    return Polygon(
        (
            Point(lat - half, lon - half),
            Point(lat - half, lon + half),
            Point(lat + half, lon + half),
            Point(lat + half, lon - half),
            Point(lat - half, lon - half),
        )
    )


def box(min_lon: float, min_lat: float, max_lon: float, max_lat: float) -> Polygon:
    return Polygon(
        (
            Point(min_lat, min_lon),
            Point(min_lat, max_lon),
            Point(max_lat, max_lon),
            Point(max_lat, min_lon),
            Point(min_lat, min_lon),
        )
    )


@pytest.mark.parametrize("borough", list(BOROUGH_POINTS))
def test_point_circle_polygon_in_each_borough(store: BoundaryStore, borough: str) -> None:
    lat, lon = BOROUGH_POINTS[borough]
    for shape in (
        Point(lat, lon),
        Circle(Point(lat, lon), 50.0),
        square(lat, lon),
        Ellipse(Point(lat, lon), 80.0, 40.0, 45.0),
    ):
        hit = store.lookup(shape, SOS)
        assert hit is not None, shape
        assert hit.area.uris == (psap_uri(borough),)
        assert hit.area.service_number == "911"
        assert slug(hit.area.name) == borough


@pytest.mark.parametrize("where", list(OUTSIDE_POINTS))
def test_outside_every_boundary(store: BoundaryStore, where: str) -> None:
    lat, lon = OUTSIDE_POINTS[where]
    assert store.lookup(Point(lat, lon), SOS) is None
    assert store.lookup(Circle(Point(lat, lon), 50.0), SOS) is None


def test_unknown_service_misses(store: BoundaryStore) -> None:
    lat, lon = BOROUGH_POINTS["queens"]
    assert store.lookup(Point(lat, lon), "urn:service:counseling") is None


def test_polygon_covering_one_fully_maps_to_it(store: BoundaryStore) -> None:
    """NENA i3: a polygon covering Manhattan fully and Queens partly maps to Manhattan,
    even though the part of Queens it covers is larger than Manhattan."""
    big = box(-74.06, 40.67, -73.70, 40.89)
    q = shapely.box(-74.06, 40.67, -73.70, 40.89)
    manhattan = store.boundary("nyc-boro-1")
    queens = store.boundary("nyc-boro-4")
    assert q.covers(manhattan) and not q.covers(queens)
    assert q.intersection(queens).area > manhattan.area  # the rule is really exercised
    hit = store.lookup(big, SOS)
    assert hit is not None and hit.area.name == "Manhattan" and hit.candidates >= 3


def test_circle_across_a_line_maps_to_the_larger_part(store: BoundaryStore) -> None:
    # A 2 km circle centred in Brooklyn near the Queens line: touches both, mostly Brooklyn.
    circle = Circle(Point(40.6782, -73.9000), 2000.0)
    hit = store.lookup(circle, SOS)
    assert hit is not None and hit.candidates >= 2
    from ng911.location.geodetic import to_shapely

    q = to_shapely(circle)
    parts = {k: q.intersection(store.boundary(k)).area for k in ("nyc-boro-3", "nyc-boro-4")}
    assert hit.area.key == max(parts, key=parts.__getitem__)


@pytest.mark.parametrize(
    "fields,borough",
    [
        ({"country": "US", "A1": "NY", "A2": "Kings"}, "brooklyn"),
        ({"country": "US", "A1": "NY", "A2": "Kings County", "RD": "Flatbush"}, "brooklyn"),
        ({"country": "US", "A1": "NY", "A3": "Manhattan"}, "manhattan"),
        ({"country": "US", "A1": "NY", "A3": "New York"}, "manhattan"),
        ({"country": "us", "A1": "ny", "A2": "Richmond"}, "staten-island"),
        ({"country": "US", "A1": "NY", "A3": "Staten Island"}, "staten-island"),
        ({"country": "US", "A1": "NY", "A2": "Bronx", "A3": "Bronx"}, "bronx"),
        ({"country": "US", "A1": "NY", "A2": "Queens", "A3": "Flushing"}, "queens"),
        # Conflict: the deeper level (A3) is the more specific one.
        ({"country": "US", "A1": "NY", "A2": "Kings", "A3": "Queens"}, "queens"),
    ],
)
def test_civic(store: BoundaryStore, fields: dict[str, str], borough: str) -> None:
    hit = store.lookup_civic(CivicAddress.of(fields), SOS)
    assert hit is not None and hit.area.uris == (psap_uri(borough),)


@pytest.mark.parametrize(
    "fields",
    [
        {"country": "US", "A1": "NJ", "A3": "Newark"},
        {"country": "DE", "A1": "NY", "A2": "Kings"},
        {"country": "US", "A1": "NY"},
        {"A3": "Brooklyn"},
    ],
)
def test_civic_not_found(store: BoundaryStore, fields: dict[str, str]) -> None:
    assert store.lookup_civic(CivicAddress.of(fields), SOS) is None


def test_boundary_and_area(store: BoundaryStore) -> None:
    b = store.boundary("nyc-boro-3")
    lat, lon = BOROUGH_POINTS["brooklyn"]
    assert b is not None and b.contains(shapely.Point(lon, lat))
    assert store.boundary("no-such-key") is None
    area = store.area("nyc-boro-3")
    assert area is not None and area.display_name == "Brooklyn PSAP"
    assert "urn:service:sos" in store.services()
    assert "urn:emergency:service:sos.police" in store.services()


def test_mapping_config_sips_and_overrides(tmp_path: object) -> None:
    cfg = MappingConfig(uri_scheme="sips", uris={"queens": ("sip:q@other.example",)})
    store = EmbeddedStore(load_geojson(None, cfg))
    lat, lon = BOROUGH_POINTS["bronx"]
    hit = store.lookup(Point(lat, lon), SOS)
    assert hit is not None and hit.area.uris == ("sips:psap-bronx@esinet.example",)
    lat, lon = BOROUGH_POINTS["queens"]
    hit = store.lookup(Point(lat, lon), SOS)
    assert hit is not None and hit.area.uris == ("sip:q@other.example",)


def test_geojson_without_polygons_is_refused(tmp_path: pytest.TempPathFactory) -> None:
    from pathlib import Path

    p = Path(str(tmp_path)) / "empty.geojson"
    p.write_text('{"type": "FeatureCollection", "features": []}')
    with pytest.raises(ValueError):
        load_geojson(p)


def test_point_grid_agrees_with_testing_every_area() -> None:
    """The embedded store's point grid answers exactly as the area-by-area test does.

    Random points over the whole extent, every boundary vertex (on a line: the `intersects`
    fall-back), points on and a hair off grid cell edges, and a service only some areas serve.
    """
    import random

    from ng911.lost import embedded

    store = EmbeddedStore.from_geojson()
    rng = random.Random(5222)
    x0, y0, inv, nx, ny = store._grid
    size = 1.0 / inv
    points = [(rng.uniform(-74.3, -73.65), rng.uniform(40.45, 40.95)) for _ in range(4000)]
    for g in store._geoms:
        for part in getattr(g, "geoms", [g]):
            coords = list(part.exterior.coords)
            points += [(float(x), float(y)) for x, y in coords[:: max(1, len(coords) // 300)]]
    for _ in range(1000):
        gx, gy = rng.randrange(nx + 1), rng.randrange(ny + 1)
        for dx in (0.0, 1e-12, -1e-12):
            points.append((x0 + gx * size + dx, y0 + rng.uniform(0, ny) * size))
            points.append((x0 + rng.uniform(0, nx) * size, y0 + gy * size + dx))
    # the fine cells of the cells a boundary crosses: random points in them, and their edges
    fsize = size / embedded.SUB
    for c in rng.sample(sorted(store._fine), min(300, len(store._fine))):
        cx, cy = (c % nx) * size + x0, (c // nx) * size + y0
        for _ in range(10):
            points.append((cx + rng.uniform(0, size), cy + rng.uniform(0, size)))
            k = rng.randrange(embedded.SUB + 1)
            for dx in (0.0, 1e-12, -1e-12):
                points.append((cx + k * fsize + dx, cy + rng.uniform(0, size)))
                points.append((cx + rng.uniform(0, size), cy + k * fsize + dx))
    inside_cells = 0
    for lon, lat in points:
        for service in (SOS, "urn:service:nowhere"):
            assert store._lookup_point(lon, lat, service) == store._lookup_point_exact(
                lon, lat, service
            ), (lon, lat)
    for cell in store._cells:
        inside_cells += any(inside for _, inside in cell)
    assert inside_cells > len([c for c in store._cells if c]) // 2
    assert embedded.GRID >= 16
    assert store._fine and embedded.SUB >= 2


def test_circle_grid_shortcut_agrees_with_the_polygon_test() -> None:
    """A circle answered from the grid alone maps where the built polygon maps."""
    import random

    from ng911.lost.store import query_geometry

    store = EmbeddedStore.from_geojson()
    rng = random.Random(5491)
    shortcut = 0
    for _ in range(1500):
        center = Point(rng.uniform(40.48, 40.93), rng.uniform(-74.27, -73.68))
        circle = Circle(center, rng.choice([1.0, 5.0, 50.0, 300.0, 2_000.0, 10_000.0, 20_000.0]))
        shortcut += store._circle_inside(circle) is not None
        for service in (SOS, "urn:service:nowhere"):
            exact = store.lookup_geometry(query_geometry(circle), service)
            assert store.lookup(circle, service) == exact, circle
    assert shortcut > 100
