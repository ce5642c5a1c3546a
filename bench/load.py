"""Load: how many calls per second ng911's VSP proxy relays, as a ratio of Kamailio's.

The rig of ANCHORS.md: a caller → the proxy under test → a callee, on loopback, on this
machine's cores (the load generators share them with the proxy). The proxy is a stateful,
record-routing proxy in both cases:

- Kamailio 5.6 (`tests/interop/kamailio.py`: tm + rr, `record_route(); t_relay()` to a
  fixed next hop, `children` workers, 1 GB of shared memory);
- ng911's `VspProxy` (`ng911.elements.vsp`), started through its Python API in a separate
  process (`bench/load.py --serve ...`), one asyncio event loop, `gc.freeze()` after start-up
  as `ng911 run` does, logging off (as Kamailio's `debug=1`; `ng911 run vsp` writes a JSON
  line per event). One process, one core; the `ng911 (2 workers)` row runs it as
  `ng911 run vsp --workers 2` does (`ng911.node.workers`): two processes sharing the UDP
  port (SO_REUSEPORT), each with its own port for its Via, CPU summed over both.

UDP and TCP: SIPp drives it (`tests/interop/sipp/uac_plain.xml` → proxy → `uas.xml`, which
copies Record-Route so ACK and BYE go through the proxy too; TCP: one connection each side,
`-t t1`). TLS: SIPp here has no TLS, so a small asyncio caller/callee pair in this file
(`--tls-uac`/`--tls-uas`, two processes, one mutual-TLS connection each side, ECDSA P-256,
TLS 1.3) drives both
ng911 and Kamailio (tls module). The `emergency` row sends the 1.5 KB 911 INVITE with
PIDF-LO (`uac_emergency.xml`) through the VSP's emergency path (recognise, rewrite,
Resource-Priority, Route to the "ESRP", which is the SIPp callee here); the `esrp` row sends
it to ng911's ESRP, which asks a LoST server (its own process; every borough maps to the
SIPp callee) and routes to the answer. Every ng911 row runs as `ng911 run` does, calling
`gc.freeze()` once a second (survivors leave the collector's sight but are still freed by
reference counting; safe because a call leaves no cyclic garbage, which a test counts); the
`gc-off` row is the VSP with Python's cyclic garbage collector disabled and `gc-once` the VSP
frozen only once after start-up: experiments showing what the collector's pauses cost.

Each rate step runs ~`--seconds`; the rate ladder stops at the first step that fails.
A step passes when every call succeeded (SIPp: no failed call, all calls done; UDP
retransmissions are reported, not failed) and the setup delay — RFC 6076 Session Request
Delay, INVITE → 180 — has p99 under 50 ms. The delay comes from a probe: a second SIPp
caller at 20 cps with `-trace_msg`, whose per-message timestamps are microsecond-exact
(SIPp's own response-time counters tick in 4 ms steps here, ANCHORS.md); the TLS generator
times its own calls (`time.perf_counter`). CPU per call is the proxy's CPU time (every
thread of every process, `/proc/PID/task/*/schedstat`) over the step, divided by its calls.

    .venv/bin/python bench/load.py            # ~3.5 min (3 s steps; --seconds 4: ~4 min)
    .venv/bin/python bench/load.py --quick    # < 60 s
    .venv/bin/python bench/load.py --census   # GC-tracked objects a call holds, cyclic garbage

Prints a table, writes bench/results/load.json and (cProfile of the ng911 proxy under load,
top 15 by cumulative time) bench/results/load-profile.txt.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import csv
import gc
import io
import json
import os
import platform
import pstats
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "interop"))

from kamailio import (  # noqa: E402  (tests/interop is not a package)
    Kamailio,
    children_of,
    free_port,
    process_cpu_seconds,
    stateful_proxy_cfg,
    tls_cfg,
    write_ca_bundle,
)

from rig import rss_mb  # noqa: E402  (bench/ is the script directory)

SIPP = shutil.which("sipp")
SCENARIOS = REPO / "tests" / "interop" / "sipp"
RESULTS = REPO / "bench" / "results"
PROBE_RATE = 20  # cps of the latency probe (SIPp with -trace_msg)
P99_LIMIT = 0.050  # s: a step fails when the INVITE→180 p99 is above this
HOLD_MS = 100  # call hold time (ACK → BYE)
LOCAL = "127.0.0.1"


# --------------------------------------------------------------------------- results


@dataclass
class Step:
    proxy: str
    transport: str
    rate: int
    calls: int = 0
    ok: int = 0
    failed: int = 0
    retransmissions: int = 0
    achieved_cps: float = 0.0
    cpu_s: float = 0.0
    cpu_us_per_call: float = 0.0
    p50_ms: float | None = None
    p99_ms: float | None = None
    samples: int = 0
    passed: bool = False
    why: str = ""
    lost_cpu_us_per_call: float | None = None  # the ESRP's LoST server (its own process)


@dataclass
class Ladder:
    proxy: str
    transport: str
    steps: list[Step] = field(default_factory=list)
    rss_mb_at_end: float | None = None  # ng911: the proxy's resident memory after the ladder
    uac: str = "u1"  # SIPp caller's UDP sockets: u1 (one for all calls) | un (one per call)

    @property
    def best(self) -> Step | None:
        good = [s for s in self.steps if s.passed]
        return max(good, key=lambda s: s.rate) if good else None


def percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    k = min(len(v) - 1, max(0, round(q / 100 * (len(v) - 1))))
    return v[k]


# --------------------------------------------------------------------------- SIPp


def sipp_transport(transport: str) -> str:
    return {"udp": "u1", "tcp": "t1"}[transport]


def uas_key(port: int, transport: str) -> str:
    return f"{LOCAL}:{port}" + (";transport=tcp" if transport == "tcp" else "")


class SippUas:
    """The callee: `uas.xml` on `port`, for the whole ladder of one transport."""

    def __init__(self, transport: str, workdir: Path) -> None:
        self.transport = transport
        self.port = free_port()
        self.proc = subprocess.Popen(
            [
                str(SIPP), "-sf", str(SCENARIOS / "uas.xml"), "-i", LOCAL, "-p", str(self.port),
                "-t", sipp_transport(transport), "-nostdin", "-max_socket", "4096",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=workdir,
        )  # fmt: skip
        time.sleep(0.3)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def sipp_uac(
    *,
    proxy_port: int,
    transport: str,
    uas: str,
    rate: int,
    calls: int,
    workdir: Path,
    stat_file: Path,
    scenario: str = "uac_plain.xml",
    trace: Path | None = None,
    timeout: float = 60,
    sockets: str = "u1",
) -> subprocess.Popen[bytes]:
    mode = "un" if transport == "udp" and sockets == "un" else sipp_transport(transport)
    cmd = [
        str(SIPP), f"{LOCAL}:{proxy_port}", "-sf", str(SCENARIOS / scenario), "-i", LOCAL,
        "-t", mode, "-key", "uas", uas, "-key", "dial", "urn:service:sos",
        "-s", "svc", "-r", str(rate), "-m", str(calls), "-l", str(max(100, rate * 3)),
        "-nostdin", "-recv_timeout", "8000", "-timeout", f"{int(timeout)}s",
        "-max_socket", "4096", "-trace_stat", "-stf", str(stat_file), "-fd", "200ms",
        "-p", str(free_port()),  # never SIPp's default 5060: main and probe run side by side
    ]  # fmt: skip
    if trace is not None:
        cmd += ["-trace_msg", "-message_file", str(trace)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=workdir)


STAT_PERIOD = 0.2  # s between SIPp's -trace_stat rows (-fd 200ms)


def read_stat(path: Path) -> list[dict[str, str]]:
    """The rows of SIPp's `-trace_stat` CSV, one per STAT_PERIOD (`(C)` = cumulative)."""
    try:
        rows = list(csv.reader(path.read_text(errors="replace").splitlines(), delimiter=";"))
    except OSError:
        return []
    return [dict(zip(rows[0], r, strict=False)) for r in rows[1:]] if len(rows) > 1 else []


