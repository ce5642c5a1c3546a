"""Run the scenarios: start the chain, place calls, trace everything, write the run directory.

For each scenario a fresh chain is started (`launcher.start_chain`), so the first calls are
truly cold: the first one opens the VSP→ESRP connection and the ESRP's HTTP connection to
LoST, and the first call to each PSAP opens that ESRP→PSAP connection, each with a full TLS
handshake on TLS hops. (The caller and the call takers registered at start, so hop 1 and
hop 4 are already open, as for a registered phone.) The cold calls, one per caller location
(one per borough, so one per PSAP), are placed one at a time; the warm calls follow at the
configured rate, cycling through the same locations. By default every scenario's chain is
up at once and the warm calls go round-robin across them (`run_interleaved`), so a machine's
drifting background load falls on all scenarios alike; `interleave=False` runs them in turn.

The run directory:

    runs/<UTC timestamp>/
      report.html  results.json
      <scenario>/hop1.jsonl .. hop4.jsonl  lost.jsonl   every message event, per hop
      <scenario>/hop1.pcap .. hop4.pcap  all.pcap       synthesised captures
      <scenario>/keys.log                                TLS key log (NSS format)
      <scenario>/pki/                                    the run's CA and certificates
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
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from ng911 import __version__
from ng911.observe.calls import Trace
from ng911.observe.output import write_logs
from ng911.observe.pcap import write_captures
from ng911.observe.stats import METRICS, PERCENTILE_METHOD
from ng911.testbed.errors import TestbedError
from ng911.testbed.launcher import RunningChain, start_chain, wait_registered
from ng911.testbed.logexport import export_logevents
from ng911.testbed.measure import add_baseline_diffs, scenario_results
from ng911.testbed.netns import NetnsLab, unavailable_reason
from ng911.testbed.plan import ChainOptions
from ng911.testbed.processes import ProcessChain, sigterm_exits, start_processes
from ng911.testbed.report import format_scenario, format_table, write_report, write_results
from ng911.testbed.scenarios import BASELINE, Scenario, get_scenario, select
from ng911.testbed.topology import Topology, load_topology


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
    interleave: bool = True  # all chains up at once, warm calls round-robin (see below)
    captures: bool = True


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
class _Live:
    """One scenario's running chain and what its calls produced."""

    scenario: Scenario
    work: Path
    trace: Trace
    chain: RunningChain | ProcessChain
    locations: list[tuple[float, float]]
    cold: int
    failures: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)
    logevents: dict[str, Any] | None = None  # the results entry (ng911.testbed.logexport)


async def _start_live(scenario: Scenario, base: Topology, run_dir: Path, cfg: RunConfig) -> _Live:
    topo = base.with_scenario(scenario)
    work = run_dir / scenario.name
    trace = Trace(topo.roles)
    locations = [(loc.lat, loc.lon) for loc in topo.locations] or [(40.7580, -73.9855)]
    cold = min(cfg.calls, len(locations) if cfg.cold_calls is None else cfg.cold_calls)
    opts = cfg.chain
    if opts.element_logs is not None:
        opts = dataclasses.replace(opts, element_logs=work / "elements")
    if not cfg.captures:
        opts = dataclasses.replace(opts, real_captures=False)
    if opts.processes or opts.netns:
        return _Live(
            scenario, work, trace, await _start_processes(topo, work, trace, opts), locations, cold
        )
    chain = await start_chain(topo, work, observers=[trace], opts=opts)
    try:
        await wait_registered(chain)
    except BaseException:
        await chain.close()
        raise
    return _Live(scenario, work, trace, chain, locations, cold)


async def _start_processes(
    topo: Topology, work: Path, trace: Trace, opts: ChainOptions
) -> ProcessChain:
    """The chain as element processes (in namespaces with `opts.netns`); ready once each
    process said so (call takers and caller registered)."""
    lab: NetnsLab | None = None
    try:
        if opts.netns:
            lab = NetnsLab(topo)
            await asyncio.to_thread(lab.setup)
        return await start_processes(topo, work, observers=[trace], opts=opts, lab=lab)
    except BaseException:
        if lab is not None:
            lab.teardown()
        raise


async def _call(live: _Live, i: int, progress: Progress) -> None:
    """Place call number `i` of a scenario (location i mod n) and wait for its end."""
    lat, lon = live.locations[i % len(live.locations)]
    try:
        rec = await live.chain.place_call(lat, lon)
    except TimeoutError:
        live.errors.append(f"call {i}: no end within the answer timeout")
        progress.update(False)
        return
    if not rec.ok:
        live.failures[rec.call_id] = rec.reason or f"status {rec.status}"
    progress.update(rec.ok)


