"""Child processes of a harness run: ports, /proc readers, a stop that always ends them, and
an OPTIONS probe (is a SIP peer reading its socket yet).

CPU time is read from the scheduler's own per-thread account (`/proc/PID/task/*/schedstat`;
ANCHORS.md: `/proc/PID/stat` misses short bursts), summed over a process's threads.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

LOCAL = "127.0.0.1"


def free_port(host: str = LOCAL) -> int:
    """A port free for both TCP and UDP on `host` (checked both ways; racy by nature)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = int(s.getsockname()[1])
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s2:
                s2.bind((host, port))
        except OSError:
            continue
        return port
    raise OSError("no port free for both TCP and UDP")


def cpu_seconds(pid: int) -> float:
    """CPU time of every thread of `pid` (0 when it is gone)."""
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0.0
    for t in tasks:
        try:
            with open(f"/proc/{pid}/task/{t}/schedstat") as fh:
                total += int(fh.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return total / 1e9


def rss_mb(pid: int) -> float | None:
    """Resident memory of `pid` in MB (None when it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def children_of(pid: int) -> list[int]:
    """The direct children of `pid` (a Kamailio's or a supervisor's workers)."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as fh:
                # "pid (comm) state ppid ..." — comm may hold spaces: split after the last ')'
                rest = fh.read().rsplit(")", 1)[-1].split()
        except OSError:
            continue
        if len(rest) > 1 and rest[1] == str(pid):
            out.append(int(d))
    return out


def tail(path: Path, n: int) -> str:
    """The last `n` characters of a child's log file ("" when there is none)."""
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def tree(pid: int) -> list[int]:
    """`pid` and its direct children: what CPU and memory are summed over."""
    return [pid, *children_of(pid)]


def stop(
    proc: subprocess.Popen[Any] | None,
    sig: int = signal.SIGTERM,
    *,
    timeout: float = 5.0,
    group: bool = False,
) -> int | None:
    """Send `sig`, wait `timeout` s, then SIGKILL; the exit code (None: no process).

    `group`: signal the process group (a child started with `start_new_session=True`), and
    SIGKILL it at the end whatever happened: workers left behind by a main process that died
    first share its group.
    """
    if proc is None:
        return None

    def send(s: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if group:
                os.killpg(proc.pid, s)
            else:
                proc.send_signal(s)

    if proc.poll() is None:
        send(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            send(signal.SIGKILL)
            proc.wait(5)
    if group:
        send(signal.SIGKILL)
    return proc.returncode


def options_probe(
    port: int, timeout: float = 2.0, host: str = LOCAL, *, max_forwards: int = 70
) -> int | None:
    """Send an OPTIONS over UDP until a final answer comes: its status, or None in `timeout`.
    `max_forwards=0` asks a proxy to answer (483) rather than relay it."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((LOCAL, 0))
        me = s.getsockname()[1]
        tag, cid, br = os.urandom(4).hex(), os.urandom(8).hex(), os.urandom(6).hex()
        msg = (
            f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {LOCAL}:{me};branch=z9hG4bK{br};rport\r\n"
            f"Max-Forwards: {max_forwards}\r\n"
            f"From: <sip:probe@{LOCAL}>;tag={tag}\r\nTo: <sip:{host}:{port}>\r\n"
            f"Call-ID: {cid}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        deadline = time.monotonic() + timeout
        s.settimeout(min(0.25, timeout))
        while time.monotonic() < deadline:
            s.sendto(msg, (host, port))
            try:
                while True:
                    data, _ = s.recvfrom(65535)
                    if cid.encode() in data and data.startswith(b"SIP/2.0 "):
                        code = int(data[8:11])
                        if code >= 200:
                            return code
            except (TimeoutError, ValueError):
                continue
            except OSError:  # ICMP port unreachable: nothing listens yet
                time.sleep(min(0.05, timeout))
    return None
