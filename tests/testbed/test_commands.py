"""`ng911 testbed ...` from the command line: run, report, scenarios, topology, errors."""

import json

from ng911.cli import main


def test_scenarios_lists_all_five(capsys):
    assert main(["testbed", "scenarios"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out] == [
        "plain",
        "tcp",
        "tls-e2e",
        "tls-vsp-psap",
        "tls-all",
    ]
    assert "udp,tls,tls,udp / http" in out[3]


def test_topology_shows_hosts_and_applies_a_scenario(capsys):
    assert main(["testbed", "topology", "--scenario", "tls-all"]) == 0
    out = capsys.readouterr().out
    assert "transports tls,tls,tls,tls, LoST https mutual" in out
    assert "psap-staten-island" in out and "Staten Island" in out


def test_bad_scenario_and_topology_exit_2_with_a_reason(capsys, tmp_path):
    assert main(["testbed", "topology", "--scenario", "nope"]) == 2
    assert "unknown scenario 'nope'" in capsys.readouterr().err
    bad = tmp_path / "t.toml"
    bad.write_text("[hosts.x]\nrole = 'caller'\n")
    assert main(["testbed", "run", "--topology", str(bad), "--out", str(tmp_path / "r")]) == 2
    assert "missing 'domain'" in capsys.readouterr().err
    assert main(["testbed", "run", "--calls", "0"]) == 2


def test_run_one_scenario_sequentially_then_redraw_the_report(capsys, tmp_path):
    out = tmp_path / "run"
    argv = ["testbed", "run", "--scenario", "tls-all", "--no-baseline", "--sequential"]
    argv += ["--calls", "6", "--rate", "50", "--hangup", "0.01", "--out", str(out)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "tls-all (tls,tls,tls,tls / https (mutual)): 6 calls, 0 failed" in text
    assert f"report: {out / 'report.html'}" in text
    results = json.loads((out / "results.json").read_text())
    assert list(results["scenarios"]) == ["tls-all"]
    assert results["meta"]["interleaved"] is False
    (out / "report.html").unlink()
    assert main(["testbed", "report", str(out / "results.json")]) == 0
    # CDF, 2 bars, a warm and a cold ladder
    assert (out / "report.html").read_text().count("<svg") == 5
    assert main(["testbed", "report", str(tmp_path / "missing.json")]) == 2


def test_testbed_without_action_prints_help(capsys):
    assert main(["testbed"]) == 2
    assert "run" in capsys.readouterr().out
