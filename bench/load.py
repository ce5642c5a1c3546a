"""Load: how many calls per second ng911's VSP proxy relays, as a ratio of Kamailio's.

The rig of ANCHORS.md: a caller → the proxy under test → a callee, on loopback, on this
machine's cores (the load generators share them with the proxy). The proxy is a stateful,
record-routing proxy in both cases:

- Kamailio 5.6 (`ng911.interop.kamailio`: tm + rr, `record_route(); t_relay()` to a
  fixed next hop, `children` workers, 1 GB of shared memory);
- ng911's VSP proxy as deployed: `ng911 run vsp --config FILE --quiet --ready`
  (`bench/rig.py`'s `start_proxy`), one asyncio event loop, logging off (as Kamailio's
  `debug=1`; without `--quiet` it writes a JSON line per event). One process, one core; the
  `ng911 (2 workers)` row is `ng911 run vsp --workers 2`: two processes sharing the UDP
  port (SO_REUSEPORT), each with its own port for its Via, CPU summed over both.

UDP and TCP: SIPp drives it (`ng911/interop/sipp/uac_plain.xml` → proxy → `uas.xml`, which
copies Record-Route so ACK and BYE go through the proxy too; TCP: one connection each side, `-t
t1`). TLS: SIPp here has no TLS, so a small asyncio caller/callee pair (`bench/loadgen.py`, two
processes, one mutual-TLS connection each side, ECDSA P-256, TLS 1.3) drives both ng911 and
Kamailio (tls module). The `emergency` row sends the 1.5 KB 911 INVITE with PIDF-LO
(`uac_emergency.xml`) through the VSP's emergency path (recognise, rewrite, Resource-Priority,
Route to the "ESRP", which is the SIPp callee here); the `esrp` row sends it to ng911's ESRP,
which asks a LoST server (`ng911 run lost`, every borough maps to the SIPp callee) for every
call (`lost_cache = false`) and routes to the answer; `esrp-cached` is the same ESRP as deployed
by default, its LoST answers cached. Every ng911 row calls `gc.freeze()` once a second (`ng911
run`'s `--gc-freeze 1`; survivors leave the collector's sight but are still freed by reference
counting; safe because a call leaves no cyclic garbage, which a test counts); the `gc-off` row
is the VSP with Python's cyclic garbage collector disabled (`gc.disable()` before `ng911 run`)
and `gc-once` the VSP frozen only once after start-up (`--gc-freeze 0`): experiments showing
what the collector's pauses cost.

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
`python -m cProfile -o FILE -m ng911 run vsp ...`, top 15 by cumulative time)
bench/results/load-profile.txt.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import gc
import io
import json
import os
import platform
import pstats
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from goals import goal_row
from goals import print_table as print_table_of_goals
from loadgen import Callee, make_pki, pki_paths, tls_calls
from ng911.interop.kamailio import Kamailio, stateful_proxy_cfg, tls_cfg
from ng911.interop.sipp import (
    SIPP,
    SippUas,
    read_stat,
    run_sipp,
    sipp_args,
    start_sipp,
    stat_count,
    stop_sipp,
)
from rig import (
    LOCAL,
    NG911,
    REPO,
    RESULTS,
    Element,
    free_port,
    opt,
    percentile,
    start_proxy,
    write_result,
)

NG911_LOOP = ["auto"]  # every ng911 process's event loop (`--loop`)


def set_default_loop(loop: str) -> None:
    NG911_LOOP[0] = loop


PROBE_RATE = 20  # cps of the latency probe (SIPp with -trace_msg)
P99_LIMIT = 0.050  # s: a step fails when the INVITE→180 p99 is above this
HOLD_MS = 100  # call hold time (ACK → BYE)


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
    # failed calls by SIPp's cause (`failure_kinds`): "unexpected message" is an error answer
    # (ng911's overload control refusing with 503), "max UDP retrans" a request never answered
    failed_by: dict[str, int] = field(default_factory=dict)
    # ng911: what its overload control logged during the step (`overload`, `shedding`,
    # `overload_end` with the signal, lag and backlog that tripped it), so a step failed by
    # 503s says whether the loop lagged or the socket queued (first few only)
    overload: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Ladder:
    proxy: str
    transport: str
    steps: list[Step] = field(default_factory=list)
    rss_mb_at_end: float | None = None  # ng911: the proxy's resident memory after the ladder
    uac: str = "u1"  # SIPp caller's UDP sockets: u1 (one for all calls) | un (one per call)
    restarted_at: list[int] = field(default_factory=list)  # steps run again: the proxy died

    @property
    def best(self) -> Step | None:
        good = [s for s in self.steps if s.passed]
        return max(good, key=lambda s: s.rate) if good else None


# --------------------------------------------------------------------------- SIPp


def uas_key(port: int, transport: str) -> str:
    return f"{LOCAL}:{port}" + (";transport=tcp" if transport == "tcp" else "")


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
    mode = "un" if transport == "udp" and sockets == "un" else transport
    extra = [
        "-s", "svc", "-r", str(rate), "-l", str(max(100, rate * 3)), "-timeout", f"{int(timeout)}s",
        "-max_socket", "4096", "-trace_stat", "-stf", str(stat_file), "-fd", "200ms",
    ]  # fmt: skip
    if trace is not None:
        extra += ["-trace_msg", "-message_file", str(trace)]
    cmd = sipp_args(
        scenario, transport=mode, remote=f"{LOCAL}:{proxy_port}", calls=calls,
        port=free_port(),  # never SIPp's default 5060: main and probe run side by side
        keys={"uas": uas, "dial": "urn:service:sos"}, extra=extra,
    )  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=workdir)


STAT_PERIOD = 0.2  # s between SIPp's -trace_stat rows (-fd 200ms)


def completion_rate(rows: Sequence[dict[str, str]], calls: int) -> float:
    """Calls per second the rig completed: all calls over the time until the last one ended
    (minus the hold time). Below the offered rate, calls pile up: the proxy falls behind."""
    for i, r in enumerate(rows):
        if stat_count(r, "SuccessfulCall(C)") + stat_count(r, "FailedCall(C)") >= calls:
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

    def start(self, transport: str, uas_port: int, workdir: Path) -> int:  # the port to call
        raise NotImplementedError

    def cpu_seconds(self) -> float:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def diagnose(self) -> str:
        """What the proxy said, for a step whose generator could not even start."""
        return ""

    def alive(self) -> bool:
        """Still running? (ng911's targets say yes: their death is never restarted away, it
        fails the step as any bug does; `restart_once` restarts a peer that died.)"""
        return True


class KamailioTarget(Target):
    name = "kamailio"

    def __init__(self, children: int, pki_dir: Path | None = None, uac: str = "u1") -> None:
        self.uac_sockets = uac
        self.children = children
        self.k: Kamailio | None = None
        self.pki_dir = pki_dir

    def start(self, transport: str, uas_port: int, workdir: Path) -> int:
        port = free_port()
        tls = None
        if transport == "tls":
            assert self.pki_dir is not None
            tls = self.pki_dir / "kamailio-tls.cfg"
            tls.write_text(
                tls_cfg(
                    cert=self.pki_dir / "proxy.chain.pem",
                    key=self.pki_dir / "proxy.key.pem",
                    ca=self.pki_dir / "ca-bundle.pem",
                )
            )
        next_hop = f"sip:{LOCAL}:{uas_port}" + {"udp": "", "tcp": ";transport=tcp"}.get(
            transport, ";transport=tls"
        )
        cfg = stateful_proxy_cfg(
            port=port, next_hop=next_hop, children=self.children, tls_cfg_path=tls
        )
        self.k = Kamailio(cfg, port, "tls" if tls else "udp")
        self.k.start()
        return port

    def cpu_seconds(self) -> float:
        return self.k.cpu_seconds() if self.k is not None else 0.0

    def diagnose(self) -> str:
        if self.k is None:
            return ""
        alive = self.alive()
        return f"kamailio {'running' if alive else 'exited'}; its log ends:\n{self.k.log(1500)}"

    def alive(self) -> bool:
        return self.k is not None and self.k.proc is not None and self.k.proc.poll() is None

    def stop(self) -> None:
        if self.k is not None:
            self.k.stop()
            self.k = None


# what an element's overload control logs (`ng911.elements.overload.Admission.sample`)
OVERLOAD_RECORDS = ("overload", "overload_end", "shedding")


class Ng911Target(Target):
    """ng911's VSP (or ESRP, after its LoST server) as `ng911 run` processes."""

    name = "ng911"

    def __init__(
        self,
        pki_dir: Path | None = None,
        profile: Path | None = None,
        gc_mode: str = "freeze",
        element: str = "vsp",
        workers: int = 1,
        uac: str = "u1",
        loop: str | None = None,
        lost_cache: bool = False,
        udp_steering: str = "call-id",
    ) -> None:
        self.uac_sockets = uac
        self.udp_steering = udp_steering  # workers: `ng911 run --udp-steering`
        # the ESRP's LoST answer cache: off, every call asks LoST (the goal row); on, the
        # ESRP as deployed by default (SIPp's calls all come from one location)
        self.lost_cache = lost_cache
        # `loop` of the element's table (ng911.node.loop), so its workers run on it too
        self.loop = loop or NG911_LOOP[0]
        self.els: list[Element] = []
        self.pki_dir = pki_dir
        self.profile = profile
        self.gc_mode = gc_mode  # "freeze" (`ng911 run`'s default) | "once" | "off"
        self.element = element
        self.workers = workers
        self.rss_mb: float | None = None

    def start(self, transport: str, uas_port: int, workdir: Path) -> int:
        port = free_port()
        config: dict[str, Any] = {"loop": self.loop}
        if self.element == "esrp":
            config["lost_cache"] = self.lost_cache
        if transport == "tls":
            assert self.pki_dir is not None
            listeners = [{"transport": "tls", "host": LOCAL, "port": port}]
            next_hop = f"sips:{LOCAL}:{uas_port}"
            paths = pki_paths(self.pki_dir)
            config["tls"] = {"cert": paths["proxy_chain"], "key": paths["proxy_key"],
                             "ca": [paths["ca"]], "require_client_cert": True}  # fmt: skip
        else:
            listeners = [{"transport": t, "host": LOCAL, "port": port} for t in ("udp", "tcp")]
            next_hop = f"sip:{LOCAL}:{uas_port}" + (";transport=tcp" if transport == "tcp" else "")
        args = ["--gc-freeze", "0" if self.gc_mode == "once" else "1"]
        if self.workers > 1:
            args += ["--workers", str(self.workers), "--udp-steering", self.udp_steering]
        launcher: Sequence[str] = NG911
        if self.profile is not None:
            launcher = ("-m", "cProfile", "-o", str(self.profile), *NG911)
        elif self.gc_mode == "off":  # experiment: no cyclic collector at all
            launcher = ("-c", "import gc, runpy; gc.disable(); runpy.run_module('ng911', "
                        "run_name='__main__')")  # fmt: skip
        self.els = start_proxy(
            self.element, workdir, next_hop, listeners, config=config, extra_args=args,
            launcher=launcher,
        )  # fmt: skip
        return port

    @property
    def label(self) -> str:
        return f"ng911 ({self.workers} workers)" if self.workers > 1 else "ng911"

    def cpu_seconds(self) -> float:
        return self.els[-1].cpu_seconds() if self.els else 0.0

    def lost_cpu_seconds(self) -> float:
        return self.els[0].cpu_seconds() if len(self.els) > 1 else 0.0

    def log_mark(self) -> int:
        """Where the proxy's stderr ends now (`overload_events` reads from there)."""
        try:
            return self.els[-1].stderr_path.stat().st_size if self.els else 0
        except OSError:
            return 0

    def overload_events(self, mark: int, keep: int = 6) -> list[dict[str, Any]]:
        """The overload control's records the proxy wrote to stderr since `mark` (it runs
        `--quiet`: those are the warnings it still writes), the first `keep` of them."""
        if not self.els:
            return []
        try:
            with self.els[-1].stderr_path.open("rb") as f:
                f.seek(mark)
                text = f.read().decode(errors="replace")
        except OSError:
            return []
        out: list[dict[str, Any]] = []
        for line in text.splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict) and rec.get("what") in OVERLOAD_RECORDS:
                rec.pop("element", None)
                out.append(rec)
                if len(out) >= keep:
                    break
        return out

    def stop(self) -> None:
        if self.els:
            self.rss_mb = self.els[-1].rss_mb()
        for el in reversed(self.els):
            el.stop()
        self.els = []


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
    ok, failed, retrans = "SuccessfulCall(C)", "FailedCall(C)", "Retransmissions(C)"
    step.ok = stat_count(s, ok) + stat_count(ps, ok)
    step.failed = stat_count(s, failed) + stat_count(ps, failed)
    step.retransmissions = stat_count(s, retrans) + stat_count(ps, retrans)
    step.failed_by = failure_kinds([r for r in (s, ps) if r])
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


