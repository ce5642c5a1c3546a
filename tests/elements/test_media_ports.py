"""The UAs' RTP ports: bound for real, kept between calls (`MediaPorts`), closed at the end.

Real UDP sockets on loopback: a port handed out must take datagrams, a kept port must be the
same bound socket, and nothing stays open once the UA is gone.
"""

import asyncio
import socket

from ng911.elements.media import MediaPorts
from ng911.testbed.launcher import open_chain

HOST = "127.0.0.1"


async def test_a_port_given_back_serves_the_next_call_oldest_first():
    ports = MediaPorts(HOST)
    a, b = await ports.take(), await ports.take()
    assert a.port != b.port and a.port > 0
    ports.give_back(a)
    ports.give_back(b)
    ports.give_back(a)  # twice: still kept once
    again = [await ports.take(), await ports.take()]
    assert [p.port for p in again] == [a.port, b.port]  # oldest first, the same sockets
    third = await ports.take()  # none resting: a new port
    assert third.port not in (a.port, b.port)
    # a reused port is a live bound socket: it takes the next call's datagrams
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"rtp", (HOST, a.port))
        for _ in range(100):
            if a.protocol.received:
                break
            await asyncio.sleep(0.01)
    assert a.protocol.received == 1
    ports.close()
    for p in (a, b, third):
        ports.give_back(p)  # after close: closed, not kept
        assert p.transport is None


async def test_no_more_than_keep_rest_and_a_closed_port_is_never_handed_out():
    ports = MediaPorts(HOST, keep=2)
    taken = [await ports.take() for _ in range(3)]
    for p in taken:
        ports.give_back(p)
    assert taken[2].transport is None  # the third one freed is closed
    assert taken[0].transport is not None and taken[1].transport is not None
    taken[0].transport.close()  # e.g. closed by an error while it rested
    assert (await ports.take()) is taken[1]
    ports.close()
    assert taken[1].transport is not None  # handed out: the call holds it, not the pool
    taken[1].close()


async def test_the_chain_s_uas_keep_their_ports_between_calls_and_close_them_at_the_end():
    chain = await open_chain("plain", hangup_after=0.01)
    try:
        loc = chain.topology.locations[0]
        first = await asyncio.wait_for(chain.place_call(loc.lat, loc.lon), 10)
        second = await asyncio.wait_for(chain.place_call(loc.lat, loc.lon), 10)
        assert first.status == second.status == 200
        uas = [el for el in chain.elements.values() if hasattr(el, "media")]
        assert {el.role for el in uas} == {"caller", "calltaker"}
        resting = [p for el in uas for p in el.media._resting]
        assert resting and all(p.transport is not None for p in resting)
    finally:
        await chain.close()
    assert all(p.transport is None for p in resting)
