"""Worker processes of a proxy: `ng911 run vsp --workers N` (or `workers = N` in its table).

Why processes: one asyncio loop uses one core, and a proxy is CPU-bound (bench/load.py:
~760 µs of CPU per call). N workers are N copies of the element, each its own process and
loop, sharing the element's listening ports (SO_REUSEPORT):

- UDP: the kernel hashes each source address/port to one worker, so every request of one
  upstream socket (INVITE, its retransmissions, its CANCEL) meets the same server
  transaction. Each worker also binds a UDP port of its own, sends its requests from it and
  names it in its Via (`ng911.elements.addressing.WorkerRole`), so responses from downstream
  come back to the worker that holds the client transaction. Record-Route keeps the shared
  address: ACK, BYE and re-INVITEs are new transactions any worker proxies.
- TCP/TLS: a connection belongs to the worker that accepted or opened it; responses go
  back over the connection their request came on (RFC 3261 §18.2.2), so they stay in that
  worker. Connection reuse (RFC 5923) is per worker: N workers may open up to N
  connections to the same next hop, and a connection the peer opened to one worker is not
  reused by another.
- State that lives in one process stays there: a registrar's bindings (a REGISTER and the
  calls to that user may reach different workers), an ESRP's LoST cache, counters and logs
  (each worker logs its own lines; a `log_file` is shared, one line per write).

`Supervisor` is the parent: it starts the workers (`sys.executable -m ng911 run ...
--worker-role JSON`, no fork), waits until each is listening, forwards SIGTERM/SIGINT, and
exits when they have exited. A worker that dies is logged and restarted, at most
`max_restarts` times in all; after that the parent stops the others and exits 1. A worker
whose parent is gone (its stdin, a pipe from the parent, reaches EOF) stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from ng911.elements.addressing import WorkerRole
from ng911.elements.config import WORKERS_AUTO, ConfigError, metrics_address, metrics_spec
from ng911.net.steer import CallSteering, steering_pairs

__all__ = [
    "MAX_WORKERS",
    "Supervisor",
    "WorkerProcess",
    "auto_workers",
    "check_ports",
    "decode_role",
    "decode_steering",
    "encode_role",
    "free_ports",
    "parent_gone",
    "supervise",
    "usable_cores",
    "worker_commands",
    "worker_count",
    "worker_metrics",
]

WORKER_ELEMENTS = ("vsp", "esrp")
MAX_WORKERS = 64


def encode_role(
    role: WorkerRole, ports: Sequence[int] = (), steer: tuple[int, list[int]] | None = None
) -> str:
    """The `--worker-role` argument: the role, the shared listening ports and, when UDP
    requests are steered by Call-ID (ng911.net.steer), the worker's inbox and every
    worker's outbox, as file descriptors the parent passed on."""
    d: dict[str, Any] = {"index": role.index, "count": role.count, "udp": list(role.udp_ports)}
    if steer is not None:
        d["steer"] = {"inbox": steer[0], "outboxes": list(steer[1])}
    return json.dumps({**d, "ports": list(ports)})


def decode_steering(text: str) -> CallSteering | None:
    """The worker's Call-ID steering from its `--worker-role`, or None (not steered)."""
    try:
        d = json.loads(text)
        steer = d.get("steer")
        if not steer:
            return None
        outboxes = [int(fd) for fd in steer["outboxes"]]
        return CallSteering.from_fds(int(d["index"]), int(steer["inbox"]), outboxes)
    except (ValueError, KeyError, TypeError, AttributeError, OSError) as exc:
        raise ConfigError(f"bad worker steering in {text[:80]!r}: {exc}") from None


def decode_role(text: str) -> tuple[WorkerRole, tuple[int, ...]]:
    """`encode_role` read back: the role, and the listening ports (empty when not given)."""
    try:
        d = json.loads(text)
        role = WorkerRole(int(d["index"]), int(d["count"]), tuple(int(p) for p in d["udp"]))
        return role, tuple(int(p) for p in d.get("ports", ()))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"bad worker role {text[:80]!r}: {exc}") from None


