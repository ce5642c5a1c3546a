"""What the console's tests share: reading its event stream, and a short watched run."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp

from ng911.console.server import RunConsole
from ng911.testbed.plan import ChainOptions
from ng911.testbed.run import RunConfig


async def read_frames(url: str, frames: list[dict], connected: asyncio.Event) -> None:
    """Every `data:` frame of the console's event stream, until the console closes it."""
    try:
        async with aiohttp.ClientSession() as s, s.get(url + "api/events") as resp:
            connected.set()
            for _ in range(200000):  # bounded
                line = await resp.content.readline()
                if not line:
                    return
                if line.startswith(b"data: "):
                    frames.append(json.loads(line[6:]))
    except (aiohttp.ClientError, ConnectionError):
        return


def watched_run(
    tmp_path: Path,
    watch: RunConsole,
    *,
    scenarios: list[str],
    calls: int,
    rate: float,
    processes: bool = False,
) -> RunConfig:
    """A short run (no baseline, no captures) with `watch` as its console."""
    return RunConfig(
        scenarios=scenarios,
        calls=calls,
        rate=rate,
        out=tmp_path / "run",
        baseline=False,
        captures=False,
        chain=ChainOptions(processes=processes),
        watch=watch,
    )