_WORD = re.compile(r"(?<=[a-z])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")  # CamelCase → words


def failure_kinds(rows: Sequence[Mapping[str, str]]) -> dict[str, int]:
    """Failed calls by cause, summed over the last `-trace_stat` rows of the step's SIPp
    instances: `Failed...(C)` counters other than the total, named in words
    (`FailedUnexpectedMessage(C)` → "unexpected message"). A proxy that sheds load fails
    calls by refusing them, one that falls behind by not answering: the step says which."""
    out: dict[str, int] = {}
    for row in rows:
        for key in row:
            if not (key.startswith("Failed") and key.endswith("(C)")) or key == "FailedCall(C)":
                continue
            n = stat_count(row, key)
            if n:
                words = _WORD.sub(" ", key[len("Failed") : -len("(C)")])
                name = words.lower().replace("udp", "UDP").replace("tcp", "TCP")
                out[name] = out.get(name, 0) + n
    return out


def _finish(step: Step, delays: list[float]) -> None:
    step.samples = len(delays)
    p50, p99 = percentile(delays, 50), percentile(delays, 99)
    step.p50_ms = None if p50 is None else round(p50 * 1000, 3)
    step.p99_ms = None if p99 is None else round(p99 * 1000, 3)
    done = step.ok + step.failed
    step.cpu_us_per_call = round(step.cpu_s / max(1, step.ok) * 1e6, 1)
    if step.failed:
        step.why = f"{step.failed} failed calls"
        if step.failed_by:
            kinds = sorted(step.failed_by.items(), key=lambda kv: -kv[1])
            step.why += " (" + ", ".join(f"{n} {k}" for k, n in kinds) + ")"
    elif done < step.calls:
        step.why = f"{step.calls - done} calls unfinished"
    elif p99 is None:
        step.why = "no setup delay samples"
    elif p99 > P99_LIMIT:
        step.why = f"p99 {p99 * 1000:.1f} ms > {P99_LIMIT * 1000:.0f} ms"
    else:
        step.passed = True


