from ng911.cli import main


def test_help_lists_commands(capsys):
    assert main([]) == 2
    out = capsys.readouterr().out
    assert "demo" in out


def test_demo_runs():
    assert main(["demo"]) == 0
