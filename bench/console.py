"""Does a browser watching the live console slow the calls? Setup delay and CPU per call of
the chain with viewers of the console's event stream that stall, crawl, reconnect or read.

The chain and the console run in this process exactly as `ng911 console` runs them
(`Console(scenario)`: the chain's observer feeds the hub, the state snapshots every 0.25 s,
the event stream on ng911's own HTTP/1.1 server). The viewers run in a second process, this
script with `--agent URL` (driven over its stdin), so their CPU is not counted against the
chain's. The conditions:

- `none`: no viewer;
- `stalled`: one viewer opens /api/events and never reads a byte (its socket's buffers fill,
  then its bounded queue drops frames);
- `slow`: one viewer reads 256 bytes every 100 ms;
- `reconnect`: one viewer connects, reads a little, disconnects and connects again, in a
  loop (each connection gets the catch-up frames again);
- `normal3`: three viewers reading everything.

Each round runs every condition once, in a seeded shuffled order (drift over the run hits
all conditions alike); in each, after the viewers are connected, `--calls` calls are placed
one after another with the chain's `place_call` (caller → VSP → ESRP + LoST → PSAP → call
taker, hung up by the caller 1 ms after the answer), each call's setup delay (INVITE → 180,
RFC 6076 Session Request Delay) recorded, and the chain process's CPU (getrusage) over the
round. Per condition: the
median setup delay and its difference to `none` with a 95 % bootstrap confidence interval
(calls resampled with replacement, seeded), CPU µs per call (and its difference to `none`),
the frames the viewers lost (from the console's /api/stats, read by the agent), and the
round-paired differences (`round_diffs_ms`: each round's median with the viewer − that same
round's median without; a round's conditions run back to back, so a load spike on the host
moves one round, while a slowdown the viewer causes shows in every round).

    .venv/bin/python bench/console.py [--quick] [--scenario S] [--rounds R] [--calls N]
        [--viewer-size Q] [--linger S] [--seed K]

Defaults take about 90 s, `--quick` about 25 s. Prints a table, writes
bench/results/console.json (`tests/test_console_noise.py` runs a small configuration).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import socket
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

CONDITIONS = ("none", "stalled", "slow", "reconnect", "normal3")
VIEWERS = {"none": 0, "stalled": 1, "slow": 1, "reconnect": None, "normal3": 3}  # None: varies
SETTLE = 0.2  # s after the viewers joined (their catch-up frames sent) before calls start
WARM = 2  # unrecorded calls at the start of each condition's round
HANGUP = 0.001  # s the caller waits after the 200 before its BYE (0 would mean never)
BOOTSTRAP = 2000  # resamples for a confidence interval


# --------------------------------------------------------------------------- the viewers


def _request(host: str, port: int, path: str, close: bool = False) -> bytes:
    conn = "Connection: close\r\n" if close else ""
    return f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{conn}\r\n".encode()


async def _raw(host: str, port: int, rcvbuf: int) -> socket.socket:
    """A non-blocking socket with a small receive buffer (set before connecting, so the
    window it announces is small too), the event stream requested on it."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(s, (host, port))
    await loop.sock_sendall(s, _request(host, port, "/api/events"))
    return s


async def stalled(host: str, port: int, socks: list[socket.socket]) -> None:
    """Opens the stream and never reads."""
    socks.append(await _raw(host, port, 1024))
    await asyncio.Event().wait()


async def slow(host: str, port: int, socks: list[socket.socket]) -> None:
    """Reads 256 bytes every 100 ms."""
    s = await _raw(host, port, 4096)
    socks.append(s)
    loop = asyncio.get_running_loop()
    while True:
        if not await loop.sock_recv(s, 256):
            return
        await asyncio.sleep(0.1)


async def reconnect(host: str, port: int, socks: list[socket.socket]) -> None:
    """Connects, reads up to 4 KB (or for 0.2 s), disconnects; again after 50 ms."""
    loop = asyncio.get_running_loop()
    while True:
        s = await _raw(host, port, 16384)
        try:
            got = 0
            end = loop.time() + 0.2
            while got < 4096 and loop.time() < end:
                try:
                    data = await asyncio.wait_for(loop.sock_recv(s, 4096), end - loop.time())
                except TimeoutError:
                    break
                if not data:
                    break
                got += len(data)
        finally:
            s.close()
        await asyncio.sleep(0.05)


async def normal(host: str, port: int, socks: list[socket.socket]) -> None:
    """Reads everything, as a browser's EventSource does."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(_request(host, port, "/api/events"))
    try:
        while await reader.read(65536):
            pass
    finally:
        writer.close()


async def fetch_stats(host: str, port: int) -> dict[str, Any]:
    """GET /api/stats (one request, then the connection is closed)."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(_request(host, port, "/api/stats", close=True))
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        body = await reader.readexactly(length)
    finally:
        writer.close()
    hub: dict[str, Any] = json.loads(body)["hub"]
    return hub


