"""What must happen when things go wrong: PSAP down, LoST down, no answer, CANCEL, BYE,
malformed input. Short timers keep every test to about a second."""

import asyncio
import dataclasses

import pytest

from ng911.net.events import MessageEvent
from ng911.sip.parse import parse_message
from ng911.testbed.launcher import open_chain
from ng911.testbed.topology import load_topology
from udp_probe import udp_exchange

MANHATTAN = load_topology().point("Manhattan")


def seen(chain, call_id, method, direction="in"):
    return {
        e.element
        for e in chain.events
        if isinstance(e, MessageEvent)
        and e.call_id == call_id
        and e.direction == direction
        and e.first_line.startswith(method + " ")
    }


@pytest.mark.parametrize("scenario", ["plain", "tcp"])
async def test_psap_down_alternate_answers(scenario):
    chain = await open_chain(
        scenario,
        down=("psap-manhattan",),
        settings={"esrp": {"failover_timeout": 0.5}},
        hangup_after=0.01,
    )
    try:
        rec = await asyncio.wait_for(chain.place_call(*MANHATTAN), 10)
        assert rec.status == 200
        assert chain.psap_of(rec) == "psap-bronx"  # Manhattan's alternate
        failover = chain.esrp.log.find("failover", call_id=rec.call_id)
        # over TCP the ESRP's first OPTIONS ping may already have found Manhattan down (its
        # connection refused): then the call skips it rather than failing over
        skipped = chain.esrp.log.find("skip_down", call_id=rec.call_id)
        assert (failover and "bronx" in failover[0]["next"]) or (
            skipped and "bronx" in skipped[0]["first"]
        )
    finally:
        errors = {e.name: e.errors for e in chain.elements.values() if e.errors}
        await chain.close()
    assert not errors, errors


async def test_psap_and_its_alternate_down_default_answers():
    chain = await open_chain(
        down=("psap-manhattan", "psap-bronx"),
        settings={"esrp": {"failover_timeout": 0.4}},
        hangup_after=0.01,
    )
    try:
        rec = await asyncio.wait_for(chain.place_call(*MANHATTAN), 10)
        assert rec.status == 200
        assert chain.psap_of(rec) == "psap-default"
        assert len(chain.esrp.log.find("failover", call_id=rec.call_id)) == 2
    finally:
        errors = {e.name: e.errors for e in chain.elements.values() if e.errors}
        await chain.close()
    assert not errors, errors


async def test_lost_down_default_psap_answers():
    chain = await open_chain(lost_down=True, hangup_after=0.01)
    try:
        rec = await asyncio.wait_for(chain.place_call(*MANHATTAN), 10)
        assert rec.status == 200
        assert chain.psap_of(rec) == "psap-default"
        route = chain.esrp.log.find("route", call_id=rec.call_id)[0]
        assert route["outcome"] == "LostUnreachable"
        assert "LoST unreachable" in route["reason"]
    finally:
        errors = {e.name: e.errors for e in chain.elements.values() if e.errors}
        await chain.close()
    assert not errors, errors


async def test_no_location_default_route_and_default_location():
    chain = await open_chain(hangup_after=0.01)
    try:
        rec = await asyncio.wait_for(chain.place_call(*MANHATTAN, with_location=False), 10)
        assert rec.status == 200
        assert chain.psap_of(rec) == "psap-default"
        added = chain.esrp.log.find("default_location", call_id=rec.call_id)
        assert added and added[0]["reason"] == "no Geolocation header"
        ev = next(
            e
            for e in chain.events
            if isinstance(e, MessageEvent)
            and e.call_id == rec.call_id
            and e.element == "psap-default"
            and e.direction == "in"
            and e.first_line.startswith("INVITE")
        )
        msg = parse_message(ev.data)
        assert msg.headers.get("Geolocation") == f"<{added[0]['added']}>"
        assert msg.headers.get("Content-Type").startswith("multipart/mixed")
        entry = chain.psaps["psap-default"].call_log[-1]
        assert entry.location.startswith("Point 40.712800,-74.006000")
    finally:
        errors = {e.name: e.errors for e in chain.elements.values() if e.errors}
        await chain.close()
    assert not errors, errors


async def test_call_taker_does_not_answer_reoffered_to_another():
    chain = await open_chain(takers=2, settings={"psap": {"offer_timeout": 0.5}}, hangup_after=0.01)
    try:
        t1, t2 = chain.takers["psap-manhattan"]
        t1.cfg = dataclasses.replace(t1.cfg, answer_delay=-1)  # rings, never answers
        rec = await asyncio.wait_for(chain.place_call(*MANHATTAN), 10)
        assert rec.status == 200
        assert chain.taker_of(rec) is t2
        psap = chain.psaps["psap-manhattan"]
        assert psap.log.find("reoffer", call_id=rec.call_id)
        assert psap.call_log[-1].offers == [
            "sip:taker-manhattan-1@manhattan.psap.nyc.example",
            "sip:taker-manhattan-2@manhattan.psap.nyc.example",
        ]
        assert t1.cancelled == 1  # the first offer was CANCELled
    finally:
        errors = {e.name: e.errors for e in chain.elements.values() if e.errors}
        await chain.close()
    assert not errors, errors


