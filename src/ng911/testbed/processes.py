"""The call chain with every element in its own OS process (`ng911 testbed run --processes`).

Why: in one process the elements share an interpreter, a GIL and an event loop, so one
element's work delays another's and a hop's "transit" includes waiting for the loop. Here each
host of the topology is `python -m ng911 run --bundle DIR`, the same command an operator runs
on each machine: the run's plan (`ng911.testbed.plan`, the same the in-process launcher
starts) is exported as one bundle per host (`<scenario>/bundles/<host>/`, what `ng911 testbed
export` writes). With `--netns` each process also lives in its own network namespace
(`ng911.testbed.netns`), so every hop crosses a real interface.

How a child reports: `--events FILE` streams every observer event as JSON lines to FILE
through a bounded buffer, closed with one last line when the element stops
(`ng911.observe.eventlog`); `--ready` prints one JSON line
on stdout once it listens (a call taker or caller: once registered too); the caller takes
`--control`: one call request per stdin line, one answer per call on stdout. The testbed reads
the event files after stopping the children and feeds them to the same `Trace` as in-process
events, so measure, report and captures work unchanged (`mono` is CLOCK_MONOTONIC, one clock
for all processes of the machine).

Live observers (`live=[...]`: the console, `ng911 testbed run --processes --console`) get the
same events while the chain runs: a task tails every event file (`EventTail`, every
`LIVE_PERIOD` s; the children then write theirs every `LIVE_INTERVAL` s instead of 0.5 s) and
hands each new event, ordered by `mono` within a read, to each live observer. The tail reads
files the children write anyway, so a slow watcher never slows an element: it falls behind
and skips (bounded), counted in `ProcessChain.live_skipped`.

Every wait is bounded: a child's ready line (`ready_timeout`), each call (the answer timeout),
the stop (SIGTERM, then SIGKILL after `stop_timeout`). A child that exits while the chain runs
fails the run at once with its exit status and the tail of its stderr, never a hang.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import os
import shutil
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from ng911.node.bundle import BUNDLE_FILE
from ng911.node.serve import json_lines
from ng911.observe.eventlog import EventLogError, EventTail, read_events
from ng911.testbed.bundle import export_bundles
from ng911.testbed.errors import TestbedError
from ng911.testbed.impair import HopRelay
from ng911.testbed.netns import NetnsLab
from ng911.testbed.plan import (
    STOP_WAVES,
    AddressInUse,
    ChainOptions,
    ChainPlan,
    on_a_free_block,
)
from ng911.testbed.topology import HTTP_ROLES, Host, Topology

Observer = Callable[[Any], None]

STDERR_TAIL = 12  # lines of a dead child's stderr quoted in the error
# `logger_defer`: an element child sends its LogEvents once stopped, for up to this long
# (`ng911 run --logger-defer`); its stop is given that much more time before SIGKILL
DEFERRED_DRAIN = 30.0
LIVE_PERIOD = 0.1  # s between two reads of the event files for live observers
LIVE_INTERVAL = 0.1  # s: a watched child's `--events-interval` (its writer's period)
LIVE_BUDGET = 0.02  # s of reading and decoding per period at most (then the next period)
LIVE_READ = 256 << 10  # bytes one read of one file takes at most; more than 8x that: a jump


def defers_logging(opts: ChainOptions) -> bool:
    """Whether the element children queue their LogEvents until they stop."""
    return opts.logger and opts.logger_defer and not opts.logger_down


# ------------------------------------------------------------------------------ children


@dataclass(slots=True)
class CallOutcome:
    """A call the caller process placed: what `run._call` needs of a `CallRecord`."""

    call_id: str
    ok: bool
    status: int | None
    reason: str
    record: dict[str, Any] = field(default_factory=dict)


@dataclass(eq=False)
class Child:
    """One element process."""

    name: str
    role: str
    argv: list[str]
    config: Path
    events: Path
    stderr: Path
    proc: asyncio.subprocess.Process | None = None
    ready: asyncio.Future[dict[str, Any]] | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    pending: dict[int, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def stderr_tail(self, lines: int = STDERR_TAIL) -> str:
        try:
            text = self.stderr.read_text("utf-8", "replace")
        except OSError:
            return ""
        tail = [ln for ln in text.splitlines() if ln.strip()][-lines:]
        return "\n".join(f"    {ln[:300]}" for ln in tail)


def describe_exit(code: int | None) -> str:
    if code is None:
        return "is still running"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


_LIVE: set[ProcessChain] = set()


def _kill_leftovers() -> None:
    """atexit: no child outlives the testbed, even when the loop never ran `close()`."""
    for chain in list(_LIVE):
        for child in chain.children.values():
            if child.proc is not None and child.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(child.proc.pid, signal.SIGKILL)
        if chain.lab is not None:
            chain.lab.teardown()


atexit.register(_kill_leftovers)


@contextlib.contextmanager
def sigterm_exits() -> Iterator[None]:
    """While the block runs, SIGTERM (a CI timeout, `kill`) stops the run like Ctrl-C does:
    it becomes SystemExit in the main thread, so asyncio cancels the run, `close()` stops the
    children and removes the namespaces, and atexit catches anything left. Without it the
    default action kills the testbed at once and leaves its children (in their own sessions)
    and namespaces behind. The previous handler is restored afterwards; off the main thread,
    or when someone else handles SIGTERM, nothing changes."""

    def _term(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    try:
        previous = signal.getsignal(signal.SIGTERM)
        if previous not in (signal.SIG_DFL, None):
            yield
            return
        signal.signal(signal.SIGTERM, _term)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@dataclass(eq=False)
class ProcessChain:
    """A running chain of element processes; the `RunningChain` interface `run` uses."""

    topology: Topology
    addresses: dict[str, str]
    work: Path
    opts: ChainOptions
    observers: Sequence[Observer]
    children: dict[str, Child] = field(default_factory=dict)
    live: Sequence[Observer] = ()  # fed while the chain runs, from the tailed event files
    live_skipped: int = 0  # bytes of event files the live feed jumped over (it fell behind)
    _live_task: asyncio.Task[None] | None = None
    _tails: dict[Path, EventTail] = field(default_factory=dict)
    relays: list[HopRelay] = field(default_factory=list)
    claim: socket.socket | None = None
    lab: NetnsLab | None = None
    keylog: Path = Path("keys.log")
    ca_path: Path | None = None
    logevents_store: Path | None = None  # the logger bundle's store (None: no logger)
    errors: list[str] = field(default_factory=list)
    died: asyncio.Event = field(default_factory=asyncio.Event)
    death: str | None = None
    started: bool = False  # every child ready: the run proper
    stopping: bool = False
    closed: bool = False
    cpu: dict[str, float] = field(default_factory=dict)
    _next_call: int = 0

    # -- the run's view ------------------------------------------------------------------

    @property
    def caller(self) -> Child:
        return self.children[self.topology.by_role("caller")[0].name]

    async def place_call(self, lat: float, lon: float) -> CallOutcome:
        """Ask the caller process for one call; its outcome once the call is over."""
        self._raise_if_dead()
        child = self.caller
        assert child.proc is not None and child.proc.stdin is not None
        n = self._next_call
        self._next_call += 1
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        child.pending[n] = fut
        timeout = self.opts.answer_timeout + 5.0
        req = {"call": n, "lat": lat, "lon": lon, "hangup_after": self.opts.hangup_after}
        try:
            child.proc.stdin.write((json.dumps({**req, "timeout": timeout}) + "\n").encode())
            await child.proc.stdin.drain()
        except (ConnectionError, BrokenPipeError) as exc:
            child.pending.pop(n, None)
            self._raise_if_dead()
            raise TestbedError(f"cannot reach the caller process: {exc}") from None
        died = asyncio.ensure_future(self.died.wait())
        waiters: set[asyncio.Future[Any]] = {fut, died}
        try:
            done, _ = await asyncio.wait(
                waiters, timeout=timeout + 5.0, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            died.cancel()
            child.pending.pop(n, None)
        if fut in done:
            return _outcome(fut.result())
        self._raise_if_dead()
        raise TimeoutError(f"call {n}: the caller process did not answer in {timeout + 5.0:g} s")

    def cpu_seconds(self) -> dict[str, float]:
        return dict(self.cpu)

    def logger_stats(self) -> dict[str, dict[str, int]]:
        """The LogSenders live in the children: their counters are not seen from here."""
        return {}

    def _raise_if_dead(self) -> None:
        if self.death is not None:
            raise TestbedError(self.death)

    # -- start ---------------------------------------------------------------------------

    async def spawn(self, child: Child) -> None:
        err = child.stderr.open("wb")
        try:
            child.proc = await asyncio.create_subprocess_exec(
                *child.argv,
                # every child gets a pipe: the caller reads its calls from it, the others stop
                # when it closes (`--stop-with-parent`), so a testbed killed mid-run (SIGKILL,
                # a crash) leaves no element or service behind
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=err,
                start_new_session=True,  # Ctrl-C reaches the testbed, which stops them in order
            )
        finally:
            err.close()
        loop = asyncio.get_running_loop()
        child.ready = loop.create_future()
        child.tasks.append(asyncio.ensure_future(self._read(child)))
        child.tasks.append(asyncio.ensure_future(self._watch(child)))

    async def _read(self, child: Child) -> None:
        assert child.proc is not None and child.proc.stdout is not None
        async for _line, msg in json_lines(child.proc.stdout):
            if not isinstance(msg, dict):
                continue  # not ours (a library printing): ignore
            if "ready" in msg and child.ready is not None and not child.ready.done():
                child.ready.set_result(msg)
            elif "call" in msg:
                fut = child.pending.get(int(msg["call"]))
                if fut is not None and not fut.done():
                    fut.set_result(msg)

    async def _watch(self, child: Child) -> None:
        assert child.proc is not None
        code = await child.proc.wait()
        if self.stopping:
            return
        tail = child.stderr_tail()
        self.death = (
            f"element {child.name} ({child.role}, pid {child.pid}) {describe_exit(code)} "
            f"{'during the run' if self.started else 'while the chain started'}"
            + (f"; its stderr ends with:\n{tail}" if tail else "; no stderr")
        )
        self.died.set()
        exc = TestbedError(self.death)
        if child.ready is not None and not child.ready.done():
            child.ready.set_exception(exc)
        for c in self.children.values():
            for fut in c.pending.values():
                if not fut.done():
                    fut.set_exception(exc)

    async def wait_ready(self, children: Sequence[Child]) -> list[dict[str, Any]]:
        """Every one of `children` printed its ready line (bounded; a death fails at once)."""
        futs = [c.ready for c in children if c.ready is not None]
        try:
            async with asyncio.timeout(self.opts.ready_timeout):
                return list(await asyncio.gather(*futs))
        except TimeoutError:
            late = [c.name for c in children if c.ready is not None and not c.ready.done()]
            tails = "".join(
                f"\n  {c.name}:\n{c.stderr_tail(4)}"
                for c in children
                if c.name in late and c.stderr_tail(4)
            )
            raise TestbedError(
                f"elements not ready after {self.opts.ready_timeout:g} s: {', '.join(late)}" + tails
            ) from None

    # -- stop ----------------------------------------------------------------------------

    async def close(self) -> None:
        """Stop every child (SIGTERM; SIGKILL after `stop_timeout`), collect their events,
        tear the namespaces down. Safe to call twice."""
        if self.closed:
            return
        self.closed = True
        self.stopping = True
        try:
            try:
                await self._stop_children()
            finally:
                await self._stop_live()
            self._collect()
            for relay in self.relays:
                try:
                    await relay.close()
                except Exception as exc:
                    self.errors.append(f"closing relay {relay.name}: {type(exc).__name__}: {exc}")
            self._merge_keylogs()
        finally:
            if self.lab is not None:
                self.lab.stop_captures()
                self.lab.teardown()
            if self.claim is not None:
                self.claim.close()
            _LIVE.discard(self)

    async def _stop_children(self) -> None:
        running = [c for c in self.children.values() if c.proc and c.proc.returncode is None]
        for wave in STOP_WAVES:  # in waves, each stopped in parallel
            await asyncio.gather(*(self._stop(c) for c in running if c.role in wave))
        for c in self.children.values():
            code = c.proc.returncode if c.proc is not None else None
            if c.proc is not None and code not in (0, -signal.SIGTERM, -signal.SIGKILL):
                tail = c.stderr_tail(4)
                self.errors.append(
                    f"{c.name} (pid {c.pid}) {describe_exit(code)} when stopped"
                    + (f":\n{tail}" if tail else "")
                )
            for t in c.tasks:
                t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*c.tasks, return_exceptions=True)

    async def _stop(self, child: Child) -> None:
        proc = child.proc
        if proc is None or proc.returncode is not None:
            return
        if proc.stdin is not None:
            with contextlib.suppress(Exception):
                proc.stdin.close()
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        timeout = self.opts.stop_timeout
        if defers_logging(self.opts) and child.role not in HTTP_ROLES:
            timeout += DEFERRED_DRAIN
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            self.errors.append(
                f"{child.name} (pid {proc.pid}) ignored SIGTERM for "
                f"{timeout:g} s: killed, its event file is incomplete"
            )
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 2.0)

    def _collect(self) -> None:
        """Feed each child's event file to the observers (the scenario's Trace)."""
        if not self.opts.record_events:
            return  # nothing was recorded (ChainOptions.record_events)
        for c in self.children.values():
            if c.role in HTTP_ROLES:
                continue  # the ESRP reports LoST queries; LoST and the logger report nothing
            if not c.events.exists():
                code = c.proc.returncode if c.proc is not None else None
                self.errors.append(
                    f"{c.name}: no events (the process {describe_exit(code)} before writing them)"
                )
                continue
            try:
                ef = read_events(c.events)
            except (OSError, EventLogError) as exc:
                self.errors.append(f"{c.name}: unreadable events: {exc}")
                continue
            if not ef.complete:
                code = c.proc.returncode if c.proc is not None else None
                self.errors.append(
                    f"{c.name}: incomplete events ({len(ef.events)} read; the process "
                    f"{describe_exit(code)} before closing its event file)"
                )
            if ef.dropped:
                self.errors.append(
                    f"{c.name}: {ef.dropped} events dropped (its event buffer was full)"
                )
            self.cpu[c.name] = ef.cpu_seconds
            for obs in self.observers:
                extend: Callable[[Any], None] | None = getattr(obs, "extend", None)
                if extend is not None:
                    extend(ef.events)
                else:
                    for ev in ef.events:
                        obs(ev)

    def start_live(self) -> None:
        """Feed the live observers from the children's event files until `close`."""
        if self.live and self._live_task is None:
            self._live_task = asyncio.get_running_loop().create_task(self._feed_live())

    async def _feed_live(self) -> None:
        """Every `LIVE_PERIOD`: read what the children appended, within `LIVE_BUDGET` of CPU
        (the files in turn, the first one changing each period, so a flood in one costs the
        others nothing and the testbed's own loop stays free to pace the calls)."""
        turn = 0
        while True:
            await asyncio.sleep(LIVE_PERIOD)
            turn += 1
            self._read_live(turn, LIVE_BUDGET)

    def _read_live(self, turn: int, budget: float | None, rounds: int = 1) -> None:
        """One read of every event file (`rounds` reads while they give more), the files in
        turn from `turn`, stopping after `budget` s of CPU (None: no limit); the events, in
        time order, to each live observer."""
        files = [c.events for c in self.children.values() if c.role not in HTTP_ROLES]
        batch: list[Any] = []
        t0 = time.perf_counter()
        for k in range(len(files)):
            path = files[(turn + k) % len(files)]
            tail = self._tails.get(path)
            if tail is None:
                tail = self._tails[path] = EventTail(
                    path, max_read=LIVE_READ, max_backlog=8 * LIVE_READ
                )
            for _ in range(rounds):
                got = tail.read()
                batch.extend(got)
                if not got:
                    break
            if budget is not None and time.perf_counter() - t0 > budget:
                break
        self.live_skipped = sum(t.skipped for t in self._tails.values())
        batch.sort(key=_mono)  # the elements' files interleaved, in time order
        for ev in batch:
            for obs in self.live:
                try:
                    obs(ev)
                except Exception:  # a watcher's bug never stops the feed
                    pass

    async def _stop_live(self) -> None:
        """The children have stopped (their files are complete): one last read, so the live
        observers see the run's last events too (the last call's, and the closing ones),
        then the files are let go. Bounded: at most 16 reads of each file."""
        if self._live_task is None:
            return
        self._live_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._live_task
        try:
            self._read_live(0, None, rounds=16)
        finally:
            for t in self._tails.values():
                t.close()
            self._tails.clear()

    def _merge_keylogs(self) -> None:
        """One key log for the run, as in-process (tshark takes one file)."""
        parts = sorted((self.work / "bundles").glob("*/keys.log"))
        with self.keylog.open("wb") as out:
            for p in parts:
                with contextlib.suppress(OSError):
                    out.write(p.read_bytes())


