"""Kamailio in the chain: in the VSP's place, and as a plain routing proxy in the ESRP's.

The chain is the testbed's own (plan, launcher, NYC topology); only the one host runs
Kamailio, with the plan's address, certificate and neighbours. Calls must reach the PSAP of
their borough, the trace must still put the messages exchanged with Kamailio on their hops
and split the SRD (Kamailio's segment being the transit through it), and a run must say
which implementation ran each element. Skipped, with the reason, without Kamailio or its
modules; the topology and scenario rules are checked everywhere.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from ng911.interop.kamailio import KAMAILIO, LostTls, esrp_cfg, listen_lines, vsp_cfg
from ng911.observe.calls import Trace
from ng911.observe.records import MsgRecord
from ng911.testbed.errors import TestbedError, TopologyError
from ng911.testbed.launcher import RunningChain, open_chain, wait_registered
from ng911.testbed.peers import as_kamailio, check_runnable, unavailable, with_implementations
from ng911.testbed.plan import SIP_PORTS
from ng911.testbed.report import implementations_line, render_html
from ng911.testbed.run import RunConfig, run_testbed
from ng911.testbed.scenarios import get_scenario
from ng911.testbed.topology import load_topology, parse_topology

NYC = load_topology()
VSP_REASON = unavailable(as_kamailio(NYC, "vsp"))
ESRP_REASON = unavailable(as_kamailio(NYC, "esrp"))
needs_vsp = pytest.mark.skipif(VSP_REASON is not None, reason=VSP_REASON or "")
needs_esrp = pytest.mark.skipif(ESRP_REASON is not None, reason=ESRP_REASON or "")


async def _calls(chain: RunningChain, boroughs: tuple[str, ...]) -> list[str | None]:
    """One call per borough, one at a time: the PSAP whose call taker answered each."""
    await wait_registered(chain)
    out = []
    for b in boroughs:
        lat, lon = chain.topology.point(b)
        rec = await chain.place_call(lat, lon)
        assert rec.status == 200, (rec.status, rec.reason, [p.log() for p in chain.peers.procs])
        out.append(chain.psap_of(rec))
    await asyncio.sleep(0.1)  # the BYEs' transactions end
    return out


def _ins(trace: Trace, element: str, method: str) -> list[MsgRecord]:
    return [
        r
        for r in trace.messages
        if r.element == element and r.direction == "in" and r.method == method
    ]


@needs_vsp
@pytest.mark.parametrize("scenario", ["plain", "tls-all"])
async def test_kamailio_as_vsp_completes_calls(scenario: str) -> None:
    topo = as_kamailio(NYC, "vsp")
    trace = Trace(topo.roles)
    chain = await open_chain(scenario, topology=topo, observers=[trace])
    try:
        assert "vsp" not in chain.elements  # Kamailio there, not ng911's VSP
        (kam,) = chain.peers.procs
        assert kam.pids()
        psaps = await _calls(chain, ("Manhattan", "Brooklyn"))
        assert psaps == ["psap-manhattan", "psap-brooklyn"]
        assert len(chain.psaps["psap-manhattan"].call_log) == 1
    finally:
        errors = {e.name: e.errors for e in chain.elements.values() if e.errors}
        await chain.close()
    assert not errors, errors
    assert not kam.pids()  # torn down with the chain
    trace.finalize()
    want = get_scenario(scenario).transports
    invites = _ins(trace, "esrp", "INVITE")
    assert len(invites) == 2
    for r in invites:  # Kamailio rewrote the dialled 911 and sent it over hop 2's transport
        assert r.peer == "vsp" and r.hop == "hop2" and r.transport == want["hop2"]
        assert r.first_line.startswith("INVITE urn:service:sos ")
        assert b"Resource-Priority: esnet.1" in r.data
    for call in trace.calls():
        b = trace.breakdown(call)
        assert b is not None and b["vsp"] > 0  # the transit through Kamailio, one segment
        assert "hop1" not in b and "hop2" not in b
        m = trace.measure(call)
        assert m.ok and m.srd is not None
        assert sum(b.values()) == pytest.approx(m.srd, abs=0.01)


@needs_esrp
@pytest.mark.parametrize("scenario", ["plain", "tls-all"])
async def test_kamailio_as_esrp_routes_by_lost(scenario: str) -> None:
    """Kamailio's lost module asks the plan's LoST server (https with mutual TLS under
    tls-all) with the call's PIDF-LO, and the call reaches Manhattan's PSAP as ng911's
    ESRP would send it: R-URI kept, the PSAP in a pushed Route, i3 identifiers added."""
    topo = as_kamailio(NYC, "esrp")
    trace = Trace(topo.roles)
    chain = await open_chain(scenario, topology=topo, observers=[trace])
    try:
        assert "esrp" not in chain.elements
        assert await _calls(chain, ("Manhattan",)) == ["psap-manhattan"]
    finally:
        log = chain.peers.procs[0].log()
        await chain.close()
    assert "default route" not in log, log  # LoST answered; no fallback
    trace.finalize()
    (inv,) = _ins(trace, "psap-manhattan", "INVITE")
    want = get_scenario(scenario).transports
    assert inv.peer == "esrp" and inv.hop == "hop3" and inv.transport == want["hop3"]
    text = inv.data.decode()
    assert text.startswith("INVITE urn:service:sos ")
    route = "sips:psap-manhattan@manhattan.psap.nyc.example;lr"
    if want["hop3"] != "tls":
        route = f"sip:psap-manhattan@manhattan.psap.nyc.example;transport={want['hop3']};lr"
    assert f"Route: <{route}>" in text
    assert "purpose=emergency-CallId" in text and "Resource-Priority: esnet.1" in text
    (call,) = trace.calls()
    b = trace.breakdown(call)
    assert b is not None and b["esrp"] > 0 and "hop2" not in b and "hop3" not in b


@needs_vsp
async def test_run_labels_implementations(tmp_path: Path) -> None:
    """`--vsp both`: plain and plain+kamailio-vsp in the same run, each labelled."""
    cfg = RunConfig(
        scenarios=["plain"],
        calls=3,
        rate=20,
        out=tmp_path / "run",
        captures=False,
        implementations={"vsp": "both"},
    )
    result = await run_testbed(cfg)
    scenarios = json.loads((result.run_dir / "results.json").read_text())["scenarios"]
    assert list(scenarios) == ["plain", "plain+kamailio-vsp"]
    assert all(s["failed"] == 0 for s in scenarios.values())
    assert scenarios["plain"]["implementations"]["vsp"].startswith("ng911 ")
    assert scenarios["plain+kamailio-vsp"]["implementations"]["vsp"].startswith("kamailio 5.")
    assert scenarios["plain+kamailio-vsp"]["implementations"]["esrp"].startswith("ng911 ")
    assert scenarios["plain+kamailio-vsp"]["cpu_us_per_call"]["vsp"] > 0  # Kamailio's, read
    line = implementations_line(scenarios)
    assert line is not None and "as vsp in plain+kamailio-vsp" in line
    assert "as vsp in plain+kamailio-vsp" in render_html(result.results)


# -------------------------------------------------------------- rules (no Kamailio needed)


def _topo_with(host: str, impl: str) -> dict[str, object]:
    import tomllib
    from importlib import resources

    data = tomllib.loads((resources.files("ng911") / "data" / "topology-nyc.toml").read_text())
    data["hosts"][host]["implementation"] = impl
    return data


def test_topology_implementation_rules() -> None:
    topo = parse_topology(_topo_with("vsp", "kamailio"))
    assert topo.host("vsp").implementation == "kamailio"
    assert topo.host("esrp").implementation == "ng911"
    with pytest.raises(TopologyError, match=r"psap-bronx.*vsp or esrp role only"):
        parse_topology(_topo_with("psap-bronx", "kamailio"))
    with pytest.raises(TopologyError, match="implementation 'asterisk' is not one of"):
        parse_topology(_topo_with("esrp", "asterisk"))


def test_scenario_variants() -> None:
    plain, tls = get_scenario("plain"), get_scenario("tls-all")
    assert with_implementations([plain, tls], {"vsp": "ng911"}) == [plain, tls]
    both = with_implementations([plain, tls], {"vsp": "both"})
    assert [s.name for s in both] == [
        "plain",
        "plain+kamailio-vsp",
        "tls-all",
        "tls-all+kamailio-vsp",
    ]
    assert both[1].hops == plain.hops
    (k,) = with_implementations([plain], {"vsp": "kamailio", "esrp": "kamailio"})
    assert k.name == "plain+kamailio-vsp+kamailio-esrp"
    topo = NYC.with_scenario(k)
    assert {h.role for h in topo.hosts if h.implementation == "kamailio"} == {"vsp", "esrp"}
    with pytest.raises(TestbedError, match="--vsp 'opensips'"):
        with_implementations([plain], {"vsp": "opensips"})


def test_kamailio_refused_with_processes() -> None:
    with pytest.raises(TestbedError, match="in-process chain only"):
        check_runnable([as_kamailio(NYC, "vsp")], processes=True)
    check_runnable([NYC], processes=True)  # nothing to refuse without Kamailio


def test_implementations_line_without_the_field() -> None:
    assert implementations_line({"plain": {"calls": 1}}) is None
    line = implementations_line({"plain": {"implementations": {"vsp": "ng911 1.0"}}})
    assert line == "Implementations: ng911 1.0 for every element"


@pytest.mark.skipif(KAMAILIO is None or ESRP_REASON is not None, reason=ESRP_REASON or "")
def test_configs_pass_kamailio_check(tmp_path: Path) -> None:
    """Both writers' output is accepted by `kamailio -c` on every transport mix."""
    import subprocess

    tls = tmp_path / "tls.cfg"
    tls.write_text("")
    for transports in (("udp",), ("udp", "tcp", "tls")):
        listen = listen_lines("127.0.0.1", transports, SIP_PORTS, alias="x.example")
        cfgs = [
            vsp_cfg(listen=listen, esrp="sip:127.0.0.3:5060", hosts={"e.example": "sip:1.2.3.4"}),
            esrp_cfg(
                listen=listen,
                fqdn="esrp.example",
                lost_url="https://127.0.0.4:8443/lost",
                psaps={"p.example": "sip:127.0.0.5:5061;transport=tls"},
                default_route="sip:d@p.example",
                psap_transport="tls",
                lost_tls=LostTls(ca=tls, cert=tls, key=tls),
            ),
        ]
        for i, text in enumerate(cfgs):
            path = tmp_path / f"k{i}.cfg"
            path.write_text(text)
            check = subprocess.run(
                [str(KAMAILIO), "-c", "-f", str(path)], capture_output=True, text=True, timeout=20
            )
            assert check.returncode == 0, check.stderr[-2000:]