def _n(d: dict[str, str], k: str) -> int:
    try:
        return int(float(d.get(k, "0") or 0))
    except ValueError:
        return 0


def completion_rate(rows: Sequence[dict[str, str]], calls: int) -> float:
    """Calls per second the rig completed: all calls over the time until the last one ended
    (minus the hold time). Below the offered rate, calls pile up: the proxy falls behind."""
    for i, r in enumerate(rows):
        if _n(r, "SuccessfulCall(C)") + _n(r, "FailedCall(C)") >= calls:
            return calls / max(STAT_PERIOD, i * STAT_PERIOD - HOLD_MS / 1000)
    return 0.0


_SEP = re.compile(r"^-{20,} (\d{4}-\d\d-\d\d) (\d\d:\d\d:\d\d\.\d+)", re.M)


def setup_delays(trace: Path) -> list[float]:
    """INVITE sent → 180 received, per call, from SIPp's `-trace_msg` log (seconds)."""
    try:
        text = trace.read_text(errors="replace")
    except OSError:
        return []
    sent: dict[str, float] = {}
    delays: list[float] = []
    marks = list(_SEP.finditer(text))
    for i, m in enumerate(marks):
        block = text[m.end() : marks[i + 1].start() if i + 1 < len(marks) else len(text)]
        hh, mm, ss = m.group(2).split(":")
        t = int(hh) * 3600 + int(mm) * 60 + float(ss)
        lines = block.strip("\r\n").splitlines()
        if len(lines) < 3:
            continue
        first = next((ln for ln in lines[1:] if ln.strip()), "")
        cid = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("Call-ID:")), "")
        if "message sent" in lines[0] and first.startswith("INVITE "):
            sent.setdefault(cid, t)
        elif "message received" in lines[0] and first.startswith("SIP/2.0 180") and cid in sent:
            delays.append(t - sent.pop(cid))
    return delays


# --------------------------------------------------------------------------- targets


class Target:
    """A proxy under test: started once per transport, CPU read around each step."""

    name = "target"
    # the SIPp caller over UDP: "u1" one socket for every call (a trunk from one peer);
    # "un" one socket per call (many user agents), which the kernel spreads over the
    # workers of a SO_REUSEPORT proxy (one socket always reaches the same worker)
    uac_sockets = "u1"

    @property
    def label(self) -> str:  # the row of the table
        return self.name

    def start(self, transport: str, uas_port: int) -> int:  # returns the port to call
        raise NotImplementedError

    def cpu_seconds(self) -> float:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError


class KamailioTarget(Target):
    name = "kamailio"

    def __init__(self, children: int, pki_dir: Path | None = None, uac: str = "u1") -> None:
        self.uac_sockets = uac
        self.children = children
        self.k: Kamailio | None = None
        self.pki_dir = pki_dir

    def start(self, transport: str, uas_port: int) -> int:
        port = free_port()
        if transport == "tls":
            assert self.pki_dir is not None
            cfg = stateful_proxy_cfg(
                port=port,
                next_hop=f"sip:{LOCAL}:{uas_port};transport=tls",
                children=self.children,
                tcp=True,
            )
            tlscfg = self.pki_dir / "kamailio-tls.cfg"
            tlscfg.write_text(
                tls_cfg(
                    cert=self.pki_dir / "proxy.chain.pem",
                    key=self.pki_dir / "proxy.key.pem",
                    ca=self.pki_dir / "ca-bundle.pem",
                )
            )
            cfg = cfg.replace(
                "enable_tls=no", "enable_tls=yes"
            ).replace(
                f"listen=tcp:{LOCAL}:{port}", f"listen=tls:{LOCAL}:{port}"
            ).replace(
                'loadmodule "tm.so"', f'loadmodule "tls.so"\nmodparam("tls", "config", "{tlscfg}")'
                '\nloadmodule "tm.so"',
            )  # fmt: skip
            self.k = Kamailio(cfg, port, "tls")
        else:
            next_hop = f"sip:{LOCAL}:{uas_port}" + (";transport=tcp" if transport == "tcp" else "")
            cfg = stateful_proxy_cfg(port=port, next_hop=next_hop, children=self.children)
            self.k = Kamailio(cfg, port, "udp")
        self.k.start()
        return port

    def cpu_seconds(self) -> float:
        return self.k.cpu_seconds() if self.k is not None else 0.0

    def stop(self) -> None:
        if self.k is not None:
            self.k.stop()
            self.k = None


