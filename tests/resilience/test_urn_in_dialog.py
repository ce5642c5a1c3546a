"""Issue 11 item 6: ACK and BYE with Request-URI `urn:service:sos` and no Route.

i3 test suites and older gear send the in-dialog requests of a 911 call to the dialled URN
through their outbound proxy, without the route set. Before the fix the VSP answered the BYE
416 (it cannot route a URN) and dropped the ACK, so the call taker never heard of either.
Now each proxy routes such a request by the dialog it belongs to (Call-ID and tags); one
that belongs to no dialog gets 481 (RFC 3261 §12.2.2).
"""

from __future__ import annotations

import asyncio

from dialog_helpers import RawUa, emergency_invite, in_dialog, response_to

from ng911.net.events import MessageEvent
from ng911.testbed.launcher import open_chain


async def test_ack_and_bye_to_the_urn_reach_the_call_taker() -> None:
    chain = await open_chain("plain")
    ua = await RawUa().open()
    try:
        vsp = chain.vsp.local("udp")
        dest = (vsp.host, vsp.port)
        call_id = "urn-dialog-1@127.0.0.1"
        ua.send(emergency_invite(ua.port, call_id, branch="z9hG4bKurn-inv-1"), dest)
        ok = await ua.expect(response_to("INVITE"), 15)
        assert ok.status == 200, ok.first_line
        sos = "urn:service:sos"
        ack = in_dialog(
            "ACK", ua.port, call_id, ok, cseq=1, branch="z9hG4bKurn-ack-1", ruri=sos, routes=False
        )
        ua.send(ack, dest)
        taker = chain.takers["psap-manhattan"][0]
        for _ in range(100):
            if taker.log.find("confirmed", call_id=call_id):
                break
            await asyncio.sleep(0.05)
        assert taker.log.find("confirmed", call_id=call_id), "the ACK never reached the taker"

        bye = in_dialog(
            "BYE", ua.port, call_id, ok, cseq=2, branch="z9hG4bKurn-bye-1", ruri=sos, routes=False
        )
        ua.send(bye, dest)
        bye_ok = await ua.expect(response_to("BYE"), 15)
        assert bye_ok.status == 200, bye_ok.first_line
        assert [c.ended_by for c in taker.history if c.call_id == call_id] == ["remote"]
        psap = chain.psaps["psap-manhattan"]
        assert [e.outcome for e in psap.call_log if e.call_id == call_id] == ["completed"]
        # the BYE crossed every proxy as a properly routed in-dialog request
        byes_in = {
            e.element
            for e in chain.events
            if isinstance(e, MessageEvent)
            and e.call_id == call_id
            and e.first_line.startswith("BYE")
            and e.direction == "in"
        }
        assert {"vsp", "esrp", psap.name, taker.name} <= byes_in
        assert chain.vsp.log.find("dialog_route", call_id=call_id)

        # the dialog is over: the same BYE again (a new transaction) belongs to no dialog
        again = in_dialog(
            "BYE", ua.port, call_id, ok, cseq=3, branch="z9hG4bKurn-bye-2", ruri=sos, routes=False
        )
        ua.send(again, dest)
        late = await ua.expect(response_to("BYE"), 15)
        assert late.status == 481, late.first_line
        assert not any(e.errors for e in chain.elements.values())
    finally:
        ua.close()
        await chain.close()


async def test_in_dialog_request_of_an_unknown_dialog_gets_481() -> None:
    chain = await open_chain("plain")
    ua = await RawUa().open()
    try:
        esrp = chain.esrp.local("udp")
        # both on port 5060 of their own address: the index keeps the transactions apart
        for i, element in enumerate((chain.vsp.local("udp"), esrp)):
            bye = "\r\n".join(
                [
                    "BYE urn:service:sos SIP/2.0",
                    f"Via: SIP/2.0/UDP 127.0.0.1:{ua.port};branch=z9hG4bKghost{i}",
                    "Max-Forwards: 70",
                    "From: <sip:caller@vsp.example>;tag=ghost-from",
                    "To: <urn:service:sos>;tag=ghost-to",
                    f"Call-ID: ghost-{i}@127.0.0.1",
                    "CSeq: 7 BYE",
                    "Content-Length: 0",
                    "",
                    "",
                ]
            )
            ua.send(bye, (element.host, element.port))
            resp = await ua.expect(response_to("BYE"), 15)
            assert resp.status == 481, resp.first_line
    finally:
        ua.close()
        await chain.close()
