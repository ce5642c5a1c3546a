"""The scenarios table of DESIGN.md, as data."""

import pytest

from ng911.observe.hops import HOPS, hop_of_roles
from ng911.testbed.errors import ScenarioError
from ng911.testbed.scenarios import SCENARIOS, Scenario, get_scenario, select


def test_the_five_scenarios_of_the_design():
    table = {
        "plain": ("udp", "udp", "udp", "udp", "http"),
        "tcp": ("tcp", "tcp", "tcp", "tcp", "http"),
        "tls-e2e": ("tls", "tls", "tls", "udp", "http"),
        "tls-vsp-psap": ("udp", "tls", "tls", "udp", "http"),
        "tls-all": ("tls", "tls", "tls", "tls", "https"),
    }
    assert list(SCENARIOS) == list(table)
    for name, row in table.items():
        s = get_scenario(name)
        assert (*s.hops, s.lost) == row
    assert get_scenario("tls-all").lost_mutual
    assert not get_scenario("plain").lost_mutual


def test_encrypted_hops_are_exactly_the_tls_ones():
    s = get_scenario("tls-vsp-psap")
    assert [s.encrypted(h) for h in HOPS] == [False, True, True, False]
    assert s.transport("hop2") == "tls"
    assert s.transports == {"hop1": "udp", "hop2": "tls", "hop3": "tls", "hop4": "udp"}
    assert s.summary() == "udp,tls,tls,udp / http"
    assert get_scenario("tls-all").summary().endswith("https (mutual)")


def test_unknown_scenario_lists_the_known_ones():
    with pytest.raises(ScenarioError, match=r"unknown scenario 'tls-everything'.*plain"):
        get_scenario("tls-everything")


def test_unknown_hop():
    with pytest.raises(ScenarioError, match="unknown hop"):
        get_scenario("plain").transport("hop5")


@pytest.mark.parametrize(
    "kw,msg",
    [
        ({"hops": ("udp", "sctp", "udp", "udp")}, "transport 'sctp'"),
        ({"hops": ("udp",) * 4, "lost": "ftp"}, "LoST transport 'ftp'"),
        ({"hops": ("udp",) * 4, "lost": "http", "lost_mutual": True}, "mutual TLS"),
    ],
)
def test_bad_scenarios_are_refused(kw, msg):
    with pytest.raises(ScenarioError, match=msg):
        Scenario("x", **kw)


def test_select_keeps_table_order_and_drops_duplicates():
    assert [s.name for s in select(["tls-all", "plain", "plain"])] == ["plain", "tls-all"]
    assert len(select(None)) == len(select([])) == 5
    with pytest.raises(ScenarioError):
        select(["nope"])


def test_hop_of_roles_either_order():
    assert hop_of_roles("vsp", "caller") == "hop1"
    assert hop_of_roles("esrp", "psap") == "hop3"
    assert hop_of_roles("caller", "psap") is None
