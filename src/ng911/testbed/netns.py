"""One network namespace per host (`ng911 testbed run --netns`): every hop on a real interface.

Why: with `--processes` on loopback the hops still share one kernel interface, `lo`. Here each
host of the topology gets its own namespace with one interface, `eth0`, at an address the
testbed assigns from 10.91.0.0/24, cabled by a veth pair into one bridge. The bridge lives in
a namespace of its own (the *hub*), so nothing is added to the machine's own network: no
interface, no route, no address outside the namespaces this module made. Elements start with
`ip netns exec NS python -m ng911 run ...`; the hub sees every packet, so a real capture per
hop (dumpcap on the bridge, filtered by the hop's host pairs) is written beside the
synthesised one when dumpcap or tcpdump is installed.

Names: `ng911-<pid>-<n>-hub` and `ng911-<pid>-<n>-h<i>`, so parallel runs (other pids) and
the chains of one interleaved run (n) never collide. Teardown deletes every namespace this
module created (a namespace's deletion removes its veth ends; the bridge goes with the hub),
first killing any process still inside one (only the testbed's children can be there). It
runs from `close()`, from `atexit`, and on SIGTERM (`processes.sigterm_exits`), so Ctrl-C,
`kill` or a crash leaves nothing behind.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from ng911.observe.hops import HOP_ROLES, HOPS
from ng911.testbed.errors import TestbedError
from ng911.testbed.topology import Host, Topology

SUBNET = "10.91.0"  # /24; host i gets SUBNET.(i+1)
BRIDGE = "br-ng911"
PREFIX = f"ng911-{os.getpid()}-"
CMD_TIMEOUT = 10.0
_counter = itertools.count(1)
_LABS: set[NetnsLab] = set()


class NetnsUnavailable(TestbedError):
    """Namespaces cannot be made here (not root, no `ip`, the kernel refused)."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        res = subprocess.run(
            ["ip", *args], capture_output=True, text=True, timeout=CMD_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetnsUnavailable(f"ip {' '.join(args)}: {exc}") from None
    if check and res.returncode != 0:
        raise NetnsUnavailable(f"ip {' '.join(args)}: {res.stderr.strip() or res.returncode}")
    return res


