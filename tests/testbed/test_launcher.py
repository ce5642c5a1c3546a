"""The launcher: URIs per hop transport, per-host loopback addresses, block claims."""

import random

import pytest

from ng911.testbed.launcher import start_chain
from ng911.testbed.plan import claim_block, hop_uri, plan_addresses
from ng911.testbed.scenarios import get_scenario
from ng911.testbed.topology import load_topology


def test_hop_uri_carries_no_port():
    assert hop_uri("udp", "vsp.example") == "sip:vsp.example"
    assert hop_uri("tcp", "vsp.example") == "sip:vsp.example;transport=tcp"
    assert hop_uri("tls", "vsp.example", "psap") == "sips:psap@vsp.example"  # RFC 5630


def test_addresses_by_role_column():
    a = plan_addresses(load_topology(), 42)
    assert a["caller"] == "127.42.1.1" and a["vsp"] == "127.42.2.1"
    assert a["esrp"] == "127.42.3.1" and a["lost"] == "127.42.4.1"
    assert sorted(v for k, v in a.items() if k.startswith("psap-")) == [
        f"127.42.5.{i}"
        for i in range(1, 7)  # five boroughs + the default PSAP
    ]
    assert len(set(a.values())) == len(a)


def test_a_claimed_block_cannot_be_claimed_twice():
    b = random.randint(16, 250)
    s = claim_block(b)
    try:
        with pytest.raises(OSError):
            claim_block(b)
    finally:
        s.close()
    claim_block(b).close()  # free again once released


async def test_start_chain_moves_off_a_taken_block(tmp_path):
    b = random.randint(16, 250)
    held = claim_block(b)
    topo = load_topology(scenario=get_scenario("tls-all"))
    try:
        chain = await start_chain(topo, tmp_path, block=b)
        try:
            assert not chain.addresses["vsp"].startswith(f"127.{b}.")
            assert chain.keylog.parent == tmp_path
            sip = set(topo.roles) - {"lost", "logger"}  # the HTTP services are no SipElement
            assert {el.name for el in chain.elements.values()} == sip
            assert chain.logger_server is not None  # start_chain: the logger, by default
            assert chain.logger_server.url == chain.plan.logger.url
        finally:
            await chain.close()
        assert chain.errors == []
    finally:
        held.close()
