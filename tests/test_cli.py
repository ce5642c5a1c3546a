from ng911.cli import main


def test_help_lists_commands(capsys):
    assert main([]) == 2
    out = capsys.readouterr().out
    assert "demo" in out


def test_demo_runs_the_testbed(tmp_path, capsys):
    # the demo's defaults minus most calls: every scenario, report written, zero failures
    assert main(["demo", "--calls", "6", "--quiet", "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "30 calls in" in out and "0 failed" in out
    assert (tmp_path / "run" / "report.html").is_file()
    # the logger ran in every scenario: its LogEvents counted by type, all verified
    assert "i3 LogEvents:" in out and "all signatures verified" in out
    assert "RouteLogEvent" in out and "logevents.html" in out
