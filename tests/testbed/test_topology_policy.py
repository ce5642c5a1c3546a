"""PRF rules from the topology TOML: each PSAP host's `[[rules]]` become its queue's rules in
the ESRP's config (owner its domain), the ESRP's own `[[rules]]` every queue's and its
`[[origination]]` the rules before LoST; a real chain routes by them, the exported bundle
carries them, and a bad rule is one line naming the host and the rule."""

import asyncio
import subprocess
import sys
import tomllib
from datetime import datetime
from importlib import resources

import pytest

from ng911.elements.config import EsrpConfig, PolicyRule, QueuePolicy, StateConfig, load_toml
from ng911.node.bundle import read_bundle
from ng911.testbed.errors import TopologyError
from ng911.testbed.launcher import open_chain
from ng911.testbed.topology import load_topology, parse_topology, psap_uri

NYC = (resources.files("ng911") / "data" / "topology-nyc.toml").read_text()

RULES = """
[[hosts.esrp.origination]]
name = "poison-to-default"
when = { service = "urn:service:sos.poison" }
action = "default"
cause = "i3: no poison centre on this ESInet"

[[hosts.esrp.rules]]
name = "night-to-queens"
when = { time = "22:00-06:00" }
action = "route"
recipient = "psap-queens"

[[hosts.psap-manhattan.rules]]
name = "police-to-brooklyn"
when = { service = "urn:service:sos.police" }
action = "route"
recipient = "psap-brooklyn"
cause = "i3: police dispatch"
"""
ESRP_TABLE = '[hosts.esrp]\nrole = "esrp"\n'
NEW_YORK = 'policy_timezone = "America/New_York"\n'


def nyc_with(rules: str, tmp_path, esrp: str = ""):
    """The packaged NYC topology with `rules` added, `esrp` lines in the ESRP's table."""
    assert ESRP_TABLE in NYC
    path = tmp_path / "topo.toml"
    path.write_text(NYC.replace(ESRP_TABLE, ESRP_TABLE + esrp) + rules)
    return path


def test_rules_become_the_esrps_queue_policies(tmp_path):
    topo = load_topology(nyc_with(RULES, tmp_path, NEW_YORK))
    man, brooklyn, queens = (
        topo.host(h) for h in ("psap-manhattan", "psap-brooklyn", "psap-queens")
    )
    esrp = topo.one("esrp")
    assert esrp.policy_timezone == "America/New_York"
    police = PolicyRule(
        "police-to-brooklyn",
        action="route",
        recipient=psap_uri(brooklyn),
        cause="i3: police dispatch",
        when={"service": "urn:service:sos.police"},
    )
    assert topo.policy() == (
        QueuePolicy(psap_uri(man), owner=man.domain, rules=(police,)),
        QueuePolicy(
            "*",
            owner=esrp.domain,
            rules=(
                PolicyRule(
                    "night-to-queens",
                    action="route",
                    recipient=psap_uri(queens),
                    when={"time": "22:00-06:00"},
                ),
            ),
        ),
        QueuePolicy(
            "origination",
            owner=esrp.domain,
            rules=(
                PolicyRule(
                    "poison-to-default",
                    action="default",
                    cause="i3: no poison centre on this ESInet",
                    when={"service": "urn:service:sos.poison"},
                ),
            ),
        ),
    )
    assert load_topology().policy() == ()  # the packaged topology has none


