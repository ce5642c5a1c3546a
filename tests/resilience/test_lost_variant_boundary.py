"""Issue 12 item 3, client side: an ECRF whose `<serviceBoundary>` names its CRS in a variant
spelling (`urn:ogc:def::crs:EPSG::4326`, seen in the field) gave a usable answer that the
ESRP's LoST client threw away (a "protocol" error), so the call went to the default route.
Now the client reads every spelling `ng911.location.ns.canonical_crs` reads, and the ESRP
routes the call to the PSAP the ECRF mapped."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from dialog_helpers import RawUa, emergency_invite

from ng911.elements.config import EsrpConfig, HostEntry, ListenerConfig
from ng911.lost.protocol import FindServiceResponse, parse_response
from ng911.node.build import build_element
from ng911.sip.message import Request

FQDN = "esrp.esinet.example"

# Times Square (the sample PIDF-LO's point) inside a boundary whose srsName is a variant.
ANSWER = """<?xml version="1.0" encoding="UTF-8"?>
<findServiceResponse xmlns="urn:ietf:params:xml:ns:lost1"
    xmlns:gml="http://www.opengis.net/gml">
  <mapping expires="2099-01-01T00:00:00Z" lastUpdated="2026-01-01T00:00:00Z"
      source="ecrf.field.example" sourceId="manhattan">
    <displayName xml:lang="en">Manhattan PSAP</displayName>
    <service>urn:service:sos</service>
    <serviceBoundary profile="geodetic-2d">
      <gml:Polygon srsName="{srs}">
        <gml:exterior><gml:LinearRing><gml:posList>
          40.70 -74.02 40.70 -73.93 40.88 -73.93 40.88 -74.02 40.70 -74.02
        </gml:posList></gml:LinearRing></gml:exterior>
      </gml:Polygon>
    </serviceBoundary>
    <uri>sip:psap-mapped@127.0.0.1:{port}</uri>
  </mapping>
  <path><via source="ecrf.field.example"/></path>
  <locationUsed id="loc1"/>
</findServiceResponse>
"""
VARIANTS = [
    "urn:ogc:def::crs:EPSG::4326",
    "urn:ogc:def:crs:EPSG:6.6:4326",
    "EPSG:4326",
    "http://www.opengis.net/def/crs/EPSG/0/4326",
]


async def fake_ecrf(body: str) -> tuple[web.AppRunner, str]:
    """A LoST server (real HTTP on loopback) that answers every POST with `body`."""

    async def answer(_request: web.Request) -> web.Response:
        return web.Response(body=body.encode(), content_type="application/lost+xml")

    app = web.Application()
    app.router.add_post("/lost", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}/lost"


@pytest.fixture
async def sinks() -> AsyncIterator[tuple[RawUa, RawUa]]:
    psap, default = await RawUa().open(), await RawUa().open()
    yield psap, default
    psap.close()
    default.close()


def is_invite(m: object) -> bool:
    return isinstance(m, Request) and m.method == "INVITE"


@pytest.mark.parametrize("srs", VARIANTS)
async def test_esrp_routes_by_a_variant_srsname_boundary(
    sinks: tuple[RawUa, RawUa], srs: str
) -> None:
    psap, default = sinks
    body = ANSWER.format(srs=srs, port=psap.port)
    assert isinstance(parse_response(body.encode()), FindServiceResponse)  # the client's reading
    runner, url = await fake_ecrf(body)
    esrp = build_element(
        "esrp",
        EsrpConfig(
            name="esrp",
            fqdn=FQDN,
            listeners=(ListenerConfig("udp", "127.0.0.1", 0),),
            hosts=(HostEntry(FQDN, "127.0.0.1"),),
            t1=0.5,
            lost_url=url,
            lost_timeout=2.0,
            default_route=f"sip:default.psap.example@127.0.0.1:{default.port}",
            failover_timeout=2.0,
        ),
        log_keep=100,
    )
    await esrp.start()
    caller = await RawUa().open()
    try:
        addr = esrp.local("udp")
        caller.send(emergency_invite(caller.port, "variant-srs@test", branch="z9hG4bKvar1"),
                    (addr.host, addr.port))  # fmt: skip
        invite = await psap.expect(is_invite, 10)
        assert isinstance(invite, Request)  # at the mapped PSAP (Request-URI stays the URN)
        route = esrp.log.find("route", call_id="variant-srs@test")[0]
        assert route["outcome"] == "LostFound", route
        assert route["plan"][0] == f"sip:psap-mapped@127.0.0.1:{psap.port}"
        assert esrp.routed["lost"] == 1 and esrp.routed["default"] == 0
        while not default.queue.empty():  # the default PSAP got OPTIONS pings at most
            default.seen.append(default.queue.get_nowait())
        assert not [m for m in default.seen if is_invite(m)]
    finally:
        caller.close()
        await esrp.close()
        await runner.cleanup()
