"""Call-ID steering between the workers of one element (ng911.net.steer): real AF_UNIX
socket pairs, real event loop; the element-level test is tests/elements/test_workers.py."""

from __future__ import annotations

import asyncio
import logging
import socket
import zlib

from ng911.net.steer import CallSteering, owner_of, steering_pairs

ADDR = ("127.0.0.1", 40000)


def _pair_of_workers() -> tuple[CallSteering, CallSteering, list]:
    pairs = steering_pairs(2)
    outboxes = [out for _, out in pairs]
    return (
        CallSteering(0, pairs[0][0], outboxes),
        CallSteering(1, pairs[1][0], outboxes),
        pairs,
    )


def _close(pairs) -> None:
    for a, b in pairs:
        a.close()
        b.close()


def test_the_owner_is_the_same_in_every_process_and_spreads_call_ids():
    # CRC-32, not hash(): Python salts str hashes per process
    assert owner_of("abc@host", 3) == zlib.crc32(b"abc@host") % 3
    owners = [owner_of(f"call-{n}@example.com", 2) for n in range(1000)]
    assert 400 < owners.count(0) < 600
    assert owner_of("caf\udce9", 2) in (0, 1)  # undecodable bytes kept (surrogateescape)


async def test_a_handed_over_datagram_reaches_its_owner_with_port_and_sender():
    w0, w1, pairs = _pair_of_workers()
    got: list = []
    try:
        w1.start(asyncio.get_running_loop(), lambda *a: got.append(a))
        assert w0.hand_over(1, 5060, b"INVITE sip:911@x SIP/2.0\r\n\r\n", ADDR)
        assert w0.hand_over(1, 5061, b"BYE", ("::1", 5070))  # IPv6: no space in the host
        for _ in range(50):
            if len(got) == 2:
                break
            await asyncio.sleep(0.01)
        assert got == [
            (5060, b"INVITE sip:911@x SIP/2.0\r\n\r\n", ADDR),
            (5061, b"BYE", ("::1", 5070)),
        ]
        assert w0.stats()["handed_over"] == 2 and w1.stats()["taken_over"] == 2
    finally:
        w1.stop()
        _close(pairs)


async def test_garbage_in_the_inbox_and_a_failing_handler_never_stop_it(caplog):
    w0, w1, pairs = _pair_of_workers()
    got: list = []

    def deliver(port, data, addr):
        if data == b"boom":
            raise ValueError("bad datagram")
        got.append(data)

    try:
        w1.start(asyncio.get_running_loop(), deliver)
        outbox = pairs[1][1]
        for junk in (b"no header line", b"x y\n", b"port host 1\n", b"1 \xff 2\nz"):
            outbox.send(junk)
        with caplog.at_level(logging.ERROR, logger="ng911.net"):
            w0.hand_over(1, 5060, b"boom", ADDR)
            w0.hand_over(1, 5060, b"after", ADDR)
            for _ in range(50):
                if got:
                    break
                await asyncio.sleep(0.01)
        assert got == [b"after"] and w1.bad == 4
        assert "udp_handover_failed" in caplog.text and "bad datagram" in caplog.text
    finally:
        w1.stop()
        _close(pairs)


def test_a_full_outbox_drops_the_hand_over_and_says_so(caplog):
    """An owner that does not read (stalled, or dead before its restart): the hand-over is
    dropped, counted and logged, never handled by the wrong worker and never blocking."""
    w0, _, pairs = _pair_of_workers()
    try:
        pairs[1][1].setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        with caplog.at_level(logging.WARNING, logger="ng911.net"):
            results = [w0.hand_over(1, 5060, b"x" * 1400, ADDR) for _ in range(2000)]
        assert results[0] and not results[-1]
        assert w0.dropped == results.count(False) > 0
        assert "udp_handover_dropped" in caplog.text and "retransmission" in caplog.text
    finally:
        _close(pairs)


def test_a_worker_index_outside_the_pairs_is_refused():
    pairs = steering_pairs(1)
    try:
        try:
            CallSteering(1, pairs[0][0], [pairs[0][1]])
        except ValueError as exc:
            assert "worker 1 of 1" in str(exc)
        else:
            raise AssertionError("index 1 of 1 accepted")
    finally:
        _close(pairs)