async def agent(url: str) -> None:
    """The viewers' process: `start COND` → connects the condition's viewers, answers
    `ready {stats}`; `stop` → answers `stopped {stats}` (the console's /api/stats while the
    viewers are still there), then disconnects them; end of input → exits."""
    host, port_text = url.split("//")[1].rstrip("/").split(":")
    port = int(port_text)
    loop = asyncio.get_running_loop()
    tasks: list[asyncio.Task[None]] = []
    socks: list[socket.socket] = []
    kinds = {
        "stalled": [stalled],
        "slow": [slow],
        "reconnect": [reconnect],
        "normal3": [normal] * 3,
    }

    def say(text: str) -> None:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()

    for _ in range(100000):  # bounded: one command a line
        line = (await loop.run_in_executor(None, sys.stdin.readline)).split()
        if not line:
            return
        if line[0] == "start":
            before = await fetch_stats(host, port)
            for fn in kinds.get(line[1], []):
                tasks.append(loop.create_task(fn(host, port, socks)))
            say("ready " + json.dumps(before))
        elif line[0] == "stop":
            after = await fetch_stats(host, port)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for s in socks:
                s.close()
            tasks.clear()
            socks.clear()
            say("stopped " + json.dumps(after))


# --------------------------------------------------------------------------- the figures


def median_diff_ci(
    a: Sequence[float], b: Sequence[float], rng: random.Random, n: int = BOOTSTRAP
) -> tuple[float, float, float]:
    """median(a) − median(b) and its 95 % bootstrap interval (each sample resampled)."""
    diffs = sorted(
        statistics.median(rng.choices(a, k=len(a))) - statistics.median(rng.choices(b, k=len(b)))
        for _ in range(n)
    )
    return (
        statistics.median(a) - statistics.median(b),
        diffs[int(0.025 * n)],
        diffs[min(n - 1, int(0.975 * n))],
    )


def summarize(raw: dict[str, dict[str, Any]], seed: int) -> dict[str, dict[str, Any]]:
    """Per condition: median delay, its difference to `none` (with CI), CPU per call."""
    rng = random.Random(seed + 1)
    base = raw["none"]
    base_cpu = base["cpu_s"] / max(1, len(base["delays_ms"])) * 1e6
    out: dict[str, dict[str, Any]] = {}
    for cond, r in raw.items():
        d = r["delays_ms"]
        cpu_us = r["cpu_s"] / max(1, len(d)) * 1e6
        row: dict[str, Any] = {
            "calls": len(d),
            "failed": r["failed"],
            "median_ms": round(statistics.median(d), 3) if d else None,
            "p90_ms": round(sorted(d)[int(0.9 * (len(d) - 1))], 3) if d else None,
            "cpu_us_per_call": round(cpu_us, 1),
            "cpu_diff_us": round(cpu_us - base_cpu, 1),
            "frames_dropped": r["dropped"],
            "frames_sent": r["sent"],
            "stream_writes": r["writes"],  # batches of frames, one write each
            "viewers_seen": r["viewers_seen"],
        }
        if cond != "none" and d and base["delays_ms"]:
            diff, lo, hi = median_diff_ci(d, base["delays_ms"], rng)
            row |= {"diff_ms": round(diff, 3), "ci_ms": [round(lo, 3), round(hi, 3)]}
            pairs = zip(r.get("round_medians", []), base.get("round_medians", []), strict=False)
            row["round_diffs_ms"] = [round(m - m0, 3) for m, m0 in pairs]
        out[cond] = row
    return out