def _mono(event: Any) -> float:
    return float(getattr(event, "mono", 0.0))


def _outcome(msg: Mapping[str, Any]) -> CallOutcome:
    if "error" in msg:
        if "timeout" in str(msg["error"]):
            raise TimeoutError(str(msg["error"]))
        return CallOutcome("", False, None, str(msg["error"]))
    rec = dict(msg.get("record") or {})
    return CallOutcome(
        call_id=str(rec.get("call_id", "")),
        ok=bool(msg.get("ok")),
        status=rec.get("status"),
        reason=str(rec.get("reason") or ""),
        record=rec,
    )


# ------------------------------------------------------------------------------ launch


def _python() -> list[str]:
    """This interpreter running the `ng911` command (the venv's, whatever PATH says)."""
    return [sys.executable, "-m", "ng911"]


async def start_processes(
    topo: Topology,
    work: Path,
    *,
    observers: Sequence[Observer] = (),
    opts: ChainOptions | None = None,
    lab: NetnsLab | None = None,
    attempts: int = 4,
    live: Sequence[Observer] = (),
) -> ProcessChain:
    """Start every host of `topo` as its own process (in `lab`'s namespaces when given).
    `observers` get every event once the chain stopped; `live` ones while it runs.

    On loopback, tries another 127.B block when a child cannot bind its addresses.
    """
    opts = opts or ChainOptions()
    if opts.impairments and lab is not None:
        raise TestbedError(
            "--impair relays run in the testbed's own namespace and cannot reach hosts "
            "in their namespaces: use --processes (loopback) with --impair"
        )

    async def start(plan: ChainPlan, claim: socket.socket | None) -> ProcessChain:
        return await start_plan_processes(
            plan, observers=observers, lab=lab, claim=claim, live=live
        )

    addresses = lab.addresses if lab is not None else None
    return await on_a_free_block(topo, work, opts, start, attempts=attempts, addresses=addresses)