@pytest.mark.parametrize("scenario", ["plain", "tls-all"])
async def test_cancel_clears_every_hop(scenario):
    chain = await open_chain(scenario, settings={"calltaker": {"answer_delay": -1}})
    try:
        rec = await chain.place_call(*MANHATTAN, wait=False)
        for _ in range(200):  # bounded: until the call taker rings
            if rec.t_180 is not None:
                break
            await asyncio.sleep(0.01)
        assert rec.t_180 is not None
        chain.caller.cancel(rec)
        await asyncio.wait_for(rec.ended.wait(), 5)
        assert rec.status == 487
        assert seen(chain, rec.call_id, "CANCEL") == {
            "vsp",
            "esrp",
            "psap-manhattan",
            "taker-manhattan",
        }
        # every hop answered its INVITE with 487
        finals = {
            e.element
            for e in chain.events
            if isinstance(e, MessageEvent)
            and e.call_id == rec.call_id
            and e.direction == "in"
            and e.first_line.startswith("SIP/2.0 487")
        }
        assert finals == {"caller", "vsp", "esrp", "psap-manhattan"}
        assert chain.takers["psap-manhattan"][0].cancelled == 1
        assert not chain.psaps["psap-manhattan"].active
        assert chain.psaps["psap-manhattan"].call_log[-1].outcome == "abandoned"
    finally:
        errors = {e.name: e.errors for e in chain.elements.values() if e.errors}
        await chain.close()
    assert not errors, errors


async def test_bye_from_the_call_taker():
    chain = await open_chain(hangup_after=0)
    try:
        for t in chain.takers["psap-queens"]:
            t.cfg = dataclasses.replace(t.cfg, hangup_after=0.02)
        rec = await asyncio.wait_for(chain.place_call(*chain.topology.point("Queens")), 10)
        assert rec.status == 200
        assert rec.ended_by == "remote"
        assert seen(chain, rec.call_id, "BYE") >= {"psap-queens", "esrp", "vsp", "caller"}
        assert chain.psaps["psap-queens"].call_log[-1].outcome == "completed"
    finally:
        errors = {e.name: e.errors for e in chain.elements.values() if e.errors}
        await chain.close()
    assert not errors, errors


def raw_request(
    method: str,
    *,
    extra: str = "",
    ruri: str = "sip:911@vsp.example",
    from_: str = "<sip:bob@x.example>;tag=1",
    mf: str = "70",
) -> bytes:
    return (
        f"{method} {ruri} SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKraw1;rport\r\n"
        f"Max-Forwards: {mf}\r\n"
        f"From: {from_}\r\n"
        f"To: <{ruri}>\r\n"
        "Call-ID: raw-1@x\r\n"
        f"CSeq: 1 {method}\r\n"
        f"{extra}"
        "Content-Length: 0\r\n\r\n"
    ).encode()


async def test_malformed_and_odd_requests_get_answers_never_a_crash():
    chain = await open_chain(hangup_after=0.01)
    try:
        loop = asyncio.get_running_loop()
        vsp = chain.vsp.local("udp")
        vsp_addr = (vsp.host, vsp.port)
        esrp = chain.esrp.local("udp")
        esrp_addr = (esrp.host, esrp.port)
        bronx = chain.psaps["psap-bronx"].local("udp")

        async def ask(addr, data):
            reply = await loop.run_in_executor(None, udp_exchange, addr, data)
            return parse_message(reply)

        # unparsable header line: the transport layer answers 400
        bad = raw_request("INVITE").replace(b"Max-Forwards: 70\r\n", b"this is no header\r\n")
        assert (await ask(vsp_addr, bad)).status == 400
        # parses, but From is garbage: the element answers 400
        assert (await ask(vsp_addr, raw_request("INVITE", from_="<<<nonsense"))).status == 400
        # Max-Forwards not a number, CSeq method mismatch
        assert (await ask(vsp_addr, raw_request("INVITE", mf="abc"))).status == 400
        mism = raw_request("INVITE").replace(b"CSeq: 1 INVITE", b"CSeq: 1 BYE")
        assert (await ask(vsp_addr, mism)).status == 400
        # hops exhausted
        assert (await ask(vsp_addr, raw_request("INVITE", mf="0"))).status == 483
        # OPTIONS to every proxy: 200 with Allow and Accept
        for addr in (vsp_addr, esrp_addr, (bronx.host, bronx.port)):
            resp = await ask(addr, raw_request("OPTIONS", ruri="sip:127.0.0.1"))
            assert resp.status == 200
            assert "INVITE" in resp.headers.get_field("Allow")
            assert "application/pidf+xml" in resp.headers.get_field("Accept")
        # an ESRP asked for something that is not an emergency call (an INVITE would be
        # routed as one: test_intake.py)
        resp = await ask(esrp_addr, raw_request("MESSAGE", ruri="urn:service:counseling"))
        assert resp.status == 404
        # after all that, the chain still works
        rec = await asyncio.wait_for(chain.place_call(*MANHATTAN), 10)
        assert rec.status == 200
        assert chain.vsp.log.find("bad_input") or chain.vsp.log.find("request_refused")
    finally:
        errors = {e.name: e.errors for e in chain.elements.values() if e.errors}
        await chain.close()
    assert not errors, errors


