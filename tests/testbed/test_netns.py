"""`--netns`: each host in its own network namespace, hops on real interfaces, real captures.

Skipped (with the reason) where namespaces cannot be made: not root, no `ip`, or a kernel
or container that refuses `ip netns add`. Every namespace this process made must be gone
after each run, and after a Ctrl-C in the middle of one.
"""

import ipaddress
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from smalltopo import small_topology
from test_processes import (
    CALLS,
    TSHARK,
    check_run_against_raw_logs,
    run_chain_processes,
    tshark_methods,
)

from ng911.observe import pcapng
from ng911.observe.hops import HOPS
from ng911.testbed.netns import PREFIX, list_ours, unavailable_reason
from ng911.testbed.topology import load_topology

REASON = unavailable_reason()
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"--netns unavailable: {REASON}")


@pytest.fixture(scope="module")
def netns_run(tmp_path_factory):
    return run_chain_processes(tmp_path_factory.mktemp("netns"), netns=True)


def test_netns_run_matches_its_raw_logs(netns_run):
    check_run_against_raw_logs(netns_run)
    subnet = ipaddress.ip_network("10.91.0.0/24")
    for res in netns_run.results["scenarios"].values():
        assert res["isolation"] == "netns"
        addrs = list(res["addresses"].values())
        assert len(set(addrs)) == len(addrs)
        assert all(ipaddress.ip_address(a) in subnet for a in addrs)
        # the logger in its own namespace: every call's LogEvents across the bridge
        assert res["logevents"]["calls"] == CALLS
        assert res["logevents"]["count"] == res["logevents"]["verified"] > 0
    assert netns_run.results["meta"]["isolation"] == "netns"


def test_no_namespace_is_left_after_the_run(netns_run):
    assert list_ours() == []


def test_each_hop_has_a_real_capture_beside_the_synthesised_one(netns_run):
    d = netns_run.run_dir
    for name, res in netns_run.results["scenarios"].items():
        captured = res["files"].get("captured", {})
        if shutil.which("dumpcap") is None and shutil.which("tcpdump") is None:
            assert captured == {}
            continue
        assert set(captured) == set(HOPS), res["files"].get("captured_notes")
        for hop in HOPS:
            assert (d / captured[hop]).stat().st_size > 24
            assert captured[hop].endswith(".pcapng")  # converted: names and keys inside
            assert not (d / name / f"captured-{hop}.pcap").exists()
            assert (d / name / f"{hop}.pcapng").is_file()  # the synthesised one too


def test_tshark_decrypts_the_real_capture_of_a_tls_hop(netns_run):
    if TSHARK is None:
        pytest.skip("tshark not installed (scripts/install-peers.sh installs it)")
    d = netns_run.run_dir / "tls-all"
    if not (d / "captured-hop3.pcapng").exists():
        pytest.skip("no capture tool: no real capture")
    # the key log is inside (DSB): a key log option naming no file changes nothing
    methods = tshark_methods(d / "captured-hop3.pcapng", d / "nothing.log")
    assert methods.count("INVITE") == CALLS and "ACK" in methods and "BYE" in methods
    plain = tshark_methods(netns_run.run_dir / "plain" / "captured-hop3.pcapng", d / "keys.log")
    assert plain.count("INVITE") == CALLS
    names = pcapng.read_names((d / "captured-hop3.pcapng").read_bytes())
    addresses = netns_run.results["scenarios"]["tls-all"]["addresses"]
    assert names == {ip: host for host, ip in addresses.items()}  # NRB: the hosts' names


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_or_sigterm_mid_run_tears_everything_down(tmp_path, sig, code):
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "ng911", "testbed", "run", "--netns", "--scenario", "plain"),
            *("--no-baseline", "--calls", "1000", "--rate", "5", "--no-captures"),
            *("--topology", str(small_topology(tmp_path)), "--out", str(tmp_path / "run")),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    prefix = f"ng911-{proc.pid}-"
    hosts = len(load_topology(small_topology(tmp_path)).hosts)  # the logger's too
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (tmp_path / "run" / "plain" / "bundles").is_dir():
            time.sleep(0.1)
        while time.monotonic() < deadline:  # the chain is placing calls
            events = tmp_path / "run" / "plain" / "stderr"
            if events.is_dir() and len(list(events.iterdir())) == hosts:
                break
            time.sleep(0.1)
        time.sleep(1.5)
        assert list_ours(prefix), "the run made no namespaces"
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=25)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert proc.returncode == code, err[-2000:]
    if sig == signal.SIGINT:
        assert "interrupted" in err
    assert list_ours(prefix) == []
    ours = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True)
    assert ours.stdout.split() == [], "element processes outlived the testbed"


def test_our_prefix_names_this_process():
    assert f"ng911-{os.getpid()}-" == PREFIX