async def start_plan_processes(
    plan: ChainPlan,
    *,
    observers: Sequence[Observer] = (),
    lab: NetnsLab | None = None,
    claim: socket.socket | None = None,
    live: Sequence[Observer] = (),
) -> ProcessChain:
    """Start `plan` as processes; on failure everything started is stopped (and `claim`
    closed) before the error is raised."""
    work = plan.work.resolve()  # children run in their bundles: absolute paths
    shutil.rmtree(work / "bundles", ignore_errors=True)
    (work / "events").mkdir(exist_ok=True)
    (work / "stderr").mkdir(exist_ok=True)
    obs = list(observers)
    relays = [HopRelay(**r.kwargs(), observers=[*obs, *live]) for r in plan.relays]
    chain = ProcessChain(
        topology=plan.topology,
        addresses=plan.addresses,
        work=work,
        opts=plan.options,
        observers=obs,
        live=list(live),
        relays=relays,
        claim=claim,
        lab=lab,
        keylog=plan.keylog,
        ca_path=plan.pki.ca.cert_path,
        logevents_store=None
        if plan.logger is None
        else work / "bundles" / plan.logger.host.name / plan.logger.store.name,
    )
    _LIVE.add(chain)
    try:
        for relay in relays:
            await relay.start()
        chain.start_live()  # the start-up's events (registrations, handshakes) too
        await _launch(chain, plan, lab)
        chain.started = True
    except BaseException:
        await chain.close()
        if chain.death is not None and "Address already in use" in chain.death and lab is None:
            raise AddressInUse(chain.death) from None
        raise
    return chain