def free_ports(transport: str, host: str, count: int) -> list[int]:
    """`count` distinct ports the kernel calls free now (bound to port 0, then released).

    The parent picks them, so every worker learns every sibling's port (loop detection) and
    a restarted worker gets its old port back; a port taken in between fails that worker's
    start, which the parent reports.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(family, kind)
            socks.append(s)
            s.bind((host, 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def check_ports(listeners: Sequence[Any], ports: Sequence[int]) -> None:
    """Raise the OSError a worker would meet binding `ports` (each listener's, shared with
    SO_REUSEPORT), before any worker starts: a port taken by another program is one line
    of error from the parent, not one per worker."""
    for lst, port in zip(listeners, ports, strict=True):
        family = socket.AF_INET6 if ":" in lst.host else socket.AF_INET
        kind = socket.SOCK_DGRAM if lst.transport == "udp" else socket.SOCK_STREAM
        with socket.socket(family, kind) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if kind == socket.SOCK_STREAM:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((lst.host, port))
            except OSError as exc:  # the words asyncio's create_server uses, with the address
                raise OSError(
                    exc.errno,
                    f"error while attempting to bind on address {(lst.host, port)!r}: "
                    f"{(exc.strerror or str(exc)).lower()}",
                ) from None


async def parent_gone() -> None:
    """Return when stdin (a pipe from the parent) reaches EOF: the parent has exited."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    try:
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    except (OSError, ValueError):
        await asyncio.Event().wait()  # stdin is no pipe: the parent cannot be watched
    while await reader.read(4096):
        pass


@dataclass(eq=False)
class WorkerProcess:
    index: int
    argv: list[str]
    proc: asyncio.subprocess.Process | None = None
    ready: dict[str, Any] = field(default_factory=dict)
    restarts: int = 0
    pump: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None


def _ready_of(line: bytes) -> dict[str, Any] | None:
    """The worker's first stdout line: `{"ready": ...}` (ng911 run) or `READY ...` (bench)."""
    text = line.decode(errors="replace").strip()
    if text.startswith("READY"):
        return {"ready": text}
    try:
        d = json.loads(text)
    except json.JSONDecodeError:
        return None
    return d if isinstance(d, dict) and "ready" in d else None


