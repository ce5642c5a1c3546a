"""End to end: caller → VSP → ESRP (+ LoST) → psapd → call taker, on loopback, real sockets.

One call from each NYC borough must reach the call taker of that borough's PSAP, in the
`plain` scenario and with TLS on every hop (mutual) and LoST over https; every message of
every hop must be reported to the observer.
"""

import asyncio

import pytest

from ng911.net.events import HandshakeEvent, MessageEvent
from ng911.sip.parse import parse_message
from ng911.testbed.launcher import open_chain

# (element sending, element receiving) per hop, in call order
HOPS = [("caller", "vsp"), ("vsp", "esrp"), ("esrp", "psap-{s}"), ("psap-{s}", "taker-{s}")]


def invites(events, call_id):
    return [
        e
        for e in events
        if isinstance(e, MessageEvent)
        and e.call_id == call_id
        and e.first_line.startswith("INVITE")
    ]


@pytest.mark.parametrize("scenario", ["plain", "tls-all"])
async def test_five_boroughs_reach_their_psap(scenario):
    chain = await open_chain(scenario, hangup_after=0.01)
    try:
        assert len(chain.topology.locations) == 5  # one call from each borough
        for loc in chain.topology.locations:
            slug = chain.topology.psap_for_borough(loc.borough).name.removeprefix("psap-")
            rec = await asyncio.wait_for(chain.place_call(loc.lat, loc.lon), 10)
            assert rec.status == 200, (slug, rec.status, rec.reason)
            assert chain.psap_of(rec) == f"psap-{slug}"
            assert 180 in rec.provisionals
            assert rec.setup_180 is not None and rec.setup_200 >= rec.setup_180
            assert rec.ended_by == "caller"
            # every hop saw the INVITE go out of one element and into the next
            seen = invites(chain.events, rec.call_id)
            transports = dict(
                zip(("hop1", "hop2", "hop3", "hop4"), chain.topology.transports, strict=True)
            )
            for (up, down), hop in zip(HOPS, transports, strict=True):
                up, down = up.format(s=slug), down.format(s=slug)
                outs = [e for e in seen if e.element == up and e.direction == "out"]
                ins = [e for e in seen if e.element == down and e.direction == "in"]
                assert outs and ins, (hop, up, down)
                assert {e.transport for e in outs + ins} == {transports[hop]}
                if transports[hop] == "tls":
                    assert all(e.wire_bytes > e.sip_bytes for e in outs + ins)
            # the BYE went through every hop as well
            byes = [
                e
                for e in chain.events
                if isinstance(e, MessageEvent)
                and e.call_id == rec.call_id
                and e.first_line.startswith("BYE")
                and e.direction == "in"
            ]
            assert {e.element for e in byes} >= {"vsp", "esrp", f"psap-{slug}", f"taker-{slug}"}
        if scenario == "tls-all":
            shakes = [e for e in chain.events if isinstance(e, HandshakeEvent)]
            assert shakes and all(e.ok for e in shakes)
            # mutual: the server side saw the client's certificate identity
            assert any(e.role == "server" and e.peer_identities for e in shakes)
    finally:
        els = chain.elements.values()
        errors = {e.name: e.errors for e in els if e.errors}
        errors.update({e.name: e.log.find("send_failed") for e in els if e.log.find("send_failed")})
        await chain.close()
    assert not errors, errors


async def test_what_the_psap_receives():
    """NENA i3: R-URI kept, Route pushed, ids and Resource-Priority added, body unchanged."""
    chain = await open_chain("plain", hangup_after=0.01)
    try:
        lat, lon = chain.topology.point("Brooklyn")
        rec = await asyncio.wait_for(chain.place_call(lat, lon), 10)
        assert rec.status == 200
        seen = invites(chain.events, rec.call_id)
        sent = parse_message(next(e.data for e in seen if e.element == "caller"))
        at_esrp = parse_message(
            next(e.data for e in seen if e.element == "esrp" and e.direction == "in")
        )
        at_psap = parse_message(
            next(e.data for e in seen if e.element == "psap-brooklyn" and e.direction == "in")
        )
        # the VSP turned the dialled 911 into urn:service:sos and added Resource-Priority
        assert str(sent.uri).startswith("sip:911@")
        assert str(at_esrp.uri) == "urn:service:sos"
        assert at_esrp.headers.get("Resource-Priority") == "esnet.1"
        # the ESRP kept the R-URI and pushed the PSAP's Route (loose routing)
        assert str(at_psap.uri) == "urn:service:sos"
        route = at_psap.headers.get("Route")
        assert route.startswith("<sip:psap-brooklyn@brooklyn.psap.nyc.example") and route.endswith(
            ";lr>"
        )
        purposes = " ".join(at_psap.headers.get_all("Call-Info"))
        assert "purpose=emergency-CallId" in purposes
        assert "purpose=emergency-IncidentId" in purposes
        rr = at_psap.headers.get_all("Record-Route")
        assert any("esrp.esinet.nyc.example" in r for r in rr)
        assert any("vsp.example" in r for r in rr)
        assert len(at_psap.vias) == 3  # caller, VSP, ESRP
        # body and the caller's other headers passed unchanged
        assert at_psap.body == sent.body
        for name in ("Geolocation", "Geolocation-Routing", "Content-Type", "From", "Contact"):
            assert at_psap.headers.get(name) == sent.headers.get(name), name
        log = chain.psaps["psap-brooklyn"].call_log[-1]
        assert log.taker == "sip:taker-brooklyn@brooklyn.psap.nyc.example"
        assert log.location.startswith(f"Point {lat:.6f},{lon:.6f}")
        assert log.outcome == "completed"
    finally:
        els = chain.elements.values()
        errors = {e.name: e.errors for e in els if e.errors}
        errors.update({e.name: e.log.find("send_failed") for e in els if e.log.find("send_failed")})
        await chain.close()
    assert not errors, errors


