"""The per-hop table, the between-runs spread, `compare`, and the report's structure (the
narrow-screen CSS, the clipped CDF tail), from synthetic runs with known timings."""

import re

import pytest
from synthcalls import ROLES, Chain, Timing

from ng911.observe.calls import Trace
from ng911.testbed.compare import format_compare, render_compare_html
from ng911.testbed.hoptable import ROWS, between_runs, compare, hop_table
from ng911.testbed.measure import add_baseline_diffs, scenario_results
from ng911.testbed.report import cdf_svg, format_between_runs, format_hop_table, render_html
from ng911.testbed.scenarios import get_scenario

SLOW_HOP2 = Timing(transit=(0.1, 0.6, 0.1, 0.1))  # hop 2 half a millisecond slower


def _run(name: str, timing: Timing, calls: int = 12, repeat: int = 1) -> dict:
    sc = get_scenario(name)
    chain = Chain(sc.hops)
    for _ in range(calls):
        chain.call(timing)
    tr = Trace(ROLES)
    tr.extend(chain.events)
    res = scenario_results(sc, tr, cold_calls=1)
    for rec in res["call_records"]:
        rec["repeat"] = repeat
    return res


@pytest.fixture(scope="module")
def results():
    scen = {"plain": _run("plain", Timing()), "tls-e2e": _run("tls-e2e", SLOW_HOP2)}
    add_baseline_diffs(scen)
    out = {"meta": {"calls": 12, "rate": 10}, "scenarios": scen}
    out["hop_table"] = hop_table(scen)
    return out


def _row(results, scenario, row, group="warm"):
    return next(
        r
        for r in results["hop_table"]["rows"]
        if (r["scenario"], r["row"], r["group"]) == (scenario, row, group)
    )


def test_hop_table_finds_the_slow_hop_and_calls_the_rest_noise(results):
    hop2 = _row(results, "tls-e2e", "hop2")
    assert hop2["n"] == 11
    # synthetic timings are exact: the median difference is the injected 0.4 ms per way
    assert hop2["diff"]["median"]["ms"] == pytest.approx(0.8, abs=1e-6)
    assert not hop2["diff"]["median"]["within_noise"]
    hop1 = _row(results, "tls-e2e", "hop1")
    assert hop1["diff"]["median"]["ms"] == pytest.approx(0.0, abs=1e-9)
    assert hop1["diff"]["median"]["within_noise"]
    assert _row(results, "plain", "hop2")["diff"] is None  # the baseline itself
    cold = _row(results, "tls-e2e", "srd", "cold")
    assert cold["n"] == 1 and cold["diff"] is None  # one cold call: no interval
    assert {r["row"] for r in results["hop_table"]["rows"]} == set(ROWS)


def test_hop_table_in_the_terminal_and_the_report(results):
    text = format_hop_table(results)
    line = next(ln for ln in text.splitlines() if ln.startswith("tls-e2e") and " hop1 " in ln)
    assert line.endswith("within noise")
    line2 = next(ln for ln in text.splitlines() if ln.startswith("tls-e2e") and " hop2 " in ln)
    assert "+0.800 [" in line2 and "noise" not in line2
    page = render_html(results)
    table = re.search(r'<table class="hops">.*?</table>', page, re.S).group(0)
    assert table.count("<tr>") == 2 + 2 * len(ROWS)
    assert "within noise" in table and "+0.800 [" in table


def test_report_reads_at_800_px(results):
    page = render_html(results)
    assert '<meta name="viewport" content="width=device-width' in page
    assert ".scroll{max-width:100%;overflow-x:auto}" in page
    assert "svg{max-width:100%;height:auto}" in page
    # every table sits in a horizontally scrolling box: none can push the page wider
    tables = len(re.findall(r"<table", page))
    assert tables == len(re.findall(r'<div class="scroll"><table', page))
    assert re.search(r'<div class="scroll"><table class="main">', page)


def test_cdf_marks_the_clipped_tail():
    fast = [1.0 + 0.01 * i for i in range(100)]
    svg = cdf_svg({"a": fast, "b": [*fast[:97], 50.0, 80.0, 90.0]})
    assert "slower calls drawn at" in svg and "(n=100, 3 beyond)" in svg
    assert "beyond" not in cdf_svg({"a": fast})


def test_between_runs_spread():
    recs = [
        {"ok": True, "cold": False, "repeat": rep, "srd_ms": v}
        for rep, vals in ((1, (4.0, 5.0, 6.0)), (2, (6.0, 7.0, 8.0)), (3, (5.0, 5.5, 6.0)))
        for v in vals
    ]
    recs.append({"ok": True, "cold": True, "repeat": 1, "srd_ms": 100.0})
    b = between_runs(recs)
    assert b["srd_p50"] == [5.0, 7.0, 5.5] and b["p50_range_ms"] == 2.0
    assert b["calls"] == [3, 3, 3]
    text = format_between_runs({"scenarios": {"plain": {"between_runs": b}}})
    assert "plain" in text and "range 2.000" in text


def test_compare_two_runs(results):
    other = {
        "scenarios": {
            "plain": _run("plain", SLOW_HOP2),
            "tls-e2e": _run("tls-e2e", SLOW_HOP2),
        }
    }
    cmp = compare([results, other], ["a", "b"])
    rows = {(r["scenario"], r["row"], r["group"]): r for r in cmp["rows"]}
    plain_hop2 = rows[("plain", "hop2", "warm")]
    assert plain_hop2["diff"]["median"]["ms"] == pytest.approx(0.8, abs=1e-6)
    assert not plain_hop2["diff"]["median"]["within_noise"]
    assert rows[("tls-e2e", "hop2", "warm")]["diff"]["median"]["within_noise"]
    text = format_compare(cmp)
    assert text.startswith("Compared with a")
    page = render_compare_html(cmp)
    assert "<script" not in page and "within noise" in page and "a vs b" in page
