"""An `ng911 run psap --events` child and a UDP OPTIONS flood at it (test_events_stream)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import time
from pathlib import Path

PAD = "X-Pad: " + "p" * 1500  # big messages: the event data dominates what is kept


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def psap_config(tmp: Path, port: int) -> Path:
    cfg = tmp / "psap.toml"
    cfg.write_text(
        '[psap]\nname = "psap-flood"\n'
        # every OPTIONS must be answered (and recorded): this floods the event recorder,
        # not overload control (tests/resilience/test_flood.py floods that)
        "overload = {enabled = false}\n"
        f'listeners = [{{transport = "udp", host = "127.0.0.1", port = {port}}}]\n'
    )
    return cfg


async def start_psap(
    cfg: Path, events: Path | None, pythonpath: str | None = None
) -> asyncio.subprocess.Process:
    """`ng911 run psap` (with `--events` if given), once it says it is ready."""
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "ng911", "run", "psap", "--config", str(cfg)),
        *(("--events", str(events)) if events is not None else ()),
        "--ready",
        "--quiet",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 60.0)
    assert json.loads(line)["ready"] == "psap-flood", line
    return proc


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def options(i: int, port: int, src_port: int) -> bytes:
    return (
        f"OPTIONS sip:psap@127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{src_port};branch=z9hG4bK-flood-{i}\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:flood@127.0.0.1>;tag=f1\r\n"
        "To: <sip:psap@127.0.0.1>\r\n"
        f"Call-ID: flood-{i}@127.0.0.1\r\n"
        f"CSeq: {i + 1} OPTIONS\r\n"
        f"{PAD}\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


async def flood(port: int, count: int, per_burst: int = 200, pause: float = 0.02) -> int:
    """Send `count` OPTIONS in bursts of `per_burst`; how many answers came back."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    src = sock.getsockname()[1]
    answers = 0
    try:
        for start in range(0, count, per_burst):
            for i in range(start, min(count, start + per_burst)):
                try:
                    sock.sendto(options(i, port, src), ("127.0.0.1", port))
                except BlockingIOError:
                    pass
            await asyncio.sleep(pause)
            answers += drain(sock)
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            answers += drain(sock)
    finally:
        sock.close()
    return answers


def drain(sock: socket.socket) -> int:
    n = 0
    while True:
        try:
            sock.recv(65536)
        except BlockingIOError:
            return n
        n += 1
