"""Results from the command line: --repeat and its spread, `testbed compare` on two real
runs, and Ctrl-C during a run writing the report of what was measured."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ng911.cli import main
from ng911.testbed.results import validate

SRC = Path(__file__).resolve().parents[2] / "src"
RUN = ["--calls", "6", "--cold-calls", "2", "--rate", "40", "--hangup", "0.01", "--no-captures"]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("cmp")
    a, b = base / "a", base / "b"
    argv = ["testbed", "run", "--scenario", "tls-all", "--quiet", *RUN]
    assert main([*argv, "--repeat", "2", "--out", str(a)]) == 0
    assert main([*argv, "--out", str(b)]) == 0
    return a, b


def test_repeat_runs_the_set_again_and_reports_the_spread(two_runs):
    a, _ = two_runs
    data = json.loads((a / "results.json").read_text())
    assert validate(data) == []
    assert data["meta"]["repeat"] == 2
    for name in ("plain", "tls-all"):
        res = data["scenarios"][name]
        assert res["calls"] == 12 and res["failed"] == 0
        assert sorted({c["repeat"] for c in res["call_records"]}) == [1, 2]
        assert sum(c["cold"] for c in res["call_records"]) == 4
        spread = res["between_runs"]
        assert spread["repeats"] == [1, 2] and spread["calls"] == [4, 4]
        assert spread["p50_range_ms"] == pytest.approx(
            max(spread["srd_p50"]) - min(spread["srd_p50"])
        )
    assert (a / "tls-all" / "repeat-2" / "keys.log").is_file()
    assert "Between runs" in (a / "report.html").read_text()


def test_compare_two_runs_terminal_and_html(two_runs, capsys, tmp_path):
    a, b = two_runs
    out = tmp_path / "cmp.html"
    assert main(["testbed", "compare", str(a), str(b / "results.json"), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "Compared with a (warm calls" in text
    lines = [ln for ln in text.splitlines() if ln.startswith("b ")]
    assert {ln.split()[1] for ln in lines} == {"plain", "tls-all"}
    assert any(ln.split()[2] == "hop2" for ln in lines)
    page = out.read_text()
    assert "<script" not in page and "a vs b" in page and '<div class="scroll">' in page


def test_compare_refuses_what_it_cannot_compare(two_runs, capsys, tmp_path):
    a, _ = two_runs
    assert main(["testbed", "compare", str(a)]) == 2
    junk = tmp_path / "junk.json"
    junk.write_text("[1, 2]")
    assert main(["testbed", "compare", str(a), str(junk)]) == 2
    err = capsys.readouterr().err
    assert "at least two runs" in err and "not an ng911 results file" in err


def test_ctrl_c_writes_the_report_of_what_was_measured(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    argv = [sys.executable, "-m", "ng911", "testbed", "run", "--scenario", "plain"]
    argv += ["--no-baseline", "--calls", "2000", "--rate", "20", "--hangup", "0.01"]
    argv += ["--no-captures", "--out", str(out)]
    proc = subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while not (out / "plain" / "keys.log").exists() and time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            time.sleep(0.2)
        time.sleep(2.0)  # some calls done, most still to come
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, stderr[-2000:]
    assert "interrupted; the report covers the" in stderr
    data = json.loads((out / "results.json").read_text())
    assert data["meta"]["interrupted"] is True
    res = data["scenarios"]["plain"]
    assert 0 < res["calls"] < 2000 and res["failed"] == 0
    assert len(res["call_records"]) == res["calls"]
    assert validate(data) == []
    assert "<b>Interrupted</b>" in (out / "report.html").read_text()
    assert (out / "calls.csv").read_text().count("\n") == res["calls"] + 1
    assert "report:" in stdout
