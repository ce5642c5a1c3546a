"""The rig the benches share: `ng911 run` elements as processes, probes, /proc, results.

Not a benchmark (running it does nothing): `bench/load.py`, `bench/resilience.py`,
`bench/fuzz.py` and the micro-benches import it (`bench/loadgen.py` holds the SIP traffic
generators). What it holds:

- `Element`: one `ng911 run KIND --config FILE --ready` process, its config written as TOML
  from a plain dict (`toml_table`), its stderr in a file beside the element's `log_file`, so
  a run can count tracebacks afterwards (`tracebacks`); `start_proxy`: ng911's VSP, or its
  ESRP with a LoST server, as the proxy under load;
- `options_probe` / `lost_probe`: does a SIP element answer an OPTIONS over UDP, does a LoST
  server answer a findService;
- `/proc` readers (`ng911.interop.procs`): resident memory (`rss_mb`), CPU time of every
  thread (`cpu_seconds`, from the scheduler's own account, ANCHORS.md), kernel drops of a
  UDP port (`udp_drops`);
- `percentile`, `best_rate` (a micro-bench's best of N), `write_result` (bench/results/,
  with `yardstick_ns`: how fast the machine was);
- `in_private_netns`: re-run a command in a network namespace of its own with only `lo`
  up, so traffic the run provokes can never leave the machine (hostile input may name any
  address as a next hop).
"""

from __future__ import annotations

import json
import os
import platform
import re
import select
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

# element configs are written as the testbed writes them for `--processes`
from ng911.elements.config import toml_table
from ng911.interop.procs import (
    LOCAL,
    children_of,
    cpu_seconds,
    free_port,
    options_probe,
    rss_mb,
    stop,
    tail,
)

__all__ = ["LOCAL", "children_of", "cpu_seconds", "free_port", "options_probe", "rss_mb"]

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
BOUNDARIES = REPO / "src" / "ng911" / "data" / "nyc-boroughs.geojson"
BOROUGHS = ("manhattan", "brooklyn", "queens", "bronx", "staten-island")
NG911 = ("-m", "ng911")  # how Python runs `ng911` (an Element's `launcher`)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The `q`-th percentile (0-100) of `values`, nearest rank; None when there are none."""
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, max(0, round(q / 100 * (len(v) - 1))))]


def opt(value: Any, spec: str) -> str:
    """`value` formatted for a table, "-" when there is none."""
    return format(value, spec) if value is not None else "-"