async def test_vsp_with_its_own_lost_query_routes_straight_to_the_psap():
    chain = await open_chain(vsp_lost=True, hangup_after=0.01)
    try:
        rec = await asyncio.wait_for(chain.place_call(*chain.topology.point("Bronx")), 10)
        assert rec.status == 200
        assert chain.psap_of(rec) == "psap-bronx"
        assert chain.vsp.log.find("lost_route", call_id=rec.call_id)
        assert "esrp" not in {e.element for e in invites(chain.events, rec.call_id)}
    finally:
        els = chain.elements.values()
        errors = {e.name: e.errors for e in els if e.errors}
        errors.update({e.name: e.log.find("send_failed") for e in els if e.log.find("send_failed")})
        await chain.close()
    assert not errors, errors


@pytest.mark.parametrize("scenario", ["tcp", "tls-e2e", "tls-vsp-psap"])
async def test_mixed_transports_both_directions(scenario):
    """Hops with different transports: double Record-Route (RFC 5658) must carry the ACK
    and a BYE from either end across every proxy."""
    import dataclasses

    chain = await open_chain(scenario, hangup_after=0)
    try:
        lat, lon = chain.topology.point("Staten Island")
        for t in chain.takers["psap-staten-island"]:
            t.cfg = dataclasses.replace(t.cfg, hangup_after=0.02)
        rec = await asyncio.wait_for(chain.place_call(lat, lon), 10)
        assert rec.status == 200 and rec.ended_by == "remote"
        rec2 = await chain.place_call(lat, lon, hangup_after=0.01)
        assert rec2.status == 200 and rec2.ended_by == "caller"
        acks = {
            e.element
            for e in chain.events
            if isinstance(e, MessageEvent)
            and e.call_id == rec2.call_id
            and e.direction == "in"
            and e.first_line.startswith("ACK")
        }
        assert acks == {"vsp", "esrp", "psap-staten-island", "taker-staten-island"}
    finally:
        els = chain.elements.values()
        errors = {e.name: e.errors for e in els if e.errors}
        errors.update({e.name: e.log.find("send_failed") for e in els if e.log.find("send_failed")})
        await chain.close()
    assert not errors, errors


async def test_esrp_asks_lost_for_the_nena_service_urn():
    import dataclasses

    chain = await open_chain(hangup_after=0.01)
    try:
        chain.esrp.cfg = dataclasses.replace(chain.esrp.cfg, service="urn:emergency:service:sos")
        rec = await asyncio.wait_for(chain.place_call(*chain.topology.point("Queens")), 10)
        assert rec.status == 200 and chain.psap_of(rec) == "psap-queens"
        assert chain.esrp.log.find("route", call_id=rec.call_id)[0]["outcome"] == "LostFound"
    finally:
        errors = {e.name: e.errors for e in chain.elements.values() if e.errors}
        await chain.close()
    assert not errors, errors


async def test_calls_leave_no_reference_cycles():
    """Every call's objects are freed by reference counting once its transactions end: no
    cyclic garbage for the collector to find (its full collections pause elements)."""
    import gc

    chain = await open_chain("tcp", t1=0.01, hangup_after=0.001)
    try:
        lat, lon = chain.topology.point("Bronx")
        await chain.place_call(lat, lon)  # warm-up: connections, LoST session
        gc.collect()
        gc.disable()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            for _ in range(10):
                rec = await asyncio.wait_for(chain.place_call(lat, lon), 10)
                assert rec.status == 200
            await asyncio.sleep(1.0)  # 64*T1: the INVITE transactions' RFC 6026 states end
            gc.collect()
            ours = [o for o in gc.garbage if type(o).__module__.startswith("ng911.")]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()
        assert not ours, sorted({type(o).__qualname__ for o in ours})
    finally:
        await chain.close()


async def test_register_refresh_keeps_call_id_and_raises_cseq():
    # RFC 3261 §10.2.4: refreshes reuse the Call-ID with a higher CSeq, so the registrar
    # can order them; a fresh Call-ID per refresh would look like a second UA.
    chain = await open_chain("plain")
    try:
        taker = chain.takers["psap-manhattan"][0]
        first = taker._registration.call_id
        assert await taker.register() == 200
        assert await taker.register() == 200
        assert taker._registration.call_id == first
        assert taker._registration.cseq == 3  # start-up, then two refreshes
        events = [
            e
            for e in chain.events
            if isinstance(e, MessageEvent)
            and e.direction == "out"
            and e.first_line.startswith("REGISTER")
            and e.call_id == first
        ]
        cseqs = [parse_message(e.data).cseq.seq for e in events]
        assert cseqs == sorted(cseqs) and len(set(cseqs)) == len(cseqs) >= 3
    finally:
        await chain.close()
