"""The ESRP's Policy Routing Function, sans I/O: rules parsed from TOML, evaluated on a state
board, a clock and the call's facts; hostile rule sets refused with the rule named."""

import dataclasses
from datetime import datetime

import pytest

from ng911.elements.config import ConfigError, EsrpConfig, load_toml, prf_of, toml_table
from ng911.elements.i3state import QueueState, ServiceState, StateBoard
from ng911.elements.prf import (
    ORIGINATION_POLICY_TYPE,
    CallFacts,
    evaluate,
    originate,
    parse_window,
)
from ng911.elements.routing import (
    ROUTE_POLICY_TYPE,
    LostFound,
    LostUnreachable,
    plan_routes,
)

MAN = "sip:psap-manhattan@manhattan.psap.example"
BRONX = "sip:psap-bronx@bronx.psap.example"
QUEENS = "sip:psap-queens@queens.psap.example"
DEFAULT = "sip:psap-default@default.psap.example"
NIGHT = "sip:night@county.psap.example"
POLICE = "sip:police@pd.example"

BASE = f"""
[esrp]
fqdn = "esrp.esinet.example"
default_route = "{DEFAULT}"
alternates = [{{ psap = "{MAN}", alternates = ["{BRONX}"] }},
              {{ psap = "{BRONX}", alternates = ["{MAN}"] }}]
"""

RULES = f"""
[[esrp.policy]]
queue = "{MAN}"
owner = "manhattan.psap.example"

[[esrp.policy.rules]]
name = "police-to-pd"
when = {{ service = "urn:service:sos.police", source = "vsp.example" }}
action = "route"
recipient = "{POLICE}"

[[esrp.policy.rules]]
name = "night"
when = {{ time = "22:00-06:00", weekdays = ["SA", "SU"] }}
action = "route"
recipient = "{NIGHT}"
cause = "i3: night service"

[[esrp.policy.rules]]
name = "full-overflow"
when = {{ queue_state = "Full" }}
action = "overflow"

[[esrp.policy]]
queue = "*"

[[esrp.policy.rules]]
name = "unstaffed-to-default"
when = {{ service_state = ["Unstaffed", "Down"] }}
action = "default"
"""


def cfg(tmp_path, text=BASE + RULES) -> EsrpConfig:
    path = tmp_path / "esrp.toml"
    path.write_text(text)
    return load_toml(path, "esrp", EsrpConfig)


SATURDAY_23H = datetime(2024, 6, 1, 23, 30)  # a Saturday
MONDAY_NOON = datetime(2024, 6, 3, 12, 0)


def decide(
    config,
    *,
    service="urn:service:sos",
    sources=("vsp.example",),
    board=None,
    now=MONDAY_NOON,
    outcome=None,
):
    facts = CallFacts(outcome or LostFound((MAN,)), service, frozenset(sources))
    return evaluate(prf_of(config), facts, board or StateBoard(), now, mono=0.0)


def uris(decision):
    return [c.uri for c in decision.plan]


def full(uri=MAN, state="Active", length=10, most=10):
    b = StateBoard()
    b.update_queue(uri, QueueState(uri, length, most, state), now=0.0)
    return b


def test_no_rules_is_the_builtin_plan(tmp_path):
    c = cfg(tmp_path, BASE)
    d = decide(c)
    assert d.plan == plan_routes(LostFound((MAN,)), prf_of(c).routing)
    assert uris(d) == [MAN, BRONX, DEFAULT]
    assert [x.rule for x in d.plan] == ["normal", "alternate", "default-route"]
    assert {x.owner for x in d.plan} == {"esrp.esinet.example"}
    assert {x.policy_type for x in d.plan} == {ROUTE_POLICY_TYPE}
    assert d.rule == "normal" and d.queue == MAN and not d.deferred


def test_first_matching_rule_wins_and_is_named(tmp_path):
    c = cfg(tmp_path)
    # both police-to-pd and night hold on a Saturday night: the first one wins
    d = decide(c, service="urn:service:sos.police", now=SATURDAY_23H)
    assert d.rule == "police-to-pd" and uris(d) == [POLICE, DEFAULT]
    assert d.plan[0].owner == "manhattan.psap.example" and d.plan[0].cause == "302"
    assert d.plan[1].rule == "default-route"  # every plan ends at the default route
    d = decide(c, now=SATURDAY_23H)
    assert d.rule == "night" and uris(d)[0] == NIGHT and d.plan[0].cause == "i3: night service"


