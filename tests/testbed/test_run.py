"""The whole testbed on loopback: every scenario with a few real calls through real elements.

Checks what the report says against the raw per-hop message logs (not just that files
exist), zero failed calls, green/red hops matching each scenario's transports, and that
tshark decrypts a TLS hop's capture with the run's key log and finds the INVITE's PIDF-LO.
"""

import json
import math
import shutil
import subprocess
from pathlib import Path

import pytest

from ng911.observe.hops import HOPS
from ng911.observe.pcap import read_pcap
from ng911.testbed.logexport import call_anchor
from ng911.testbed.measure import CALL_COLUMNS, SEGMENTS
from ng911.testbed.plan import ChainOptions
from ng911.testbed.report import GREEN, RED
from ng911.testbed.results import SCHEMA_VERSION, read_calls_csv, schema, validate
from ng911.testbed.run import RunConfig, run
from ng911.testbed.scenarios import SCENARIOS

CALLS = 8  # 5 cold (one per PSAP), 3 warm
COLD = 5
TSHARK = shutil.which("tshark")


@pytest.fixture(scope="module")
def testbed_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("testbed") / "run"
    cfg = RunConfig(calls=CALLS, rate=50.0, out=out, chain=ChainOptions(hangup_after=0.01))
    return run(cfg)


def _rows(run_dir: Path, scenario: str, hop: str) -> list[dict]:
    path = run_dir / scenario / f"{hop}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_every_scenario_ran_with_zero_failed_calls(testbed_run):
    results = testbed_run.results
    assert list(results["scenarios"]) == list(SCENARIOS)
    for name, res in results["scenarios"].items():
        assert res["calls"] == CALLS, name
        assert res["failed"] == 0, f"{name}: {res['failures'][:3]} {res['errors'][:3]}"
        assert res["ser_pct"] == 100.0
        assert res["unpaired_messages"] == 0, f"{name}: {res['unpaired']}"
        assert res["lost_queries"] >= CALLS  # every call asked LoST (no cache)
    assert testbed_run.failed == 0
    assert (testbed_run.run_dir / "report.html").is_file()


def test_hops_used_the_scenario_transports_and_are_coloured_so(testbed_run):
    page = (testbed_run.run_dir / "report.html").read_text()
    for name, res in testbed_run.results["scenarios"].items():
        sc = SCENARIOS[name]
        assert res["observed_transports"] == sc.transports, name
        assert res["encrypted"] == {h: sc.encrypted(h) for h in HOPS}
        arrows = res["ladder"]["arrows"]
        assert {a["hop"] for a in arrows} >= set(HOPS)
        for a in arrows:
            if a["hop"] is not None:
                assert a["encrypted"] == sc.encrypted(a["hop"]), (name, a)
                assert a["transport"] == sc.transport(a["hop"])
            else:  # LoST
                assert a["encrypted"] == (sc.lost == "https")
        start = page.index(f'aria-label="{name}: ')
        svg = page[start : page.index("</svg>", start)]
        green = sum(1 for a in arrows if a["encrypted"])
        assert svg.count(f'stroke="{GREEN}" stroke-width="2"') == green
        assert svg.count(f'stroke="{RED}" stroke-width="2"') == len(arrows) - green


def _srd_from_log(rows: list[dict]) -> dict[str, float]:
    """Call-ID → SRD (ms) recomputed from hop1's raw events at the caller."""
    invites: dict[str, float] = {}
    ringing: dict[str, float] = {}
    for r in sorted(rows, key=lambda r: r["mono"]):
        if r["element"] != "caller":
            continue
        if r["direction"] == "out" and r["first_line"].startswith("INVITE "):
            invites.setdefault(r["call_id"], r["mono"])
        if (
            r["direction"] == "in"
            and r["first_line"].startswith("SIP/2.0 18")
            and r["cseq"].endswith(" INVITE")
        ):
            ringing.setdefault(r["call_id"], r["mono"])
    return {cid: (ringing[cid] - t) * 1000 for cid, t in invites.items()}


