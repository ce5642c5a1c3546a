"""Client CPU per LoST findService and per LogEvent POST: this tree against another commit's.

    .venv/bin/python bench/httpclient.py [--old-ref 22e4648] [--rounds 5] [--n 2000]
                                          [--loop uvloop|asyncio] [--only lost|log]

What it measures: the CPU time of the CLIENT's thread (`time.thread_time()`), per request,
while the server runs in another process (forked, same machine): so the figure is the client
side alone, whatever the server or the other processes on the machine do.

- `lost`: `LostClient.find_service(point, use_cache=False)` one after another (an ESRP asks
  once per call), over http and over mutual TLS (the project's test CA); the LoST protocol's
  own share (build the request, parse the answer: `build_request` + `parse_response` on the
  same documents) is measured in the same process and shown beside it.
- `log`: a `LogSender` sending `--n` signed LogEvents to a Logging Service (SQLite store),
  from the first `submit` until `flush` returns; the JWS signing's share (`Signer.sign` +
  `json.dumps`) is measured in the same process and shown beside it.

Interleaved A/B: each round runs one child process per variant (this tree's `src`, and the
`--old-ref` commit's `src` from `git archive`), alternating which goes first, and the table
shows the best and the median of the rounds (a shared machine's noise only ever adds time).
Prints a table; writes nothing under bench/results (`--json PATH` writes the rows).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------------- child side


def _serve_forever(start: Any, conn: Any) -> None:
    """In the forked server process: start the server, send its URL, run until killed."""

    async def main() -> None:
        running = await start()
        conn.send(running.url)
        await asyncio.Event().wait()

    import uvloop

    uvloop.run(main())


def spawn(start: Any) -> tuple[multiprocessing.Process, str]:
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_serve_forever, args=(start, child), daemon=True)
    proc.start()
    if not parent.poll(60):
        proc.kill()
        raise RuntimeError("server did not start")
    return proc, str(parent.recv())


def _contexts(tls: bool, pki_dir: str) -> tuple[Any, Any]:
    if not tls:
        return None, None
    from ng911.pki.testpki import build_test_pki

    pki = build_test_pki(Path(pki_dir))
    return pki.server_context("lost"), pki.client_context("esrp")


def child_lost(args: argparse.Namespace) -> dict[str, float]:
    from ng911.location.geodetic import Point
    from ng911.lost.client import LostClient
    from ng911.lost.embedded import EmbeddedStore
    from ng911.lost.engine import EngineConfig
    from ng911.lost.protocol import (
        FindServiceRequest,
        LostLocation,
        build_request,
        parse_response,
    )
    from ng911.lost.server import LostServer, ServerConfig, serve

    srv_ctx, cli_ctx = _contexts(args.tls, args.pki)
    store = EmbeddedStore.from_geojson()

    async def start() -> Any:
        cfg = ServerConfig(engine=EngineConfig(source="ecrf.bench"))
        return await serve(LostServer(store, cfg), ssl_context=srv_ctx)

    proc, url = spawn(start)
    point = Point(40.6782, -73.9442)  # Brooklyn
    out: dict[str, float] = {}

    async def main() -> None:
        async with LostClient(url, ssl=cli_ctx, use_cache=False) as client:
            for _ in range(200):  # warm: connection, caches, allocator
                await client.find_service(point)
            prof = _profiler(args)
            t0 = time.thread_time()
            for _ in range(args.n):
                await client.find_service(point)
            _report(prof)
            out["us_per_request"] = (time.thread_time() - t0) / args.n * 1e6

    try:
        _run(args.loop, main())
    finally:
        proc.kill()
    # the protocol's share: the same request built and a real answer parsed
    req = FindServiceRequest(locations=(LostLocation("loc1", "geodetic-2d", point),))
    body = build_request(req)
    from ng911.lost.engine import LostEngine
    from ng911.lost.protocol import build_response, parse_request

    answer = build_response(
        LostEngine(store, EngineConfig(source="ecrf.bench")).handle(
            parse_request(body), time.time()
        )
    )
    t0 = time.thread_time()
    for _ in range(args.n):
        build_request(req)
        parse_response(answer)
    out["protocol_us"] = (time.thread_time() - t0) / args.n * 1e6
    return out


def log_events(n: int) -> list[Any]:
    """`n` CallSignalingMessageLogEvents (a BYE each, 60 per call), as the benches send."""
    from ng911.i3log.events import CallSignalingMessageLogEvent, rfc3339

    return [
        CallSignalingMessageLogEvent(
            timestamp=rfc3339(time.time()),
            element_id="esrp.esinet.example",
            agency_id="esinet.example",
            call_id_sip=f"call-{i // 60}",
            text=f"BYE sip:x SIP/2.0\r\nCSeq: {i} BYE\r\nCall-ID: call-{i // 60}\r\n\r\n",
            direction="outgoing",
        )
        for i in range(n)
    ]


def child_log(args: argparse.Namespace) -> dict[str, float]:
    from ng911.i3log.jws import Signer, Verifier
    from ng911.i3log.sender import LogSender
    from ng911.i3log.server import LoggingServer, LoggingServerConfig, serve_logging
    from ng911.i3log.store import SqliteStore
    from ng911.pki.testpki import build_test_pki

    pki = build_test_pki(Path(args.pki))
    c = pki.cert("esrp")
    signer = Signer.from_files(c.chain_path, c.key_path)
    srv_ctx = pki.server_context("lost") if args.tls else None
    cli_ctx = pki.client_context("esrp") if args.tls else None
    db = str(Path(args.pki) / f"log-{os.getpid()}.sqlite")

    async def start() -> Any:
        store = await SqliteStore(db).open()
        server = LoggingServer(store, Verifier.from_files(pki.ca_files()), LoggingServerConfig())
        return await serve_logging(server, ssl_context=srv_ctx)

    proc, url = spawn(start)
    events = log_events(args.n + 200)
    out: dict[str, float] = {}

    async def main() -> None:
        sender = LogSender(url, signer, ssl_context=cli_ctx, max_queue=args.n + 1000)
        for ev in events[:200]:  # warm
            sender.submit(ev)
        await sender.flush(60)
        prof = _profiler(args)
        t0 = time.thread_time()
        for ev in events[200:]:
            sender.submit(ev)
        await sender.flush(120)
        _report(prof)
        out["us_per_event"] = (time.thread_time() - t0) / args.n * 1e6
        out["sent"] = sender.sent
        out["failed"] = sender.failed + sender.refused + sender.dropped
        await sender.close()

    try:
        _run(args.loop, main())
    finally:
        proc.kill()
    t0 = time.thread_time()
    for ev in events[200:]:
        json.dumps(signer.sign(ev)).encode()
    out["signing_us"] = (time.thread_time() - t0) / args.n * 1e6
    return out


def _profiler(args: argparse.Namespace) -> Any:
    if not args.profile:
        return None
    import cProfile

    prof = cProfile.Profile()
    prof.enable()
    return prof


def _report(prof: Any) -> None:
    """The profile's top functions (own time) to stderr."""
    if prof is None:
        return
    import pstats

    prof.disable()
    pstats.Stats(prof, stream=sys.stderr).sort_stats("tottime").print_stats(30)