def table(summary: dict[str, dict[str, Any]]) -> list[str]:
    lines = [
        "| condition | calls | median setup ms | − none ms [95 % CI] | CPU µs/call | − none µs "
        "| frames sent / writes | frames dropped |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for cond, r in summary.items():
        diff = "-"
        if "diff_ms" in r:
            lo, hi = r["ci_ms"]
            diff = f"{r['diff_ms']:+.3f} [{lo:+.3f}, {hi:+.3f}]"
        cpu_diff = "-" if cond == "none" else f"{r['cpu_diff_us']:+,.0f}"
        lines.append(
            f"| {cond} | {r['calls']} | {r['median_ms']:.3f} | {diff} | "
            f"{r['cpu_us_per_call']:,.0f} | {cpu_diff} | {r['frames_sent']:,} / "
            f"{r['stream_writes']:,} | {r['frames_dropped']:,} |"
        )
    return lines


# --------------------------------------------------------------------------- the chain


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def _line(proc: asyncio.subprocess.Process, timeout: float = 20.0) -> tuple[str, Any]:
    assert proc.stdout is not None
    raw = await asyncio.wait_for(proc.stdout.readline(), timeout)
    if not raw:
        raise RuntimeError("the viewers' agent process ended")
    word, _, rest = raw.decode().partition(" ")
    return word, json.loads(rest) if rest.strip() else None


async def _command(proc: asyncio.subprocess.Process, text: str) -> tuple[str, Any]:
    assert proc.stdin is not None
    proc.stdin.write(text.encode() + b"\n")
    await proc.stdin.drain()
    return await _line(proc)


async def measure(
    *,
    scenario: str = "plain",
    rounds: int = 6,
    calls: int = 200,
    viewer_size: int = 2000,
    linger: float | None = None,
    seed: int = 911,
    conditions: Sequence[str] = CONDITIONS,
    say: Any = print,
) -> dict[str, Any]:
    """The whole bench (module doc); the result as written to console.json."""
    from ng911.console.server import Console
    from ng911.testbed.launcher import RunningChain

    console = Console(scenario=scenario, viewer_size=viewer_size)
    if linger is not None:
        console.linger = linger
    url = await console.start("127.0.0.1", 0)
    hub, chain = console.hub, console.chain
    assert hub is not None and isinstance(chain, RunningChain)
    points = [(loc.lat, loc.lon) for loc in chain.topology.locations]
    rng = random.Random(seed)
    order = []
    for r in range(rounds):
        conds = list(conditions)
        rng.shuffle(conds)
        order += [(r, c) for c in conds]
    raw: dict[str, dict[str, Any]] = {
        c: {
            "delays_ms": [],
            "cpu_s": 0.0,
            "failed": 0,
            "dropped": 0,
            "sent": 0,
            "writes": 0,
            "viewers_seen": [],
            "round_medians": [],
        }
        for c in conditions
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(Path(__file__).resolve()),
        "--agent",
        url,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    t_start = time.perf_counter()
    try:
        for i in range(20):  # warm the chain up (connections, caches) before measuring
            await chain.place_call(*points[i % len(points)], hangup_after=HANGUP)
        for r, cond in order:
            word, before = await _command(proc, f"start {cond}")
            assert word == "ready", word
            want = VIEWERS[cond]
            for _ in range(100):  # bounded: until the viewers have joined (5 s at most)
                if want is None or len(hub.viewers) >= want:
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(SETTLE)
            for i in range(WARM):
                await chain.place_call(*points[i % len(points)], hangup_after=HANGUP)
            seen = len(hub.viewers)
            rec_delays = raw[cond]["delays_ms"]
            c0 = cpu()
            for i in range(calls):
                rec = await chain.place_call(*points[i % len(points)], hangup_after=HANGUP)
                if rec.status == 200 and rec.setup_180 is not None:
                    rec_delays.append(rec.setup_180 * 1000)
                else:
                    raw[cond]["failed"] += 1
            raw[cond]["cpu_s"] += cpu() - c0
            if rec_delays[-calls:]:
                raw[cond]["round_medians"].append(statistics.median(rec_delays[-calls:]))
            word, after = await _command(proc, "stop")
            assert word == "stopped", word
            for key, stat in (
                ("dropped", "viewer_dropped_total"),
                ("sent", "viewer_sent_total"),
                ("writes", "viewer_batches_total"),
            ):
                raw[cond][key] += after[stat] - before[stat]
            raw[cond]["viewers_seen"].append(seen)
            for _ in range(100):  # bounded: until the server has seen them go
                if not hub.viewers:
                    break
                await asyncio.sleep(0.05)
            say(
                f"round {r + 1}/{rounds} {cond:9s} median "
                f"{statistics.median(rec_delays[-calls:]) if rec_delays else float('nan'):.3f} ms"
            )
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        await console.close()
    elapsed = time.perf_counter() - t_start
    summary = summarize(raw, seed)
    return {
        "config": {
            "scenario": scenario,
            "rounds": rounds,
            "calls_per_round": calls,
            "viewer_size": viewer_size,
            "linger_s": console.linger,
            "seed": seed,
            "order": [c for _r, c in order],
        },
        "elapsed_s": round(elapsed, 1),
        "conditions": summary,
        "delays_ms": {c: [round(x, 3) for x in r["delays_ms"]] for c, r in raw.items()},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--agent", metavar="URL", help="(internal) be the viewers' process")
    ap.add_argument("--quick", action="store_true", help="about 25 s instead of about 90 s")
    ap.add_argument("--scenario", default="plain")
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--calls", type=int, help="calls per condition per round")
    ap.add_argument("--viewer-size", type=int, default=2000, help="each viewer's frame queue")
    ap.add_argument(
        "--linger", type=float, help="s a viewer's frames wait to be batched (the console's)"
    )
    ap.add_argument("--seed", type=int, default=911)
    ap.add_argument("--out", type=Path, help="the JSON (default bench/results/console.json)")
    args = ap.parse_args(argv)
    if args.agent:
        asyncio.run(agent(args.agent))
        return 0
    rounds = args.rounds or (3 if args.quick else 6)
    calls = args.calls or (70 if args.quick else 200)
    result = asyncio.run(
        measure(
            scenario=args.scenario,
            rounds=rounds,
            calls=calls,
            viewer_size=args.viewer_size,
            linger=args.linger,
            seed=args.seed,
        )
    )
    print()
    print("\n".join(table(result["conditions"])))
    print(f"({result['elapsed_s']} s)")
    from rig import write_result

    write_result("console", result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
