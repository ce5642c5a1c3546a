"""Issue 11 items 1, 4, 5 at the ESRP: a dead PSAP is remembered, a busy or empty one is
failed over.

Before: every call after a psapd crash waited the full `failover_timeout` on it; a PSAP
answering 486 (all takers busy) or 480 (none registered) ended the call there.
"""

import asyncio
import contextlib
import dataclasses
import time

from failover_helpers import until

from ng911.elements.calltaker import CallTaker
from ng911.elements.psap import Psapd
from ng911.testbed.launcher import open_chain
from ng911.testbed.topology import load_topology
from udp_probe import udp_exchange

MANHATTAN = load_topology().point("Manhattan")
FAILOVER_TIMEOUT = 3.0


@contextlib.asynccontextmanager
async def clean_chain(**kw):
    """`open_chain(**kw)`, closed at the end; no element may have counted an error."""
    chain = await open_chain(**kw)
    try:
        yield chain
    finally:
        errors = {e.name: e.errors for e in chain.elements.values() if e.errors}
        await chain.close()
    assert not errors, errors


def _manhattan_peer(chain) -> str:
    return next(p for p in chain.esrp.health.peers if "manhattan" in p)


async def test_a_dead_psap_is_skipped_until_it_answers_again():
    chain = await open_chain(
        down=("psap-manhattan",),
        settings={"esrp": {"failover_timeout": FAILOVER_TIMEOUT}},
        hangup_after=0.01,
    )
    revived = []
    try:
        esrp = chain.esrp
        esrp.cfg = dataclasses.replace(esrp.cfg, ping_interval_down=0.2, ping_timeout=0.5)
        # the first call finds Manhattan dead (it may wait the failover timeout)
        first = await asyncio.wait_for(chain.place_call(*MANHATTAN), 20)
        assert first.status == 200 and chain.psap_of(first) == "psap-bronx"
        peer = _manhattan_peer(chain)
        assert not esrp.health.is_up(peer)
        assert esrp.log.find("peer_down", peer=peer)

        # the next one goes straight to the alternate: no failover timeout waited
        second = await asyncio.wait_for(chain.place_call(*MANHATTAN), 20)
        assert second.status == 200 and chain.psap_of(second) == "psap-bronx"
        assert second.setup_200 is not None and second.setup_200 < FAILOVER_TIMEOUT / 2
        skipped = esrp.log.find("skip_down", call_id=second.call_id)
        assert skipped and peer in skipped[0]["down"]
        assert not esrp.log.find("failover", call_id=second.call_id)

        # Manhattan's psapd comes back on its planned address and UDP port (the plan holds
        # the configuration of a host left down): the OPTIONS pings see it, calls return
        def revive(name: str, **kw):
            cfg = chain.plan.configs[name]
            udp = tuple(x for x in cfg.listeners if x.transport == "udp")
            return dataclasses.replace(cfg, name=f"{name}-revived", listeners=udp, t1=0.5, **kw)

        psap = Psapd(revive("psap-manhattan"))
        await psap.start()
        revived.append(psap)
        taker = CallTaker(revive("taker-manhattan", keepalive=0))
        await taker.start()
        revived.append(taker)
        assert await until(lambda: esrp.health.is_up(peer), 10)
        assert esrp.log.find("peer_up", peer=peer)
        third = await asyncio.wait_for(chain.place_call(*MANHATTAN), 20)
        assert third.status == 200
        assert taker.answered == 1  # Manhattan's own call taker again
        assert not esrp.log.find("skip_down", call_id=third.call_id)
    finally:
        for el in reversed(revived):
            await el.close()
        errors = {e.name: e.errors for e in [*chain.elements.values(), *revived] if e.errors}
        await chain.close()
    assert not errors, errors


async def test_a_psap_without_call_takers_480_fails_over():
    async with clean_chain(hangup_after=0.01) as chain:
        # Manhattan's only call taker logs off: psapd has nobody (as after a restart)
        assert await chain.takers["psap-manhattan"][0].register(expires=0) == 200
        rec = await asyncio.wait_for(chain.place_call(*MANHATTAN), 15)
        assert rec.status == 200 and chain.psap_of(rec) == "psap-bronx"
        fo = chain.esrp.log.find("failover", call_id=rec.call_id)
        assert fo and fo[0]["status"] == 480
        # a busy PSAP is alive: not marked down
        assert chain.esrp.health.is_up(_manhattan_peer(chain))


async def test_a_psap_with_every_taker_busy_486_fails_over():
    async with clean_chain(settings={"psap": {"queue_size": 0}}, hangup_after=0.01) as chain:
        t = chain.takers["psap-manhattan"][0]
        t.cfg = dataclasses.replace(t.cfg, answer_delay=-1)  # rings, never answers
        first = await chain.place_call(*MANHATTAN, wait=False)
        assert await until(lambda: first.t_180 is not None, 10)
        second = await asyncio.wait_for(chain.place_call(*MANHATTAN), 15)
        assert second.status == 200 and chain.psap_of(second) == "psap-bronx"
        fo = chain.esrp.log.find("failover", call_id=second.call_id)
        assert fo and fo[0]["status"] == 486
        chain.caller.cancel(first)
        await asyncio.wait_for(first.ended.wait(), 5)


