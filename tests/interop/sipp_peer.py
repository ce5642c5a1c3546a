"""SIPp as a peer of ng911 in the interop tests (a helper module, not a test).

`run_sipp` runs one SIPp scenario of `tests/interop/sipp/` as an asyncio subprocess, so the
event loop that runs our elements keeps serving while SIPp talks to them; it returns SIPp's
exit code (0: every call succeeded) and its error log, and kills SIPp on timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

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
    calls: int = 1,
    keys: dict[str, str] | None = None,
    extra: Sequence[str] = (),
) -> list[str]:
    """The command line of one SIPp run on 127.0.0.1 (`-t u1`/`t1`: one socket)."""
    assert SIPP is not None
    args = [SIPP]
    if remote:
        args.append(remote)
    args += ["-sf", str(SCENARIOS / scenario), "-i", "127.0.0.1", "-m", str(calls)]
    args += ["-t", {"udp": "u1", "tcp": "t1"}[transport], "-nostdin", "-recv_timeout", "10000"]
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
