"""Location hot paths on one core: what the ESRP does per call and the LoST server per query.

Variants:
  parse_xml         hardened parse only (size scan, DOCTYPE scan, lxml, depth walk)
  parse_pidf        a device PIDF-LO with a circle (what a caller attaches, ~1 KB)
  parse_pidf civic  the same with a 10-element civic address
  build_pidf        serialise the circle PIDF-LO
  parse_shape       gs:Circle element -> Circle (element already parsed)
  to_shapely        Circle -> 64-gon; Polygon (8 vertices) -> shapely Polygon
  geolocation       parse a Geolocation header value and take its cid
Each figure is the best of 5 runs of N operations. Writes bench/results/location.json.

    .venv/bin/python bench/location.py [--quick]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from lxml import etree

from ng911.location.civic import CivicAddress
from ng911.location.conveyance import cid_of, parse_geolocation
from ng911.location.geodetic import Circle, Point, Polygon, destination, to_shapely
from ng911.location.gml import parse_shape, shape_to_element
from ng911.location.pidf import build_pidf, parse_pidf, simple_pidf
from ng911.location.xml import parse_xml
from rig import best_rate, write_result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer iterations (CI smoke run)")
    args = ap.parse_args()
    n = 500 if args.quick else 5000

    circle = Circle(Point(40.758, -73.9855), 30.0)
    pidf = build_pidf(
        simple_pidf("pres:caller@vsp.example", circle, method="GPS", timestamp="2026-11-25T15:00Z")
    )
    civic = CivicAddress.of(
        country="US", A1="NY", A2="New York", A3="New York", RD="Broadway", STS="ST",
        HNO="1500", PC="10036", FLR="3", NAM="Times Square Tower",
    )  # fmt: skip
    pidf_civic = build_pidf(simple_pidf("pres:caller@vsp.example", civic))
    circle_el = parse_xml(etree.tostring(shape_to_element(circle)))
    octagon = [destination(circle.center, 45.0 * i, 500.0) for i in range(8)]
    ring = tuple(Point(lat, lon) for lon, lat in octagon)
    polygon = Polygon((*ring, ring[0]))
    header = "<cid:4f8a1c2e9b@caller.vsp.example>;inserted-by=caller"

    cases: list[tuple[str, Callable[[], object], int]] = [
        ("parse_xml (pidf)", lambda: parse_xml(pidf), len(pidf)),
        ("parse_pidf circle", lambda: parse_pidf(pidf), len(pidf)),
        ("parse_pidf civic", lambda: parse_pidf(pidf_civic), len(pidf_civic)),
        ("build_pidf circle", lambda: build_pidf(simple_pidf("pres:x@y", circle)), 0),
        ("parse_shape circle", lambda: parse_shape(circle_el), 0),
        ("to_shapely circle", lambda: to_shapely(circle), 0),
        ("to_shapely polygon", lambda: to_shapely(polygon), 0),
        ("geolocation + cid", lambda: cid_of(parse_geolocation(header)[0].uri), len(header)),
    ]
    results = []
    print(f"{'operation':<22}{'bytes':>7}{'ops/s':>12}{'µs/op':>9}")
    for name, fn, size in cases:
        r = best_rate(fn, n)
        results.append(
            {
                "operation": name,
                "bytes": size,
                "ops_per_s": round(r),
                "us_per_op": round(1e6 / r, 2),
            }
        )
        print(f"{name:<22}{size or '':>7}{r:>12,.0f}{1e6 / r:>9.1f}")
    write_result("location", {"n": n, "results": results})


if __name__ == "__main__":
    main()
