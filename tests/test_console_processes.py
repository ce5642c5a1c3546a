"""The live console watching a chain of element processes (`ng911 testbed run --processes
--console`), and staying on the finished run (`--console-stay`).

A short `--processes` run of `tls-e2e` with `RunConsole(stay=True)` as its watcher: an HTTP
client reads the console's event stream while the children run and gets their messages live
(tailed from their event files), each hop in the scenario's transport (the colour the page
draws), and the LoST exchange. Once the report is written the console is still there: the
topology says the run is finished, the kept LoST frame opens in the inspector with its
findService request and answer XML; `release()` (what Ctrl-C does) ends the stay.
The command itself: `--console-stay` keeps serving after the run until SIGINT, exit 0.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import aiohttp

from console_helpers import read_frames, watched_run
from ng911.console.server import RunConsole
from ng911.testbed.run import run_testbed

EXPECTED = {"hop1": "tls", "hop2": "tls", "hop3": "tls", "hop4": "udp"}  # tls-e2e


async def test_processes_console_streams_live_then_stays(tmp_path):
    frames: list[dict] = []
    connected = asyncio.Event()
    readers: list[asyncio.Task[None]] = []
    seen: dict[str, object] = {}
    urls: list[str] = []

    def ready(url: str) -> None:
        urls.append(url)
        readers.append(asyncio.get_running_loop().create_task(read_frames(url, frames, connected)))

    async def browse_then_release() -> None:
        """What a person does once the run is over: look, then Ctrl-C."""
        try:
            seen["live"] = len(frames)  # frames that came while the chain ran
            async with aiohttp.ClientSession() as s:
                async with s.get(urls[0] + "api/topology") as resp:
                    seen["topology"] = await resp.json()
                lost = [f for f in frames if f.get("type") == "lost" and not f.get("cached")]
                if lost:
                    async with s.get(urls[0] + f"api/message/{lost[0]['id']}") as resp:
                        seen["lost"] = await resp.json()
        finally:
            watch.release()

    def say(text: str) -> None:
        seen["said"] = text
        asyncio.get_running_loop().create_task(browse_then_release())

    watch = RunConsole(ready=ready, stay=True, say=say)
    cfg = watched_run(tmp_path, watch, scenarios=["tls-e2e"], calls=4, rate=4.0, processes=True)
    result = await run_testbed(cfg)
    await asyncio.wait_for(readers[0], 15)  # the stay ended: the console closed the stream
    assert result.failed == 0
    assert "still serves it" in str(seen["said"])

    # live: the children's messages reached the page while they ran, in the hop colours
    msgs = [f for f in frames if f.get("type") == "msg"]
    assert msgs and int(seen["live"]) > 0  # type: ignore[call-overload]
    invites = {f["hop"]: f["transport"] for f in msgs if f["line"].startswith("INVITE ")}
    assert invites == EXPECTED, invites
    run_ids = {r["call_id"] for r in result.results["scenarios"]["tls-e2e"]["call_records"]}
    calls = {f["call"] for f in msgs if f["line"].startswith("INVITE ")}
    assert calls == run_ids, (calls, run_ids)
    handshakes = [f for f in frames if f.get("type") == "handshake"]
    assert handshakes and all(f["hop"] in EXPECTED for f in handshakes if f["hop"])
    states = [f for f in frames if f.get("type") == "state" and f.get("ready")]
    assert states and states[0]["remote"] is True and states[0]["takers"] == {}

    # after the run: still served, finished, the LoST exchange inspectable
    topo = seen["topology"]
    assert isinstance(topo, dict) and topo["finished"] and topo["remote"]
    assert topo["scenario"] == "tls-e2e" and topo["ended"] == ["tls-e2e"]
    lost = seen["lost"]
    assert isinstance(lost, dict), "no LoST frame was seen"
    assert lost["frame"]["from"] == "esrp"
    assert lost["frame"]["transport"] == topo["lost"]["transport"]
    assert "<findService" in lost["request_xml"] and "<findServiceResponse" in lost["response_xml"]


async def test_console_stay_serves_after_the_run_until_sigint(tmp_path):
    """The command: the console is still there once the report is written; Ctrl-C (SIGINT)
    stops it and the command exits with the run's status (0)."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ng911",
        "testbed",
        "run",
        "--scenario",
        "plain",
        "--calls",
        "2",
        "--no-baseline",
        "--no-captures",
        "--quiet",
        "--out",
        str(tmp_path / "run"),
        "--console",
        "--console-stay",
        "--console-port",
        "0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None
    try:
        url = ""
        async with asyncio.timeout(120):
            while True:  # bounded by the timeout
                line = (await proc.stdout.readline()).decode()
                assert line, "the command ended before the console stayed"
                if line.startswith("ng911 console: http"):
                    url = line.split()[2]
                if "still serves it" in line:
                    break
        assert (tmp_path / "run" / "report.html").exists()  # the report came first
        async with aiohttp.ClientSession() as s, s.get(url + "api/topology") as resp:
            topo = await resp.json()
        assert topo["finished"] and topo["scenario"] == "plain" and not topo["remote"]
        proc.send_signal(signal.SIGINT)
        code = await asyncio.wait_for(proc.wait(), 30)
        assert code == 0, (await proc.stderr.read()).decode()[-2000:]  # type: ignore[union-attr]
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