async def test_a_ringing_call_fails_over_when_its_psapd_stops():
    """psapd stopping with a call ringing at its taker hands the call back (503) and the ESRP
    puts it through to the alternate PSAP. Before: the call died with psapd's sockets while
    the ESRP, holding its 180, waited on it."""
    async with clean_chain(hangup_after=0.01) as chain:
        for t in chain.takers["psap-manhattan"]:
            t.cfg = dataclasses.replace(t.cfg, answer_delay=-1)  # rings, never answers
        rec = await chain.place_call(*MANHATTAN, wait=False)
        assert await until(lambda: rec.t_180 is not None, 10)
        await chain.elements["psap-manhattan"].close()
        await asyncio.wait_for(rec.ended.wait(), 15)
        assert rec.status == 200 and chain.psap_of(rec) == "psap-bronx"
        fo = chain.esrp.log.find("failover", call_id=rec.call_id)
        assert fo and fo[0]["status"] == 503


async def test_a_call_taker_that_stops_hangs_up_its_call():
    """A call taker that stops ends its answered call with a BYE: the caller hears the call
    end instead of silence."""
    async with clean_chain(hangup_after=30, takers=2) as chain:
        rec = await chain.place_call(*MANHATTAN, wait=False)
        assert await until(lambda: rec.status == 200, 10)
        (busy,) = [t for t in chain.takers["psap-manhattan"] if t.calls]
        await busy.close()
        await asyncio.wait_for(rec.ended.wait(), 5)
        assert rec.ended_by == "remote"


async def test_a_call_taker_that_stops_gives_back_its_ringing_call():
    """A call taker that stops while its phone rings declines the call (480): psapd offers it
    to another call taker at once, not after `offer_timeout` (10 s)."""
    async with clean_chain(hangup_after=0.01, takers=2) as chain:
        takers = chain.takers["psap-manhattan"]
        for t in takers:
            t.cfg = dataclasses.replace(t.cfg, answer_delay=-1)  # rings, never answers
        rec = await chain.place_call(*MANHATTAN, wait=False)
        assert await until(lambda: any(t.calls for t in takers), 10)
        (ringing,) = [t for t in takers if t.calls]
        (other,) = [t for t in takers if t is not ringing]
        await ringing.close()
        assert await until(lambda: bool(other.calls), 3)
        chain.caller.cancel(rec)
        await asyncio.wait_for(rec.ended.wait(), 5)


async def test_a_ringing_call_moves_to_the_alternate_when_its_psap_crashes():
    """psapd dies (no hand-back, its sockets just gone) while a call rings there: the ESRP's
    ping finds it down and moves the call to the alternate PSAP at once. Before: the ESRP
    had the 180, its failover timer had stopped, and the call rang for ever."""
    chain = await open_chain(hangup_after=0.01)
    try:
        esrp = chain.esrp
        esrp.cfg = dataclasses.replace(
            esrp.cfg, ping_interval=0.2, ping_interval_down=0.2, ping_timeout=0.5
        )
        for t in chain.takers["psap-manhattan"]:
            t.cfg = dataclasses.replace(t.cfg, answer_delay=-1)  # rings, never answers
        rec = await chain.place_call(*MANHATTAN, wait=False)
        assert await until(lambda: rec.t_180 is not None, 10)
        dead = chain.elements["psap-manhattan"]
        dead.tx_timers.stop()  # a crash: no timer of it runs again, nothing is sent
        await dead.transport.close()
        crashed = time.perf_counter()
        await asyncio.wait_for(rec.ended.wait(), 15)
        assert rec.status == 200 and chain.psap_of(rec) == "psap-bronx"
        assert rec.t_200 is not None
        print(f"answered at the alternate {rec.t_200 - crashed:.2f} s after the crash")
        assert rec.t_200 - crashed < 5  # two failed pings (down, then still down), the call
        assert esrp.log.find("peer_down", peer=_manhattan_peer(chain))
        assert esrp.log.find("moved_off_down_psap", call_id=rec.call_id)
        assert esrp.errors == 0
    finally:
        await chain.close()


async def test_a_stopping_esrp_hands_back_the_call_it_is_setting_up():
    """The ESRP stops while a call rings at a PSAP: after `stop_drain` it CANCELs the call
    there and answers 503 with Retry-After, so the caller (or a VSP with another ESRP) hears
    at once. Before: the ESRP's sockets closed under the call, which rang on until the VSP's
    Timer C (3 minutes) and at the PSAP until its offer timed out."""
    async with clean_chain(hangup_after=0.01, settings={"esrp": {"stop_drain": 0.3}}) as chain:
        takers = chain.takers["psap-manhattan"]
        for t in takers:
            t.cfg = dataclasses.replace(t.cfg, answer_delay=-1)  # rings, never answers
        rec = await chain.place_call(*MANHATTAN, wait=False)
        assert await until(lambda: rec.t_180 is not None, 10)
        stopped = time.perf_counter()
        await chain.esrp.close()
        await asyncio.wait_for(rec.ended.wait(), 5)
        assert rec.status == 503
        assert rec.t_end is not None and rec.t_end - stopped < 2.0
        assert chain.esrp.log.find("handed_back", call_id=rec.call_id)
        assert await until(lambda: not any(t.calls for t in takers), 5)  # CANCELled there