def best_rate(fn: Callable[[], object], n: int, repeats: int = 5) -> float:
    """Calls of `fn` per second: the best of `repeats` runs of `n` (the least disturbed)."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, time.perf_counter() - t0)
    return n / best


YARDSTICK_STEPS = 200_000


def yardstick_ns(rounds: int = 5) -> float:
    """Nanoseconds per step of a fixed pure-Python loop, the best of `rounds` (~0.1 s in
    all): how fast this machine ran the interpreter when a result was written.

    Why: these shared machines change speed from one day to the next by 2-3x (Kamailio's
    own CPU per UDP call measured 255 µs one week, 704-1,420 µs on one later day). A ratio
    against a peer of the same run survives that; an absolute figure (the chain's calls per
    second, `validate()`'s messages per second) does not, and is read beside this."""
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        acc = 0
        for i in range(YARDSTICK_STEPS):
            acc = (acc + i * 7) % 1_000_003
        best = min(best, time.perf_counter() - t0)
    return best / YARDSTICK_STEPS * 1e9


def write_result(name: str, out: Mapping[str, Any], path: Path | None = None) -> Path:
    """Write `out` as bench/results/NAME.json (or `path`) and say so, with the interpreter,
    the machine, how fast it was then (`yardstick_ns`) and the time it ran on (unless
    `out` names them itself)."""
    path = path or RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    from ng911 import compiled

    about = {
        "python": sys.version.split()[0],
        "build": compiled.build(),  # this process's sans-I/O core: mypyc-compiled or pure
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "yardstick_ns": round(yardstick_ns(), 1),
    }
    path.write_text(json.dumps({**about, **out}, indent=2) + "\n")
    print(f"wrote {path} (machine yardstick {about['yardstick_ns']:.0f} ns)")
    return path


# --------------------------------------------------------------------------- /proc


_COLLECTED = re.compile(r"Collected\s*:\s*(\d+)")


def callgrind_per_call(argv: Sequence[str], counts: tuple[int, int]) -> float:
    """Instructions per call of a bench: `python argv... --calls N` under callgrind for the
    two call counts, differenced (start-up and warm-up cancel out; callgrind's counts are
    stable where CPU time on a shared machine is not). Run with PYTHONHASHSEED=0."""
    import tempfile

    # once without callgrind first: a module whose .pyc is missing or stale (after a
    # checkout, an edit) is compiled from source by the first run only, and the parser's
    # instructions would land in one count and not the other
    warm = [sys.executable, *argv, "--calls", str(min(counts))]
    subprocess.run(warm, capture_output=True, env=dict(os.environ), check=False)
    got: dict[int, int] = {}
    for n in counts:
        with tempfile.TemporaryDirectory(prefix="ng911-cg-") as tmp:
            cmd = [
                "valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/cg.out",
                sys.executable, *argv, "--calls", str(n),
            ]  # fmt: skip
            res = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
            m = _COLLECTED.search(res.stderr)
            if res.returncode != 0 or m is None:
                raise RuntimeError(f"callgrind run failed: {res.stderr[-2000:]}")
            got[n] = int(m.group(1))
            print(f"callgrind {n:>5} calls: {got[n]:,} instructions")
    a, b = counts
    return (got[b] - got[a]) / (b - a)


def udp_drops(port: int) -> int:
    """Datagrams the kernel dropped on the UDP socket(s) bound to `port` (receive buffer
    full): the last column of /proc/net/udp, in this network namespace."""
    total = 0
    try:
        with open("/proc/net/udp") as fh:
            next(fh)
            for line in fh:
                parts = line.split()
                if len(parts) > 12 and int(parts[1].split(":")[1], 16) == port:
                    total += int(parts[-1])
    except (OSError, ValueError, StopIteration):
        pass
    return total


# --------------------------------------------------------------------------- network namespace


def in_private_netns() -> bool:
    """True when this process's only network interface is loopback (a namespace of its own)."""
    try:
        names = [n for _, n in socket.if_nameindex()]
    except OSError:
        return False
    return names == ["lo"]


def reexec_in_netns(argv: Sequence[str]) -> int | None:
    """Run `python argv...` again in a new network namespace with `lo` up; its exit code, or
    None when no namespace can be made here (not root, no `unshare`/`ip`)."""
    unshare, ip = shutil.which("unshare"), shutil.which("ip")
    if unshare is None or ip is None or os.geteuid() != 0:
        return None
    probe = subprocess.run([unshare, "-n", ip, "link", "set", "lo", "up"], capture_output=True)
    if probe.returncode != 0:
        return None
    script = f'{ip} link set lo up && exec "$@"'
    cmd = [unshare, "-n", "sh", "-c", script, "sh", sys.executable, *argv]
    return subprocess.call(cmd)


# --------------------------------------------------------------------------- elements


class Element:
    """One `ng911 run KIND` process: config `[name]` in `workdir/name.toml`, its log file
    `workdir/name.log` (SIP elements), stderr in `workdir/name.stderr`. `launcher`: the
    Python arguments that run `ng911` (e.g. under `-m cProfile -o FILE`)."""

    def __init__(
        self,
        kind: str,
        name: str,
        config: Mapping[str, Any],
        workdir: Path,
        *,
        quiet: bool = False,
        log_file: bool = True,
        extra_args: Sequence[str] = (),
        launcher: Sequence[str] = NG911,
    ) -> None:
        self.kind, self.name, self.workdir = kind, name, workdir
        self.config = dict(config)
        self.log_path = workdir / f"{name}.log"
        self.stderr_path = workdir / f"{name}.stderr"
        if kind != "lost" and log_file:
            self.config.setdefault("log_file", str(self.log_path))
        if kind in ("vsp", "esrp"):
            self.config.setdefault("workers", 1)  # one process unless `--workers` says more
        self.cfg_path = workdir / f"{name}.toml"
        self.cfg_path.write_text(toml_table(name, {"name": name, **self.config}))
        self.quiet = quiet
        self.extra_args = list(extra_args)
        self.launcher = list(launcher)
        self.proc: subprocess.Popen[str] | None = None
        self.ready: dict[str, Any] = {}
        self.exit_code: int | None = None

    def start(self, timeout: float = 30.0) -> Element:
        cmd = [
            sys.executable, *self.launcher, "run", self.kind, "--config", str(self.cfg_path),
            "--table", self.name, "--ready", *(["--quiet"] if self.quiet else []),
            *self.extra_args,
        ]  # fmt: skip
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO / "src"), env.get("PYTHONPATH", "")) if p
        )
        with self.stderr_path.open("ab") as err:
            self.proc = subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env, cwd=self.workdir
            )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited {self.proc.returncode}: {self.stderr_tail()}"
                )
            readable, _, _ = select.select([self.proc.stdout], [], [], 0.1)
            if readable:
                line = self.proc.stdout.readline()  # the ready line comes whole
                try:
                    self.ready = json.loads(line)
                    return self
                except ValueError:
                    continue
        self.stop()
        raise RuntimeError(f"{self.name} not ready in {timeout} s: {self.stderr_tail()}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def pids(self) -> list[int]:
        if self.proc is None or self.proc.poll() is not None:
            return []
        return [self.proc.pid, *children_of(self.proc.pid)]

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def rss_mb(self) -> float:
        return round(sum(r for p in self.pids() if (r := rss_mb(p)) is not None), 1)

    def cpu_seconds(self) -> float:
        return sum(cpu_seconds(p) for p in self.pids())

    def stderr_tail(self, n: int = 2000) -> str:
        return tail(self.stderr_path, n)

    def stop(self, timeout: float = 15.0) -> int | None:
        p = self.proc
        if p is None:
            return self.exit_code
        self.exit_code = stop(p, timeout=timeout)
        if p.stdout is not None:
            p.stdout.close()
        return self.exit_code


def start_proxy(
    kind: str,
    workdir: Path,
    next_hop: str,
    listeners: Sequence[Mapping[str, Any]],
    *,
    config: Mapping[str, Any] | None = None,
    extra_args: Sequence[str] = (),
    launcher: Sequence[str] = NG911,
) -> list[Element]:
    """ng911's proxy under load, started: the VSP ("vsp", emergency calls to `next_hop`) or
    the ESRP ("esrp", after its LoST server, which maps every borough to `next_hop`); the
    proxy is the last element. Quiet, no log file (as Kamailio's `debug=1`).

    The load comes from one source (SIPp, one socket) sending thousands of requests a
    second, which the per-source limit (a flood defence) would cut before overload control
    had anything to do: it is off; overload control itself stays on, as deployed."""
    els: list[Element] = []
    cfg: dict[str, Any] = {"listeners": list(listeners), "overload": {"source_rate": 0}}
    cfg |= config or {}
    try:
        if kind == "vsp":
            cfg["esrp"] = next_hop
        else:
            uris = {b: [next_hop] for b in BOROUGHS}
            lost = {"host": LOCAL, "port": free_port(), "boundaries": str(BOUNDARIES), "uris": uris}
            els.append(Element("lost", "lost", lost, workdir).start())
            # every call asks LoST (the bench's "ESRP (LoST per call)" row) unless the
            # caller's `config` turns the ESRP's answer cache back on
            cfg |= {"lost_url": els[0].ready["url"], "default_route": next_hop}
            cfg.setdefault("lost_cache", False)
        el = Element(kind, kind, cfg, workdir, quiet=True, log_file=False,
                     extra_args=extra_args, launcher=launcher)  # fmt: skip
        els.append(el.start())
    except BaseException:
        for e in els:
            e.stop()
        raise
    return els


_TB = re.compile(r"Traceback \(most recent call last\):")
_FAILED = re.compile(r"(handler failed|task failed|timer handler failed|Exception in callback)")
_FRAME = re.compile(r'File "([^"]+)", line (\d+), in (\S+)')


def tracebacks(paths: Sequence[Path], keep: int = 8) -> tuple[int, dict[str, int], list[str]]:
    """Python tracebacks (or, where none is printed, 'handler failed' lines) in the files:
    how many, how many of each kind (`file:function: Exception`, the innermost frame), and
    the text of the first traceback of each kind (at most `keep`)."""
    count = 0
    kinds: dict[str, int] = {}
    samples: dict[str, str] = {}
    for path in paths:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        hits = list(_TB.finditer(text))
        if not hits:
            n = len(_FAILED.findall(text))
            count += n
            if n:
                kinds[f"{path.name}: failure line"] = kinds.get(f"{path.name}: failure line", 0) + n
            continue
        count += len(hits)
        for m in hits:
            block = text[m.start() : m.start() + 8000].splitlines()
            out, frame, exc = [block[0][:300]], "?", "?"
            for ln in block[1:]:
                out.append(ln[:300])
                f = _FRAME.search(ln)
                if f:
                    frame = f"{Path(f.group(1)).name}:{f.group(2)} {f.group(3)}"
                elif ln and not ln.startswith((" ", "Traceback", "During", "The above")):
                    exc = ln.split(":", 1)[0][:80]
                    break
            key = f"{path.stem}: {frame}: {exc}"
            kinds[key] = kinds.get(key, 0) + 1
            if key not in samples and len(samples) < keep:
                start = text.rfind("\n", 0, max(0, m.start() - 1))
                context = text[text.rfind("\n", 0, max(0, start - 1)) + 1 : m.start()].strip()
                samples[key] = f"{path.name}: {context[-300:]}\n" + "\n".join(out)
    return count, kinds, list(samples.values())


# --------------------------------------------------------------------------- probes


FIND_SERVICE = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<findService xmlns="urn:ietf:params:xml:ns:lost1" '
    'xmlns:gml="http://www.opengis.net/gml" serviceBoundary="value" recursive="true">\n'
    '  <location id="loc1" profile="geodetic-2d">\n'
    '    <gml:Point srsName="urn:ogc:def:crs:EPSG::4326"><gml:pos>40.7580 -73.9855</gml:pos>'
    "</gml:Point>\n"
    "  </location>\n"
    "  <service>urn:service:sos</service>\n"
    "</findService>\n"
)


def http_post(host: str, port: int, path: str, body: bytes, timeout: float = 3.0) -> int | None:
    """One HTTP/1.1 POST on a fresh connection: the status code, or None."""
    req = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: application/lost+xml\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode() + body
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(req)
            data = s.recv(4096)
    except OSError:
        return None
    try:
        return int(data.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return None


def lost_probe(url: str, timeout: float = 3.0) -> int | None:
    """POST a findService for Times Square to the LoST server at `url`; the HTTP status."""
    hostport, _, path = url.split("://", 1)[1].partition("/")
    host, _, port = hostport.rpartition(":")
    return http_post(host, int(port), "/" + path, FIND_SERVICE.encode(), timeout)
