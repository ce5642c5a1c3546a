"""What the console's tests share: reading its event stream, a short watched run, and the
browser tests' chromium (Debian's, driven by Playwright: never its download), where their
screenshots go and the steps that make the Brooklyn call taker's console ring."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ng911.console.server import Console, RunConsole
from ng911.testbed.plan import ChainOptions
from ng911.testbed.run import RunConfig

CHROMIUM = "/usr/bin/chromium"
# quiet: no update checks, component downloads, sync or first-run pages (no request of the
# browser's own, only the page's)
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-sync",
    "--no-first-run",
]
needs_chromium = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is missing (apt-get install chromium)"
)


def shots_dir(tmp_path: Path) -> Path:
    """Where screenshots go: `tmp_path`/shots, or $NG911_CONSOLE_SHOTS when set (the
    README's images)."""
    out = Path(os.environ.get("NG911_CONSOLE_SHOTS") or tmp_path / "shots")
    out.mkdir(parents=True, exist_ok=True)
    return out


async def ring_brooklyn(page: Any, console: Console) -> Any:
    """On a loaded console page: sit at the Brooklyn position (auto-answer off), click
    Brooklyn on the caller map; the ringing call's locator once the Brooklyn call taker's
    console rings, its location the point clicked (to a few screen pixels)."""
    await page.wait_for_selector("[data-taker='taker-brooklyn']")
    await page.check("[data-taker='taker-brooklyn'] .attend")
    await page.wait_for_function(
        "window.ng911.lastState && window.ng911.lastState.takers['taker-brooklyn'].attended"
    )
    assert console.chain is not None
    lat, lon = console.chain.topology.point("Brooklyn")
    x, y = await page.evaluate(f"window.ng911.screenPoint({lat}, {lon})")
    await page.mouse.click(x, y)
    call = page.locator("[data-taker='taker-brooklyn'] .call[data-state='ringing']")
    await call.wait_for(timeout=15000)
    loc_text = await call.locator(".loc").inner_text()
    got_lat, got_lon = (float(v.strip(",")) for v in loc_text.split()[2:4])
    # one screen pixel of the 480-pixel map is ~0.001-0.0015 degrees
    assert abs(got_lat - lat) < 5e-3 and abs(got_lon - lon) < 5e-3, loc_text
    assert "IncidentId" in await call.inner_text()
    assert await page.locator("[data-taker='taker-brooklyn'].ringing").count() == 1
    return call


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
