"""Run the scenarios: start the chain, place calls, trace everything, write the run directory.

For each scenario a fresh chain is started (`launcher.start_chain`); by default every
scenario's chain is up at once and all calls go round-robin across them at the configured
rate (`run_set`), so a machine's drifting background load falls on all scenarios alike;
`interleave=False` runs them in turn. `repeat` runs the whole set again on fresh chains and
the report gives the spread between the runs.

Cold and warm calls are measured under the same load. The cold calls (one per caller
location by default: each borough, so each PSAP, once) sit in the same paced schedule as
the warm ones, spread evenly over it (the first call is one). Before a cold call its chain
waits until none of its own calls is in flight (`_Gate`), then every element closes its
TCP/TLS connections and forgets its TLS sessions, and the ESRP closes its LoST connection
(`_reset`): every hop opens anew with a full handshake, while the other scenarios' calls go
on loading the machine. (Element processes, `--processes`/`--netns`, are beyond the
testbed's reach: there the cold calls are each PSAP's first, placed alone, as the report
says.) A Ctrl-C stops the calls and writes the report of what was measured so far.

The run directory:

    runs/<UTC timestamp>/
      report.html  results.json  calls.csv               calls.csv: one row per call
      <scenario>/hop1.jsonl .. hop4.jsonl  lost.jsonl   every message event, per hop
      <scenario>/hop1.pcapng .. hop4.pcapng  all.pcapng synthesised captures, keys inside
      <scenario>/captured-hopN.pcapng                    --netns: real captures, the same way
      <scenario>/keys.log                                TLS key log (NSS format)
      <scenario>/pki/                                    the run's CA and certificates
      <scenario>/repeat-N/                               later repeats' chains (pki, keys)
      <scenario>/logevents.jsonl  logevents.html         the i3 LogEvents, verified, by call
      <scenario>/logevents.sqlite                        the logger's store (in processes:
                                                         bundles/logger/logevents.sqlite)
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import os
import platform
import signal
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TextIO

from ng911 import __version__
from ng911.observe.calls import Trace
from ng911.observe.output import write_logs
from ng911.observe.pcap import convert_capture, write_captures
from ng911.observe.stats import BOOTSTRAP_METHOD, METRICS, PERCENTILE_METHOD
from ng911.testbed.errors import TestbedError
from ng911.testbed.hoptable import between_runs, hop_table
from ng911.testbed.launcher import Observer, RunningChain, start_chain, wait_registered
from ng911.testbed.logexport import export_logevents
from ng911.testbed.measure import PlacedCall, add_baseline_diffs, scenario_results
from ng911.testbed.netns import NetnsLab, unavailable_reason
from ng911.testbed.peers import check_runnable, labels, with_implementations
from ng911.testbed.plan import ChainOptions
from ng911.testbed.processes import ProcessChain, sigterm_exits, start_processes
from ng911.testbed.report import (
    format_between_runs,
    format_hop_table,
    format_scenario,
    format_table,
    write_report,
    write_results,
)
from ng911.testbed.results import SCHEMA_VERSION, write_calls_csv
from ng911.testbed.scenarios import BASELINE, Scenario, get_scenario, select
from ng911.testbed.topology import Topology, load_topology


class ChainWatch(Protocol):
    """Something watching the run's chains while they are measured (the live console,
    `ng911 testbed run --console`). The hook keeps the layers: the testbed never imports what
    watches it. Its observers run inside the elements' send and receive paths (in one
    process) or in the feed tailing the element processes' event files (`--processes`,
    `--netns`: `ProcessChain.live`), so each must be O(1) and never block (a bounded
    buffer: the console's `Hub.observe`)."""

    async def open(self) -> None:
        """Before the first chain starts."""

    async def close(self) -> None:
        """After the last chain closed (also on a failed or interrupted run)."""

    def observers(self, scenario: Scenario) -> Sequence[Observer]:
        """Extra observers for the chain about to start under `scenario`."""

    def started(self, scenario: Scenario, chain: RunningChain | ProcessChain) -> None:
        """`chain` is up (its call takers and caller registered); calls follow."""

    def stopped(self, scenario: Scenario, chain: RunningChain | ProcessChain) -> None:
        """`chain` is about to close."""

    async def finished(self, result: RunResult) -> None:
        """The run is over and its report written (not called when it failed); `close`
        follows. A console asked to stay serves the finished run here until the user stops
        it."""


@dataclass
class RunConfig:
    """What `ng911 testbed run` does; the defaults are the demo's."""

    scenarios: list[str] = field(default_factory=list)  # empty: all
    calls: int = 50  # per scenario, the cold ones included
    rate: float = 20.0  # warm calls per second placed (over all scenarios when interleaved)
    out: Path | None = None  # default runs/<timestamp>
    topology: Path | None = None  # default: the packaged NYC topology
    baseline: bool = True  # add `plain` when it was not selected
    cold_calls: int | None = None  # None: one per caller location (each PSAP's first call)
    chain: ChainOptions = field(default_factory=ChainOptions)
    progress: TextIO | None = None  # where the progress line and tables go (None: quiet)
    interleave: bool = True  # all chains up at once, calls round-robin (see `run_set`)
    captures: bool = True
    repeat: int = 1  # run the whole set this many times (fresh chains each time)
    # role → "ng911" | "kamailio" | "both" (`--vsp`, `--esrp`): who runs that place;
    # "both" runs each scenario with ng911 and with Kamailio side by side (testbed/peers.py)
    implementations: dict[str, str] = field(default_factory=dict)
    # watches each chain, in-process or element processes (`ChainWatch`; None: nobody)
    watch: ChainWatch | None = None


@dataclass
class RunResult:
    run_dir: Path
    results: dict[str, Any]

    @property
    def failed(self) -> int:
        return sum(int(r.get("failed", 0)) for r in self.results["scenarios"].values())

    @property
    def report(self) -> Path:
        return self.run_dir / "report.html"

    @property
    def interrupted(self) -> bool:
        """Ctrl-C stopped the run: the report covers the calls done until then."""
        return bool(self.results["meta"].get("interrupted"))


class Progress:
    """One `\\r` line per scenario: a bar, calls done, failures."""

    def __init__(self, stream: TextIO | None, name: str, total: int) -> None:
        self.stream, self.name, self.total = stream, name, total
        self.done = self.failed = 0
        self._last = 0.0
        isatty = getattr(stream, "isatty", None)
        self._tty = bool(isatty()) if isatty is not None else False

    def update(self, ok: bool, *, force: bool = False) -> None:
        self.done += 1
        self.failed += 0 if ok else 1
        now = time.monotonic()
        if self.stream is None:
            return
        if not self._tty and self.done < self.total:
            return  # a log file gets the final line only
        if not force and now - self._last < 0.1 and self.done < self.total:
            return
        self._last = now
        width = 30
        filled = int(width * self.done / max(1, self.total))
        bar = "#" * filled + "." * (width - filled)
        self.stream.write(
            f"\r  {self.name:<13} [{bar}] {self.done:>4}/{self.total} calls, {self.failed} failed"
        )
        self.stream.flush()

    def finish(self) -> None:
        if self.stream is not None:
            self.stream.write("\n")
            self.stream.flush()


def _say(stream: TextIO | None, text: str) -> None:
    if stream is not None:
        stream.write(text + "\n")
        stream.flush()


@dataclass
class _Acc:
    """One scenario over every repeat of the run: its trace (one, pooled), the calls the
    runner placed (Call-ID → repeat, cold), and what went wrong."""

    scenario: Scenario
    work: Path
    trace: Trace
    placed: dict[str, PlacedCall] = field(default_factory=dict)
    done: int = 0  # calls that ended (answered, failed or timed out): the ones measured
    failures: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)
    chain: RunningChain | ProcessChain | None = None  # the latest repeat's
    keylogs: list[Path] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)
    logevents: dict[str, Any] | None = None  # the results entry (ng911.testbed.logexport)