class Ng911Target(Target):
    """ng911's VspProxy in its own process (`bench/load.py --serve`)."""

    name = "ng911"

    def __init__(
        self,
        pki_dir: Path | None = None,
        profile: Path | None = None,
        gc_mode: str = "freeze",
        element: str = "vsp",
        workers: int = 1,
        uac: str = "u1",
    ) -> None:
        self.uac_sockets = uac
        self.proc: subprocess.Popen[str] | None = None
        self.lost: subprocess.Popen[str] | None = None
        self.pki_dir = pki_dir
        self.profile = profile
        self.gc_mode = gc_mode  # "freeze" (as `ng911 run`) | "once" | "off" (see `serve`)
        self.element = element
        self.workers = workers
        self.rss_mb: float | None = None
        self.lost_cpu = 0.0

    def start(self, transport: str, uas_port: int) -> int:
        port = free_port()
        cmd = [
            sys.executable, str(Path(__file__).resolve()), "--serve", "--port", str(port),
            "--transport", transport, "--uas-port", str(uas_port),
        ]  # fmt: skip
        if transport == "tls":
            assert self.pki_dir is not None
            cmd += ["--pki", str(self.pki_dir)]
        if self.profile is not None:
            cmd += ["--profile-out", str(self.profile)]
        if self.workers > 1:
            cmd += ["--workers", str(self.workers)]
        if self.element == "esrp":
            lport = free_port()
            self.lost = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "--serve-lost",
                 "--port", str(lport), "--uas-port", str(uas_port)],
                stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            assert self.lost.stdout is not None
            ready = self.lost.stdout.readline().split()
            if not ready or ready[0] != "READY":
                self.stop()
                raise RuntimeError("LoST server did not start")
            cmd += ["--element", "esrp", "--lost-url", ready[1]]
        env = {**os.environ, "NG911_BENCH_GC": self.gc_mode}
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("READY"):
            self.stop()
            raise RuntimeError(f"ng911 proxy did not start: {line!r}")
        return port

    @property
    def label(self) -> str:
        return f"ng911 ({self.workers} workers)" if self.workers > 1 else "ng911"

    def pids(self) -> list[int]:
        """The proxy process and, with workers, its worker processes."""
        if self.proc is None:
            return []
        return [self.proc.pid, *(children_of(self.proc.pid) if self.workers > 1 else [])]

    def cpu_seconds(self) -> float:
        return sum(process_cpu_seconds(p) for p in self.pids())

    def lost_cpu_seconds(self) -> float:
        return process_cpu_seconds(self.lost.pid) if self.lost is not None else 0.0

    def stop(self) -> None:
        if self.lost is not None:
            if self.lost.poll() is None:
                self.lost.send_signal(signal.SIGTERM)
                try:
                    self.lost.wait(10)
                except subprocess.TimeoutExpired:
                    self.lost.kill()
                    self.lost.wait(5)
            self.lost = None
        if self.proc is not None and self.proc.poll() is None:
            rss = [rss_mb(p) for p in self.pids()]
            self.rss_mb = round(sum(r for r in rss if r is not None), 1)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


# --------------------------------------------------------------------------- one step


def run_sipp_step(
    target: Target,
    proxy_port: int,
    uas: SippUas,
    transport: str,
    rate: int,
    seconds: float,
    workdir: Path,
    scenario: str = "uac_plain.xml",
) -> Step:
    label = target.name
    if isinstance(target, Ng911Target):
        label = target.label
        label += "-esrp" if target.element == "esrp" else ""
        label += f"-gc-{target.gc_mode}" if target.gc_mode != "freeze" else ""
    if label == "ng911" and "emergency" in scenario:
        label += "-emergency"
    step = Step(label, transport, rate)
    calls = max(1, int(rate * seconds))
    probe_calls = max(1, int(PROBE_RATE * seconds))
    tag = f"{target.name}-{transport}-{rate}-{time.monotonic_ns()}"
    stat, pstat = workdir / f"{tag}.csv", workdir / f"{tag}-probe.csv"
    trace = workdir / f"{tag}-probe.log"
    cpu0 = target.cpu_seconds()
    lost0 = target.lost_cpu_seconds() if isinstance(target, Ng911Target) else 0.0
    key = uas_key(uas.port, transport)
    main = sipp_uac(
        proxy_port=proxy_port, transport=transport, uas=key, rate=rate, calls=calls,
        workdir=workdir, stat_file=stat, scenario=scenario, timeout=seconds + 30,
        sockets=target.uac_sockets,
    )  # fmt: skip
    probe = sipp_uac(
        proxy_port=proxy_port, transport=transport, uas=key, rate=PROBE_RATE, calls=probe_calls,
        workdir=workdir, stat_file=pstat, scenario=scenario, trace=trace, timeout=seconds + 30,
        sockets=target.uac_sockets,
    )  # fmt: skip
    for p in (main, probe):
        try:
            p.wait(seconds + 40)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    step.cpu_s = target.cpu_seconds() - cpu0
    lost_cpu = (target.lost_cpu_seconds() - lost0) if isinstance(target, Ng911Target) else 0.0
    rows, prows = read_stat(stat), read_stat(pstat)
    s, ps = (rows[-1] if rows else {}), (prows[-1] if prows else {})
    step.calls = calls + probe_calls
    step.ok = _n(s, "SuccessfulCall(C)") + _n(ps, "SuccessfulCall(C)")
    step.failed = _n(s, "FailedCall(C)") + _n(ps, "FailedCall(C)")
    step.retransmissions = _n(s, "Retransmissions(C)") + _n(ps, "Retransmissions(C)")
    step.achieved_cps = round(completion_rate(rows, calls), 1)
    delays = setup_delays(trace)
    _finish(step, delays)
    if lost_cpu:
        step.lost_cpu_us_per_call = round(lost_cpu / max(1, step.ok) * 1e6, 1)
    if step.passed and step.achieved_cps < 0.85 * rate:
        step.passed = False
        step.why = f"completed only {step.achieved_cps:.0f} cps"
    for f in (stat, pstat, trace):
        with contextlib.suppress(OSError):
            f.unlink()
    return step


def _finish(step: Step, delays: list[float]) -> None:
    step.samples = len(delays)
    p50, p99 = percentile(delays, 50), percentile(delays, 99)
    step.p50_ms = None if p50 is None else round(p50 * 1000, 3)
    step.p99_ms = None if p99 is None else round(p99 * 1000, 3)
    done = step.ok + step.failed
    step.cpu_us_per_call = round(step.cpu_s / max(1, step.ok) * 1e6, 1)
    if step.failed:
        step.why = f"{step.failed} failed calls"
    elif done < step.calls:
        step.why = f"{step.calls - done} calls unfinished"
    elif p99 is None:
        step.why = "no setup delay samples"
    elif p99 > P99_LIMIT:
        step.why = f"p99 {p99 * 1000:.1f} ms > {P99_LIMIT * 1000:.0f} ms"
    else:
        step.passed = True