async def test_a_call_answered_while_the_esrp_drains_goes_through():
    """A call the PSAP answers within `stop_drain` is not handed back: its 200 passes."""
    async with clean_chain(hangup_after=30, settings={"esrp": {"stop_drain": 3.0}}) as chain:
        for t in chain.takers["psap-manhattan"]:
            t.cfg = dataclasses.replace(t.cfg, answer_delay=0.5)
        rec = await chain.place_call(*MANHATTAN, wait=False)
        assert await until(lambda: rec.t_180 is not None, 10)
        closing = asyncio.ensure_future(chain.esrp.close())
        assert await until(lambda: rec.status is not None, 5)
        assert rec.status == 200 and chain.psap_of(rec) == "psap-manhattan"
        await asyncio.wait_for(closing, 5)
        assert not chain.esrp.log.find("handed_back")
        chain.caller.cancel(rec)


async def test_a_stopping_element_answers_options_503_as_it_would_an_invite():
    """RFC 3261 §11.2: OPTIONS gets the answer an INVITE would get. While the ESRP drains a
    ringing call at stop, a new INVITE gets 503 with Retry-After, and so does a ping, so the
    pinging VSP or ESRP marks it down before it sends a call there. Before: 200 until its
    sockets closed."""
    async with clean_chain(hangup_after=30, settings={"esrp": {"stop_drain": 3.0}}) as chain:
        for t in chain.takers["psap-manhattan"]:
            t.cfg = dataclasses.replace(t.cfg, answer_delay=-1)  # rings, never answers
        rec = await chain.place_call(*MANHATTAN, wait=False)
        assert await until(lambda: rec.t_180 is not None, 10)
        esrp = chain.esrp.local("udp")
        loop = asyncio.get_running_loop()

        async def ping(n: int) -> bytes:
            request = (
                f"OPTIONS sip:{esrp.host}:{esrp.port} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKping{n};rport\r\n"
                "Max-Forwards: 70\r\nFrom: <sip:pinger@127.0.0.1>;tag=p\r\n"
                f"To: <sip:{esrp.host}:{esrp.port}>\r\nCall-ID: ping{n}@127.0.0.1\r\n"
                "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
            ).encode()
            return await loop.run_in_executor(None, udp_exchange, (esrp.host, esrp.port), request)

        assert (await ping(1)).startswith(b"SIP/2.0 200")
        closing = asyncio.ensure_future(chain.esrp.close())
        assert await until(lambda: chain.esrp.going_down, 2)
        answer = await ping(2)
        assert answer.startswith(b"SIP/2.0 503"), answer[:40]
        assert b"\r\nRetry-After: " in answer
        chain.caller.cancel(rec)
        await asyncio.wait_for(closing, 10)


async def test_one_unanswered_ping_does_not_move_a_ringing_call():
    """A PSAP whose OPTIONS ping goes unanswered once, or again after it was heard from, keeps
    the calls ringing there (`bench/load.py`'s SIPp callee answers no OPTIONS while its calls
    flow; moving them failed them); only a second failed ping in a row, nothing heard from it
    in between, moves them to the alternate."""
    async with clean_chain(hangup_after=0.01) as chain:
        esrp = chain.esrp
        esrp.cfg = dataclasses.replace(esrp.cfg, ping_interval=0, ping_interval_down=0)
        for t in chain.takers["psap-manhattan"]:
            t.cfg = dataclasses.replace(t.cfg, answer_delay=-1)  # rings, never answers
        rec = await chain.place_call(*MANHATTAN, wait=False)
        assert await until(lambda: rec.t_180 is not None, 10)
        peer = _manhattan_peer(chain)
        esrp.ping_done(peer, None, "no answer (test)")  # down: the call stays
        assert not esrp.health.is_up(peer)
        esrp.ping_done(peer, 200, "answered (test)")  # heard from: up again
        esrp.ping_done(peer, None, "no answer (test)")  # down again, the call still stays
        await asyncio.sleep(0.3)
        assert rec.status is None and not esrp.log.find("moved_off_down_psap")
        esrp.ping_done(peer, None, "no answer (test)")  # still down: the call moves
        await asyncio.wait_for(rec.ended.wait(), 10)
        assert rec.status == 200 and chain.psap_of(rec) == "psap-bronx"
        assert esrp.log.find("moved_off_down_psap", call_id=rec.call_id)
