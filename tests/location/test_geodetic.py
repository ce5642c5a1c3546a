"""ng911.location.geodetic: validation and the shapely approximation."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from location_strategies import shapes
from shapely.geometry import Point as SPoint
from shapely.geometry import shape as geojson_shape

import ng911
from ng911.location.errors import LocationError
from ng911.location.geodetic import (
    CRS_2D,
    CRS_3D,
    ArcBand,
    Circle,
    Ellipse,
    Ellipsoid,
    Point,
    Polygon,
    Prism,
    Sphere,
    destination,
    reference_point,
    to_shapely,
)

BOROUGHS = Path(ng911.__file__).parent / "data" / "nyc-boroughs.geojson"
TIMES_SQUARE = Point(40.7580, -73.9855)

_A, _E2 = 6378137.0, 6.69437999014e-3


def _local_area_m2(geom: object, lat0: float) -> float:
    """Area of a small lon/lat polygon in m², via the local equirectangular scale."""
    s = math.sin(math.radians(lat0))
    w = 1 - _E2 * s * s
    m = _A * (1 - _E2) / w**1.5
    n = _A / math.sqrt(w)
    deg = math.pi / 180
    return float(geom.area) * deg * deg * m * n * math.cos(math.radians(lat0))  # type: ignore[attr-defined]


def _square(alt: float | None = None) -> Polygon:
    return Polygon(
        (
            Point(40.0, -74.0, alt),
            Point(40.0, -73.0, alt),
            Point(41.0, -73.0, alt),
            Point(41.0, -74.0, alt),
            Point(40.0, -74.0, alt),
        )
    )


class TestValidation:
    @pytest.mark.parametrize(
        ("lat", "lon"),
        [(90.1, 0), (-90.5, 0), (0, 180.01), (0, -181), (math.nan, 0), (0, math.inf)],
    )
    def test_point_out_of_range(self, lat: float, lon: float) -> None:
        with pytest.raises(LocationError):
            Point(lat, lon)

    def test_point_rejects_non_numbers(self) -> None:
        with pytest.raises(LocationError, match="number"):
            Point("40", -73)  # type: ignore[arg-type]
        with pytest.raises(LocationError, match="number"):
            Point(True, -73)

    def test_point_crs(self) -> None:
        assert Point(1, 2).crs == CRS_2D
        assert Point(1, 2, 3).crs == CRS_3D  # altitude promotes to 4979
        assert Point(1, 2, 3).is_3d
        with pytest.raises(LocationError, match="altitude"):
            Point(1, 2, crs=CRS_3D)
        with pytest.raises(LocationError, match="CRS"):
            Point(1, 2, crs="urn:ogc:def:crs:EPSG::3857")

    def test_extremes_are_valid(self) -> None:
        Point(90, 180)
        Point(-90, -180)

    @pytest.mark.parametrize("radius", [0, -1, math.nan])
    def test_circle_radius(self, radius: float) -> None:
        with pytest.raises(LocationError):
            Circle(TIMES_SQUARE, radius)

    def test_ellipse(self) -> None:
        Ellipse(TIMES_SQUARE, 100, 200, 0)  # minor > major tolerated
        with pytest.raises(LocationError, match="orientation"):
            Ellipse(TIMES_SQUARE, 100, 50, 400)
        with pytest.raises(LocationError):
            Ellipse(TIMES_SQUARE, 0, 50, 10)

    def test_arcband(self) -> None:
        ArcBand(TIMES_SQUARE, 0, 100, 0, 360)
        with pytest.raises(LocationError, match="exceed"):
            ArcBand(TIMES_SQUARE, 100, 100, 0, 90)
        with pytest.raises(LocationError, match="negative"):
            ArcBand(TIMES_SQUARE, -1, 100, 0, 90)
        with pytest.raises(LocationError, match="opening"):
            ArcBand(TIMES_SQUARE, 0, 100, 0, 0)
        with pytest.raises(LocationError, match="start"):
            ArcBand(TIMES_SQUARE, 0, 100, -5, 10)

    def test_polygon_closed_and_big_enough(self) -> None:
        assert _square().crs == CRS_2D
        with pytest.raises(LocationError, match="not closed"):
            Polygon((Point(0, 0), Point(0, 1), Point(1, 1), Point(1, 0)))
        with pytest.raises(LocationError, match="at least 4"):
            Polygon((Point(0, 0), Point(0, 1), Point(0, 0)))
        with pytest.raises(LocationError, match="distinct"):
            Polygon((Point(0, 0), Point(0, 1), Point(0, 1), Point(0, 0)))
        with pytest.raises(LocationError, match="mixes"):
            Polygon((Point(0, 0), Point(0, 1), Point(1, 1, 5), Point(0, 0)))

    def test_polygon_accepts_list_and_freezes_it(self) -> None:
        ring = list(_square().exterior)
        poly = Polygon(ring)  # type: ignore[arg-type]
        assert isinstance(poly.exterior, tuple)
        assert poly == _square()
        assert hash(poly) == hash(_square())

    def test_3d_shapes_need_3d(self) -> None:
        with pytest.raises(LocationError, match="3D"):
            Sphere(TIMES_SQUARE, 10)
        with pytest.raises(LocationError, match="3D"):
            Ellipsoid(TIMES_SQUARE, 10, 5, 3, 0)
        with pytest.raises(LocationError, match="3D"):
            Prism(_square(), 10)
        Prism(_square(10.0), 3)

    def test_frozen(self) -> None:
        with pytest.raises(AttributeError):
            TIMES_SQUARE.lat = 0  # type: ignore[misc]

    def test_reference_point(self) -> None:
        assert reference_point(Circle(TIMES_SQUARE, 5)) == TIMES_SQUARE
        assert reference_point(_square()) == Point(40.0, -74.0)
        assert reference_point(Prism(_square(1.0), 2)) == Point(40.0, -74.0, 1.0)


class TestShapely:
    def test_fifty_metre_circle_area(self) -> None:
        geom = to_shapely(Circle(TIMES_SQUARE, 50))
        area = _local_area_m2(geom, TIMES_SQUARE.lat)
        assert area == pytest.approx(math.pi * 50**2, rel=0.01)
        assert geom.is_valid
        assert geom.contains(SPoint(TIMES_SQUARE.lon, TIMES_SQUARE.lat))

    def test_circle_vertices_at_radius(self) -> None:
        # East and north at small distance: the local radii of curvature N and M.
        lon, lat = destination(TIMES_SQUARE, 90.0, 1000.0)
        assert lat == pytest.approx(TIMES_SQUARE.lat, abs=1e-4)
        s = math.sin(math.radians(TIMES_SQUARE.lat))
        w = 1 - _E2 * s * s
        east = math.radians(lon - TIMES_SQUARE.lon) * _A / math.sqrt(w)
        east *= math.cos(math.radians(TIMES_SQUARE.lat))
        assert east == pytest.approx(1000.0, rel=1e-4)
        lon, lat = destination(TIMES_SQUARE, 0.0, 1000.0)
        north = math.radians(lat - TIMES_SQUARE.lat) * _A * (1 - _E2) / w**1.5
        assert lon == pytest.approx(TIMES_SQUARE.lon, abs=1e-12)
        assert north == pytest.approx(1000.0, rel=1e-4)

    @pytest.mark.parametrize("lat0", [0.0, 40.758, 65.0, -33.9])
    @pytest.mark.parametrize("distance", [50.0, 10_000.0, 100_000.0])
    def test_destination_against_vincenty(self, lat0: float, distance: float) -> None:
        """The documented bound: < 0.01% of the distance up to 100 km, in every direction."""
        center = Point(lat0, 10.0)
        for bearing in range(0, 360, 15):
            lon, lat = destination(center, bearing, distance)
            vlon, vlat = _vincenty_direct(lat0, 10.0, bearing, distance)
            s = math.sin(math.radians(vlat))
            w = 1 - _E2 * s * s
            dn = math.radians(lat - vlat) * _A * (1 - _E2) / w**1.5
            de = math.radians(lon - vlon) * _A / math.sqrt(w) * math.cos(math.radians(vlat))
            assert math.hypot(dn, de) < 1e-4 * distance, (bearing, math.hypot(dn, de))

    def test_vectorised_vertices_match_destination(self) -> None:
        geom = to_shapely(Circle(TIMES_SQUARE, 5000), segments=16)
        for i, (lon, lat) in enumerate(list(geom.exterior.coords)[:16]):
            elon, elat = destination(TIMES_SQUARE, i * 22.5, 5000)
            assert lon == pytest.approx(elon, abs=1e-12)
            assert lat == pytest.approx(elat, abs=1e-12)

    def test_ellipse_area(self) -> None:
        geom = to_shapely(Ellipse(TIMES_SQUARE, 200, 50, 30))
        assert _local_area_m2(geom, TIMES_SQUARE.lat) == pytest.approx(math.pi * 200 * 50, rel=0.01)

    def test_ellipse_orientation_north_east(self) -> None:
        geom = to_shapely(Ellipse(TIMES_SQUARE, 1000, 10, 0))  # long axis north-south
        minx, miny, maxx, maxy = geom.bounds
        assert (maxy - miny) > 50 * (maxx - minx)

    def test_arcband_area(self) -> None:
        band = ArcBand(TIMES_SQUARE, 100, 300, 45, 90)
        expected = math.pi * (300**2 - 100**2) / 4
        geom = to_shapely(band)
        assert geom.is_valid
        assert _local_area_m2(geom, TIMES_SQUARE.lat) == pytest.approx(expected, rel=0.01)
        # The band opens to the south-east quadrant (bearings 45..135), not the centre.
        assert not geom.contains(SPoint(TIMES_SQUARE.lon, TIMES_SQUARE.lat))
        lon, lat = destination(TIMES_SQUARE, 90, 200)
        assert geom.contains(SPoint(lon, lat))
        lon, lat = destination(TIMES_SQUARE, 270, 200)
        assert not geom.contains(SPoint(lon, lat))

    def test_sector(self) -> None:
        geom = to_shapely(ArcBand(TIMES_SQUARE, 0, 300, 0, 60))
        assert _local_area_m2(geom, TIMES_SQUARE.lat) == pytest.approx(
            math.pi * 300**2 / 6, rel=0.01
        )

    def test_full_arcband_is_annulus_or_disc(self) -> None:
        annulus = to_shapely(ArcBand(TIMES_SQUARE, 100, 300, 0, 360))
        assert annulus.is_valid
        assert len(annulus.interiors) == 1
        assert _local_area_m2(annulus, TIMES_SQUARE.lat) == pytest.approx(
            math.pi * (300**2 - 100**2), rel=0.01
        )
        disc = to_shapely(ArcBand(TIMES_SQUARE, 0, 300, 90, 360))
        assert disc.is_valid
        assert _local_area_m2(disc, TIMES_SQUARE.lat) == pytest.approx(math.pi * 300**2, rel=0.01)

    def test_bow_tie_polygon_repaired(self) -> None:
        bow_tie = Polygon((Point(0, 0), Point(1, 1), Point(1, 0), Point(0, 1), Point(0, 0)))
        geom = to_shapely(bow_tie)
        assert geom.is_valid
        assert geom.area == pytest.approx(0.5)

    def test_polygon_point_prism_sphere(self) -> None:
        assert to_shapely(TIMES_SQUARE).equals(SPoint(-73.9855, 40.758))
        assert to_shapely(_square()).area == pytest.approx(1.0)
        assert to_shapely(Prism(_square(5.0), 10)).area == pytest.approx(1.0)
        sphere = to_shapely(Sphere(Point(40.758, -73.9855, 20.0), 50))
        assert _local_area_m2(sphere, 40.758) == pytest.approx(math.pi * 2500, rel=0.01)
        ellipsoid = to_shapely(Ellipsoid(Point(40.758, -73.9855, 20.0), 50, 20, 5, 0))
        assert _local_area_m2(ellipsoid, 40.758) == pytest.approx(math.pi * 1000, rel=0.01)

    def test_segments(self) -> None:
        assert len(to_shapely(Circle(TIMES_SQUARE, 50), segments=16).exterior.coords) == 17
        with pytest.raises(LocationError):
            to_shapely(Circle(TIMES_SQUARE, 50), segments=3)

    def test_manhattan_point_in_borough(self) -> None:
        data = json.loads(BOROUGHS.read_text())
        boroughs = {
            f["properties"]["boro_name"]: geojson_shape(f["geometry"]) for f in data["features"]
        }
        point = to_shapely(TIMES_SQUARE)
        inside = [name for name, geom in boroughs.items() if geom.contains(point)]
        assert inside == ["Manhattan"]
        circle = to_shapely(Circle(TIMES_SQUARE, 50))
        assert boroughs["Manhattan"].contains(circle)
        assert not boroughs["Brooklyn"].intersects(circle)

    def test_not_a_shape(self) -> None:
        with pytest.raises(LocationError):
            to_shapely("POINT (1 2)")  # type: ignore[arg-type]


@settings(max_examples=150, deadline=None)
@given(shapes)
def test_every_valid_shape_converts(shape: object) -> None:
    geom = to_shapely(shape)  # type: ignore[arg-type]
    assert not geom.is_empty
    assert geom.is_valid


def _vincenty_direct(lat1: float, lon1: float, azimuth: float, s: float) -> tuple[float, float]:
    """Vincenty's (1975) direct geodesic on WGS 84: the independent reference above."""
    a = _A
    f = 1 / 298.257223563
    b = a * (1 - f)
    alpha1 = math.radians(azimuth)
    tan_u1 = (1 - f) * math.tan(math.radians(lat1))
    cos_u1 = 1 / math.sqrt(1 + tan_u1 * tan_u1)
    sin_u1 = tan_u1 * cos_u1
    sigma1 = math.atan2(tan_u1, math.cos(alpha1))
    sin_alpha = cos_u1 * math.sin(alpha1)
    cos2_alpha = 1 - sin_alpha * sin_alpha
    u2 = cos2_alpha * (a * a - b * b) / (b * b)
    big_a = 1 + u2 / 16384 * (4096 + u2 * (-768 + u2 * (320 - 175 * u2)))
    big_b = u2 / 1024 * (256 + u2 * (-128 + u2 * (74 - 47 * u2)))
    sigma = s / (b * big_a)
    for _ in range(100):
        cos2sm = math.cos(2 * sigma1 + sigma)
        sin_s, cos_s = math.sin(sigma), math.cos(sigma)
        d_sigma = (
            big_b
            * sin_s
            * (
                cos2sm
                + big_b
                / 4
                * (
                    cos_s * (-1 + 2 * cos2sm * cos2sm)
                    - big_b / 6 * cos2sm * (-3 + 4 * sin_s * sin_s) * (-3 + 4 * cos2sm * cos2sm)
                )
            )
        )
        previous, sigma = sigma, s / (b * big_a) + d_sigma
        if abs(sigma - previous) < 1e-13:
            break
    cos2sm = math.cos(2 * sigma1 + sigma)
    sin_s, cos_s = math.sin(sigma), math.cos(sigma)
    tmp = sin_u1 * sin_s - cos_u1 * cos_s * math.cos(alpha1)
    phi2 = math.atan2(
        sin_u1 * cos_s + cos_u1 * sin_s * math.cos(alpha1),
        (1 - f) * math.sqrt(sin_alpha * sin_alpha + tmp * tmp),
    )
    lam = math.atan2(sin_s * math.sin(alpha1), cos_u1 * cos_s - sin_u1 * sin_s * math.cos(alpha1))
    c = f / 16 * cos2_alpha * (4 + f * (4 - 3 * cos2_alpha))
    big_l = lam - (1 - c) * f * sin_alpha * (
        sigma + c * sin_s * (cos2sm + c * cos_s * (-1 + 2 * cos2sm * cos2sm))
    )
    return lon1 + math.degrees(big_l), math.degrees(phi2)


