"""Boundary stores: which service area holds a location, and who serves it.

A store answers three questions for the LoST engine: which service area holds this shape
(`lookup`), which one this civic address belongs to (`lookup_civic`), and what a service area's
boundary is (`boundary`, for `serviceBoundary` by value and `getServiceBoundary`). Two stores
implement the same protocol and pass the same tests: `EmbeddedStore` (shapely, in memory, the
default) and `PostgisStore` (PostgreSQL + PostGIS, for data sets too large for memory).

Overlap rule (the same in both stores): a point maps to the area that covers it. A circle or
polygon that touches several areas maps to an area it covers *completely* if there is one (the
largest such), otherwise to the area holding the largest part of it. So a polygon covering one
borough fully and another partly maps to the first (NENA i3 test expectation), and a 50 m
circle straddling a borough line maps to the borough holding most of it. `StoreHit.candidates`
says how many areas were touched, so the engine can log ambiguity.

Civic rule: a `CivicRule` matches an address when every field it names equals the address's
field (case-insensitively, "Kings County" equal to "Kings"). The most specific matching rule
wins: the one naming the most fields, then the one naming the deepest level (A3 beats A2).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ng911.location.civic import CivicAddress
from ng911.location.geodetic import Shape, to_shapely
from ng911.lost.errors import BoundaryDataError

DEFAULT_DATA = Path(__file__).resolve().parent.parent / "data" / "nyc-boroughs.geojson"

# RFC 5031 §4.2 emergency services, and NENA i3's urn:emergency:service:sos.* tree.
SOS_SERVICES: tuple[str, ...] = (
    "urn:service:sos",
    "urn:service:sos.ambulance",
    "urn:service:sos.fire",
    "urn:service:sos.police",
    "urn:service:sos.marine",
    "urn:service:sos.mountain",
    "urn:service:sos.poison",
    "urn:service:sos.gas",
    "urn:service:sos.physician",
    "urn:emergency:service:sos",
    "urn:emergency:service:sos.psap",
    "urn:emergency:service:sos.police",
    "urn:emergency:service:sos.fire",
    "urn:emergency:service:sos.ems",
)

CIVIC_LEVELS: tuple[str, ...] = ("country", "A1", "A2", "A3", "A4", "A5", "A6", "PC")


@dataclass(frozen=True, slots=True)
class ServiceArea:
    """One service boundary and the PSAP behind it: the data of a `<mapping>`.

    `key` is both the mapping's sourceId and the serviceBoundaryReference key.
    """

    key: str
    name: str
    uris: tuple[str, ...]
    display_name: str
    service_number: str | None = "911"
    services: tuple[str, ...] = SOS_SERVICES


@dataclass(frozen=True, slots=True)
class StoreHit:
    """The answer of a store: the area, and how many areas the query touched."""

    area: ServiceArea
    candidates: int = 1


@dataclass(frozen=True, slots=True)
class CivicRule:
    """Civic fields (level, value) that select a service area; values compare normalised."""

    fields: tuple[tuple[str, str], ...]
    key: str

    def specificity(self) -> tuple[int, int]:
        deepest = max(
            (CIVIC_LEVELS.index(f) for f, _ in self.fields if f in CIVIC_LEVELS), default=0
        )
        return (len(self.fields), deepest)


class BoundaryStore(Protocol):
    """What the LoST engine needs from a store (embedded or PostGIS)."""

    def lookup(self, shape: Shape, service: str) -> StoreHit | None: ...

    def lookup_civic(self, civic: CivicAddress, service: str) -> StoreHit | None: ...

    def services(self) -> list[str]: ...

    def area(self, key: str) -> ServiceArea | None: ...

    def boundary(self, key: str) -> Any | None:  # a shapely geometry (x=lon, y=lat)
        ...

    def close(self) -> None: ...


@runtime_checkable
class AsyncLookups(Protocol):
    """A store whose lookups can be awaited (PostGIS on a connection pool): the LoST server
    awaits these so that a query never blocks the event loop, and the engine decides on
    their results (`LostEngine.handle(hits=...)`)."""

    async def lookup_async(self, shape: Shape, service: str) -> StoreHit | None: ...

    async def lookup_civic_async(self, civic: CivicAddress, service: str) -> StoreHit | None: ...

    async def boundary_async(self, key: str) -> Any | None: ...

    async def close_async(self) -> None:
        """Close what the awaited lookups opened on the running loop (reopened on use)."""


def query_geometry(shape: Shape) -> Any:
    """The planar (x = lon, y = lat) polygon both stores test a query shape with.

    `to_shapely` (64-gon circles, azimuthal-equidistant vertices): one function for both
    stores keeps their answers equal.
    """
    return to_shapely(shape)


def norm(value: str) -> str:
    """Normalise a civic value for comparison: case, spaces, a trailing "county"."""
    v = " ".join(value.split()).casefold()
    if v.endswith(" county"):
        v = v[: -len(" county")]
    return v


def match_civic(rules: Iterable[CivicRule], civic: CivicAddress) -> CivicRule | None:
    """The most specific rule whose every field equals the address's (module docstring)."""
    best: CivicRule | None = None
    best_score = (-1, -1)
    for rule in rules:
        ok = True
        for name, value in rule.fields:
            have = civic.get(name)
            if have is None or norm(have) != value:
                ok = False
                break
        if ok:
            score = rule.specificity()
            if score > best_score:
                best, best_score = rule, score
    return best


