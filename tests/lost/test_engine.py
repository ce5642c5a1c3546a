"""The ECRF's decisions (sans-I/O), on both stores: mappings, warnings, every error kind."""

from __future__ import annotations

from typing import Any

import pytest
from lost_data import BOROUGH_POINTS, OUTSIDE_POINTS, psap_uri

from ng911.location.civic import CivicAddress
from ng911.location.geodetic import Point, Shape
from ng911.lost.engine import EngineConfig, Forward, LostEngine, NextServer
from ng911.lost.protocol import (
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
    Redirect,
    build_response,
    parse_response,
)
from ng911.lost.store import BoundaryStore, ServiceArea, StoreHit

NOW = 1_790_000_000.0


def point(borough: str) -> Point:
    return Point(*BOROUGH_POINTS[borough])


def fs(value: Any, **kw: Any) -> FindServiceRequest:
    profile = "civic" if isinstance(value, CivicAddress) else "geodetic-2d"
    return FindServiceRequest(locations=(LostLocation("L1", profile, value),), **kw)


def engine(store: BoundaryStore, **kw: Any) -> LostEngine:
    return LostEngine(store, EngineConfig(source="ecrf.test", **kw))


@pytest.mark.parametrize("borough", list(BOROUGH_POINTS))
def test_find_service_answer(store: BoundaryStore, borough: str) -> None:
    resp = engine(store, ttl=600).handle(fs(point(borough), path=("esrp.test",)), NOW)
    assert isinstance(resp, FindServiceResponse)
    (m,) = resp.mappings
    assert m.uris == (psap_uri(borough),)
    assert m.service == "urn:service:sos" and m.service_number == "911"
    assert m.expires == "2026-09-21T14:23:20Z"  # NOW + 600 s
    assert m.source == "ecrf.test" and m.source_id.startswith("nyc-boro-")
    assert m.boundary_ref is not None and m.boundary_ref.key == m.source_id
    assert resp.path == ("esrp.test", "ecrf.test")
    assert resp.location_used == "L1"
    assert parse_response(build_response(resp)) == resp


def test_boundary_by_value(store: BoundaryStore) -> None:
    resp = engine(store).handle(fs(point("manhattan"), service_boundary="value"), NOW)
    assert isinstance(resp, FindServiceResponse)
    b = resp.mappings[0].boundary
    assert b is not None and b.profile == "geodetic-2d" and len(b.items) > 1
    assert parse_response(build_response(resp)) == resp


def test_civic_find_service(store: BoundaryStore) -> None:
    civic = CivicAddress.of(country="US", A1="NY", A3="Brooklyn", RD="Flatbush", HNO="1")
    resp = engine(store).handle(fs(civic), NOW)
    assert isinstance(resp, FindServiceResponse)
    assert resp.mappings[0].uris == (psap_uri("brooklyn"),)


def test_first_usable_location_is_used(store: BoundaryStore) -> None:
    req = FindServiceRequest(
        locations=(
            LostLocation("x", "geodetic-3d", None),
            LostLocation("y", "geodetic-2d", point("queens")),
        )
    )
    resp = engine(store).handle(req, NOW)
    assert isinstance(resp, FindServiceResponse) and resp.location_used == "y"


def err(resp: object) -> str:
    assert isinstance(resp, LostErrorResponse), resp
    assert resp.source == "ecrf.test"
    return resp.kind


def test_not_found(store: BoundaryStore) -> None:
    assert err(engine(store).handle(fs(Point(*OUTSIDE_POINTS["newark"])), NOW)) == "notFound"
    civic = CivicAddress.of(country="US", A1="NJ", A3="Newark")
    assert err(engine(store).handle(fs(civic), NOW)) == "notFound"


def test_default_mapping_returned(store: BoundaryStore) -> None:
    default = ServiceArea(
        "default", "Default", ("sip:default-psap@esinet.example",), "Default PSAP"
    )
    resp = engine(store, default_area=default).handle(fs(Point(*OUTSIDE_POINTS["atlantic"])), NOW)
    assert isinstance(resp, FindServiceResponse)
    assert resp.mappings[0].uris == ("sip:default-psap@esinet.example",)
    assert [w.kind for w in resp.warnings] == ["defaultMappingReturned"]
    assert resp.warnings_source == "ecrf.test"


def test_service_substitution(store: BoundaryStore) -> None:
    resp = engine(store).handle(fs(point("bronx"), service="urn:service:sos.unicorn"), NOW)
    assert isinstance(resp, FindServiceResponse)
    assert resp.mappings[0].service == "urn:service:sos"
    assert [w.kind for w in resp.warnings] == ["serviceSubstitution"]


def test_sub_service_and_nena_service(store: BoundaryStore) -> None:
    for svc in ("urn:service:sos.police", "urn:emergency:service:sos.psap"):
        resp = engine(store).handle(fs(point("bronx"), service=svc), NOW)
        assert isinstance(resp, FindServiceResponse) and resp.mappings[0].service == svc
        assert resp.warnings == ()


def test_service_not_implemented(store: BoundaryStore) -> None:
    resp = engine(store).handle(fs(point("bronx"), service="urn:service:counseling"), NOW)
    assert err(resp) == "serviceNotImplemented"