def test_service_and_source_conditions(tmp_path):
    c = cfg(tmp_path)
    assert decide(c, service="urn:service:sos").rule == "normal"  # plain sos: not police
    assert decide(c, service="urn:service:sos.police", sources=("other.example",)).rule == "normal"
    # a sub-domain of the source matches; so does a name among several
    sub = decide(c, service="urn:service:sos.police", sources=("10.0.0.9", "edge.vsp.example"))
    assert sub.rule == "police-to-pd"
    # "notvsp.example" is not under vsp.example
    assert decide(c, service="urn:service:sos.police", sources=("notvsp.example",)).rule == "normal"


def test_service_wildcard(tmp_path):
    text = (
        BASE
        + f"""
[[esrp.policy]]
queue = "{MAN}"
[[esrp.policy.rules]]
name = "any-sub-service"
when = {{ service = "urn:service:sos.*" }}
action = "route"
recipient = "{POLICE}"
"""
    )
    c = cfg(tmp_path, text)
    assert decide(c, service="urn:service:sos.fire").rule == "any-sub-service"
    assert decide(c, service="urn:service:sos").rule == "normal"


def test_time_window_and_weekdays(tmp_path):
    c = cfg(tmp_path)
    assert decide(c, now=datetime(2024, 6, 2, 5, 59)).rule == "night"  # Sunday, before 06:00
    assert decide(c, now=datetime(2024, 6, 2, 6, 0)).rule == "normal"  # end excluded
    assert decide(c, now=datetime(2024, 6, 1, 21, 59)).rule == "normal"
    assert decide(c, now=datetime(2024, 6, 3, 23, 0)).rule == "normal"  # a Monday night
    w = parse_window("08:00-17:30")
    assert w.contains(8 * 60) and not w.contains(17 * 60 + 30) and not w.contains(7 * 60 + 59)


def test_queue_full_overflows_to_the_alternates(tmp_path):
    c = cfg(tmp_path)
    d = decide(c, board=full())  # 10/10: full by its lengths
    assert d.rule == "full-overflow"
    assert uris(d) == [BRONX, DEFAULT]  # the queue itself is not tried
    assert d.plan[0].cause == "486" and d.plan[0].rule == "full-overflow"
    assert decide(c, board=full(length=3)).rule == "normal"  # room left
    assert decide(c, board=full(state="Full", length=0)).rule == "full-overflow"


def test_wildcard_rules_after_the_queue_rules(tmp_path):
    c = cfg(tmp_path)
    b = StateBoard()
    b.update_service(MAN, ServiceState("PSAP", "manhattan.psap.example", "Unstaffed"), now=0.0)
    d = decide(c, board=b)
    assert d.rule == "unstaffed-to-default" and d.owner == "esrp.esinet.example"
    assert uris(d) == [DEFAULT]
    # the wildcard applies to another queue too (its own rules: none)
    b.update_service(QUEENS, ServiceState("PSAP", "q", "Down"), now=0.0)
    assert decide(c, board=b, outcome=LostFound((QUEENS,))).rule == "unstaffed-to-default"


def test_builtin_skips_a_full_or_down_psap_without_trying_it_first(tmp_path):
    c = cfg(tmp_path, BASE)
    d = decide(c, board=full())
    assert uris(d) == [BRONX, DEFAULT, MAN]  # Manhattan last: tried only if all else fails
    assert d.plan[0].rule == "alternate" and d.deferred == [(MAN, "QueueState Active 10/10")]
    b = StateBoard()
    b.update_service(MAN, ServiceState("PSAP", "m", "GoingDown"), now=0.0)
    assert uris(decide(c, board=b))[0] == BRONX
    # states that still take calls: not skipped
    for state in ("Normal", "Overloaded", "Partial", "MajorIncidentInProgress"):
        b.update_service(MAN, ServiceState("PSAP", "m", state), now=0.0)
        assert uris(decide(c, board=b))[0] == MAN, state
    b = StateBoard()
    b.update_queue(MAN, QueueState(MAN, 0, 5, "Standby"), now=0.0)
    assert uris(decide(c, board=b))[0] == MAN


def test_every_candidate_unavailable_tries_them_in_plan_order(tmp_path):
    c = cfg(tmp_path, BASE)
    b = StateBoard()
    for u in (MAN, BRONX, DEFAULT):
        b.update_queue(u, QueueState(u, 1, 1), now=0.0)
    d = decide(c, board=b)
    assert d.all_unavailable and uris(d) == [MAN, BRONX, DEFAULT]


def test_stale_state_is_unknown(tmp_path):
    c = cfg(tmp_path, BASE)
    b = full()
    facts = CallFacts(LostFound((MAN,)), "urn:service:sos")
    late = evaluate(prf_of(c), facts, b, MONDAY_NOON, mono=b.max_age + 1)
    assert late.plan[0].uri == MAN


