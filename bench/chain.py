"""The whole NG-9-1-1 call chain in one process: calls per second, setup delay, CPU per call.

caller → VSP → ESRP (+ LoST over http/https) → psapd → call taker, every element an ng911
element on its own loopback address (the testbed's NYC topology, `open_chain`) in ONE process
and event loop (so the figures are the cost of the whole chain on one core, all five SIP
elements plus the LoST server and client). A call is the full dialog: INVITE (multipart SDP +
PIDF-LO) → 100/180/200 → ACK → BYE → 200, from a random point near a random one of the
topology's caller locations (every call asks LoST: the chain's LoST cache is off). The
cyclic collector is treated as `ng911 run` treats it: `gc.freeze()` after the warm-up and
again every second (`ng911.node.memory.GcFreezer`), and the loop is the one `ng911 run` takes
(`--loop auto`: uvloop when installed; 7-13 % less CPU per call over `tls-all` than asyncio's
in alternated runs).

Two runs per scenario (`plain`: UDP everywhere, LoST http; `tls-all`: mutual TLS on every
hop, LoST https with client certificates; TLS connections are set up by warm-up calls and
then reused, as in an ESInet):
- latency: calls one at a time; setup delay INVITE→180 and INVITE→200 at the caller (RFC
  6076 Session Request Delay), p50/p99;
- throughput: `--concurrency` calls in flight; calls per second completed, and CPU per call:
  whole process (getrusage) and per element (`time.thread_time` around each element's
  handlers; LoST server/client CPU and the event loop's own work are only in the total);
  and what the calls still hold at the end (`held`, kB of resident memory per call, and
  GC-tracked objects per call in the JSON), while their transactions wait out 64*T1.

`--processes`: the same chain with every element its own OS process (`ng911 run --bundle`,
the testbed's `--processes` launcher, `ng911.testbed.processes`; like the one-process run,
the elements record no events: `ChainOptions(record_events=False)`), the caller process
placing `--concurrency` calls at once on the bench's requests; cps, and CPU per call summed
over the processes (/proc); and, before the calls, what the processes spend idle (`IDLE_SECONDS`
with no call: timers only, ms of CPU per second over all of them, /proc).

    .venv/bin/python bench/chain.py [--quick] [--calls N] [--concurrency C] [--processes]
                                    [--loop auto|uvloop|asyncio] [--callgrind N1,N2]

`--callgrind N1,N2`: instructions per call, a figure that stays put on a busy machine where
CPU time moves 5-15 % between runs: each scenario run once more in one process under
`valgrind --tool=callgrind` with N1 and with N2 throughput calls (no latency calls), the two
totals differenced so that start-up, handshakes and warm-up cancel out (`rig.callgrind_per_call`,
PYTHONHASHSEED=0 for repeatable hashing). Work driven by the clock (the overload sampler, the
collector freeze every second) grows with valgrind's ~50x longer run and is counted too: read
it as an A/B between builds, not as CPU time. ~1 minute per 100 calls per scenario; writes
bench/results/chain-callgrind.json.

Prints the runs, then a table of what | ng911 | goal (issue 16: one process tls-all >= 500
cps; --processes >= 1,000), and writes bench/results/chain.json.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import resource
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from goals import goal_row, print_table
from ng911.interop.procs import cpu_seconds
from ng911.node.loop import LOOPS, resolve_loop
from ng911.node.loop import run as run_on_loop
from ng911.node.memory import GcFreezer
from ng911.testbed.launcher import RunningChain, open_chain
from ng911.testbed.plan import ChainOptions
from ng911.testbed.processes import ProcessChain, start_processes
from ng911.testbed.scenarios import get_scenario
from ng911.testbed.topology import CallLocation, load_topology
from rig import callgrind_per_call, write_result

# issue 16's goals for the whole chain, tls-all (calls per second)
GOALS = {"one process": 500, "processes": 1000}
IDLE_SECONDS = 5.0  # /proc counts CPU in 10 ms ticks: long enough for ~1 ms/s per process


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def rss_kb() -> int:
    """This process's resident memory (kB, /proc): what the held calls cost, about."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def tracked_objects() -> int:
    """Objects the cyclic collector tracks, the frozen ones (`gc.freeze()`) included."""
    return len(gc.get_objects()) + gc.get_freeze_count()


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))
    return s[k]


