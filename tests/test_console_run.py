"""`ng911 testbed run --console`: the live console watches a run's in-process chains.

A short run (two scenarios, a few calls) with `RunConsole` as its watcher; an HTTP client
reads the console's event stream meanwhile and gets frames of the run's own calls (their
Call-IDs are in the results' call_records), and no call fails. `--console-stay` without
`--console` is refused in one line, exit 2. (Element processes: test_console_processes.py.)
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from console_helpers import read_frames, watched_run
from ng911.cli import main
from ng911.console.server import RunConsole
from ng911.testbed.run import RunConfig, run_testbed


def _config(tmp_path: Path, watch: RunConsole, *, calls: int, rate: float) -> RunConfig:
    """Two scenarios, no baseline or captures: a short run."""
    return watched_run(tmp_path, watch, scenarios=["plain", "tcp"], calls=calls, rate=rate)


async def test_the_console_shows_a_runs_calls(tmp_path):
    frames: list[dict] = []
    connected = asyncio.Event()
    readers: list[asyncio.Task[None]] = []

    def ready(url: str) -> None:
        readers.append(asyncio.get_running_loop().create_task(read_frames(url, frames, connected)))

    watch = RunConsole(ready=ready)
    result = await run_testbed(_config(tmp_path, watch, calls=6, rate=20.0))
    assert readers and connected.is_set()
    await asyncio.wait_for(readers[0], 15)  # the run closed the console: the stream ended
    assert result.failed == 0
    run_ids = {
        r["call_id"] for res in result.results["scenarios"].values() for r in res["call_records"]
    }
    assert len(run_ids) == 12
    seen = {f.get("call") for f in frames if f.get("type") == "msg"} - {None}
    assert seen & run_ids, (len(frames), sorted(seen)[:5])
    assert seen <= run_ids  # only the run's calls: the console places none
    states = [f for f in frames if f.get("type") == "state" and f.get("ready")]
    assert states and states[-1]["scenario"] in {"plain", "tcp"}
    assert watch.console.running == {} and watch.console.chain is None


async def test_a_watching_console_switches_among_the_runs_chains(tmp_path):
    """The page's selector picks one of the running chains; the console places no call."""
    result: dict[str, object] = {}

    def ready(url: str) -> None:
        result["url"] = url

    watch = RunConsole(ready=ready)

    async def poke() -> None:
        for _ in range(200):  # bounded: until both chains are attached
            if len(watch.console.running) == 2:
                break
            await asyncio.sleep(0.05)
        url = str(result["url"])
        async with aiohttp.ClientSession() as s:
            async with s.get(url + "api/topology") as resp:
                topo = await resp.json()
                result["choices"] = sorted(topo["scenarios"])
            async with s.post(url + "api/scenario", json={"scenario": "tcp"}) as resp:
                result["switched"] = (await resp.json())["hops"]["hop1"]["transport"]
            async with s.post(url + "api/scenario", json={"scenario": "tls-all"}) as resp:
                result["not_running"] = resp.status
            async with s.post(url + "api/call", json={"lat": 40.7, "lon": -73.9}) as resp:
                result["call"] = resp.status

    poker = asyncio.ensure_future(poke())
    res = await run_testbed(_config(tmp_path, watch, calls=30, rate=10.0))
    await asyncio.wait_for(poker, 5)
    assert result["choices"] == ["plain", "tcp"]
    assert result["switched"] == "tcp"
    assert result["not_running"] == 400 and result["call"] == 409
    assert res.failed == 0


def test_console_stay_without_console_is_refused_in_one_line(capsys):
    code = main(["testbed", "run", "--console-stay", "--calls", "1", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "--console-stay needs --console" in err


async def test_a_staying_console_follows_a_sequential_run_and_keeps_every_chain(tmp_path):
    """`--sequential --console-stay`: each scenario's chain is shown as it starts (the one
    before it finished), and after the run both stay selectable as finished chains."""
    seen: dict[str, object] = {}

    def say(text: str) -> None:
        console = watch.console
        seen.update(scenario=console.scenario, ended=set(console.ended), url=console.url)
        seen["state"] = console.snapshot()
        watch.release()

    watch = RunConsole(ready=lambda _u: None, stay=True, say=say)
    cfg = _config(tmp_path, watch, calls=2, rate=10.0)
    cfg.interleave = False
    result = await run_testbed(cfg)
    assert result.failed == 0
    assert seen["scenario"] == "tcp" and seen["ended"] == {"plain", "tcp"}
    state = seen["state"]
    assert isinstance(state, dict) and state["finished"] and state["takers"] == {}
    assert watch.console.chain is None  # closed once released
