"""A next hop that answers 180 and then dies: RFC 3261 §16.8 Timer C and §9.1.

Without them a proxy's call rang upstream for ever (the caller heard ringback, nobody ever
answered or refused it) and its transactions stayed in memory for ever: the silent loss of
an emergency call the mission forbids, and a leak a flaky PSAP could grow without bound.
"""

from __future__ import annotations

import asyncio

from callers import start_caller

from ng911.elements.config import ListenerConfig, VspConfig
from ng911.elements.contexts import ClientCtx
from ng911.elements.ua import Caller
from ng911.elements.vsp import VspProxy
from ng911.sip.message import Request, make_response
from ng911.sip.parse import parse_message

T1 = 0.02  # the VSP's: 64*T1 = 1.28 s for its CANCEL to be answered


class DeadAfterRinging(asyncio.DatagramProtocol):
    """A next hop that answers an INVITE 100 and 180, then nothing, ever (a PSAP that
    crashed while the call rang). It records the requests it got."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.methods: list[str] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        msg = parse_message(data)
        if not isinstance(msg, Request):
            return
        self.methods.append(msg.method)
        if msg.method == "INVITE" and self.methods.count("INVITE") == 1:
            assert self.transport is not None
            self.answer(msg, self.transport, addr)

    def answer(
        self, invite: Request, transport: asyncio.DatagramTransport, addr: tuple[str, int]
    ) -> None:
        """The answers to the first INVITE: 100 and 180, then nothing."""
        for status in (100, 180):
            tag = "dead1" if status > 100 else None
            transport.sendto(make_response(invite, status, to_tag=tag).to_bytes(), addr)


async def _chain(
    timer_c: float, hop: type[DeadAfterRinging] = DeadAfterRinging
) -> tuple[VspProxy, Caller, DeadAfterRinging, asyncio.BaseTransport]:
    """caller → VSP (Timer C `timer_c`) → `hop`, the VSP's ESRP."""
    loop = asyncio.get_running_loop()
    t, dead = await loop.create_datagram_endpoint(hop, local_addr=("127.0.0.1", 0))
    port = t.get_extra_info("sockname")[1]
    vsp = VspProxy(
        VspConfig(
            name="vsp",
            listeners=(ListenerConfig("udp"),),
            t1=T1,
            timer_c=timer_c,
            esrp=f"sip:127.0.0.1:{port}",
        ),
        log_keep=500,
    )
    await vsp.start()
    caller = await start_caller(vsp.local("udp").port)
    return vsp, caller, dead, t


def _invite_clients(vsp: VspProxy) -> list[ClientCtx]:
    return [
        c for c in vsp._ctxs.values() if isinstance(c, ClientCtx) and c.request.method == "INVITE"
    ]


async def _until(cond, seconds: float) -> bool:
    for _ in range(int(seconds / 0.02)):
        if cond():
            return True
        await asyncio.sleep(0.02)
    return cond()


async def test_timer_c_cancels_a_branch_that_rings_for_ever_and_answers_408_upstream():
    vsp, caller, dead, t = await _chain(timer_c=0.3)
    try:
        rec = await caller.place_call(cancel_after=30, timeout=5)
        assert rec.provisionals[-1] == 180
        assert rec.status == 408  # before Timer C: no final answer, ever
        assert rec.setup_180 is not None and rec.t_end is not None
        assert rec.t_end - rec.t_invite >= 0.3
        assert "CANCEL" in dead.methods  # §16.8: the ringing branch is CANCELled
        assert vsp.log.find("timer_c")
        # §9.1: the dead hop never answers the CANCEL; 64*T1 later the branch's INVITE
        # transaction is destroyed, and the call with it
        assert await _until(lambda: not _invite_clients(vsp), 64 * T1 + 1.0)
        assert vsp.log.find("branch_given_up")
        assert not vsp.calls
        assert vsp.errors == 0
    finally:
        await caller.close()
        await vsp.close()
        t.close()


async def test_a_cancelled_call_whose_next_hop_died_still_gets_its_487():
    """The caller gives up (CANCEL); the next hop that rang is dead and never answers 487:
    64*T1 after forwarding the CANCEL the proxy answers the 487 itself."""
    vsp, caller, dead, t = await _chain(timer_c=180.0)
    try:
        rec = await caller.place_call(cancel_after=0.2, timeout=5)
        assert rec.status == 487  # before: the INVITE was never answered
        assert rec.t_end is not None and rec.t_end - rec.t_invite >= 64 * T1
        assert "CANCEL" in dead.methods
        assert vsp.log.find("branch_given_up")
        assert await _until(lambda: not _invite_clients(vsp), 1.0)
        assert vsp.errors == 0
    finally:
        await caller.close()
        await vsp.close()
        t.close()


class RingsThenBusy(DeadAfterRinging):
    """A next hop that rings, a 180 every 0.1 s for 0.5 s, then answers 486."""

    def answer(
        self, invite: Request, transport: asyncio.DatagramTransport, addr: tuple[str, int]
    ) -> None:
        loop = asyncio.get_running_loop()
        for i in range(6):
            resp = make_response(invite, 180 if i < 5 else 486, to_tag="ring1")
            loop.call_later(0.1 * i, transport.sendto, resp.to_bytes(), addr)


async def test_a_provisional_answer_restarts_timer_c():
    """§16.7 item 2: each provisional answer moves Timer C on; a branch that keeps ringing
    is not cut while its 180s come, though the whole wait is longer than Timer C."""
    vsp, caller, hop, t = await _chain(timer_c=0.25, hop=RingsThenBusy)
    try:
        rec = await caller.place_call(cancel_after=30, timeout=5)
        assert rec.status == 486  # the branch's own answer, not Timer C's 408
        assert rec.t_end is not None and rec.t_end - rec.t_invite >= 0.5
        assert "CANCEL" not in hop.methods
        assert not vsp.log.find("timer_c")
    finally:
        await caller.close()
        await vsp.close()
        t.close()