def ladder(
    target: Target,
    transport: str,
    rates: Sequence[int],
    run_step: Callable[[int], Step],
    log: Callable[[str], None],
    bisect: bool = True,
) -> Ladder:
    """Step the rate up until a step fails; then one step halfway to find the edge."""
    uac = target.uac_sockets if transport == "udp" else "one connection"
    lad = Ladder(target.label, transport, uac=uac)
    last_good = 0
    for rate in rates:
        step = run_step(rate)
        lad.steps.append(step)
        log(_fmt_step(step))
        if not step.passed:
            mid = (last_good + rate) // 2 // 50 * 50
            if bisect and last_good and mid > last_good and rate - last_good >= 200:
                step2 = run_step(mid)
                lad.steps.append(step2)
                log(_fmt_step(step2))
            break
        last_good = rate
    return lad


def _fmt_step(s: Step) -> str:
    p99 = f"{s.p99_ms:.2f}" if s.p99_ms is not None else "-"
    p50 = f"{s.p50_ms:.2f}" if s.p50_ms is not None else "-"
    verdict = "ok" if s.passed else f"FAIL ({s.why})"
    return (
        f"  {s.proxy:<18} {s.transport:<4} {s.rate:>5} cps: {s.ok:>6}/{s.calls:<6} ok, "
        f"retrans {s.retransmissions:>4}, setup p50 {p50:>6} ms p99 {p99:>7} ms, "
        f"cpu {s.cpu_us_per_call:>7.1f} us/call  {verdict}"
    )


# --------------------------------------------------------------------------- TLS generator
#
# SIPp here has no TLS: a minimal caller and callee over one mutual-TLS connection each,
# asyncio streams and ng911's own stream parser. The callee answers 180 + 200 at once
# (copying Record-Route, RFC 3261 §12.1.1) and 200 to BYE; the caller sends ACK and BYE
# along the reversed Record-Route set and times INVITE → 180 with perf_counter.


def _pki_paths(pki_dir: Path) -> dict[str, str]:
    data: dict[str, str] = json.loads((pki_dir / "pki.json").read_text())
    return data


def make_pki(pki_dir: Path) -> None:
    """One test CA, certificates for the proxy (both ng911 and Kamailio), caller, callee."""
    from ng911.pki.testpki import ElementSpec, build_test_pki

    specs = [
        ElementSpec(n, "bench", (f"{n}.bench.example",), (f"{n}.bench.example",))
        for n in ("proxy", "uac", "uas")
    ]
    pki = build_test_pki(pki_dir, cas=("bench",), elements=specs)
    ca = pki.cas["bench"].cert_path
    out: dict[str, str] = {"ca": str(ca)}
    for n in ("proxy", "uac", "uas"):
        c = pki.cert(n)
        out[f"{n}_chain"], out[f"{n}_key"] = str(c.chain_path), str(c.key_path)
    shutil.copy(out["proxy_chain"], pki_dir / "proxy.chain.pem")
    shutil.copy(out["proxy_key"], pki_dir / "proxy.key.pem")
    write_ca_bundle([ca], pki_dir / "ca-bundle.pem")
    (pki_dir / "pki.json").write_text(json.dumps(out))


def _ctx(pki_dir: Path, name: str, server: bool) -> ssl.SSLContext:
    from ng911.pki.tls import client_context, server_context

    p = _pki_paths(pki_dir)
    chain, key, ca = Path(p[f"{name}_chain"]), Path(p[f"{name}_key"]), Path(p["ca"])
    if server:
        return server_context(chain, key, [ca], require_client_cert=True)
    return client_context([ca], cert=chain, key=key)


def _resp(status: int, reason: str, req: Any, *, to_tag: str, contact: str, sdp: bool) -> bytes:
    from ng911.sip.message import make_response

    r = make_response(req, status, reason, to_tag=to_tag)
    if contact:
        r.headers.add("Contact", contact)
    if sdp:
        r.headers.add("Content-Type", "application/sdp")
        r.body = (
            b"v=0\r\no=uas 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            b"m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
        )
    return r.to_bytes()


