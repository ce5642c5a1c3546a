"""Issue 11, item 9: a certificate for another name, from a trusted CA, must not get in.

The ESRP's mutual-TLS listener names the peers it serves (`allowed_peers`, RFC 5922 §7.3);
a valid certificate for any other domain is refused at the handshake, before a byte of SIP
is read, with a `tls_refused` log line. The right peer still gets its answer.
"""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from netlimits_helpers import Peer, esrp_config, start_element

from ng911.elements.config import ConfigError, ListenerConfig
from ng911.net import TransportError
from ng911.pki.testpki import TestPki, build_test_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    p = build_test_pki(tmp_path_factory.mktemp("wrongname"))
    # a valid certificate from the VSP's CA (which the ESRP trusts), for another domain
    p.issue("rogue", ca="vsp", dns=("rogue.example",), sip_domains=("rogue.example",))
    return p


def _events(caplog: pytest.LogCaptureFixture, name: str) -> list[dict[str, object]]:
    out = []
    for r in caplog.records:
        if r.name == "ng911.net" and f'"{name}"' in r.getMessage():
            out.append(json.loads(r.getMessage()))
    return out


async def test_wrong_name_certificate_is_refused_at_the_handshake(pki, caplog):
    tls = ListenerConfig("tls", allowed_peers=("vsp.example",))
    el, _tcp, tls_addr = await start_element(esrp_config(pki, tls=tls))
    rogue = Peer(pki.client_context("rogue"))
    vsp = Peer(pki.client_context("vsp-proxy"))
    try:
        with caplog.at_level(logging.INFO, logger="ng911.net"):
            with pytest.raises((TransportError, TimeoutError)):
                # TLS 1.3: the client finishes first, then learns of the refusal
                await rogue.options(tls_addr, timeout=3.0)
            assert el.transport.stats.messages_in == 0  # no SIP was read from it
            assert el.transport.stats.peers_refused == 1
            refused = _events(caplog, "tls_refused")
            assert refused, "no tls_refused log line"
            assert str(refused[0]["reason"]).startswith("peer not allowed")
            assert "rogue.example" in str(refused[0]["reason"])
            # the right peer works
            resp = await vsp.options(tls_addr)
            assert resp.status == 200
    finally:
        await rogue.close()
        await vsp.close()
        await el.close()


async def test_empty_allowed_list_admits_any_peer_the_ca_vouches_for(pki):
    el, _tcp, tls_addr = await start_element(esrp_config(pki))
    rogue = Peer(pki.client_context("rogue"))
    try:
        assert (await rogue.options(tls_addr)).status == 200
    finally:
        await rogue.close()
        await el.close()


async def test_expected_peer_still_answers_403(pki):
    """`tls.expected_peer` (per request, `admitting.check_peer`) keeps working beside it."""
    import dataclasses

    cfg = esrp_config(pki)
    cfg = dataclasses.replace(cfg, tls=dataclasses.replace(cfg.tls, expected_peer="vsp.example"))
    el, _tcp, tls_addr = await start_element(cfg)
    rogue = Peer(pki.client_context("rogue"))
    try:
        assert (await rogue.options(tls_addr)).status == 403
    finally:
        await rogue.close()
        await el.close()


def test_allowed_peers_config_is_validated():
    assert ListenerConfig.from_dict(
        {"transport": "tls", "allowed_peers": ["vsp.example", "psap.example"]}
    ).allowed_peers == ("vsp.example", "psap.example")
    with pytest.raises(ConfigError):
        ListenerConfig("tcp", allowed_peers=("vsp.example",))
    with pytest.raises(ConfigError):
        ListenerConfig("tls", allowed_peers=("vsp.example, psap.example",))
    with pytest.raises(ConfigError):
        ListenerConfig("tls", max_per_source=0)


async def test_rogue_is_refused_while_the_vsp_holds_a_connection(pki):
    """Refusal is per connection: the allowed peer's open connection is untouched."""
    tls = ListenerConfig("tls", allowed_peers=("vsp.example",))
    el, _tcp, tls_addr = await start_element(esrp_config(pki, tls=tls))
    vsp = Peer(pki.client_context("vsp-proxy"))
    rogue = Peer(pki.client_context("rogue"))
    try:
        assert (await vsp.options(tls_addr)).status == 200
        with pytest.raises((TransportError, TimeoutError)):
            await rogue.options(tls_addr, timeout=3.0)
        await asyncio.sleep(0.1)
        assert (await vsp.options(tls_addr)).status == 200
        assert len(el.transport.connections()) == 1
    finally:
        await rogue.close()
        await vsp.close()
        await el.close()


def test_testbed_fills_allowed_peers_from_its_hosts():
    from ng911.testbed.plan import allowed_peers
    from ng911.testbed.topology import load_topology

    topo = load_topology()
    esrp = topo.one("esrp")
    vsp = topo.one("vsp")
    psaps = topo.by_role("psap")
    assert set(allowed_peers(topo, esrp)) == {vsp.domain, *(p.domain for p in psaps)}
    for p in psaps:
        want = {esrp.domain, *(t.domain for t in topo.takers_of(p.name))}
        assert set(allowed_peers(topo, p)) == want
        assert vsp.domain not in allowed_peers(topo, p)
    assert allowed_peers(topo, vsp) == ()  # callers' certificates are optional there
