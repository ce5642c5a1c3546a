"""Interop: SIPp as the caller into our chain, and SIPp as the call taker behind our psapd.

The whole chain runs in this test's event loop (`ng911.testbed.launcher.open_chain`): VSP
proxy, ESRP with the embedded LoST server (NYC boroughs), a psapd per borough, each on its
own loopback address. SIPp is a separate process speaking to it over real sockets.

- caller: `sipp/uac_emergency.xml` (the 911 INVITE of `ng911.sip.samples`: multipart/mixed
  SDP + PIDF-LO, a GML point in Times Square, `Geolocation: <cid:...>`) into the VSP over UDP
  and over TCP (dialling `urn:service:sos`, and `911` which the VSP must rewrite). The call
  must complete (SIPp exit 0, one successful call) and reach Manhattan's PSAP, whose call
  log says so.
- call taker: `sipp/uas.xml` registered with psapd Manhattan (no ng911 call taker there);
  our caller calls from Times Square; SIPp must answer it through psapd, and ACK and BYE
  must reach SIPp along the Record-Route set it copied.
"""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

import pytest

from ng911.interop.sipp import (
    MISSING,
    SCENARIOS,
    SIPP,
    finish_sipp,
    run_sipp,
    sipp_args,
    start_sipp,
    stop_sipp,
)
from ng911.location.gml import parse_shape
from ng911.location.xml import parse_xml
from ng911.sip import samples
from ng911.testbed.launcher import open_chain

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(SIPP is None, reason=MISSING),
]

CALLER = "sip:+12125550123@vsp.example"


def test_emergency_scenario_carries_the_sample_body() -> None:
    """uac_emergency.xml is generated from ng911.sip.samples: keep them in step."""
    xml = (SCENARIOS / "uac_emergency.xml").read_text()
    body = samples.emergency_body().decode().replace("\r\n", "\n")
    assert body in xml
    assert f"Geolocation: <cid:{samples.LOCATION_CID}>" in xml
    assert f"boundary={samples.BOUNDARY}" in xml
    # the point is in Manhattan (what the chain tests below expect)
    part = body.split("<?xml", 1)[1].split("</presence>", 1)[0]
    root = parse_xml(("<?xml" + part + "</presence>").encode())
    point = next(el for el in root.iter() if el.tag.endswith("}Point"))
    shape = parse_shape(point)
    assert (round(shape.lat, 4), round(shape.lon, 4)) == (40.7580, -73.9855)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "transport,dial", [("udp", "urn:service:sos"), ("tcp", "sip:911@vsp.example")]
)
async def test_sipp_caller_reaches_manhattan_psap(
    tmp_path: Path, transport: str, dial: str
) -> None:
    chain = await open_chain(hops=(transport, transport, "udp", "udp"))
    try:
        vsp = chain.vsp.local(transport)
        args = sipp_args(
            "uac_emergency.xml",
            transport=transport,
            remote=f"{vsp.host}:{vsp.port}",
            keys={"dial": dial},
        )
        res = await run_sipp(args, tmp_path, timeout=20)
        assert res.returncode == 0, res.explain()
        assert "Successful call" in res.stdout
        log = chain.psaps["psap-manhattan"].call_log
        assert len(log) == 1, res.explain()
        entry = log[0]
        assert entry.caller == CALLER
        assert entry.outcome == "completed"
        assert entry.taker is not None and "manhattan" in entry.taker
        assert entry.location is not None and "40.758" in entry.location
        # nothing went to another PSAP
        others = [s for s, p in chain.psaps.items() if s != "psap-manhattan" and p.call_log]
        assert not others
        assert chain.vsp.emergency_calls == 1
    finally:
        errors = {e.name: e.errors for e in chain.elements.values() if e.errors}
        await chain.close()
    assert not errors, errors


def _register(psap: tuple[str, int], aor: str, contact: str) -> str:
    """REGISTER SIPp's contact with psapd from a plain socket (SIPp's UAS cannot)."""
    tag, cid = os.urandom(4).hex(), os.urandom(8).hex()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(3)
        lport = s.getsockname()[1]
        domain = aor.split("@", 1)[1]
        msg = (
            f"REGISTER sip:{domain} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{lport};branch=z9hG4bK{os.urandom(6).hex()};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <{aor}>;tag={tag}\r\nTo: <{aor}>\r\nCall-ID: {cid}@127.0.0.1\r\n"
            f"CSeq: 1 REGISTER\r\nContact: <{contact}>;expires=300\r\nContent-Length: 0\r\n\r\n"
        )
        s.sendto(msg.encode(), psap)
        data, _ = s.recvfrom(65535)
        return data.decode(errors="replace").split("\r\n", 1)[0]


async def test_sipp_call_taker_behind_psapd(tmp_path: Path) -> None:
    chain = await open_chain(takers=0, hangup_after=0.05)
    uas = None
    try:
        psap = chain.psaps["psap-manhattan"]
        at = psap.local("udp")
        port = _free_udp_port()
        uas = await start_sipp(sipp_args("uas.xml", port=port), tmp_path)
        await asyncio.sleep(0.3)  # SIPp binds its socket
        status = await asyncio.to_thread(
            _register,
            (at.host, at.port),
            f"sip:sipp-taker@{psap.fqdn}",
            f"sip:sipp-taker@127.0.0.1:{port}",
        )
        assert status.startswith("SIP/2.0 200"), status
        rec = await asyncio.wait_for(chain.place_call(*chain.topology.point("Manhattan")), 15)
        assert rec.status == 200, (rec.status, rec.reason)
        assert 180 in rec.provisionals
        assert rec.answered_by is not None and f":{port}" in rec.answered_by
        await asyncio.wait_for(rec.ended.wait(), 5)
        res = await finish_sipp(uas, tmp_path, timeout=10)  # -m 1: exits after the BYE
        uas = None
        assert res.returncode == 0, res.explain()
        entry = psap.call_log[-1]
        assert entry.outcome == "completed"
        assert entry.taker == "sip:sipp-taker@manhattan.psap.nyc.example"
    finally:
        if uas is not None:
            await stop_sipp(uas)
        errors = {e.name: e.errors for e in chain.elements.values() if e.errors}
        await chain.close()
    assert not errors, errors


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
