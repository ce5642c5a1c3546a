"""Measurements of synthetic runs, the report's numbers and colours, the terminal table."""

import json
import re

import pytest
from synthcalls import ROLES, Chain, Timing, expected_srd

from ng911.observe.calls import Trace
from ng911.testbed.hoptable import between_runs, hop_table
from ng911.testbed.logexport import call_anchor
from ng911.testbed.measure import SEGMENTS, add_baseline_diffs, scenario_results
from ng911.testbed.report import (
    GREEN,
    RED,
    format_scenario,
    format_table,
    load_results,
    render_html,
    write_report,
    write_results,
)
from ng911.testbed.results import SCHEMA_VERSION
from ng911.testbed.scenarios import get_scenario

SLOW_TLS = Timing(transit=(0.15, 0.25, 0.35, 0.4))  # TLS hops a little slower, hop4 udp


def _run(name: str, timing: Timing, calls: int = 5) -> dict:
    sc = get_scenario(name)
    chain = Chain(sc.hops)
    for _ in range(calls):
        chain.call(timing)
    tr = Trace(ROLES)
    tr.extend(chain.events)
    res = scenario_results(sc, tr, cold_calls=1)
    res["between_runs"] = between_runs(res["call_records"])
    return res


@pytest.fixture(scope="module")
def results():
    scen = {"plain": _run("plain", Timing()), "tls-e2e": _run("tls-e2e", SLOW_TLS)}
    add_baseline_diffs(scen)
    meta = {
        "started": "2026-11-25T16:00:00Z",
        "ng911": "test",
        "topology": "nyc",
        "calls": 5,
        "rate": 10,
        "repeat": 1,
        "interleaved": True,
        "cold_design": "synthetic",
        "baseline": "plain",
        "interrupted": False,
        "percentiles": "synthetic",
        "intervals": "synthetic",
    }
    return {
        "schema_version": SCHEMA_VERSION,
        "meta": meta,
        "scenarios": scen,
        "hop_table": hop_table(scen),
    }


def test_numbers_are_the_known_ones(results):
    plain, tls = results["scenarios"]["plain"], results["scenarios"]["tls-e2e"]
    assert plain["calls"] == 5 and plain["failed"] == 0 and plain["ser_pct"] == 100.0
    assert plain["warm"]["srd"]["n"] == 4 and plain["cold"]["srd"]["n"] == 1
    assert plain["warm"]["srd"]["mean"] == pytest.approx(expected_srd(Timing()), abs=1e-6)
    assert tls["warm"]["srd"]["p99"] == pytest.approx(expected_srd(SLOW_TLS), abs=1e-6)
    assert tls["cold"]["srd"]["mean"] == pytest.approx(
        expected_srd(SLOW_TLS, (True, True, True, False)), abs=1e-6
    )
    d = tls["diff"]["warm"]["srd"]["mean"]
    delta = expected_srd(SLOW_TLS) - expected_srd(Timing())
    assert d["ms"] == pytest.approx(delta, abs=1e-6)
    assert d["pct"] == pytest.approx(delta / expected_srd(Timing()) * 100, abs=1e-4)
    assert plain["diff"] == {}  # the baseline is not compared with itself
    assert tls["handshakes"]["hop1"]["full"] == 1 and "hop4" not in tls["handshakes"]
    assert tls["bytes"]["hop2"]["wire_mean"] > tls["bytes"]["hop2"]["sip_mean"]
    assert tls["bytes"]["hop4"]["wire_mean"] == tls["bytes"]["hop4"]["sip_mean"]
    assert tls["encrypted"] == {"hop1": True, "hop2": True, "hop3": True, "hop4": False}
    assert tls["observed_transports"] == tls["transports"]
    assert tls["lost"]["mean"] == pytest.approx(Timing().lost)
    b = tls["breakdown"]["warm"]
    assert set(b) <= set(SEGMENTS)
    assert sum(b.values()) == pytest.approx(tls["warm"]["srd"]["mean"], abs=1e-6)
    assert tls["ladder"]["cold"] is False and len(tls["srd_samples"]) == 4
    assert tls["unpaired_messages"] == 0


