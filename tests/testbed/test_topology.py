"""The topology TOML: the packaged NYC default, scenario overrides, and clear errors."""

import dataclasses
import tomllib

import pytest

from ng911.testbed.errors import TopologyError
from ng911.testbed.scenarios import get_scenario
from ng911.testbed.topology import load_topology, parse_topology, validate

MINIMAL = """
[transports]
hop1 = "udp"
[hosts.c]
role = "caller"
domain = "c.example"
[hosts.v]
role = "vsp"
domain = "v.example"
[hosts.e]
role = "esrp"
domain = "e.example"
[hosts.l]
role = "lost"
domain = "l.example"
[hosts.p]
role = "psap"
domain = "p.example"
borough = "Manhattan"
[hosts.t]
role = "calltaker"
domain = "t.example"
psap = "p"
"""


def _parse(text: str):
    return parse_topology(tomllib.loads(text), "test.toml")


def test_default_nyc_topology():
    topo = load_topology()
    assert topo.name == "nyc"
    assert topo.transports == ("udp", "udp", "udp", "udp")
    psaps = topo.by_role("psap")
    assert sorted(p.borough for p in psaps if p.borough) == [
        "Bronx",
        "Brooklyn",
        "Manhattan",
        "Queens",
        "Staten Island",
    ]
    # the default route's PSAP serves no borough; every borough PSAP has an alternate
    assert [p.name for p in psaps if p.default_route] == ["psap-default"]
    assert all(p.alternates for p in psaps if p.borough)
    assert topo.host("psap-manhattan").alternates == ("psap-bronx",)
    for p in psaps:
        assert len(topo.takers_of(p.name)) == 1
    assert topo.one("esrp").domain == "esrp.esinet.nyc.example"
    assert len(topo.locations) == 5
    assert topo.boundaries_path().name == "nyc-boroughs.geojson"
    assert topo.roles["taker-bronx"] == "calltaker"
    assert topo.hop_between("esrp", "psap-queens") == "hop3"
    assert topo.psap_for_borough("staten island").name == "psap-staten-island"


def test_every_location_routes_to_the_psap_it_names():
    shapely = pytest.importorskip("shapely.geometry")
    import json

    topo = load_topology()
    features = json.loads(topo.boundaries_path().read_text())["features"]
    for loc in topo.locations:
        hits = [
            f["properties"]["boro_name"]
            for f in features
            if shapely.shape(f["geometry"]).contains(shapely.Point(loc.lon, loc.lat))
        ]
        assert hits == [loc.borough], loc


def test_scenario_overrides_transports_only():
    topo = load_topology(scenario=get_scenario("tls-all"))
    assert topo.transports == ("tls", "tls", "tls", "tls")
    assert topo.lost == "https" and topo.lost_mutual
    assert topo.hosts == load_topology().hosts


def test_minimal_topology_and_defaults(tmp_path):
    p = tmp_path / "t.toml"
    p.write_text(MINIMAL)
    topo = load_topology(p)
    assert topo.source == str(p)
    assert topo.host("v").address == "auto"
    assert topo.host("v").listen == ("udp", "tcp", "tls")
    assert topo.host("l").listen == ("http", "https")
    assert topo.transports == ("udp", "udp", "udp", "udp")


@pytest.mark.parametrize(
    "edit,msg",
    [
        (
            lambda t: t.replace('[hosts.t]\nrole = "calltaker"', '[hosts.t]\nrole = "dispatcher"'),
            "role 'dispatcher'",
        ),
        (lambda t: t.replace('hop1 = "udp"', 'hop1 = "sctp"'), r"\[transports\] hop1.*'sctp'"),
        (lambda t: t.replace('psap = "p"', 'psap = "nowhere"'), "psap 'nowhere' is not a psap"),
        (
            lambda t: t.replace('borough = "Manhattan"', 'borugh = "Manhattan"'),
            r"\[hosts.p\]: unknown key\(s\) borugh",
        ),
        (
            lambda t: t.replace('[hosts.e]\nrole = "esrp"\ndomain = "e.example"\n', ""),
            "missing host with role 'esrp'",
        ),
        (lambda t: t.replace('domain = "t.example"', 'domain = "p.example"'), "share domain"),
        (lambda t: t + '[hosts.v2]\nrole = "vsp"\ndomain = "v2.example"\n', "exactly one"),
        (
            lambda t: t.replace(
                '[hosts.v]\nrole = "vsp"', '[hosts.v]\nlisten = ["tcp"]\nrole = "vsp"'
            ),
            "hop1 uses udp but host 'v' does not listen",
        ),
        (lambda t: t + '[[locations]]\nname = "x"\nlat = 95.0\nlon = 0.0\n', "lat must be"),
        (
            lambda t: t + '[[locations]]\nname = "x"\nlat = 1.0\nlon = 2.0\nborough = "Mars"\n',
            "no PSAP serves",
        ),
        (lambda t: t + "[extra]\nx = 1\n", r"unknown key\(s\) extra"),
        (
            lambda t: t.replace('"c.example"', '"c.example"\naddress = "127.0.0.9"').replace(
                '"v.example"', '"v.example"\naddress = "127.0.0.9"'
            ),
            "share address 127.0.0.9",
        ),
        (
            lambda t: t.replace('domain = "c.example"', 'domain = "c.example"\ncert = "c.pem"'),
            "both cert and key",
        ),
    ],
)
def test_bad_topologies_say_what_is_wrong(edit, msg):
    with pytest.raises(TopologyError, match=msg):
        _parse(edit(MINIMAL))


def test_psap_without_taker():
    text = MINIMAL + '[hosts.p2]\nrole = "psap"\ndomain = "p2.example"\n'
    with pytest.raises(TopologyError, match="PSAP has no call taker"):
        _parse(text)


def test_unreadable_and_invalid_files(tmp_path):
    with pytest.raises(TopologyError, match="cannot read topology"):
        load_topology(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[hosts\nx=")
    with pytest.raises(TopologyError, match="not valid TOML"):
        load_topology(bad)
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(TopologyError, match="not valid TOML"):
        load_topology(binary)


def test_scenario_needing_a_listener_the_topology_lacks(tmp_path):
    p = tmp_path / "t.toml"
    p.write_text(
        MINIMAL.replace('[hosts.v]\nrole = "vsp"', '[hosts.v]\nlisten = ["udp"]\nrole = "vsp"')
    )
    with pytest.raises(TopologyError, match="hop1 uses tls"):
        load_topology(p, scenario=get_scenario("tls-e2e"))


def test_alternates_and_default_route_are_checked():
    base = load_topology()
    with pytest.raises(TopologyError, match="alternate 'psap-nowhere'"):
        validate(
            dataclasses.replace(
                base,
                hosts=tuple(
                    dataclasses.replace(h, alternates=("psap-nowhere",))
                    if h.name == "psap-bronx"
                    else h
                    for h in base.hosts
                ),
            )
        )
    two = tuple(
        dataclasses.replace(h, default_route=True) if h.name == "psap-bronx" else h
        for h in base.hosts
    )
    with pytest.raises(TopologyError, match="2 PSAPs marked default_route"):
        validate(dataclasses.replace(base, hosts=two))


def test_with_takers_replaces_every_psaps_call_takers():
    topo = load_topology().with_takers(2)
    for p in topo.by_role("psap"):
        assert [t.name for t in topo.takers_of(p.name)] == [
            f"taker-{p.name.removeprefix('psap-')}-{i}" for i in (1, 2)
        ]
    assert not load_topology().with_takers(0).by_role("calltaker")
