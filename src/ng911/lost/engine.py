"""The ECRF's decisions: a parsed LoST request in, a response (or "ask the next server") out.

Sans-I/O like the protocol module: the caller passes the current time and owns the HTTP. What
it decides, per RFC 5222 and the RFC 5582 tree of LoST servers:

- `findService` (§8): the first location whose profile we know is used (`locationUsed`); none
  -> `locationProfileUnrecognized`. An unknown service whose parent we serve (`sos.foo` ->
  `sos`) is answered for the parent with a `serviceSubstitution` warning; otherwise
  `serviceNotImplemented`. `validateLocation` gets a `locationValidationUnavailable` warning
  (boundary data cannot validate street addresses).
- Coverage: a location no service area holds goes to the configured next server: a recursive
  query is forwarded (`Forward`, with our own `<via>` appended to the path, §8.3), an
  iterative one is answered with `<redirect>` (§13.3). Without a next server: the configured
  default mapping with a `defaultMappingReturned` warning, else `notFound`.
- Loops (§13.1 `loop`): a request whose path already holds our own source id came round.
- `asOf` (LoST planned-changes extension, not RFC 5222: see `protocol._as_of`) is echoed in
  findService and listServices(ByLocation) answers, in the form it came; the data has one
  version, so the answer is today's whatever the time asked.
- Every mapping carries `expires` = now + ttl, `lastUpdated` (when the data was loaded),
  `source` (our id), `sourceId` (the area key), and the boundary by reference (key = area key)
  or by value when asked (`serviceBoundary="value"`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from ng911.location.civic import CivicAddress
from ng911.location.geodetic import Point, Polygon, Shape
from ng911.lost.embedded import EmbeddedStore
from ng911.lost.errors import LostProtocolError
from ng911.lost.fast_request import read_point
from ng911.lost.protocol import (
    PROFILE_GEODETIC,
    FindServiceRequest,
    FindServiceResponse,
    GetServiceBoundaryRequest,
    GetServiceBoundaryResponse,
    ListServicesByLocationRequest,
    ListServicesByLocationResponse,
    ListServicesRequest,
    ListServicesResponse,
    LostErrorResponse,
    LostLocation,
    LostRequest,
    LostResponse,
    LostWarning,
    Mapping,
    Redirect,
    ServiceBoundary,
    ServiceBoundaryReference,
    build_response,
)
from ng911.lost.store import BoundaryStore, ServiceArea, StoreHit


@dataclass(frozen=True, slots=True)
class NextServer:
    """The LoST server asked for locations outside our coverage (RFC 5582 §4).

    `url` is where a recursive query is POSTed; `target` is what an iterative client is
    told in `<redirect target=…>` (default: the URL itself, since our clients and test
    peers have no U-NAPTR; an operator with DNS sets the application unique server name).
    """

    url: str
    target: str | None = None

    @property
    def redirect_target(self) -> str:
        return self.target or self.url


@dataclass(frozen=True, slots=True)
class EngineConfig:
    source: str = "ecrf.esinet.example"  # our LoST application unique server name (§5.1)
    ttl: float = 3600.0  # seconds a mapping may be cached (mapping/@expires, §5.2)
    next_server: NextServer | None = None
    default_area: ServiceArea | None = None  # the default route's mapping
    last_updated: str | None = None  # default: when the engine was created


@dataclass(frozen=True, slots=True)
class Forward:
    """Ask `url` this request (our via already appended) and relay its answer."""

    url: str
    request: LostRequest


def _ts(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def geometry_to_boundary(geom: Any) -> ServiceBoundary:
    """A shapely (Multi)Polygon as a geodetic-2d `<serviceBoundary>` of gml:Polygons."""
    polys = list(getattr(geom, "geoms", [geom]))
    items = []
    for p in polys:
        if p.geom_type != "Polygon" or p.is_empty:
            continue
        ring = tuple(Point(lat=float(y), lon=float(x)) for x, y in p.exterior.coords)
        items.append(Polygon(ring))
    return ServiceBoundary(PROFILE_GEODETIC, tuple(items))


@dataclass
class LostEngine:
    """Answers LoST requests from a `BoundaryStore` (see the module docstring)."""

    store: BoundaryStore
    config: EngineConfig = field(default_factory=EngineConfig)

    def __post_init__(self) -> None:
        self._last_updated = self.config.last_updated or _ts(datetime.now(UTC))
        self._services = list(self.store.services())
        self._service_set = set(self._services)
        self._boundaries: dict[str, ServiceBoundary] = {}
        self._expires_cache: tuple[int, str] = (-1, "")
        # The mappings of the current second by (area, service): every answer within one
        # second carries the same expires, so the same Mapping value (not an answer cache:
        # each request is still parsed, looked up and serialised).
        self._mappings: dict[tuple[str, str], tuple[ServiceArea, Mapping]] = {}
        self._mappings_sec = -1
        self._hits: dict[tuple[int, str], StoreHit | None] | None = None
        # `answer_point`: the embedded store's point lookup (no StoreHit; a native call in the
        # compiled build), and the answers' bytes by (markup, area)
        store = self.store
        self._embedded = store if isinstance(store, EmbeddedStore) else None
        self._answers: dict[tuple[object, str], tuple[ServiceArea, int, str, bytes]] = {}

    @property
    def source(self) -> str:
        return self.config.source

    # ------------------------------------------------------------------ entry point

    def handle(
        self,
        req: LostRequest,
        now: float | None = None,
        hits: dict[tuple[int, str], StoreHit | None] | None = None,
    ) -> LostResponse | Forward:
        """Decide; never raises for bad input (typed errors become `<errors>`).

        `hits`: the store's answers to `lookups(req)`, keyed by (id(location value),
        service), awaited beforehand from a store whose lookups are I/O; without it the
        store is asked inline."""
        self._hits = hits
        try:
            return self._handle(req, now)
        finally:
            self._hits = None

    def lookups(self, req: LostRequest) -> list[tuple[Shape | CivicAddress, str]]:
        """The store lookups `handle(req)` will make: (location value, service) pairs."""
        try:
            if isinstance(req, FindServiceRequest):
                if self.source in req.path:
                    return []
                service, _ = self._resolve_service(req.service)
                loc = self._pick_location(req.locations)
                assert loc.value is not None
                return [(loc.value, service)]
            if isinstance(req, ListServicesByLocationRequest):
                if self.source in req.path:
                    return []
                loc = self._pick_location(req.locations)
                assert loc.value is not None
                return [(loc.value, s) for s in self._wanted(req.service)]
        except LostProtocolError:
            pass  # `handle` answers the error itself
        return []

    def boundaries_needed(
        self, req: LostRequest, hits: dict[tuple[int, str], StoreHit | None]
    ) -> list[str]:
        """Area keys whose boundary `handle(req)` will read and that are not cached yet."""
        keys: list[str] = []
        if isinstance(req, GetServiceBoundaryRequest):
            keys.append(req.key)
        elif isinstance(req, FindServiceRequest) and req.service_boundary == "value":
            keys.extend(h.area.key for h in hits.values() if h is not None)
            if self.config.default_area is not None:
                keys.append(self.config.default_area.key)
        return [k for k in keys if k not in self._boundaries]

    def add_boundary(self, key: str, geom: Any | None) -> None:
        """Cache a boundary read from the store beforehand (`boundaries_needed`)."""
        if geom is not None:
            self._boundaries[key] = geometry_to_boundary(geom)

    def _handle(self, req: LostRequest, now: float | None) -> LostResponse | Forward:
        try:
            if isinstance(req, FindServiceRequest):
                return self.find_service(req, time.time() if now is None else now)
            if isinstance(req, ListServicesRequest):
                return self.list_services(req)
            if isinstance(req, ListServicesByLocationRequest):
                return self.list_services_by_location(req)
            return self.get_service_boundary(req)
        except LostProtocolError as exc:
            return self.error(exc.kind, exc.message or None)

    def error(self, kind: str, message: str | None = None) -> LostErrorResponse:
        return LostErrorResponse(kind=kind, source=self.source, message=message)

    # ------------------------------------------------------------------ findService

    def _expires(self, now: float) -> str:
        sec = int(now)
        cached_sec, text = self._expires_cache
        if cached_sec != sec:
            text = _ts(datetime.fromtimestamp(sec, UTC) + timedelta(seconds=self.config.ttl))
            self._expires_cache = (sec, text)
        return text

    def _resolve_service(self, service: str) -> tuple[str, LostWarning | None]:
        if service in self._service_set:
            return service, None
        parent = service
        while "." in parent.rsplit(":", 1)[-1]:
            parent = parent.rsplit(".", 1)[0]
            if parent in self._service_set:
                return parent, LostWarning(
                    "serviceSubstitution", f"{service} is not served here; answering {parent}"
                )
        raise LostProtocolError("serviceNotImplemented", f"{service} is not served here")

    @staticmethod
    def _pick_location(locations: tuple[LostLocation, ...]) -> LostLocation:
        for loc in locations:
            if loc.value is not None:
                return loc
        profiles = ", ".join(sorted({loc.profile or "(none)" for loc in locations}))
        raise LostProtocolError("locationProfileUnrecognized", f"unknown profile(s): {profiles}")

    def _lookup(self, loc: LostLocation, service: str) -> StoreHit | None:
        if self._hits is not None:
            return self._hits.get((id(loc.value), service))
        if isinstance(loc.value, CivicAddress):
            return self.store.lookup_civic(loc.value, service)
        assert loc.value is not None
        return self.store.lookup(loc.value, service)

    def _not_covered(
        self, req: FindServiceRequest | ListServicesByLocationRequest, recursive: bool
    ) -> Forward | Redirect | None:
        nxt = self.config.next_server
        if nxt is None:
            return None
        if recursive:
            return Forward(nxt.url, replace(req, path=(*req.path, self.source)))
        return Redirect(
            target=nxt.redirect_target,
            source=self.source,
            message="location outside this server's coverage",
        )

    def boundary_value(self, key: str) -> ServiceBoundary | None:
        b = self._boundaries.get(key)
        if b is None and self._hits is None:  # with `hits`: read beforehand, or there is none
            geom = self.store.boundary(key)
            if geom is None:
                return None
            b = geometry_to_boundary(geom)
            self._boundaries[key] = b
        return b

    def mapping_for(
        self, area: ServiceArea, service: str, now: float, boundary: str | None
    ) -> Mapping:
        if boundary == "value":
            return self._new_mapping(area, service, now, boundary)
        sec = int(now)
        if sec != self._mappings_sec:
            self._mappings.clear()
            self._mappings_sec = sec
        key = (area.key, service)
        cached = self._mappings.get(key)
        if cached is not None and cached[0] is area:
            return cached[1]
        m = self._new_mapping(area, service, now, boundary)
        self._mappings[key] = (area, m)
        return m

    def _new_mapping(
        self, area: ServiceArea, service: str, now: float, boundary: str | None
    ) -> Mapping:
        value = self.boundary_value(area.key) if boundary == "value" else None
        return Mapping(
            uris=area.uris,
            service=service,
            expires=self._expires(now),
            last_updated=self._last_updated,
            source=self.source,
            source_id=area.key,
            display_name=area.display_name,
            display_lang="en",
            service_number=area.service_number,
            boundary=value,
            boundary_ref=None
            if value is not None
            else ServiceBoundaryReference(self.source, area.key),
        )

    def find_service(self, req: FindServiceRequest, now: float) -> LostResponse | Forward:
        source = self.config.source
        if source in req.path:
            return self.error("loop", f"{source} is already in the path")
        service, warning = self._resolve_service(req.service)
        loc = self._pick_location(req.locations)
        hit = self._lookup(loc, service)
        warnings: list[LostWarning] = []
        if warning is not None:
            warnings.append(warning)
        if hit is None:
            onward = self._not_covered(req, req.recursive)
            if onward is not None:
                return onward
            if self.config.default_area is None:
                return self.error("notFound", "no service area holds this location")
            area = self.config.default_area
            warnings.append(LostWarning("defaultMappingReturned", "default route"))
        else:
            area = hit.area
        if req.validate_location:
            warnings.append(LostWarning("locationValidationUnavailable"))
        return FindServiceResponse(
            (self.mapping_for(area, service, now, req.service_boundary),),
            (*req.path, source),
            loc.id,
            tuple(warnings) if warnings else (),
            source if warnings else None,
            req.as_of,
            req.as_of_tag,
        )

    def answer_request(self, data: bytes, now: float) -> bytes | None:
        """The answer's bytes for a request's bytes when it is a plain findService for a
        point (`read_point`, then `answer_point`), else None: the server's hot path in one
        call."""
        point = read_point(data)
        if point is None:
            return None
        form, lat, lon = point
        if form.validate or form.service_boundary == "value":
            return None
        return self.answer_point(form, form.service, form.path, form.loc_id, lat, lon, now)

    def answer_point(
        self,
        markup: object,
        service: str,
        path: tuple[str, ...],
        loc_id: str,
        lat: float,
        lon: float,
        now: float,
    ) -> bytes | None:
        """The answer's bytes for the plain findService of a point (the server's hot path),
        or None when it is not plain: the caller then takes the full way (`handle` and
        `build_response`), which gives these same bytes for a plain one (tests compare).

        Plain: a service we serve (no substitution), our source not in `path`, a store with
        the embedded store, whose point lookup (`point_area`) finds an area; the caller checked
        the rest (one geodetic-2d point, in range; no validateLocation, no boundary by
        value, no asOf). The answer depends only on the mapping of this second and on the
        request's markup (`markup`: an object standing for its path and location id, held
        while in use), so its bytes are built once per (markup, area) and second; the
        point is looked up every time."""
        embedded = self._embedded
        source = self.config.source
        if embedded is None or service not in self._service_set or source in path:
            return None
        area = embedded.point_area(lon, lat, service)
        if area is None:
            return None
        # the mapping of this second (`mapping_for`) depends on the area, the service and
        # the second alone: the same three, the same answer
        sec = int(now)
        key = (markup, area.key)
        known = self._answers.get(key)
        if known is not None and known[0] is area and known[1] == sec and known[2] == service:
            return known[3]
        m = self.mapping_for(area, service, now, None)
        body = build_response(
            FindServiceResponse((m,), (*path, source), loc_id, (), None, None, None)
        )
        if len(self._answers) >= 256:
            self._answers.clear()
        self._answers[key] = (area, sec, service, body)
        return body

    # ------------------------------------------------------------------ the others

    def list_services(self, req: ListServicesRequest) -> LostResponse:
        if req.service is None:
            services = self._services
        else:
            prefix = req.service + "."
            services = [s for s in self._services if s.startswith(prefix)]
            if not services and req.service not in self._service_set:
                return self.error("serviceNotImplemented", f"{req.service} is not served here")
        return ListServicesResponse(
            tuple(services), (*req.path, self.source), as_of=req.as_of, as_of_tag=req.as_of_tag
        )

    def list_services_by_location(
        self, req: ListServicesByLocationRequest
    ) -> LostResponse | Forward:
        if self.source in req.path:
            return self.error("loop", f"{self.source} is already in the path")
        loc = self._pick_location(req.locations)
        found = [s for s in self._wanted(req.service) if self._lookup(loc, s) is not None]
        if not found:
            onward = self._not_covered(req, req.recursive)
            if onward is not None:
                return onward
            return self.error("notFound", "no service area holds this location")
        return ListServicesByLocationResponse(
            tuple(found),
            (*req.path, self.source),
            loc.id,
            as_of=req.as_of,
            as_of_tag=req.as_of_tag,
        )

    def _wanted(self, service: str | None) -> list[str]:
        """The services a listServicesByLocation asks about: all, or a subtree."""
        if service is None:
            return self._services
        prefix = service + "."
        return [s for s in self._services if s == service or s.startswith(prefix)]

    def get_service_boundary(self, req: GetServiceBoundaryRequest) -> LostResponse:
        b = self.boundary_value(req.key)
        if b is None:
            return self.error("notFound", f"no service boundary {req.key!r}")
        return GetServiceBoundaryResponse(b, (*req.path, self.source))
