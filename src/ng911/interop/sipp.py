"""SIPp as a peer of ng911, for the interop tests and the load benches.

The scenarios are package data (`sipp/*.xml`): `uac_plain.xml` / `uac_emergency.xml` (a
caller through a proxy to the `[uas]` key), `uas.xml` (a callee copying Record-Route, so ACK
and BYE go through the proxy too), `uac_flood.xml` / `uas_flood.xml` (a call storm whose
503s are ACKed, and a callee that takes a BYE before the ACK), `subscribe_queuestate.xml`
(an i3 state subscriber: SUBSCRIBE emergency-QueueState at `[target]`, the NOTIFY's JSON
checked, unsubscribe, the terminated NOTIFY).

- `run_sipp` runs one scenario as an asyncio subprocess, so the event loop that runs our
  elements keeps serving while SIPp talks to them; it returns SIPp's exit code (0: every
  call succeeded) and its error log, and kills SIPp on timeout;
- `SippUas` is a callee in the background for a whole bench run; `read_stat` reads the CSV
  of `-trace_stat` (one row per `-fd` period, `(C)` columns cumulative).
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ng911.interop.procs import LOCAL, free_port, stop

SIPP = shutil.which("sipp")
SCENARIOS = Path(__file__).resolve().parent / "sipp"
MISSING = "sipp not installed (Debian package sip-tester; `make peers` installs it)"


@dataclass(frozen=True, slots=True)
class SippResult:
    returncode: int
    stdout: str
    errors: str

    def explain(self) -> str:
        return f"sipp exit {self.returncode}\n--- errors:\n{self.errors[-3000:]}"


def sipp_args(
    scenario: str,
    *,
    transport: str = "udp",
    remote: str | None = None,
    port: int | None = None,
    calls: int | None = 1,
    keys: Mapping[str, str] | None = None,
    extra: Sequence[str] = (),
    local: str = LOCAL,
) -> list[str]:
    """The command line of one SIPp run from `local`: `transport` "udp"/"tcp" (`-t u1`/`t1`,
    one socket) or a SIPp mode itself (`un`: a UDP socket per call); `calls=None`: no `-m`
    (a callee that runs until stopped)."""
    assert SIPP is not None
    args = [SIPP]
    if remote:
        args.append(remote)
    args += ["-sf", str(SCENARIOS / scenario), "-i", local]
    args += ["-m", str(calls)] if calls is not None else []
    mode = {"udp": "u1", "tcp": "t1"}.get(transport, transport)
    args += ["-t", mode, "-nostdin", "-recv_timeout", "10000"]
    if port is not None:
        args += ["-p", str(port)]
    for k, v in (keys or {}).items():
        args += ["-key", k, v]
    return args + list(extra)


async def start_sipp(args: Sequence[str], workdir: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *args,
        "-trace_err",
        "-error_file",
        str(workdir / "sipp-errors.log"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=workdir,
    )


async def finish_sipp(
    proc: asyncio.subprocess.Process, workdir: Path, timeout: float = 20.0
) -> SippResult:
    """Wait for SIPp (killing it after `timeout`), collect its output and error log."""
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        out, _ = await proc.communicate()
    errors = ""
    with contextlib.suppress(OSError):
        errors = (workdir / "sipp-errors.log").read_text(errors="replace")
    rc = proc.returncode if proc.returncode is not None else -1
    return SippResult(rc, out.decode(errors="replace"), errors)


async def run_sipp(args: Sequence[str], workdir: Path, timeout: float = 20.0) -> SippResult:
    return await finish_sipp(await start_sipp(args, workdir), workdir, timeout)


async def stop_sipp(proc: asyncio.subprocess.Process) -> None:
    """Terminate a SIPp still running (a UAS waiting for a call that never came)."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


class SippUas:
    """A SIPp callee in the background on a free port of 127.0.0.1, for a whole bench run;
    `stop()` always ends it."""

    def __init__(self, workdir: Path, transport: str = "udp", scenario: str = "uas.xml") -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            sipp_args(scenario, transport=transport, port=self.port, calls=None,
                      extra=["-max_socket", "4096"]),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=workdir,
        )  # fmt: skip
        time.sleep(0.3)  # SIPp has no ready signal; it binds within this

    def stop(self) -> None:
        stop(self.proc)


def read_stat(path: Path) -> list[dict[str, str]]:
    """The rows of SIPp's `-trace_stat` CSV ([] when there is none yet)."""
    try:
        rows = list(csv.reader(path.read_text(errors="replace").splitlines(), delimiter=";"))
    except OSError:
        return []
    return [dict(zip(rows[0], r, strict=False)) for r in rows[1:]] if len(rows) > 1 else []


def stat_count(row: Mapping[str, str], key: str) -> int:
    """One counter of a `read_stat` row, e.g. `SuccessfulCall(C)` (0 when absent)."""
    try:
        return int(float(row.get(key, "0") or 0))
    except ValueError:
        return 0
