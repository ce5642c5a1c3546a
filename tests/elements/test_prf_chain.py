"""The Policy Routing Function in a real chain (caller → VSP → ESRP → psapd → call taker):
a PSAP whose i3 state says no gets no INVITE, configured rules pick the PSAP by time, service
and call source, and every route and failover record names its rule."""

import asyncio
from contextlib import asynccontextmanager
from datetime import datetime

import pytest

from ng911.elements.config import PolicyRule, QueuePolicy, StateConfig
from ng911.elements.i3state import QueueState, ServiceState
from ng911.net.events import MessageEvent
from ng911.testbed.launcher import open_chain
from ng911.testbed.plan import psap_uri
from ng911.testbed.topology import load_topology

TOPO = load_topology()
MANHATTAN = TOPO.point("Manhattan")
ESRP_DOMAIN = TOPO.one("esrp").domain


def uri(host: str) -> str:
    """A PSAP's URI as LoST and the ESRP's config name it (the board's key)."""
    return psap_uri(TOPO.host(host))


@asynccontextmanager
async def chain_of(*args, **kw):
    """A running chain, closed on the way out; no element may have logged an error. The
    ESRP does not subscribe to its PSAPs' states here: the tests set its board themselves
    (test_state_notify.py has the skip driven by a real psapd's NOTIFYs)."""
    settings = kw.pop("settings", {})
    esrp = {"state": StateConfig(subscribe=False), **settings.get("esrp", {})}
    chain = await open_chain(*args, hangup_after=0.01, settings={**settings, "esrp": esrp}, **kw)
    try:
        yield chain
    finally:
        errors = {e.name: e.errors for e in chain.elements.values() if e.errors}
        await chain.close()
    assert not errors, errors


def invites_at(chain, call_id: str, element: str) -> int:
    return sum(
        1
        for e in chain.events
        if isinstance(e, MessageEvent)
        and e.call_id == call_id
        and e.element == element
        and e.direction == "in"
        and e.first_line.startswith("INVITE ")
    )


def full_queue(board, peer):
    board.update_queue(peer, QueueState(peer, 4, 4))


def unstaffed(board, peer):
    board.update_service(peer, ServiceState("PSAP", "manhattan.psap.nyc.example", "Unstaffed"))


def going_down(board, peer):
    board.update_service(peer, ServiceState("PSAP", "manhattan.psap.nyc.example", "GoingDown"))


@pytest.mark.parametrize("set_state", [full_queue, unstaffed, going_down])
async def test_a_psap_whose_state_says_no_gets_no_invite(set_state):
    async with chain_of() as chain:
        esrp = chain.esrp
        set_state(esrp.states, uri("psap-manhattan"))
        rec = await asyncio.wait_for(chain.place_call(*MANHATTAN), 10)
        assert rec.status == 200
        assert chain.psap_of(rec) == "psap-bronx"  # Manhattan's alternate, at once
        assert invites_at(chain, rec.call_id, "psap-manhattan") == 0
        assert not esrp.log.find("failover", call_id=rec.call_id)
        route = esrp.log.find("route", call_id=rec.call_id)[0]
        assert "psap-bronx" in route["recipient"]
        assert route["rule"] == "alternate" and route["matched"] == "normal"
        assert route["queue"] == uri("psap-manhattan")
        assert route["policy_owner"] == ESRP_DOMAIN
        assert route["policy_type"] == "NormalNextHopRoutePolicy"
        assert route["outcome"] == "LostFound"  # the fields the testbed reads are kept
        skipped = esrp.log.find("skip_state", call_id=rec.call_id)[0]
        assert "psap-manhattan" in skipped["skipped"][0] and "psap-bronx" in skipped["first"]

        # the PSAP says it is back: the next call goes to it
        esrp.states.update_queue(uri("psap-manhattan"), QueueState(uri("psap-manhattan"), 0, 4))
        esrp.states.update_service(
            uri("psap-manhattan"), ServiceState("PSAP", "manhattan.psap.nyc.example")
        )
        again = await asyncio.wait_for(chain.place_call(*MANHATTAN), 10)
        assert again.status == 200 and chain.psap_of(again) == "psap-manhattan"
        assert esrp.log.find("route", call_id=again.call_id)[0]["rule"] == "normal"


