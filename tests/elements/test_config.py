"""Element configuration: defaults, dict round trip, TOML loading, errors."""

import pytest

from ng911.elements.config import (
    AlternateRoute,
    CallerConfig,
    CallTakerConfig,
    ConfigError,
    EsrpConfig,
    ListenerConfig,
    PsapConfig,
    TlsProfile,
    VspConfig,
    load_toml,
)

ALL = [CallerConfig, VspConfig, EsrpConfig, PsapConfig, CallTakerConfig, ListenerConfig, TlsProfile]


@pytest.mark.parametrize("cls", ALL)
def test_defaults_round_trip(cls):
    cfg = cls()
    assert cls.from_dict(cfg.to_dict()) == cfg


def test_nested_values_round_trip():
    cfg = EsrpConfig(
        listeners=(ListenerConfig("tls", "127.0.0.1", 5061), ListenerConfig("udp")),
        tls=TlsProfile(cert="c.pem", key="k.pem", ca=("ca.pem",), require_client_cert=True),
        alternates=(AlternateRoute("sip:a@x", ("sip:b@x", "sip:c@x")),),
        failover_timeout=1,
    )
    d = cfg.to_dict()
    assert d["failover_timeout"] == 1.0
    assert EsrpConfig.from_dict(d) == cfg


def test_toml(tmp_path):
    path = tmp_path / "topo.toml"
    path.write_text(
        """
[psap.manhattan]
name = "psap-manhattan"
domain = "manhattan.psap.example"
queue_size = 3
listeners = [{transport = "tcp", port = 5070}]

[psap.manhattan.tls]
cert = "psap.pem"
key = "psap.key"
"""
    )
    cfg = load_toml(path, "psap.manhattan", PsapConfig)
    assert cfg.queue_size == 3
    assert cfg.listeners == (ListenerConfig("tcp", "127.0.0.1", 5070),)
    assert cfg.tls.enabled
    with pytest.raises(ConfigError, match="no table"):
        load_toml(path, "psap.queens", PsapConfig)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"queue_sise": 3}, "unknown option"),
        ({"queue_size": "3"}, "expected an integer"),
        ({"queue_size": True}, "expected an integer"),
        ({"listeners": [{"transport": "sctp"}]}, "transport"),
        ({"listeners": {"transport": "udp"}}, "expected a list"),
        ({"tls": "yes"}, "expected a table"),
        ({"offer_timeout": "soon"}, "expected a number"),
        ({"timer_c": 0}, "timer_c must be > 0"),
        ({"stop_drain": -1}, "stop_drain must be >= 0"),
    ],
)
def test_bad_values_are_config_errors(data, match):
    with pytest.raises(ConfigError, match=match):
        PsapConfig.from_dict(data)


def test_unreadable_and_invalid_toml(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_toml(tmp_path / "missing.toml", "x", PsapConfig)
    bad = tmp_path / "bad.toml"
    bad.write_text("[x\n")
    with pytest.raises(ConfigError):
        load_toml(bad, "x", PsapConfig)