def unavailable_reason() -> str | None:
    """Why namespaces cannot be used here, or None when a probe namespace could be made."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "network namespaces need root (ip netns add)"
    if shutil.which("ip") is None:
        return "no `ip` command (iproute2)"
    probe = f"{PREFIX}probe"
    try:
        _ip("netns", "add", probe)
    except NetnsUnavailable as exc:
        _ip_quiet("netns", "del", probe)  # in case it got as far as the name
        return f"`ip netns add` failed: {exc}"
    _ip("netns", "del", probe, check=False)
    return None


def list_ours(prefix: str = PREFIX) -> list[str]:
    """The namespaces whose name starts with `prefix` (this process's, by default)."""
    res = _ip("netns", "list", check=False)
    return [
        line.split()[0]
        for line in res.stdout.splitlines()
        if line.split()[:1] and line.startswith(prefix)
    ]


def _neighbours(topo: Topology, hop: str) -> list[tuple[Host, Host]]:
    up_role, down_role = HOP_ROLES[hop]
    if hop == "hop4":
        return [(topo.host(t.psap or ""), t) for t in topo.by_role("calltaker")]
    return [(u, d) for u in topo.by_role(up_role) for d in topo.by_role(down_role)]


class NetnsLab:
    """The namespaces, cables and addresses of one chain."""

    def __init__(self, topo: Topology) -> None:
        self.topo = topo
        self.prefix = f"{PREFIX}{next(_counter)}-"
        self.hub = f"{self.prefix}hub"
        self.ns: dict[str, str] = {}
        self.addresses: dict[str, str] = {}
        hosts = list(topo.hosts)
        if len(hosts) > 250:
            raise TestbedError(f"--netns: {len(hosts)} hosts do not fit in {SUBNET}.0/24")
        for i, h in enumerate(hosts):
            self.ns[h.name] = f"{self.prefix}h{i + 1}"
            self.addresses[h.name] = f"{SUBNET}.{i + 1}"
        self.created: list[str] = []
        self.captures: list[tuple[str, subprocess.Popen[bytes], Path]] = []
        self.capture_files: dict[str, Path] = {}
        self.capture_note: str | None = None

    def setup(self) -> None:
        """Make the hub with its bridge, then each host's namespace, veth and address."""
        _LABS.add(self)
        try:
            self._add(self.hub)
            _ip("-n", self.hub, "link", "set", "lo", "up")
            _ip("-n", self.hub, "link", "add", BRIDGE, "type", "bridge")
            _ip("-n", self.hub, "link", "set", BRIDGE, "up")
            for i, h in enumerate(self.topo.hosts, 1):
                ns, port = self.ns[h.name], f"v{i}"
                self._add(ns)
                _ip(
                    "-n",
                    self.hub,
                    "link",
                    "add",
                    port,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    "eth0",
                    "netns",
                    ns,
                )
                _ip("-n", self.hub, "link", "set", port, "master", BRIDGE, "up")
                _ip("-n", ns, "addr", "add", f"{self.addresses[h.name]}/24", "dev", "eth0")
                _ip("-n", ns, "link", "set", "eth0", "up")
                _ip("-n", ns, "link", "set", "lo", "up")
        except BaseException:
            self.teardown()
            raise

    def _add(self, ns: str) -> None:
        _ip("netns", "add", ns)
        self.created.append(ns)

    def exec_prefix(self, host: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns[host]]

    # -- captures -----------------------------------------------------------------------

    def hop_filter(self, hop: str) -> str:
        """A BPF filter for the packets between the hosts `hop` joins."""
        pairs = {
            tuple(sorted((self.addresses[a.name], self.addresses[b.name])))
            for a, b in _neighbours(self.topo, hop)
        }
        return " or ".join(f"(host {a} and host {b})" for a, b in sorted(pairs))

    async def start_captures(self, work: Path) -> None:
        """A real capture per hop on the hub's bridge (`captured-hopN.pcap`, classic pcap;
        `testbed.run` rewrites it as pcapng with names and keys), when a capture tool is
        installed; waits (bounded) until each one has written its file header."""
        import asyncio

        tool = shutil.which("dumpcap") or shutil.which("tcpdump")
        if tool is None:
            self.capture_note = "no dumpcap/tcpdump: only the synthesised captures"
            return
        work.mkdir(parents=True, exist_ok=True)
        for hop in HOPS:
            out = work / f"captured-{hop}.pcap"
            out.unlink(missing_ok=True)
            flt = self.hop_filter(hop)
            if Path(tool).name == "dumpcap":
                argv = [tool, "-q", "-P", "-i", BRIDGE, "-f", flt, "-w", str(out)]
            else:
                argv = [tool, "-q", "-U", "-i", BRIDGE, "-w", str(out), flt]
            proc = subprocess.Popen(
                ["ip", "netns", "exec", self.hub, *argv],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
            self.captures.append((hop, proc, out))
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            if all(o.exists() and o.stat().st_size >= 24 for _, _, o in self.captures):
                break
            if any(p.poll() is not None for _, p, _ in self.captures):
                break
            await asyncio.sleep(0.05)
        for hop, p, o in self.captures:
            if p.poll() is not None or not o.exists():
                err = p.stderr.read().decode(errors="replace").strip() if p.stderr else ""
                self.capture_note = f"{hop}: capture did not start: {err[-200:]}"

    def stop_captures(self) -> None:
        for hop, p, out in self.captures:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(signal.SIGINT)  # dumpcap/tcpdump flush and close on SIGINT
                try:
                    p.wait(timeout=5.0)
                except subprocess.TimeoutExpired:
                    p.kill()
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        p.wait(timeout=2.0)
            if p.stderr is not None:
                p.stderr.close()
            if out.exists() and out.stat().st_size >= 24:
                self.capture_files[hop] = out
        self.captures = []

    # -- teardown -----------------------------------------------------------------------

    def teardown(self) -> None:
        """Delete every namespace this lab made (idempotent; never raises)."""
        with contextlib.suppress(Exception):
            self.stop_captures()
        for ns in reversed(self.created):
            res = _ip_quiet("netns", "pids", ns)
            for pid in res.split():
                with contextlib.suppress(ProcessLookupError, ValueError, PermissionError):
                    os.kill(int(pid), signal.SIGKILL)
            _ip_quiet("netns", "del", ns)
        self.created = []
        _LABS.discard(self)


def _ip_quiet(*args: str) -> str:
    try:
        return _ip(*args, check=False).stdout
    except NetnsUnavailable:
        return ""


def _teardown_all() -> None:
    for lab in list(_LABS):
        lab.teardown()


atexit.register(_teardown_all)