def test_failures_reported_by_the_caller_and_unsent_calls_count(results):
    sc = get_scenario("plain")
    chain = Chain(sc.hops)
    first = chain.call()
    chain.call(answer_status=503)
    tr = Trace(ROLES)
    tr.extend(chain.events)
    res = scenario_results(sc, tr, failures={first: "caller saw no media"}, placed=3)
    assert res["failed"] == 3 and res["calls"] == 3
    reasons = [f["reason"] for f in res["failures"]]
    assert "caller saw no media" in reasons and any("503" in r for r in reasons)
    assert any("never sent" in r for r in reasons)


def test_html_is_self_contained_and_colours_match_the_hops(results, tmp_path):
    page = render_html(results)
    assert "<script" not in page and "http://" not in page.replace("http://www.w3.org", "")
    # CDF, warm and cold stacked bars, a warm and a cold ladder each
    assert page.count("<svg") == 3 + 2 + 2
    # per ladder: green arrows exactly on encrypted hops (and none red there)
    ladders = re.findall(r"<svg[^>]*aria-label=\"(plain|tls-e2e): .*?</svg>", page, re.S)
    assert ladders == ["plain", "plain", "tls-e2e", "tls-e2e"]
    cold = re.search(r'aria-label="tls-e2e: [^"]*\(cold call\)".*?</svg>', page, re.S).group(0)
    # the cold call opened hop 1, 2 and 3 (TLS): a handshake band on each
    assert cold.count('class="handshake"') == 3
    assert "TLS handshake (full" in cold
    for name in ("plain", "tls-e2e"):
        res = results["scenarios"][name]
        svg = re.search(rf'aria-label="{name}: .*?</svg>', page, re.S).group(0)
        arrows = res["ladder"]["arrows"]
        n_green = sum(1 for a in arrows if a["encrypted"])
        n_red = len(arrows) - n_green
        assert svg.count(f'stroke="{GREEN}" stroke-width="2"') == n_green
        assert svg.count(f'stroke="{RED}" stroke-width="2"') == n_red
        enc_hops = {h for h, e in res["encrypted"].items() if e}
        assert all(a["encrypted"] == (a["hop"] in enc_hops) for a in arrows if a["hop"])
    plain = results["scenarios"]["plain"]
    assert f"{plain['warm']['srd']['mean']:.3f}" in page
    assert "Failed calls: <span class=ok>0</span>" in page
    out = write_report(results, tmp_path / "r" / "report.html")
    assert out.read_text() == page


def test_the_ladder_call_links_to_its_logevents_only_when_there_are_some(results):
    call = results["scenarios"]["plain"]["ladder"]["call_id"]
    assert "logevents.html" not in render_html(results)
    entry = {"html": "plain/logevents.html", "count": 12, "verified": 12, "calls": 1,
             "by_type": {"CallStartLogEvent": 2}, "logger": "deferred"}  # fmt: skip
    with_logs = {**results, "scenarios": {**results["scenarios"]}}
    with_logs["scenarios"]["plain"] = {**results["scenarios"]["plain"], "logevents": entry}
    page = render_html(with_logs)
    assert f'href="plain/logevents.html#{call_anchor(call)}"' in page
    assert "i3 LogEvents" in page and "CallStart 2" in page


def test_results_json_round_trip(results, tmp_path):
    p = write_results(results, tmp_path / "results.json")
    assert load_results(p) == json.loads(json.dumps(results))
    assert render_html(load_results(p)) == render_html(results)


def test_terminal_tables(results):
    table = format_table(results)
    lines = table.splitlines()
    assert "RFC 6076" in lines[0]
    row = next(ln for ln in lines if ln.startswith("tls-e2e"))
    assert "tls,tls,tls,udp" in row and " 0 " in row
    srd = results["scenarios"]["tls-e2e"]["warm"]["srd"]
    assert f"{srd['mean']:.3f}" in row
    assert "cold" in lines[-1]
    block = format_scenario(results["scenarios"]["tls-e2e"])
    assert "hop2 tls" in block and "TLS full 1" in block and "LoST query" in block


def test_report_without_baseline_or_calls():
    sc = get_scenario("tls-all")
    res = scenario_results(sc, Trace(ROLES))
    add_baseline_diffs({"tls-all": res})
    page = render_html({"meta": {}, "scenarios": {"tls-all": res}})
    assert "tls-all" in page and "—" in page
    assert res["ladder"] is None and res["calls"] == 0
    assert "tls-all" in format_table({"scenarios": {"tls-all": res}})