async def tls_uas(port: int, pki_dir: Path) -> None:
    from ng911.sip.message import Request
    from ng911.sip.parse import StreamParser

    ctx = _ctx(pki_dir, "uas", server=True)
    contact = f"<sip:uas@{LOCAL}:{port};transport=tls>"

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        parser = StreamParser()
        n = 0
        with contextlib.suppress(Exception):
            while data := await reader.read(65536):
                for msg in parser.feed(data):
                    if not isinstance(msg, Request):
                        continue
                    if msg.method == "INVITE":
                        n += 1
                        tag = f"uas{n}"
                        out = _resp(180, "Ringing", msg, to_tag=tag, contact=contact, sdp=False)
                        out += _resp(200, "OK", msg, to_tag=tag, contact=contact, sdp=True)
                        writer.write(out)
                    elif msg.method == "BYE":
                        writer.write(_resp(200, "OK", msg, to_tag="", contact="", sdp=False))
        writer.close()

    server = await asyncio.start_server(handle, LOCAL, port, ssl=ctx)
    print("READY", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    server.close()


async def tls_uac(proxy_port: int, uas_port: int, rate: int, seconds: float, pki_dir: Path) -> dict:
    from ng911.sip.message import Response
    from ng911.sip.parse import StreamParser
    from ng911.sip.uri import parse_name_addr_list

    ctx = _ctx(pki_dir, "uac", server=False)
    reader, writer = await asyncio.open_connection(LOCAL, proxy_port, ssl=ctx)
    lport = writer.get_extra_info("sockname")[1]
    calls = max(1, int(rate * seconds))
    state: dict[str, dict[str, Any]] = {}
    delays: list[float] = []
    ok = failed = 0
    done = asyncio.Event()
    byes: set[asyncio.Future[None]] = set()
    ruri = f"sip:svc@{LOCAL}:{uas_port};transport=tls"

    def invite(i: int) -> bytes:
        cid = f"{i}-{os.getpid()}@tlsgen"
        branch = f"z9hG4bK{os.urandom(6).hex()}"
        body = (
            b"v=0\r\no=load 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            b"m=audio 40002 RTP/AVP 0\r\n"
        )
        state[cid] = {"t0": time.perf_counter(), "tag": f"t{i}"}
        return (
            f"INVITE {ruri} SIP/2.0\r\n"
            f"Via: SIP/2.0/TLS {LOCAL}:{lport};branch={branch};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:load@{LOCAL}>;tag=t{i}\r\n"
            f"To: <{ruri}>\r\n"
            f"Call-ID: {cid}\r\n"
            "CSeq: 1 INVITE\r\n"
            f"Contact: <sip:load@{LOCAL}:{lport};transport=tls>\r\n"
            "Content-Type: application/sdp\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body

    def in_dialog(method: str, seq: int, resp: Response) -> bytes:
        routes = [
            str(na) for na in parse_name_addr_list(", ".join(resp.headers.get_all("Record-Route")))
        ]
        routes.reverse()  # RFC 3261 §12.1.2: the UAC's route set is Record-Route reversed
        target = resp.headers.get("Contact") or f"<{ruri}>"
        target = target.split("<", 1)[-1].split(">", 1)[0]
        hdr = "".join(f"Route: {r}\r\n" for r in routes)
        return (
            f"{method} {target} SIP/2.0\r\n"
            f"Via: SIP/2.0/TLS {LOCAL}:{lport};branch=z9hG4bK{os.urandom(6).hex()};rport\r\n"
            f"{hdr}Max-Forwards: 70\r\n"
            f"From: {resp.headers.get('From')}\r\nTo: {resp.headers.get('To')}\r\n"
            f"Call-ID: {resp.call_id}\r\nCSeq: {seq} {method}\r\nContent-Length: 0\r\n\r\n"
        ).encode()

    def settle() -> None:
        if ok + failed >= calls:
            done.set()

    async def bye(resp: Response) -> None:
        await asyncio.sleep(HOLD_MS / 1000)
        writer.write(in_dialog("BYE", 2, resp))

    async def read() -> None:
        nonlocal ok, failed
        parser = StreamParser()
        while data := await reader.read(65536):
            for msg in parser.feed(data):
                if not isinstance(msg, Response):
                    continue
                st = state.get(msg.call_id)
                if st is None:
                    continue
                method = msg.cseq.method
                if method == "INVITE":
                    if msg.status == 180 and "t180" not in st:
                        st["t180"] = time.perf_counter()
                        delays.append(st["t180"] - st["t0"])
                    elif 200 <= msg.status < 300 and "acked" not in st:
                        st["acked"] = True
                        writer.write(in_dialog("ACK", 1, msg))
                        task = asyncio.ensure_future(bye(msg))
                        byes.add(task)
                        task.add_done_callback(byes.discard)
                    elif msg.status >= 300:
                        failed += 1
                        state.pop(msg.call_id, None)
                        settle()
                elif method == "BYE" and msg.status >= 200:
                    if msg.status < 300:
                        ok += 1
                    else:
                        failed += 1
                    state.pop(msg.call_id, None)
                    settle()

    reader_task = asyncio.ensure_future(read())
    t0 = time.perf_counter()
    sent = 0
    while sent < calls:
        due = min(calls, int((time.perf_counter() - t0) * rate) + 1)
        if due > sent:
            writer.write(b"".join(invite(i) for i in range(sent, due)))
            sent = due
        await asyncio.sleep(0.002)
    send_time = time.perf_counter() - t0
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(done.wait(), 10)
    reader_task.cancel()
    writer.close()
    return {
        "calls": calls,
        "ok": ok,
        "failed": failed + len(state),
        "delays": delays,
        "achieved_cps": calls / max(send_time, 1e-3),
    }


class TlsUas:
    def __init__(self, pki_dir: Path) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--tls-uas", "--uas-port",
             str(self.port), "--pki", str(pki_dir)],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.proc.stdout is not None
        if not self.proc.stdout.readline().startswith("READY"):
            raise RuntimeError("TLS callee did not start")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)