def _child(chain: ProcessChain, host: Host, bundle: Path, lab: NetnsLab | None) -> Child:
    """`ng911 run --bundle` for one host, with what the testbed drives it by."""
    work, opts = chain.work, chain.opts
    events = work / "events" / f"{host.name}.jsonl"
    events.unlink(missing_ok=True)
    argv = [*_python(), "run", "--bundle", str(bundle), "--ready"]
    if host.role != "caller":  # the caller's stdin is its control channel: EOF ends it too
        argv.append("--stop-with-parent")
    if host.role not in HTTP_ROLES:
        if opts.record_events:
            argv += ["--events", str(events)]
            if chain.live:  # watched live: written in smaller, more frequent steps
                argv += ["--events-interval", repr(LIVE_INTERVAL)]
        if opts.element_logs is None:
            # no per-event log on stderr: the event file (or nothing) is the record; with
            # events off too, that log was ~12 % of the process chain's CPU per call
            argv.append("--quiet")
    if host.role == "caller":
        argv.append("--control")
        if opts.reconnect_after is not None:
            argv += ["--idle-timeout", repr(opts.reconnect_after)]
    if host.role == "esrp" and opts.lost_cache:
        argv.append("--lost-cache")
    if defers_logging(opts) and host.role not in HTTP_ROLES:
        argv += ["--logger-defer", repr(DEFERRED_DRAIN)]
    if lab is not None:
        argv = lab.exec_prefix(host.name) + argv
    config = bundle / BUNDLE_FILE
    child = Child(host.name, host.role, argv, config, events, work / "stderr" / f"{host.name}.log")
    chain.children[host.name] = child
    return child