@pytest.mark.parametrize(
    "ring",
    [
        # found by the property test above: GEOS's make_valid raises TopologyException
        # ("Result area inconsistent with overlay operation") on these bow ties
        [(1e-250, -73.9), (1e-300, 1e-300), (-73.9, 1.0), (0.0, 1e-250), (2.5e-250, 5e-324),
         (-1.0, -73.9)],
        [(-1e-250, 5e-324), (5e-324, 1e-300), (1e-300, 0.0), (-1.0, -73.9), (-1e-250, 1.0),
         (-73.9, -73.9)],
        # found by it on 2026-12-07: make_valid returns an invalid GEOMETRYCOLLECTION here
        [(1.0, 1.0), (1.0, 0.0), (0.0, 1.0), (-1.0, 0.0), (0.0, -1.0),
         (5.757868336096449e-202, 0.0), (-1.0, -1.0), (0.0, 0.0)],
    ],
)  # fmt: skip
def test_a_ring_geos_cannot_repair_becomes_its_hull_not_an_exception(
    ring: list[tuple[float, float]],
) -> None:
    """A hostile PIDF-LO polygon must give a usable area or a LocationError, never GEOS's
    own exception (the LoST server would answer it as an internal error)."""
    shape = Polygon(tuple(Point(lat, lon) for lon, lat in [*ring, ring[0]]))
    geom = to_shapely(shape)
    assert geom.is_valid and not geom.is_empty
    for lon, lat in ring:
        assert geom.covers(SPoint(lon, lat))