async def test_every_psap_full_still_gets_the_call():
    """States may be stale: with every candidate full the plan is tried as it is."""
    async with chain_of() as chain:
        esrp = chain.esrp
        for h in ("psap-manhattan", "psap-bronx", "psap-default"):
            full_queue(esrp.states, uri(h))
        rec = await asyncio.wait_for(chain.place_call(*MANHATTAN), 10)
        assert rec.status == 200 and chain.psap_of(rec) == "psap-manhattan"
        assert esrp.log.find("all_routes_unavailable", call_id=rec.call_id)


NIGHT = QueuePolicy(
    "*",
    rules=(
        PolicyRule(
            "night-to-queens",
            action="route",
            recipient=uri("psap-queens"),
            cause="i3: night service",
            when={"time": "22:00-06:00"},
        ),
    ),
)


async def test_time_rule_routes_and_failover_names_its_rule():
    # queens is down: the rule's call fails over to queens' alternate, Brooklyn; the long
    # ping timeout keeps the OPTIONS pings from marking queens down first
    settings = {"policy": (NIGHT,), "failover_timeout": 0.5, "ping_timeout": 30.0}
    async with chain_of(down=("psap-queens",), settings={"esrp": settings}) as chain:
        esrp = chain.esrp
        esrp.clock = lambda: datetime(2024, 6, 3, 23, 15)
        rec = await asyncio.wait_for(chain.place_call(*MANHATTAN), 10)
        assert rec.status == 200 and chain.psap_of(rec) == "psap-brooklyn"
        route = esrp.log.find("route", call_id=rec.call_id)[0]
        assert route["rule"] == "night-to-queens" and "psap-queens" in route["recipient"]
        assert route["cause"] == "i3: night service" and route["policy_owner"] == ESRP_DOMAIN
        failover = esrp.log.find("failover", call_id=rec.call_id)[0]
        assert "psap-queens" in failover["failed"] and "psap-brooklyn" in failover["next"]
        assert failover["rule"] == "alternate"

        esrp.clock = lambda: datetime(2024, 6, 3, 12, 0)  # noon: the rule does not hold
        day = await asyncio.wait_for(chain.place_call(*MANHATTAN), 10)
        assert day.status == 200 and chain.psap_of(day) == "psap-manhattan"
        assert esrp.log.find("route", call_id=day.call_id)[0]["rule"] == "normal"


@pytest.mark.parametrize("scenario", ["plain", "tls-vsp-psap"])
async def test_service_and_call_source_rules(scenario):
    """The call source is the VSP: its host-table name on UDP, its certificate over TLS."""
    policy = QueuePolicy(
        uri("psap-manhattan"),
        owner="manhattan.psap.nyc.example",
        rules=(
            PolicyRule("other-network", action="default", when={"source": "other-vsp.example"}),
            PolicyRule(
                "police-from-our-vsp",
                action="route",
                recipient=uri("psap-queens"),
                when={"source": "vsp.example", "service": "urn:service:sos.police"},
            ),
        ),
    )
    settings = {"esrp": {"policy": (policy,)}, "caller": {"dial": "urn:service:sos.police"}}
    async with chain_of(scenario, settings=settings) as chain:
        rec = await asyncio.wait_for(chain.place_call(*MANHATTAN), 10)
        assert rec.status == 200 and chain.psap_of(rec) == "psap-queens"
        route = chain.esrp.log.find("route", call_id=rec.call_id)[0]
        assert route["rule"] == "police-from-our-vsp"
        assert route["policy_owner"] == "manhattan.psap.nyc.example"
        assert "vsp.example" in route["source"]
        assert route["cause"] == "302"  # RFC 4458 "unconditional", as none was configured
