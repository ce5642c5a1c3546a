"""Interop: Kamailio as the VSP proxy over mutual TLS, between our caller and our ESRP.

caller (ng911 ua) ─TLS→ Kamailio (tls + tm + rr; 911 → urn:service:sos, Resource-Priority
esnet.1, record_route, t_relay to the ESRP) ─TLS→ ESRP (LoST) ─UDP→ psapd ─UDP→ call taker.

Both TLS hops are mutually authenticated: Kamailio's certificate comes from the run's CA (it
names the VSP's SIP domain, whom the ESRP's TLS listener serves) and it requires ours; our
ESRP requires Kamailio's. The call must complete, reach Manhattan's
PSAP (psapd's call log), and have been seen by the ESRP as coming over TLS from Kamailio with
its certificate identity, with the service URN and the priority Kamailio set.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ng911.elements.config import CallerConfig, ListenerConfig
from ng911.elements.ua import Caller
from ng911.interop.kamailio import (
    Kamailio,
    emergency_vsp_cfg,
    missing_reason,
    tls_cfg,
    write_ca_bundle,
)
from ng911.interop.procs import free_port
from ng911.net.events import HandshakeEvent, MessageEvent
from ng911.pki.certs import issue
from ng911.pki.tls import client_context, server_context
from ng911.sip.parse import parse_message
from ng911.testbed.launcher import open_chain

pytestmark = pytest.mark.interop

REASON = missing_reason("tls", "tm", "rr")


@pytest.mark.skipif(REASON is not None, reason=REASON or "")
async def test_kamailio_vsp_over_mutual_tls(tmp_path: Path) -> None:
    chain = await open_chain(hops=("tls", "tls", "udp", "udp"))
    caller: Caller | None = None
    kam: Kamailio | None = None
    try:
        ca = chain.plan.pki.ca
        cert = issue(
            ca,
            "kamailio",
            dns=("kamailio.vsp.example",),
            sip_domains=("vsp.example",),
            out_dir=tmp_path / "pki",
        )
        bundle = write_ca_bundle([ca.cert_path], tmp_path / "cas.pem")
        tlscfg = tmp_path / "tls.cfg"
        tlscfg.write_text(tls_cfg(cert=cert.chain_path, key=cert.key_path, ca=bundle))
        esrp = chain.esrp.local("tls")
        esrp_uri = f"sip:{esrp.host}:{esrp.port};transport=tls"
        port = free_port()
        cfg = emergency_vsp_cfg(
            port=port,
            esrp=esrp_uri,
            tls_cfg_path=tlscfg,
            hosts={chain.esrp.fqdn: esrp_uri},
        )
        kam = Kamailio(cfg, port, "tls", shm_mb=64, workdir=tmp_path / "kam")
        (tmp_path / "kam").mkdir()
        await asyncio.to_thread(kam.start)

        mine = issue(ca, "caller-k", dns=("caller.vsp.example",), out_dir=tmp_path / "pki")
        caller = Caller(
            CallerConfig(
                name="caller-k",
                fqdn="caller.vsp.example",
                listeners=(ListenerConfig("tls", "127.0.0.1", 0),),
                aor="sip:+12125550123@vsp.example",
                proxy=f"sips:127.0.0.1:{port}",
                register=False,
                dial="911",
                hangup_after=0.05,
                t1=0.5,
            ),
            log_keep=200,
            observers=[chain.events.append],
            client_tls=client_context([ca.cert_path], cert=mine.chain_path, key=mine.key_path),
            server_tls=server_context(
                mine.chain_path, mine.key_path, [ca.cert_path], require_client_cert=True
            ),
        )
        await caller.start()
        lat, lon = chain.topology.point("Manhattan")
        rec = await asyncio.wait_for(caller.place_call(lat, lon), 15)
        assert rec.status == 200, (rec.status, rec.reason, kam.log())
        await asyncio.wait_for(rec.ended.wait(), 5)

        log = chain.psaps["psap-manhattan"].call_log
        assert len(log) == 1, kam.log()
        assert log[0].outcome == "completed"
        assert log[0].caller == "sip:+12125550123@vsp.example"

        # the ESRP got the INVITE over TLS from Kamailio, rewritten by it
        ins = [
            e
            for e in chain.events
            if isinstance(e, MessageEvent)
            and e.element == "esrp"
            and e.direction == "in"
            and e.call_id == rec.call_id
            and e.first_line.startswith("INVITE")
        ]
        assert ins and all(e.transport == "tls" for e in ins)
        inv = parse_message(ins[0].data)
        assert inv.first_line.startswith("INVITE urn:service:sos ")
        assert inv.headers.get("Resource-Priority") == "esnet.1"
        # Kamailio's own Via on top (sent-by: its TLS listener)
        assert f"SIP/2.0/TLS 127.0.0.1:{port}" in inv.headers.get_all("Via")[0]
        # mutual TLS: the ESRP saw Kamailio's certificate identity
        shakes = [
            e
            for e in chain.events
            if isinstance(e, HandshakeEvent) and e.element == "esrp" and e.role == "server"
        ]
        assert shakes and all(e.ok for e in shakes)
        assert any("vsp.example" in e.peer_identities for e in shakes)
        # the BYE went back through Kamailio to the ESRP (record-route + host table)
        byes = [
            e
            for e in chain.events
            if isinstance(e, MessageEvent)
            and e.element == "esrp"
            and e.direction == "in"
            and e.call_id == rec.call_id
            and e.first_line.startswith("BYE")
        ]
        assert byes, kam.log()
    finally:
        if caller is not None:
            await caller.close()
        if kam is not None:
            await asyncio.to_thread(kam.stop)
        errors = {e.name: e.errors for e in chain.elements.values() if e.errors}
        await chain.close()
    assert not errors, errors
