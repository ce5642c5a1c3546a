"""The proxy core and the VSP on their own: registrar, non-emergency routing, loops."""

import asyncio

from callers import start_caller

from ng911.elements.calltaker import CallTaker
from ng911.elements.config import CallerConfig, CallTakerConfig, ListenerConfig, VspConfig
from ng911.elements.ua import Caller
from ng911.elements.vsp import VspProxy
from ng911.sip.uri import parse_uri


async def start_vsp(**kw):
    vsp = VspProxy(
        VspConfig(name="vsp", listeners=(ListenerConfig("udp"),), t1=0.05, **kw), log_keep=500
    )
    await vsp.start()
    return vsp


async def test_loop_is_detected_482():
    vsp = await start_vsp()
    port = vsp.local("udp").port
    vsp.esrp = parse_uri(f"sip:127.0.0.1:{port}")  # misconfigured: the ESRP is ourselves
    caller = await start_caller(port)
    try:
        rec = await asyncio.wait_for(caller.place_call(timeout=5), 5)
        assert rec.status == 482
        assert vsp.log.find("request_refused", status=482)
    finally:
        await caller.close()
        await vsp.close()


async def test_registered_users_reach_each_other_and_unknown_get_404():
    vsp = await start_vsp()
    port = vsp.local("udp").port
    # a "call taker" element as a plain UAS registered at the VSP under bob's AOR
    bob = CallTaker(
        CallTakerConfig(
            name="bob",
            listeners=(ListenerConfig("udp"),),
            t1=0.05,
            aor="sip:bob@vsp.example",
            psap=f"sip:127.0.0.1:{port}",
            hangup_after=0.01,
        ),
        log_keep=100,
    )
    await bob.start()
    caller = Caller(
        CallerConfig(listeners=(ListenerConfig("udp"),), t1=0.05, proxy=f"sip:127.0.0.1:{port}"),
        log_keep=100,
    )
    await caller.start()
    try:
        assert len(vsp.registrar.all(0)) == 2  # alice (the caller) and bob
        rec = await asyncio.wait_for(caller.place_call(dial="sip:bob@vsp.example"), 5)
        assert rec.status == 200 and rec.ended_by == "remote"
        assert vsp.emergency_calls == 0
        rec = await asyncio.wait_for(caller.place_call(dial="sip:carol@vsp.example"), 5)
        assert rec.status == 404
        # re-REGISTER with expires 0 removes bob
        assert await bob.register(expires=0) == 200
        assert [b.aor for b in vsp.registrar.all(0)] == ["sip:alice@vsp.example"]
    finally:
        await caller.close()
        await bob.close()
        await vsp.close()


async def test_tls_from_config_files(tmp_path):
    """TLS set up from the TOML-level settings (cert/key/ca files), mutual, by name."""
    from ng911.elements.config import CallerConfig as CC
    from ng911.elements.config import load_toml
    from ng911.node.build import build_element
    from ng911.pki.testpki import build_test_pki

    pki = build_test_pki(tmp_path / "pki", elements=())
    files = {}
    for name, fqdn in (
        ("vsp", "proxy.vsp.example"),
        ("bob", "bob.vsp.example"),
        ("alice", "alice.vsp.example"),
    ):
        c = pki.issue(name, ca="vsp", dns=(fqdn,), sip_domains=(fqdn,))
        files[name] = (c.chain_path, c.key_path)
    ca = ", ".join(f'"{p}"' for p in pki.ca_files())
    hosts = (
        "hosts = ["
        + ", ".join(
            f'{{name = "{h}", address = "127.0.0.1"}}'
            for h in ("proxy.vsp.example", "bob.vsp.example", "alice.vsp.example")
        )
        + "]"
    )

    def tls(name, mutual=True, peer=""):
        cert, key = files[name]
        return (
            f'tls = {{cert = "{cert}", key = "{key}", ca = [{ca}], '
            f'require_client_cert = {str(mutual).lower()}, expected_peer = "{peer}"}}'
        )

    topo = tmp_path / "topo.toml"
    topo.write_text(f"""
[vsp]
name = "vsp"
fqdn = "proxy.vsp.example"
listeners = [{{transport = "tls", host = "127.0.0.1", port = 0}}]
{tls("vsp")}
{hosts}
""")
    vsp = build_element("vsp", load_toml(topo, "vsp", VspConfig), log_keep=200)
    await vsp.start()
    port = vsp.local("tls").port
    with topo.open("a") as fh:
        fh.write(f"""
[bob]
name = "bob"
fqdn = "bob.vsp.example"
aor = "sip:bob@vsp.example"
psap = "sips:proxy.vsp.example:{port}"
hangup_after = 0.01
listeners = [{{transport = "tls", host = "127.0.0.1", port = 0}}]
{tls("bob")}
{hosts}

[alice]
name = "alice"
fqdn = "alice.vsp.example"
aor = "sip:alice@vsp.example"
proxy = "sips:proxy.vsp.example:{port}"
listeners = [{{transport = "tls", host = "127.0.0.1", port = 0}}]
{tls("alice")}
{hosts}
""")
    bob = build_element("calltaker", load_toml(topo, "bob", CallTakerConfig), log_keep=100)
    await bob.start()
    alice = build_element("caller", load_toml(topo, "alice", CC), log_keep=100)
    assert isinstance(alice, Caller)
    await alice.start()
    try:
        rec = await asyncio.wait_for(alice.place_call(dial="sip:bob@vsp.example"), 10)
        assert rec.status == 200 and rec.ended_by == "remote"
        assert vsp.transport.stats.tls_refused == 0
        ids = {i for c in vsp.transport.connections() for i in c["identities"]}
        assert {"bob.vsp.example", "alice.vsp.example"} <= ids  # mutual: clients proved names
    finally:
        await alice.close()
        await bob.close()
        await vsp.close()
