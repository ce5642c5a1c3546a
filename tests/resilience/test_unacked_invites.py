"""Issue 11 item 1: a dozen spoofed, never-ACKed 911 INVITEs must not take a PSAP down.

Before: every call taker was held 64*T1 waiting for the ACK, the queue filled, psapd
answered real callers 486 and the ESRP did not fail over on 486. Now psapd gives up on the
ACK after `ack_timeout` (BYE, taker freed, `ack_timeout` in the call log) and the ESRP takes
a 486 to the alternate PSAP.
"""

import asyncio
import dataclasses

from failover_helpers import RawUa, until

from ng911.testbed.launcher import open_chain
from ng911.testbed.topology import load_topology

MANHATTAN = load_topology().point("Manhattan")
SPOOFED = 12
ACK_TIMEOUT = 0.3


async def test_spoofed_unacked_invites_do_not_wedge_the_psap():
    chain = await open_chain(hangup_after=0.01, settings={"esrp": {"failover_timeout": 2.0}})
    spoofer = real = None
    try:
        psap = chain.psaps["psap-manhattan"]
        at = psap.local("udp")
        psap.cfg = dataclasses.replace(psap.cfg, ack_timeout=ACK_TIMEOUT)
        spoofer = await RawUa.open(at.port, host=at.host, ack=False)
        spoofed = [spoofer.invite() for _ in range(SPOOFED)]
        # the one taker answers the first, ten wait in the queue, the twelfth is refused
        assert await until(lambda: len(psap.acd.queue) == 10, 10)

        # a real caller through the chain right now: answered (by the alternate PSAP:
        # the ESRP fails over on Manhattan's 486), not refused
        rec = await asyncio.wait_for(chain.place_call(*MANHATTAN), 15)
        assert rec.status == 200, (rec.status, rec.reason)
        assert rec.setup_200 is not None and rec.setup_200 < 5.0
        fo = chain.esrp.log.find("failover", call_id=rec.call_id)
        assert fo and fo[0]["status"] == 486 and "bronx" in fo[0]["next"]

        # psapd hangs the unACKed calls up one after the other and drains its queue
        def drained() -> bool:
            return len(psap.log.find("ack_timeout")) >= SPOOFED - 1 and not psap.acd.queue

        assert await until(drained, 30)
        outcomes = {e.call_id: e.outcome for e in psap.call_log}
        assert sum(1 for c in spoofed if outcomes.get(c) == "ack_timeout") == SPOOFED - 1
        assert sum(1 for c in spoofed if outcomes.get(c) == "rejected 486") == 1
        assert psap.acd.free_takers() == list(psap.acd.takers)
        # the taker got a BYE for each (its dialogs are closed, nothing left ringing)
        taker = chain.takers["psap-manhattan"][0]
        assert await until(lambda: not taker.calls, 5)

        # a real call straight to psapd, which ACKs: answered at once, and stays up
        real = await RawUa.open(at.port, host=at.host, ack=True)
        cid = real.invite()
        final = await real.final(cid, 5)
        assert final.status == 200
        await asyncio.sleep(ACK_TIMEOUT * 3)
        assert not psap.log.find("ack_timeout", call_id=cid)
        assert psap.acd.taker_of(cid) is not None  # still connected
    finally:
        for ua in (spoofer, real):
            if ua is not None:
                ua.close()
        errors = {e.name: e.errors for e in chain.elements.values() if e.errors}
        await chain.close()
    assert not errors, errors