SETTLE_IDLE = 0.05  # share of one core under which a proxy counts as idle again
SETTLE_MAX = 40.0  # s at most (RFC 3261's 32 s transaction timers, and some)


def settle(
    target: Target,
    *,
    window: float = 0.5,
    idle: float = SETTLE_IDLE,
    limit: float = SETTLE_MAX,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> float:
    """Wait (bounded by `limit`) until the proxy's CPU over `window` is under `idle` of a
    core; the seconds waited. After a failed step the proxy is still working off it
    (retransmissions, calls timing out: up to 32 s of transaction timers); a step started
    at once measured that recovery, not its own rate (an ESRP at 600 calls/s right after
    750: 122 calls/s done, 4,051 µs of CPU per call, against 1,928 µs at 500)."""
    t0 = clock()
    last = target.cpu_seconds()
    while clock() - t0 < limit:
        sleep(window)
        now = target.cpu_seconds()
        if now - last < idle * window:
            break
        last = now
    return clock() - t0


def ladder(
    target: Target,
    transport: str,
    rates: Sequence[int],
    run_step: Callable[[int], Step],
    log: Callable[[str], None],
    bisect: bool = True,
) -> Ladder:
    """Step the rate up until a step fails; then, once the proxy is idle again (`settle`),
    one step halfway to find the edge."""
    uac = target.uac_sockets if transport == "udp" else f"{tls_connections(target)} connection(s)"
    lad = Ladder(target.label, transport, uac=uac)
    last_good = 0
    for rate in rates:
        step = run_step(rate)
        lad.steps.append(step)
        log(_fmt_step(step))
        if not step.passed:
            mid = (last_good + rate) // 2 // 50 * 50
            if bisect and last_good and mid > last_good and rate - last_good >= 200:
                waited = settle(target)
                log(f"  (the proxy idle again after {waited:.1f} s)")
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
    first = next((e for e in s.overload if e.get("what") == "overload"), None)
    shed = (
        f"  [overload on {first.get('signal') or '?'}: lag {first.get('lag_ms')} ms, "
        f"backlog {first.get('backlog')}]"
        if first
        else ""
    )
    return (
        f"  {s.proxy:<18} {s.transport:<4} {s.rate:>5} cps: {s.ok:>6}/{s.calls:<6} ok, "
        f"retrans {s.retransmissions:>4}, setup p50 {p50:>6} ms p99 {p99:>7} ms, "
        f"cpu {s.cpu_us_per_call:>7.1f} us/call  {verdict}{shed}"
    )


def tls_connections(target: Target) -> int:
    """The TLS caller's connections: one, or 8 for a "un" target (workers sharing the port
    get the connections the kernel gives each, as SIPp's socket per call spreads UDP)."""
    return 8 if target.uac_sockets == "un" else 1


def run_tls_step(
    target: Target, proxy_port: int, uas: Callee, rate: int, seconds: float, pki_dir: Path
) -> Step:
    step = Step(target.name, "tls", rate)
    cpu0 = target.cpu_seconds()
    res = tls_calls(proxy_port, uas.port, rate, seconds, pki_dir, tls_connections(target))
    step.cpu_s = target.cpu_seconds() - cpu0
    if "error" in res:
        step.why = res["error"]
        detail = target.diagnose()
        if detail:
            print(f"  {target.label} tls {rate} cps: {detail}", file=sys.stderr)
        return step
    step.calls, step.ok, step.failed = res["calls"], res["ok"], res["failed"]
    step.achieved_cps = res["achieved_cps"]
    _finish(step, res["delays"])
    if step.passed and step.achieved_cps < 0.85 * rate:
        step.passed = False
        step.why = f"generator reached only {step.achieved_cps:.0f} cps"
    return step


# --------------------------------------------------------------------------- the run


async def gc_census(calls: int, workdir: Path) -> dict[str, Any]:
    """What the VSP holds per call, for the cyclic collector: `calls` calls through an
    in-process VspProxy (collector off), then GC-tracked objects still held per call, the
    time of one full collection per held call, and the cyclic garbage the calls left."""
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
        uas = await start_sipp(sipp_args("uas.xml", port=uas_port, calls=None), workdir)
        await asyncio.sleep(0.3)
        uac = sipp_args(
            "uac_plain.xml", remote=f"{LOCAL}:{port}", port=free_port(), calls=calls,
            keys={"uas": f"{LOCAL}:{uas_port}", "dial": "x"}, extra=["-s", "svc", "-r", "100"],
        )  # fmt: skip
        rc = (await run_sipp(uac, workdir, timeout=60)).returncode
        await stop_sipp(uas)
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
    uas = SippUas(workdir)
    try:
        port = target.start("udp", uas.port, workdir)
        step = run_sipp_step(target, port, uas, "udp", rate, seconds, workdir)
    finally:
        target.stop()
        uas.stop()
    head = (
        f"cProfile of `ng911 run vsp` (one process, start-up included) relaying {rate} cps "
        f"over UDP for {seconds:.0f} s (SIPp uac_plain -> VspProxy -> SIPp uas): {step.ok} "
        f"calls ok, {step.failed} failed; the profiler's overhead inflates every figure.\n\n"
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
    ap.add_argument(
        "--loop",
        default="auto",
        choices=("auto", "uvloop", "asyncio"),
        help="the event loop of every ng911 process (`loop` of its table; default auto: "
        "uvloop when installed)",
    )
    ap.add_argument(
        "--ng911-workers",
        default="1,2",
        help="comma list of ng911 worker-process counts for the UDP rows (default 1,2)",
    )
    args = ap.parse_args(argv)

    if args.census:
        with tempfile.TemporaryDirectory(prefix="ng911-census-") as tmp:
            print(json.dumps(asyncio.run(gc_census(200, Path(tmp))), indent=2))
        return 0
    return run_all(args)


def restart_once(
    target: Target,
    attempt: Callable[[int], Step],
    restart: Callable[[], None],
    restarts: list[int],
    log: Callable[[str], None],
) -> Callable[[int], Step]:
    """A ladder's step function: `attempt`, and when the proxy died during a failed step, once
    per ladder, `restart` it and run the step again (its rate goes in `restarts`).

    Kamailio 5.6.3's TLS module, with OpenSSL 3, aborts on a double free in `tls_init.c` as
    8 connections are made at once (2 of 3 full runs of 2026-12-06; its upstream issues
    #3791 and #4055, fixed by `tls_threads_mode`, which 5.6 does not have): its ladder then
    measured nothing. A second death ends the ladder there, as any failed step does."""

    def step(rate: int) -> Step:
        st = attempt(rate)
        if st.passed or restarts or target.alive():
            return st
        log(_fmt_step(st) + f"  [{target.label} died: started again, the step run again]")
        restarts.append(rate)
        restart()
        return attempt(rate)

    return step


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
    callee = Callee(free_port(), pki_dir) if transport == "tls" else SippUas(workdir, transport)
    restarts: list[int] = []  # the rates of the steps run again after the proxy died
    try:
        port = target.start(transport, callee.port, workdir)

        def attempt(rate: int) -> Step:
            mark = target.log_mark() if isinstance(target, Ng911Target) else 0
            if isinstance(callee, Callee):  # TLS: SIPp here has none
                st = run_tls_step(target, port, callee, rate, seconds, pki_dir)
            else:
                st = run_sipp_step(
                    target, port, callee, transport, rate, seconds, workdir, scenario
                )
            if isinstance(target, Ng911Target):
                st.overload = target.overload_events(mark)
            return st

        def restart() -> None:
            nonlocal port
            target.stop()
            port = target.start(transport, callee.port, workdir)

        step = restart_once(target, attempt, restart, restarts, log)

        lad = ladder(target, transport, rates, step, log, bisect)
        lad.restarted_at = restarts
    finally:
        target.stop()
        callee.stop()
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
        kam_tls_rates = [500, 1000, 1500, 2000, 3000, 4000, 5000]
        # up to Kamailio's top: ng911 over TLS used to reach 2,000 (the old top) unbroken,
        # which made its TLS ratio only a lower bound
        our_rates = [100, 200, 300, 400, 500, 750, 1000, 1500, 2000, 2500, 3000, 4000]
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
        set_default_loop(args.loop)
        targets: list[Target] = [Ng911Target(pki_dir), KamailioTarget(args.children, pki_dir)]
        if any(n > 1 for n in counts):
            # workers share the port by SO_REUSEPORT: the kernel gives each caller socket to
            # one worker, so SIPp calls from a socket per call (`-t un`), and the 1-worker
            # VSP and Kamailio are measured that way too (UDP, and TLS over 8 connections;
            # not TCP: SIPp's one TCP connection would be one worker's)
            targets += [
                *(Ng911Target(pki_dir, workers=n, uac="un") for n in counts),
                KamailioTarget(args.children, pki_dir, uac="un"),
            ]
        targets = [t for t in targets if t.name in args.proxies.split(",")]
        for transport in transports:
            for target in targets:
                if target.uac_sockets == "un" and transport == "tcp":
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
            # the same ESRP as 2 workers, still one SIPp socket (an ESRP's upstream is a few
            # BCF sockets): requests steered to their Call-ID's worker (ng911.net.steer)
            lad = run_ladder(
                Ng911Target(element="esrp", workers=2), "udp", our_rates, seconds, workdir,
                pki_dir, log, scenario="uac_emergency.xml",
            )  # fmt: skip
            lad.proxy = "ng911-esrp (2 workers)"
            ladders.append(lad)
            # the same with the ESRP's LoST cache on, its default: one LoST query per
            # location and validity period (SIPp calls from one spot), what an operator sees
            lad = run_ladder(
                Ng911Target(element="esrp", lost_cache=True), "udp", our_rates, seconds,
                workdir, pki_dir, log, scenario="uac_emergency.xml",
            )  # fmt: skip
            lad.proxy = "ng911-esrp-cached"
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
    goals = goal_rows(summary)
    print_table_of_goals(goals)
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {
        "bench": "load",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "seconds_per_step": seconds,
        "kamailio_children": args.children,
        "ng911_workers": counts,
        "ng911_loop": args.loop,
        "criteria": {"failed_calls": 0, "setup_p99_ms_below": P99_LIMIT * 1000},
        "summary": summary,
        "goals": goals,
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
    write_result("load", result, args.out)
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
    print(f"\n{elapsed:.0f} s")
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


# Issue 16's goals, each a ratio to a peer measured in the same run: (what, our row, the
# peer's row, the figure compared, goal as (">=" | "<=", ratio)). Rows are keyed by
# (proxy, transport, uac) as `summarize` writes them.
Row = tuple[str, str, str]
C1, C8 = "1 connection(s)", "8 connection(s)"
GOALS: tuple[tuple[str, Row, Row, str, tuple[str, float]], ...] = (
    ("VSP proxy UDP 1 worker max cps", ("ng911", "udp", "u1"), ("kamailio", "udp", "u1"),
     "max_cps", (">=", 0.6)),
    ("VSP proxy UDP 2 workers max cps", ("ng911 (2 workers)", "udp", "un"),
     ("kamailio", "udp", "un"), "max_cps", (">=", 1.0)),
    ("VSP proxy mutual TLS max cps", ("ng911", "tls", C1), ("kamailio", "tls", C1),
     "max_cps", (">=", 1.2)),
    ("proxy CPU per call, UDP", ("ng911", "udp", "u1"), ("kamailio", "udp", "u1"),
     "cpu_us_per_call", ("<=", 1.3)),
    ("ESRP (LoST per call) UDP max cps", ("ng911-esrp", "udp", "u1"), ("kamailio", "udp", "u1"),
     "max_cps", (">=", 0.5)),
    ("ESRP (LoST per call), 2 workers, one upstream socket, UDP max cps",
     ("ng911-esrp (2 workers)", "udp", "u1"), ("kamailio", "udp", "u1"), "max_cps", (">=", 0.5)),
    ("VSP proxy mutual TLS, 2 workers, 8 connections", ("ng911 (2 workers)", "tls", C8),
     ("kamailio", "tls", C8), "max_cps", (">=", 1.2)),
)  # fmt: skip


def goal_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The goals this run measured both sides of, as bench/goals.py rows (the README's goals
    table is regenerated from them)."""
    by_key = {(r["proxy"], r["transport"], r["uac"]): r for r in rows}
    out = []
    for what, ours_key, peer_key, figure, (cmp, target) in GOALS:
        ours, peer = by_key.get(ours_key), by_key.get(peer_key)
        if ours is None or peer is None:
            continue
        unit = "µs" if figure == "cpu_us_per_call" else "cps"
        peer_name = "Kamailio" if peer_key[0] == "kamailio" else peer_key[0]
        if peer_key[2] == "un":
            peer_name += " (socket per call)"
        out.append(
            goal_row(
                what,
                ours.get(figure),
                unit,
                target,
                peer=peer_name,
                peer_value=peer.get(figure),
                lower_is_better=cmp == "<=",
            )
        )
    return out


def print_table(rows: Sequence[dict[str, Any]]) -> None:
    print()
    print(
        f"{'proxy':<17} {'tr':<4} {'uac':<3} {'max cps':>8} {'x Kam':>6} {'cpu us/call':>11} "
        f"{'x Kam':>6} {'setup p50':>9} {'p99 ms':>7}  limited by"
    )
    f = opt
    for r in rows:
        print(
            f"{r['proxy']:<17} {r['transport']:<4} {r['uac'][:3]:<3} {r['max_cps']:>8} "
            f"{f(r.get('rate_vs_kamailio'), '.2f'):>6} {f(r['cpu_us_per_call'], '.0f'):>11} "
            f"{f(r.get('cpu_vs_kamailio'), '.2f'):>6} {f(r['setup_p50_ms'], '.2f'):>9} "
            f"{f(r['setup_p99_ms'], '.2f'):>7}  {r['limited_by']}"
        )


if __name__ == "__main__":
    sys.exit(main())