def test_board_keys_match_the_plan_uri_in_another_scheme(tmp_path):
    """LoST says sip:, a TLS hop makes it sips:; the board keeps the LoST form."""
    c = dataclasses.replace(cfg(tmp_path, BASE), psap_transport="tls")
    d = decide(c, board=full())
    assert d.plan[0].uri == BRONX.replace("sip:", "sips:")
    assert d.plan[-1].uri == MAN.replace("sip:", "sips:")


def test_lost_failure_evaluates_the_default_routes_queue(tmp_path):
    c = cfg(tmp_path)
    d = decide(c, outcome=LostUnreachable("timeout"))
    assert d.queue == DEFAULT and uris(d) == [DEFAULT] and d.rule == "default-route"
    assert "LoST unreachable" in d.plan[0].reason


def test_normal_action_keeps_the_builtin_plan_under_its_name(tmp_path):
    text = (
        BASE
        + """
[[esrp.policy]]
queue = "*"
[[esrp.policy.rules]]
name = "as-lost-says"
when = { service = "urn:service:sos" }
action = "normal"
"""
    )
    d = decide(cfg(tmp_path, text))
    assert uris(d) == [MAN, BRONX, DEFAULT]
    assert [x.rule for x in d.plan] == ["as-lost-says", "alternate", "default-route"]


def test_config_round_trips_through_dicts_and_toml(tmp_path):
    """As the testbed writes a bundle's TOML (`toml_table`) and `ng911 run` reads it."""
    c = cfg(tmp_path)
    again = EsrpConfig.from_dict(c.to_dict())
    assert again == c
    (tmp_path / "bundle.toml").write_text(toml_table("esrp", c.to_dict()))
    assert load_toml(tmp_path / "bundle.toml", "esrp", EsrpConfig) == c
    assert again.policy[0].rules[1].when == {"time": "22:00-06:00", "weekdays": ["SA", "SU"]}


@pytest.mark.parametrize(
    ("rules", "match"),
    [
        ('name = "r1"\nwhen = { colour = "red" }', r"rule 'r1': unknown condition\(s\) colour"),
        ('name = "r1"\nwhen = { time = "25:00-06:00" }', r"rule 'r1': time window '25:00-06:00'"),
        ('name = "r1"\nwhen = { time = "22:00" }', r"rule 'r1': time window '22:00' is not"),
        ('name = "r1"\nwhen = { time = "08:00-08:00" }', r"rule 'r1': .* is empty"),
        ('name = "r1"\nwhen = { time = 2200 }', r"rule 'r1': time: expected"),
        ('name = "r1"\nwhen = { weekdays = ["XX"] }', r"rule 'r1': weekdays: XX"),
        ('name = "r1"\nwhen = { queue_state = "Busy" }', r"rule 'r1': queue_state: 'Busy'"),
        ('name = "r1"\nwhen = { service_state = [] }', r"rule 'r1': service_state: expected"),
        ('name = "r1"\nwhen = { service = "sos" }', r"rule 'r1': service: sos is not"),
        ('name = "r1"\nwhen = { source = [1] }', r"rule 'r1': source: 1 is not"),
        ('name = "r1"\naction = "drop"', r"rule 'r1': action 'drop' is not one of"),
        ('name = "r1"\naction = "route"', r"rule 'r1': route needs a recipient"),
        ('name = "r1"\naction = "default"\nrecipient = "sip:x@y"', r"rule 'r1': a recipient"),
        ('name = "r1"\naction = "route"\nrecipient = "tel:911"', r"rule 'r1': recipient"),
        (
            f'name = "loop"\naction = "overflow"\nrecipient = "sips:{MAN[4:]}"',
            r"rule 'loop': recipient .* own queue \(a loop\)",
        ),
        ('name = " "', r"rule #1 has no name"),
    ],
)
def test_hostile_rules_are_config_errors_naming_the_rule(tmp_path, rules, match):
    text = BASE + f'[[esrp.policy]]\nqueue = "{MAN}"\n[[esrp.policy.rules]]\n{rules}\n'
    with pytest.raises(ConfigError, match=match):
        cfg(tmp_path, text)


