"""Server CPU per request of the i3 Logging Service: this tree against another commit's.

    .venv/bin/python bench/logserver.py [--old-ref d6e3994] [--rounds 5] [--n 3000]

What it measures: the CPU time (the scheduler's, every thread) of the SERVER process, a
forked child running `serve_logging` (SQLite store, uvloop), per request, while a client in
the parent sends `--n` requests over `--connections` (4) keep-alive connections (raw asyncio
streams, so the client is the same for both trees):

- `post`: `POST /LogEvents` of a pre-signed CallSignalingMessageLogEvent JWS (201): HTTP,
  verification of the signature and its x5c chain, the payload's checks, the SQLite insert;
- `versions`: `GET /Versions`, a fixed JSON answer: the HTTP stack's own cost.

The verification's share (`Verifier.verify` + `parse_payload` on the same bodies) is measured
in-process and shown beside the figures. Interleaved A/B: each round runs one child per
variant (this tree's `src`, and the `--old-ref` commit's from `git archive`), alternating
which goes first; the table shows best and median (a shared machine's noise only adds).
Writes bench/results/logserver.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from httpclient import ROOT, log_events, old_tree, run_in_tree, spawn
from rig import write_result


def cpu_seconds(pid: int) -> tuple[float, float]:
    """CPU time of process `pid` so far: every thread (the store's too), and the main thread
    alone (the event loop: HTTP, verification), in nanosecond resolution
    (/proc/PID/task/TID/schedstat: the scheduler's run time; /proc/PID/stat's ticks are
    10 ms). A thread that ended before the reading is not counted."""
    total = main = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            ns = int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            continue
        total += ns
        main += ns if task.name == str(pid) else 0
    return total / 1e9, main / 1e9


async def _one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, req: bytes) -> int:
    writer.write(req)
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    await reader.readexactly(length)
    return int(head.split(None, 2)[1])


async def _drive(url: str, requests: list[bytes], lanes: int) -> list[int]:
    host, port = url.split("//", 1)[1].rstrip("/").rsplit(":", 1)
    conns = [await asyncio.open_connection(host, int(port)) for _ in range(lanes)]
    statuses: list[int] = []

    async def lane(i: int) -> None:
        reader, writer = conns[i]
        for req in requests[i::lanes]:
            statuses.append(await _one(reader, writer, req))

    await asyncio.gather(*(lane(i) for i in range(lanes)))
    for _r, w in conns:
        w.close()
    return statuses


def child(args: argparse.Namespace) -> dict[str, float]:
    from ng911.i3log.events import parse_payload
    from ng911.i3log.jws import Signer, Verifier
    from ng911.i3log.server import LoggingServer, LoggingServerConfig, serve_logging
    from ng911.i3log.store import SqliteStore
    from ng911.pki.testpki import build_test_pki

    pki = build_test_pki(Path(args.pki))
    c = pki.cert("esrp")
    signer = Signer.from_files(c.chain_path, c.key_path)
    db = str(Path(args.pki) / "log.sqlite")

    async def start() -> Any:
        store = await SqliteStore(db).open()
        server = LoggingServer(store, Verifier.from_files(pki.ca_files()), LoggingServerConfig())
        return await serve_logging(server)

    proc, url = spawn(start)
    assert proc.pid is not None
    bodies = [json.dumps(signer.sign(ev)).encode() for ev in log_events(args.n + 200)]
    posts = [
        b"POST /LogEvents HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(b), b)
        for b in bodies
    ]
    get = b"GET /Versions HTTP/1.1\r\nHost: bench\r\n\r\n"
    out: dict[str, float] = {}

    async def main() -> None:
        for name, reqs, want in (("versions", [get] * (args.n + 200), 200), ("post", posts, 201)):
            await _drive(url, reqs[:200], args.connections)  # warm
            all0, main0 = cpu_seconds(proc.pid)
            statuses = await _drive(url, reqs[200:], args.connections)
            all1, main1 = cpu_seconds(proc.pid)
            out[f"{name}_us"] = (all1 - all0) / args.n * 1e6
            out[f"{name}_loop_us"] = (main1 - main0) / args.n * 1e6
            assert statuses.count(want) == args.n, statuses[:5]

    try:
        import uvloop

        uvloop.run(main())
    finally:
        proc.kill()
    verifier = Verifier.from_files(pki.ca_files())
    t0 = time.thread_time()
    for b in bodies[200:]:
        parse_payload(verifier.verify(b.decode()).payload)
    out["verify_us"] = (time.thread_time() - t0) / args.n * 1e6
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--old-ref", default="d6e3994")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--connections", type=int, default=4, help="keep-alive connections")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--pki", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="bench-logserver-"))
    variants = {"old": old_tree(args.old_ref, tmp), "new": ROOT / "src"}
    rows: dict[str, list[dict[str, Any]]] = {"old": [], "new": []}
    for r in range(args.rounds):
        for v in ["old", "new"] if r % 2 == 0 else ["new", "old"]:
            argv = [__file__, "--child", "--n", str(args.n), "--pki", str(tmp / f"pki-{r}-{v}")]
            argv += ["--connections", str(args.connections)]
            res = run_in_tree(variants[v], argv)
            rows[v].append(res)
            print(f"round {r + 1} {v}: {res}")
    print(f"\nserver CPU per request, µs ({args.rounds} rounds, n={args.n}; best / median)")
    print(f"{'what':<10} {'old':>16} {'new':>16} {'new/old':>8}   (post_loop: main thread)")
    table = []
    for what in ("post", "post_loop", "versions"):
        o = [x[f"{what}_us"] for x in rows["old"]]
        n = [x[f"{what}_us"] for x in rows["new"]]
        table.append(
            {"what": what, "old_best": min(o), "old_median": statistics.median(o),
             "new_best": min(n), "new_median": statistics.median(n)}
        )  # fmt: skip
        print(
            f"{what:<10} {min(o):7.0f} / {statistics.median(o):6.0f} "
            f"{min(n):7.0f} / {statistics.median(n):6.0f} "
            f"{statistics.median(n) / statistics.median(o):8.2f}"
        )
    verify = statistics.median(x["verify_us"] for x in rows["old"] + rows["new"])
    print(f"verification's share of a POST (in-process): {verify:.0f} µs")
    write_result(
        "logserver",
        {
            "old_ref": args.old_ref,
            "n": args.n,
            "connections": args.connections,
            "rows": table,
            "verify_us": verify,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