def _garble_pidf(req) -> None:
    """The INVITE's PIDF-LO part replaced by XML that never closes."""
    start = req.body.index(b"<?xml")
    end = req.body.index(b"</presence>") + len(b"</presence>")
    req.body = req.body[:start] + b"<presence><unclosed>" + req.body[end:]


async def test_garbled_pidf_routes_by_default():
    """The ESRP receives a garbled PIDF-LO: default route, call answered, reason logged."""
    chain = await open_chain(hangup_after=0.01)
    try:
        chain.caller.edit_invite = _garble_pidf
        try:
            rec = await asyncio.wait_for(chain.place_call(*MANHATTAN), 10)
        finally:
            chain.caller.edit_invite = None
        assert rec.status == 200
        assert chain.psap_of(rec) == "psap-default"
        why = chain.esrp.log.find("default_location", call_id=rec.call_id)[0]["reason"]
        assert "garbled PIDF-LO" in why
    finally:
        errors = {e.name: e.errors for e in chain.elements.values() if e.errors}
        await chain.close()
    assert not errors, errors


async def test_esrp_accepts_only_the_expected_tls_peer():
    """RFC 5922 §7.3: the ESRP takes calls over TLS only from the VSP its config names."""
    from ng911.elements.config import TlsProfile

    chain = await open_chain("tls-all", hangup_after=0.01)
    try:
        esrp = chain.esrp
        esrp.config = dataclasses.replace(
            esrp.config, tls=TlsProfile(expected_peer="vsp.example, other.example")
        )
        rec = await asyncio.wait_for(chain.place_call(*MANHATTAN), 10)
        assert rec.status == 200
        esrp.config = dataclasses.replace(esrp.config, tls=TlsProfile(expected_peer="vsp.other"))
        rec = await asyncio.wait_for(chain.place_call(*MANHATTAN), 10)
        assert rec.status == 403
        assert esrp.log.find("bad_input", status=403)
    finally:
        errors = {e.name: e.errors for e in chain.elements.values() if e.errors}
        await chain.close()
    assert not errors, errors


async def test_all_takers_busy_and_queue_full_486_with_retry_after():
    chain = await open_chain(
        settings={
            "calltaker": {"answer_delay": -1},
            "psap": {"queue_size": 0, "offer_timeout": 5.0},
        }
    )
    try:
        first = await chain.place_call(*MANHATTAN, wait=False)
        for _ in range(200):  # bounded: until the only call taker rings
            if first.t_180 is not None:
                break
            await asyncio.sleep(0.01)
        second = await chain.place_call(*MANHATTAN, wait=False)
        for _ in range(500):  # bounded: until the ESRP fails over on Manhattan's 486
            if chain.esrp.log.find("failover", call_id=second.call_id):
                break
            await asyncio.sleep(0.01)
        failover = chain.esrp.log.find("failover", call_id=second.call_id)
        assert failover and failover[0]["status"] == 486 and "bronx" in failover[0]["next"]
        resp = next(
            parse_message(e.data)
            for e in chain.events
            if isinstance(e, MessageEvent)
            and e.call_id == second.call_id
            and e.element == "esrp"
            and e.direction == "in"
            and e.first_line.startswith("SIP/2.0 486")
        )
        assert resp.headers.get("Retry-After") == "30"
        for rec in (first, second):
            chain.caller.cancel(rec)
            await asyncio.wait_for(rec.ended.wait(), 5)
            assert rec.status == 487
        outcomes = [c.outcome for c in chain.psaps["psap-manhattan"].call_log]
        assert outcomes == ["rejected 486", "abandoned"]
    finally:
        errors = {e.name: e.errors for e in chain.elements.values() if e.errors}
        await chain.close()
    assert not errors, errors


async def test_register_with_a_preloaded_route_to_the_vsp_is_registered():
    # an outbound-proxy UA (baresip's `outbound=`) puts `Route: <vsp;lr>` on its REGISTER:
    # the VSP is the registrar, so it registers the contact instead of proxying it away
    chain = await open_chain(hangup_after=0.01)
    try:
        loop = asyncio.get_running_loop()
        vsp = chain.vsp.local("udp")
        req = raw_request(
            "REGISTER",
            ruri="sip:vsp.example",
            from_="<sip:carol@vsp.example>;tag=7",
            extra=(
                f"Route: <sip:{vsp.host}:{vsp.port};lr>\r\n"
                "Contact: <sip:carol@127.0.0.1:9>\r\nExpires: 60\r\n"
            ),
        ).replace(b"To: <sip:vsp.example>", b"To: <sip:carol@vsp.example>")
        resp = parse_message(
            await loop.run_in_executor(None, udp_exchange, (vsp.host, vsp.port), req)
        )
        assert resp.status == 200, resp.status
        assert "carol@127.0.0.1:9" in resp.headers.get_field("Contact")
    finally:
        await chain.close()