# --------------------------------------------------------------------------- data


@dataclass(frozen=True, slots=True)
class MappingConfig:
    """How GeoJSON features become PSAP mappings.

    Default: a PSAP per feature, URI `<scheme>:psap-<slug>@<domain>` (slug from the feature's
    name), serviceNumber 911, displayName "<Name> PSAP". `uris` overrides a feature's URIs by
    slug (e.g. {"queens": ("sips:psap-queens@esinet.example",)}); `uri_scheme` = "sips" makes
    every generated URI sips:.
    """

    uri_scheme: str = "sip"
    domain: str = "esinet.example"
    uris: dict[str, tuple[str, ...]] = field(default_factory=dict)
    services: tuple[str, ...] = SOS_SERVICES
    service_number: str | None = "911"
    name_property: str = "boro_name"
    key_property: str = "boro_code"
    key_prefix: str = "nyc-boro-"


def slug(name: str) -> str:
    return "-".join(name.lower().replace("_", " ").split())


# NYC: civic addresses name the borough as county (A2) or city/borough (A3). Both map.
NYC_CIVIC: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # borough: (A2 county names, A3 city/borough names)
    "Manhattan": (("New York",), ("Manhattan", "New York", "New York City")),
    "Bronx": (("Bronx",), ("Bronx", "The Bronx")),
    "Brooklyn": (("Kings",), ("Brooklyn",)),
    "Queens": (("Queens",), ("Queens",)),
    "Staten Island": (("Richmond",), ("Staten Island",)),
}


def nyc_civic_rules(name: str, key: str) -> list[CivicRule]:
    a2s, a3s = NYC_CIVIC.get(name, ((), ()))
    rules: list[CivicRule] = []
    for a1 in ("ny", "new york"):
        for a2 in a2s:
            rules.append(CivicRule((("country", "us"), ("A1", a1), ("A2", norm(a2))), key))
        for a3 in a3s:
            rules.append(CivicRule((("country", "us"), ("A1", a1), ("A3", norm(a3))), key))
    return rules


@dataclass(frozen=True, slots=True)
class AreaData:
    """One loaded feature: its mapping data, its GeoJSON geometry, its civic rules."""

    area: ServiceArea
    geometry: dict[str, Any]
    civic: tuple[CivicRule, ...]


def load_geojson(
    path: Path | str | None = None, config: MappingConfig | None = None
) -> list[AreaData]:
    """Read a GeoJSON FeatureCollection of service areas (default: the five NYC boroughs).

    A feature may carry `uri` / `uris`, `display_name`, `service_number`, `key` and `civic`
    (a list of {field: value} objects) properties; otherwise the defaults of `config` apply.
    """
    cfg = config or MappingConfig()
    p = Path(path) if path is not None else DEFAULT_DATA
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise BoundaryDataError(f"{p}: cannot read: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BoundaryDataError(f"{p}: not GeoJSON: {exc}") from None
    features = doc.get("features") if isinstance(doc, dict) else None
    if not isinstance(features, list) or not all(isinstance(f, dict) for f in features):
        raise BoundaryDataError(f"{p}: not a GeoJSON FeatureCollection (a list of features)")
    out: list[AreaData] = []
    for i, feat in enumerate(features):
        props = feat.get("properties") or {}
        if not isinstance(props, dict):
            raise BoundaryDataError(f"{p}: feature {i + 1}: properties is not an object")
        geom = feat.get("geometry")
        if not isinstance(geom, dict) or geom.get("type") not in ("Polygon", "MultiPolygon"):
            continue
        name = str(props.get(cfg.name_property) or props.get("name") or f"area {i + 1}")
        s = slug(name)
        key = str(props.get("key") or f"{cfg.key_prefix}{props.get(cfg.key_property, i + 1)}")
        if "uris" in props:
            uris = tuple(str(u) for u in props["uris"])
        elif "uri" in props:
            uris = (str(props["uri"]),)
        elif s in cfg.uris:
            uris = cfg.uris[s]
        else:
            uris = (f"{cfg.uri_scheme}:psap-{s}@{cfg.domain}",)
        area = ServiceArea(
            key=key,
            name=name,
            uris=uris,
            display_name=str(props.get("display_name") or f"{name} PSAP"),
            service_number=str(props["service_number"])
            if "service_number" in props
            else cfg.service_number,
            services=cfg.services,
        )
        rules: list[CivicRule]
        if isinstance(props.get("civic"), list):
            rules = [
                CivicRule(tuple((str(k), norm(str(v))) for k, v in r.items()), key)
                for r in props["civic"]
                if isinstance(r, dict)
            ]
        else:
            rules = nyc_civic_rules(name, key)
        out.append(AreaData(area, geom, tuple(rules)))
    if not out:
        raise BoundaryDataError(f"{p}: no Polygon/MultiPolygon features")
    return out