def run_tls_step(
    target: Target, proxy_port: int, uas: TlsUas, rate: int, seconds: float, pki_dir: Path
) -> Step:
    step = Step(target.name, "tls", rate)
    cpu0 = target.cpu_seconds()
    out = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--tls-uac", "--port", str(proxy_port),
         "--uas-port", str(uas.port), "--rate", str(rate), "--seconds", str(seconds),
         "--pki", str(pki_dir)],
        capture_output=True, text=True, timeout=seconds + 40,
    )  # fmt: skip
    step.cpu_s = target.cpu_seconds() - cpu0
    try:
        res = json.loads(out.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        step.why = f"generator failed: {out.stderr[-300:]}"
        return step
    step.calls, step.ok, step.failed = res["calls"], res["ok"], res["failed"]
    step.achieved_cps = res["achieved_cps"]
    _finish(step, res["delays"])
    if step.passed and step.achieved_cps < 0.85 * rate:
        step.passed = False
        step.why = f"generator reached only {step.achieved_cps:.0f} cps"
    return step


# --------------------------------------------------------------------------- ng911 proxy process


async def serve_lost(args: argparse.Namespace) -> None:
    """The ESRP's LoST server (ECRF) in its own process: every NYC borough maps to the SIPp
    callee, so whatever the location, the call reaches it."""
    from ng911.lost.embedded import EmbeddedStore
    from ng911.lost.server import make_app
    from ng911.lost.server import serve as lost_serve
    from ng911.lost.store import MappingConfig

    psap = f"sip:{LOCAL}:{args.uas_port}"
    slugs = ("manhattan", "brooklyn", "queens", "bronx", "staten-island")
    store = EmbeddedStore.from_geojson(None, MappingConfig(uris={s: (psap,) for s in slugs}))
    running = await lost_serve(make_app(store), LOCAL, args.port)
    gc.collect()
    gc.freeze()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("READY", running.url, flush=True)
    await stop.wait()
    await running.close()


async def serve(args: argparse.Namespace) -> None:
    """The proxy under test, in this process: VspProxy on one port (UDP+TCP, or TLS), or
    the ESRP (UDP+TCP) asking the LoST server at `--lost-url`."""
    from ng911.elements.config import EsrpConfig, ListenerConfig, OverloadConfig, VspConfig
    from ng911.elements.esrp import Esrp
    from ng911.elements.runtime import SipElement
    from ng911.elements.vsp import VspProxy
    from ng911.lost.client import LostClient

    if args.transport == "tls":
        listeners: tuple[ListenerConfig, ...] = (ListenerConfig("tls", LOCAL, args.port),)
        esrp = f"sips:{LOCAL}:{args.uas_port}"
    else:
        listeners = (
            ListenerConfig("udp", LOCAL, args.port),
            ListenerConfig("tcp", LOCAL, args.port),
        )
        esrp = f"sip:{LOCAL}:{args.uas_port}" + (
            ";transport=tcp" if args.transport == "tcp" else ""
        )
    kw: dict[str, Any] = {}
    if args.transport == "tls":
        kw = {
            "server_tls": _ctx(Path(args.pki), "proxy", server=True),
            "client_tls": _ctx(Path(args.pki), "proxy", server=False),
        }
    if args.workers > 1 and not args.worker_role:
        await _supervise(args)
        return
    # SIPp is one source sending thousands of requests/s, which the per-source limit (a
    # flood defence) would cut; overload control itself stays on, as deployed.
    # bench/resilience.py measures both under a flood.
    overload = OverloadConfig(source_rate=0)
    vsp: SipElement
    if args.element == "esrp":
        ecfg = EsrpConfig(
            name="esrp",
            fqdn="esrp.esinet.example",
            listeners=listeners,
            lost_url=args.lost_url,
            default_route=esrp,
            psap_transport=args.transport,
            overload=overload,
        )
        vsp = Esrp(ecfg, lost=LostClient(args.lost_url, timeout=2.0), log_keep=0, **kw)
    else:
        cfg = VspConfig(
            name="vsp",
            fqdn="proxy.vsp.example",
            listeners=listeners,
            esrp=esrp,
            overload=overload,
        )
        vsp = VspProxy(cfg, log_keep=0, **kw)
    if args.worker_role:
        from ng911.node.workers import decode_role

        vsp.worker = decode_role(args.worker_role)[0]
    from ng911.node.memory import GcFreezer, release_freed_memory

    vsp.release_memory = release_freed_memory  # as `ng911 run` (ng911.node.build) does
    await vsp.start()
    # as `ng911 run` does: long-lived objects out of the cyclic collector's sight
    gc.collect()
    gc.freeze()
    mode = os.environ.get("NG911_BENCH_GC", "freeze")
    if mode == "off":  # experiment: no cyclic collector at all
        gc.disable()
    elif mode == "freeze":  # what `ng911 run` does by default (`--gc-freeze 1`)
        GcFreezer().every(1.0)
    # "once": frozen only after start-up (the experiment showing what the pauses cost)
    prof = cProfile.Profile() if args.profile_out else None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    print("READY", flush=True)
    if prof is not None:
        prof.enable()
    if args.worker_role:  # a worker also stops when its parent is gone
        from ng911.node.workers import parent_gone

        orphaned = asyncio.ensure_future(parent_gone())
        orphaned.add_done_callback(lambda _: stop.set())
    await stop.wait()
    if prof is not None:
        prof.disable()
        prof.dump_stats(args.profile_out)
    await vsp.close()


async def _supervise(args: argparse.Namespace) -> None:
    """`--serve --workers N`: this process starts N `--serve` workers, as `ng911 run vsp
    --workers N` does (same supervisor, same per-worker Via port)."""
    from ng911.elements.addressing import WorkerRole
    from ng911.node.workers import Supervisor, encode_role, free_ports

    own = free_ports("udp", LOCAL, args.workers) if args.transport != "tls" else []
    argv = list(sys.argv[1:])
    at = argv.index("--workers")
    del argv[at : at + 2]
    cmds = [
        [sys.executable, str(Path(__file__).resolve()), *argv, "--worker-role",
         encode_role(WorkerRole(i, args.workers, tuple(own)))]
        for i in range(args.workers)
    ]  # fmt: skip
    sup = Supervisor(f"{args.element}-workers", cmds)
    await sup.run(lambda _: print("READY", flush=True))


def serve_main(args: argparse.Namespace) -> None:
    asyncio.run(serve(args))


# --------------------------------------------------------------------------- the run


async def gc_census(calls: int, workdir: Path) -> dict[str, Any]:
    """What the VSP holds per call, for the cyclic collector: `calls` calls through an
    in-process VspProxy (collector off), then GC-tracked objects still held per call, the
    time of one full collection per held call, and the cyclic garbage the calls left."""
    import collections

    from ng911.elements.config import ListenerConfig, VspConfig
    from ng911.elements.vsp import VspProxy

    uas_port, port = free_port(), free_port()
    vsp = VspProxy(
        VspConfig(
            name="vsp",
            fqdn="proxy.vsp.example",
            listeners=(ListenerConfig("udp", LOCAL, port),),
            esrp=f"sip:{LOCAL}:{uas_port}",
        ),
        log_keep=0,
    )
    await vsp.start()
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        base = len(gc.get_objects())
        uas = await asyncio.create_subprocess_exec(
            str(SIPP), "-sf", str(SCENARIOS / "uas.xml"), "-i", LOCAL, "-p", str(uas_port),
            "-nostdin", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=workdir,
        )  # fmt: skip
        await asyncio.sleep(0.3)
        uac = await asyncio.create_subprocess_exec(
            str(SIPP), f"{LOCAL}:{port}", "-sf", str(SCENARIOS / "uac_plain.xml"), "-i", LOCAL,
            "-key", "uas", f"{LOCAL}:{uas_port}", "-key", "dial", "x", "-s", "svc",
            "-r", "100", "-m", str(calls), "-nostdin", "-p", str(free_port()),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=workdir,
        )  # fmt: skip
        rc = await uac.wait()
        uas.terminate()
        await uas.wait()
        await asyncio.sleep(0.3)
        held = (len(gc.get_objects()) - base) / calls
        t0 = time.perf_counter()
        gc.set_debug(gc.DEBUG_SAVEALL)
        cyclic = gc.collect()
        full_ms = (time.perf_counter() - t0) * 1000
        kinds = collections.Counter(type(o).__qualname__ for o in gc.garbage)
        gc.set_debug(0)
        gc.garbage.clear()
        states = collections.Counter(
            f"{type(c).__name__} {c.request.method} {getattr(c.tx.state, 'value', c.tx.state)}"
            for c in vsp._ctxs.values()
        )
    finally:
        gc.enable()
        gc.unfreeze()
        await vsp.close()
    return {
        "calls": calls,
        "sipp_exit": rc,
        "gc_tracked_objects_held_per_call": round(held, 1),
        "full_collection_us_per_held_call": round(full_ms * 1000 / calls, 1),
        "cyclic_garbage_objects": cyclic,
        "cyclic_garbage_kinds": dict(kinds.most_common(10)),
        "transactions_held": dict(states),
    }


def profile_run(rate: int, seconds: float, workdir: Path) -> str:
    """cProfile of the ng911 proxy relaying `rate` cps over UDP for `seconds`."""
    out = workdir / "vsp.prof"
    target = Ng911Target(profile=out)
    uas = SippUas("udp", workdir)
    try:
        port = target.start("udp", uas.port)
        step = run_sipp_step(target, port, uas, "udp", rate, seconds, workdir)
    finally:
        target.stop()
        uas.stop()
    head = (
        f"cProfile of ng911's VspProxy (one process) relaying {rate} cps over UDP "
        f"for {seconds:.0f} s (SIPp uac_plain -> VspProxy -> SIPp uas): {step.ok} calls ok, "
        f"{step.failed} failed; the profiler's overhead inflates every figure.\n\n"
    )
    parts = [head]
    for title, key, restrict in (
        ("Top 15 ng911 functions by cumulative time (asyncio's loop plumbing left out)",
         "cumulative", "src/ng911/"),
        ("Top 15 functions by own time (tottime)", "tottime", ""),
    ):  # fmt: skip
        buf = io.StringIO()
        st = pstats.Stats(str(out), stream=buf)
        st.sort_stats(key)
        if restrict:
            st.print_stats(restrict, 15)
        else:
            st.print_stats(15)
        text = buf.getvalue().replace(str(REPO) + "/", "")
        text = re.sub(r"/\S*/lib/python3[.0-9]*/", "", text)
        table = text[text.find("   ncalls") :] if "   ncalls" in text else text
        parts.append(f"{title}:\n{table.rstrip()}\n\n")
    return "".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    ap.add_argument("--quick", action="store_true", help="shorter steps, fewer rates (< 60 s)")
    ap.add_argument("--seconds", type=float, help="length of one rate step (default 3; quick 2)")
    ap.add_argument("--children", type=int, default=2, help="Kamailio worker processes")
    ap.add_argument("--transports", default="udp,tcp,tls", help="comma list of udp,tcp,tls")
    ap.add_argument("--proxies", default="ng911,kamailio", help="comma list of ng911,kamailio")
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--census", action="store_true", help="only the GC census (what a call holds)")
    ap.add_argument("--out", type=Path, default=RESULTS / "load.json")
    # internal modes (the subprocesses of a run)
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--serve-lost", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--element", default="vsp", help=argparse.SUPPRESS)
    ap.add_argument("--lost-url", help=argparse.SUPPRESS)
    ap.add_argument("--tls-uas", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--tls-uac", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--uas-port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--transport", default="udp", help=argparse.SUPPRESS)
    ap.add_argument("--pki", help=argparse.SUPPRESS)
    ap.add_argument("--rate", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--profile-out", help=argparse.SUPPRESS)
    ap.add_argument("--workers", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--worker-role", help=argparse.SUPPRESS)
    ap.add_argument(
        "--ng911-workers",
        default="1,2",
        help="comma list of ng911 worker-process counts for the UDP rows (default 1,2)",
    )
    args = ap.parse_args(argv)

    if args.serve:
        serve_main(args)
        return 0
    if args.serve_lost:
        asyncio.run(serve_lost(args))
        return 0
    if args.census:
        with tempfile.TemporaryDirectory(prefix="ng911-census-") as tmp:
            print(json.dumps(asyncio.run(gc_census(200, Path(tmp))), indent=2))
        return 0
    if args.tls_uas:
        asyncio.run(tls_uas(args.uas_port, Path(args.pki)))
        return 0
    if args.tls_uac:
        res = asyncio.run(
            tls_uac(args.port, args.uas_port, args.rate, args.seconds, Path(args.pki))
        )
        print(json.dumps(res))
        return 0
    return run_all(args)


def run_ladder(
    target: Target,
    transport: str,
    rates: Sequence[int],
    seconds: float,
    workdir: Path,
    pki_dir: Path,
    log: Callable[[str], None],
    scenario: str = "uac_plain.xml",
    bisect: bool = True,
) -> Ladder:
    """Start the callee and the proxy, step the rate up, always tear both down."""
    if transport == "tls":
        tuas = TlsUas(pki_dir)
        try:
            port = target.start("tls", tuas.port)
            lad = ladder(
                target, transport, rates,
                lambda r: run_tls_step(target, port, tuas, r, seconds, pki_dir), log, bisect,
            )  # fmt: skip
        finally:
            target.stop()
            tuas.stop()
        if isinstance(target, Ng911Target):
            lad.rss_mb_at_end = target.rss_mb
        return lad
    suas = SippUas(transport, workdir)
    try:
        port = target.start(transport, suas.port)
        lad = ladder(
            target, transport, rates,
            lambda r: run_sipp_step(target, port, suas, transport, r, seconds, workdir, scenario),
            log, bisect,
        )  # fmt: skip
    finally:
        target.stop()
        suas.stop()
    if isinstance(target, Ng911Target):
        lad.rss_mb_at_end = target.rss_mb
    return lad


def run_all(args: argparse.Namespace) -> int:
    if SIPP is None:
        print("load: sipp not installed (Debian package sip-tester); `make peers`", file=sys.stderr)
        return 2
    seconds = args.seconds or (2.0 if args.quick else 3.0)
    transports = [t for t in args.transports.split(",") if t]
    if args.quick:
        kam_rates, kam_tls_rates = [1000, 2000, 3000], [500, 1000, 2000]
        our_rates = [200, 400, 600]
    else:
        kam_rates = [1000, 1500, 2000, 2500, 3000, 4000, 5000]
        kam_tls_rates = [500, 1000, 1500, 2000, 3000]
        our_rates = [100, 200, 300, 400, 500, 750, 1000, 1500, 2000]
    t_start = time.monotonic()
    ladders: list[Ladder] = []
    log = print
    with tempfile.TemporaryDirectory(prefix="ng911-load-") as tmp:
        workdir = Path(tmp)
        pki_dir = workdir / "pki"
        pki_dir.mkdir()
        if "tls" in transports:
            make_pki(pki_dir)
        counts = sorted({int(n) for n in args.ng911_workers.split(",") if n.strip()} or {1})
        targets: list[Target] = [Ng911Target(pki_dir), KamailioTarget(args.children, pki_dir)]
        if any(n > 1 for n in counts):
            # workers share the port by SO_REUSEPORT: the kernel gives each caller socket to
            # one worker, so SIPp calls from a socket per call (`-t un`), and the 1-worker
            # VSP and Kamailio are measured that way too (UDP only: one TCP/TLS connection
            # each side would be one worker's)
            targets += [
                *(Ng911Target(pki_dir, workers=n, uac="un") for n in counts),
                KamailioTarget(args.children, pki_dir, uac="un"),
            ]
        targets = [t for t in targets if t.name in args.proxies.split(",")]
        for transport in transports:
            for target in targets:
                if target.uac_sockets == "un" and transport != "udp":
                    continue
                if isinstance(target, Ng911Target) and target.workers > 1:
                    rates = [*our_rates, *(r for r in kam_rates if r > our_rates[-1])]
                elif target.name == "ng911":
                    rates = our_rates
                else:
                    rates = kam_tls_rates if transport == "tls" else kam_rates
                ladders.append(
                    run_ladder(
                        target,
                        transport,
                        rates,
                        seconds,
                        workdir,
                        pki_dir,
                        log,
                        bisect=not args.quick,
                    )
                )
        # the emergency path of the VSP (1.5 KB INVITE with PIDF-LO), UDP
        if "udp" in transports and "ng911" in args.proxies and not args.quick:
            lad = run_ladder(
                Ng911Target(), "udp", our_rates, seconds, workdir, pki_dir, log,
                scenario="uac_emergency.xml",
            )  # fmt: skip
            lad.proxy = "ng911-emergency"
            ladders.append(lad)
            # the ESRP: 911 INVITE with PIDF-LO → LoST (own process) → Route to the "PSAP"
            lad = run_ladder(
                Ng911Target(element="esrp"), "udp", our_rates, seconds, workdir, pki_dir, log,
                scenario="uac_emergency.xml",
            )  # fmt: skip
            lad.proxy = "ng911-esrp"
            ladders.append(lad)
            # the same VSP with Python's cyclic garbage collector off, and frozen only once
            # after start-up (what the collector's pauses cost without `ng911 run`'s
            # once-a-second `gc.freeze()`): 3 s steps, these are experiments
            for mode in ("off", "once"):
                lad = run_ladder(
                    Ng911Target(gc_mode=mode), "udp", [250, 500, 750, 1000, 1250, 1500],
                    min(seconds, 3.0), workdir, pki_dir, log, bisect=False,
                )  # fmt: skip
                lad.proxy = f"ng911-gc-{mode}"
                ladders.append(lad)
        profile = ""
        if not args.no_profile:
            ours = next((lad.best for lad in ladders if lad.proxy == "ng911" and lad.best), None)
            prate = max(100, int((ours.rate if ours else 500) * 0.6) // 50 * 50)
            profile = profile_run(prate, 2.0 if args.quick else 4.0, workdir)
        census = asyncio.run(gc_census(200, workdir))
    elapsed = time.monotonic() - t_start
    summary = summarize(ladders)
    print_table(summary)
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {
        "bench": "load",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "seconds_per_step": seconds,
        "kamailio_children": args.children,
        "ng911_workers": counts,
        "criteria": {"failed_calls": 0, "setup_p99_ms_below": P99_LIMIT * 1000},
        "summary": summary,
        "ladders": [
            {
                "proxy": lad.proxy,
                "transport": lad.transport,
                "uac": lad.uac,
                "rss_mb_at_end": lad.rss_mb_at_end,
                "steps": [asdict(s) for s in lad.steps],
            }
            for lad in ladders
        ],
        "gc_census": census,
        "elapsed_s": round(elapsed, 1),
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    if profile:
        prof_path = args.out.with_name(args.out.stem + "-profile.txt")
        prof_path.write_text(profile)
        print()
        print(profile[:4000])
    print(
        f"\nGC census of the VSP after {census['calls']} calls: "
        f"{census['gc_tracked_objects_held_per_call']} GC-tracked objects held per call, a full "
        f"collection costs {census['full_collection_us_per_held_call']} us per held call, "
        f"{census['cyclic_garbage_objects']} objects of cyclic garbage"
    )
    print(f"\nwrote {args.out} ({elapsed:.0f} s)")
    return 0


def summarize(ladders: Sequence[Ladder]) -> list[dict[str, Any]]:
    rows = []
    for lad in ladders:
        best = lad.best
        rows.append(
            {
                "proxy": lad.proxy,
                "transport": lad.transport,
                "uac": lad.uac,
                "max_cps": best.rate if best else 0,
                "cpu_us_per_call": best.cpu_us_per_call if best else None,
                "setup_p50_ms": best.p50_ms if best else None,
                "setup_p99_ms": best.p99_ms if best else None,
                "limited_by": next((s.why for s in lad.steps if not s.passed), "ladder top"),
            }
        )
    # ratios to Kamailio on the same transport, driven the same way (SIPp's sockets)
    kam = {(r["transport"], r["uac"]): r for r in rows if r["proxy"] == "kamailio"}
    for r in rows:
        k = kam.get((r["transport"], r["uac"]))
        if k and k["max_cps"]:
            r["rate_vs_kamailio"] = round(r["max_cps"] / k["max_cps"], 2)
        if k and k["cpu_us_per_call"] and r["cpu_us_per_call"]:
            r["cpu_vs_kamailio"] = round(r["cpu_us_per_call"] / k["cpu_us_per_call"], 2)
    return rows


def print_table(rows: Sequence[dict[str, Any]]) -> None:
    print()
    print(
        f"{'proxy':<17} {'tr':<4} {'uac':<3} {'max cps':>8} {'x Kam':>6} {'cpu us/call':>11} "
        f"{'x Kam':>6} {'setup p50':>9} {'p99 ms':>7}  limited by"
    )
    for r in rows:

        def f(v: Any, fmt: str) -> str:
            return format(v, fmt) if v is not None else "-"

        print(
            f"{r['proxy']:<17} {r['transport']:<4} {r['uac'][:3]:<3} {r['max_cps']:>8} "
            f"{f(r.get('rate_vs_kamailio'), '.2f'):>6} {f(r['cpu_us_per_call'], '.0f'):>11} "
            f"{f(r.get('cpu_vs_kamailio'), '.2f'):>6} {f(r['setup_p50_ms'], '.2f'):>9} "
            f"{f(r['setup_p99_ms'], '.2f'):>7}  {r['limited_by']}"
        )


if __name__ == "__main__":
    sys.exit(main())
