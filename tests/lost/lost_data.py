"""Shared test data for the LoST tests (points per borough, outside points)."""

from __future__ import annotations

# Points well inside each borough (checked against the boundary data by the tests).
BOROUGH_POINTS: dict[str, tuple[float, float]] = {
    "manhattan": (40.7831, -73.9712),
    "bronx": (40.8448, -73.8648),
    "brooklyn": (40.6782, -73.9442),
    "queens": (40.7282, -73.7949),
    "staten-island": (40.5795, -74.1502),
}
OUTSIDE_POINTS: dict[str, tuple[float, float]] = {
    "newark": (40.7357, -74.1724),
    "atlantic": (40.2, -73.2),
}


def psap_uri(slug: str, scheme: str = "sip") -> str:
    return f"{scheme}:psap-{slug}@esinet.example"