def point(rng: random.Random, locations: tuple[CallLocation, ...]) -> tuple[float, float]:
    """A point near a caller location (±~100 m: St. George Terminal is on the shore, and a
    point in the water would go to the default PSAP): a new location every call."""
    loc = rng.choice(locations)
    return loc.lat + rng.uniform(-0.001, 0.001), loc.lon + rng.uniform(-0.001, 0.001)


def role(chain: RunningChain, name: str) -> str:
    """The table's column of an element: its role, psapd for a PSAP."""
    r = chain.plan.role(name)
    return "psapd" if r == "psap" else r


async def latency_run(chain: RunningChain, calls: int, rng: random.Random) -> dict[str, Any]:
    d180: list[float] = []
    d200: list[float] = []
    failed = 0
    for _ in range(calls):
        rec = await chain.place_call(*point(rng, chain.topology.locations), timeout=10)
        if rec.setup_180 is None or rec.setup_200 is None or rec.status != 200:
            failed += 1
            continue
        d180.append(rec.setup_180 * 1000)
        d200.append(rec.setup_200 * 1000)
    return {
        "calls": calls,
        "failed": failed,
        "invite_180_ms": {
            "p50": pct(d180, 50),
            "p99": pct(d180, 99),
            "mean": statistics.fmean(d180) if d180 else None,
        },
        "invite_200_ms": {
            "p50": pct(d200, 50),
            "p99": pct(d200, 99),
            "mean": statistics.fmean(d200) if d200 else None,
        },
    }


async def place_calls(
    place: Callable[[], Awaitable[tuple[int | None, bool]]], calls: int, concurrency: int
) -> tuple[int, dict[int, int], float]:
    """`calls` calls of `place` (its final status, and whether the call went right),
    `concurrency` at once: (calls that went right, count per status, wall seconds)."""
    sem = asyncio.Semaphore(concurrency)
    ok = 0
    statuses: dict[int, int] = {}

    async def one() -> None:
        nonlocal ok
        async with sem:
            status, good = await place()
            statuses[status or 0] = statuses.get(status or 0, 0) + 1
            ok += good

    t0 = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(calls)))
    return ok, statuses, time.perf_counter() - t0


def outcome(
    ok: int, statuses: dict[int, int], wall: float, total_cpu: float, per_role: dict[str, float]
) -> dict[str, Any]:
    """A throughput run's figures: calls completed, cps, CPU per call (total, per role)."""
    return {
        "completed": ok,
        "statuses": statuses,
        "seconds": wall,
        "cps": ok / wall if wall else 0.0,
        "process_cpu_us_per_call": total_cpu / max(ok, 1) * 1e6,
        "element_cpu_us_per_call": {k: v / max(ok, 1) * 1e6 for k, v in per_role.items()},
    }


async def throughput_run(
    chain: RunningChain, calls: int, concurrency: int, rng: random.Random
) -> dict[str, Any]:
    async def place() -> tuple[int | None, bool]:
        rec = await chain.place_call(*point(rng, chain.topology.locations), timeout=20)
        return rec.status, rec.status == 200 and rec.ended_by == "caller"

    before = chain.cpu_seconds()
    c0 = cpu()
    ok, statuses, wall = await place_calls(place, calls, concurrency)
    total_cpu = cpu() - c0
    per_role: dict[str, float] = {}
    for name, used in chain.cpu_seconds().items():
        per_role[role(chain, name)] = per_role.get(role(chain, name), 0.0) + used - before[name]
    return {
        "calls": calls,
        "concurrency": concurrency,
        **outcome(ok, statuses, wall, total_cpu, per_role),
    }