def test_report_numbers_match_the_raw_message_logs(testbed_run):
    run_dir = testbed_run.run_dir
    for name, res in testbed_run.results["scenarios"].items():
        srd = _srd_from_log(_rows(run_dir, name, "hop1"))
        assert len(srd) == CALLS
        # the runner says which calls were cold (spread over the run, the first among them)
        invites = sorted(
            (
                r
                for r in _rows(run_dir, name, "hop1")
                if r["first_line"].startswith("INVITE ") and r["direction"] == "out"
            ),
            key=lambda r: r["mono"],
        )
        cold_ids = {r["call_id"] for r in res["call_records"] if r["cold"]}
        assert len(cold_ids) == COLD and invites[0]["call_id"] in cold_ids
        warm = sorted(v for cid, v in srd.items() if cid not in cold_ids)
        cold = [v for cid, v in srd.items() if cid in cold_ids]
        assert len(warm) == CALLS - COLD
        assert res["srd_samples"] == pytest.approx(warm, abs=1e-6)
        assert res["warm"]["srd"]["mean"] == pytest.approx(math.fsum(warm) / len(warm))
        assert res["warm"]["srd"]["max"] == pytest.approx(max(warm))
        if SCENARIOS[name].transport("hop1") == "udp":
            assert res["cold"]["srd"]["mean"] == pytest.approx(math.fsum(cold) / COLD)
        else:  # the caller reconnected first: its connection set-up is part of the SRD
            assert res["cold"]["srd"]["mean"] > math.fsum(cold) / COLD
        assert res["cold"]["srd"]["n"] == COLD
        # bytes per message per hop, from the sending side of each hop's log
        for hop in HOPS:
            out = [r for r in _rows(run_dir, name, hop) if r["direction"] == "out"]
            b = res["bytes"][hop]
            assert b["messages"] == len(out)
            assert b["sip_mean"] == pytest.approx(sum(r["sip_bytes"] for r in out) / len(out))
            assert b["wire_mean"] == pytest.approx(sum(r["wire_bytes"] for r in out) / len(out))
            if SCENARIOS[name].encrypted(hop):
                assert b["wire_mean"] > b["sip_mean"]  # TLS records cost bytes
            else:
                assert b["wire_mean"] == b["sip_mean"]
        # breakdown segments add up to the SRD they split
        assert sum(res["breakdown"]["warm"].values()) == pytest.approx(
            res["warm"]["srd"]["mean"], rel=1e-6
        )


def test_tls_hops_did_handshakes_and_plain_hops_did_not(testbed_run):
    for name, res in testbed_run.results["scenarios"].items():
        sc = SCENARIOS[name]
        tls_hops = {h for h in HOPS if sc.encrypted(h)}
        assert set(res["handshakes"]) == tls_hops, name
        for hop in tls_hops:
            hs = res["handshakes"][hop]
            assert hs["failed"] == 0 and hs["full"] >= 1
            assert hs["full_mean_ms"] > 0


def test_captures_hold_ciphertext_on_tls_hops_and_sip_on_plain_ones(testbed_run):
    run_dir = testbed_run.run_dir
    res = testbed_run.results["scenarios"]["tls-vsp-psap"]
    assert "capture_notes" not in res["files"]
    _, hop1 = read_pcap(run_dir / "tls-vsp-psap" / "hop1.pcapng")
    assert any(p.payload.startswith(b"INVITE ") for p in hop1)
    assert {p.proto for p in hop1} == {17}
    _, hop2 = read_pcap(run_dir / "tls-vsp-psap" / "hop2.pcapng")
    assert hop2 and {p.proto for p in hop2} == {6}
    assert not any(b"INVITE" in p.payload for p in hop2)
    assert all(p.ip_checksum_ok and p.l4_checksum_ok for p in hop1 + hop2)