def test_export_carries_the_rules(tmp_path):
    path = nyc_with(RULES, tmp_path, NEW_YORK)
    out = tmp_path / "export"
    proc = subprocess.run(
        [sys.executable, "-m", "ng911", "testbed", "export", "--topology", str(path), str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    host, role, bundle = read_bundle(out / "esrp")
    assert (host, role) == ("esrp", "esrp")
    cfg = load_toml(bundle, "esrp", EsrpConfig)
    assert cfg.policy == load_topology(path).policy()
    assert cfg.policy_timezone == "America/New_York"
    table = tomllib.loads(bundle.read_text())["esrp"]
    assert table["policy"][0]["rules"][0]["name"] == "police-to-brooklyn"


BAD = [
    (
        '[[hosts.psap-manhattan.rules]]\nname = "r1"\naction = "route"\nrecipient = "psap-mars"\n',
        r"\[hosts.psap-manhattan\] rule 'r1': recipient 'psap-mars' is neither a psap host",
    ),
    (
        '[[hosts.psap-manhattan.rules]]\nname = "r1"\nwhen = { time = "25:00-01:00" }\n',
        r"\[hosts.psap-manhattan\]: policy for queue .*psap-manhattan.*rule 'r1': time window",
    ),
    (
        '[[hosts.psap-manhattan.rules]]\nname = "r1"\naction = "jump"\n',
        r"\[hosts.psap-manhattan\]: .*rule 'r1': action 'jump'",
    ),
    (
        '[[hosts.psap-manhattan.rules]]\nname = "r1"\npriority = 3\n',
        r"\[hosts.psap-manhattan\] rules #1: unknown key\(s\) priority",
    ),
    (
        '[[hosts.psap-manhattan.rules]]\naction = "default"\n',
        r"\[hosts.psap-manhattan\] rules #1: missing 'name'",
    ),
    (
        '[[hosts.psap-manhattan.rules]]\nname = "r1"\ncause = 486\n',
        r"\[hosts.psap-manhattan\] rule 'r1': cause must be a string",
    ),
    (
        '[[hosts.psap-manhattan.rules]]\nname = "r1"\nwhen = "always"\n',
        r"\[hosts.psap-manhattan\] rule 'r1' when: expected a table",
    ),
    (
        '[[hosts.taker-bronx.rules]]\nname = "r1"\n',
        r"\[hosts.taker-bronx\]: rules are for PSAP hosts",
    ),
    (
        '[[hosts.psap-bronx.origination]]\nname = "r1"\n',
        r"\[hosts.psap-bronx\]: origination/policy_timezone are for the ESRP host",
    ),
    (
        '[[hosts.esrp.origination]]\nname = "r1"\nwhen = { queue_state = "Full" }\n',
        r"\[hosts.esrp\]: policy for queue 'origination', rule 'r1': condition\(s\) queue_state",
    ),
    (
        '[[hosts.psap-staten-island.rules]]\nname = "r1"\naction = "overflow"\n'
        'recipient = "psap-staten-island"\n',
        r"\[hosts.psap-staten-island\]: .*rule 'r1': recipient .* own queue \(a loop\)",
    ),
]


@pytest.mark.parametrize(("rules", "match"), BAD)
def test_bad_rules_name_the_host_and_the_rule(tmp_path, rules, match):
    with pytest.raises(TopologyError, match=match) as err:
        load_topology(nyc_with(rules, tmp_path))
    assert "\n" not in str(err.value)


def test_rules_must_be_an_array_of_tables():
    data = tomllib.loads(NYC)
    data["hosts"]["psap-bronx"]["rules"] = {"name": "r1"}
    with pytest.raises(TopologyError, match=r"\[hosts.psap-bronx\]: rules must be an array"):
        parse_topology(data, "t.toml")


# ---------------------------------------------------------------- in a real chain


async def test_a_real_chain_routes_as_the_topologys_rules_say(tmp_path):
    """Police calls from Manhattan go to Brooklyn (the PSAP's queue rule), any other call at
    night to Queens (the ESRP's rule for every queue), poison-control calls to the default
    route with no LoST query (the ESRP's origination rule)."""
    topo = load_topology(nyc_with(RULES, tmp_path))
    manhattan = topo.point("Manhattan")
    settings = {"esrp": {"state": StateConfig(subscribe=False)}}
    chain = await open_chain(topology=topo, hangup_after=0.01, settings=settings)

    async def call(dial="urn:service:sos"):
        rec = await asyncio.wait_for(chain.place_call(*manhattan, dial=dial), 10)
        assert rec.status == 200
        return chain.psap_of(rec), chain.esrp.log.find("route", call_id=rec.call_id)[0]

    try:
        chain.esrp.clock = lambda: datetime(2024, 6, 3, 12, 0)  # noon: not the night rule
        psap, route = await call()
        assert psap == "psap-manhattan" and route["rule"] == "normal"

        psap, route = await call("urn:service:sos.police")
        assert psap == "psap-brooklyn"
        assert route["rule"] == "police-to-brooklyn" and route["cause"] == "i3: police dispatch"
        assert route["policy_owner"] == "manhattan.psap.nyc.example"
        assert route["policy_type"] == "NormalNextHopRoutePolicy"

        psap, route = await call("urn:service:sos.poison")
        assert psap == "psap-default" and route["rule"] == "poison-to-default"
        assert route["policy_type"] == "OriginationRoutePolicy"
        assert route["outcome"] == "NotAsked" and route["queue"] == "origination"
        assert route["policy_owner"] == topo.one("esrp").domain

        chain.esrp.clock = lambda: datetime(2024, 6, 3, 23, 0)
        psap, route = await call()
        assert psap == "psap-queens" and route["rule"] == "night-to-queens"
        # the PSAP's own rule comes before the ESRP's "*": police still go to Brooklyn
        psap, route = await call("urn:service:sos.police")
        assert psap == "psap-brooklyn"
        assert chain.esrp.routed["origination"] == 1
    finally:
        errors = {e.name: e.errors for e in chain.elements.values() if e.errors}
        await chain.close()
    assert not errors, errors
