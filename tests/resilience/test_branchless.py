"""Issue 11 item 6: an RFC 2543-style caller (no Via branch) through the whole chain.

Before the fix, each ACK of such a caller matched the INVITE's server transaction in the
RFC 6026 "accepted" state (§17.2.3 matching without a magic cookie: same Request-URI, From
tag, Call-ID, CSeq number and top Via), and the runtime delivered the transaction's request,
the INVITE, again: the VSP proxied a new INVITE per ACK, and the PSAP got one call (and one
emergency CallId) per ACK. Now the ACK goes on as an ACK, and no request reaches an element
twice.
"""

from __future__ import annotations

import asyncio

import pytest
from dialog_helpers import RawUa, emergency_invite, in_dialog, response_to

from ng911.elements.calltaker import CallTaker
from ng911.elements.config import CallTakerConfig, ListenerConfig
from ng911.net.events import MessageEvent
from ng911.sip.parse import parse_message
from ng911.testbed.launcher import open_chain


async def test_branchless_call_reaches_the_psap_once_and_ends() -> None:
    chain = await open_chain("plain", t1=0.5)
    ua = await RawUa().open()
    try:
        vsp = chain.vsp.local("udp")
        dest = (vsp.host, vsp.port)
        call_id = "rfc2543-call-1@127.0.0.1"
        invite = emergency_invite(ua.port, call_id, branch=None)
        ua.send(invite, dest)
        ua.send(invite, dest)  # a retransmission: absorbed by the transaction
        ok = await ua.expect(response_to("INVITE"), 15)
        assert ok.status == 200, ok.first_line
        # ACK for the 2xx, as an RFC 2543 UA sends it: no branch, the INVITE's Request-URI,
        # the route set; retransmitted three times
        ack = in_dialog("ACK", ua.port, call_id, ok, cseq=1, branch=None, ruri="urn:service:sos")
        for _ in range(3):
            ua.send(ack, dest)
            await asyncio.sleep(0.2)
        taker = chain.takers["psap-manhattan"][0]
        for _ in range(100):
            if taker.log.find("confirmed", call_id=call_id):
                break
            await asyncio.sleep(0.05)
        assert taker.log.find("confirmed", call_id=call_id), "the ACK never reached the taker"

        bye = in_dialog("BYE", ua.port, call_id, ok, cseq=2, branch=None)
        ua.send(bye, dest)
        ua.send(bye, dest)  # retransmitted
        bye_ok = await ua.expect(response_to("BYE"), 15)
        assert bye_ok.status == 200, bye_ok.first_line
        await asyncio.sleep(0.3)  # let late duplicates (the bug) show up

        # exactly one INVITE reached the call taker, and psapd saw one call
        psap = chain.psaps["psap-manhattan"]
        assert taker.offered == 1
        assert len(psap.log.find("call_received", call_id=call_id)) == 1
        into_taker = [
            e
            for e in chain.events
            if isinstance(e, MessageEvent)
            and e.call_id == call_id
            and e.element == taker.name
            and e.direction == "in"
            and e.first_line.startswith("INVITE")
        ]
        assert len(into_taker) == 1
        # proxied onwards with our own RFC 3261 branch on top
        at_esrp = [
            parse_message(e.data)
            for e in chain.events
            if isinstance(e, MessageEvent)
            and e.call_id == call_id
            and e.element == "esrp"
            and e.direction == "in"
            and e.first_line.startswith("INVITE")
        ]
        assert len(at_esrp) == 1
        assert (at_esrp[0].branch or "").startswith("z9hG4bK")
        # exactly one emergency CallId: the ESRP routed the call once
        routes = chain.esrp.log.find("route", call_id=call_id)
        assert len(routes) == 1
        assert len({tuple(r["ids"]) for r in routes}) == 1
        # the BYE ended the call at the taker and in psapd's call log
        assert [c.ended_by for c in taker.history if c.call_id == call_id] == ["remote"]
        assert [e.outcome for e in psap.call_log if e.call_id == call_id] == ["completed"]
        assert not any(e.errors for e in chain.elements.values())
    finally:
        ua.close()
        await chain.close()


class _UnregisteredTaker(CallTaker):
    async def started(self) -> None:
        return None  # no psapd to register with


@pytest.mark.parametrize("branch", [None, "oldstyle-no-cookie", "z9hG4bKsame-as-invite"])
async def test_ack_matching_the_accepted_invite_goes_up_as_an_ack(branch: str | None) -> None:
    """A UA (the call taker) facing the caller directly: the ACK matches the INVITE's server
    transaction in "accepted" (RFC 2543 matching, or a UA reusing the INVITE's branch for
    the 2xx's ACK); it confirms the call once, and the INVITE is never offered again."""
    taker = _UnregisteredTaker(
        CallTakerConfig(
            name="t", listeners=(ListenerConfig("udp"),), t1=0.5, psap="sip:127.0.0.1:9"
        ),
        log_keep=200,
    )
    await taker.start()
    ua = await RawUa().open()
    try:
        addr = taker.local("udp")
        dest = (addr.host, addr.port)
        call_id = f"direct-{branch}@127.0.0.1"
        ua.send(emergency_invite(ua.port, call_id, branch=branch), dest)
        ok = await ua.expect(response_to("INVITE"), 10)
        assert ok.status == 200
        ack = in_dialog("ACK", ua.port, call_id, ok, cseq=1, branch=branch, ruri="urn:service:sos")
        for _ in range(3):
            ua.send(ack, dest)
        for _ in range(100):
            if taker.log.find("confirmed", call_id=call_id):
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)
        assert len(taker.log.find("confirmed", call_id=call_id)) == 1
        assert len(taker.log.find("offered", call_id=call_id)) == 1
        assert taker.offered == 1 and taker.errors == 0
    finally:
        ua.close()
        await taker.close()
