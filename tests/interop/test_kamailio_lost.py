"""Kamailio's `lost` module as a LoST client of our server (interop).

Kamailio (Debian kamailio-utils-modules) loads http_client + lost; on a SIP MESSAGE with a
PIDF-LO body its route calls `lost_query(con, pidf, urn, uri, name, err)` against our server
and answers 200 with the mapped URI in the reason phrase and an X-Lost-Uri header. We send the
MESSAGE from a raw UDP socket and check the URI is the right borough's PSAP.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ng911.interop.kamailio import Kamailio, config_head, missing_reason
from ng911.interop.procs import free_port
from ng911.lost.embedded import EmbeddedStore
from ng911.lost.engine import EngineConfig
from ng911.lost.server import LostServer, RunningServer, ServerConfig, serve

pytestmark = pytest.mark.interop

ROUTE = """
loadmodule "pv.so"
loadmodule "sl.so"
loadmodule "textops.so"
loadmodule "xlog.so"
loadmodule "http_client.so"
loadmodule "lost.so"
modparam("http_client", "httpcon", "lostsrv=>{lost_url}")
modparam("http_client", "query_result", 0)
modparam("http_client", "connection_timeout", 2)

request_route {{
    if (!is_method("MESSAGE")) {{
        sl_send_reply("405", "Method Not Allowed");
        exit;
    }}
    $var(pidf) = $rb;
    $var(urn) = "urn:service:sos";
    $var(uri) = "";
    $var(name) = "";
    $var(err) = "";
    $var(res) = lost_query("lostsrv", "$var(pidf)", "$var(urn)", "$var(uri)", "$var(name)",
        "$var(err)");
    xlog("L_INFO", "lost_query res=$var(res) uri=$var(uri) name=$var(name) err=$var(err)\\n");
    append_to_reply("X-Lost-Uri: $var(uri)\\r\\nX-Lost-Result: $var(res)\\r\\n");
    sl_send_reply("200", "LoST $var(uri)");
    exit;
}}
"""

PIDF = """<?xml version="1.0" encoding="UTF-8"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf"
    xmlns:gp="urn:ietf:params:xml:ns:pidf:geopriv10"
    xmlns:gml="http://www.opengis.net/gml"
    xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model"
    entity="pres:caller@vsp.example">
  <dm:device id="caller">
    <gp:geopriv>
      <gp:location-info>
        <gml:Point srsName="urn:ogc:def:crs:EPSG::4326">
          <gml:pos>{lat} {lon}</gml:pos>
        </gml:Point>
      </gp:location-info>
      <gp:usage-rules/>
      <gp:method>GPS</gp:method>
    </gp:geopriv>
    <dm:timestamp>2026-11-25T12:00:00Z</dm:timestamp>
  </dm:device>
</presence>
"""


CIVIC_PIDF = """<?xml version="1.0" encoding="UTF-8"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf"
    xmlns:gp="urn:ietf:params:xml:ns:pidf:geopriv10"
    xmlns:ca="urn:ietf:params:xml:ns:pidf:geopriv10:civicAddr"
    xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model"
    entity="pres:caller@vsp.example">
  <dm:device id="caller">
    <gp:geopriv>
      <gp:location-info>
        <ca:civicAddress xml:lang="en-US">
          <ca:country>US</ca:country>
          <ca:A1>NY</ca:A1>
          <ca:A2>Queens</ca:A2>
          <ca:A3>Flushing</ca:A3>
          <ca:RD>Main</ca:RD>
          <ca:STS>St</ca:STS>
          <ca:HNO>41</ca:HNO>
        </ca:civicAddress>
      </gp:location-info>
      <gp:usage-rules/>
      <gp:method>Manual</gp:method>
    </gp:geopriv>
    <dm:timestamp>2026-11-25T12:00:00Z</dm:timestamp>
  </dm:device>
</presence>
"""


@pytest.fixture
async def lost() -> AsyncIterator[RunningServer]:
    server = LostServer(EmbeddedStore.from_geojson(), ServerConfig(engine=EngineConfig()))
    running = await serve(server.app)
    yield running
    await running.close()


@pytest.fixture
async def kamailio(lost: RunningServer) -> AsyncIterator[tuple[int, Path]]:
    reason = missing_reason("lost", "http_client")
    if reason:
        pytest.skip(reason)
    sip_port = free_port()
    head = config_head(f"listen=udp:127.0.0.1:{sip_port}", tcp=False)
    k = Kamailio(head + ROUTE.format(lost_url=lost.url), sip_port, "udp", shm_mb=64)
    await asyncio.to_thread(k.start)  # ready when it answers an OPTIONS (405 from our route)
    try:
        yield sip_port, k.log_path
    finally:
        k.stop()


def _send(port: int, method: str, body: bytes, ctype: str, timeout: float) -> str:
    branch = "z9hG4bK" + os.urandom(6).hex()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(timeout)
        lport = s.getsockname()[1]
        head = (
            f"{method} sip:sos@127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{lport};branch={branch};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:caller@vsp.example>;tag={os.urandom(4).hex()}\r\n"
            "To: <urn:service:sos>\r\n"
            f"Call-ID: {os.urandom(8).hex()}@127.0.0.1\r\n"
            f"CSeq: 1 {method}\r\n"
            + (f"Content-Type: {ctype}\r\n" if ctype else "")
            + f"Content-Length: {len(body)}\r\n\r\n"
        )
        s.sendto(head.encode() + body, ("127.0.0.1", port))
        try:
            data, _ = s.recvfrom(65535)
        except TimeoutError as exc:
            raise TimeoutError from exc
        return data.decode(errors="replace")


@pytest.mark.parametrize(
    "lat,lon,psap",
    [
        (40.7831, -73.9712, "sip:psap-manhattan@esinet.example"),
        (40.6782, -73.9442, "sip:psap-brooklyn@esinet.example"),
        (40.5795, -74.1502, "sip:psap-staten-island@esinet.example"),
    ],
)
async def test_kamailio_lost_query_gets_the_borough_psap(
    kamailio: tuple[int, Path], lat: float, lon: float, psap: str
) -> None:
    port, log = kamailio
    body = PIDF.format(lat=lat, lon=lon).encode()
    reply = await asyncio.to_thread(_send, port, "MESSAGE", body, "application/pidf+xml", 5.0)
    first = reply.split("\r\n", 1)[0]
    assert first.startswith("SIP/2.0 200"), (reply, log.read_text(errors="replace")[-3000:])
    headers = {
        k.strip().lower(): v.strip()
        for k, _, v in (line.partition(":") for line in reply.split("\r\n")[1:] if ":" in line)
    }
    assert headers.get("x-lost-uri") == psap, (reply, log.read_text(errors="replace")[-3000:])
    assert headers.get("x-lost-result") == "200"
    assert psap in first


async def test_kamailio_lost_query_civic(kamailio: tuple[int, Path]) -> None:
    port, log = kamailio
    body = CIVIC_PIDF.encode()
    reply = await asyncio.to_thread(_send, port, "MESSAGE", body, "application/pidf+xml", 5.0)
    assert "X-Lost-Uri: sip:psap-queens@esinet.example" in reply, (
        reply,
        log.read_text(errors="replace")[-3000:],
    )