class _Gate:
    """Warm calls share a chain; a cold call has it to itself: it waits until no call of its
    chain is in flight, holds new ones back, and runs after its chain's connections are reset.
    The other scenarios' calls go on meanwhile, so the machine's load is the warm calls'."""

    def __init__(self) -> None:
        self._active = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._open = asyncio.Event()
        self._open.set()
        self._cold = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def warm(self) -> AsyncIterator[None]:
        while not self._open.is_set():
            await self._open.wait()
        self._active += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._active -= 1
            if self._active == 0:
                self._idle.set()

    @contextlib.asynccontextmanager
    async def cold(self) -> AsyncIterator[None]:
        async with self._cold:
            self._open.clear()
            try:
                await self._idle.wait()
                yield
            finally:
                self._open.set()


@dataclass
class _Live:
    """One scenario's running chain in one repeat of the run."""

    acc: _Acc
    repeat: int
    chain: RunningChain | ProcessChain
    locations: list[tuple[float, float, str | None]]  # lat, lon, borough
    cold: int
    calls: int
    gate: _Gate = field(default_factory=_Gate)

    @property
    def resettable(self) -> bool:
        """In one process the testbed can close the elements' connections before a cold
        call; element processes are out of its reach (their cold calls are their first)."""
        return isinstance(self.chain, RunningChain)

    @property
    def cold_at(self) -> dict[int, int]:
        """Call index → cold call number. Resettable chains: spread evenly over the calls
        (the first is one), so cold calls run under the same load as warm ones; otherwise the
        first calls, placed alone."""
        if not self.resettable:
            return {i: i for i in range(self.cold)}
        return {k * self.calls // self.cold: k for k in range(self.cold)}


async def _start_live(acc: _Acc, repeat: int, base: Topology, cfg: RunConfig) -> _Live:
    scenario = acc.scenario
    topo = base.with_scenario(scenario)
    work = acc.work if repeat == 1 else acc.work / f"repeat-{repeat}"
    locations = [(loc.lat, loc.lon, loc.borough) for loc in topo.locations] or [
        (40.7580, -73.9855, None)
    ]
    cold = min(cfg.calls, len(locations) if cfg.cold_calls is None else cfg.cold_calls)
    opts = cfg.chain
    if opts.element_logs is not None:
        opts = dataclasses.replace(opts, element_logs=work / "elements")
    if not cfg.captures:
        opts = dataclasses.replace(opts, real_captures=False)
    chain: RunningChain | ProcessChain
    watch = cfg.watch
    extra = list(watch.observers(scenario)) if watch is not None else []
    if opts.processes or opts.netns:
        chain = await _start_processes(topo, work, acc.trace, opts, live=extra)
    else:
        chain = await start_chain(topo, work, observers=[acc.trace, *extra], opts=opts)
        try:
            await wait_registered(chain)
        except BaseException:
            await chain.close()
            raise
    if watch is not None:
        watch.started(scenario, chain)
    acc.chain = chain
    acc.keylogs.append(work / "keys.log")
    return _Live(acc, repeat, chain, locations, cold, cfg.calls)


async def _start_processes(
    topo: Topology,
    work: Path,
    trace: Trace,
    opts: ChainOptions,
    live: Sequence[Observer] = (),
) -> ProcessChain:
    """The chain as element processes (in namespaces with `opts.netns`); ready once each
    process said so (call takers and caller registered). `live` observers (a watch) get
    their events while they run."""
    lab: NetnsLab | None = None
    try:
        if opts.netns:
            lab = NetnsLab(topo)
            await asyncio.to_thread(lab.setup)
        return await start_processes(topo, work, observers=[trace], opts=opts, lab=lab, live=live)
    except BaseException:
        if lab is not None:
            lab.teardown()
        raise


def cold_path(topo: Topology, borough: str | None) -> set[str] | None:
    """The hosts a call from `borough` crosses: caller, VSP, ESRP, the borough's PSAP and its
    call takers (None when the topology does not say which PSAP: then every host)."""
    psap = topo.psap_for_borough(borough) if borough else None
    if psap is None:
        return None
    hosts = {h.name for h in topo.hosts if h.role in ("caller", "vsp", "esrp")}
    hosts.add(psap.name)
    hosts |= {h.name for h in topo.by_role("calltaker") if h.psap == psap.name}
    return hosts


QUIET_WAIT = 1.0  # seconds a cold call's reset waits for its path to fall quiet


async def _reset(chain: RunningChain, borough: str | None) -> None:
    """Make the next call cold: on its path, every element's TCP/TLS connections closed and
    their TLS sessions forgotten (full handshakes, no resumption), the ESRP's LoST connection
    closed. The ESRP keeps its connections to the other PSAPs, so the warm calls that follow
    find them open."""
    await asyncio.sleep(0.02)  # the last call's ACK/BYE answers drain
    path = cold_path(chain.topology, borough)
    # then a quiet moment on the path: no ping, keep-alive, SUBSCRIBE or NOTIFY waiting for
    # its answer (closing under one would lose it: an unpaired message); bounded
    on_path = [el for n, el in chain.elements.items() if path is None or n in path]
    loop = asyncio.get_running_loop()
    until = loop.time() + QUIET_WAIT
    while any(el.in_flight for el in on_path) and loop.time() < until:
        await asyncio.sleep(0.005)
    peers = None if path is None else {chain.addresses[h] for h in path if h in chain.addresses}
    for name, el in chain.elements.items():
        if path is None or name in path:
            el.transport.drop_connections(peers if el.role == "esrp" else None)
    await chain.lost_client.close()
    await asyncio.sleep(0.01)  # the peers see the close before the next call


async def _call(live: _Live, i: int, progress: Progress) -> None:
    """Place call number `i` of a scenario and wait for its end (a cold one after a reset)."""
    k = live.cold_at.get(i)
    cold = k is not None
    where = live.locations[(k if k is not None else i) % len(live.locations)]
    lat, lon, borough = where
    acc = live.acc
    gate = live.gate.cold() if cold and live.resettable else live.gate.warm()
    try:
        async with gate:
            if cold and isinstance(live.chain, RunningChain):
                await _reset(live.chain, borough)
            rec = await live.chain.place_call(lat, lon)
    except TimeoutError:
        acc.done += 1
        acc.errors.append(f"repeat {live.repeat} call {i}: no end within the answer timeout")
        progress.update(False)
        return
    acc.done += 1
    acc.placed[rec.call_id] = PlacedCall(rec.call_id, live.repeat, cold)
    if not rec.ok:
        acc.failures[rec.call_id] = rec.reason or f"status {rec.status}"
    progress.update(rec.ok)


async def _close_live(live: _Live, watch: ChainWatch | None) -> None:
    await asyncio.sleep(0.05)  # the last ACK/BYE transactions drain
    if watch is not None:
        watch.stopped(live.acc.scenario, live.chain)
    await live.chain.close()  # element processes: their events and CPU arrive here
    for k, v in live.chain.cpu_seconds().items():
        live.acc.cpu[k] = live.acc.cpu.get(k, 0.0) + v
    live.acc.errors.extend(live.chain.errors)
    await _export_logevents(live)


async def _export_logevents(live: _Live) -> None:
    """This repeat's LogEvents, verified, to logevents.jsonl/.html in its work directory (the
    chain has stopped: its logger has everything the elements sent); the scenario's results
    entry sums the repeats' counts and lists each repeat's page."""
    chain, acc = live.chain, live.acc
    store, ca = chain.logevents_store, chain.ca_path
    if store is None or ca is None:
        return
    run_dir = acc.work.parent
    work = acc.work if live.repeat == 1 else acc.work / f"repeat-{live.repeat}"
    try:
        entry = await export_logevents(store, work, [ca], run_dir=run_dir)
    except Exception as exc:  # the run's measurements stand without its LogEvents
        acc.errors.append(f"LogEvents: {type(exc).__name__}: {exc}")
        return
    if entry is None:
        entry = {"count": 0, "verified": 0, "by_type": {}, "calls": 0}
    senders = chain.logger_stats() if isinstance(chain, RunningChain) else {}
    if senders:  # in one process: the elements' LogSender counters, summed
        entry["senders"] = {
            k: sum(s[k] for s in senders.values()) for k in next(iter(senders.values()))
        }
    entry["logger"] = _logger_meta(chain.opts)  # deferred, live or down
    if acc.logevents is None:
        entry["pages"] = [entry["html"]] if "html" in entry else []
        acc.logevents = entry
        return
    total = acc.logevents
    for k in ("count", "verified", "calls"):
        total[k] = total.get(k, 0) + entry.get(k, 0)
    for t, n in entry.get("by_type", {}).items():
        total["by_type"][t] = total["by_type"].get(t, 0) + n
    if "html" in entry:
        total.setdefault("pages", []).append(entry["html"])


def _finish(acc: _Acc, run_dir: Path, cfg: RunConfig) -> dict[str, Any]:
    """Measure a finished scenario (every repeat) and write its logs and captures."""
    res = scenario_results(
        acc.scenario,
        acc.trace,
        failures=acc.failures,
        placed=acc.done,
        placed_calls=acc.placed,
    )
    acc.work.mkdir(parents=True, exist_ok=True)
    logs = write_logs(acc.trace, acc.work)
    _merge_keylogs(acc)
    keylog = acc.work / "keys.log"
    files: dict[str, Any] = {
        "logs": {k: str(p.relative_to(run_dir)) for k, p in logs.items()},
        "keylog": str(keylog.relative_to(run_dir)),
    }
    if cfg.captures:
        cap = write_captures(acc.trace, acc.work, keylog=keylog)
        files["pcaps"] = {k: str(p.relative_to(run_dir)) for k, p in cap.files.items()}
        if cap.skipped:
            files["capture_notes"] = "; ".join(f"{k}: {v}" for k, v in cap.skipped.items())
    chain = acc.chain
    if isinstance(chain, ProcessChain):
        files["bundles"] = str((acc.work / "bundles").relative_to(run_dir))
        files["stderr"] = str((acc.work / "stderr").relative_to(run_dir))
        if chain.lab is not None:
            captured = _convert_real_captures(chain.lab.capture_files, chain.addresses, keylog)
            files["captured"] = {k: str(p.relative_to(run_dir)) for k, p in captured.items()}
            if chain.lab.capture_note:
                files["captured_notes"] = chain.lab.capture_note
    res["files"] = files
    res["isolation"] = _isolation(chain) if chain is not None else None
    n = max(1, res["calls"])
    res["cpu_us_per_call"] = {k: v / n * 1e6 for k, v in sorted(acc.cpu.items()) if v > 0}
    res["wall_seconds"] = time.perf_counter() - acc.started
    res["errors"] = acc.errors
    res["addresses"] = chain.addresses if chain is not None else {}
    res["between_runs"] = between_runs(res["call_records"])
    res["implementations"] = labels(chain.topology) if chain is not None else {}
    if acc.logevents is not None:
        res["logevents"] = acc.logevents
    return res


def _convert_real_captures(
    raw: dict[str, Path], addresses: dict[str, str], keylog: Path
) -> dict[str, Path]:
    """The capture tool's `captured-hopN.pcap` → `captured-hopN.pcapng` with the hosts' names
    and the key log inside (the raw file is removed: the pcapng has every frame of it). A file
    the tool left unreadable stays as it is."""
    names = {ip: host for host, ip in addresses.items()}
    out: dict[str, Path] = {}
    for hop, path in raw.items():
        dst = path.with_suffix(".pcapng")
        try:
            convert_capture(path, dst, names=names, keylog=keylog)
        except ValueError:
            out[hop] = path
            continue
        path.unlink()
        out[hop] = dst
    return out


def _merge_keylogs(acc: _Acc) -> None:
    """The repeats' TLS key logs appended to the scenario's `keys.log` (the pcaps are of
    every repeat)."""
    main = acc.work / "keys.log"
    extra = [p for p in acc.keylogs[1:] if p.is_file()]
    if not extra:
        return
    with main.open("a", encoding="utf-8") as f:
        for p in extra:
            f.write(p.read_text(encoding="utf-8"))


def _isolation(chain: RunningChain | ProcessChain) -> str:
    if isinstance(chain, ProcessChain):
        return "netns" if chain.lab is not None else "processes"
    return "in-process"


async def _paced(calls: list[tuple[_Live, int]], rate: float, progress: Progress) -> None:
    """Place `calls` at `rate` per second, each in its own task; wait for all of them.
    The first failure of the run itself (an element process died) cancels the rest."""
    tasks: list[asyncio.Task[None]] = []
    t0 = time.perf_counter()
    try:
        for k, (live, i) in enumerate(calls):
            delay = t0 + k / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            for t in tasks:  # a task that failed the run stops the pacing at once
                exc = t.exception() if t.done() and not t.cancelled() else None
                if exc is not None:
                    raise exc
            tasks.append(asyncio.ensure_future(_call(live, i, progress)))
        if tasks:
            await asyncio.gather(*tasks)
    finally:
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


async def run_set(
    accs: list[_Acc], repeat: int, base: Topology, cfg: RunConfig, progress: Progress
) -> None:
    """One repeat of the run: every scenario's chain up at once, all calls round-robin over
    the scenarios at the rate (or, `cfg.interleave` false, one scenario after the other).

    Why interleave: on a shared machine the background load drifts during a run; interleaving
    gives every scenario the same share of it, so their differences are not the drift's. Cold
    calls are spread over the schedule and wait only for their own chain to be idle, so the
    other chains' calls load the machine for them as much as for the warm ones.
    """
    groups = [accs] if cfg.interleave else [[a] for a in accs]
    for group in groups:
        lives: list[_Live] = []
        try:
            for acc in group:
                lives.append(await _start_live(acc, repeat, base, cfg))
            for live in lives:  # element processes: the first calls alone, as before
                for i in range(len(live.cold_at) if not live.resettable else 0):
                    await _call(live, i, progress)
            paced = [
                (live, i)
                for i in range(cfg.calls)
                for live in lives
                if live.resettable or i not in live.cold_at
            ]
            await _paced(paced, cfg.rate, progress)
        finally:
            # all at once: a chain waiting for another's LogEvents to drain would idle on,
            # its pings and keep-alives crossing the moment its peers close
            closed = await asyncio.gather(
                *(_close_live(live, cfg.watch) for live in lives), return_exceptions=True
            )
            for exc in closed:
                if isinstance(exc, BaseException):
                    raise exc


COLD_DESIGN = (
    "cold calls spread evenly over each scenario's calls (the first is one) and placed in the "
    "same paced, interleaved schedule as the warm ones; before each, its chain waits until it "
    "has no call in flight, then every element closes its TCP/TLS connections and forgets its "
    "TLS sessions and the ESRP closes its LoST connection, so every hop opens anew with a full "
    "handshake while the other scenarios' calls keep the machine as loaded as for warm calls"
)
COLD_DESIGN_PROCESSES = (
    "element processes: cold calls are each scenario's first calls (one per caller location, "
    "so each PSAP's first), placed one at a time before the warm ones (the testbed cannot "
    "reset connections inside element processes)"
)


def _meta(cfg: RunConfig, topo: Topology, started: dt.datetime) -> dict[str, Any]:
    separate = cfg.chain.netns or cfg.chain.processes
    return {
        "started": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "ng911": __version__,
        "topology": f"{topo.name} ({topo.source})",
        "calls": cfg.calls,
        "rate": cfg.rate,
        "repeat": cfg.repeat,
        "interleaved": cfg.interleave,
        "cold_calls": cfg.cold_calls
        if cfg.cold_calls is not None
        else f"one per caller location ({len(topo.locations) or 1})",
        "cold_design": COLD_DESIGN_PROCESSES if separate else COLD_DESIGN,
        "lost_cache": cfg.chain.lost_cache,
        "t1": cfg.chain.t1,
        "hangup_after": cfg.chain.hangup_after,
        "impairments": [i.describe() for i in cfg.chain.impairments],
        "reconnect_after": cfg.chain.reconnect_after,
        "logger": _logger_meta(cfg.chain),
        "isolation": "netns" if cfg.chain.netns else ("processes" if separate else "in-process"),
        "platform": f"{platform.system()} {platform.release()} {platform.machine()}, "
        f"{os.cpu_count()} CPUs",
        "python": sys.version.split()[0],
        "percentiles": PERCENTILE_METHOD,
        "intervals": BOOTSTRAP_METHOD,
        "metrics": METRICS,
        "baseline": BASELINE,
        "interrupted": False,
    }


class _Interrupt:
    """The first Ctrl-C stops the calls and lets the run write what it measured (the
    chains close on the way out); a second one is the default KeyboardInterrupt."""

    def __init__(self) -> None:
        self.hit = False
        self._loop: asyncio.AbstractEventLoop | None = None

    def __enter__(self) -> _Interrupt:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()

        def on_sigint() -> None:
            self.hit = True
            loop.remove_signal_handler(signal.SIGINT)
            if task is not None:
                task.cancel()

        try:
            loop.add_signal_handler(signal.SIGINT, on_sigint)
            self._loop = loop
        except (NotImplementedError, RuntimeError, ValueError):
            pass  # not the main thread: Ctrl-C stays the default
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and not self.hit:
            self._loop.remove_signal_handler(signal.SIGINT)

    def swallow(self) -> bool:
        """After a CancelledError: True (and the task un-cancelled) when it was our Ctrl-C."""
        task = asyncio.current_task()
        if not self.hit or task is None:
            return False
        while task.cancelling():
            task.uncancel()
        return True


def _logger_meta(opts: ChainOptions) -> str:
    """How the run logged: off, down (injected), or on, sent live or after the calls."""
    if not opts.logger:
        return "off"
    if opts.logger_down:
        return "down"
    return "deferred" if opts.logger_defer else "live"


async def run_testbed(cfg: RunConfig) -> RunResult:
    """Run every selected scenario (`cfg.repeat` times); write results.json, calls.csv and
    report.html; return them. A Ctrl-C writes the report of the calls done so far.

    A watch (`cfg.watch`) is opened before the first chain starts, told `finished` once the
    report is written, and closed last, whatever happened."""
    try:
        result = await _run_testbed(cfg)
        if cfg.watch is not None:
            await cfg.watch.finished(result)
        return result
    finally:
        if cfg.watch is not None:
            await cfg.watch.close()


async def _run_testbed(cfg: RunConfig) -> RunResult:
    if cfg.calls < 1:
        raise ValueError("calls must be at least 1")
    if cfg.rate <= 0:
        raise ValueError("rate must be positive")
    if cfg.repeat < 1:
        raise ValueError("repeat must be at least 1")
    scenarios = select(cfg.scenarios)
    if cfg.baseline and BASELINE not in {s.name for s in scenarios}:
        _say(cfg.progress, f"adding {BASELINE!r} as the baseline (--no-baseline to skip)")
        scenarios = select([BASELINE, *(s.name for s in scenarios)])
    scenarios = with_implementations(scenarios, cfg.implementations)
    topo = load_topology(cfg.topology)
    # fail early on a topology that cannot carry a scenario, or a Kamailio that cannot run
    check_runnable(
        (load_topology(cfg.topology, s) for s in scenarios),
        processes=cfg.chain.processes or cfg.chain.netns,
    )
    if cfg.chain.netns and cfg.chain.impairments:
        raise TestbedError(
            "--impair relays run in the testbed's own namespace and cannot reach hosts in "
            "their namespaces (and this testbed does not drive tc netem): use --processes "
            "with --impair"
        )
    if cfg.chain.netns:
        reason = await asyncio.to_thread(unavailable_reason)
        if reason is not None:
            print(
                f"ng911 testbed: --netns unavailable ({reason}); "
                "falling back to --processes on loopback",
                file=cfg.progress or sys.stderr,
                flush=True,
            )
            cfg = dataclasses.replace(
                cfg, chain=dataclasses.replace(cfg.chain, netns=False, processes=True)
            )
    started = dt.datetime.now(dt.UTC)
    run_dir = cfg.out or Path("runs") / started.strftime("%Y%m%d-%H%M%S")
    run_dir.mkdir(parents=True, exist_ok=True)
    _say(
        cfg.progress,
        f"ng911 testbed: {len(scenarios)} scenarios × {cfg.calls} calls at {cfg.rate:g}/s"
        + (f", {cfg.repeat} times" if cfg.repeat > 1 else "")
        + f" on topology {topo.name}; writing {run_dir}",
    )
    results: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "meta": _meta(cfg, topo, started),
        "scenarios": {},
    }
    accs = [_Acc(s, run_dir / s.name, Trace(topo.with_scenario(s).roles)) for s in scenarios]
    separate = cfg.chain.processes or cfg.chain.netns
    with sigterm_exits() if separate else contextlib.nullcontext(), _Interrupt() as stop:
        try:
            if cfg.watch is not None:
                await cfg.watch.open()
            for repeat in range(1, cfg.repeat + 1):
                label = "all" if cfg.interleave else "scenarios"
                if cfg.repeat > 1:
                    label += f" {repeat}/{cfg.repeat}"
                progress = Progress(cfg.progress, label, cfg.calls * len(accs))
                await run_set(accs, repeat, topo, cfg, progress)
                progress.finish()
        except asyncio.CancelledError:
            if not stop.swallow():
                raise
            _say(cfg.progress, "\ninterrupted: writing the report of the calls measured so far")
    results["meta"]["interrupted"] = stop.hit
    for acc in accs:
        res = _finish(acc, run_dir, cfg)
        results["scenarios"][acc.scenario.name] = res
        _say(cfg.progress, format_scenario(res))
    add_baseline_diffs(results["scenarios"])
    _say(cfg.progress, "computing the per-hop intervals (bootstrap)…")
    results["hop_table"] = hop_table(results["scenarios"])
    write_results(results, run_dir / "results.json")
    write_calls_csv(results, run_dir / "calls.csv")
    write_report(results, run_dir / "report.html")
    _say(cfg.progress, "")
    _say(cfg.progress, format_table(results))
    _say(cfg.progress, "")
    _say(cfg.progress, format_hop_table(results))
    spread = format_between_runs(results)
    if spread:
        _say(cfg.progress, "")
        _say(cfg.progress, spread)
    return RunResult(run_dir, results)


def run(cfg: RunConfig) -> RunResult:
    return asyncio.run(run_testbed(cfg))


def scenario_names() -> list[str]:
    return [s.name for s in select(None)]


def describe(name: str) -> str:
    s = get_scenario(name)
    return f"{s.name:<13} {s.summary():<28} {s.description}"
