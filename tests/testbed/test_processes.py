"""`--processes`: every element its own OS process, events collected from each one.

The same checks as test_run's in-process run (the report's numbers recomputed from the raw
per-hop logs, zero failed calls, TLS records in the captures), plus what only processes can
do wrong: a child that dies mid-run or at start is a clear error, never a hang.
"""

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib

import pytest
from smalltopo import small_topology
from test_run import _rows, _srd_from_log

from ng911.elements.config import ConfigError, EsrpConfig, PsapConfig, load_toml, toml_table
from ng911.observe.hops import HOPS
from ng911.testbed.errors import TestbedError
from ng911.testbed.logexport import call_anchor
from ng911.testbed.plan import ChainOptions
from ng911.testbed.processes import start_processes
from ng911.testbed.run import RunConfig, run
from ng911.testbed.scenarios import SCENARIOS, get_scenario
from ng911.testbed.topology import HTTP_ROLES, load_topology

CALLS = 6  # 2 cold (one per PSAP of the small topology), 4 warm
COLD = 2
SCENARIO_NAMES = ["plain", "tls-all"]
TSHARK = shutil.which("tshark")


def run_chain_processes(tmp, **chain):
    cfg = RunConfig(
        scenarios=SCENARIO_NAMES,
        calls=CALLS,
        rate=50.0,
        out=tmp / "run",
        topology=small_topology(tmp),
        chain=ChainOptions(hangup_after=0.01, **chain),
    )
    return run(cfg)


def check_run_against_raw_logs(result, calls=CALLS, cold=COLD):
    """What test_run checks of an in-process run, for a run of any isolation."""
    run_dir = result.run_dir
    assert result.failed == 0
    for name, res in result.results["scenarios"].items():
        sc = SCENARIOS[name]
        assert res["calls"] == calls, name
        assert res["failed"] == 0, f"{name}: {res['failures'][:3]} {res['errors'][:3]}"
        assert res["errors"] == [], name
        assert res["unpaired_messages"] == 0, f"{name}: {res['unpaired']}"
        assert res["lost_queries"] >= calls
        assert res["observed_transports"] == sc.transports, name
        assert set(res["handshakes"]) == {h for h in HOPS if sc.encrypted(h)}
        hop1 = _rows(run_dir, name, "hop1")
        srd = _srd_from_log(hop1)
        assert len(srd) == calls
        invites = sorted(
            (r for r in hop1 if r["first_line"].startswith("INVITE ") and r["direction"] == "out"),
            key=lambda r: r["mono"],
        )
        cold_ids = {r["call_id"] for r in invites[:cold]}
        warm = sorted(v for cid, v in srd.items() if cid not in cold_ids)
        assert res["srd_samples"] == pytest.approx(warm, abs=1e-6)
        assert res["warm"]["srd"]["mean"] == pytest.approx(sum(warm) / len(warm))
        for hop in HOPS:
            out = [r for r in _rows(run_dir, name, hop) if r["direction"] == "out"]
            b = res["bytes"][hop]
            assert b["messages"] == len(out)
            assert b["sip_mean"] == pytest.approx(sum(r["sip_bytes"] for r in out) / len(out))
            assert b["wire_mean"] == pytest.approx(sum(r["wire_bytes"] for r in out) / len(out))
            if sc.encrypted(hop):
                assert b["wire_mean"] > b["sip_mean"]
            else:
                assert b["wire_mean"] == b["sip_mean"]
        assert sum(res["breakdown"]["warm"].values()) == pytest.approx(
            res["warm"]["srd"]["mean"], rel=1e-6
        )
        # events from every element process but LoST's (the ESRP reports its queries)
        assert {"caller", "vsp", "esrp"} <= set(res["cpu_us_per_call"])


