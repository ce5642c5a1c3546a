"""Hypothesis strategies for valid RFC 5491 shapes and civic addresses (shared by tests)."""

from __future__ import annotations

from hypothesis import strategies as st

from ng911.location.civic import CA_TYPES, CivicAddress
from ng911.location.geodetic import (
    ArcBand,
    Circle,
    Ellipse,
    Ellipsoid,
    Point,
    Polygon,
    Prism,
    Shape,
    Sphere,
)

lats = st.floats(min_value=-89.0, max_value=89.0, allow_nan=False)
lons = st.floats(min_value=-179.0, max_value=179.0, allow_nan=False)
alts = st.floats(min_value=-500.0, max_value=9000.0, allow_nan=False)
radii = st.floats(min_value=0.5, max_value=100_000.0, allow_nan=False)
angles = st.floats(min_value=0.0, max_value=360.0, allow_nan=False)

points_2d = st.builds(Point, lats, lons)
points_3d = st.builds(Point, lats, lons, alts)


@st.composite
def polygons(draw: st.DrawFn, *, three_d: bool = False) -> Polygon:
    n = draw(st.integers(min_value=3, max_value=12))
    alt = draw(alts) if three_d else None
    pts = draw(
        st.lists(st.tuples(lats, lons), min_size=n, max_size=n, unique=True).filter(
            lambda xs: len(set(xs)) >= 3
        )
    )
    ring = [Point(lat, lon, alt) for lat, lon in pts]
    ring.append(ring[0])
    return Polygon(tuple(ring))


@st.composite
def arcbands(draw: st.DrawFn) -> ArcBand:
    inner = draw(st.floats(min_value=0.0, max_value=50_000.0, allow_nan=False))
    extra = draw(radii)
    opening = draw(st.floats(min_value=0.1, max_value=360.0, allow_nan=False))
    return ArcBand(draw(points_2d), inner, inner + extra, draw(angles), opening)


shapes: st.SearchStrategy[Shape] = st.one_of(
    points_2d,
    points_3d,
    st.builds(Circle, points_2d, radii),
    st.builds(Ellipse, points_2d, radii, radii, angles),
    arcbands(),
    polygons(),
    polygons(three_d=True),
    st.builds(Sphere, points_3d, radii),
    st.builds(Ellipsoid, points_3d, radii, radii, radii, angles),
    st.builds(Prism, polygons(three_d=True), radii),
)

# xs:token values: no leading/trailing/double ASCII space; other Unicode spaces (NBSP...) are
# ordinary characters for xs:token and must survive the round-trip.
tokens = (
    st.text(
        alphabet=st.characters(whitelist_categories=("Lu", "Ll", "Nd", "Zs", "Pd", "Po")),
        min_size=1,
        max_size=30,
    )
    .map(lambda s: " ".join(part for part in s.split(" ") if part))
    .filter(bool)
)


@st.composite
def civics(draw: st.DrawFn) -> CivicAddress:
    names = draw(st.lists(st.sampled_from(CA_TYPES), min_size=1, max_size=10, unique=True))
    mapping = {name: draw(tokens) for name in names}
    if draw(st.booleans()):
        mapping["{urn:ietf:params:xml:ns:pidf:geopriv10:civicAddr:ext}PN"] = draw(tokens)
    lang = draw(st.sampled_from([None, "en-US", "fr-CA", "de"]))
    return CivicAddress.of(mapping, lang=lang)