def test_hostile_rule_sets(tmp_path):
    two = f'[[esrp.policy]]\nqueue = "{MAN}"\n[[esrp.policy]]\nqueue = "{MAN};transport=tcp"\n'
    with pytest.raises(ConfigError, match="two rule sets"):
        cfg(tmp_path, BASE + two)
    dup = f"""[[esrp.policy]]
queue = "{MAN}"
rules = [{{ name = "a" }}, {{ name = "a" }}]
"""
    with pytest.raises(ConfigError, match="two rules named 'a'"):
        cfg(tmp_path, BASE + dup)
    with pytest.raises(ConfigError, match="queue 'tel:911'"):
        cfg(tmp_path, BASE + '[[esrp.policy]]\nqueue = "tel:911"\n')
    no_alts = f"""[[esrp.policy]]
queue = "{QUEENS}"
rules = [{{ name = "spill", action = "overflow" }}]
"""
    with pytest.raises(ConfigError, match=r"rule 'spill': overflow .* has no alternates"):
        cfg(tmp_path, BASE + no_alts)
    with pytest.raises(ConfigError, match="unknown option"):
        cfg(tmp_path, BASE + f'[[esrp.policy]]\nqueue = "{MAN}"\npriority = 3\n')
    with pytest.raises(ConfigError, match="policy_timezone 'Mars/Olympus'"):
        cfg(tmp_path, BASE + 'policy_timezone = "Mars/Olympus"\n')
    with pytest.raises(ConfigError, match="skip_queue_states"):
        cfg(tmp_path, BASE + 'skip_queue_states = ["Busy"]\n')


def test_dataclass_replace_checks_rules_too(tmp_path):
    c = cfg(tmp_path, BASE)
    bad = cfg(tmp_path).policy[0]
    bad = dataclasses.replace(bad, rules=(dataclasses.replace(bad.rules[0], action="nope"),))
    with pytest.raises(ConfigError, match="rule 'police-to-pd': action 'nope'"):
        dataclasses.replace(c, policy=(bad,))


ORIGINATION = f"""
[[esrp.policy]]
queue = "origination"

[[esrp.policy.rules]]
name = "poison-control"
when = {{ service = "urn:service:sos.poison" }}
action = "route"
recipient = "{POLICE}"
cause = "i3: poison control line"

[[esrp.policy.rules]]
name = "lab-network"
when = {{ source = "lab.example" }}
action = "default"

[[esrp.policy.rules]]
name = "ask-lost"
when = {{ source = "vsp.example" }}
action = "normal"
"""


def originate_of(config, *, service="urn:service:sos", sources=("vsp.example",), board=None):
    p = prf_of(config)
    return originate(p, service, frozenset(sources), board or StateBoard(), MONDAY_NOON, 0.0)


def test_origination_rules_route_before_lost(tmp_path):
    c = cfg(tmp_path, BASE + ORIGINATION)
    d = originate_of(c, service="urn:service:sos.poison")
    assert d is not None and d.rule == "poison-control" and d.queue == "origination"
    assert uris(d) == [POLICE, DEFAULT]
    assert d.plan[0].policy_type == ORIGINATION_POLICY_TYPE
    assert d.plan[0].cause == "i3: poison control line"
    assert d.plan[0].owner == "esrp.esinet.example"  # the ESRP's own queue
    assert d.plan[1].policy_type == ROUTE_POLICY_TYPE  # the default route closing every plan
    lab = originate_of(c, sources=("edge.lab.example",))
    assert lab is not None and lab.rule == "lab-network" and uris(lab) == [DEFAULT]
    # "normal" or no rule matching: LoST is asked, then the NormalNextHop rules
    assert originate_of(c) is None
    assert originate_of(c, sources=("other.example",)) is None
    assert originate_of(cfg(tmp_path, BASE)) is None
    # the origination queue is not a queue LoST can name: its rules never apply after LoST
    assert decide(c, service="urn:service:sos.poison").rule == "normal"


def test_origination_route_still_skips_a_full_psap(tmp_path):
    c = cfg(tmp_path, BASE + ORIGINATION)
    d = originate_of(c, service="urn:service:sos.poison", board=full(POLICE))
    assert d is not None and uris(d) == [DEFAULT, POLICE] and d.deferred


@pytest.mark.parametrize(
    ("rule", "match"),
    [
        ('action = "overflow"', r"rule 'r1': action 'overflow' needs a queue"),
        ('when = { queue_state = "Full" }', r"rule 'r1': condition\(s\) queue_state need a queue"),
        ('when = { service_state = "Down" }', r"condition\(s\) service_state need a queue"),
        ('action = "route"', r"rule 'r1': route needs a recipient"),
    ],
)
def test_hostile_origination_rules(tmp_path, rule, match):
    text = BASE + '[[esrp.policy]]\nqueue = "origination"\n[[esrp.policy.rules]]\nname = "r1"\n'
    with pytest.raises(ConfigError, match=match):
        cfg(tmp_path, text + rule + "\n")
    twice = '[[esrp.policy]]\nqueue = "origination"\n' * 2
    with pytest.raises(ConfigError, match="the origination queue has two rule sets"):
        cfg(tmp_path, BASE + twice)