async def _launch(chain: ProcessChain, plan: ChainPlan, lab: NetnsLab | None) -> None:
    """Dependency order, in two waves of parallel starts:

    1. the servers nothing depends on at start: LoST, the logger, the PSAPs, the VSP proxy;
    2. those that talk to wave 1 as they start: the ESRP (its OPTIONS pings to the PSAPs;
       LoST's URL is planned), the call takers (REGISTER with their PSAP) and the caller
       (REGISTERs with the VSP).
    A host the plan leaves `down` (and LoST with `lost_down`, the logger with `logger_down`)
    is never started.
    """
    topo, opts = plan.topology, plan.options
    if lab is not None and opts.real_captures:
        await lab.start_captures(chain.work)
    bundles = export_bundles(plan, chain.work / "bundles")
    lost = plan.lost.host
    wave1 = [] if opts.lost_down else [_child(chain, lost, bundles[lost.name], lab)]
    if plan.logger is not None and plan.logger_runs:
        wave1.append(_child(chain, plan.logger.host, bundles[plan.logger.host.name], lab))
    wave2: list[Child] = []
    for name in plan.started():
        host = topo.host(name)
        child = _child(chain, host, bundles[name], lab)
        (wave1 if host.role in ("psap", "vsp") else wave2).append(child)
    for c in wave1:
        await chain.spawn(c)
    await chain.wait_ready(wave1)
    for c in wave2:
        await chain.spawn(c)
    await chain.wait_ready(wave2)