@pytest.mark.parametrize(("scenario", "hop"), [("tls-vsp-psap", "hop2"), ("tls-all", "hop4")])
def test_tshark_decrypts_a_tls_hop_and_finds_the_pidf_lo(testbed_run, scenario, hop):
    if TSHARK is None:
        pytest.skip("tshark not installed (scripts/install-peers.sh installs it)")
    d = testbed_run.run_dir / scenario
    pcap = d / f"{hop}.pcapng"

    def tshark(*args: str) -> str:
        return subprocess.run(
            [TSHARK, "-n", "-r", str(pcap), *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout

    # no key log option: the capture carries the run's keys (pcapng DSB)
    methods = tshark("-Y", "sip", "-T", "fields", "-e", "sip.Method").split()
    assert methods.count("INVITE") == CALLS  # hop4: every PSAP's taker, in one capture
    assert "BYE" in methods and "ACK" in methods
    detail = tshark("-Y", 'sip.Method == "INVITE"', "-V")
    assert "application/pidf+xml" in detail and "gml:pos" in detail
    assert "urn:service:sos" in detail


def test_every_call_is_in_the_logger_and_the_report_links_it(testbed_run):
    """The plan's logger in every scenario (in one process: deferred until the calls are
    over); every LogEvent stored verifies; the report's ladder call links to its section
    of logevents.html, which lists that call's LogEvents from every element."""
    run_dir = testbed_run.run_dir
    page = (run_dir / "report.html").read_text()
    assert testbed_run.results["meta"]["logger"] == "deferred"
    for name, res in testbed_run.results["scenarios"].items():
        lg = res["logevents"]
        assert lg["logger"] == "deferred" and lg["count"] == lg["verified"] > 0, name
        assert lg["calls"] == CALLS and lg["by_type"]["RouteLogEvent"] == CALLS, name
        assert lg["senders"]["sent"] == lg["count"] and lg["senders"]["dropped"] == 0, name
        call = res["ladder"]["call_id"]
        assert f'href="{name}/logevents.html#{call_anchor(call)}"' in page
        section = (run_dir / lg["html"]).read_text().split(f'id="{call_anchor(call)}"')[1]
        section = section.split("<h2")[0]
        for element in ("vsp.example", "esrp.esinet.nyc.example"):
            assert f"<td>{element}</td>" in section, (name, element)
        assert "urn:emergency:uid:callid:" in section and ">Route<" in section
        first = json.loads((run_dir / lg["jsonl"]).read_text().splitlines()[0])
        assert first["verified"] and first["jws"]["signature"]


def test_elements_count_their_cpu(testbed_run):
    res = testbed_run.results["scenarios"]["plain"]
    assert {"caller", "vsp", "esrp"} <= set(res["cpu_us_per_call"])


def test_reconnecting_caller_resumes_its_tls_session(tmp_path):
    cfg = RunConfig(
        scenarios=["tls-e2e"],
        baseline=False,
        calls=5,
        cold_calls=1,
        rate=2.0,  # 500 ms between calls: longer than the idle time + the sweep period
        out=tmp_path / "run",
        # longer than any silence inside a call (a set-up on a loaded machine), or the
        # caller would drop a connection a response is still due on
        chain=ChainOptions(hangup_after=0.01, reconnect_after=0.15),
        captures=False,
    )
    res = run(cfg).results["scenarios"]["tls-e2e"]
    assert res["failed"] == 0
    hop1 = res["handshakes"]["hop1"]
    assert hop1["full"] >= 1 and hop1["resumed"] >= 1
    assert hop1["resumed_mean_ms"] > 0
    assert res["handshakes"]["hop2"]["resumed"] == 0  # proxies keep their connections


def test_calls_csv_matches_the_raw_message_logs(testbed_run):
    """calls.csv: one row per call, its Call-ID, start and SRD as the caller's own events in
    hop1.jsonl give them, and the SRD split adding up to the SRD."""
    run_dir = testbed_run.run_dir
    rows = read_calls_csv(run_dir / "calls.csv")
    assert list(rows[0]) == list(CALL_COLUMNS)
    assert len(rows) == CALLS * len(SCENARIOS)
    for name in SCENARIOS:
        log = _rows(run_dir, name, "hop1")
        srd = _srd_from_log(log)
        ts = {}
        for r in sorted(log, key=lambda r: r["mono"]):
            if r["element"] == "caller" and r["first_line"].startswith("INVITE "):
                ts.setdefault(r["call_id"], r["ts"])
        mine = [r for r in rows if r["scenario"] == name]
        assert {r["call_id"] for r in mine} == set(srd)
        assert sum(r["cold"] == "true" for r in mine) == COLD
        for r in mine:
            assert r["ok"] == "true" and r["status"] == "200" and r["repeat"] == "1"
            assert float(r["start_unix"]) == pytest.approx(ts[r["call_id"]], abs=1e-6)
            if r["cold"] == "true":  # a cold call opened its connections: set-up counts
                assert float(r["srd_ms"]) >= srd[r["call_id"]] - 1e-6
            else:
                assert float(r["srd_ms"]) == pytest.approx(srd[r["call_id"]], abs=1e-6)
            parts = [float(r[f"{seg}_ms"]) for seg in SEGMENTS]
            assert math.fsum(parts) == pytest.approx(float(r["srd_ms"]), abs=1e-6)
    # results.json carries the same records
    recs = [c for res in testbed_run.results["scenarios"].values() for c in res["call_records"]]
    assert [c["call_id"] for c in recs] == [r["call_id"] for r in rows]


def test_results_json_validates_against_the_packaged_schema(testbed_run):
    data = json.loads((testbed_run.run_dir / "results.json").read_text())
    assert (
        data["schema_version"]
        == SCHEMA_VERSION
        == schema()["properties"]["schema_version"]["const"]
    )
    assert validate(data) == []
    broken = json.loads(json.dumps(data))
    broken["scenarios"]["plain"]["call_records"][0]["srd_ms"] = "fast"
    del broken["hop_table"]["rows"][0]["diff"]
    errors = validate(broken)
    assert any("call_records[0].srd_ms" in e for e in errors)
    assert any("missing 'diff'" in e for e in errors)


def test_cold_calls_open_every_tls_hop_and_warm_ones_none(testbed_run):
    """Cold calls run interleaved with warm ones; each opens every TLS hop on its path."""
    for name, res in testbed_run.results["scenarios"].items():
        sc = SCENARIOS[name]
        for c in res["call_records"]:
            if c["cold"] and any(sc.encrypted(h) for h in HOPS):
                assert c["handshake_ms"] > 0, (name, c)
            elif not c["cold"]:
                assert c["handshake_ms"] == 0, (name, c)
        cold = res["ladder_cold"]
        assert cold is not None and cold["cold"] is True
        shaken = {a["hop"] for a in cold["arrows"] if a["kind"] == "handshake"}
        assert shaken == {h for h in HOPS if sc.encrypted(h)}, name
    rows = testbed_run.results["hop_table"]["rows"]
    srd = {(r["scenario"], r["group"]): r for r in rows if r["row"] == "srd"}
    assert srd[("tls-all", "cold")]["diff"]["median"]["ms"] > 0
