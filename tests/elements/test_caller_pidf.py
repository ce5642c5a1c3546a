"""The caller's PIDF-LO from its cut form: the same bytes as building the document."""

from __future__ import annotations

import random

import pytest

from ng911.elements.config import CallerConfig, ListenerConfig
from ng911.elements.ua import Caller, PidfForm
from ng911.location.geodetic import Circle, Point
from ng911.location.pidf import build_pidf, parse_pidf, simple_pidf

EDGES = [
    (0.0, 0.0),
    (90.0, 180.0),
    (-90.0, -180.0),
    (1.25, 2.5),  # the form's own probe
    (40.7580, -73.9855),
    (1e-07, -3.3e-05),
    (12.0, -0.5),
    (-33.868820, 151.209296),
]


def _points(n: int) -> list[tuple[float, float]]:
    rng = random.Random(911)
    return EDGES + [(rng.uniform(-90, 90), rng.uniform(-180, 180)) for _ in range(n)]


@pytest.mark.parametrize("radius", [0.0, 30.0, 12.5])
def test_the_caller_sends_what_building_the_document_gives(radius: float) -> None:
    caller = Caller(
        CallerConfig(listeners=(ListenerConfig("udp"),), radius=radius, aor="sip:bob@vsp.example")
    )
    for lat, lon in _points(300):
        sent = caller._pidf_of(lat, lon)
        assert sent == caller._pidf_doc(Point(lat, lon))
        where = parse_pidf(sent).primary.location
        centre = where.center if isinstance(where, Circle) else where
        assert (centre.lat, centre.lon) == (lat, lon)


def test_a_document_without_a_single_cut_is_built_every_time() -> None:
    """Should the probe's text appear twice in the document, the form cuts nothing and
    builds each document in full."""

    def build(centre: Point) -> bytes:
        doc = build_pidf(simple_pidf("pres:alice@vsp.example", centre, method="GPS"))
        return doc + b"<!-- >1.25 2.5< -->"

    form = PidfForm(build)
    for lat, lon in _points(20):
        assert form.fill(Point(lat, lon)) == build(Point(lat, lon))


def test_an_invalid_position_is_refused_as_before() -> None:
    caller = Caller(CallerConfig(listeners=(ListenerConfig("udp"),)))
    for lat, lon in ((91.0, 0.0), (0.0, 181.0), (float("nan"), 0.0)):
        with pytest.raises(Exception) as got:
            caller._pidf_doc(Point(lat, lon))
        with pytest.raises(got.type):
            caller._pidf_of(lat, lon)