def _run(loop: str, coro: Any) -> None:
    if loop == "uvloop":
        import uvloop

        uvloop.run(coro)
    else:
        asyncio.run(coro)


# ---------------------------------------------------------------------------- parent side


def old_tree(ref: str, into: Path) -> Path:
    """`src` of commit `ref`, unpacked under `into` (git archive: no worktree touched)."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref, "src"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into / "src"


def run_in_tree(src: Path, argv: list[str], profile: bool = False) -> dict[str, Any]:
    """Run `python ARGV` with `src` on PYTHONPATH (pure build: the same for every tree); the
    JSON object its last line prints."""
    env = dict(os.environ, PYTHONPATH=str(src), NG911_PURE="1")
    done = subprocess.run(
        [sys.executable, *argv], env=env, capture_output=True, text=True, timeout=600
    )
    if done.returncode != 0:
        raise RuntimeError(f"{argv[:3]} child failed:\n{done.stderr[-3000:]}")
    if profile:
        print(done.stderr[:6000])
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def run_child(
    src: Path, what: str, tls: bool, args: argparse.Namespace, pki: str, profile: bool = False
) -> dict[str, Any]:
    cmd = [__file__, "--child", what, "--n", str(args.n), "--loop", args.loop, "--pki", pki]
    cmd += (["--tls"] if tls else []) + (["--profile"] if profile else [])
    return run_in_tree(src, cmd, profile)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--old-ref", default="22e4648")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    ap.add_argument("--only", choices=("lost", "log"))
    ap.add_argument("--no-tls", action="store_true")
    ap.add_argument("--json")
    ap.add_argument("--profile", action="store_true", help="cProfile one child per variant")
    ap.add_argument("--child", choices=("lost", "log"), help=argparse.SUPPRESS)
    ap.add_argument("--pki", help=argparse.SUPPRESS)
    ap.add_argument("--tls", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        fn = child_lost if args.child == "lost" else child_log
        print(json.dumps(fn(args)))
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="bench-httpclient-"))
    variants = {"old": old_tree(args.old_ref, tmp), "new": ROOT / "src"}
    whats = [args.only] if args.only else ["lost", "log"]
    if args.profile:
        for what in whats:
            for v, src in variants.items():
                print(f"===== {what} {v} (cProfile, http)")
                print(run_child(src, what, False, args, str(tmp / f"prof-{what}-{v}"), True))
        return 0
    tls_modes = [False] if args.no_tls else [False, True]
    rows: dict[tuple[str, bool, str], list[dict[str, Any]]] = {}
    for r in range(args.rounds):
        order = ["old", "new"] if r % 2 == 0 else ["new", "old"]
        for what in whats:
            for tls in tls_modes:
                for v in order:
                    pki = str(tmp / f"pki-{r}-{what}-{int(tls)}-{v}")
                    res = run_child(variants[v], what, tls, args, pki)
                    rows.setdefault((what, tls, v), []).append(res)
                    print(f"round {r + 1} {what} {'https' if tls else 'http'} {v}: {res}")
    print()
    print(f"client CPU per request, µs (thread_time; {args.rounds} rounds, n={args.n},"
          f" {args.loop}; best / median)")  # fmt: skip
    print(f"{'what':<16} {'old':>16} {'new':>16} {'new/old':>8}   in-process share")
    table = []
    for what in whats:
        key = "us_per_request" if what == "lost" else "us_per_event"
        share = "protocol_us" if what == "lost" else "signing_us"
        for tls in tls_modes:
            name = f"{what} {'https' if tls else 'http'}"
            o = [x[key] for x in rows[(what, tls, "old")]]
            n = [x[key] for x in rows[(what, tls, "new")]]
            s = [x[share] for x in rows[(what, tls, "new")] + rows[(what, tls, "old")]]
            line = {
                "what": name, "old_best": min(o), "old_median": statistics.median(o),
                "new_best": min(n), "new_median": statistics.median(n),
                share: statistics.median(s),
            }  # fmt: skip
            table.append(line)
            print(
                f"{name:<16} {min(o):7.0f} / {statistics.median(o):6.0f} "
                f"{min(n):7.0f} / {statistics.median(n):6.0f} "
                f"{statistics.median(n) / statistics.median(o):8.2f}   "
                f"{share.split('_')[0]} {statistics.median(s):.0f}"
            )
    if args.json:
        Path(args.json).write_text(json.dumps(table, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