async def scenario(name: str, calls: int, latency_calls: int, concurrency: int) -> dict[str, Any]:
    rng = random.Random(911)
    chain = await open_chain(
        name,
        takers=max(2, concurrency // 2),
        hangup_after=0.001,
        settings={"psap": {"queue_size": 1000}},
        log_keep=0,
        keep_events=False,
    )
    freezer = GcFreezer()
    try:
        for loc in chain.topology.locations:  # warm-up: TLS handshakes, first LoST query
            await chain.place_call(loc.lat, loc.lon, timeout=10)
        # what a long-running element does after start-up (`ng911 run` does it too): move
        # everything alive now out of the cyclic GC's sight; the collector otherwise walks
        # lxml/shapely/aiohttp's module-level objects again and again (about 2x the CPU here)
        gc.collect()
        gc.freeze()
        freezer.every(1.0)  # and again every second, as `ng911 run --gc-freeze 1` does
        lat_res = await latency_run(chain, latency_calls, rng)
        gc.collect()
        rss0, objects0 = rss_kb(), tracked_objects()
        thr = await throughput_run(chain, calls, concurrency, rng)
        # what the calls still hold at the end: their transactions wait 64*T1 (32 s) after
        # an answered INVITE, and the testbed keeps a call record per call
        gc.collect()
        thr["held_kb_per_call"] = round((rss_kb() - rss0) / max(calls, 1), 1)
        thr["held_objects_per_call"] = round((tracked_objects() - objects0) / max(calls, 1))
    finally:
        freezer.stop()
        await chain.close()
    return {
        "scenario": name,
        "hops": list(chain.topology.transports),
        "lost": chain.topology.lost,
        "latency": lat_res,
        "throughput": thr,
    }


async def processes_scenario(
    name: str, calls: int, concurrency: int, takers: int
) -> dict[str, Any]:
    """The chain as OS processes: `calls` calls, `concurrency` at once, from the caller
    process; every element's CPU read from /proc around the run. `takers` per PSAP, each a
    process of its own (psapd queues the calls no taker is free for)."""
    rng = random.Random(911)
    topo = load_topology().with_scenario(get_scenario(name)).with_takers(takers)
    opts = ChainOptions(
        hangup_after=0.001,
        settings={"psap": {"queue_size": 1000}},
        logger=False,
        processes=True,
        answer_timeout=20.0,
        record_events=False,  # as the one-process run (keep_events=False): capacity only
    )
    with tempfile.TemporaryDirectory(prefix="ng911-chain-procs-") as tmp:
        chain = await start_processes(topo, Path(tmp), opts=opts)
        try:
            for loc in topo.locations:  # warm-up: TLS handshakes, first LoST query
                await chain.place_call(loc.lat, loc.lon)
            return {
                "scenario": name,
                "hops": list(topo.transports),
                "lost": topo.lost,
                "idle": await idle_cpu(chain),
                "throughput": await processes_throughput(chain, calls, concurrency, rng),
            }
        finally:
            await chain.close()


async def idle_cpu(chain: ProcessChain) -> dict[str, Any]:
    """CPU the chain's processes spend with no call at all (their timers), all together: on
    2 cores, what a few dozen idle processes take is taken from the busy ones."""
    pids = [c.pid for c in chain.children.values() if c.pid is not None]
    await asyncio.sleep(1.0)  # the warm-up's last transactions and timers
    before = sum(cpu_seconds(pid) for pid in pids)
    t0 = time.perf_counter()
    await asyncio.sleep(IDLE_SECONDS)
    used = sum(cpu_seconds(pid) for pid in pids) - before
    wall = time.perf_counter() - t0
    return {"processes": len(pids), "cpu_ms_per_s": round(1000 * used / wall, 1)}


async def processes_throughput(
    chain: ProcessChain, calls: int, concurrency: int, rng: random.Random
) -> dict[str, Any]:
    async def place() -> tuple[int | None, bool]:
        out = await chain.place_call(*point(rng, chain.topology.locations))
        return out.status, out.ok and out.status == 200

    pids = {c.name: c.pid for c in chain.children.values() if c.pid is not None}
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    ok, statuses, wall = await place_calls(place, calls, concurrency)
    per_role: dict[str, float] = {}
    for c in chain.children.values():
        if c.name in pids:
            r = "psapd" if c.role == "psap" else c.role
            used = cpu_seconds(pids[c.name]) - before[c.name]
            per_role[r] = per_role.get(r, 0.0) + used
    return {
        "calls": calls,
        "concurrency": concurrency,
        **outcome(ok, statuses, wall, sum(per_role.values()), per_role),
    }


def goal_rows(results: list[dict[str, Any]], procs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The tls-all rows against issue 16's goals (bench/goals.py); a mode not run is said so."""
    rows = []
    for label, runs, key in (
        ("whole chain in one process, tls-all", results, "one process"),
        ("whole chain as processes (`--processes`), tls-all", procs, "processes"),
    ):
        r = next((r for r in runs if r["scenario"] == "tls-all"), None)
        cps = r["throughput"]["cps"] if r is not None else None
        cpu = r["throughput"]["process_cpu_us_per_call"] if r is not None else None
        note = f"{cpu:,.0f} µs CPU per call" if cpu is not None else None
        if note is not None and r is not None and "loop" in r:
            note += f", {r['loop']}"
        rows.append(goal_row(label, cps, "cps", GOALS[key], note=note))
    return rows


def procs_table(procs: list[dict[str, Any]]) -> str:
    roles = ["caller", "vsp", "esrp", "lost", "psapd", "calltaker"]
    lines = [
        f"{'--processes':<12} {'cps':>7} {'cpu/call':>9}  "
        + " ".join(f"{r:>9}" for r in roles)
        + f"  {'idle ms/s':>10}"
    ]
    for r in procs:
        thr = r["throughput"]
        el = thr["element_cpu_us_per_call"]
        lines.append(
            f"{r['scenario']:<12} {thr['cps']:>7.1f} {thr['process_cpu_us_per_call']:>9.0f}  "
            + " ".join(f"{el.get(x, 0.0):>9.0f}" for x in roles)
            + f"  {r['idle']['cpu_ms_per_s']:>10.1f}"
        )
    return "\n".join(lines)


def table(results: list[dict[str, Any]]) -> str:
    roles = ["caller", "vsp", "esrp", "psapd", "calltaker"]
    lines = [
        f"{'scenario':<10} {'cps':>7} {'180 p50':>8} {'180 p99':>8} {'200 p50':>8} "
        f"{'200 p99':>8} {'cpu/call':>9}  " + " ".join(f"{r:>9}" for r in roles) + f" {'held':>7}",
        f"{'':<10} {'':>7} {'ms':>8} {'ms':>8} {'ms':>8} {'ms':>8} {'us':>9}  "
        + " ".join(f"{'us':>9}" for _ in roles)
        + f" {'kB/call':>7}",
    ]
    for r in results:
        lat, thr = r["latency"], r["throughput"]
        el = thr["element_cpu_us_per_call"]
        lines.append(
            f"{r['scenario']:<10} {thr['cps']:>7.1f} {lat['invite_180_ms']['p50']:>8.2f} "
            f"{lat['invite_180_ms']['p99']:>8.2f} {lat['invite_200_ms']['p50']:>8.2f} "
            f"{lat['invite_200_ms']['p99']:>8.2f} {thr['process_cpu_us_per_call']:>9.0f}  "
            + " ".join(f"{el.get(x, 0.0):>9.0f}" for x in roles)
            + f" {thr.get('held_kb_per_call', 0.0):>7.1f}"
        )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=600, help="throughput calls per scenario")
    ap.add_argument("--latency-calls", type=int, default=200, help="sequential calls")
    ap.add_argument("--concurrency", type=int, default=8, help="calls in flight")
    ap.add_argument("--quick", action="store_true", help="60 + 30 calls per scenario")
    ap.add_argument("--scenarios", default="plain,tls-all")
    ap.add_argument(
        "--processes",
        action="store_true",
        help="also run the chain as OS processes (the testbed's --processes)",
    )
    ap.add_argument(
        "--processes-concurrency",
        type=int,
        default=32,
        help="--processes: calls in flight at the caller process",
    )
    ap.add_argument(
        "--processes-takers", type=int, default=3, help="--processes: call takers per PSAP"
    )
    ap.add_argument(
        "--loop",
        choices=LOOPS,
        default="auto",
        help="the event loop of the one-process runs (default auto: uvloop when installed, "
        "as `ng911 run`); the --processes children take their own (auto)",
    )
    ap.add_argument(
        "--callgrind",
        metavar="N1,N2",
        help="instructions per call of each scenario in one process under callgrind, "
        "N1 and N2 calls differenced (writes bench/results/chain-callgrind.json)",
    )
    ap.add_argument("--no-write", action="store_true", help="do not write the JSON result")
    args = ap.parse_args()
    loop = resolve_loop(args.loop)
    if args.callgrind:
        return callgrind(
            args.callgrind, args.scenarios.split(","), args.concurrency, loop, not args.no_write
        )
    calls, lcalls = (60, 30) if args.quick else (args.calls, args.latency_calls)
    results = []
    for name in args.scenarios.split(","):
        results.append(run_on_loop(scenario(name, calls, lcalls, args.concurrency), loop))
        results[-1]["loop"] = loop
    procs = []
    if args.processes:
        for name in args.scenarios.split(","):
            procs.append(
                asyncio.run(
                    processes_scenario(
                        name, calls, args.processes_concurrency, args.processes_takers
                    )
                )
            )
    base = next((r for r in results if r["scenario"] == "plain"), None)
    if base is not None:
        for r in results:
            r["vs_plain"] = {
                "cps_ratio": r["throughput"]["cps"] / base["throughput"]["cps"],
                "invite_180_p50_ms_delta": r["latency"]["invite_180_ms"]["p50"]
                - base["latency"]["invite_180_ms"]["p50"],
                "cpu_per_call_ratio": r["throughput"]["process_cpu_us_per_call"]
                / base["throughput"]["process_cpu_us_per_call"],
            }
    print(f"one process, loop {loop}:")
    print(table(results))
    for r in results:
        if "vs_plain" in r and r["scenario"] != "plain":
            v = r["vs_plain"]
            print(
                f"{r['scenario']} vs plain: {v['cps_ratio']:.2f}x cps, "
                f"+{v['invite_180_p50_ms_delta']:.2f} ms INVITE->180 p50, "
                f"{v['cpu_per_call_ratio']:.2f}x CPU per call"
            )
    if procs:
        print(procs_table(procs))
    goals = goal_rows(results, procs)
    print_table(goals)
    out = {
        "bench": "chain",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "goals": goals,
        "results": results,
        "processes": procs,
    }
    if not args.no_write:
        write_result("chain", out)
    return 0


def callgrind_argv(scenario_name: str, concurrency: int, loop: str) -> list[str]:
    """This bench as `callgrind_per_call` runs it (it appends `--calls N`): one scenario in
    one process, throughput calls only, nothing written."""
    return [
        __file__, "--scenarios", scenario_name, "--latency-calls", "0",
        "--concurrency", str(concurrency), "--loop", loop, "--no-write",
    ]  # fmt: skip


def callgrind(spec: str, scenarios: list[str], concurrency: int, loop: str, write: bool) -> int:
    try:
        a, b = (int(x) for x in spec.split(","))
    except ValueError:
        raise SystemExit(f"--callgrind wants two call counts, N1,N2 (got {spec!r})") from None
    if not 0 < a < b:
        raise SystemExit(f"--callgrind wants 0 < N1 < N2 (got {spec!r})")
    os.environ.setdefault("PYTHONHASHSEED", "0")
    per_call: dict[str, float] = {}
    for name in scenarios:
        per_call[name] = callgrind_per_call(callgrind_argv(name, concurrency, loop), (a, b))
        print(f"callgrind {name}: {per_call[name]:,.0f} instructions per call (loop {loop})")
    if write:
        out = {
            "bench": "chain-callgrind",
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "loop": loop,
            "calls": [a, b],
            "concurrency": concurrency,
            "instructions_per_call": {k: round(v) for k, v in per_call.items()},
        }
        write_result("chain-callgrind", out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