async def _close_live(live: _Live, run_dir: Path) -> None:
    await asyncio.sleep(0.05)  # the last ACK/BYE transactions drain
    await live.chain.close()  # element processes: their events and CPU arrive here
    live.cpu = live.chain.cpu_seconds()
    live.errors.extend(live.chain.errors)
    await _export_logevents(live, run_dir)


async def _export_logevents(live: _Live, run_dir: Path) -> None:
    """The scenario's LogEvents, verified, to logevents.jsonl/.html (the chain has stopped:
    its logger has everything the elements sent)."""
    chain = live.chain
    if chain.logevents_store is None or chain.ca_path is None:
        return
    try:
        entry = await export_logevents(
            chain.logevents_store, live.work, [chain.ca_path], run_dir=run_dir
        )
    except Exception as exc:  # the run's measurements stand without its LogEvents
        live.errors.append(f"LogEvents: {type(exc).__name__}: {exc}")
        return
    if entry is None:
        entry = {"count": 0, "verified": 0, "by_type": {}, "calls": 0}
    senders = chain.logger_stats()
    if senders:  # in one process: the elements' LogSender counters, summed
        entry["senders"] = {
            k: sum(s[k] for s in senders.values()) for k in next(iter(senders.values()))
        }
    entry["logger"] = _logger_meta(chain.opts)  # deferred, live or down
    live.logevents = entry


def _finish(live: _Live, run_dir: Path, cfg: RunConfig) -> dict[str, Any]:
    """Measure a finished scenario and write its logs and captures."""
    res = scenario_results(
        live.scenario,
        live.trace,
        cold_calls=live.cold,
        failures=live.failures,
        placed=cfg.calls,
    )
    logs = write_logs(live.trace, live.work)
    files: dict[str, Any] = {
        "logs": {k: str(p.relative_to(run_dir)) for k, p in logs.items()},
        "keylog": str((live.work / "keys.log").relative_to(run_dir)),
    }
    if cfg.captures:
        cap = write_captures(live.trace, live.work)
        files["pcaps"] = {k: str(p.relative_to(run_dir)) for k, p in cap.files.items()}
        if cap.skipped:
            files["capture_notes"] = "; ".join(f"{k}: {v}" for k, v in cap.skipped.items())
    chain = live.chain
    if isinstance(chain, ProcessChain):
        files["bundles"] = str((live.work / "bundles").relative_to(run_dir))
        files["stderr"] = str((live.work / "stderr").relative_to(run_dir))
        if chain.lab is not None:
            files["captured"] = {
                k: str(p.relative_to(run_dir)) for k, p in chain.lab.capture_files.items()
            }
            if chain.lab.capture_note:
                files["captured_notes"] = chain.lab.capture_note
    res["files"] = files
    res["isolation"] = _isolation(chain)
    n = max(1, res["calls"])
    res["cpu_us_per_call"] = {k: v / n * 1e6 for k, v in sorted(live.cpu.items()) if v > 0}
    res["wall_seconds"] = time.perf_counter() - live.started
    res["errors"] = live.errors
    res["addresses"] = live.chain.addresses
    if live.logevents is not None:
        res["logevents"] = live.logevents
    return res


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


async def run_scenario(
    scenario: Scenario,
    base: Topology,
    run_dir: Path,
    cfg: RunConfig,
) -> dict[str, Any]:
    """One scenario alone: start its chain, cold calls one by one, warm calls at the rate."""
    progress = Progress(cfg.progress, scenario.name, cfg.calls)
    live = await _start_live(scenario, base, run_dir, cfg)
    try:
        for i in range(live.cold):  # alone: nothing else warms the connections meanwhile
            await _call(live, i, progress)
        await _paced([(live, i) for i in range(live.cold, cfg.calls)], cfg.rate, progress)
    finally:
        await _close_live(live, run_dir)
    progress.finish()
    return _finish(live, run_dir, cfg)