def test_loop(store: BoundaryStore) -> None:
    resp = engine(store).handle(fs(point("bronx"), path=("a", "ecrf.test")), NOW)
    assert err(resp) == "loop"


def test_location_profile_unrecognized(store: BoundaryStore) -> None:
    req = FindServiceRequest(locations=(LostLocation("x", "geodetic-3d", None),))
    assert err(engine(store).handle(req, NOW)) == "locationProfileUnrecognized"


def test_validate_location_warning(store: BoundaryStore) -> None:
    resp = engine(store).handle(fs(point("queens"), validate_location=True), NOW)
    assert isinstance(resp, FindServiceResponse)
    assert [w.kind for w in resp.warnings] == ["locationValidationUnavailable"]


def test_recursive_forwards_iterative_redirects(store: BoundaryStore) -> None:
    nxt = NextServer("http://127.0.0.1:9/lost")
    e = engine(store, next_server=nxt)
    outside = Point(*OUTSIDE_POINTS["newark"])
    fwd = e.handle(fs(outside, recursive=True, path=("esrp",)), NOW)
    assert isinstance(fwd, Forward) and fwd.url == nxt.url
    assert isinstance(fwd.request, FindServiceRequest)
    assert fwd.request.path == ("esrp", "ecrf.test")
    red = e.handle(fs(outside, recursive=False), NOW)
    assert isinstance(red, Redirect) and red.target == nxt.url and red.source == "ecrf.test"
    # Covered locations are answered locally either way.
    assert isinstance(e.handle(fs(point("queens"), recursive=True), NOW), FindServiceResponse)


def test_list_services(store: BoundaryStore) -> None:
    e = engine(store)
    resp = e.handle(ListServicesRequest(), NOW)
    assert isinstance(resp, ListServicesResponse)
    assert "urn:service:sos" in resp.services and "urn:emergency:service:sos" in resp.services
    resp = e.handle(ListServicesRequest(service="urn:service:sos"), NOW)
    assert isinstance(resp, ListServicesResponse)
    assert "urn:service:sos.police" in resp.services and "urn:service:sos" not in resp.services
    assert all(s.startswith("urn:service:sos.") for s in resp.services)
    resp = e.handle(ListServicesRequest(service="urn:emergency:service:sos"), NOW)
    assert (
        isinstance(resp, ListServicesResponse)
        and "urn:emergency:service:sos.police" in resp.services
    )
    assert err(e.handle(ListServicesRequest(service="urn:service:counseling"), NOW)) == (
        "serviceNotImplemented"
    )


def test_list_services_by_location(store: BoundaryStore) -> None:
    e = engine(store)
    loc = (LostLocation("L9", "geodetic-2d", point("brooklyn")),)
    resp = e.handle(ListServicesByLocationRequest(locations=loc), NOW)
    assert isinstance(resp, ListServicesByLocationResponse) and resp.location_used == "L9"
    assert "urn:service:sos" in resp.services and "urn:emergency:service:sos.fire" in resp.services
    resp = e.handle(
        ListServicesByLocationRequest(locations=loc, service="urn:emergency:service:sos"), NOW
    )
    assert isinstance(resp, ListServicesByLocationResponse)
    assert all(s.startswith("urn:emergency:service:sos") for s in resp.services)
    outside = (LostLocation("L9", "geodetic-2d", Point(*OUTSIDE_POINTS["newark"])),)
    assert err(e.handle(ListServicesByLocationRequest(locations=outside), NOW)) == "notFound"


def test_get_service_boundary(store: BoundaryStore) -> None:
    e = engine(store)
    resp = e.handle(GetServiceBoundaryRequest("nyc-boro-5"), NOW)
    assert isinstance(resp, GetServiceBoundaryResponse) and resp.boundary.items
    assert parse_response(build_response(resp)) == resp
    assert err(e.handle(GetServiceBoundaryRequest("nope"), NOW)) == "notFound"


class ExplodingStore:
    """A third-party store whose backend has failed (raises on every lookup)."""

    def lookup(self, shape: Shape, service: str) -> StoreHit | None:
        raise ConnectionError("backend gone")

    def lookup_civic(self, civic: CivicAddress, service: str) -> StoreHit | None:
        raise ConnectionError("backend gone")

    def services(self) -> list[str]:
        return ["urn:service:sos"]

    def area(self, key: str) -> ServiceArea | None:
        return None

    def boundary(self, key: str) -> Any | None:
        return None

    def close(self) -> None:
        return None


async def test_internal_error_from_a_failing_store() -> None:
    from ng911.lost.protocol import build_request
    from ng911.lost.server import LostServer, ServerConfig

    server = LostServer(ExplodingStore(), ServerConfig(engine=EngineConfig(source="ecrf.test")))
    body = await server.answer(build_request(fs(point("queens"))))
    assert err(parse_response(body)) == "internalError"


async def test_internal_error_from_a_closed_postgis_connection(pg_cluster: Any) -> None:
    from ng911.lost.postgis import PostgisStore
    from ng911.lost.protocol import build_request
    from ng911.lost.server import LostServer, ServerConfig

    store = PostgisStore.from_geojson(pg_cluster.dsn, prefix="lost_closed")
    server = LostServer(store, ServerConfig(engine=EngineConfig(source="ecrf.test")))
    store.close()
    body = await server.answer(build_request(fs(point("queens"))))
    assert err(parse_response(body)) == "internalError"
