"""Impairment relays: parsing, delay and order, loss, aliases, and a whole run through them."""

import asyncio
import random
import shutil
import subprocess
import time

import pytest

from ng911.testbed.errors import TestbedError
from ng911.testbed.impair import AliasEvent, HopRelay, Impairment, parse_impairment
from ng911.testbed.plan import ChainOptions
from ng911.testbed.run import RunConfig, run


def test_parse_impairment():
    assert parse_impairment("hop2:delay=20,jitter=2,loss=0.5") == Impairment("hop2", 20, 2, 0.5)
    assert parse_impairment("hop4") == Impairment("hop4")
    assert parse_impairment("hop1:delay=3").describe() == "hop1: delay=3ms"
    for bad, msg in [
        ("hop5:delay=1", "expected hopN"),
        ("hop2:delay=x", "not a number"),
        ("hop2:latency=3", "unknown setting"),
        ("hop2:delay=1,jitter=2", "jitter ≤ delay"),
        ("hop2:loss=100", "loss must be"),
        ("hop2:delay=-1", "delay ≥ 0"),
    ]:
        with pytest.raises(TestbedError, match=msg):
            parse_impairment(bad)


class _Echo(asyncio.DatagramProtocol):
    def connection_made(self, t):
        self.t = t

    def datagram_received(self, d, a):
        self.t.sendto(b"re:" + d, a)


class _Client(asyncio.DatagramProtocol):
    def __init__(self):
        self.got: asyncio.Queue = asyncio.Queue()

    def datagram_received(self, d, a):
        self.got.put_nowait((time.perf_counter(), d, a))


async def test_udp_relay_delays_both_ways_in_order_and_reports_aliases():
    loop = asyncio.get_running_loop()
    block = random.randint(16, 250)
    server, _ = await loop.create_datagram_endpoint(_Echo, local_addr=(f"127.{block}.3.1", 0))
    port = server.get_extra_info("sockname")[1]
    events: list = []
    relay = HopRelay(
        "r",
        Impairment("hop2", 5.0),
        f"127.{block}.7.1",
        f"127.{block}.3.1",
        {"udp": port},
        [events.append],
    )
    await relay.start()
    client = _Client()
    ct, _ = await loop.create_datagram_endpoint(lambda: client, local_addr=(f"127.{block}.2.1", 0))
    try:
        t0 = time.perf_counter()
        for i in range(5):
            ct.sendto(f"m{i}".encode(), (f"127.{block}.7.1", port))
        got = [await asyncio.wait_for(client.got.get(), 3) for _ in range(5)]
        assert [d for _, d, _ in got] == [f"re:m{i}".encode() for i in range(5)]
        assert all(a == (f"127.{block}.7.1", port) for _, _, a in got)  # answers via the relay
        assert got[0][0] - t0 >= 2 * 0.005 * 0.9  # there and back
        kinds = {(e.alias, e.target) for e in events if isinstance(e, AliasEvent)}
        assert ((f"127.{block}.7.1", port), (f"127.{block}.3.1", port)) in kinds
        assert any(t == ct.get_extra_info("sockname") for _, t in kinds)
    finally:
        ct.close()
        server.close()
        await relay.close()


async def test_udp_relay_loses_what_it_is_told_to():
    loop = asyncio.get_running_loop()
    block = random.randint(16, 250)
    server, _ = await loop.create_datagram_endpoint(_Echo, local_addr=(f"127.{block}.3.2", 0))
    port = server.get_extra_info("sockname")[1]
    relay = HopRelay(
        "r",
        Impairment("hop2", 0.0, 0.0, 50.0),
        f"127.{block}.7.2",
        f"127.{block}.3.2",
        {"udp": port},
        rng=random.Random(7),
    )
    await relay.start()
    client = _Client()
    ct, _ = await loop.create_datagram_endpoint(lambda: client, local_addr=(f"127.{block}.2.2", 0))
    try:
        for i in range(40):
            ct.sendto(b"x%d" % i, (f"127.{block}.7.2", port))
        await asyncio.sleep(0.2)
        assert 0 < client.got.qsize() < 40  # each way loses about half
    finally:
        ct.close()
        server.close()
        await relay.close()


async def test_tcp_relay_is_transparent_and_ordered():
    block = random.randint(16, 250)

    async def echo(r, w):
        while data := await r.read(100):
            w.write(data.upper())
        w.close()

    srv = await asyncio.start_server(echo, f"127.{block}.3.3", 0)
    port = srv.sockets[0].getsockname()[1]
    events: list = []
    relay = HopRelay(
        "r",
        Impairment("hop3", 2.0, 1.0),
        f"127.{block}.7.3",
        f"127.{block}.3.3",
        {"tcp": port},
        [events.append],
    )
    await relay.start()
    try:
        r, w = await asyncio.open_connection(f"127.{block}.7.3", port)
        for i in range(20):
            w.write(b"abc%d;" % i)
        expected = b"".join(b"ABC%d;" % i for i in range(20))
        got = b""
        while len(got) < len(expected):
            got += await asyncio.wait_for(r.read(1000), 3)
        assert got == expected
        assert any(e.target == w.get_extra_info("sockname") for e in events)
        w.close()
    finally:
        srv.close()
        await relay.close()


def test_a_run_through_a_delayed_tls_hop(tmp_path):
    imp = Impairment("hop2", 4.0)
    cfg = RunConfig(
        scenarios=["tls-all"],
        baseline=False,
        calls=7,
        rate=50.0,
        out=tmp_path / "run",
        chain=ChainOptions(hangup_after=0.01, impairments=(imp,)),
    )
    result = run(cfg)
    res = result.results["scenarios"]["tls-all"]
    assert res["failed"] == 0 and res["unpaired_messages"] == 0
    assert res["observed_transports"] == {h: "tls" for h in ("hop1", "hop2", "hop3", "hop4")}
    # INVITE down and 180 up each waited at least the delay on hop 2
    assert res["breakdown"]["warm"]["hop2"] >= 2 * imp.delay_ms * 0.9
    assert result.results["meta"]["impairments"] == ["hop2: delay=4ms"]
    tshark = shutil.which("tshark")
    if tshark is None:
        pytest.skip("tshark not installed")
    d = result.run_dir / "tls-all"
    out = subprocess.run(
        [
            tshark,
            "-n",
            "-r",
            str(d / "hop2.pcapng"),
            "-o",
            f"tls.keylog_file:{d / 'keys.log'}",
            "-Y",
            "sip.Method",
            "-T",
            "fields",
            "-e",
            "sip.Method",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.split()
    assert out.count("INVITE") == 7  # one conversation per connection, through the relay