async def run_interleaved(
    scenarios: list[Scenario], base: Topology, run_dir: Path, cfg: RunConfig
) -> dict[str, dict[str, Any]]:
    """Every scenario's chain up at once; warm calls round-robin over the scenarios.

    Why: on a shared machine the background load drifts during a run; interleaving gives
    every scenario the same share of it, so their differences are not the drift's. Cold calls
    are still placed one at a time, scenario after scenario, with nothing else running.
    """
    progress = Progress(cfg.progress, "all", cfg.calls * len(scenarios))
    lives: list[_Live] = []
    try:
        for s in scenarios:
            lives.append(await _start_live(s, base, run_dir, cfg))
        for live in lives:
            for i in range(live.cold):
                await _call(live, i, progress)
        warm = [
            (live, i)
            for i in range(max(lv.cold for lv in lives), cfg.calls)
            for live in lives
            if i >= live.cold
        ]
        await _paced(warm, cfg.rate, progress)
    finally:
        # all at once: a chain waiting for another's LogEvents to drain would idle on,
        # its pings and keep-alives crossing the moment its peers close
        closed = await asyncio.gather(
            *(_close_live(live, run_dir) for live in lives), return_exceptions=True
        )
        for exc in closed:
            if isinstance(exc, BaseException):
                raise exc
    progress.finish()
    return {live.scenario.name: _finish(live, run_dir, cfg) for live in lives}


def _meta(cfg: RunConfig, topo: Topology, started: dt.datetime) -> dict[str, Any]:
    return {
        "started": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "ng911": __version__,
        "topology": f"{topo.name} ({topo.source})",
        "calls": cfg.calls,
        "rate": cfg.rate,
        "interleaved": cfg.interleave,
        "cold_calls": cfg.cold_calls
        if cfg.cold_calls is not None
        else f"one per caller location ({len(topo.locations) or 1})",
        "lost_cache": cfg.chain.lost_cache,
        "t1": cfg.chain.t1,
        "hangup_after": cfg.chain.hangup_after,
        "impairments": [i.describe() for i in cfg.chain.impairments],
        "reconnect_after": cfg.chain.reconnect_after,
        "logger": _logger_meta(cfg.chain),
        "isolation": "netns"
        if cfg.chain.netns
        else ("processes" if cfg.chain.processes else "in-process"),
        "platform": f"{platform.system()} {platform.release()} {platform.machine()}, "
        f"{os.cpu_count()} CPUs",
        "python": sys.version.split()[0],
        "percentiles": PERCENTILE_METHOD,
        "metrics": METRICS,
        "baseline": BASELINE,
    }


def _logger_meta(opts: ChainOptions) -> str:
    """How the run logged: off, down (injected), or on, sent live or after the calls."""
    if not opts.logger:
        return "off"
    if opts.logger_down:
        return "down"
    return "deferred" if opts.logger_defer else "live"


async def run_testbed(cfg: RunConfig) -> RunResult:
    """Run every selected scenario; write results.json and report.html; return them."""
    if cfg.calls < 1:
        raise ValueError("calls must be at least 1")
    if cfg.rate <= 0:
        raise ValueError("rate must be positive")
    scenarios = select(cfg.scenarios)
    if cfg.baseline and BASELINE not in {s.name for s in scenarios}:
        _say(cfg.progress, f"adding {BASELINE!r} as the baseline (--no-baseline to skip)")
        scenarios = select([BASELINE, *(s.name for s in scenarios)])
    topo = load_topology(cfg.topology)
    for s in scenarios:  # fail early on a topology that cannot carry a scenario
        load_topology(cfg.topology, s)
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
        f"ng911 testbed: {len(scenarios)} scenarios × {cfg.calls} calls at {cfg.rate:g}/s "
        f"on topology {topo.name}; writing {run_dir}",
    )
    results: dict[str, Any] = {"meta": _meta(cfg, topo, started), "scenarios": {}}
    separate = cfg.chain.processes or cfg.chain.netns
    with sigterm_exits() if separate else contextlib.nullcontext():
        if cfg.interleave and len(scenarios) > 1:
            for name, res in (await run_interleaved(scenarios, topo, run_dir, cfg)).items():
                results["scenarios"][name] = res
                _say(cfg.progress, format_scenario(res))
        else:
            for s in scenarios:
                res = await run_scenario(s, topo, run_dir, cfg)
                results["scenarios"][s.name] = res
                _say(cfg.progress, format_scenario(res))
    add_baseline_diffs(results["scenarios"])
    write_results(results, run_dir / "results.json")
    write_report(results, run_dir / "report.html")
    _say(cfg.progress, "")
    _say(cfg.progress, format_table(results))
    return RunResult(run_dir, results)


def run(cfg: RunConfig) -> RunResult:
    return asyncio.run(run_testbed(cfg))


def scenario_names() -> list[str]:
    return [s.name for s in select(None)]


def describe(name: str) -> str:
    s = get_scenario(name)
    return f"{s.name:<13} {s.summary():<28} {s.description}"