class Supervisor:
    """Start `len(commands)` workers, keep them running, stop them all on SIGTERM/SIGINT."""

    def __init__(
        self,
        name: str,
        commands: Sequence[list[str]],
        *,
        max_restarts: int = 5,
        ready_timeout: float = 30.0,
        stop_timeout: float = 10.0,
        log: TextIO | None = None,
        out: TextIO | None = None,
        pass_fds: Sequence[Sequence[int]] = (),
    ) -> None:
        self.name = name
        # worker i inherits pass_fds[i] (its Call-ID steering sockets), at every restart
        self.pass_fds = [tuple(fds) for fds in pass_fds]
        self.workers = [WorkerProcess(i, list(argv)) for i, argv in enumerate(commands)]
        self.max_restarts = max_restarts
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self.log_stream = log if log is not None else sys.stderr
        self.out = out if out is not None else sys.stdout
        self.restarts = 0
        self._stopping = False

    def log(self, what: str, **fields: Any) -> None:
        rec = {"ts": round(time.time(), 6), "element": self.name, "what": what, **fields}
        with contextlib.suppress(Exception):
            self.log_stream.write(json.dumps(rec, default=str) + "\n")
            self.log_stream.flush()

    @property
    def pids(self) -> list[int]:
        return [w.pid for w in self.workers if w.pid is not None]

    async def _spawn(self, w: WorkerProcess) -> bool:
        """Start one worker and wait for its ready line; False (logged) if it fails."""
        w.ready = {}
        fds = self.pass_fds[w.index] if w.index < len(self.pass_fds) else ()
        w.proc = await asyncio.create_subprocess_exec(
            *w.argv,
            stdin=asyncio.subprocess.PIPE,  # its EOF tells the worker we are gone
            stdout=asyncio.subprocess.PIPE,
            pass_fds=fds,
        )
        assert w.proc.stdout is not None
        try:
            line = await asyncio.wait_for(w.proc.stdout.readline(), self.ready_timeout)
        except TimeoutError:
            line = b""
        ready = _ready_of(line) if line else None
        if ready is None:
            rc = await self._terminate(w)
            if rc != 2:  # 2: `ng911 run` said why on its stderr, in one line
                self.log("worker_failed_to_start", index=w.index, pid=w.proc.pid, line=line[:200])
            return False
        w.ready = ready
        w.pump = asyncio.ensure_future(self._pump(w.proc.stdout))
        self.log("worker_started", index=w.index, pid=w.proc.pid)
        return True

    async def _pump(self, stream: asyncio.StreamReader) -> None:
        """What a worker prints after its ready line goes to our stdout."""
        while line := await stream.readline():
            with contextlib.suppress(Exception):
                self.out.write(line.decode(errors="replace"))
                self.out.flush()

    async def _terminate(self, w: WorkerProcess) -> int | None:
        proc = w.proc
        if proc is None:
            return None
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), self.stop_timeout)
            except TimeoutError:
                self.log("worker_killed", index=w.index, pid=proc.pid)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if proc.stdin is not None:
            proc.stdin.close()
        if w.pump is not None:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(w.pump, 1.0)
            w.pump = None
        return proc.returncode

    async def stop(self) -> None:
        self._stopping = True
        await asyncio.gather(*(self._terminate(w) for w in self.workers))

    async def run(self, on_ready: Callable[[list[WorkerProcess]], None] | None = None) -> int:
        """Start every worker; 0 once stopped by a signal, 1 when restarts ran out, 2 when
        a worker could not start at all."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        try:
            # the first alone: a config or port it cannot use stops the start with its one
            # line of error, not one per worker
            first = await self._spawn(self.workers[0])
            started = first and all(
                await asyncio.gather(*(self._spawn(w) for w in self.workers[1:]))
            )
            if not started:
                await self.stop()
                return 2
            if on_ready is not None:
                on_ready(self.workers)
            return await self._watch(stop)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError):
                    loop.remove_signal_handler(sig)

    async def _watch(self, stop: asyncio.Event) -> int:
        stopper = asyncio.ensure_future(stop.wait())
        try:
            while True:
                waits = {
                    asyncio.ensure_future(w.proc.wait()): w
                    for w in self.workers
                    if w.proc is not None
                }
                done, _ = await asyncio.wait({stopper, *waits}, return_when=asyncio.FIRST_COMPLETED)
                for f in waits:
                    if f not in done:
                        f.cancel()
                if stopper in done:
                    await self.stop()
                    self.log("workers_stopped", pids=self.pids)
                    return 0
                for f in done:
                    w = waits[f]
                    rc = f.result()
                    self.log("worker_exited", index=w.index, pid=w.pid, returncode=rc)
                    await self._terminate(w)  # close its pipes
                    if not await self._restart(w, stop):
                        await self.stop()
                        return 0 if stop.is_set() else 1
        finally:
            stopper.cancel()

    async def _restart(self, w: WorkerProcess, stop: asyncio.Event) -> bool:
        while not stop.is_set():
            if self.restarts >= self.max_restarts:
                self.log("worker_not_restarted", index=w.index, restarts=self.restarts)
                return False
            self.restarts += 1
            w.restarts += 1
            await asyncio.sleep(min(0.2 * w.restarts, 2.0))
            if stop.is_set():
                return False
            if await self._spawn(w):
                self.log("worker_restarted", index=w.index, pid=w.pid, restarts=self.restarts)
                return True
        return False


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity), else the machine's count."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def auto_workers(args: argparse.Namespace, cfg: Any) -> int:
    """What `workers = "auto"` means here: one worker per usable core (a proxy is CPU-bound:
    bench/load.py), but one when the element is no proxy, when `--events` is asked (one
    event file per element: the testbed's `--processes` reads it), and when Digest
    authentication is on without `auth_secret` (each process would sign nonces with its own
    random key, and a retried request may reach another worker)."""
    if args.element not in WORKER_ELEMENTS or args.events:
        return 1
    if getattr(cfg, "auth", False) and not getattr(cfg, "auth_secret", ""):
        return 1
    return min(usable_cores(), MAX_WORKERS)


def worker_count(args: argparse.Namespace, cfg: Any) -> int:
    """`--workers`, else the table's `workers`: 1..MAX_WORKERS or "auto", >1 only for a
    proxy."""
    spec = args.workers if args.workers is not None else getattr(cfg, "workers", 1)
    n = auto_workers(args, cfg) if spec == WORKERS_AUTO else int(spec)
    if not 1 <= n <= MAX_WORKERS:
        raise ConfigError(f"workers must be 1..{MAX_WORKERS}, not {n}")
    if n > 1 and args.element not in WORKER_ELEMENTS:
        raise ConfigError(
            f"workers: only {' and '.join(WORKER_ELEMENTS)} run in several processes "
            f"({args.element} keeps its state in one)"
        )
    return n


def worker_commands(
    args: argparse.Namespace,
    cfg: Any,
    n: int,
    steering: Sequence[tuple[socket.socket, socket.socket]] = (),
) -> list[list[str]]:
    """The command line of each of `n` workers: this one, with a `--worker-role`.

    Listeners on port 0 get a port picked here, the same for every worker (they share it);
    each worker gets a UDP port of its own for its Via (`WorkerRole`). `steering`: the
    (inbox, outbox) pair of each worker (`steering_pairs`), named in its role.
    """
    ports = [lst.port or free_ports(lst.transport, lst.host, 1)[0] for lst in cfg.listeners]
    check_ports(cfg.listeners, ports)
    udp = next((lst for lst in cfg.listeners if lst.transport == "udp"), None)
    own = tuple(free_ports("udp", udp.host, n)) if udp is not None else ()
    base = [sys.executable, "-m", "ng911", "run", args.element, "--config", args.config]
    base += ["--table", args.table] if args.table else []
    base += ["--ready", "--gc-freeze", str(args.gc_freeze)]
    base += ["--quiet"] if args.quiet else []
    base += ["--loop", args.loop] if getattr(args, "loop", None) else []
    if args.idle_timeout is not None:
        base += ["--idle-timeout", str(args.idle_timeout)]
    if args.lost_cache:
        base += ["--lost-cache"]
    metrics = worker_metrics(args.metrics or cfg.metrics, n)
    cmds = []
    outboxes = [out.fileno() for _, out in steering]
    for i in range(n):
        steer = (steering[i][0].fileno(), outboxes) if steering else None
        cmd = [*base, "--worker-role", encode_role(WorkerRole(i, n, own), ports, steer)]
        if metrics:
            cmd += ["--metrics", metrics[i]]
        if args.events:
            cmd += ["--events", f"{args.events}.w{i}"]
        cmds.append(cmd)
    return cmds


def worker_metrics(spec: str | None, n: int) -> list[str]:
    """Each of `n` workers' `--metrics`: PORT + i (each worker its own counters), or port 0
    for all (each picks one; its ready line names it). Empty when metrics are off."""
    if not spec:
        return []
    host, port = metrics_address(spec)
    if port and port + n - 1 > 65535:
        raise ConfigError(f"metrics: ports {port}..{port + n - 1} do not all exist")
    return [metrics_spec(host, port + i if port else 0) for i in range(n)]


async def supervise(args: argparse.Namespace, cfg: Any, n: int) -> int:
    """The parent of `n` workers of the element `cfg` (`ng911 run ... --workers N`)."""
    udp = any(lst.transport == "udp" for lst in cfg.listeners)
    steer = udp and getattr(args, "udp_steering", "call-id") == "call-id"
    pairs = steering_pairs(n) if steer else []
    try:
        cmds = worker_commands(args, cfg, n, pairs)
        outboxes = [out.fileno() for _, out in pairs]
        pass_fds = [(inbox.fileno(), *outboxes) for inbox, _ in pairs]
        # its few lines (a worker died...) even with --quiet
        sup = Supervisor(cfg.name, cmds, pass_fds=pass_fds)
        return await _supervise(sup, args, cfg, cmds)
    finally:
        for inbox, outbox in pairs:
            inbox.close()
            outbox.close()


async def _supervise(
    sup: Supervisor, args: argparse.Namespace, cfg: Any, cmds: list[list[str]]
) -> int:
    """Run the workers; print the --ready line once all are up."""
    _, ports = decode_role(cmds[0][cmds[0].index("--worker-role") + 1])

    def ready(workers: list[WorkerProcess]) -> None:
        if args.ready:
            addresses = [
                f"{lst.transport}:{lst.host}:{port}"
                for lst, port in zip(cfg.listeners, ports, strict=True)
            ]
            line = {
                "ready": cfg.name,
                "pid": os.getpid(),
                "workers": [w.pid for w in workers],
                "addresses": addresses,
            }
            urls = [w.ready["metrics"] for w in workers if "metrics" in w.ready]
            if urls:
                line["metrics"] = urls
            print(json.dumps(line), flush=True)

    return await sup.run(ready)