def tshark_methods(pcap, keys):
    args = ("-o", f"tls.keylog_file:{keys}", "-Y", "sip", "-T", "fields", "-e", "sip.Method")
    out = subprocess.run(
        [TSHARK, "-n", "-r", str(pcap), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    return out.split()


@pytest.fixture(scope="module")
def processes_run(tmp_path_factory):
    return run_chain_processes(tmp_path_factory.mktemp("processes"), processes=True)


def test_processes_run_matches_its_raw_logs(processes_run):
    check_run_against_raw_logs(processes_run)
    for res in processes_run.results["scenarios"].values():
        assert res["isolation"] == "processes"
        assert all(a.startswith("127.") for a in res["addresses"].values())
    assert processes_run.results["meta"]["isolation"] == "processes"


def test_each_element_ran_from_an_exported_bundle(processes_run):
    """Each child is `ng911 run --bundle <scenario>/bundles/HOST`: what a user copies."""
    d = processes_run.run_dir / "tls-all"
    esrp = load_toml(d / "bundles" / "esrp" / "bundle.toml", "esrp", EsrpConfig)
    assert esrp.lost_url.startswith("https://127.") and esrp.psap_transport == "tls"
    assert esrp.lost_cert == "tls/cert.pem" and esrp.tls.require_client_cert  # relative
    assert sorted(p.stem for p in (d / "events").glob("*.jsonl")) == sorted(
        h for h, r in load_topology(small_topology(d)).roles.items() if r not in ("lost", "logger")
    )
    assert (d / "keys.log").stat().st_size > 0  # the children's key logs, merged
    # each psapd keeps its call takers' registrations in its bundle (state/)
    roles = load_topology(small_topology(d)).roles
    for name in (n for n, r in roles.items() if r == "psap"):
        bundle = d / "bundles" / name
        psap = load_toml(bundle / "bundle.toml", name, PsapConfig)
        assert psap.registrations == "state/registrations.sqlite"
        assert (bundle / psap.registrations).stat().st_size > 0


def test_the_logger_process_stored_every_call_signed(processes_run):
    """`ng911 run logger` is one more child (its bundle: https, mutual as LoST's on
    tls-all); the elements' processes log to it live; the run exports what it stored."""
    for name, res in processes_run.results["scenarios"].items():
        lg = res["logevents"]
        assert lg["logger"] == "deferred"
        assert lg["store"].endswith("bundles/logger/logevents.sqlite")
        assert lg["count"] == lg["verified"] > 0, name
        assert lg["calls"] == CALLS, name  # each call's CallStart: every call is there
        assert lg["by_type"]["RouteLogEvent"] == CALLS  # the ESRP routed each one
        page = (processes_run.run_dir / lg["html"]).read_text()
        hop1 = _rows(processes_run.run_dir, name, "hop1")
        call_ids = {r["call_id"] for r in hop1 if r["first_line"].startswith("INVITE ")}
        assert len(call_ids) == CALLS
        for cid in call_ids:
            assert f'id="{call_anchor(cid)}"' in page
    logger = tomllib.loads(
        (processes_run.run_dir / "tls-all" / "bundles" / "logger" / "bundle.toml").read_text()
    )["logger"]
    assert logger["port"] == 8453 and logger["require_client_cert"] is True


def test_tls_records_from_child_processes_decrypt_in_the_synthesised_capture(processes_run):
    if TSHARK is None:
        pytest.skip("tshark not installed (scripts/install-peers.sh installs it)")
    d = processes_run.run_dir / "tls-all"
    methods = tshark_methods(d / "hop2.pcapng", d / "keys.log")
    assert methods.count("INVITE") == CALLS and "BYE" in methods


def test_toml_tables_round_trip():
    data = {"name": 'a "b"', "n": 3, "x": 0.5, "ok": True, "l": [1, 2], "t": {"k-1": ["u"]}}
    assert tomllib.loads(toml_table("h-1", data)) == {"h-1": data}


async def test_a_child_killed_mid_run_fails_the_run_clearly(tmp_path):
    topo = load_topology(small_topology(tmp_path), get_scenario("plain"))
    chain = await start_processes(
        topo, tmp_path / "w", opts=ChainOptions(hangup_after=0.01, processes=True)
    )
    try:
        assert (await chain.place_call(40.7580, -73.9855)).ok
        esrp = chain.children["esrp"]
        os.kill(esrp.pid, signal.SIGKILL)
        t0 = time.monotonic()
        with pytest.raises(
            TestbedError, match=r"element esrp \(esrp, pid \d+\) was killed by SIGKILL"
        ):
            for _ in range(50):  # the watcher sees the exit within a few ms
                await chain.place_call(40.7580, -73.9855)
                await asyncio.sleep(0.05)
        assert time.monotonic() - t0 < 10
    finally:
        t0 = time.monotonic()
        await chain.close()
        assert time.monotonic() - t0 < 10
    # streamed events: what was written before the kill is there, without its closing line
    assert any(re.match(r"esrp: (no|incomplete) events", e) for e in chain.errors)
    assert all(c.proc.returncode is not None for c in chain.children.values())


async def test_a_chain_that_records_no_events_runs_and_closes_clean(tmp_path):
    """`record_events=False` (bench/chain.py's capacity runs): no child writes an event file,
    calls still complete, and closing reports no missing events as an error."""
    topo = load_topology(small_topology(tmp_path), get_scenario("plain"))
    opts = ChainOptions(hangup_after=0.01, processes=True, record_events=False)
    chain = await start_processes(topo, tmp_path / "w", opts=opts)
    try:
        assert all("--events" not in c.argv for c in chain.children.values())
        for _ in range(3):
            assert (await chain.place_call(40.7580, -73.9855)).ok
    finally:
        await chain.close()
    assert chain.errors == []
    assert list((tmp_path / "w" / "events").glob("*.jsonl")) == []
    # and no per-event log on stderr instead (~12 % of the process chain's CPU per call)
    for c in chain.children.values():
        if c.role not in HTTP_ROLES:
            assert '"what"' not in c.stderr.read_text(errors="replace"), c.name


async def test_a_child_that_cannot_start_is_reported_with_its_stderr(tmp_path):
    src = small_topology(tmp_path).read_text()
    own = f'cert = "{tmp_path}/broken.pem"\nkey = "{tmp_path}/broken.key"\n'
    bad = src.replace('domain = "vsp.example"\n', f'domain = "vsp.example"\n{own}', 1)
    path = tmp_path / "bad.toml"
    path.write_text(bad)
    topo = load_topology(path, get_scenario("tls-all"))
    # files that are not what they claim: the export copies them, the vsp process dies
    (tmp_path / "broken.pem").write_text("not a certificate\n")
    (tmp_path / "broken.key").write_text("not a key\n")
    t0 = time.monotonic()
    with pytest.raises(
        TestbedError, match=r"element vsp \(vsp, pid \d+\) exited with status"
    ) as ei:
        await start_processes(topo, tmp_path / "w", opts=ChainOptions(processes=True))
    assert "its stderr ends with" in str(ei.value)
    assert time.monotonic() - t0 < 20
    # files that are not there at all: refused with their name before any process starts
    for f in ("broken.pem", "broken.key"):
        (tmp_path / f).unlink()
    with pytest.raises(ConfigError, match=r"vsp: cannot copy .*broken\.pem"):
        await start_processes(topo, tmp_path / "w2", opts=ChainOptions(processes=True))


def test_netns_falls_back_to_processes_in_one_line_when_namespaces_cannot_be_made(tmp_path):
    """Root without CAP_SYS_ADMIN: `ip netns add` is refused, as in an unprivileged container."""
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        pytest.skip("needs root and setpriv (util-linux) to drop CAP_SYS_ADMIN")
    proc = subprocess.run(
        [
            *(setpriv, "--bounding-set", "-sys_admin", "--inh-caps", "-sys_admin", "--"),
            *(sys.executable, "-m", "ng911", "testbed", "run", "--netns", "--no-captures"),
            *("--scenario", "plain", "--no-baseline", "--calls", "2", "--rate", "20"),
            *("--topology", str(small_topology(tmp_path)), "--out", str(tmp_path / "run")),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    notes = [ln for ln in proc.stdout.splitlines() if "--netns unavailable" in ln]
    assert len(notes) == 1 and "falling back to --processes on loopback" in notes[0]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["meta"]["isolation"] == "processes"
    assert results["scenarios"]["plain"]["failed"] == 0


async def test_addresses_taken_everywhere_fail_after_bounded_retries(tmp_path):
    """A wildcard UDP socket on 5060 makes every loopback block's SIP port busy: each try
    fails at a child's bind, gets a fresh block and CA, and the last error is reported."""
    import socket

    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind(("0.0.0.0", 5060))
    except OSError as exc:
        s.close()
        pytest.skip(f"cannot hold UDP 5060 for the test: {exc}")
    topo = load_topology(small_topology(tmp_path), get_scenario("plain"))
    try:
        t0 = time.monotonic()
        with pytest.raises(
            TestbedError,
            match=r"(?s)after 2 tries: .*while the chain started.*Address already in use",
        ):
            await start_processes(topo, tmp_path / "w", opts=ChainOptions(), attempts=2)
        assert time.monotonic() - t0 < 25
    finally:
        s.close()


_ORPHAN_SCRIPT = """
import asyncio, json, sys
from pathlib import Path
from smalltopo import small_topology
from ng911.testbed.plan import ChainOptions
from ng911.testbed.processes import start_processes
from ng911.testbed.scenarios import get_scenario
from ng911.testbed.topology import load_topology

async def main():
    tmp = Path(sys.argv[1])
    topo = load_topology(small_topology(tmp), get_scenario("tls-all"))
    chain = await start_processes(topo, tmp / "w", opts=ChainOptions(logger=True, processes=True))
    print(json.dumps({c.name: c.pid for c in chain.children.values()}), flush=True)
    await asyncio.sleep(60)  # killed long before

asyncio.run(main())
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as fh:  # a zombie is gone, only not yet reaped
        return fh.read().rsplit(")", 1)[1].split()[0] != "Z"


def test_a_testbed_killed_mid_run_leaves_no_element_or_service_running(tmp_path):
    """SIGKILL to the testbed (no chance to stop its children): every element process and
    the LoST and logger services see their stdin close and stop by themselves. Before, they
    ran on, orphaned (a logger process was found still serving an hour after a test)."""
    here = os.path.dirname(__file__)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([here, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(
        [sys.executable, "-c", _ORPHAN_SCRIPT, str(tmp_path)],
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        pids = json.loads(line)
        assert {"lost", "logger", "vsp", "esrp"} <= set(pids), pids
        assert all(_alive(p) for p in pids.values())
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(_alive(p) for p in pids.values()):
        time.sleep(0.1)
    left = {n: p for n, p in pids.items() if _alive(p)}
    for p in left.values():  # do not leave them to the next test either
        os.kill(p, signal.SIGKILL)
    assert not left, f"still running after their testbed was killed: {left}"


async def test_live_observers_see_the_last_call_even_when_the_chain_closes_at_once(tmp_path):
    """The live feed reads the event files every 0.1 s; a chain closed right after its last
    call must still hand that call's messages to the live observers (a final read once the
    children have stopped). Before, the feed was cancelled first and the last call could
    be missing from the console."""
    topo = load_topology(small_topology(tmp_path), get_scenario("plain"))
    seen: list = []
    chain = await start_processes(
        topo,
        tmp_path / "w",
        opts=ChainOptions(hangup_after=0.01, processes=True),
        live=[seen.append],
    )
    try:
        rec = await chain.place_call(40.7580, -73.9855)
        assert rec.ok
    finally:
        await chain.close()  # at once: no live period has passed since the call
    invites = [e for e in seen if bytes(getattr(e, "data", b"")).startswith(b"INVITE ")]
    assert invites, "the call's INVITE never reached the live observer"
    assert any(rec.call_id.encode() in bytes(e.data) for e in invites)
